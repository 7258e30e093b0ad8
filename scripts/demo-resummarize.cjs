#!/usr/bin/env node
// Recomputes the plain-language summary of a finished demo run (lib/demo-story.ts's demoSummary)
// from the numbers the run recorded in DIR/demo.json and DIR/protocol.json, and writes it back
// into DIR/demo.json and DIR/README.md — for when the story's wording changed after the run (no
// number is recomputed). Usage: node scripts/demo-resummarize.cjs [DIR=docs/results]
const fs = require('node:fs');
const path = require('node:path');
const { demoSummary, storyInput } = require('../dist/lib/demo-story');

const dir = process.argv[2] ?? 'docs/results';
const demo = JSON.parse(fs.readFileSync(path.join(dir, 'demo.json'), 'utf8'));
const protocol = JSON.parse(fs.readFileSync(path.join(dir, 'protocol.json'), 'utf8'));
const summary = demoSummary(storyInput(demo, protocol));
const old = demo.summary;
if (old.length !== summary.length) throw new Error(`the summary has ${summary.length} paragraphs, the run's had ${old.length}`);
let readme = fs.readFileSync(path.join(dir, 'README.md'), 'utf8');
let changed = 0;
old.forEach((o, i) => {
  if (o === summary[i]) return;
  if (!readme.includes(o)) throw new Error(`paragraph ${i} of the old summary is not in ${dir}/README.md`);
  readme = readme.replace(o, () => summary[i]);
  changed++;
});
demo.summary = summary;
fs.writeFileSync(path.join(dir, 'demo.json'), JSON.stringify(demo, null, 2));
fs.writeFileSync(path.join(dir, 'README.md'), readme);
console.log(`${changed} of ${summary.length} summary paragraphs rewritten in ${dir}/README.md and demo.json`);

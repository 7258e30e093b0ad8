/**
 * `tangent heads`: zero-shot classification heads from CLIP's text tower, the paper's recipe
 * (lib/clip/index.ts): class names × templates, each embedding normalised, averaged,
 * re-normalised, scaled by exp(logit_scale). The heads file is the one `--heads` reads
 * everywhere (finetune, eval, protocol, analyses), tied to the image tower's θ0 by its hash.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { ArgumentError } from '../errors';
import { commonOptions, emit, resolveConfig, setThreads, zcommon, zfile } from './options';

const HeadsConfig = z
  .object({
    model: zfile,
    pretrained: zfile.optional(),
    tokenizer: zfile,
    classes: z.array(zfile).min(1),
    templates: zfile.default('builtin:openai-imagenet'),
    out: zfile,
    seed: z.number().int().nonnegative().default(0),
    ...zcommon,
  })
  .strict();

/** `NAME=SPEC` or `SPEC` (the task named by the file or folder): a class-names file (one per line) or an image folder (its class subfolders, in label order). */
export function readClassSpec(spec: string): { task: string; classes: string[]; source: string } {
  const eq = spec.indexOf('=');
  const named = eq > 0 && !fs.existsSync(spec);
  const file = named ? spec.slice(eq + 1) : spec;
  const task = named ? spec.slice(0, eq) : path.basename(file).replace(/\.[^.]*$/, '');
  if (!/^[A-Za-z0-9_.-]+$/.test(task)) throw new ArgumentError(`--classes ${spec}: task name '${task}' must be letters, digits, '_', '-' or '.' (give NAME=FILE)`);
  if (!fs.existsSync(file)) throw new ArgumentError(`--classes ${spec}: ${file}: no such file or folder (a text file with one class name per line, or an image folder)`);
  let classes: string[];
  if (fs.statSync(file).isDirectory()) {
    const { listImageFolder } = require('../data/files') as typeof import('../data/files');
    const train = path.join(file, 'train');
    classes = listImageFolder(fs.existsSync(train) ? train : file).map((c) => c.name);
  } else {
    const { readLines } = require('../clip/templates') as typeof import('../clip/templates');
    classes = readLines(file);
  }
  if (classes.length === 0) throw new ArgumentError(`--classes ${spec}: no class names in ${file}`);
  const dup = classes.find((c, i) => classes.indexOf(c) !== i);
  if (dup !== undefined) throw new ArgumentError(`--classes ${spec}: class '${dup}' is listed twice`);
  return { task, classes, source: path.resolve(file) };
}

export function registerClipCommands(program: Command): void {
  commonOptions(
    program
      .command('heads')
      .description("zero-shot classification heads from CLIP's text tower (class names × prompt templates), for --heads")
      .usage('--model clip:ViT-B-32 [--pretrained W] --tokenizer tokenizer.json --classes [NAME=]FILE|DIR … [--templates FILE|builtin:NAME] --out heads.safetensors')
      .option('--config <file>', 'YAML config (snake_case keys); flags override it')
      .option('--model <spec>', 'clip:ViT-B-32 (ViT-B-16, ViT-L-14, each also -quickgelu) or a CLIP JSON config {"arch":"clip",…}')
      .option('--pretrained <file>', "CLIP weights (open_clip's open_clip_model.safetensors or transformers' model.safetensors); default: random init from --seed")
      .option('--tokenizer <file>', "CLIP's tokenizer.json (Hugging Face's, e.g. from openai/clip-vit-base-patch32; see docs/clip.md)")
      .option('--classes <spec>', 'a task: [NAME=]FILE (one class name per line, in label order) or [NAME=]DIR (an image folder: its class subfolders); repeat for several tasks', (v: string, prev: string[] = []) => [...prev, v])
      .option('--templates <spec>', 'prompt templates: a file (one per line, {} for the class name) or builtin:NAME (simple, openai-imagenet, mnist, svhn, gtsrb, eurosat, dtd, cars, sun397, resisc45); default builtin:openai-imagenet')
      .option('--out <file>', 'heads safetensors (required)')
      .option('--seed <n>', 'seed of a random-init CLIP (default 0)', (v: string) => Number(v)),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(HeadsConfig, flags, 'heads', ['out', 'pretrained', 'model', 'tokenizer', 'templates'], ['classes']);
    // Everything validated before any model is built.
    const { parseModelSpec } = await import('./inputs');
    const spec = parseModelSpec(o.model);
    if (spec.kind !== 'config' || !spec.clip) throw new ArgumentError(`--model ${o.model}: heads need a CLIP (clip:ViT-B-32 or a {"arch": "clip", …} config): the text tower makes them`);
    if (o.pretrained !== undefined && !fs.existsSync(o.pretrained)) throw new ArgumentError(`--pretrained: ${o.pretrained}: no such file`);
    const { ClipTokenizer, loadTemplates, Clip } = await import('../clip');
    const tokenizer = ClipTokenizer.fromFile(o.tokenizer);
    const templates = loadTemplates(o.templates);
    const tasks = o.classes.map(readClassSpec);
    const seen = new Set<string>();
    for (const t of tasks) {
      if (seen.has(t.task)) throw new ArgumentError(`--classes: two tasks named '${t.task}' (give NAME=FILE)`);
      seen.add(t.task);
    }
    if (!o.out.endsWith('.safetensors')) throw new ArgumentError(`--out ${o.out}: heads are written as .safetensors`);
    await setThreads(o.threads);
    const t0 = Date.now();
    const clip = await Clip.load(spec.clip, o.pretrained, { seed: o.seed });
    try {
      if (tokenizer.vocabSize > spec.clip.text.vocabSize)
        throw new ArgumentError(`--tokenizer ${o.tokenizer} has ${tokenizer.vocabSize} tokens, the text tower only ${spec.clip.text.vocabSize}`);
      const heads = new Map<string, import('../model').Head>();
      for (const t of tasks) heads.set(t.task, await clip.zeroShotHead(tokenizer, t.classes, templates));
      const { saveHeads } = await import('../train/pretrain');
      const { sha256File } = await import('../util/state');
      saveHeads(o.out, heads, clip.vision.parameters(), {
        kind: 'clip-zero-shot',
        clip: JSON.stringify(spec.clip),
        weights: o.pretrained ? path.resolve(o.pretrained) : `random (seed ${o.seed})`,
        tokenizerSha256: sha256File(o.tokenizer),
        templates: JSON.stringify(templates),
        classes: JSON.stringify(Object.fromEntries(tasks.map((t) => [t.task, t.classes]))),
        logitScale: String(clip.logitScale),
      });
      const r = {
        out: path.resolve(o.out),
        model: spec.source,
        weights: clip.layout,
        tasks: Object.fromEntries(tasks.map((t) => [t.task, t.classes.length])),
        templates: templates.length,
        logitScale: clip.logitScale,
        seconds: (Date.now() - t0) / 1000,
      };
      emit(
        { json: o.json },
        r,
        `heads → ${o.out}: ${tasks.map((t) => `${t.task} (${t.classes.length} classes)`).join(', ')} × ${templates.length} templates, ${clip.layout} weights, logit scale exp(${clip.logitScale.toFixed(4)}) (${r.seconds.toFixed(1)} s)`,
      );
    } finally {
      clip.dispose();
    }
  });
}

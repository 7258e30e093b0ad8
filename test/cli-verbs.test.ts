/**
 * One test per CLI verb not covered elsewhere (finetune/merge/apply/eval: cli-e2e; inspect/merge
 * on plain files: cli.test.ts; demo/protocol: protocol.test.ts; the sweeps and analyses:
 * cli-analyses.test.ts): info, pretrain (+ finetune with its heads, eval from metadata alone).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { json, run, skipWithoutDist, writePngs } from './cli-fixtures';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-cli-verbs-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const f = (name: string) => path.join(dir, name);
const quiet = ['--progress', 'none', '--json'];

t.test('info', { skip: skipWithoutDist }, async (t) => {
  const i = json(run('info'));
  t.match(i.torchVersion, /^\d+\.\d+/);
  t.type(i.cudaAvailable, 'boolean');
});

t.test('pretrain on an image folder, then finetune with its heads', { skip: skipWithoutDist }, async (t) => {
  const src = await writePngs(f('src28'), { size: 28, perClass: 6 });
  const other = await writePngs(f('other28'), { size: 28, perClass: 6, rows: true });
  const p = json(run('pretrain', '--data', src, '--heads-data', other, '--steps', '2', '--out', f('t0.safetensors'), '--heads-out', f('heads.safetensors'), ...quiet));
  t.equal(p.data, src);
  t.same(Object.keys(p.headTrainAccuracy), ['src28', 'other28'], 'a head per dataset, named after it');
  for (const v of Object.values(p.headTrainAccuracy) as number[]) t.ok(v >= 0 && v <= 1);
  const i = json(run('inspect', '--json', f('t0.safetensors')));
  t.equal(i.metadata.format, 'tangent-edit/pretrained@1');
  t.equal(JSON.parse(i.metadata.config).dim, 64, 'the small ViT');
  const ft = json(run('finetune', '--data', other, '--pretrained', f('t0.safetensors'), '--heads', f('heads.safetensors'), '--mode', 'linear', '--steps', '2', '--batch-size', '8', '--out', f('other-lin.safetensors'), ...quiet));
  t.equal(ft.task, 'other28');
  t.equal(ft.evaluatedWith, 'f_lin');
  const m = json(run('inspect', '--json', f('other-lin.safetensors'))).tangent;
  t.equal(m.heads.path, f('heads.safetensors'), 'the heads are recorded');
  t.equal(m.model.arch, 'vit');
  const ev = json(run('eval', '--checkpoints', f('other-lin.safetensors'), ...quiet));
  t.equal(ev.checkpoints[0].accuracy.other28, ft.finetuned.test, 'eval finds θ0, model and heads from the metadata alone');
});

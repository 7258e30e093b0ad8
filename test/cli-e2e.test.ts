/**
 * The CLI end to end on the user's own data and model: two tiny image-folder datasets (PNG files
 * written here with sharp) and the tiny TorchScript fixture (8×8 grey → 4 logits): finetune
 * standard and linear → merge → apply → eval, checking the metadata round trip and that linear
 * checkpoints are evaluated through f_lin (the CLI's accuracy equals the library's f_lin one).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { loadStateDict, Model, Tensor } from '../lib';
import { prepareData } from '../lib/data/spec';
import { json, run, skipWithoutDist, TS, writePngs } from './cli-fixtures';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-cli-e2e-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const f = (name: string) => path.join(dir, name);

t.test('finetune (standard, linear) → merge → apply → eval on image folders and a TorchScript model', { skip: skipWithoutDist }, async (t) => {
  const a = await writePngs(f('cols'));
  const b = await writePngs(f('rows'), { rows: true });
  // Linear FT with a large step, so that f(θ) and f_lin(θ) classify differently (checked below).
  const ft = (data: string, mode: string, out: string) =>
    json(run('finetune', '--data', data, '--model', TS, '--trust-code', '--mode', mode, '--out', f(out), '--steps', '6', '--batch-size', '16', '--lr', mode === 'linear' ? '0.5' : '0.01', '--progress', 'none', '--json'));

  const sa = ft(a, 'standard', 'cols-std.safetensors');
  t.equal(sa.task, 'cols', 'task named after the folder');
  t.equal(sa.data, a);
  t.equal(sa.evaluatedWith, 'f');
  t.equal(sa.steps, 6);
  const la = ft(a, 'linear', 'cols-lin.safetensors');
  t.equal(la.evaluatedWith, 'f_lin');
  ft(b, 'linear', 'rows-lin.safetensors');
  ft(b, 'standard', 'rows-std.safetensors');

  // Metadata round trip (inspect reads it back).
  const ins = json(run('inspect', '--json', f('cols-lin.safetensors')));
  t.equal(ins.tangent.format, 'tangent-edit/finetuned@1');
  t.equal(ins.tangent.mode, 'linear');
  t.same(ins.tangent.tasks, { cols: a });
  t.equal(ins.tangent.model.arch, 'torchscript');
  t.equal(ins.tangent.model.path, TS);
  t.equal(ins.tangent.theta0.path, TS, 'θ0 = the TorchScript module’s own parameters');
  t.match(ins.tangent.theta0.sha256, /^[0-9a-f]{64}$/);
  t.equal(ins.tangent.heads, null, 'the model outputs logits: no heads');

  // merge: linear + linear keeps mode and metadata; linear + standard is refused unless told.
  const cfg = (name: string, models: string[], out: string) => {
    fs.writeFileSync(f(name), [`base_model: ${TS}`, 'models:', ...models.flatMap((m) => [`  - model: ${m}`, '    weight: 1']), 'method: task_arithmetic', 'parameters: { lambda: 0.5 }', `output: ${out}`, ''].join('\n'));
    return f(name);
  };
  const m = json(run('merge', '--json', '--config', cfg('lin.yaml', ['cols-lin.safetensors', 'rows-lin.safetensors'], 'merged-lin.safetensors')));
  t.equal(m.mode, 'linear');
  t.same(m.tasks, { cols: a, rows: b });
  const mi = json(run('inspect', '--json', f('merged-lin.safetensors')));
  t.equal(mi.tangent.format, 'tangent-edit/edited@1');
  t.equal(mi.tangent.mode, 'linear');
  t.equal(mi.tangent.theta0.sha256, ins.tangent.theta0.sha256, 'θ0 hash preserved');
  const mixed = run('merge', '--config', cfg('mixed.yaml', ['cols-lin.safetensors', 'rows-std.safetensors'], 'mixed.safetensors'));
  t.equal(mixed.status, 2);
  t.equal(
    mixed.stderr.split('\n')[0],
    'tangent merge: ArgumentError: refusing to merge linear with standard checkpoints (cols-lin.safetensors is linear, rows-std.safetensors is standard): a linear checkpoint means f_lin(x; θ), a standard one f(x; θ). Pass --mode linear to evaluate the merge with f_lin (post-hoc linearization of the standard ones) or --mode standard',
  );
  t.notOk(fs.existsSync(f('mixed.safetensors')), 'nothing written');
  t.equal(json(run('merge', '--json', '--mode', 'linear', '--config', f('mixed.yaml'))).mode, 'linear', '--mode linear allows it');

  // apply: θ0 + 0.5 τ_cols + 0.5 τ_rows (= the merge above) and a negation.
  const ap = json(run('apply', '--checkpoints', f('cols-lin.safetensors'), f('rows-lin.safetensors'), '--alpha', '0.5', '--out', f('applied.safetensors'), '--trust-code', '--json'));
  t.equal(ap.mode, 'linear');
  t.same(ap.tasks, ['cols', 'rows']);
  const neg = json(run('apply', '--checkpoints', f('cols-std.safetensors'), '--alpha', '-1', '--out', f('neg.safetensors'), '--trust-code', '--json'));
  t.equal(neg.mode, 'standard');
  t.equal(neg.sources[0].alpha, -1);
  const merged = (await loadStateDict(f('merged-lin.safetensors'))).tensors;
  const applied = (await loadStateDict(f('applied.safetensors'))).tensors;
  for (const [n, x] of merged) {
    const p = applied.get(n)!.data() as Float32Array;
    const q = x.data() as Float32Array;
    t.ok(q.every((v, i) => Math.abs(v - p[i]!) <= 1e-6 * (1 + Math.abs(v))), `apply α = 0.5 equals the λ = 0.5 task-arithmetic merge on ${n}`);
  }

  // eval: every kind of checkpoint, metadata only (no --model / --pretrained / --data); the model
  // the metadata names is TorchScript, so eval (like apply above) needs --trust-code.
  const ev = json(run('eval', '--checkpoints', f('cols-std.safetensors'), f('cols-lin.safetensors'), f('merged-lin.safetensors'), f('applied.safetensors'), f('neg.safetensors'), '--trust-code', '--progress', 'none', '--json'));
  t.same(ev.tasks, ['cols', 'rows']);
  t.same(ev.checkpoints.map((r: { mode: string; evaluatedWith: string }) => `${r.mode}/${r.evaluatedWith}`), ['standard/f', 'linear/f_lin', 'linear/f_lin', 'linear/f_lin', 'standard/f']);
  t.equal(ev.checkpoints[1].accuracy.cols, la.finetuned.test, "eval's accuracy of the linear checkpoint = finetune's own f_lin test accuracy");
  t.equal(ev.checkpoints[0].accuracy.cols, sa.finetuned.test);
  t.equal(ev.checkpoints[2].accuracy.cols, ev.checkpoints[3].accuracy.cols, 'merge and apply agree');

  // The library's f_lin evaluation of the same checkpoint on the same split.
  const model = await Model.load(TS, { trustCode: true });
  const theta0 = model.parameters();
  const d = await prepareData(a, { testLimit: 1000 });
  const x = Tensor.from(d.test.images, [d.test.count, ...d.test.shape]);
  const y = Tensor.from(BigInt64Array.from(d.test.labels, (l) => BigInt(l)), [d.test.count], 'int64');
  for (const [k, file] of [[1, 'cols-lin.safetensors'], [2, 'merged-lin.safetensors']] as const) {
    const params = (await loadStateDict(f(file))).tensors;
    const lin = await model.linearize(theta0).evaluate(x, y, { params });
    t.equal(ev.checkpoints[k].accuracy.cols, lin.correct / d.test.count, `${file}: CLI accuracy = library f_lin accuracy (${lin.correct}/${d.test.count})`);
    if (k === 1) {
      const plain = await model.evaluate(x, y, { params });
      t.not(plain.correct, lin.correct, `through f the same θ would score ${plain.correct}/${d.test.count}: the check tells f_lin from f`);
    }
  }
  const std = await model.evaluate(x, y, { params: (await loadStateDict(f('cols-std.safetensors'))).tensors });
  t.equal(ev.checkpoints[0].accuracy.cols, std.correct / d.test.count, 'standard checkpoint: CLI accuracy = library f accuracy');
  t.equal(ev.pretrained.cols, (await model.evaluate(x, y)).correct / d.test.count, 'θ0 row');
});

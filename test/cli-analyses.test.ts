/**
 * The evaluation sweeps and the analyses from the CLI — addition-sweep, negation-sweep,
 * disentangle, ntk — on tiny PNG folders and the tiny TorchScript fixture, asserting the values
 * each verb reports (and that they agree with `tangent eval`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { json, run, skipWithoutDist, TS, writePngs } from './cli-fixtures';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-cli-analyses-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const f = (name: string) => path.join(dir, name);
const quiet = ['--progress', 'none', '--json'];

let ready: Promise<{ cols: string; rows: string }> | null = null;
/** Two PNG folders and standard + linear checkpoints of each (6 steps on the TorchScript fixture). */
function fixtures(): Promise<{ cols: string; rows: string }> {
  ready ??= (async () => {
    const cols = await writePngs(f('cols'));
    const rows = await writePngs(f('rows'), { rows: true });
    for (const [data, name] of [[cols, 'cols'], [rows, 'rows']] as const)
      for (const mode of ['standard', 'linear'])
        json(run('finetune', '--data', data, '--model', TS, '--trust-code', '--mode', mode, '--out', f(`${name}-${mode}.safetensors`), '--steps', '6', '--batch-size', '16', '--lr', '0.01', ...quiet));
    return { cols, rows };
  })();
  return ready;
}
const ck = (name: string) => f(`${name}.safetensors`);

t.test('addition-sweep', { skip: skipWithoutDist }, async (t) => {
  await fixtures();
  const r = json(run('addition-sweep', '--checkpoints', ck('cols-standard'), ck('rows-standard'), ck('cols-linear'), ck('rows-linear'), '--alphas', '0,0.5,1', '--trust-code', ...quiet));
  t.same(r.addition.map((a: { regime: string }) => a.regime), ['nonlinear', 'posthoc', 'linear']);
  const ev = json(run('eval', '--checkpoints', ck('cols-standard'), ck('cols-linear'), '--trust-code', ...quiet));
  const [nl, , lin] = r.addition;
  t.same(nl.tasks, ['cols', 'rows']);
  t.same(nl.alphas.map((a: { alpha: number }) => a.alpha), [0, 0.5, 1]);
  t.ok([0, 0.5, 1].includes(nl.chosenAlpha));
  t.equal(nl.finetuned.test.cols, ev.checkpoints[0].accuracy.cols, 'single-task normalizer = eval of the standard checkpoint');
  t.equal(lin.finetuned.test.cols, ev.checkpoints[1].accuracy.cols, 'linear regime: = eval (through f_lin) of the linear checkpoint');
});

t.test('negation-sweep', { skip: skipWithoutDist }, async (t) => {
  const { rows } = await fixtures();
  const r = json(run('negation-sweep', '--checkpoints', ck('cols-standard'), ck('cols-linear'), '--control', rows, '--regimes', 'nonlinear,linear', '--alphas', '0,1', '--trust-code', ...quiet));
  const ev = json(run('eval', '--checkpoints', ck('cols-standard'), '--data', rows, '--trust-code', ...quiet));
  t.same(r.negation.map((n: { regime: string }) => n.regime), ['nonlinear', 'linear']);
  t.equal(r.negation[0].control, 'rows');
  t.equal(r.negation[0].pretrainedControl.test, ev.pretrained.rows, 'pre-trained control accuracy = eval of θ0 on the control');
  t.equal(r.negation[0].threshold, 0.95 * r.negation[0].pretrainedControl.val);
  t.ok([0, 1].includes(r.negation[1].tasks.cols.chosen.alpha));
});

t.test('disentangle from fine-tuned checkpoints (metadata only)', { skip: skipWithoutDist }, async (t) => {
  await fixtures();
  const out = f('xi');
  const p = run('disentangle', '--checkpoints', ck('cols-standard'), ck('rows-standard'), ck('cols-linear'), ck('rows-linear'), '--grid', '3', '--range', '1', '--samples', '8', '--out', out, '--trust-code', '--progress', 'lines', '--json');
  const r = json(p);
  t.match(p.stderr, /^ξ grid \(nonlinear\): 15\/15 points \(100%\), [\d.]+ point\/s, elapsed \d+s, ETA 0s, [\d.]+ s — done$/m, 'progress with rate and ETA on stderr');
  t.same(r.tasks, ['cols', 'rows']);
  t.same(r.results.map((x: { label: string; method: string }) => `${x.label}/${x.method}`), ['Non-linear FT/forward', 'Linear FT/affine']);
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'disentanglement.json'), 'utf8'));
  const grid: number[][] = (saved.results ?? saved)[0].grid;
  t.equal(grid.length, 3);
  t.equal(grid[1]![1], 0, 'ξ(0, 0) = 0: θ0 agrees with itself');
  t.ok(fs.statSync(path.join(out, 'disentanglement.png')).size > 1000, 'a PNG heatmap');
});

t.test('ntk on the TorchScript model and two folders', { skip: skipWithoutDist }, async (t) => {
  const { cols, rows } = await fixtures();
  const out = f('ntk');
  const p = run('ntk', '--model', TS, '--trust-code', '--data', cols, rows, '--per-task', '4', '--top-k', '3', '--out', out, '--progress', 'lines', '--json');
  const r = json(p);
  t.match(p.stderr, /^NTK Gram \(ETA estimated\): \d+\/\d+ seconds \(100%\), .* — done$/m, 'progress of the Gram on stderr');
  t.same(r.tasks, ['cols', 'rows']);
  t.equal(r.n, 8);
  t.equal(r.eigenvalues.length, 3);
  t.ok(r.eigenvalues[0] >= r.eigenvalues[1] && r.eigenvalues[1] >= r.eigenvalues[2], 'descending');
  t.ok(r.meanMaxEnergy >= 0.5 && r.meanMaxEnergy <= 1, 'largest per-task share of 2 tasks lies in [1/2, 1]');
  t.ok(fs.existsSync(path.join(out, 'ntk.png')));
});

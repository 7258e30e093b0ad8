import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
// Imported by module (not through lib/index) so these tests do not depend on unrelated modules.
import { linspace, weightDisentanglement, writeDisentanglementJson } from '../lib/analysis/disentanglement';
import { pngSize, renderDisentanglement, writeFigure } from '../lib/analysis/plot';
import { ArgumentError, ShapeError } from '../lib/errors';
import { Model, type Head, type StateDict } from '../lib/model';
import { combineStates } from '../lib/ops';
import { setNumThreads } from '../lib/runtime';
import { Tensor } from '../lib/tensor';
import { seededNormal64 as randn } from '../lib/util/random';

setNumThreads(2);

const D = 6;
const F = 5; // model outputs (features for the head)
const model = Model.create({ arch: 'mlp', inputDim: D, hidden: [8], outputDim: F, activation: 'tanh' }, { seed: 3, dtype: 'float64' });
const tau = (seed: number, scale: number): StateDict => {
  const m = new Map<string, Tensor>();
  let s = seed;
  for (const [n, sp] of model.spec) m.set(n, Tensor.from(randn(sp.shape.reduce((a, b) => a * b, 1), s++).map((v) => v * scale), sp.shape));
  return m;
};
const tau1 = tau(100, 0.6);
const tau2 = tau(200, 0.6);
const x1 = Tensor.from(randn(20 * D, 1), [20, D]);
const x2 = Tensor.from(randn(16 * D, 2).map((v) => v + 0.5), [16, D]);
const heads: [Head, Head] = [
  { weight: Tensor.from(randn(4 * F, 7), [4, F]), bias: Tensor.from(randn(4, 8).map((v) => v * 0.1), [4]), normalize: true },
  { weight: Tensor.from(randn(3 * F, 9), [3, F]), normalize: true },
];
const alphas = [-3, -1.5, 0, 0.75, 2, 3];

/** argmax of head(out) per row, computed here independently of the library. */
function argmaxes(out: Float64Array, n: number, head: Head | undefined): number[] {
  const w = head ? (head.weight.data() as Float64Array) : null;
  const b = head?.bias ? (head.bias.data() as Float64Array) : null;
  const preds: number[] = [];
  for (let i = 0; i < n; i++) {
    let f = Array.from(out.subarray(i * F, (i + 1) * F));
    if (head?.normalize) {
      const norm = Math.sqrt(f.reduce((s, v) => s + v * v, 0));
      f = f.map((v) => v / norm);
    }
    const logits = w ? Array.from({ length: head!.weight.shape[0]! }, (_, c) => f.reduce((s, v, k) => s + w[c * F + k]! * v, 0) + (b ? b[c]! : 0)) : f;
    preds.push(logits.indexOf(Math.max(...logits)));
  }
  return preds;
}

/** ξ by brute force: evaluate the model (f or f_lin) at every grid point, on both tasks' inputs at once. */
async function bruteForce(mode: 'nonlinear' | 'linear', hs: [Head | undefined, Head | undefined]): Promise<[number[][], number[][]]> {
  const lin = model.linearize();
  const theta0 = model.parameters();
  const n1 = x1.shape[0]!;
  const n2 = x2.shape[0]!;
  const X = Tensor.from(Float64Array.from([...(x1.data() as Float64Array), ...(x2.data() as Float64Array)]), [n1 + n2, D]);
  const preds = new Map<string, [number[], number[]]>();
  for (const a1 of alphas)
    for (const a2 of alphas) {
      const theta = await combineStates(theta0, [tau1, tau2], [a1, a2], { compute: 'float64' });
      const out = (mode === 'linear' ? await lin.forward(X, theta) : await model.forward(X, theta)).data() as Float64Array;
      preds.set(`${a1},${a2}`, [argmaxes(out.subarray(0, n1 * F), n1, hs[0]), argmaxes(out.subarray(n1 * F), n2, hs[1])]);
    }
  // 0 is on the grid, so the single-task models θ0 + α τ_t are grid points too.
  const dis = (p: number[], q: number[]): number => p.filter((v, k) => v !== q[k]).length / p.length;
  const parts: [number[][], number[][]] = [
    alphas.map((a1) => alphas.map((a2) => dis(preds.get(`${a1},${a2}`)![0], preds.get(`${a1},0`)![0]))),
    alphas.map((a1) => alphas.map((a2) => dis(preds.get(`${a1},${a2}`)![1], preds.get(`0,${a2}`)![1]))),
  ];
  return parts;
}

function sumParts(p: [number[][], number[][]]): number[][] {
  return p[0].map((row, i) => row.map((v, j) => v + p[1][i]![j]!));
}

t.test('linear: the affine shortcut (two JVPs per input) equals f_lin evaluated at every grid point', async (t) => {
  for (const [label, hs] of [
    ['per-task normalized heads with bias', heads],
    ['no head', [undefined, undefined]],
  ] as const) {
    const ref = await bruteForce('linear', hs as [Head | undefined, Head | undefined]);
    const r = await weightDisentanglement(model, { mode: 'linear', tau1, tau2, x1, x2, head: hs as [Head, Head], alphas });
    t.equal(r.method, 'affine', 'linear mode defaults to the affine shortcut');
    t.equal(r.timing.modelCalls, 4, 'two JVPs per task (one chunk each)');
    t.same(r.parts, ref, `${label}: per-task disagreement equals brute force`);
    t.same(r.grid, sumParts(ref), `${label}: ξ equals brute force`);
    const mx = Math.max(...r.grid.flat());
    t.ok(mx > 0.2, `${label}: the grid is not trivial (max ξ ${mx.toFixed(3)})`);
  }
  const viaForward = await weightDisentanglement(model, { mode: 'linear', linearMethod: 'forward', tau1, tau2, x1, x2, head: heads, alphas, batchSize: 12 });
  const affine = await weightDisentanglement(model, { mode: 'linear', tau1, tau2, x1, x2, head: heads, alphas, batchSize: 12 });
  t.equal(viaForward.method, 'forward');
  t.same(viaForward.grid, affine.grid, "the library's own brute-force path (chunks of 12) agrees with the affine shortcut (chunks of 12)");
});

t.test('nonlinear: ξ equals brute force; ξ(0, 0) = 0; parts add up', async (t) => {
  const ref = await bruteForce('nonlinear', heads);
  const r = await weightDisentanglement(model, { mode: 'nonlinear', tau1, tau2, x1, x2, head: heads, alphas, batchSize: 9 });
  t.same(r.parts, ref, 'per-task disagreement equals brute force');
  const z = alphas.indexOf(0);
  t.equal(r.grid[z]![z], 0, 'ξ(0, 0) = 0');
  t.same(r.counts, [20, 16]);
  t.ok(r.grid.every((row, i) => row.every((v, j) => v === r.parts[0][i]![j]! + r.parts[1][i]![j]! && v >= 0 && v <= 2)), 'ξ = sum of the two parts, in [0, 2]');
  // Along α2 = 0 task 1 sees exactly its single-task model; along α1 = 0 task 2 does.
  t.ok(alphas.every((_, i) => r.parts[0][i]![z] === 0), 'task 1 term vanishes on the α2 = 0 line');
  t.ok(alphas.every((_, j) => r.parts[1][z]![j] === 0), 'task 2 term vanishes on the α1 = 0 line');
  t.equal(r.timing.modelCalls, 6 * (3 + 2) + 36 * (3 + 2), 'chunks of 9: a forward per chunk of the task per α, then per chunk of both tasks per grid point');
});

t.test('default grid, ξ(0,0) = 0 for the linear model, JSON and heatmaps', async (t) => {
  const a = linspace(-3, 3, 25);
  t.equal(a.length, 25);
  t.equal(a[12], 0, 'the default grid holds α = 0 exactly');
  t.same([a[0], a[24]], [-3, 3]);
  const lin = await weightDisentanglement(model, { mode: 'linear', tau1, tau2, x1, x2, head: heads[0] });
  const non = await weightDisentanglement(model, { mode: 'nonlinear', tau1, tau2, x1, x2, head: heads[0], alphas: linspace(-3, 3, 7) });
  t.same(lin.alphas, a);
  t.equal(lin.grid.length, 25);
  t.ok(lin.grid.every((row) => row.length === 25));
  t.equal(lin.grid[12]![12], 0, 'linear ξ(0, 0) = 0');
  t.equal(non.grid[3]![3], 0, 'nonlinear ξ(0, 0) = 0');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xi-test-'));
  writeDisentanglementJson([non, lin], path.join(dir, 'xi.json'), { tasks: ['a', 'b'] });
  const back = JSON.parse(fs.readFileSync(path.join(dir, 'xi.json'), 'utf8')) as { tasks: string[]; results: Array<{ grid: number[][]; mode: string }> };
  t.same(back.tasks, ['a', 'b']);
  t.same(back.results[1]!.grid, lin.grid, 'JSON round trip');
  const fig = await renderDisentanglement([non, lin], { taskNames: ['a', 'b'], scale: 1.5 });
  const size = pngSize(fig.png);
  t.same(size, { width: fig.width, height: fig.height }, `PNG IHDR is ${fig.width}×${fig.height}`);
  t.ok(fig.png.length > 5000 && fig.width > 600 && fig.height > 300, `a non-empty PNG (${fig.png.length} bytes)`);
  t.match(fig.svg, /Non-linear FT/);
  t.match(fig.svg, /Linear FT/);
  const files = writeFigure(fig, path.join(dir, 'xi'));
  t.same(pngSize(fs.readFileSync(files.png)), size, 'the written PNG');
  t.same(fs.readdirSync(dir).sort(), ['xi.json', 'xi.png', 'xi.svg'], 'no temporary files left behind');
  fs.rmSync(dir, { recursive: true });
});

t.test('disentanglement argument errors are typed', async (t) => {
  const bad = new Map(tau1);
  const [first] = model.spec.keys();
  bad.set(first!, Tensor.from(new Float64Array(3), [3]));
  await t.rejects(weightDisentanglement(model, { mode: 'linear', tau1: bad, tau2, x1, x2 }), ShapeError, 'task vector of the wrong shape');
  await t.rejects(weightDisentanglement(model, { mode: 'sideways' as 'linear', tau1, tau2, x1, x2 }), ArgumentError, 'unknown mode');
  await t.rejects(weightDisentanglement(model, { mode: 'linear', tau1, tau2, x1, x2, alphas: [] }), ArgumentError, 'empty grid');
  await t.rejects(
    weightDisentanglement(model, { mode: 'nonlinear', tau1, tau2, x1, x2, head: { weight: Tensor.from(new Float64Array(8), [2, 4]) } }),
    ShapeError,
    'head of the wrong width',
  );
});

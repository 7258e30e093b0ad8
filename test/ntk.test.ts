import t from 'tap';
// Imported by module (not through lib/index) so these tests do not depend on unrelated modules.
import { eighSymmetric, empiricalNtk, localEnergies, ntkLocalization, writeNtkJson } from '../lib/analysis/ntk';
import { pngSize, renderNtk } from '../lib/analysis/plot';
import { ArgumentError, ShapeError } from '../lib/errors';
import { Model } from '../lib/model';
import { setNumThreads } from '../lib/runtime';
import { Tensor } from '../lib/tensor';
import { seededNormal64 as randn } from '../lib/util/random';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

setNumThreads(2);

const N = 7;
const D = 3;
const C = 3;
const tiny = (): Model => Model.create({ arch: 'mlp', inputDim: D, hidden: [4], outputDim: C, activation: 'tanh' }, { seed: 5, dtype: 'float64' });

/** J[c][i] = ∇θ f_c(x_i), flattened in parameter order, from independent batch-1 VJPs with one-hot cotangents. */
async function explicitJacobian(model: Model, xs: Float64Array): Promise<Float64Array[][]> {
  const J: Float64Array[][] = Array.from({ length: C }, () => []);
  for (let i = 0; i < N; i++) {
    const x = Tensor.from(xs.slice(i * D, (i + 1) * D), [1, D]);
    for (let c = 0; c < C; c++) {
      const e = new Float64Array(C);
      e[c] = 1;
      const g = await model.vjp(x, Tensor.from(e, [1, C]));
      const row: number[] = [];
      for (const name of model.spec.keys()) row.push(...(g.get(name)!.data() as Float64Array));
      J[c]!.push(Float64Array.from(row));
    }
  }
  return J;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

t.test('NTK Gram matrix equals explicit Jacobian products (float64 MLP), in every memory strategy', async (t) => {
  const model = tiny();
  const xs = randn(N * D, 1);
  const x = Tensor.from(xs, [N, D]);
  const J = await explicitJacobian(model, xs);
  const P = model.numel;
  t.equal(J[0]![0]!.length, P, 'a Jacobian row has one entry per parameter');
  const refTrace = new Float64Array(N * N);
  const refOne = new Float64Array(N * N);
  for (let i = 0; i < N; i++)
    for (let j = 0; j < N; j++) {
      for (let c = 0; c < C; c++) refTrace[i * N + j] += dot(J[c]![i]!, J[c]![j]!);
      refOne[i * N + j] = dot(J[1]![i]!, J[1]![j]!);
    }
  const gramBytes = N * N * 16;
  const cases: Array<[string, number, string]> = [
    ['full', 2 ** 31, 'full'],
    ['grouped', gramBytes + (2 * N + 1) * P * 8, 'grouped'],
    ['panels', gramBytes + 3 * P * 8, 'panels'],
  ];
  for (const [label, mem, strategy] of cases) {
    const g = await empiricalNtk(model, x, { maxMemoryBytes: mem });
    t.equal(g.strategy, strategy, `${label}: strategy ${strategy}`);
    t.equal(g.outputs, C);
    t.equal(g.params, P);
    t.equal(g.gram.dtype, 'float64');
    t.same(g.gram.shape, [N, N]);
    const k = g.gram.data() as Float64Array;
    let err = 0;
    for (let i = 0; i < k.length; i++) err = Math.max(err, Math.abs(k[i]! - refTrace[i]!) / Math.max(1, Math.abs(refTrace[i]!)));
    t.ok(err <= 1e-12, `${label}: trace kernel equals Σ_c J_c J_cᵀ from per-sample VJPs (max rel err ${err.toExponential(2)})`);
    if (label === 'panels') t.ok(g.peakJacobianBytes <= mem - gramBytes, `panels: peak Jacobian bytes ${g.peakJacobianBytes} within the budget`);
  }
  const one = await empiricalNtk(model, x, { output: 1 });
  const k1 = one.gram.data() as Float64Array;
  let err1 = 0;
  for (let i = 0; i < k1.length; i++) err1 = Math.max(err1, Math.abs(k1[i]! - refOne[i]!));
  t.ok(err1 <= 1e-12, `single-logit kernel equals J_1 J_1ᵀ (max |Δ| ${err1.toExponential(2)})`);
  t.equal(one.backwardPasses, N, 'one backward pass per sample for a single logit');
  // float32 Jacobian rows: same kernel to float32 accuracy.
  const f32 = (await empiricalNtk(model, x, { dtype: 'float32' })).gram.data() as Float64Array;
  let err32 = 0;
  for (let i = 0; i < f32.length; i++) err32 = Math.max(err32, Math.abs(f32[i]! - refTrace[i]!) / Math.max(1, Math.abs(refTrace[i]!)));
  t.ok(err32 <= 1e-5, `float32 Jacobian rows: rel err ${err32.toExponential(2)}`);
});

t.test('NTK Gram matrix is symmetric and positive semi-definite; eigenpairs are right', async (t) => {
  const model = tiny();
  const n = 12; // more inputs than the rank N·C can fill: zero eigenvalues appear
  const x = Tensor.from(randn(n * D, 2), [n, D]);
  const g = await empiricalNtk(model, x, { output: 0 });
  const k = g.gram.data() as Float64Array;
  let asym = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) asym = Math.max(asym, Math.abs(k[i * n + j]! - k[j * n + i]!));
  t.equal(asym, 0, 'exactly symmetric');
  const eig = await eighSymmetric(g.gram);
  t.equal(eig.values.length, n);
  t.equal(eig.k, n);
  const max = eig.values[0]!;
  t.ok(max > 0, 'largest eigenvalue positive');
  for (let i = 1; i < n; i++) t.ok(eig.values[i]! <= eig.values[i - 1]!, `eigenvalues descending at ${i}`);
  t.ok(eig.values[n - 1]! >= -1e-8 * max, `PSD: smallest eigenvalue ${eig.values[n - 1]!.toExponential(2)} ≥ −1e-8·max`);
  // K u = λ u and ‖u‖ = 1 for the top 3.
  for (let j = 0; j < 3; j++) {
    let res = 0;
    let norm = 0;
    for (let i = 0; i < n; i++) {
      let ku = 0;
      for (let l = 0; l < n; l++) ku += k[i * n + l]! * eig.vectors[l * n + j]!;
      res = Math.max(res, Math.abs(ku - eig.values[j]! * eig.vectors[i * n + j]!));
      norm += eig.vectors[i * n + j]! ** 2;
    }
    t.ok(res <= 1e-10 * max, `K u_${j} = λ_${j} u_${j} (max residual ${res.toExponential(2)})`);
    t.ok(Math.abs(norm - 1) <= 1e-12, `‖u_${j}‖ = 1`);
  }
  const top = await eighSymmetric(g.gram, 4);
  t.equal(top.k, 4, 'top-k keeps k eigenvectors');
  t.same(Array.from(top.values), Array.from(eig.values), 'and every eigenvalue');
});

t.test('local energies per eigenfunction sum to 1; localization analysis and its figure', async (t) => {
  const model = tiny();
  const tasks = [
    { name: 'a', x: Tensor.from(randn(5 * D, 3), [5, D]) },
    { name: 'b', x: Tensor.from(randn(4 * D, 4).map((v) => v * 3 + 2), [4, D]) },
    { name: 'c', x: Tensor.from(randn(6 * D, 5).map((v) => v - 1), [6, D]) },
  ];
  const r = await ntkLocalization(model, tasks, { topK: 8, keepGram: true });
  t.same(r.counts, [5, 4, 6]);
  t.equal(r.n, 15);
  t.equal(r.eigenvalues.length, 15);
  t.equal(r.energies.length, 8);
  for (const [j, e] of r.energies.entries()) {
    t.ok(e.length === 3 && e.every((v) => v >= 0 && v <= 1 + 1e-12), `eigenfunction ${j}: three energies in [0, 1]`);
    t.ok(Math.abs(e.reduce((a, b) => a + b, 0) - 1) <= 1e-12, `eigenfunction ${j}: energies sum to 1`);
  }
  // The pooled Gram equals the Gram of the concatenated inputs.
  const direct = await empiricalNtk(model, Tensor.from(Float64Array.from([...(tasks[0]!.x.data() as Float64Array), ...(tasks[1]!.x.data() as Float64Array), ...(tasks[2]!.x.data() as Float64Array)]), [15, D]));
  t.same(Array.from(r.gram!.data() as Float64Array), Array.from(direct.gram.data() as Float64Array), 'pooled in task order');
  // localEnergies by hand on a known vector set: u0 all on task 0, u1 split evenly.
  const s = Math.SQRT1_2;
  const e = localEnergies({ n: 4, k: 2, vectors: Float64Array.from([s, 0.5, s, 0.5, 0, 0.5, 0, 0.5]) }, [0, 0, 1, 1], 2);
  t.same(e, [[1, 0], [0.5, 0.5]], 'energies of known vectors');

  const fig = await renderNtk(r, { scale: 1 });
  const size = pngSize(fig.png);
  t.ok(fig.png.length > 1000, `PNG is not empty (${fig.png.length} bytes)`);
  t.same(size, { width: fig.width, height: fig.height }, `PNG IHDR is ${fig.width}×${fig.height}`);
  t.ok(fig.width >= 500 && fig.height >= 300, 'a figure of sensible size');
  t.match(fig.svg, /<svg[^>]*width="\d+"/, 'SVG with a width');
  t.match(fig.svg, /NTK eigenfunction localization/, 'SVG carries the title');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ntk-test-'));
  writeNtkJson(r, path.join(dir, 'ntk.json'));
  const back = JSON.parse(fs.readFileSync(path.join(dir, 'ntk.json'), 'utf8')) as { energies: number[][]; gram?: unknown };
  t.same(back.energies, r.energies, 'JSON round trip');
  t.equal(back.gram, undefined, 'no Gram tensor in the JSON');
  t.same(fs.readdirSync(dir), ['ntk.json'], 'no temporary file left behind');
  fs.rmSync(dir, { recursive: true });
});

t.test('NTK argument errors are typed', async (t) => {
  const model = tiny();
  const x = Tensor.from(randn(4 * D, 6), [4, D]);
  await t.rejects(empiricalNtk(model, x, { maxMemoryBytes: 100 }), ArgumentError, 'budget too small');
  await t.rejects(empiricalNtk(model, x, { output: 7 }), ArgumentError, 'output out of range');
  await t.rejects(empiricalNtk(model, x, { output: -2 }), ArgumentError, 'negative output');
  await t.rejects(empiricalNtk(model, Tensor.from(new Float64Array(8), [2, 4])), ShapeError, 'wrong input width');
  await t.rejects(eighSymmetric(Tensor.from(new Float64Array(6), [2, 3])), ShapeError, 'non-square');
});

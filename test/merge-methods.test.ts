// The interpolating merge methods (issue 26, part 1): slerp, nearswap, model_stock. Each against
// hand-checked cases (parallel and zero-norm tensors in SLERP, one model in model_stock, …) and a
// plain-TypeScript float64 reference written from docs/merging.md (Shoemake's SLERP as mergekit
// applies it, NearSwap, Jang et al. 2024's Model Stock), through mergeTensor, mergeStateDicts and
// the file-to-file merge of mergeCheckpoints; and the configs each method refuses.
// Run: npx tap test/merge-methods.test.ts
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test as Tap } from 'tap';
import { ArgumentError, loadStateDict, mergeCheckpoints, mergeStateDicts, mergeTensor, parseMergeConfig, saveStateDict, Tensor, type MergeOptions, type StateDict } from '../lib';
import { randn, toF64 } from './helpers';

// ---- references (float64), from docs/merging.md ----
const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i]!, 0);
const norm = (a: number[]) => Math.sqrt(dot(a, a));
function slerpRef(v0: number[], v1: number[], t: number): number[] {
  const n0 = norm(v0), n1 = norm(v1);
  const c = n0 > 1e-8 && n1 > 1e-8 ? dot(v0, v1) / (n0 * n1) : 1;
  if (Math.abs(c) > 0.9995) return v0.map((a, i) => (1 - t) * a + t * v1[i]!);
  const th = Math.acos(c);
  return v0.map((a, i) => (Math.sin((1 - t) * th) / Math.sin(th)) * a + (Math.sin(t * th) / Math.sin(th)) * v1[i]!);
}
function nearswapRef(v0: number[], v1: number[], t: number): number[] {
  return v0.map((a, i) => {
    const d = Math.abs(v1[i]! - a);
    const w = d === 0 ? 1 : Math.min(1, t / d);
    return a + w * (v1[i]! - a);
  });
}
function modelStockRef(b: number[], fts: number[][]): number[] {
  const taus = fts.map((f) => f.map((v, i) => v - b[i]!));
  const n = taus.length;
  let cs = 0, pairs = 0;
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++, pairs++) cs += norm(taus[i]!) > 1e-8 && norm(taus[j]!) > 1e-8 ? dot(taus[i]!, taus[j]!) / (norm(taus[i]!) * norm(taus[j]!)) : 0;
  const c = cs / pairs;
  const den = 1 + (n - 1) * c;
  const tt = Math.abs(den) > 1e-12 ? (n * c) / den : 0;
  return b.map((v, i) => v + tt * taus.reduce((s, tau) => s + tau[i]! / n, 0));
}

const f64 = (v: number[], shape = [v.length]) => Tensor.from(Float64Array.from(v), shape, 'float64');
async function merged(base: number[], fts: number[][], o: MergeOptions): Promise<number[]> {
  const r = await mergeTensor('w', f64(base), fts.map((f) => f64(f)), { compute: 'float64', ...o });
  return [...toF64(r)];
}
function close(t: Tap, got: number[], want: number[], tol: number, msg: string): void {
  const worst = got.reduce((m, g, i) => Math.max(m, Math.abs(g - want[i]!)), 0);
  t.ok(worst <= tol, `${msg} (max |Δ| ${worst.toExponential(2)} <= ${tol})`);
}
const S = Math.SQRT1_2;

t.test('slerp: hand-checked cases', async (t) => {
  close(t, await merged([1, 0], [[0, 1]], { method: 'slerp', t: 0.5 }), [S, S], 1e-15, 'orthogonal unit vectors, t = 0.5: the unit vector between');
  close(t, await merged([2, 0], [[0, 1]], { method: 'slerp', t: 0.5 }), [2 * S, S], 1e-15, 'the angle from the directions, the weights on the tensors as given (mergekit): [√2, √½]');
  t.same(await merged([3, -1, 2], [[0.5, 4, 1]], { method: 'slerp', t: 0 }), [3, -1, 2], 't = 0: the base exactly');
  close(t, await merged([3, -1, 2], [[0.5, 4, 1]], { method: 'slerp', t: 1 }), [0.5, 4, 1], 1e-15, 't = 1: the model');
  t.same(await merged([1, 2], [[2, 4]], { method: 'slerp', t: 0.25 }), [1.25, 2.5], 'parallel (cos = 1): linear interpolation');
  t.same(await merged([1, 2], [[-1, -2]], { method: 'slerp', t: 0.5 }), [0, 0], 'antiparallel (cos = −1): linear interpolation too (the great circle is not unique)');
  t.same(await merged([0, 0], [[1, 1]], { method: 'slerp', t: 0.5 }), [0.5, 0.5], 'a zero-norm base has no direction: linear interpolation (mergekit gives sin(π/4)·v1 here)');
  const nearly = [1, 1e-3];
  close(t, await merged([1, 0], [nearly], { method: 'slerp', t: 0.5 }), [(1 + nearly[0]!) / 2, nearly[1]! / 2], 1e-15, 'cos > 0.9995: linear interpolation');
});

t.test('slerp, nearswap, model_stock equal the float64 references on random tensors (float64 and float32 compute)', async (t) => {
  const n = 1000;
  const base = [...randn(n, 1)];
  const fts = [2, 3, 4].map((s) => [...randn(n, s)].map((v, i) => base[i]! + 0.3 * v));
  const cases: Array<[string, MergeOptions, number[][], number[]]> = [
    ['slerp t=0.3', { method: 'slerp', t: 0.3 }, fts.slice(0, 1), slerpRef(base, fts[0]!, 0.3)],
    ['nearswap t=0.2', { method: 'nearswap', t: 0.2 }, fts.slice(0, 1), nearswapRef(base, fts[0]!, 0.2)],
    ['model_stock, 2 models', { method: 'model_stock' }, fts.slice(0, 2), modelStockRef(base, fts.slice(0, 2))],
    ['model_stock, 3 models', { method: 'model_stock' }, fts, modelStockRef(base, fts)],
  ];
  for (const [name, o, models, want] of cases) {
    close(t, await merged(base, models, o), want, 1e-12, `${name}, float64`);
    const r = await mergeTensor('w', Tensor.from(Float32Array.from(base), [10, 100]), models.map((m) => Tensor.from(Float32Array.from(m), [10, 100])), o);
    t.equal(r.dtype, 'float32');
    close(t, [...toF64(r)], want, 2e-5, `${name}, float32`);
  }
});

t.test('nearswap and model_stock: hand-checked cases', async (t) => {
  close(t, await merged([0, 0, 0, 1], [[0.05, 1, -2, 1]], { method: 'nearswap', t: 0.1 }), [0.05, 0.1, -0.1, 1], 1e-15,
    'entries closer than t take the model’s value; farther ones move t towards it; equal ones stay');
  t.same(await merged([0, 0], [[1, 0], [0, 1]], { method: 'model_stock' }), [0, 0], 'orthogonal task vectors (cos 0): t = 0, the base');
  t.same(await merged([0, 0], [[1, 0], [1, 0]], { method: 'model_stock' }), [1, 0], 'equal task vectors (cos 1): t = 1, their mean');
  const c = S, tt = (2 * c) / (1 + c);
  close(t, await merged([0, 0], [[1, 1], [1, 0]], { method: 'model_stock' }), [tt, tt / 2], 1e-15, '45°: t = 2cos/(1+cos) of the mean [1, ½]');
  t.same(await merged([5, 5], [[5, 5], [6, 7]], { method: 'model_stock' }), [5, 5], 'a zero task vector counts as cos 0: the base');
  t.same(await merged([1, 2], [[2, 3], [0, 1]], { method: 'model_stock' }), [1, 2], 'opposite task vectors (cos = −1, N = 2: t undefined): the base');
});

t.test('integer tensors stay the base’s; out dtype as asked', async (t) => {
  const r = await mergeTensor('steps', Tensor.from(new BigInt64Array([7n]), [1], 'int64'), [Tensor.from(new BigInt64Array([9n]), [1], 'int64')], { method: 'slerp', t: 0.5 });
  t.same(r.toArray(), [7]);
  const b = await mergeTensor('w', Tensor.from(Float32Array.from([1, 0]), [2]), [Tensor.from(Float32Array.from([0, 1]), [2])], { method: 'slerp', t: 0.5, outDtype: 'bfloat16' });
  t.equal(b.dtype, 'bfloat16');
});

t.test('what each method refuses, naming the key (config and API)', async (t) => {
  const cfg = (method: string, models: Array<{ model: string; weight?: number }>, parameters: Record<string, unknown> = {}) => () =>
    parseMergeConfig({ base_model: 'b.safetensors', models, method, parameters, output: 'o.safetensors' });
  const one = [{ model: 'a.safetensors' }];
  const two = [{ model: 'a.safetensors' }, { model: 'c.safetensors' }];
  t.throws(cfg('slerp', two, { t: 0.5 }), { name: 'ArgumentError', message: 'merge config is invalid: models: slerp takes exactly 1 model beside base_model, got 2' });
  t.throws(cfg('slerp', one), { message: 'merge config is invalid: parameters.t: slerp needs t (the interpolation factor, 0 = base_model … 1 = the model)' });
  t.throws(cfg('slerp', one, { t: 1.5 }), { message: 'merge config is invalid: parameters.t: t must be in [0, 1] (0 = base_model, 1 = the model), got 1.5' });
  t.throws(cfg('nearswap', one, { t: 0 }), { message: "merge config is invalid: parameters.t: t must be > 0 (the distance below which entries take the model's value), got 0" });
  t.throws(cfg('slerp', one, { t: 0.5, lambda: 2 }), { message: 'merge config is invalid: parameters.lambda: lambda does not apply to slerp' });
  t.throws(cfg('slerp', [{ model: 'a.safetensors', weight: 0.5 }], { t: 0.5 }), { message: 'merge config is invalid: models: slerp takes no weights (t says how far to go)' });
  t.throws(cfg('model_stock', one), { message: 'merge config is invalid: models: model_stock takes at least 2 models beside base_model, got 1' });
  t.throws(cfg('model_stock', two, { density: 0.5 }), { message: 'merge config is invalid: parameters.density: density does not apply to model_stock' });
  t.throws(cfg('ties', two, { t: 0.5 }), { message: 'merge config is invalid: parameters.t: t does not apply to ties' });
  t.throws(cfg('slerp', one, { t: 0.5, filter_wise: true }), { message: /Unrecognized key\(s\) in object: 'filter_wise'/ });
  t.ok(cfg('slerp', one, { t: 0.5 })(), 'a valid slerp config');
  await t.rejects(merged([1, 0], [[0, 1], [1, 1]], { method: 'slerp', t: 0.5 }), ArgumentError);
  await t.rejects(merged([1, 0], [[0, 1]], { method: 'slerp' }), { name: 'ArgumentError', message: 'merge options are invalid: t: slerp needs t (the interpolation factor, 0 = base_model … 1 = the model)' });
  await t.rejects(merged([1, 0], [[0, 1]], { method: 'nope' as 'slerp', t: 0.5 }), { message: /^unknown merge method "nope" \(expected task_arithmetic, ties, .*ramplus_tl\)$/ });
});

t.test('file to file (mergeCheckpoints, native path) equals the in-memory merge, per method', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'merge-methods-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const model = (seed: number): StateDict =>
    new Map([
      ['a.weight', Tensor.from(Float32Array.from(randn(600, seed)), [20, 30])],
      ['a.bias', Tensor.from(Float32Array.from(randn(20, seed + 50)), [20])],
      ['zero', Tensor.from(new Float32Array(8), [8])],
      ['steps', Tensor.from(new BigInt64Array([BigInt(seed)]), [1], 'int64')],
    ]);
  const sds = [0, 1, 2].map((k) => model(k + 10));
  for (const [k, sd] of sds.entries()) await saveStateDict(path.join(dir, `m${k}.safetensors`), sd);
  for (const [method, parameters, k] of [['slerp', { t: 0.4 }, 1], ['nearswap', { t: 0.5 }, 1], ['model_stock', {}, 2]] as const) {
    const out = `${method}.safetensors`;
    await mergeCheckpoints(parseMergeConfig({ base_model: 'm0.safetensors', models: sds.slice(1, 1 + k).map((_, i) => ({ model: `m${i + 1}.safetensors` })), method, parameters, output: out }), { configDir: dir });
    const got = (await loadStateDict(path.join(dir, out))).tensors;
    const want = await mergeStateDicts(sds[0]!, sds.slice(1, 1 + k), { method, ...parameters });
    for (const [n, w] of want) t.same(got.get(n)!.toArray(), w.toArray(), `${method}: ${n} equals the in-memory merge`);
    const wRef = method === 'slerp' ? slerpRef([...toF64(sds[0]!.get('a.weight')!)], [...toF64(sds[1]!.get('a.weight')!)], 0.4)
      : method === 'nearswap' ? nearswapRef([...toF64(sds[0]!.get('a.weight')!)], [...toF64(sds[1]!.get('a.weight')!)], 0.5)
      : modelStockRef([...toF64(sds[0]!.get('a.weight')!)], [1, 2].map((i) => [...toF64(sds[i]!.get('a.weight')!)]));
    close(t, [...toF64(got.get('a.weight')!)], wRef, 2e-5, `${method}: a.weight equals the reference`);
    t.same(got.get('steps')!.toArray(), [10], `${method}: the integer tensor is the base's`);
  }
});

t.test('the parameter table (lib/merge-methods.ts) names the native registry\'s methods, with the same base use and model counts', async (t) => {
  const { native } = await import('../lib/binding');
  const { METHODS } = await import('../lib/merge-methods');
  const nat = native().mergeMethods();
  t.same(nat.map((m) => m.name).sort(), Object.keys(METHODS).sort(), 'the same names');
  for (const m of nat) {
    const d = METHODS[m.name as keyof typeof METHODS];
    t.same([m.base, m.minModels, m.maxModels], [d.base, d.models[0], d.models[1]], `${m.name}: base ${m.base}, models ${m.minModels}..${m.maxModels || 'any'}`);
  }
});

/**
 * The merge options docs/merging.md promises, each checked on files: non_finite (error | warn |
 * allow), .pt and sharded outputs, the accumulation dtype, and DARE masks that depend only on
 * (seed, tensor name, model index) — not on tensor order or thread count.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { getNumThreads, loadStateDict, mergeCheckpoints, mergeStateDicts, parseMergeConfig, saveStateDict, setNumThreads, Tensor, type StateDict } from '../lib';
import { randn, tmpDir } from './helpers';

const f32 = (v: ArrayLike<number>, shape: number[]) => Tensor.from(Float32Array.from(v), shape);
const arr = (x: Tensor) => Array.from(x.data() as ArrayLike<number>);
function state(seed: number, nanBias = false): StateDict {
  return new Map([
    ['enc.weight', f32(randn(48, seed), [6, 8])],
    ['enc.bias', f32(nanBias ? new Array(8).fill(NaN) : randn(8, seed + 1), [8])],
    ['dec.weight', f32(randn(40, seed + 2), [8, 5])],
  ]);
}

async function files(dir: string) {
  await saveStateDict(path.join(dir, 'base.safetensors'), state(1));
  await saveStateDict(path.join(dir, 'a.safetensors'), state(2));
  await saveStateDict(path.join(dir, 'b.safetensors'), state(3));
  await saveStateDict(path.join(dir, 'nan.safetensors'), state(4, true));
}
const cfg = (over: Record<string, unknown>) =>
  parseMergeConfig({ base_model: 'base.safetensors', models: [{ model: 'a.safetensors', weight: 0.7 }, { model: 'b.safetensors', weight: 0.3 }], output: 'out.safetensors', ...over });

t.test('non_finite: error refuses, warn writes and reports, allow writes silently', async (t) => {
  const dir = tmpDir(t);
  await files(dir);
  const nanCfg = (mode: string, output: string) => cfg({ models: [{ model: 'nan.safetensors', weight: 1 }], non_finite: mode, output });
  await t.rejects(mergeCheckpoints(nanCfg('error', 'e.safetensors'), { configDir: dir }), { code: 'ERR_NON_FINITE', tensor: 'enc.bias' });
  t.notOk(fs.existsSync(path.join(dir, 'e.safetensors')), 'error: no output');
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  process.on('warning', onWarning);
  try {
    const r = await mergeCheckpoints(nanCfg('warn', 'w.safetensors'), { configDir: dir });
    await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    t.same(r.nonFinite, ['enc.bias'], 'warn: the report names the tensor');
    t.equal(warnings.length, 1, 'warn: one warning');
    t.match(warnings[0], /w\.safetensors.*enc\.bias/, 'warn: the warning names the file and the tensor');
    const w = (await loadStateDict(path.join(dir, 'w.safetensors'))).tensors;
    t.ok(arr(w.get('enc.bias')!).every(Number.isNaN), 'warn: the NaN tensor is written');
    warnings.length = 0;
    const a = await mergeCheckpoints(nanCfg('allow', 'a-out.safetensors'), { configDir: dir });
    await new Promise((r) => setImmediate(r));
    t.same(a.nonFinite, [], 'allow: nothing reported');
    t.equal(warnings.length, 0, 'allow: no warning');
    t.ok(arr((await loadStateDict(path.join(dir, 'a-out.safetensors'))).tensors.get('enc.bias')!).every(Number.isNaN), 'allow: written');
  } finally {
    process.off('warning', onWarning);
  }
});

t.test('.pt and sharded outputs hold the in-memory merge', async (t) => {
  const dir = tmpDir(t);
  await files(dir);
  const want = await mergeStateDicts(state(1), [state(2), state(3)], { method: 'ties', density: 0.5, weights: [0.7, 0.3] });
  const check = async (file: string, format: string) => {
    const got = await loadStateDict(path.join(dir, file));
    t.equal(got.format, format, `${file}: written as ${format}`);
    for (const [n, x] of want) t.same(arr(got.tensors.get(n)!), arr(x), `${file}: ${n} equals the in-memory merge`);
  };
  await mergeCheckpoints(cfg({ method: 'ties', parameters: { density: 0.5 }, output: 'merged.pt' }), { configDir: dir });
  await check('merged.pt', 'torch');
  await mergeCheckpoints(cfg({ method: 'ties', parameters: { density: 0.5 }, output: 'shards', shard_size: 200 }), { configDir: dir });
  const listing = fs.readdirSync(path.join(dir, 'shards')).sort();
  t.ok(listing.includes('model.safetensors.index.json'), 'sharded: an index');
  t.ok(listing.filter((n) => n.endsWith('.safetensors')).length >= 2, `sharded: several shards (${listing.join(', ')})`);
  await check('shards', 'sharded');
});

t.test('dtype: float64 accumulation reaches the float64 reference; float32 does not', async (t) => {
  const dir = tmpDir(t);
  // θ0 far from 0 and small task vectors: float32 accumulation loses the low bits.
  const big = (seed: number, scale: number): StateDict => new Map([['w', Tensor.from(Float64Array.from(randn(64, seed), (v, i) => 1000 + i + scale * v), [64])]]);
  const [b, m1, m2] = [big(1, 0), big(2, 1e-4), big(3, 1e-4)];
  for (const [n, s] of [['base', b], ['m1', m1], ['m2', m2]] as const) await saveStateDict(path.join(dir, `${n}.safetensors`), s);
  const ref = arr(b.get('w')!).map((v, i) => v + 0.37 * (0.7 * (arr(m1.get('w')!)[i]! - v) + 0.3 * (arr(m2.get('w')!)[i]! - v)));
  const run = async (dtype: string) => {
    const c = parseMergeConfig({ base_model: 'base.safetensors', models: [{ model: 'm1.safetensors', weight: 0.7 }, { model: 'm2.safetensors', weight: 0.3 }], parameters: { lambda: 0.37 }, dtype, output: `${dtype}.safetensors` });
    await mergeCheckpoints(c, { configDir: dir });
    const got = arr((await loadStateDict(path.join(dir, `${dtype}.safetensors`))).tensors.get('w')!);
    return Math.max(...got.map((v, i) => Math.abs(v - ref[i]!)));
  };
  const e64 = await run('float64');
  const e32 = await run('float32');
  t.ok(e64 < 1e-10, `float64 accumulation: max |Δ| ${e64.toExponential(2)} from the float64 reference`);
  t.ok(e32 > 1e-6, `float32 accumulation: max |Δ| ${e32.toExponential(2)} (the option changes the arithmetic)`);
});

t.test('DARE masks depend on (seed, tensor name, model index) only', async (t) => {
  const base = state(1);
  const ft = [state(2), state(3)];
  const reversed = (s: StateDict): StateDict => new Map([...s].reverse());
  const opts = { method: 'dare_linear' as const, density: 0.4, seed: 7, weights: [1, 1] };
  const threads = getNumThreads();
  const a = await mergeStateDicts(base, ft, opts);
  const b = await mergeStateDicts(reversed(base), ft.map(reversed), opts);
  setNumThreads(1);
  const c = await mergeStateDicts(base, ft, opts);
  setNumThreads(threads);
  for (const [n, x] of a) {
    t.same(arr(b.get(n)!), arr(x), `${n}: same result with the tensors in reverse order`);
    t.same(arr(c.get(n)!), arr(x), `${n}: same result with 1 thread as with ${threads}`);
  }
  const d = await mergeStateDicts(base, ft, { ...opts, seed: 8 });
  t.notSame(arr(d.get('enc.weight')!), arr(a.get('enc.weight')!), 'another seed gives another mask');
  // One model: every entry is θ0 (dropped) or θ0 + τ/density (kept, rescaled).
  const one = await mergeStateDicts(base, [ft[0]!], { ...opts, weights: [1] });
  const b0 = arr(base.get('enc.weight')!);
  const tau = arr(ft[0]!.get('enc.weight')!).map((v, i) => v - b0[i]!);
  const got = arr(one.get('enc.weight')!);
  let kept = 0;
  let bad = 0;
  got.forEach((v, i) => {
    if (v === b0[i]) return;
    kept++;
    if (Math.abs(v - (b0[i]! + tau[i]! / 0.4)) > 1e-5 * (1 + Math.abs(v))) bad++;
  });
  t.equal(bad, 0, 'every entry is either θ0 or θ0 + τ / density');
  t.ok(kept > 5 && kept < 43, `a random subset is kept (${kept} of 48 at density 0.4)`);
});

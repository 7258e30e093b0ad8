import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import {
  ArgumentError,
  CheckpointError,
  loadStateDict,
  mergeCheckpoints,
  mergeStateDicts,
  parseMergeConfig,
  saveStateDict,
  Tensor,
  type MergeOptions,
  type StateDict,
} from '../lib';
import { randn, toF64 } from './helpers';

// ---- plain-TypeScript references (float64), written from docs/merging.md ----
const keep = (d: number, n: number) => Math.max(0, Math.min(n, Math.round(d * n)));
function rankMask(tau: number[], start: number, count: number): boolean[] {
  const order = tau.map((v, i) => i).sort((a, b) => Math.abs(tau[b]!) - Math.abs(tau[a]!) || a - b);
  const m = tau.map(() => false);
  for (const i of order.slice(start, start + count)) m[i] = true;
  return m;
}
function reference(method: string, base: number[], fts: number[][], w: number[], p: { lambda?: number; density?: number; gamma?: number; election?: string }): number[] {
  const lambda = p.lambda ?? 1;
  const density = p.density ?? 1;
  const n = base.length;
  let taus = fts.map((f) => f.map((v, i) => v - base[i]!));
  if (method === 'ties') taus = taus.map((tau) => (m => tau.map((v, i) => (m[i] ? v : 0)))(rankMask(tau, 0, keep(density, n))));
  if (method === 'breadcrumbs') taus = taus.map((tau) => (m => tau.map((v, i) => (m[i] ? v : 0)))(rankMask(tau, keep(p.gamma ?? 0, n), keep(density, n))));
  let merged: number[];
  if (method === 'ties') {
    merged = base.map((_, i) => {
      const mass = taus.reduce((s, tau, k) => s + (p.election === 'unweighted' ? 1 : w[k]!) * tau[i]!, 0);
      const sign = Math.sign(mass);
      let num = 0;
      let den = 0;
      taus.forEach((tau, k) => {
        if (tau[i] !== 0 && Math.sign(tau[i]!) === sign) {
          num += w[k]! * tau[i]!;
          den += w[k]!;
        }
      });
      return den !== 0 ? num / den : 0;
    });
  } else merged = base.map((_, i) => taus.reduce((s, tau, k) => s + w[k]! * tau[i]!, 0));
  return base.map((b, i) => b + lambda * merged[i]!);
}

const N = 40;
const base = Array.from(randn(N, 1));
const fts = [2, 3, 4].map((s) => Array.from(randn(N, s), (v, i) => base[i]! + v));
const tensor = (v: number[]) => Tensor.from(Float32Array.from(v), [5, 8]);
const sd = (v: number[]): StateDict => new Map([['w', tensor(v)], ['n', Tensor.from(new BigInt64Array([1n, 2n]), [2])]]);

async function run(opts: MergeOptions): Promise<number[]> {
  const out = await mergeStateDicts(sd(base), fts.map(sd), opts);
  t.same(Array.from(out.get('n')!.data() as BigInt64Array), [1n, 2n], 'integer tensors come from the base');
  return Array.from(toF64(out.get('w')!));
}

function close(t: Test, got: number[], want: number[], what: string): void {
  const err = Math.max(...got.map((g, i) => Math.abs(g - want[i]!)));
  t.ok(err < 1e-5, `${what} (max |Δ| ${err.toExponential(2)})`);
}

t.test('task arithmetic equals θ0 + λ Σ w_k τ_k', async (t) => {
  const w = [1, 0.5, -0.25];
  close(t, await run({ method: 'task_arithmetic', weights: w, lambda: 0.7 }), reference('task_arithmetic', base, fts, w, { lambda: 0.7 }), 'fused task arithmetic');
  close(t, await run({ weights: w, lambda: 0.7, compute: 'float64' }), reference('task_arithmetic', base, fts, w, { lambda: 0.7 }), 'float64 accumulation');
});

t.test('TIES (weighted and unweighted election) equals the reference', async (t) => {
  for (const election of ['weighted', 'unweighted'] as const)
    for (const density of [0.2, 0.5, 1]) {
      const w = [1, 2, 0.5];
      close(t, await run({ method: 'ties', weights: w, density, lambda: 1.3, election }), reference('ties', base, fts, w, { density, lambda: 1.3, election }), `ties density ${density}, ${election}`);
    }
  // A hand-worked case: three models, one entry each way.
  const b = sd([0, 0, 0, 0, ...Array(36).fill(0)]);
  const f1 = sd([3, -1, 2, 0, ...Array(36).fill(0)]);
  const f2 = sd([-1, -2, 2, 0, ...Array(36).fill(0)]);
  const out = Array.from(toF64((await mergeStateDicts(b, [f1, f2], { method: 'ties', density: 1 })).get('w')!)).slice(0, 4);
  // entry 0: mass +2 → keep +3 only → 3; entry 1: both negative → mean −1.5; entry 2: mean 2; entry 3: 0
  t.same(out, [3, -1.5, 2, 0], 'hand-computed TIES');
});

t.test('breadcrumbs drops the largest γ and keeps the next density fraction', async (t) => {
  const w = [1, 1, 1];
  close(t, await run({ method: 'breadcrumbs', weights: w, density: 0.5, gamma: 0.1 }), reference('breadcrumbs', base, fts, w, { density: 0.5, gamma: 0.1 }), 'breadcrumbs');
});

t.test('DARE: seeded drop-and-rescale', async (t) => {
  const single = async (o: MergeOptions) => Array.from(toF64((await mergeStateDicts(sd(base), [sd(fts[0]!)], o)).get('w')!));
  const tau = fts[0]!.map((v, i) => v - base[i]!);
  const d = await single({ method: 'dare_linear', density: 0.5, seed: 7 });
  const kept = d.map((v, i) => v - base[i]!);
  t.ok(kept.every((v, i) => Math.abs(v) < 1e-6 || Math.abs(v - tau[i]! / 0.5) < 1e-5), 'each entry is dropped or rescaled by 1/density');
  const frac = kept.filter((v) => Math.abs(v) > 1e-6).length / N;
  t.ok(frac > 0.2 && frac < 0.8, `about half kept (${frac})`);
  t.same(await single({ method: 'dare_linear', density: 0.5, seed: 7 }), d, 'same seed, same mask');
  t.notSame(await single({ method: 'dare_linear', density: 0.5, seed: 8 }), d, 'another seed, another mask');
  close(t, await run({ method: 'dare_linear', density: 1, weights: [1, 2, 3] }), reference('task_arithmetic', base, fts, [1, 2, 3], {}), 'density 1 is task arithmetic');
  close(t, await run({ method: 'dare_ties', density: 1, weights: [1, 2, 3] }), reference('ties', base, fts, [1, 2, 3], { density: 1 }), 'dare_ties at density 1 is TIES without trimming');
  // Large tensor: the kept fraction concentrates around the density.
  const big = Array.from(randn(20000, 3));
  const out = await mergeStateDicts(new Map([['w', Tensor.from(new Float32Array(20000), [20000])]]), [new Map([['w', Tensor.from(Float32Array.from(big), [20000])]])], { method: 'dare_linear', density: 0.3, seed: 1 });
  const f = Array.from(toF64(out.get('w')!)).filter((v) => v !== 0).length / 20000;
  t.ok(Math.abs(f - 0.3) < 0.02, `kept fraction ${f.toFixed(3)} ≈ 0.3`);
});

t.test('merge config: validated before any file is read, errors name the field', async (t) => {
  const ok = parseMergeConfig({ base_model: 'b.safetensors', models: [{ model: 'a.safetensors' }], output: 'o.safetensors', shard_size: '2GB' });
  t.equal(ok.method, 'task_arithmetic');
  t.equal(ok.shard_size, 2e9);
  t.same(ok.parameters, {}, 'parameters: the defaults come from the method (lib/merge-methods.ts)');
  t.throws(() => parseMergeConfig({ models: [], output: 'o' }), ArgumentError);
  t.throws(() => parseMergeConfig({ base_model: 'b', models: [{ model: 'a', weight: 'x' }], output: 'o' }), /models\.0\.weight/);
  t.throws(() => parseMergeConfig({ base_model: 'b', models: [{ model: 'a' }], output: 'o', method: 'nope' }), /method/);
  t.throws(() => parseMergeConfig({ base_model: 'b', models: [{ model: 'a' }], output: 'o', parameters: { density: 1.5 } }), /parameters\.density/);
  t.throws(() => parseMergeConfig({ base_model: 'b', models: [{ model: 'a', weight: -1 }], output: 'o', method: 'ties' }), /models: ties needs weights >= 0/);
  t.throws(() => parseMergeConfig({ base_model: 'b', models: [{ model: 'a' }], output: 'o', typo: 1 }), /typo/);
  t.throws(() => parseMergeConfig({ base_model: 'b', models: [{ model: 'a' }], output: 'o', shard_size: '2 parsecs' }), /shard_size/);
});

t.test('streaming merge between files equals the in-memory merge; failures leave no output', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-merge-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const mk = (v: number[], s: number): StateDict =>
    new Map([
      ['a.weight', Tensor.from(Float32Array.from(v), [5, 8])],
      ['a.bias', Tensor.from(Float32Array.from(randn(8, s)), [8])],
      ['steps', Tensor.from(new BigInt64Array([BigInt(s)]), [1])],
    ]);
  const b = mk(base, 10);
  const m1 = mk(fts[0]!, 11);
  const m2 = mk(fts[1]!, 12);
  await saveStateDict(path.join(dir, 'base.safetensors'), b);
  await saveStateDict(path.join(dir, 'm1'), m1, { maxShardBytes: 64 }); // sharded
  await saveStateDict(path.join(dir, 'm2.safetensors'), m2);
  const cfg = parseMergeConfig({
    base_model: 'base.safetensors',
    models: [{ model: 'm1', weight: 1 }, { model: 'm2.safetensors', weight: 0.5 }],
    method: 'ties',
    parameters: { density: 0.5, lambda: 0.8 },
    out_dtype: 'float16',
    output: 'merged.safetensors',
  });
  const report = await mergeCheckpoints(cfg, { configDir: dir });
  t.equal(report.tensors, 3);
  const got = (await loadStateDict(path.join(dir, 'merged.safetensors'))).tensors;
  const want = await mergeStateDicts(b, [m1, m2], { method: 'ties', density: 0.5, lambda: 0.8, weights: [1, 0.5], outDtype: 'float16' });
  for (const n of ['a.weight', 'a.bias']) {
    t.equal(got.get(n)!.dtype, 'float16', `${n} written as float16`);
    t.same(Array.from(got.get(n)!.data() as Uint16Array), Array.from(want.get(n)!.data() as Uint16Array), `${n} bit-identical to the in-memory merge`);
  }
  t.same(Array.from(got.get('steps')!.data() as BigInt64Array), [10n], 'integer tensor from the base');
  // A model with a different layout: a CheckpointError naming both files; no output written.
  await saveStateDict(path.join(dir, 'bad.safetensors'), new Map([['a.weight', Tensor.from(new Float32Array(40), [8, 5])], ['a.bias', Tensor.from(new Float32Array(8), [8])]]));
  const bad = { ...cfg, models: [{ model: 'bad.safetensors', weight: 1 }], output: 'never.safetensors' };
  await t.rejects(mergeCheckpoints(bad, { configDir: dir }), CheckpointError);
  await t.rejects(mergeCheckpoints(bad, { configDir: dir }), /bad\.safetensors[\s\S]*a\.weight|a\.weight[\s\S]*bad\.safetensors/);
  // Non-finite values refused mid-stream: nothing is left behind.
  const nan = mk(fts[2]!, 13);
  nan.set('a.bias', Tensor.from(new Float32Array(8).fill(NaN), [8]));
  await saveStateDict(path.join(dir, 'nan.safetensors'), nan);
  const nanCfg = { ...cfg, method: 'task_arithmetic' as const, parameters: { lambda: 0.8 }, models: [{ model: 'nan.safetensors', weight: 1 }], output: 'nan-out.safetensors' };
  await t.rejects(mergeCheckpoints(nanCfg, { configDir: dir }), { code: 'ERR_NON_FINITE', tensor: 'a.bias' });
  t.notOk(fs.existsSync(path.join(dir, 'never.safetensors')) || fs.existsSync(path.join(dir, 'nan-out.safetensors')), 'no output file');
  t.same(fs.readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'no temporary file left');
});

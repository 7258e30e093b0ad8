// The merge methods of issue 26's second part — della / della_linear, breadcrumbs_ties, linear,
// passthrough, nuslerp, multislerp, karcher, sce, ram / ramplus_tl, task_arithmetic's normalize —
// each against a plain-TypeScript float64 reference written from docs/merging.md (the papers and
// mergekit's documentation), hand-checked edge cases, and for the random and iterative methods
// properties that do not depend on the implementation: DELLA's keep frequencies per magnitude rank
// and its unbiasedness, the Karcher mean's vanishing sum of log maps, multislerp as mergekit's
// tangent-space step written out literally.
// Run: npx tap test/merge-methods-more.test.ts
import t, { type Test as Tap } from 'tap';
import { ArgumentError, mergeStateDicts, mergeTensor, parseMergeConfig, Tensor, type MergeOptions } from '../lib';
import { randn, toF64 } from './helpers';

// ---- float64 references, from docs/merging.md ----
type V = number[];
const dot = (a: V, b: V) => a.reduce((s, v, i) => s + v * b[i]!, 0);
const norm = (a: V) => Math.sqrt(dot(a, a));
const add = (a: V, b: V) => a.map((v, i) => v + b[i]!);
const sub = (a: V, b: V) => a.map((v, i) => v - b[i]!);
const mul = (a: V, s: number) => a.map((v) => v * s);
const sgn = (x: number) => (x > 0 ? 1 : x < 0 ? -1 : 0);

/** Entries ranked by |τ| descending, ties by lower index; keep ranks in [start, start + count). */
function rankKeep(tau: V, start: number, count: number): V {
  const order = tau.map((v, i) => [Math.abs(v), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const keep = new Set(order.slice(start, start + count).map(([, i]) => i));
  return tau.map((v, i) => (keep.has(i) ? v : 0));
}
const keepCount = (d: number, n: number) => Math.min(n, Math.max(0, Math.round(d * n)));
/** TIES steps 2–3 (weighted election): sign of Σ w τ; the agreeing entries' weighted mean (normalize) or sum. */
function electMerge(taus: V[], w: number[], normalize: boolean): V {
  return taus[0]!.map((_, i) => {
    const g = sgn(taus.reduce((s, tau, k) => s + w[k]! * tau[i]!, 0));
    let num = 0, den = 0;
    taus.forEach((tau, k) => {
      if (tau[i] !== 0 && sgn(tau[i]!) === g) (num += w[k]! * tau[i]!), (den += w[k]!);
    });
    return den === 0 ? 0 : normalize ? num / den : num;
  });
}
/** SLERP of two vectors as nuslerp does it (unit vectors from max(‖v‖, 1e-7), linear at the edges). */
function nuslerpVec(a: V, b: V, t: number): V {
  const na = norm(a), nb = norm(b);
  const c = Math.max(-1, Math.min(1, dot(a, b) / (Math.max(na, 1e-7) * Math.max(nb, 1e-7))));
  const th = Math.acos(c), s = Math.sin(th);
  if (Math.abs(s) < 1e-8 || na <= 1e-7 || nb <= 1e-7) return a.map((v, i) => (1 - t) * v + t * b[i]!);
  return a.map((v, i) => (Math.sin((1 - t) * th) * v + Math.sin(t * th) * b[i]!) / s);
}
/** Slices of a row-major [R, C] matrix: rows (W[i, :]) or columns (W[:, j]). */
const rowsOf = (x: V, R: number, C: number): V[] => Array.from({ length: R }, (_, i) => x.slice(i * C, (i + 1) * C));
const colsOf = (x: V, R: number, C: number): V[] => Array.from({ length: C }, (_, j) => Array.from({ length: R }, (_, i) => x[i * C + j]!));
function nuslerpRef(base: V | null, m0: V, m1: V, w0: number, w1: number, shape: [number, number], mode: 'flat' | 'rows' | 'cols'): V {
  const t = Math.abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
  const a = base ? sub(m0, base) : m0, b = base ? sub(m1, base) : m1;
  const [R, C] = shape;
  let out: V;
  if (mode === 'flat') out = nuslerpVec(a, b, t);
  else if (mode === 'rows') out = rowsOf(a, R, C).flatMap((r, i) => nuslerpVec(r, rowsOf(b, R, C)[i]!, t));
  else {
    const cols = colsOf(a, R, C).map((c, j) => nuslerpVec(c, colsOf(b, R, C)[j]!, t));
    out = Array.from({ length: R * C }, (_, k) => cols[k % C]![Math.floor(k / C)]!);
  }
  return base ? add(base, out) : out;
}
/** mergekit's multislerp as its documentation describes it, step by step: unit vectors, their weighted mean, the tangent-space mean at it, the exponential map, the weighted mean norm. */
function multislerpLiteral(base: V | null, ms: V[], w: number[], normalizeWeights = true, eps = 1e-8): V {
  if (ms.length === 1) return ms[0]!;
  const ws = normalizeWeights ? w.map((x) => x / w.reduce((s, y) => s + y, 0)) : w;
  const xs = ms.map((m) => (base ? sub(m, base) : m));
  const norms = xs.map(norm);
  const units = xs.map((x, k) => mul(x, 1 / (norms[k]! + eps)));
  let mean = units.reduce((s, u, k) => add(s, mul(u, ws[k]!)), units[0]!.map(() => 0));
  const mn = norm(mean);
  let res: V;
  if (mn < eps) res = add(mul(xs[0]!, ws[0]!), mul(xs[1]!, ws[1]!));
  else {
    mean = mul(mean, 1 / mn);
    const tangent = units.map((u) => sub(u, mul(mean, dot(u, mean))));
    const tm = tangent.reduce((s, v, k) => add(s, mul(v, ws[k]!)), mean.map(() => 0));
    const tn = norm(tm);
    const onSphere = tn > eps ? add(mul(mean, Math.cos(tn)), mul(tm, Math.sin(tn) / tn)) : mean;
    res = mul(onSphere, norms.reduce((s, n, k) => s + n * ws[k]!, 0));
  }
  return base ? add(base, res) : res;
}
/** The Karcher mean by fixed-point iteration (docs/merging.md), in float64. */
function karcherRef(ms: V[], maxIter = 10, tol = 1e-5): V {
  if (ms.length === 1) return ms[0]!;
  const nbar = ms.reduce((s, m) => s + norm(m), 0) / ms.length;
  const us = ms.filter((m) => norm(m) > tol).map((m) => mul(m, 1 / norm(m)));
  if (us.length === 0) return ms[0]!.map(() => 0);
  let u = us.reduce((s, x) => add(s, mul(x, 1 / us.length)), us[0]!.map(() => 0));
  u = norm(u) < tol ? us[0]! : mul(u, 1 / norm(u));
  for (let it = 0; it < maxIter; it++) {
    let T = u.map(() => 0);
    for (const ui of us) {
      const c = Math.max(-1, Math.min(1, dot(u, ui)));
      const th = Math.acos(c);
      if (th < tol || Math.sin(th) <= 0) continue;
      T = add(T, mul(sub(ui, mul(u, c)), th / Math.sin(th) / us.length));
    }
    const nt = norm(T);
    if (nt < tol) break;
    u = add(mul(u, Math.cos(nt)), mul(T, Math.sin(nt) / nt));
    u = mul(u, 1 / norm(u));
  }
  return mul(u, nbar);
}
/** Σ_k log_u(u_k): 0 at the Karcher mean u. */
function logSum(u: V, ms: V[]): V {
  const uu = mul(u, 1 / norm(u));
  return ms.reduce((s, m) => {
    const uk = mul(m, 1 / norm(m));
    const c = Math.max(-1, Math.min(1, dot(uu, uk)));
    const th = Math.acos(c);
    return th < 1e-12 ? s : add(s, mul(sub(uk, mul(uu, c)), th / Math.sin(th)));
  }, uu.map(() => 0));
}
function sceRef(base: V, ms: V[], topk = 1): V {
  const N = ms.length;
  let taus = ms.map((m) => sub(m, base));
  if (topk < 1) {
    const variance = base.map((_, i) => {
      const mu = taus.reduce((s, tau) => s + tau[i]!, 0) / N;
      return taus.reduce((s, tau) => s + (tau[i]! - mu) ** 2, 0) / N;
    });
    const nz = variance.filter((v) => v !== 0).length;
    const k = Math.floor(nz * topk);
    const order = variance.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    const keep = new Set(order.slice(0, k).map(([, i]) => i));
    taus = taus.map((tau) => tau.map((v, i) => (keep.has(i) ? v : 0)));
  }
  const energy = taus.map((tau) => tau.reduce((s, v) => s + v * v, 0) / tau.length);
  const es = energy.reduce((s, e) => s + e, 0);
  const w = energy.map((e) => (Math.abs(es) < 1e-6 ? 1 / N : e / es));
  return base.map((b, i) => {
    const g = taus.reduce((s, tau) => s + tau[i]!, 0) >= 0 ? 1 : -1;
    let num = 0, den = 0;
    taus.forEach((tau, k) => {
      if (sgn(tau[i]!) === g) (num += w[k]! * tau[i]!), (den += w[k]!);
    });
    return b + num / Math.max(den, 1e-6);
  });
}
function ramRef(base: V, ms: V[], plus: boolean, eps = 1e-5, r = 0.1, alpha = 0.2): V {
  const taus = ms.map((m) => sub(m, base));
  const act = taus.map((tau) => tau.map((v) => Math.abs(v) > eps));
  const count = base.map((_, i) => act.filter((a) => a[i]).length);
  const lam = taus.map((_, k) => {
    if (!plus) return 1;
    const shared = count.filter((c, i) => act[k]![i] && c > 1).length;
    const unique = count.filter((c, i) => act[k]![i] && c === 1).length;
    return 1 + r * Math.max(0, Math.min(shared / Math.max(unique, eps), alpha));
  });
  return base.map((b, i) => b + taus.reduce((s, tau, k) => (act[k]![i] ? s + tau[i]! * (count[i] === 1 ? lam[k]! : 1 / count[i]!) : s), 0));
}

// ---- through the library ----
const f64 = (v: V, shape = [v.length]) => Tensor.from(Float64Array.from(v), shape, 'float64');
async function merged(base: V | null, fts: V[], o: MergeOptions, shape?: number[]): Promise<V> {
  const r = await mergeTensor('w', base ? f64(base, shape) : null, fts.map((f) => f64(f, shape)), { compute: 'float64', ...o });
  return [...toF64(r)];
}
function close(t: Tap, got: V, want: V, tol: number, msg: string): void {
  t.equal(got.length, want.length, `${msg}: ${want.length} entries`);
  const worst = got.reduce((m, g, i) => Math.max(m, Math.abs(g - want[i]!)), 0);
  t.ok(worst <= tol, `${msg} (max |Δ| ${worst.toExponential(2)} <= ${tol})`);
}
const S = Math.SQRT1_2;
const n = 240;
const base = [...randn(n, 71)];
const fts = [72, 73, 74].map((s) => [...randn(n, s)].map((v, i) => base[i]! + 0.5 * v));
// Sparse-ish task vectors so that elections and "changed" tests have something to decide.
const sparse = [81, 82, 83].map((s) => [...randn(n, s)].map((v, i) => base[i]! + (Math.abs(v) > 0.8 ? v : 0)));

t.test('breadcrumbs_ties, linear, passthrough, task_arithmetic normalize: float64 references and hand cases', async (t) => {
  const d = 0.5, g = 0.1, w = [0.7, 0.3, 1.2];
  const taus = fts.map((f) => sub(f, base));
  const trimmed = taus.map((tau) => rankKeep(tau, keepCount(g, n), keepCount(d, n)));
  close(t, await merged(base, fts, { method: 'breadcrumbs_ties', density: d, gamma: g, weights: w }), add(base, electMerge(trimmed, w, false)), 1e-12,
    'breadcrumbs_ties (normalize false: agreeing deltas summed)');
  close(t, await merged(base, fts, { method: 'breadcrumbs_ties', density: d, gamma: g, weights: w, normalize: true, lambda: 0.8 }), add(base, mul(electMerge(trimmed, w, true), 0.8)), 1e-12,
    'breadcrumbs_ties normalize true, lambda 0.8');
  const perModel = taus.map((tau, k) => rankKeep(tau, keepCount([0.05, 0.1, 0][k]!, n), keepCount([0.3, 0.5, 0.9][k]!, n)));
  close(t, await merged(base, fts, { method: 'breadcrumbs_ties', density: [0.3, 0.5, 0.9], gamma: [0.05, 0.1, 0], weights: w }), add(base, electMerge(perModel, w, false)), 1e-12,
    'breadcrumbs_ties with per-model density and gamma');
  t.same(await merged([0, 0, 0, 0], [[5, 1, 2, -3], [-1, 1, -4, 0]], { method: 'breadcrumbs_ties', density: 0.5, gamma: 0.25 }), [-1, 1, 2, -3],
    'by hand: |τ| ranks of model 1 are 5, −3, 2, 1: γ drops 5, density keeps −3 and 2; of model 2 −4, −1, 1, 0: keeps −1 and 1; no entry is kept by both');

  const ws = [0.5, 1.5, 2];
  const lin = base.map((_, i) => fts.reduce((s, f, k) => s + ws[k]! * f[i]!, 0) / 4);
  close(t, await merged(null, fts, { method: 'linear', weights: ws }), lin, 1e-12, 'linear: Σ w θ / Σ w, no base');
  close(t, await merged(null, fts, { method: 'linear', weights: ws, normalize: false }), mul(lin, 4), 1e-12, 'linear normalize false: Σ w θ');
  t.same(await merged(null, [[1, 2], [3, 6]], { method: 'linear', weights: [1, 3] }), [2.5, 5], 'linear by hand: (1·[1,2] + 3·[3,6])/4');
  close(t, await merged(null, [fts[0]!], { method: 'passthrough', scale: -0.5 }), mul(fts[0]!, -0.5), 0, 'passthrough: θ_1 · scale');
  t.same(await merged(null, [[1, -2]], { method: 'passthrough' }), [1, -2], 'passthrough scale 1: the model exactly');
  const ta = base.map((b, i) => b + 0.9 * fts.reduce((s, f, k) => s + ws[k]! * (f[i]! - b), 0) / 4);
  close(t, await merged(base, fts, { method: 'task_arithmetic', weights: ws, lambda: 0.9, normalize: true }), ta, 1e-12, 'task_arithmetic normalize: θ0 + λ Σ w τ / Σ w');
  close(t, await merged([1, 1], [[2, 3], [3, 5]], { method: 'task_arithmetic', weights: [1, -1], normalize: true }), [0, -1], 1e-15,
    'task_arithmetic normalize with Σ w = 0 divides by 1 (as mergekit): θ0 + τ1 − τ2');
});

t.test('della: each kept entry is τ/p for its own magnitude rank; keep frequencies per rank and the mean of the result are DELLA’s', async (t) => {
  const R = 400, C = 21, d = 0.4, eps = 0.2;
  const b = new Array(R * C).fill(0);
  const tau = [...randn(R * C, 91)];
  const out = await merged(b, [tau], { method: 'della_linear', density: d, epsilon: eps, seed: 3 }, [R, C]);
  const keptByRank = new Array(C).fill(0);
  let worstScale = 0;
  for (let i = 0; i < R; i++) {
    const row = tau.slice(i * C, (i + 1) * C);
    const asc = row.map((v, j) => [Math.abs(v), j] as const).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    asc.forEach(([, j], r) => {
      const o = out[i * C + j]!;
      if (o === 0) return;
      keptByRank[r]++;
      const p = d - eps + (2 * eps * r) / (C - 1);
      worstScale = Math.max(worstScale, Math.abs(o - row[j]! / p));
    });
  }
  t.ok(worstScale < 1e-12, `every kept entry is τ/p(rank) (max |Δ| ${worstScale.toExponential(2)})`);
  // Keep frequency of the 5 smallest and the 5 largest ranks vs p: binomial with 2000 draws each, 4.5 σ.
  for (const [lo, hi] of [[0, 5], [16, 21]]) {
    const kept = keptByRank.slice(lo, hi).reduce((s, x) => s + x, 0), trials = R * (hi - lo);
    const p = Array.from({ length: hi - lo }, (_, q) => d - eps + (2 * eps * (lo + q)) / (C - 1)).reduce((s, x) => s + x, 0) / (hi - lo);
    const sd = Math.sqrt((p * (1 - p)) / trials);
    t.ok(Math.abs(kept / trials - p) < 4.5 * sd, `ranks ${lo}..${hi - 1}: kept ${(kept / trials).toFixed(3)} of the time, p = ${p.toFixed(3)} (±${(4.5 * sd).toFixed(3)})`);
  }
  const total = keptByRank.reduce((s, x) => s + x, 0) / (R * C);
  t.ok(Math.abs(total - d) < 4.5 * Math.sqrt((d * (1 - d)) / (R * C)), `mean keep rate ${total.toFixed(4)} ≈ density ${d}`);
  t.ok(keptByRank[C - 1] > keptByRank[0] * 2, `the largest entries are kept most often (${keptByRank[C - 1]} vs ${keptByRank[0]} of ${R})`);
  // Unbiased: the mean over seeds of the pruned task vector is τ (rescale), within 4.5 standard errors per entry.
  const small = [...randn(30, 92)];
  const draws = 600;
  const sum = new Array(30).fill(0), sq = new Array(30).fill(0);
  for (let s = 0; s < draws; s++) {
    const o = await merged(new Array(30).fill(0), [small], { method: 'della_linear', density: 0.5, epsilon: 0.3, seed: s });
    o.forEach((v, i) => ((sum[i] += v), (sq[i] += v * v)));
  }
  let worstZ = 0;
  for (let i = 0; i < 30; i++) {
    const mu = sum[i] / draws, se = Math.sqrt(Math.max(sq[i] / draws - mu * mu, 1e-30) / draws);
    worstZ = Math.max(worstZ, Math.abs(mu - small[i]!) / se);
  }
  t.ok(worstZ < 4.5, `E[pruned τ] = τ over ${draws} seeds (worst |z| ${worstZ.toFixed(2)} < 4.5)`);
  const noRescale = await merged(b, [tau], { method: 'della_linear', density: d, epsilon: eps, seed: 3, rescale: false }, [R, C]);
  t.ok(noRescale.every((v, i) => v === 0 || v === tau[i]), 'rescale false: kept entries are τ as they are');
  t.same(noRescale.map((v) => v !== 0), out.map((v) => v !== 0), 'the same mask with and without rescale (same seed)');
  t.same(await merged([0, 0, 0], [[1, -2, 3]], { method: 'della_linear', density: 1, epsilon: 0 }), [1, -2, 3], 'density 1 prunes nothing');
  const again = await merged(b, [tau], { method: 'della_linear', density: d, epsilon: eps, seed: 3 }, [R, C]);
  t.same(again, out, 'the same seed gives the same mask');
  const other = await merged(b, [tau], { method: 'della_linear', density: d, epsilon: eps, seed: 4 }, [R, C]);
  t.not(other.join(), out.join(), 'another seed another mask');
});

t.test('della (with election) is TIES steps 2–3 on the della_linear-pruned task vectors', async (t) => {
  const w = [0.6, 1.4];
  const o = { density: [0.5, 0.7], epsilon: [0.2, 0.1], seed: 11 } as const;
  // della_linear with one weight at 0 gives the other model's pruned task vector (masks are seeded by (seed, name, k)).
  const pruned = await Promise.all([[1, 0], [0, 1]].map(async (wk, k) => mul(sub(await merged(base, fts.slice(0, 2), { method: 'della_linear', ...o, weights: wk }), base), 1 / wk[k]!)));
  close(t, await merged(base, fts.slice(0, 2), { method: 'della', ...o, weights: w }), add(base, electMerge(pruned, w, true)), 1e-12, 'della = θ0 + disjoint mean of the elected pruned τ');
  close(t, await merged(base, fts.slice(0, 2), { method: 'della_linear', ...o, weights: w, lambda: 0.5 }), add(base, mul(add(mul(pruned[0]!, w[0]!), mul(pruned[1]!, w[1]!)), 0.5)), 1e-12,
    'della_linear = θ0 + λ Σ w τ̃');
});

t.test('nuslerp: whole tensors, rows, columns, with and without a base, and its edges', async (t) => {
  const R = 12, C = 20;
  const [a, b, c] = fts.map((f) => f.slice(0, R * C));
  const bs = base.slice(0, R * C);
  for (const [mode, o] of [['flat', {}], ['rows', { flatten: false }], ['cols', { flatten: false, rowWise: true }]] as const) {
    close(t, await merged(null, [a!, b!], { method: 'nuslerp', weights: [1, 3], ...o }, [R, C]), nuslerpRef(null, a!, b!, 1, 3, [R, C], mode), 1e-12, `nuslerp ${mode}, no base, t = 3/4`);
    close(t, await merged(bs, [b!, c!], { method: 'nuslerp', weights: [2, 1], ...o }, [R, C]), nuslerpRef(bs, b!, c!, 2, 1, [R, C], mode), 1e-12, `nuslerp ${mode}, with a base (task vectors), t = 1/3`);
  }
  const rows = await merged(null, [a!, b!], { method: 'nuslerp', weights: [1, 3], flatten: false }, [R, C]);
  const cols = await merged(null, [a!, b!], { method: 'nuslerp', weights: [1, 3], flatten: false, rowWise: true }, [R, C]);
  t.not(rows.join(), cols.join(), 'rows and columns differ');
  close(t, await merged(null, [[1, 0], [0, 1]], { method: 'nuslerp', weights: [1, 1] }), [S, S], 1e-15, 'by hand: orthogonal unit vectors, equal weights → the unit vector between');
  close(t, await merged(null, [[1, 0], [0, 2]], { method: 'nuslerp', weights: [1, 1] }), [S, 2 * S], 1e-15, 'coefficients applied to the vectors as they are: [√½, √2]');
  close(t, await merged(null, [[1, 2], [2, 4]], { method: 'nuslerp', weights: [3, 1] }), [1.25, 2.5], 1e-12, 'parallel: linear, t = 1/4');
  t.same(await merged(null, [[0, 0], [2, 4]], { method: 'nuslerp', weights: [1, 1] }), [1, 2], 'a zero vector: linear (mergekit would find cos 0)');
  close(t, await merged(null, [[1, 0], [0, 1]], { method: 'nuslerp', weights: [1, -1] }), [S, S], 1e-15, 'weights summing to ~0: t = 0.5');
  const r2 = await merged(null, [[1, 0, 0, 1], [0, 1, 0, 2]], { method: 'nuslerp', weights: [1, 1], flatten: false }, [2, 2]);
  close(t, r2, [S, S, 0, 1.5], 1e-15, 'by hand, rows of [[1,0],[0,1]] and [[0,1],[0,2]]: row 0 slerps, row 1 is parallel (linear)');
});

t.test('multislerp: equals mergekit’s tangent-space step written out; hand cases and edges', async (t) => {
  for (const [name, b, ms, w, nw] of [
    ['3 models, no base', null, fts, [0.2, 0.5, 0.3], true],
    ['3 models, base', base, fts, [1, 2, 3], true],
    ['2 models, base, normalize_weights false', base, fts.slice(0, 2), [0.4, 0.9], false],
  ] as const) {
    close(t, await merged(b, [...ms], { method: 'multislerp', weights: [...w], normalizeWeights: nw }), multislerpLiteral(b, [...ms], [...w], nw), 1e-10, `multislerp ${name}`);
  }
  close(t, await merged(null, [[1, 0], [0, 1]], { method: 'multislerp', weights: [1, 1] }), [S, S], 1e-8, 'by hand: two orthogonal unit vectors → their midpoint on the sphere');
  close(t, await merged(null, [[2, 0], [0, 4]], { method: 'multislerp', weights: [1, 1] }), [3 * S, 3 * S], 1e-7, 'norms 2 and 4, equal weights: the direction of û sum, norm 3');
  close(t, await merged(null, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], { method: 'multislerp', weights: [1, 1, 1] }), [1, 1, 1].map((x) => x / Math.sqrt(3)), 1e-8, 'three axes → (1,1,1)/√3');
  t.same(await merged(null, [[1, -2]], { method: 'multislerp' }), [1, -2], 'one model gives itself');
  t.same(await merged(null, [[1, 0], [-1, 0]], { method: 'multislerp', weights: [1, 1] }), [0, 0], 'two cancelling directions: linear, ½·[1,0] + ½·[−1,0]');
  await t.rejects(merged(null, [[1, 0], [-0.5, Math.sqrt(3) / 2], [-0.5, -Math.sqrt(3) / 2]], { method: 'multislerp', weights: [1, 1, 1] }), {
    name: 'ArgumentError', message: /multislerp: tensor 'w': the weighted directions of the models cancel/,
  }, 'three cancelling directions: an error naming the tensor');
});

t.test('karcher: the float64 reference; at convergence the log maps sum to 0; hand cases', async (t) => {
  const ms = fts.map((f) => f.slice(0, 60));
  close(t, await merged(null, ms, { method: 'karcher' }), karcherRef(ms), 1e-12, 'karcher, 3 models, defaults (10 iterations, tol 1e-5)');
  const conv = await merged(null, ms, { method: 'karcher', maxIter: 200, tol: 1e-12 });
  const ls = norm(logSum(conv, ms));
  t.ok(ls < 1e-9, `converged: ‖Σ log_u(u_k)‖ = ${ls.toExponential(2)} < 1e-9 (the defining property of the Karcher mean)`);
  const nbar = ms.reduce((s, m) => s + norm(m), 0) / 3;
  t.ok(Math.abs(norm(conv) - nbar) < 1e-10, 'its norm is the mean of the inputs’ norms');
  close(t, await merged(null, [[3, 0], [0, 1]], { method: 'karcher', maxIter: 50, tol: 1e-12 }), [2 * S, 2 * S], 1e-12, 'by hand: two orthogonal vectors → the geodesic midpoint at their mean norm 2');
  const th = 1.0;
  const three = [[1, 0], [Math.cos(th), Math.sin(th)], [Math.cos(2 * th), Math.sin(2 * th)]];
  close(t, await merged(null, three, { method: 'karcher', maxIter: 50, tol: 1e-12 }), [Math.cos(th), Math.sin(th)], 1e-12,
    'three points at angles 0, 1, 2 rad on the circle → the one at 1 rad (the arithmetic mean of the angles; the chordal mean is the same here)');
  const skew = [[1, 0], [1, 0], [Math.cos(1.5), Math.sin(1.5)]];
  close(t, await merged(null, skew, { method: 'karcher', maxIter: 100, tol: 1e-13 }), [Math.cos(0.5), Math.sin(0.5)], 1e-10,
    'angles 0, 0, 1.5 → 0.5 rad on the circle (the normalized Euclidean mean would be at 0.61)');
  t.same(await merged(null, [[0, 0], [0, 0]], { method: 'karcher' }), [0, 0], 'all inputs zero → 0');
});

t.test('sce: float64 reference with and without select_topk; hand cases', async (t) => {
  close(t, await merged(base, sparse, { method: 'sce' }), sceRef(base, sparse), 1e-12, 'sce, select_topk 1');
  close(t, await merged(base, sparse, { method: 'sce', selectTopk: 0.3 }), sceRef(base, sparse, 0.3), 1e-12, 'sce, select_topk 0.3');
  // Hand cases: τ1 = [2, 0, −1] has energy mean(τ²) = 5/3; the election takes + where Σ τ ≥ 0.
  const w1 = 5 / 34, w2 = 29 / 34;
  close(t, await merged([0, 0, 0], [[2, 0, -1], [2, 4, 1]], { method: 'sce' }), [2, 4, 1], 1e-15,
    'by hand: entry 0 both agree (2), entry 1 only τ2 (4), entry 2 Σ = 0 → + wins, τ2 alone (1)');
  close(t, await merged([0, 0, 0], [[2, 0, -1], [2, 4, -3]], { method: 'sce' }), [2, 4, (w1 * -1 + w2 * -3) / (w1 + w2)], 1e-15,
    'by hand, w from energies (5/3 vs 29/3): entry 2 both negative → their weighted mean');
  t.same(await merged([0, 0], [[1e-4, 0], [0, 1e-4]], { method: 'sce' }), [1e-4, 1e-4], 'energies below 1e-6 in sum: uniform weights');
});

t.test('ram and ramplus_tl: float64 reference; hand cases', async (t) => {
  close(t, await merged(base, sparse, { method: 'ram' }), ramRef(base, sparse, false), 1e-12, 'ram');
  close(t, await merged(base, sparse, { method: 'ramplus_tl' }), ramRef(base, sparse, true), 1e-12, 'ramplus_tl, defaults r 0.1 alpha 0.2');
  close(t, await merged(base, sparse, { method: 'ramplus_tl', r: 0.5, alpha: 1, epsilon: 0.1 }), ramRef(base, sparse, true, 0.1, 0.5, 1), 1e-12, 'ramplus_tl, r 0.5 alpha 1 epsilon 0.1');
  t.same(await merged([0, 0, 0, 0], [[2, 4, 0, 0], [0, 2, 6, 0]], { method: 'ram' }), [2, 3, 6, 0], 'by hand: unique changes taken, shared averaged, unchanged kept');
  // ramplus_tl by hand: model 1 shares 1 entry, unique 1 → ρ 1 → λ = 1 + 0.1·min(1, 0.2) = 1.02; model 2 the same.
  close(t, await merged([0, 0, 0, 0], [[2, 4, 0, 0], [0, 2, 6, 0]], { method: 'ramplus_tl' }), [2.04, 3, 6.12, 0], 1e-15, 'ramplus_tl by hand: unique entries × 1.02');
  t.same(await merged([0, 0], [[1e-6, 1], [0, 0]], { method: 'ram' }), [0, 1], '|τ| ≤ epsilon counts as unchanged');
});

t.test('float32 compute and the state-dict path agree with the float64 references', async (t) => {
  const sd = (v: V) => new Map([['w', Tensor.from(Float32Array.from(v), [12, 20])]]);
  const [b, a, c, e] = [base, ...fts].map((v) => v.slice(0, 240));
  for (const [name, o, inBase, ms, want] of [
    ['karcher', { method: 'karcher' }, null, [a!, c!, e!], karcherRef([a!, c!, e!])],
    ['multislerp', { method: 'multislerp', weights: [1, 2] }, b, [a!, c!], multislerpLiteral(b!, [a!, c!], [1, 2])],
    ['nuslerp rows', { method: 'nuslerp', weights: [1, 2], flatten: false }, null, [a!, c!], nuslerpRef(null, a!, c!, 1, 2, [12, 20], 'rows')],
    ['sce', { method: 'sce', selectTopk: 0.5 }, b, [a!, c!, e!], sceRef(b!, [a!, c!, e!], 0.5)],
    ['linear', { method: 'linear', weights: [1, 3] }, null, [a!, c!], a!.map((v, i) => (v + 3 * c![i]!) / 4)],
  ] as const) {
    const r = await mergeStateDicts(inBase ? sd(inBase) : null, ms.map(sd), o as MergeOptions);
    t.equal(r.get('w')!.dtype, 'float32', `${name}: float32 out`);
    close(t, [...toF64(r.get('w')!)], [...want], 3e-5, `${name}: float32 compute`);
  }
});

t.test('what the new methods refuse, by name', async (t) => {
  const cfg = (method: string, models: Array<{ model: string; weight?: number; parameters?: Record<string, number> }>, parameters: Record<string, unknown> = {}, withBase = true) => () =>
    parseMergeConfig({ ...(withBase ? { base_model: 'b.safetensors' } : {}), models, method, parameters, output: 'o.safetensors' });
  const one = [{ model: 'a.safetensors' }];
  const two = [{ model: 'a.safetensors' }, { model: 'c.safetensors' }];
  t.throws(cfg('sce', [{ model: 'a.safetensors', weight: 2 }]), { message: "merge config is invalid: models: sce takes no weights (sce computes each model's weight from its task vector)" });
  t.throws(cfg('karcher', two, {}, true), ArgumentError, 'karcher takes no base');
  t.throws(cfg('passthrough', two, {}, false), { message: /passthrough takes exactly 1 model/ });
  t.throws(cfg('nuslerp', [...two, { model: 'd.safetensors' }], {}, false), { message: /nuslerp takes exactly 2 models/ });
  t.throws(cfg('della', two, { density: 0.5, t: 0.3 }), { message: 'merge config is invalid: parameters.t: t does not apply to della' });
  t.throws(cfg('della', [{ model: 'a.safetensors', parameters: { density: 1.5 } }]), { message: /density must be in \(0, 1\], got 1.5/ });
  t.throws(cfg('ties', [{ model: 'a.safetensors', weight: -1 }]), { message: /weight/ }, 'TIES-family weights must be >= 0');
  t.throws(cfg('linear', [{ model: 'a.safetensors', weight: 1 }, { model: 'c.safetensors', weight: -1 }], {}, false), { message: /sum/ }, 'linear weights summing to 0');
  t.throws(cfg('sce', two, { select_topk: 0 }), { message: /select_topk must be in \(0, 1\], got 0/ });
  t.throws(cfg('karcher', two, { max_iter: 2.5 }, false), { message: /max_iter must be a whole number/ });
  t.throws(cfg('ram', one, { density: 0.5 }), { message: 'merge config is invalid: parameters.density: density does not apply to ram' });
  t.ok(cfg('karcher', two, { max_iter: 20 }, false)(), 'a valid karcher config (no base)');
  await t.rejects(merged(base, [fts[0]!], { method: 'linear' }), ArgumentError, 'linear through the API with a base');
  await t.rejects(merged(null, [fts[0]!], { method: 'sce' }), ArgumentError, 'sce through the API without a base');
  await t.rejects(merged(null, [fts[0]!, fts[1]!], { method: 'karcher', weights: [1, 2] }), ArgumentError, 'karcher with weights');
});

t.test('every method: the file-to-file merge (mapped bf16 inputs, chunked passes) equals the in-memory merge bit for bit', async (t) => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { loadStateDict, mergeCheckpoints, saveStateDict } = await import('../lib');
  const { METHODS } = await import('../lib/merge-methods');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'merge-every-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // Several chunks of 65536 entries, a ragged tail, rows for DELLA; values quantized so |τ| ties.
  const sd = async (seed: number) => {
    const q = (n: number, s: number, sd: number) => Float32Array.from(randn(n, s), (v, i) => Math.round((base2[i % base2.length]! + sd * v) * 16) / 16);
    const base2 = [...randn(4096, 1)];
    return new Map([
      ['w', await Tensor.from(q(300 * 701, seed, seed === 0 ? 0 : 0.2), [300, 701]).to('bfloat16')],
      ['b', await Tensor.from(q(70001, seed + 50, seed === 0 ? 0 : 0.2), [70001]).to('bfloat16')],
    ]);
  };
  const sds = await Promise.all([0, 1, 2, 3].map(sd));
  for (const [k, s] of sds.entries()) await saveStateDict(path.join(dir, `e${k}.safetensors`), s);
  const params: Record<string, Record<string, unknown>> = {
    ties: { density: 0.4 }, dare_linear: { density: 0.5, seed: 3 }, dare_ties: { density: 0.5 }, breadcrumbs: { density: 0.5, gamma: 0.1 },
    breadcrumbs_ties: { density: 0.5, gamma: 0.1 }, della: { density: 0.5, epsilon: 0.2 }, della_linear: { density: 0.5, epsilon: 0.2 },
    slerp: { t: 0.3 }, nearswap: { t: 0.05 }, sce: { select_topk: 0.5 }, ram: { epsilon: 0.05 }, ramplus_tl: { epsilon: 0.05 },
    nuslerp: { nuslerp_flatten: false }, passthrough: { scale: 0.5 },
  };
  for (const [method, def] of Object.entries(METHODS)) {
    const n = def.models[1] === 0 ? 3 : def.models[1];
    const withBase = def.base !== 'none';
    const models = sds.slice(1, 1 + n);
    const weights = def.weights ? [1, 0.5, 0.25].slice(0, n) : undefined;
    const cfg = parseMergeConfig({
      ...(withBase ? { base_model: 'e0.safetensors' } : {}),
      models: models.map((_, i) => ({ model: `e${i + 1}.safetensors`, ...(weights ? { weight: weights[i] } : {}) })),
      method, parameters: params[method] ?? {}, output: `${method}.safetensors`,
    });
    await mergeCheckpoints(cfg, { configDir: dir });
    const got = (await loadStateDict(path.join(dir, `${method}.safetensors`))).tensors;
    const o = { method, ...(weights ? { weights } : {}) } as MergeOptions;
    for (const [k, v] of Object.entries(params[method] ?? {})) (o as Record<string, unknown>)[{ select_topk: 'selectTopk', nuslerp_flatten: 'flatten' }[k] ?? k] = v;
    const want = await mergeStateDicts(withBase ? sds[0]! : null, models, o);
    for (const name of ['w', 'b']) {
      const a = new Uint16Array((got.get(name)!.data() as Uint16Array).slice().buffer);
      const b = new Uint16Array((want.get(name)!.data() as Uint16Array).slice().buffer);
      let diff = 0;
      for (let i = 0; i < a.length; i++) diff += a[i] !== b[i] ? 1 : 0;
      t.equal(diff, 0, `${method}: ${name} ${got.get(name)!.shape.join('×')} file = memory (${diff} of ${a.length} differ)`);
    }
  }
});

/**
 * Seeded pseudo-random numbers: the mulberry32 generator (on a raw seed, or with the seed hashed
 * first) and standard normal samples by Box–Muller. Deterministic, not for cryptography.
 */

/** A function returning uniform floats in [0, 1). */
export type Rng = () => number;

/**
 * mulberry32 (Tommy Ettinger, public domain) started from `seed` as is (no seed hashing, so
 * nearby seeds give related streams; see {@link mulberry32} for decorrelated ones). Uniform floats
 * k / 2^32 in [0, 1); with `open`, (k + 0.5) / 2^32 in (0, 1), which is safe to take the log of.
 */
export function mulberry32Raw(seed: number, open = false): Rng {
  let a = seed >>> 0;
  const offset = open ? 0.5 : 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + offset) / 4294967296;
  };
}

/**
 * mulberry32 with the seed hashed by splitmix32 first, so that nearby seeds (0, 1, 2, ...) give
 * unrelated streams. Good enough for shuffling and data augmentation.
 */
export function mulberry32(seed: number): Rng {
  return mulberry32Raw(splitmix32(seed >>> 0));
}

/** splitmix32 finaliser: a bijective 32-bit hash (used to decorrelate seeds). */
export function splitmix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * `n` standard normal samples by Box–Muller, one sample per pair of uniforms from `rng`
 * (√(−2 ln u₁)·cos(2π u₂); u₁ = 0 is guarded against).
 */
export function normalsFrom(rng: Rng, n: number): Float64Array {
  const out = new Float64Array(n);
  // + 1e-300 only matters when u₁ is exactly 0: it is below half an ulp of any other value.
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(rng() + 1e-300)) * Math.cos(2 * Math.PI * rng());
  return out;
}

/** `n` standard normal samples (float64) from the open-interval raw mulberry32 stream of `seed`. */
export function seededNormal64(n: number, seed: number): Float64Array {
  return normalsFrom(mulberry32Raw(seed, true), n);
}

/** {@link seededNormal64} rounded to float32 (same stream and values, to float32 precision). */
export function seededNormal(n: number, seed: number): Float32Array {
  return Float32Array.from(seededNormal64(n, seed));
}

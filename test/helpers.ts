/** Small helpers shared by the tests: seeded random tensors and plain-array arithmetic. */
import { Tensor, type Model, type StateDict } from '../lib';
import { mulberry32Raw, normalsFrom, type Rng } from '../lib/util/random';

/** Uniform floats in [0, 1): mulberry32 on the raw seed. */
export const rng = (seed: number): Rng => mulberry32Raw(seed);

/** Standard normal samples (Box-Muller) from a seeded generator. */
export function randn(n: number, seed: number): Float64Array {
  return normalsFrom(rng(seed), n);
}

export function randTensor(shape: number[], seed: number, dtype: 'float32' | 'float64' = 'float64'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = randn(n, seed);
  return dtype === 'float64' ? Tensor.from(v, shape) : Tensor.from(Float32Array.from(v), shape);
}

/** A random tangent with the model's parameter shapes and dtype. */
export function randomTangent(model: Model, seed: number): StateDict {
  const out = new Map<string, Tensor>();
  let s = seed;
  for (const [name, spec] of model.spec) out.set(name, randTensor(spec.shape, s++, spec.dtype as 'float32' | 'float64'));
  return out;
}

/** a + c·b per parameter, computed in float64 in JS. */
export function axpy(a: StateDict, c: number, b: StateDict): StateDict {
  const out = new Map<string, Tensor>();
  for (const [name, t] of a) {
    const x = t.data() as Float64Array | Float32Array;
    const y = b.get(name)!.data() as Float64Array | Float32Array;
    const z = x instanceof Float64Array ? new Float64Array(x.length) : new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) z[i] = x[i]! + c * y[i]!;
    out.set(name, Tensor.from(z, t.shape));
  }
  return out;
}

export function toF64(t: Tensor): Float64Array {
  return Float64Array.from(t.data() as ArrayLike<number>);
}

/** ‖a − b‖ / ‖b‖. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-300);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export const FIXTURES = `${__dirname}/fixtures`;

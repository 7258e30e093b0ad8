/** Small helpers shared by the tests: seeded random tensors, plain-array arithmetic, temp dirs, PyTorch. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
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

// ---- isolation ----

/** A fresh temporary directory, removed when the test `t` ends. */
export function tmpDir(t: { teardown(fn: () => void): void }, prefix = 'tangent-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// Tests never write the dataset cache into the repository: scripts/test.sh sets TANGENT_CACHE to a
// temporary directory; a test file run on its own (npx tap test/x.test.ts) gets one of its own.
if (!process.env['TANGENT_CACHE']) {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-test-cache-'));
  process.env['TANGENT_CACHE'] = cache;
  process.on('exit', () => fs.rmSync(cache, { recursive: true, force: true }));
}

// ---- the PyTorch cross-checks ----

/**
 * The interpreter whose PyTorch the addon was built against: scripts/test.sh sets
 * TANGENT_TEST_PYTHON from build/torch.env (a PyTorch 2.x venv, or Debian's python3 with
 * python3-torch for the 1.13 build).
 */
export const PY = process.env['TANGENT_TEST_PYTHON'] ?? '/usr/bin/python3';
let torchState: boolean | undefined;
/** Whether that PyTorch can be imported. */
export function hasTorch(): boolean {
  torchState ??= fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
  return torchState;
}
/**
 * The `skip` option of a test that needs python3-torch: false (run) when it is there, else the
 * reason. Under CI=true it never skips: the test runs and fails, because CI has python3-torch.
 */
export function needsTorch(): false | string {
  if (hasTorch() || process.env['CI'] === 'true') return false;
  return `${PY} cannot import torch (apt-get install python3-torch)`;
}
/** Runs a Python script with Debian's interpreter; throws with its stderr when it fails. */
export function runPython(script: string, args: string[] = [], opts: { timeout?: number } = {}): string {
  if (!hasTorch()) throw new Error(`${PY} cannot import torch: this PyTorch cross-check cannot run (apt-get install python3-torch)`);
  const r = spawnSync(PY, ['-c', script, ...args], { encoding: 'utf8', timeout: opts.timeout ?? 120_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  if (r.status !== 0) throw new Error(`python failed (status ${r.status}, signal ${r.signal}):\n${r.stderr}`);
  return r.stdout;
}

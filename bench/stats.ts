/** Timing helpers for the benchmarks (all bench/* suites take their medians from here). */
import { chooseOpenblasCoreType } from '../lib/install/blas';
import { packageRoot, readLibtorchRecord } from '../lib/install/record';
import { combineStates, Tensor, type StateDict } from '../lib';
import { seededNormal } from '../lib/util/random';

/** The median of `xs` (the mean of the two middle values for an even count); `xs` is not modified. */
export function medianOf(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Warm-up, then the median of `reps` runs (milliseconds). */
export async function median(fn: () => Promise<unknown>, reps: number, warmup = 2): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const s = performance.now();
    await fn();
    t.push(performance.now() - s);
  }
  return medianOf(t);
}

/** Medians of several functions measured interleaved (round robin), so drift hits all alike. */
export async function mediansInterleaved(fns: Record<string, () => Promise<unknown>>, reps: number, warmup = 2): Promise<Record<string, number>> {
  const names = Object.keys(fns);
  for (let i = 0; i < warmup; i++) for (const n of names) await fns[n]!();
  const t: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let i = 0; i < reps; i++)
    for (const n of names) {
      const s = performance.now();
      await fns[n]!();
      t[n]!.push(performance.now() - s);
    }
  return Object.fromEntries(names.map((n) => [n, medianOf(t[n]!)]));
}

export const fmt = (ms: number): string => `${ms.toFixed(1)} ms`;

/** θ0 + τ with a small seeded random τ (1e-2 × N(0,1) per entry): the "fine-tuned" point the benches evaluate. */
export async function perturbed(theta0: StateDict): Promise<{ tangent: StateDict; theta: StateDict }> {
  const tangent: StateDict = new Map();
  let s = 2;
  for (const [n, p] of theta0) tangent.set(n, Tensor.from(seededNormal(p.numel, s++).map((v) => v * 1e-2), p.shape));
  return { tangent, theta: await combineStates(theta0, [tangent], [1]) };
}

/**
 * The environment of the labelled "default settings" PyTorch peer: PyTorch as a user runs it,
 * without OMP_WAIT_POLICY, and without OPENBLAS_CORETYPE where tangent-edit (not the user) set it.
 */
export function defaultPeerEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.OMP_WAIT_POLICY;
  if (chooseOpenblasCoreType().source === 'tangent-edit') delete env.OPENBLAS_CORETYPE;
  return env;
}

/** How defaultPeerEnv() differs from the fair peer's, for labels. */
export function defaultPeerLabel(): string {
  const env = defaultPeerEnv();
  return `default settings (OMP_WAIT_POLICY unset${process.env.OPENBLAS_CORETYPE && !env.OPENBLAS_CORETYPE ? ', OPENBLAS_CORETYPE unset: OpenBLAS picks its own kernels' : ''})`;
}

/**
 * The Python of the PyTorch peer: the PyTorch the addon was built against (its record's python,
 * written by scripts/setup.sh's build), so both sides run the same libtorch; else Debian's.
 */
export function peerPython(): string {
  const rec = readLibtorchRecord(packageRoot(__dirname));
  return process.env['TANGENT_BENCH_PYTHON'] || rec?.python || '/usr/bin/python3';
}

/**
 * The empirical neural tangent kernel at θ0 and the localization of its eigenfunctions over tasks
 * (the paper's "NTK eigenfunction localization" analysis).
 *
 *   k(x, x') = Σ_c ∇θ f_c(x; θ0) · ∇θ f_c(x'; θ0)      ('trace', summed over outputs)
 *   k(x, x') = ∇θ f_c(x; θ0) · ∇θ f_c(x'; θ0)          (one output c)
 *
 * The Gram matrix is built natively (native/src/ntk.cpp) from per-sample Jacobian rows — a
 * batch-1 forward per sample and one backward pass per output — flattened over all parameters and
 * contracted with one matmul per chunk pair, within a memory budget: when all N·C rows don't fit,
 * outputs are processed in groups, and when even N rows of one output don't fit, in row panels.
 * The eigendecomposition is libtorch's `linalg_eigh` in float64. For an eigenvector u (unit norm
 * over the N pooled inputs), its local energy on task t is Σ_{i ∈ t} u_i²; the energies over
 * tasks sum to 1.
 */
import { native } from '../binding';
import { ArgumentError, DTypeError, ShapeError } from '../errors';
import type { Model, Params } from '../model';
import { shapeStr, Tensor } from '../tensor';
import { writeFileAtomic } from '../util/fs';

export interface NtkOptions {
  /** θ0 at which the kernel is taken (default: the model's own parameters). */
  params?: Params;
  /** 'trace' (default): summed over the model's outputs; a number: that output (logit) only. */
  output?: 'trace' | number;
  /** dtype of the stored Jacobian rows (default: the model's dtype). The Gram is float64. */
  dtype?: 'float32' | 'float64';
  /** Bound on the Jacobian rows held at once plus the N×N Gram (default 2 GiB). */
  maxMemoryBytes?: number;
  /**
   * Threads computing per-sample Jacobian rows, each with one intra-op thread (default 1; on a
   * 2-core OpenMP/OpenBLAS libtorch, 2 workers measured 3–7× slower than 1).
   */
  workers?: number;
}

export interface NtkGram {
  /** [N, N] float64, symmetric. */
  gram: Tensor;
  n: number;
  /** Outputs per sample (C). */
  outputs: number;
  /** Trainable scalars (P): the length of a Jacobian row. */
  params: number;
  /** full: all rows held at once; grouped: outputs in groups; panels: row panels per output. */
  strategy: 'full' | 'grouped' | 'panels';
  forwardPasses: number;
  backwardPasses: number;
  passes: number;
  workers: number;
  capacityRows: number;
  peakJacobianBytes: number;
  ms: number;
}

export const DEFAULT_NTK_MEMORY = 2 * 2 ** 30;

/** The empirical NTK Gram matrix on the N inputs of `x` ([N, ...]). */
export async function empiricalNtk(model: Model, x: Tensor, opts: NtkOptions = {}): Promise<NtkGram> {
  if (!(x instanceof Tensor)) throw new ArgumentError('ntk: input must be a Tensor');
  if (x.shape.length < 1 || x.shape[0]! < 1) throw new ShapeError(`ntk: needs at least one input, got shape ${shapeStr(x.shape)}`);
  const output = opts.output ?? 'trace';
  if (output !== 'trace' && (!Number.isSafeInteger(output) || output < 0))
    throw new ArgumentError(`ntk: output must be 'trace' or a non-negative integer, got ${JSON.stringify(output)}`);
  const modelDtype = [...model.spec.values()][0]?.dtype ?? 'float32';
  const dtype = opts.dtype ?? (modelDtype === 'float64' ? 'float64' : 'float32');
  if (dtype !== 'float32' && dtype !== 'float64') throw new DTypeError(`ntk: dtype must be float32 or float64, got ${JSON.stringify(dtype)}`);
  const maxMemoryBytes = opts.maxMemoryBytes ?? DEFAULT_NTK_MEMORY;
  if (!Number.isSafeInteger(maxMemoryBytes) || maxMemoryBytes < 1)
    throw new ArgumentError(`ntk: maxMemoryBytes must be a positive integer, got ${JSON.stringify(maxMemoryBytes)}`);
  const workers = opts.workers ?? 1;
  if (!Number.isSafeInteger(workers) || workers < 1) throw new ArgumentError(`ntk: workers must be a positive integer, got ${JSON.stringify(workers)}`);
  const params = opts.params === undefined ? null : model.checkParams(opts.params, 'params');
  const t0 = performance.now();
  const r = await native().ntkGram(model.native, x.native, params, {
    output: output === 'trace' ? -1 : output,
    dtype,
    maxMemoryBytes,
    workers,
  });
  return {
    gram: Tensor.wrap(r.gram),
    n: x.shape[0]!,
    outputs: r.outputs,
    params: r.params,
    strategy: r.strategy,
    forwardPasses: r.forwardPasses,
    backwardPasses: r.backwardPasses,
    passes: r.passes,
    workers: r.workers,
    capacityRows: r.capacityRows,
    peakJacobianBytes: r.peakJacobianBytes,
    ms: performance.now() - t0,
  };
}

export interface Eigen {
  /** All eigenvalues, descending. */
  values: Float64Array;
  /** The top-k eigenvectors, row-major [n, k]: vectors[i * k + j] = u_j(x_i). */
  vectors: Float64Array;
  n: number;
  k: number;
}

/** Eigendecomposition of a symmetric matrix (libtorch linalg_eigh, float64), top-k vectors. */
export async function eighSymmetric(matrix: Tensor, topK = 0): Promise<Eigen> {
  if (!(matrix instanceof Tensor)) throw new ArgumentError('eigh: matrix must be a Tensor');
  const s = matrix.shape;
  if (s.length !== 2 || s[0] !== s[1]) throw new ShapeError(`eigh: expects a square matrix, got ${shapeStr(s)}`);
  if (!Number.isSafeInteger(topK) || topK < 0) throw new ArgumentError(`eigh: topK must be a non-negative integer, got ${topK}`);
  const r = await native().eighSymmetric(matrix.native, topK);
  const values = Tensor.wrap(r.values);
  const vectors = Tensor.wrap(r.vectors);
  const out: Eigen = {
    values: Float64Array.from(values.data() as Float64Array),
    vectors: Float64Array.from(vectors.data() as Float64Array),
    n: s[0]!,
    k: vectors.shape[1]!,
  };
  values.dispose();
  vectors.dispose();
  return out;
}

/**
 * energies[j][t] = Σ_{i : task(i) = t} u_j(x_i)² / Σ_i u_j(x_i)² for each of the k eigenvectors
 * (normalised so that each row sums to 1 even when rounding leaves ‖u‖ a hair off 1).
 */
export function localEnergies(eig: Pick<Eigen, 'vectors' | 'n' | 'k'>, taskOf: ArrayLike<number>, numTasks: number): number[][] {
  if (taskOf.length !== eig.n) throw new ShapeError(`localEnergies: ${taskOf.length} task labels for ${eig.n} inputs`);
  const out: number[][] = [];
  for (let j = 0; j < eig.k; j++) {
    const e = new Array<number>(numTasks).fill(0);
    let total = 0;
    for (let i = 0; i < eig.n; i++) {
      const u = eig.vectors[i * eig.k + j]!;
      const t = taskOf[i]!;
      if (!(t >= 0 && t < numTasks)) throw new ArgumentError(`localEnergies: task index ${t} out of range [0, ${numTasks})`);
      e[t] += u * u;
      total += u * u;
    }
    out.push(e.map((v) => (total > 0 ? v / total : 0)));
  }
  return out;
}

export interface NtkTaskInput {
  name: string;
  /** [n_t, ...] inputs of this task (same per-sample shape and dtype for every task). */
  x: Tensor;
}

export interface NtkLocalizationOptions extends NtkOptions {
  /** Eigenfunctions to report (default 20). */
  topK?: number;
  /** Keep the Gram matrix in the result (default false: disposed). */
  keepGram?: boolean;
}

export interface NtkLocalization {
  tasks: string[];
  counts: number[];
  n: number;
  output: 'trace' | number;
  /** All eigenvalues of the Gram matrix, descending. */
  eigenvalues: number[];
  topK: number;
  /** energies[j][t]: local energy of eigenfunction j (by decreasing eigenvalue) on task t. */
  energies: number[][];
  /** Per eigenfunction: the task holding most of its energy, and that share. */
  dominant: Array<{ task: string; energy: number }>;
  /** Mean over the top-k of the largest per-task energy (1: perfectly localized; 1/T: spread). */
  meanMaxEnergy: number;
  gram?: Tensor;
  stats: Omit<NtkGram, 'gram' | 'ms'>;
  timing: { gramMs: number; eighMs: number; totalMs: number };
}

function concatInputs(tasks: readonly NtkTaskInput[]): Tensor {
  const first = tasks[0]!.x;
  const per = first.shape.slice(1);
  const dtype = first.dtype;
  if (dtype !== 'float32' && dtype !== 'float64') throw new DTypeError(`ntk: inputs must be float32 or float64, got ${dtype}`);
  let total = 0;
  for (const t of tasks) {
    if (!(t.x instanceof Tensor)) throw new ArgumentError(`ntk: task '${t.name}' input must be a Tensor`);
    const s = t.x.shape.slice(1);
    if (t.x.dtype !== dtype) throw new DTypeError(`ntk: task '${t.name}' inputs are ${t.x.dtype}, task '${tasks[0]!.name}' inputs are ${dtype}`);
    if (s.length !== per.length || s.some((v, i) => v !== per[i]))
      throw new ShapeError(`ntk: task '${t.name}' inputs have per-sample shape ${shapeStr(s)}, expected ${shapeStr(per)}`);
    total += t.x.shape[0]!;
  }
  const buf = dtype === 'float64' ? new Float64Array(total * (first.numel / first.shape[0]!)) : new Float32Array(total * (first.numel / first.shape[0]!));
  let off = 0;
  for (const t of tasks) {
    const d = t.x.data() as Float32Array | Float64Array;
    buf.set(d, off);
    off += d.length;
  }
  return Tensor.from(buf, [total, ...per]);
}

/**
 * The NTK at θ0 on inputs pooled from several tasks, its eigendecomposition, and the local energy
 * of each of the top-k eigenfunctions on each task.
 */
export async function ntkLocalization(model: Model, tasks: readonly NtkTaskInput[], opts: NtkLocalizationOptions = {}): Promise<NtkLocalization> {
  if (!Array.isArray(tasks) || tasks.length < 1) throw new ArgumentError('ntk: needs at least one task');
  const topK = opts.topK ?? 20;
  if (!Number.isSafeInteger(topK) || topK < 1) throw new ArgumentError(`ntk: topK must be a positive integer, got ${topK}`);
  const t0 = performance.now();
  const x = concatInputs(tasks);
  const counts = tasks.map((t) => t.x.shape[0]!);
  const taskOf = new Int32Array(x.shape[0]!);
  let i = 0;
  counts.forEach((c, t) => {
    taskOf.fill(t, i, i + c);
    i += c;
  });
  const g = await empiricalNtk(model, x, opts);
  x.dispose();
  const te = performance.now();
  const eig = await eighSymmetric(g.gram, Math.min(topK, g.n));
  const eighMs = performance.now() - te;
  const energies = localEnergies(eig, taskOf, tasks.length);
  const dominant = energies.map((e) => {
    const j = e.indexOf(Math.max(...e));
    return { task: tasks[j]!.name, energy: e[j]! };
  });
  const { gram, ms, ...stats } = g;
  const out: NtkLocalization = {
    tasks: tasks.map((t) => t.name),
    counts,
    n: g.n,
    output: opts.output ?? 'trace',
    eigenvalues: Array.from(eig.values),
    topK: eig.k,
    energies,
    dominant,
    meanMaxEnergy: dominant.reduce((s, d) => s + d.energy, 0) / Math.max(1, dominant.length),
    stats,
    timing: { gramMs: ms, eighMs, totalMs: performance.now() - t0 },
  };
  if (opts.keepGram) out.gram = gram;
  else gram.dispose();
  return out;
}

// Re-exported: part of the analysis API (writeNtkJson, writeDisentanglementJson and the figures use it).
export { writeFileAtomic };

/** The analysis as JSON (without the Gram matrix), written atomically. */
export function writeNtkJson(result: NtkLocalization, file: string): void {
  const { gram: _gram, ...rest } = result;
  writeFileAtomic(file, JSON.stringify(rest, null, 2));
}

/**
 * Weight disentanglement error of two task vectors (the paper's ξ heatmaps):
 *
 *   ξ(α1, α2) = Σ_{t=1,2} E_{x∈D_t}[ 1{ argmax f(x; θ0 + α_t τ_t) ≠ argmax f(x; θ0 + α1 τ1 + α2 τ2) } ]
 *
 * over a grid of (α1, α2) (default 25×25 on [−3, 3]²), for the ordinary model f ('nonlinear') or
 * the linearized model f_lin ('linear'), predictions optionally through a frozen head per task.
 *
 * - nonlinear: one fused `combineStates` and one forward over both tasks' inputs per grid point;
 *   the single-task predictions need only one forward per α value and task (25, not 625).
 * - linear, method 'affine' (default): f_lin(θ0 + α1τ1 + α2τ2) = f0 + α1·Jτ1 + α2·Jτ2, so two JVPs
 *   per input serve the whole grid; the grid is then arithmetic on [N, C] arrays in float64 (with
 *   a head: W·f0, W·Jτ1, W·Jτ2 and the six inner products that give ‖f‖ at every grid point).
 * - linear, method 'forward': f_lin evaluated at every grid point (`LinearizedModel.forward`);
 *   the brute force the affine shortcut is checked and timed against.
 *
 * Inputs are run in chunks that never mix the two tasks, so a task's single-task and grid
 * predictions come from identically shaped calls (ξ(0, 0) is exactly 0).
 */
import { ArgumentError, ShapeError } from '../errors';
import type { Head, Model, Params, StateDict } from '../model';
import { combineStates } from '../ops';
import { shapeStr, Tensor } from '../tensor';
import { writeFileAtomic } from '../util/fs';

export type DisentanglementMode = 'nonlinear' | 'linear';

export interface DisentanglementOptions {
  /** 'nonlinear': task vectors in f; 'linear': in f_lin at θ0. */
  mode: DisentanglementMode;
  tau1: Params;
  tau2: Params;
  /** Inputs of task 1 and task 2 ([n_t, ...]). */
  x1: Tensor;
  x2: Tensor;
  /** A frozen head for both tasks, or one per task ([head1, head2]); none: the model's outputs. */
  head?: Head | readonly [Head | undefined, Head | undefined];
  /** θ0 (default: the model's own parameters). */
  params0?: Params;
  /** Grid values for α1 and α2 (default 25 points on [−3, 3]). */
  alphas?: readonly number[];
  /** Largest chunk of inputs per model call (default 512). */
  batchSize?: number;
  /** Linear mode only: 'affine' (default, two JVPs per input) or 'forward' (f_lin at every point). */
  linearMethod?: 'affine' | 'forward';
  /** Called after each unit of work: (done, total) model evaluations of the grid (for progress bars). */
  onProgress?: (done: number, total: number) => void;
}

export interface DisentanglementResult {
  mode: DisentanglementMode;
  method: 'forward' | 'affine';
  alphas: number[];
  /** grid[i][j] = ξ(alphas[i], alphas[j]): row i is α1, column j is α2. In [0, 2]. */
  grid: number[][];
  /** The two terms of ξ: parts[t][i][j] = disagreement rate on task t's inputs. */
  parts: [number[][], number[][]];
  counts: [number, number];
  /** Fraction of grid points with ξ ≤ 0.1 (a size of the "low-error region"). */
  lowErrorFraction: number;
  timing: {
    totalMs: number;
    /** Model calls: forwards (nonlinear, forward) or JVPs (affine). */
    modelMs: number;
    /** Parameter combinations (combineStates). */
    combineMs: number;
    /** Predictions and comparisons in TS. */
    gridMs: number;
    modelCalls: number;
  };
}

/** n evenly spaced values on [lo, hi]. */
export function linspace(lo: number, hi: number, n: number): number[] {
  if (!Number.isSafeInteger(n) || n < 1) throw new ArgumentError(`linspace: n must be a positive integer, got ${n}`);
  if (n === 1) return [lo];
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? hi : lo + ((hi - lo) * i) / (n - 1)));
}

interface HeadArrays {
  w: Float64Array; // [C, D]
  b: Float64Array | null;
  c: number;
  d: number;
  normalize: boolean;
}

function headArrays(h: Head | undefined, what: string): HeadArrays | null {
  if (h === undefined) return null;
  if (!(h.weight instanceof Tensor)) throw new ArgumentError(`${what}.weight must be a Tensor`);
  if (h.weight.shape.length !== 2) throw new ShapeError(`${what}.weight must be [classes, features], got ${shapeStr(h.weight.shape)}`);
  const [c, d] = h.weight.shape as [number, number];
  if (h.bias !== undefined && (h.bias.shape.length !== 1 || h.bias.shape[0] !== c))
    throw new ShapeError(`${what}.bias must be [${c}], got ${shapeStr(h.bias.shape)}`);
  return {
    w: Float64Array.from(h.weight.data() as ArrayLike<number>),
    b: h.bias === undefined ? null : Float64Array.from(h.bias.data() as ArrayLike<number>),
    c,
    d,
    normalize: h.normalize ?? false,
  };
}

/** argmax per row of head(out) for out [n, d]. */
function predict(out: ArrayLike<number>, n: number, d: number, head: HeadArrays | null, into: Int32Array, offset: number): void {
  if (head !== null && head.d !== d) throw new ShapeError(`head expects ${head.d} features, the model outputs ${d}`);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    if (head === null) {
      let best = 0;
      let bv = out[o]!;
      for (let k = 1; k < d; k++) if (out[o + k]! > bv) ((bv = out[o + k]!), (best = k));
      into[offset + i] = best;
      continue;
    }
    let scale = 1;
    if (head.normalize) {
      let s = 0;
      for (let k = 0; k < d; k++) s += out[o + k]! * out[o + k]!;
      scale = 1 / Math.max(Math.sqrt(s), 1e-12);
    }
    let best = 0;
    let bv = -Infinity;
    for (let c = 0; c < head.c; c++) {
      let z = 0;
      const wo = c * d;
      for (let k = 0; k < d; k++) z += head.w[wo + k]! * out[o + k]!;
      z = z * scale + (head.b === null ? 0 : head.b[c]!);
      if (z > bv) ((bv = z), (best = c));
    }
    into[offset + i] = best;
  }
}

interface Chunk {
  task: 0 | 1;
  x: Tensor;
  /** Offset of the chunk in its task. */
  offset: number;
  n: number;
}

function chunksOf(x: Tensor, task: 0 | 1, batch: number): Chunk[] {
  const n = x.shape[0]!;
  if (n <= batch) return [{ task, x, offset: 0, n }];
  const per = x.numel / n;
  const data = x.data() as Float32Array | Float64Array;
  const out: Chunk[] = [];
  for (let s = 0; s < n; s += batch) {
    const m = Math.min(batch, n - s);
    out.push({ task, x: Tensor.from(data.slice(s * per, (s + m) * per), [m, ...x.shape.slice(1)]), offset: s, n: m });
  }
  return out;
}

function checkInputs(o: DisentanglementOptions): void {
  if (o.mode !== 'nonlinear' && o.mode !== 'linear')
    throw new ArgumentError(`disentanglement: mode must be 'nonlinear' or 'linear', got ${JSON.stringify(o.mode)}`);
  for (const [k, x] of [['x1', o.x1], ['x2', o.x2]] as const) {
    if (!(x instanceof Tensor)) throw new ArgumentError(`disentanglement: ${k} must be a Tensor`);
    if (x.shape.length < 1 || x.shape[0]! < 1) throw new ShapeError(`disentanglement: ${k} needs at least one input, got ${shapeStr(x.shape)}`);
  }
  if (o.linearMethod !== undefined && o.linearMethod !== 'affine' && o.linearMethod !== 'forward')
    throw new ArgumentError(`disentanglement: linearMethod must be 'affine' or 'forward', got ${JSON.stringify(o.linearMethod)}`);
}

/** ξ(α1, α2) over the grid, with its two per-task terms. */
export async function weightDisentanglement(model: Model, opts: DisentanglementOptions): Promise<DisentanglementResult> {
  checkInputs(opts);
  const t0 = performance.now();
  const alphas = [...(opts.alphas ?? linspace(-3, 3, 25))];
  if (alphas.length < 1 || alphas.some((a) => typeof a !== 'number' || !Number.isFinite(a)))
    throw new ArgumentError('disentanglement: alphas must be a non-empty array of finite numbers');
  const batch = opts.batchSize ?? 512;
  if (!Number.isSafeInteger(batch) || batch < 1) throw new ArgumentError(`disentanglement: batchSize must be a positive integer, got ${batch}`);
  const theta0 = opts.params0 ?? model.parameters();
  // Validate the task vectors up front (names, shapes, dtypes), naming which one is wrong.
  model.checkParams(opts.tau1, 'tau1');
  model.checkParams(opts.tau2, 'tau2');
  if (opts.params0 !== undefined) model.checkParams(opts.params0, 'params0');
  const heads: [HeadArrays | null, HeadArrays | null] = Array.isArray(opts.head)
    ? [headArrays(opts.head[0], 'head[0]'), headArrays(opts.head[1], 'head[1]')]
    : [headArrays(opts.head as Head | undefined, 'head'), headArrays(opts.head as Head | undefined, 'head')];
  const counts: [number, number] = [opts.x1.shape[0]!, opts.x2.shape[0]!];
  const method = opts.mode === 'linear' ? (opts.linearMethod ?? 'affine') : 'forward';
  const A = alphas.length;
  const timing = { totalMs: 0, modelMs: 0, combineMs: 0, gridMs: 0, modelCalls: 0 };
  // single[t][a] = predictions on task t's inputs with θ0 + alphas[a] τ_t.
  const single: [Int32Array[], Int32Array[]] = [[], []];
  const parts: [number[][], number[][]] = [
    Array.from({ length: A }, () => new Array<number>(A).fill(0)),
    Array.from({ length: A }, () => new Array<number>(A).fill(0)),
  ];

  if (method === 'affine') {
    await affineGrid(model, opts, theta0, alphas, heads, counts, batch, single, parts, timing);
  } else {
    const chunks = [...chunksOf(opts.x1, 0, batch), ...chunksOf(opts.x2, 1, batch)];
    const lin = opts.mode === 'linear' ? model.linearize(opts.params0) : null;
    const run = async (x: Tensor, theta: StateDict): Promise<Tensor> => {
      const t = performance.now();
      const out = lin === null ? await model.forward(x, theta) : await lin.forward(x, theta);
      timing.modelMs += performance.now() - t;
      timing.modelCalls++;
      return out;
    };
    const combined = async (coeffs: number[], states: Params[]): Promise<StateDict> => {
      const t = performance.now();
      const s = await combineStates(theta0, states, coeffs);
      timing.combineMs += performance.now() - t;
      return s;
    };
    const disposeState = (s: StateDict): void => s.forEach((t) => t.dispose());
    const taus = [opts.tau1, opts.tau2] as const;
    const total = 2 * A + A * A;
    let done = 0;
    for (const task of [0, 1] as const) {
      for (let a = 0; a < A; a++) {
        opts.onProgress?.(done++, total);
        const theta = await combined([alphas[a]!], [taus[task]]);
        const preds = new Int32Array(counts[task]);
        for (const c of chunks) {
          if (c.task !== task) continue;
          const out = await run(c.x, theta);
          const tg = performance.now();
          predict(out.data() as Float32Array, c.n, out.numel / c.n, heads[task], preds, c.offset);
          timing.gridMs += performance.now() - tg;
          out.dispose();
        }
        single[task].push(preds);
        disposeState(theta);
      }
    }
    const preds: [Int32Array, Int32Array] = [new Int32Array(counts[0]), new Int32Array(counts[1])];
    // The next grid point's parameters are combined while the current one runs.
    let next = combined([alphas[0]!, alphas[0]!], [opts.tau1, opts.tau2]);
    for (let i = 0; i < A; i++) {
      for (let j = 0; j < A; j++) {
        const theta = await next;
        const k = i * A + j + 1;
        if (k < A * A) next = combined([alphas[Math.floor(k / A)]!, alphas[k % A]!], [opts.tau1, opts.tau2]);
        for (const c of chunks) {
          const out = await run(c.x, theta);
          const tg = performance.now();
          predict(out.data() as Float32Array, c.n, out.numel / c.n, heads[c.task], preds[c.task], c.offset);
          timing.gridMs += performance.now() - tg;
          out.dispose();
        }
        disposeState(theta);
        opts.onProgress?.(++done, total);
        const tg = performance.now();
        parts[0][i]![j] = disagreement(single[0][i]!, preds[0]);
        parts[1][i]![j] = disagreement(single[1][j]!, preds[1]);
        timing.gridMs += performance.now() - tg;
      }
    }
    for (const c of chunks) if (c.x !== opts.x1 && c.x !== opts.x2) c.x.dispose();
  }

  opts.onProgress?.(1, 1);
  const grid = parts[0].map((row, i) => row.map((v, j) => v + parts[1][i]![j]!));
  let low = 0;
  for (const row of grid) for (const v of row) if (v <= 0.1) low++;
  timing.totalMs = performance.now() - t0;
  return { mode: opts.mode, method, alphas, grid, parts, counts, lowErrorFraction: low / (A * A), timing };
}

function disagreement(a: Int32Array, b: Int32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) d++;
  return d / a.length;
}

/** The linear grid from two JVPs per input: logits(α1, α2) = head(f0 + α1 Jτ1 + α2 Jτ2). */
async function affineGrid(
  model: Model,
  opts: DisentanglementOptions,
  theta0: Params,
  alphas: number[],
  heads: [HeadArrays | null, HeadArrays | null],
  counts: [number, number],
  batch: number,
  single: [Int32Array[], Int32Array[]],
  parts: [number[][], number[][]],
  timing: DisentanglementResult['timing'],
): Promise<void> {
  const A = alphas.length;
  const xs = [opts.x1, opts.x2] as const;
  for (const task of [0, 1] as const) {
    const n = counts[task];
    let d = 0;
    let f0: Float64Array | null = null;
    let j1: Float64Array | null = null;
    let j2: Float64Array | null = null;
    for (const c of chunksOf(xs[task], task, batch)) {
      const t = performance.now();
      const r1 = await model.jvp(c.x, opts.tau1, { params0: opts.params0 ?? theta0 });
      const r2 = await model.jvp(c.x, opts.tau2, { params0: opts.params0 ?? theta0 });
      timing.modelMs += performance.now() - t;
      timing.modelCalls += 2;
      d = r1.primal.numel / c.n;
      f0 ??= new Float64Array(n * d);
      j1 ??= new Float64Array(n * d);
      j2 ??= new Float64Array(n * d);
      f0.set(r1.primal.data() as Float32Array, c.offset * d);
      j1.set(r1.tangent.data() as Float32Array, c.offset * d);
      j2.set(r2.tangent.data() as Float32Array, c.offset * d);
      for (const x of [r1.primal, r1.tangent, r2.primal, r2.tangent]) x.dispose();
      if (c.x !== xs[task]) c.x.dispose();
    }
    const tg = performance.now();
    const head = heads[task];
    if (head !== null && head.d !== d) throw new ShapeError(`head expects ${head.d} features, the model outputs ${d}`);
    // Project to class space once: logits = (P0 + α1 P1 + α2 P2) · s + b, s = 1/‖f‖ or 1.
    const C = head === null ? d : head.c;
    const proj = (v: Float64Array): Float64Array => {
      if (head === null) return v;
      const out = new Float64Array(n * C);
      for (let i = 0; i < n; i++)
        for (let c = 0; c < C; c++) {
          let z = 0;
          for (let k = 0; k < d; k++) z += head.w[c * d + k]! * v[i * d + k]!;
          out[i * C + c] = z;
        }
      return out;
    };
    const P0 = proj(f0!);
    const P1 = proj(j1!);
    const P2 = proj(j2!);
    // ‖f0 + a J1 + b J2‖² = g00 + a² g11 + b² g22 + 2a g01 + 2b g02 + 2ab g12, per sample.
    const gram = new Float64Array(n * 6);
    if (head?.normalize) {
      for (let i = 0; i < n; i++) {
        let g00 = 0, g11 = 0, g22 = 0, g01 = 0, g02 = 0, g12 = 0;
        for (let k = 0; k < d; k++) {
          const a = f0![i * d + k]!, b = j1![i * d + k]!, c = j2![i * d + k]!;
          g00 += a * a; g11 += b * b; g22 += c * c; g01 += a * b; g02 += a * c; g12 += b * c;
        }
        gram.set([g00, g11, g22, g01, g02, g12], i * 6);
      }
    }
    const bias = head?.b ?? null;
    const normalize = head?.normalize ?? false;
    const predictAt = (a1: number, a2: number, into: Int32Array): void => {
      for (let i = 0; i < n; i++) {
        let s = 1;
        if (normalize) {
          const g = i * 6;
          const q = gram[g]! + a1 * a1 * gram[g + 1]! + a2 * a2 * gram[g + 2]! + 2 * a1 * gram[g + 3]! + 2 * a2 * gram[g + 4]! + 2 * a1 * a2 * gram[g + 5]!;
          s = 1 / Math.max(Math.sqrt(Math.max(q, 0)), 1e-12);
        }
        let best = 0;
        let bv = -Infinity;
        const o = i * C;
        for (let c = 0; c < C; c++) {
          const z = (P0[o + c]! + a1 * P1[o + c]! + a2 * P2[o + c]!) * s + (bias === null ? 0 : bias[c]!);
          if (z > bv) ((bv = z), (best = c));
        }
        into[i] = best;
      }
    };
    for (let a = 0; a < A; a++) {
      const p = new Int32Array(n);
      predictAt(task === 0 ? alphas[a]! : 0, task === 0 ? 0 : alphas[a]!, p);
      single[task].push(p);
    }
    const p = new Int32Array(n);
    for (let i = 0; i < A; i++)
      for (let j = 0; j < A; j++) {
        predictAt(alphas[i]!, alphas[j]!, p);
        parts[task][i]![j] = disagreement(single[task][task === 0 ? i : j]!, p);
      }
    timing.gridMs += performance.now() - tg;
  }
}

/** Results as JSON (one or several, e.g. nonlinear and linear), written atomically. */
export function writeDisentanglementJson(results: DisentanglementResult | readonly DisentanglementResult[], file: string, extra: Record<string, unknown> = {}): void {
  const list = Array.isArray(results) ? results : [results];
  writeFileAtomic(file, JSON.stringify({ ...extra, results: list }, null, 2));
}

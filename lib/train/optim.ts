/**
 * AdamW with decoupled weight decay and global-norm gradient clipping, stepped natively (one
 * fused AsyncWorker per step over all parameters: `native/src/optim.cpp`), and the cosine
 * learning-rate schedule with linear warm-up.
 */
import { native } from '../binding';
import { ArgumentError, ParameterError } from '../errors';
import type { Params, StateDict } from '../model';
import { Tensor } from '../tensor';

export interface AdamWOptions {
  /** Peak learning rate. */
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay: θ ← θ (1 − lr · wd) each step (towards 0, as torch.optim.AdamW). */
  weightDecay?: number;
  /** Clip the global gradient L2 norm to this value before the update (0: no clipping). */
  maxGradNorm?: number;
}

export interface AdamWStepInfo {
  /** Global L2 norm of the gradients, before clipping. */
  gradNorm: number;
  /** Factor the gradients were scaled by (1 when not clipped). */
  clipCoef: number;
}

function finite(v: unknown, name: string, lo: number, hi = Infinity, hiOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (hiOpen && v === hi))
    throw new ArgumentError(`${name} must be a finite number in [${lo}, ${hi}${hiOpen ? ')' : ']'}, got ${JSON.stringify(v)}`);
  return v;
}

function zerosLike(t: Tensor): Tensor {
  const n = t.numel;
  return Tensor.from(t.dtype === 'float64' ? new Float64Array(n) : new Float32Array(n), t.shape);
}

/**
 * AdamW over a named parameter set. The optimizer owns the parameter tensors it is given and
 * updates them IN PLACE (clone them first if the originals must stay: `AdamW.create` does).
 * Its state (step, first and second moments by parameter name) can be saved and restored
 * exactly, which makes training resumable bit for bit.
 */
export class AdamW {
  readonly names: readonly string[];
  private readonly p: Tensor[];
  private readonly m: Tensor[];
  private readonly v: Tensor[];
  /** Number of steps taken. */
  step = 0;
  readonly opts: Required<AdamWOptions>;

  private constructor(params: StateDict, m: StateDict | null, v: StateDict | null, step: number, opts: AdamWOptions) {
    this.opts = {
      lr: finite(opts.lr, 'lr', 0),
      beta1: finite(opts.beta1 ?? 0.9, 'beta1', 0, 1, true),
      beta2: finite(opts.beta2 ?? 0.999, 'beta2', 0, 1, true),
      eps: finite(opts.eps ?? 1e-8, 'eps', Number.MIN_VALUE),
      weightDecay: finite(opts.weightDecay ?? 0, 'weightDecay', 0),
      maxGradNorm: finite(opts.maxGradNorm ?? 0, 'maxGradNorm', 0),
    };
    this.names = [...params.keys()];
    this.p = this.names.map((n) => params.get(n)!);
    for (const [i, t] of this.p.entries())
      if (t.dtype !== 'float32' && t.dtype !== 'float64')
        throw new ArgumentError(`AdamW: parameter '${this.names[i]}' must be float32 or float64, got ${t.dtype}`);
    const pick = (s: StateDict | null, what: string): Tensor[] =>
      this.names.map((n, i) => {
        if (s === null) return zerosLike(this.p[i]!);
        const t = s.get(n);
        if (t === undefined) throw new ParameterError(`AdamW state: ${what} has no entry for parameter '${n}'`);
        return t;
      });
    this.m = pick(m, 'exp_avg');
    this.v = pick(v, 'exp_avg_sq');
    this.step = step;
  }

  /** A fresh optimizer over CLONES of `params` (the originals are never modified). */
  static create(params: Params, opts: AdamWOptions): AdamW {
    const own = new Map<string, Tensor>();
    for (const [n, t] of params instanceof Map ? params : Object.entries(params)) own.set(n, (t as Tensor).clone());
    return new AdamW(own, null, null, 0, opts);
  }

  /** An optimizer resumed from saved state (tensors are cloned). */
  static restore(state: { params: Params; expAvg: Params; expAvgSq: Params; step: number }, opts: AdamWOptions): AdamW {
    const clone = (p: Params): StateDict =>
      new Map([...(p instanceof Map ? p : Object.entries(p))].map(([n, t]) => [n as string, (t as Tensor).clone()]));
    if (!Number.isSafeInteger(state.step) || state.step < 0) throw new ArgumentError(`AdamW state: step must be an integer >= 0, got ${state.step}`);
    return new AdamW(clone(state.params), clone(state.expAvg), clone(state.expAvgSq), state.step, opts);
  }

  /** The current parameters (live tensors, updated in place by `update`). */
  get params(): StateDict {
    return new Map(this.names.map((n, i) => [n, this.p[i]!]));
  }
  get expAvg(): StateDict {
    return new Map(this.names.map((n, i) => [n, this.m[i]!]));
  }
  get expAvgSq(): StateDict {
    return new Map(this.names.map((n, i) => [n, this.v[i]!]));
  }

  /** One step with learning rate `lr` (the schedule's value for this step). */
  async update(grads: Params, lr: number): Promise<AdamWStepInfo> {
    finite(lr, 'lr', 0);
    const g = grads instanceof Map ? grads : new Map(Object.entries(grads));
    const gs = this.names.map((n) => {
      const t = g.get(n);
      if (t === undefined) throw new ParameterError(`AdamW: no gradient for parameter '${n}'`);
      return t.native;
    });
    const o = this.opts;
    const r = await native().adamwStep(
      this.p.map((t) => t.native),
      this.m.map((t) => t.native),
      this.v.map((t) => t.native),
      gs,
      { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm, step: this.step + 1 },
    );
    this.step++;
    return r;
  }

  dispose(): void {
    for (const t of [...this.p, ...this.m, ...this.v]) t.dispose();
  }
}

/** Global L2 norm over tensors (float64 accumulation), natively. */
export async function globalNorm(tensors: Params): Promise<number> {
  const list = tensors instanceof Map ? [...tensors.values()] : Object.values(tensors);
  return native().globalNorm(list.map((t) => t.native));
}

export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Total number of steps. */
  steps: number;
  /** Linear warm-up steps (from lr/warmup to lr). */
  warmupSteps: number;
  /** Final learning rate as a fraction of the peak (default 0). */
  minLrRatio?: number;
}

/**
 * Learning rate for 0-based step `step`: linear warm-up over `warmupSteps` steps
 * (lr · (step + 1) / warmupSteps), then cosine decay from lr to lr · minLrRatio at the last step.
 * The same shape as the paper's code (open_clip's cosine_lr).
 */
export function cosineLr(step: number, o: ScheduleOptions): number {
  const min = o.lr * (o.minLrRatio ?? 0);
  if (step < o.warmupSteps) return (o.lr * (step + 1)) / o.warmupSteps;
  const span = Math.max(1, o.steps - o.warmupSteps);
  const e = Math.min(1, (step - o.warmupSteps) / span);
  return min + 0.5 * (1 + Math.cos(Math.PI * e)) * (o.lr - min);
}

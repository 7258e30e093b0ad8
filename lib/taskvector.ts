/**
 * Task vectors: τ = θ_ft − θ0 per named tensor (integer tensors left out), with the algebra of
 * task arithmetic. Tensors are matched by name, never by position; every binary operation
 * checks that both sides hold the same names, shapes and dtypes.
 */
import { native } from './binding';
import { assertSameLayout } from './checkpoint/safetensors';
import { ArgumentError, ParameterError } from './errors';
import type { Params, StateDict } from './model';
import { combineStates, type CombineOptions } from './ops';
import { isFloatDType, type Tensor } from './tensor';

function toMap(p: Params): Map<string, Tensor> {
  return p instanceof Map ? (p as Map<string, Tensor>) : new Map(Object.entries(p as Record<string, Tensor>));
}

export class TaskVector implements Disposable {
  private constructor(readonly tensors: StateDict) {}

  /** τ = finetuned − pretrained over the float tensors both hold (layouts must match exactly). */
  static async from(pretrained: Params, finetuned: Params, opts: CombineOptions = {}): Promise<TaskVector> {
    const pre = toMap(pretrained);
    const ft = toMap(finetuned);
    assertSameLayout(pre, ft, { nameA: 'pretrained', nameB: 'finetuned' });
    const names = [...pre.keys()].filter((n) => isFloatDType(pre.get(n)!.dtype));
    const sub = (m: Map<string, Tensor>) => new Map(names.map((n) => [n, m.get(n)!]));
    return new TaskVector(await combineStates(sub(ft), [sub(pre)], [-1], { compute: opts.compute ?? 'float32', outDtype: opts.outDtype }));
  }

  /** Wrap tensors that already are a task vector (float tensors only). */
  static of(tensors: Params): TaskVector {
    const m = new Map(toMap(tensors));
    for (const [n, t] of m) if (!isFloatDType(t.dtype)) throw new ArgumentError(`task vector tensor '${n}' is ${t.dtype}; task vectors hold float tensors only`);
    return new TaskVector(m);
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  get numel(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += t.numel;
    return n;
  }

  /** Σ_k w_k τ_k in one fused pass per tensor. */
  static async sum(tvs: readonly TaskVector[], weights?: readonly number[]): Promise<TaskVector> {
    if (tvs.length === 0) throw new ArgumentError('TaskVector.sum needs at least one task vector');
    return new TaskVector(await combineStates(null, tvs.map((t) => t.tensors), weights ?? tvs.map(() => 1)));
  }

  add(other: TaskVector): Promise<TaskVector> {
    return TaskVector.sum([this, other], [1, 1]);
  }
  sub(other: TaskVector): Promise<TaskVector> {
    return TaskVector.sum([this, other], [1, -1]);
  }
  scale(alpha: number): Promise<TaskVector> {
    return TaskVector.sum([this], [alpha]);
  }
  negate(): Promise<TaskVector> {
    return this.scale(-1);
  }

  private pairs(other: TaskVector): [Tensor[], Tensor[]] {
    const names = this.names;
    const missing = names.filter((n) => !other.tensors.has(n));
    if (missing.length || other.tensors.size !== names.length)
      throw new ParameterError(`task vectors hold different tensors${missing.length ? ` (e.g. '${missing[0]}' only in the first)` : ''}`);
    return [names.map((n) => this.tensors.get(n)!), names.map((n) => other.tensors.get(n)!)];
  }

  /** ⟨τ, τ'⟩ over all tensors, accumulated in float64. */
  async dot(other: TaskVector): Promise<number> {
    const [a, b] = this.pairs(other);
    return native().dot(a.map((t) => t.native), b.map((t) => t.native));
  }

  async norm(): Promise<number> {
    return Math.sqrt(await this.dot(this));
  }

  /** Cosine similarity between every pair of task vectors (a symmetric matrix, ones on the diagonal). */
  static async cosineMatrix(tvs: readonly TaskVector[]): Promise<number[][]> {
    const norms = await Promise.all(tvs.map((t) => t.norm()));
    const m = tvs.map(() => tvs.map(() => 0));
    for (let i = 0; i < tvs.length; i++) {
      m[i]![i] = 1;
      for (let j = i + 1; j < tvs.length; j++) {
        const c = (await tvs[i]!.dot(tvs[j]!)) / (norms[i]! * norms[j]! || 1);
        m[i]![j] = c;
        m[j]![i] = c;
      }
    }
    return m;
  }

  /**
   * θ0 + α τ. Tensors of θ0 that τ does not hold (integer buffers) are passed through; a tensor
   * of τ that θ0 lacks is an error.
   */
  async applyTo(theta0: Params, alpha = 1, opts: CombineOptions = {}): Promise<StateDict> {
    const base = toMap(theta0);
    const extra = this.names.filter((n) => !base.has(n));
    if (extra.length) throw new ParameterError(`task vector tensor '${extra[0]}' is not in θ0${extra.length > 1 ? ` (+${extra.length - 1} more)` : ''}`);
    const names = this.names;
    const sub = new Map(names.map((n) => [n, base.get(n)!]));
    const out = await combineStates(sub, [this.tensors], [alpha], opts);
    const result: StateDict = new Map();
    for (const [n, t] of base) result.set(n, out.get(n) ?? t);
    return result;
  }

  /**
   * The same task vector under other names — e.g. between a linearized model's checkpoint keys
   * and the ordinary model's. `rename` returns the new name (or undefined to drop the tensor);
   * two tensors may not land on one name.
   */
  renameKeys(rename: (name: string) => string | undefined): TaskVector {
    const out: StateDict = new Map();
    for (const [n, t] of this.tensors) {
      const m = rename(n);
      if (m === undefined) continue;
      if (out.has(m)) throw new ParameterError(`renaming maps two tensors onto '${m}'`);
      out.set(m, t);
    }
    return new TaskVector(out);
  }

  /**
   * Cast by parameter name between the keys of a linearized model (`<prefix><name>`, as in the
   * paper's code where the trainable copy is `params.<name>` next to a frozen `params0.<name>`) and
   * the ordinary model (`<name>`). Names without the prefix are an error, never silently dropped.
   */
  castFromLinearized(prefix = 'params.'): TaskVector {
    return this.renameKeys((n) => {
      if (!n.startsWith(prefix)) throw new ParameterError(`tensor '${n}' has no '${prefix}' prefix; not a linearized-model key`);
      return n.slice(prefix.length);
    });
  }

  castToLinearized(prefix = 'params.'): TaskVector {
    return this.renameKeys((n) => `${prefix}${n}`);
  }

  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

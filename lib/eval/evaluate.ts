/**
 * Evaluation of edited models in the paper's three regimes:
 *   nonlinear — task vectors of standard fine-tuning, applied to f (θ0 + Σ α τ);
 *   posthoc   — the same task vectors, evaluated in f_lin(x; θ0 + Σ α τ);
 *   linear    — task vectors of linear fine-tuning, applied in f_lin.
 * Task addition (θ0 + α Σ_t τ_t) and negation (θ0 − α τ_t) are swept over an α grid on
 * validation data; α is chosen by the pure rules of ./select; test figures at the chosen α.
 */
import { ArgumentError, ParameterError } from '../errors';
import type { ProcessGroup } from '../distributed/group';
import { groupFor } from '../distributed/context';
import { featureDim, type Head, type Model, type Params, type StateDict } from '../model';
import { combineStates } from '../ops';
import type { EvalData } from '../data/splits';
import { disposeState } from '../util/state';
import { progress as makeProgress, type ProgressOptions } from '../util/progress';
import { additionScores, alphaGrid, selectAdditionAlpha, selectNegationAlpha, type NegationChoice } from './select';

export type Regime = 'nonlinear' | 'posthoc' | 'linear';
export const REGIMES: readonly Regime[] = ['nonlinear', 'posthoc', 'linear'];

/** Whether a regime evaluates in the linearized model f_lin (at θ0). */
export function isLinearized(r: Regime): boolean {
  return r !== 'nonlinear';
}
/** The fine-tuning mode whose task vectors a regime uses. */
export function sourceMode(r: Regime): 'standard' | 'linear' {
  return r === 'linear' ? 'linear' : 'standard';
}

export interface EvalTask {
  name: string;
  /** Frozen head on the model's features; omitted when the model outputs logits itself. */
  head?: Head;
  val: EvalData;
  test: EvalData;
}

export type Split = 'val' | 'test';
export type TaskAcc = Record<string, number>;

/** Accuracy of any parameter set on registered tasks, in f or in f_lin at θ0. */
export class Evaluator {
  readonly tasks: Map<string, EvalTask>;
  /**
   * With `processGroup`, every rank evaluates every worldSize-th batch and the correct counts are
   * summed over ranks (exact integers): every rank returns the single-process figures. Default:
   * the process's default group (set by the CLI for `tangent launch` / `--world-size`); null: none.
   */
  readonly processGroup: ProcessGroup | undefined;
  constructor(
    readonly model: Model,
    readonly theta0: StateDict,
    tasks: readonly EvalTask[],
    o: { processGroup?: ProcessGroup | null } = {},
  ) {
    this.processGroup = groupFor(o.processGroup);
    model.checkParams(theta0, 'theta0');
    this.tasks = new Map(tasks.map((t) => [t.name, t]));
    for (const t of tasks) {
      if (!t.head) continue;
      const features = t.head.weight.shape[1];
      const dim = featureDim(model.config);
      if (dim !== undefined && features !== dim)
        throw new ArgumentError(`head of '${t.name}' takes ${features} features, the model gives ${dim}`);
      for (const d of [t.val, t.test])
        if (d.classes > t.head.weight.shape[0]!) throw new ArgumentError(`'${d.name}' has ${d.classes} classes, its head only ${t.head.weight.shape[0]}`);
    }
  }

  task(name: string): EvalTask {
    const t = this.tasks.get(name);
    if (!t) throw new ArgumentError(`unknown evaluation task '${name}' (have ${[...this.tasks.keys()].join(', ')})`);
    return t;
  }

  /** Top-1 accuracy on a task's split; `params` default θ0. */
  async accuracy(task: string, split: Split, params: Params | undefined, linearized: boolean): Promise<number> {
    const t = this.task(task);
    const d = t[split];
    const p = params ?? this.theta0;
    const lin = linearized ? this.model.linearize(this.theta0) : null;
    let correct = 0;
    const pg = this.processGroup;
    for (const [i, b] of d.batches.entries()) {
      if (pg && i % pg.worldSize !== pg.rank) continue;
      const r = lin ? await lin.evaluate(b.x, b.y, { params: p, head: t.head }) : await this.model.evaluate(b.x, b.y, { params: p, head: t.head });
      correct += r.correct;
    }
    if (pg) correct = (await pg.sumNumbers([correct]))[0]!;
    return correct / d.count;
  }

  /**
   * Accuracies of f_lin(x; θ0 + α v) for every α at once. f_lin is affine in θ, so its output
   * is f(x; θ0) + α · J v: ONE JVP per batch gives every α (the head, logits and argmax are
   * then computed here in float64). Equal to evaluating each α separately up to float rounding.
   */
  async linearizedCurve(task: string, split: Split, direction: Params, alphas: readonly number[]): Promise<number[]> {
    const t = this.task(task);
    const d = t[split];
    // Without a head the model's outputs are the logits: an identity head, not normalized.
    const head = t.head;
    let W: Float64Array | null = head ? Float64Array.from(head.weight.data() as ArrayLike<number>) : null;
    const b = head?.bias ? Float64Array.from(head.bias.data() as ArrayLike<number>) : null;
    let [C, D] = head ? (head.weight.shape as [number, number]) : [0, 0];
    const normalize = head?.normalize ?? false;
    const correct = new Array<number>(alphas.length).fill(0);
    let f = new Float64Array(D);
    const pg = this.processGroup;
    for (const [bi, batch] of d.batches.entries()) {
      if (pg && bi % pg.worldSize !== pg.rank) continue;
      const { primal, tangent } = await this.model.jvp(batch.x, direction, { params0: this.theta0 });
      const P = primal.data() as Float32Array;
      const T = tangent.data() as Float32Array;
      if (W === null) {
        D = C = primal.shape[primal.shape.length - 1]!;
        W = new Float64Array(C * D);
        for (let c = 0; c < C; c++) W[c * D + c] = 1;
        f = new Float64Array(D);
      }
      const y = batch.y.data() as BigInt64Array;
      for (let i = 0; i < batch.n; i++) {
        const label = Number(y[i]!);
        for (const [k, alpha] of alphas.entries()) {
          let nn = 0;
          for (let j = 0; j < D; j++) {
            f[j] = P[i * D + j]! + alpha * T[i * D + j]!;
            nn += f[j]! * f[j]!;
          }
          const inv = normalize ? 1 / Math.max(Math.sqrt(nn), 1e-12) : 1;
          let best = -Infinity;
          let arg = -1;
          for (let c = 0; c < C; c++) {
            let z = b ? b[c]! : 0;
            for (let j = 0; j < D; j++) z += W[c * D + j]! * f[j]! * inv;
            if (z > best) {
              best = z;
              arg = c;
            }
          }
          if (arg === label) correct[k]!++;
        }
      }
      primal.dispose();
      tangent.dispose();
    }
    const total = pg ? await pg.sumNumbers(correct) : correct;
    return total.map((c) => c / d.count);
  }

  async accuracies(tasks: readonly string[], split: Split, params: Params | undefined, linearized: boolean): Promise<TaskAcc> {
    const out: TaskAcc = {};
    for (const t of tasks) out[t] = await this.accuracy(t, split, params, linearized);
    return out;
  }
}

/** τ = θ − θ0 by name (float64 accumulation). */
export async function taskVector(theta: Params, theta0: Params): Promise<StateDict> {
  return combineStates(theta, [theta0], [-1], { compute: 'float64' });
}

function namesMatch(model: Model, s: Params, what: string): void {
  try {
    model.checkParams(s, what);
  } catch (e) {
    throw e instanceof ParameterError ? new ParameterError(`${(e as Error).message} (task vectors are matched by name)`) : e;
  }
}

export interface AdditionAlphaRow {
  alpha: number;
  val: TaskAcc;
  valMeanAbs: number;
  valMeanNorm: number;
}

export interface AdditionResult {
  regime: Regime;
  tasks: string[];
  /** Single-task fine-tuned accuracies in this regime (the normalizers). */
  finetuned: { val: TaskAcc; test: TaskAcc };
  alphas: AdditionAlphaRow[];
  chosenAlpha: number;
  test: { acc: TaskAcc; normalized: TaskAcc; meanAbs: number; meanNorm: number };
}

export interface SweepOptions {
  alphas?: number[];
  progress?: ProgressOptions;
}

/** Task addition θ0 + α Σ τ_t in one regime; `finetuned` maps task → θ_t from that regime's fine-tuning mode. */
export async function additionSweep(ev: Evaluator, regime: Regime, finetuned: ReadonlyMap<string, Params>, o: SweepOptions = {}): Promise<AdditionResult> {
  const tasks = [...finetuned.keys()];
  if (tasks.length === 0) throw new ArgumentError('addition needs at least one fine-tuned model');
  tasks.forEach((t) => ev.task(t));
  for (const [t, p] of finetuned) namesMatch(ev.model, p, `fine-tuned '${t}'`);
  const alphas = o.alphas ?? alphaGrid();
  const lin = isLinearized(regime);
  const ft = { val: {} as TaskAcc, test: {} as TaskAcc };
  for (const [t, p] of finetuned) {
    ft.val[t] = await ev.accuracy(t, 'val', p, lin);
    ft.test[t] = await ev.accuracy(t, 'test', p, lin);
  }
  // Σ τ_t = Σ θ_t − T θ0, once.
  const sum = await combineStates(null, [...finetuned.values(), ev.theta0], [...tasks.map(() => 1), -tasks.length], { compute: 'float64' });
  const bar = makeProgress(`addition (${regime})`, alphas.length, 'α', o.progress);
  const rows: AdditionAlphaRow[] = [];
  try {
    // In f_lin every α comes from one JVP per batch along Σ τ (see Evaluator.linearizedCurve).
    const curves = new Map<string, number[]>();
    if (lin) for (const t of tasks) curves.set(t, await ev.linearizedCurve(t, 'val', sum, alphas));
    for (const [i, alpha] of alphas.entries()) {
      let val: TaskAcc;
      if (lin) val = Object.fromEntries(tasks.map((t) => [t, curves.get(t)![i]!]));
      else {
        const p = await combineStates(ev.theta0, [sum], [alpha]);
        val = await ev.accuracies(tasks, 'val', p, lin);
        disposeState(p);
      }
      const s = additionScores(val, ft.val);
      rows.push({ alpha, val, valMeanAbs: s.meanAbs, valMeanNorm: s.meanNorm });
      bar.update(i + 1, `α ${alpha.toFixed(2)}: norm ${(100 * s.meanNorm).toFixed(1)}%`);
    }
    const choice = selectAdditionAlpha(rows.map((r) => ({ alpha: r.alpha, acc: r.val })), ft.val);
    const p = await combineStates(ev.theta0, [sum], [choice.alpha]);
    const acc = await ev.accuracies(tasks, 'test', p, lin);
    disposeState(p);
    const s = additionScores(acc, ft.test);
    bar.stop(`α = ${choice.alpha.toFixed(2)}`);
    return { regime, tasks, finetuned: ft, alphas: rows, chosenAlpha: choice.alpha, test: { acc, normalized: s.normalized, meanAbs: s.meanAbs, meanNorm: s.meanNorm } };
  } finally {
    disposeState(sum);
  }
}

export interface NegationTaskResult {
  alphas: Array<{ alpha: number; target: number; control: number }>;
  chosen: NegationChoice;
  test: { target: number; control: number };
  pretrainedTargetTest: number;
}

export interface NegationResult {
  regime: Regime;
  control: string;
  ratio: number;
  pretrainedControl: { val: number; test: number };
  threshold: number;
  tasks: Record<string, NegationTaskResult>;
  meanTargetTest: number;
  meanControlTest: number;
}

/** Task negation θ0 − α τ_t, one task at a time, in one regime, with `control` as the control task. */
export async function negationSweep(
  ev: Evaluator,
  regime: Regime,
  finetuned: ReadonlyMap<string, Params>,
  o: SweepOptions & { control: string; ratio?: number },
): Promise<NegationResult> {
  const ratio = o.ratio ?? 0.95;
  if (!(ratio >= 0 && ratio <= 1)) throw new ArgumentError(`control ratio must lie in [0, 1], got ${ratio}`);
  ev.task(o.control);
  if (finetuned.has(o.control)) throw new ArgumentError(`the control task '${o.control}' cannot also be a negated task`);
  for (const [t, p] of finetuned) {
    ev.task(t);
    namesMatch(ev.model, p, `fine-tuned '${t}'`);
  }
  const alphas = o.alphas ?? alphaGrid();
  const lin = isLinearized(regime);
  // f_lin(θ0) = f(θ0): the pre-trained control accuracy is the same in every regime.
  const pre = { val: await ev.accuracy(o.control, 'val', undefined, false), test: await ev.accuracy(o.control, 'test', undefined, false) };
  const bar = makeProgress(`negation (${regime})`, alphas.length * finetuned.size, 'α', o.progress);
  const tasks: Record<string, NegationTaskResult> = {};
  let done = 0;
  for (const [t, theta] of finetuned) {
    const tau = await taskVector(theta, ev.theta0);
    try {
      const rows: NegationTaskResult['alphas'] = [];
      if (lin) {
        // θ0 − α τ = θ0 + (−α) τ: curves along τ at the negated α.
        const neg = alphas.map((a) => -a);
        const target = await ev.linearizedCurve(t, 'val', tau, neg);
        const ctl = await ev.linearizedCurve(o.control, 'val', tau, neg);
        alphas.forEach((alpha, i) => rows.push({ alpha, target: target[i]!, control: ctl[i]! }));
        done += alphas.length;
        bar.update(done, t);
      } else
        for (const alpha of alphas) {
          const p = await combineStates(ev.theta0, [tau], [-alpha]);
          rows.push({ alpha, target: await ev.accuracy(t, 'val', p, lin), control: await ev.accuracy(o.control, 'val', p, lin) });
          disposeState(p);
          bar.update(++done, `${t} α ${alpha.toFixed(2)}`);
        }
      const chosen = selectNegationAlpha(rows, pre.val, ratio);
      const p = await combineStates(ev.theta0, [tau], [-chosen.alpha]);
      const test = { target: await ev.accuracy(t, 'test', p, lin), control: await ev.accuracy(o.control, 'test', p, lin) };
      disposeState(p);
      tasks[t] = { alphas: rows, chosen, test, pretrainedTargetTest: await ev.accuracy(t, 'test', undefined, false) };
    } finally {
      disposeState(tau);
    }
  }
  bar.stop();
  const names = Object.keys(tasks);
  return {
    regime,
    control: o.control,
    ratio,
    pretrainedControl: pre,
    threshold: ratio * pre.val,
    tasks,
    meanTargetTest: names.reduce((a, t) => a + tasks[t]!.test.target, 0) / names.length,
    meanControlTest: names.reduce((a, t) => a + tasks[t]!.test.control, 0) / names.length,
  };
}

export interface SingleTaskRow {
  task: string;
  pretrained: number;
  standard?: number;
  posthoc?: number;
  linear?: number;
}

/**
 * Test accuracy per task of the pre-trained model, the standard fine-tuned model (in f), its
 * post-hoc linearization (in f_lin) and the linear fine-tuned model (in f_lin).
 */
export async function singleTaskAccuracies(
  ev: Evaluator,
  tasks: readonly string[],
  standard: ReadonlyMap<string, Params>,
  linear: ReadonlyMap<string, Params>,
  split: Split = 'test',
): Promise<SingleTaskRow[]> {
  const rows: SingleTaskRow[] = [];
  for (const t of tasks) {
    const row: SingleTaskRow = { task: t, pretrained: await ev.accuracy(t, split, undefined, false) };
    const s = standard.get(t);
    if (s) {
      row.standard = await ev.accuracy(t, split, s, false);
      row.posthoc = await ev.accuracy(t, split, s, true);
    }
    const l = linear.get(t);
    if (l) row.linear = await ev.accuracy(t, split, l, true);
    rows.push(row);
  }
  return rows;
}

/**
 * The paper's selection rules, as small pure functions (unit-tested on constructed cases).
 *
 * - α grid: 21 points 0.00, 0.05, …, 1.00.
 * - Addition: the α maximizing the mean normalized validation accuracy; ties → the smallest α.
 * - Normalized accuracy of task t: acc(edited, t) / acc(single-task fine-tuned, t), the
 *   denominator from the same regime (non-linear, post-hoc or linear).
 * - Negation: the α minimizing the target's validation accuracy subject to the control task's
 *   accuracy ≥ ratio (0.95) × the pre-trained model's control accuracy; α = 0 always allowed;
 *   ties → the smallest α.
 */
import { ArgumentError } from '../errors';

/** Two scores closer than this count as a tie (guards against float noise in means). */
export const TIE_TOLERANCE = 1e-12;

/** The 21-point grid 0.00, 0.05, …, 1.00 (exact decimals: i / 20). */
export function alphaGrid(points = 21, max = 1): number[] {
  if (!Number.isSafeInteger(points) || points < 2) throw new ArgumentError(`alpha grid needs at least 2 points, got ${points}`);
  return Array.from({ length: points }, (_, i) => Number(((i * max) / (points - 1)).toFixed(10)));
}

function checkAlphas(alphas: readonly number[]): void {
  if (alphas.length === 0) throw new ArgumentError('no α to choose from');
  for (let i = 1; i < alphas.length; i++)
    if (!(alphas[i]! > alphas[i - 1]!)) throw new ArgumentError(`α values must be strictly increasing, got ${alphas[i - 1]} then ${alphas[i]}`);
}

/**
 * Index of the largest score; among scores within `tol` of the best, the one with the smallest α
 * (alphas strictly increasing, aligned with scores). NaN scores never win.
 */
export function argmaxSmallestAlpha(alphas: readonly number[], scores: readonly number[], tol = TIE_TOLERANCE): number {
  checkAlphas(alphas);
  if (scores.length !== alphas.length) throw new ArgumentError(`${alphas.length} α values but ${scores.length} scores`);
  let best = -Infinity;
  for (const s of scores) if (s > best) best = s;
  if (best === -Infinity) throw new ArgumentError('no finite score to choose from');
  return scores.findIndex((s) => s >= best - tol);
}

/** acc / finetunedAcc (the paper's normalized accuracy). */
export function normalizedAccuracy(acc: number, finetunedAcc: number): number {
  if (!(finetunedAcc > 0)) throw new ArgumentError(`normalized accuracy needs a positive fine-tuned accuracy, got ${finetunedAcc}`);
  return acc / finetunedAcc;
}

/** Mean over tasks of a per-task number (keys of `values`, which must all be present in `by`). */
export function mean(values: readonly number[]): number {
  if (values.length === 0) throw new ArgumentError('mean of nothing');
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Mean absolute and mean normalized accuracy over the tasks of `acc`. */
export function additionScores(
  acc: Readonly<Record<string, number>>,
  finetuned: Readonly<Record<string, number>>,
): { meanAbs: number; meanNorm: number; normalized: Record<string, number> } {
  const tasks = Object.keys(acc);
  const normalized: Record<string, number> = {};
  for (const t of tasks) {
    if (!(t in finetuned)) throw new ArgumentError(`no fine-tuned accuracy for task '${t}'`);
    normalized[t] = normalizedAccuracy(acc[t]!, finetuned[t]!);
  }
  return { meanAbs: mean(tasks.map((t) => acc[t]!)), meanNorm: mean(tasks.map((t) => normalized[t]!)), normalized };
}

export interface AdditionChoice {
  index: number;
  alpha: number;
  /** The chosen α's mean normalized validation accuracy. */
  score: number;
}

/** Addition: α maximizing mean normalized validation accuracy (ties → smallest α). */
export function selectAdditionAlpha(
  rows: ReadonlyArray<{ alpha: number; acc: Readonly<Record<string, number>> }>,
  finetuned: Readonly<Record<string, number>>,
): AdditionChoice {
  const scores = rows.map((r) => additionScores(r.acc, finetuned).meanNorm);
  const index = argmaxSmallestAlpha(rows.map((r) => r.alpha), scores);
  return { index, alpha: rows[index]!.alpha, score: scores[index]! };
}

export interface NegationChoice {
  index: number;
  alpha: number;
  target: number;
  control: number;
  /** The control accuracy every admissible α must reach: ratio × pre-trained control accuracy. */
  threshold: number;
}

/**
 * Negation: α minimizing target accuracy among the admissible ones (control ≥ ratio ×
 * pretrainedControl, or α = 0); ties → smallest α. If no α is admissible and the grid has no
 * α = 0, an ArgumentError (the grid must contain 0 for the rule to be total).
 */
export function selectNegationAlpha(
  rows: ReadonlyArray<{ alpha: number; target: number; control: number }>,
  pretrainedControl: number,
  ratio = 0.95,
): NegationChoice {
  checkAlphas(rows.map((r) => r.alpha));
  if (!(ratio >= 0 && ratio <= 1)) throw new ArgumentError(`control ratio must lie in [0, 1], got ${ratio}`);
  if (!Number.isFinite(pretrainedControl)) throw new ArgumentError(`pre-trained control accuracy must be finite, got ${pretrainedControl}`);
  const threshold = ratio * pretrainedControl;
  let index = -1;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (!(r.alpha === 0 || r.control >= threshold)) continue;
    if (index < 0 || r.target < rows[index]!.target - TIE_TOLERANCE) index = i;
  }
  if (index < 0) throw new ArgumentError(`no α keeps the control accuracy ≥ ${threshold} and the grid lacks α = 0`);
  const r = rows[index]!;
  return { index, alpha: r.alpha, target: r.target, control: r.control, threshold };
}

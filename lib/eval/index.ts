/**
 * Evaluation of edited models: accuracies in f or f_lin, task addition / negation sweeps in the
 * paper's three regimes, the pure α-selection rules and the markdown tables.
 */
export {
  Evaluator,
  additionSweep,
  negationSweep,
  singleTaskAccuracies,
  taskVector,
  REGIMES,
  isLinearized,
  sourceMode,
  type Regime,
  type EvalTask,
  type AdditionResult,
  type NegationResult,
  type SingleTaskRow,
} from './evaluate';
export { alphaGrid, argmaxSmallestAlpha, normalizedAccuracy, additionScores, selectAdditionAlpha, selectNegationAlpha, TIE_TOLERANCE } from './select';
export { singleTaskTable, additionTable, negationTable } from './report';

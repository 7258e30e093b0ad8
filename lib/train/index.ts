/**
 * Fine-tuning (standard and linear), the small pre-trained backbone and its frozen heads, and the
 * paper's evaluation protocol (task addition / negation in three regimes).
 */
export { AdamW, cosineLr, globalNorm, type AdamWOptions, type AdamWStepInfo, type ScheduleOptions } from './optim';
export {
  finetune,
  loadTrainingState,
  optimStatePath,
  resolveHyper,
  FINETUNE_DEFAULTS,
  CHECKPOINT_FORMAT,
  type FinetuneHyper,
  type FinetuneOptions,
  type FinetuneResult,
  type StepRecord,
  type TrainingState,
  type CheckpointOptions,
} from './finetune';
export { prepareTask, checkDataset, batchTensors, StepSampler, evalData, disposeEvalData, type TaskSplits, type PrepareOptions, type EvalData } from './data';
export {
  pretrain,
  fitHead,
  normalizedFeatures,
  saveBackbone,
  loadBackbone,
  saveHeads,
  loadHeads,
  SMALL_VIT,
  PRETRAIN_DEFAULTS,
  type Backbone,
  type PretrainOptions,
  type HeadOptions,
} from './pretrain';
export { loadFinetuned, writeFileAtomic, type FinetunedCheckpoint } from './checkpoints';
export { fromRaw, toRaw, saveTensors, loadTensors, sha256File, hashTensors, assertMatchesModel } from './io';
export { progress, type Progress, type ProgressOptions, type ProgressMode } from './progress';
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
} from '../eval/evaluate';
export { alphaGrid, argmaxSmallestAlpha, normalizedAccuracy, additionScores, selectAdditionAlpha, selectNegationAlpha, TIE_TOLERANCE } from '../eval/select';
export { singleTaskTable, additionTable, negationTable } from '../eval/report';
export { runPaperProtocol, PAPER_TASKS, type ProtocolOptions, type ProtocolReport } from '../eval/protocol';

/**
 * Fine-tuning (standard and linear), the small pre-trained backbone and its frozen heads. Evaluation
 * is `evaluation` (lib/eval), the paper's protocol `runPaperProtocol` (lib/protocol.ts); the data
 * plumbing (splits, batches) lives in lib/data/splits.ts and the state-dict I/O in lib/util/state.ts,
 * re-exported here for compatibility.
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
export { prepareTask, checkDataset, batchTensors, StepSampler, evalData, disposeEvalData, type TaskSplits, type PrepareOptions, type EvalData } from '../data/splits';
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
export { fromRaw, toRaw, saveTensors, loadTensors, sha256File, hashTensors, assertMatchesModel } from '../util/state';
export { progress, type Progress, type ProgressOptions, type ProgressMode } from '../util/progress';

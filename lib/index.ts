export * from './errors';
export { Tensor, DTYPES, DTYPE_SIZE, isFloatDType, numel, type DType, type Device, type TypedArrayFor } from './tensor';
export {
  Model,
  LinearizedModel,
  type ModelConfig,
  type MlpConfig,
  type CnnConfig,
  type VitConfig,
  type ClipVisionConfig,
  type ClipTextConfig,
  featureDim,
  type ModelOptions,
  type Params,
  type StateDict,
  type Head,
  type StepResult,
  type GradResult,
  type Mode,
  type Input,
  type LoadOptions,
} from './model';
export { setNumThreads, getNumThreads, setJvpMethod, getJvpMethod, type JvpMethod, runtimeInfo, libtorchBuildInfo, rebuildNative } from './runtime';
export type { LibtorchRecord } from './install/record';
export { OptionalDependencyError } from './optional';
export { combine, combineStates, type CombineOptions } from './ops';
export * as data from './data';
export { CheckpointError, type CheckpointErrorCode } from './checkpoint/errors';
export { TaskVector } from './taskvector';
export { detectFormat, loadStateDict, saveStateDict, openCheckpoint, rawToTensor, tensorToRaw, cleanStaleTempFiles, type CheckpointFormat } from './checkpoint/io';
export { mergeTensor, mergeStateDicts, mergeCheckpoints, parseMergeConfig, loadMergeConfig, readMergeDocument, MERGE_METHODS, METHODS, type MergeMethod, type MergeConfig, type MergeOptions, type MergePlanItem, type MergeReport, type MergeCheckpointOptions } from './merge';
export { isMergekitConfig, parseMergekitConfig, loadMergekitConfig, runMergekit, type MergekitConfig, type MergekitPlan } from './mergekit';
export { readTorchCheckpoint, readTorchScriptTensors, writeTorchCheckpoint } from './checkpoint/torch-pickle';
export * as train from './train';
export * as distributed from './distributed';
export { ProcessGroup, DistributedError } from './distributed';
export * as evaluation from './eval';
export { runPaperProtocol, PAPER_TASKS, LR_GRID, meanStd, headlineOf, aggregateHeadlines, type ProtocolOptions, type ProtocolReport, type MeanStd, type LrSelection, type AlphaEdge, type SeedResult } from './protocol';
export * as analysis from './analysis';
export { Clip, ClipTokenizer, CLIP_NAMES, BUILTIN_TEMPLATES, loadTemplates, namedClipConfig, clipVisionConfig, clipTextConfig, clipLayout, toOpenClipNames, INITIAL_LOGIT_SCALE, type ClipConfig, type ClipLayout } from './clip';

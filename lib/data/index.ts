/**
 * Datasets for tangent-edit: the `ImageSet`/`RawBatch` interfaces and helpers (./dataset), the IDX
 * parser (./idx), the decode-once cache (./cache), the built-in tasks (./tasks), datasets from the
 * user's files (./files, ./spec) and the splits/batches that training and evaluation share (./splits).
 */
export * from './dataset';
export * from './idx';
export { defaultCacheDir, cacheFile, readCache, writeCache, encodeCache, decodeCache, type RawTask, type RawSplit, type CacheRead } from './cache';
export { MissingDependencyError, FASHION_NAMES, DIGIT_NAMES } from './sources';
export { FONT_PACKAGES, GLYPH_TASKS, type GlyphTaskName, type GlyphTaskSpec } from './glyphs';
export * from './tasks';
export * from './files';
export { parseDataSpec, prepareData, type DataSpec, type DataOptions } from './spec';
export { prepareTask, checkDataset, batchTensors, StepSampler, evalData, disposeEvalData, expectedSampleShape, type TaskSplits, type PrepareOptions, type EvalData } from './splits';

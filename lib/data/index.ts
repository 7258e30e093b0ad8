/**
 * Datasets for tangent-edit: the `ImageSet`/`RawBatch` interfaces and helpers (./dataset), the IDX
 * parser (./idx), the decode-once cache (./cache) and the built-in tasks (./tasks).
 */
export * from './dataset';
export * from './idx';
export { defaultCacheDir, cacheFile, readCache, writeCache, encodeCache, decodeCache, type RawTask, type RawSplit, type CacheRead } from './cache';
export { MissingDependencyError, FASHION_NAMES, DIGIT_NAMES } from './sources';
export { FONT_PACKAGES, GLYPH_TASKS, type GlyphTaskName, type GlyphTaskSpec } from './glyphs';
export * from './tasks';

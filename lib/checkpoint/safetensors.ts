/**
 * safetensors checkpoints in pure TypeScript, independent of the native engine.
 *
 * Reading
 *  - {@link readSafetensors} / {@link readSafetensorsAsync}: the whole file is
 *    read into ONE buffer (a single allocation, read in large chunks; Node has no
 *    mmap) and every tensor's `data` is a zero-copy view into it. Views keep the
 *    whole buffer alive. The buffer starts at offset 0 of its ArrayBuffer and
 *    writers pad the header so that the data section starts at a multiple of 8,
 *    so a tensor is aligned in memory exactly when its offset in the data
 *    section is a multiple of its dtype size, which the format does not
 *    guarantee (e.g. after an odd-length uint8 tensor). Callers that need a
 *    typed array must use {@link typedView} (copies only when unaligned).
 *  - {@link openSafetensors}: a lazy reader that reads only the header, then
 *    each tensor's bytes on demand with positioned reads, for streaming merges
 *    whose peak memory must stay around one tensor. Each tensor it returns owns
 *    a fresh, aligned buffer.
 *  - Everything is validated (see `header.ts` for the rules, including the
 *    decision to reject holes by default); each failure is a
 *    {@link CheckpointError} naming the file and the tensor.
 *
 * Writing
 *  - {@link writeSafetensors} / {@link writeSafetensorsAsync}: header padded with
 *    spaces to 8-byte alignment, tensors contiguous in the order given, streamed
 *    tensor by tensor into a temporary file in the destination directory, then
 *    fsync'ed and renamed over the destination: a failure never leaves a partial
 *    output (nor the temporary file). Inputs may be {@link LazyTensor}s whose
 *    bytes are produced only when written, so a merge can stream.
 *
 * Sharded checkpoints (`model.safetensors.index.json` + `model-0000i-of-0000N.safetensors`):
 * {@link readShardedIndex}, {@link openSharded}, {@link readSharded}, {@link writeSharded}.
 *
 * Layout comparison: {@link compareStateDicts}, {@link assertSameLayout}.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants as bufferConstants } from 'node:buffer';

import { TangentError } from '../errors';
import { CheckpointError, ioError, openForReading, openForReadingAsync } from './errors';
import { escapeControl, quote } from './escape';
import { cleanStaleTempFiles, makeDirectory, tempPathFor } from './tempfiles';
import { allocTensorBytes } from './alloc';
import { DType, RawTensor, findNonFinite, isDType, isFloatDType, numel, DTYPE_BYTES } from './dtype';
import { DEFAULT_MAX_HEADER_BYTES, encodeHeader, HeaderEntry, METADATA_KEY, parseHeader, parseJsonObject, readHeaderLength } from './header';

export * from './errors';
export * from './dtype';
export { DEFAULT_MAX_HEADER_BYTES, METADATA_KEY } from './header';

// ---------------------------------------------------------------------------
// Types

/** What to do about NaN / +/-Infinity in float tensors. */
export type NonFinitePolicy = 'allow' | 'warn' | 'error';

export interface ReadOptions {
  /** Scan float tensors for NaN/Inf: `'allow'` (default, no scan), `'warn'` or `'error'` (ERR_NON_FINITE). */
  nonFinite?: NonFinitePolicy;
  /** Largest accepted JSON header, in bytes (default 100 MB, as the reference implementation). */
  maxHeaderBytes?: number;
  /** Accept gaps between tensors and trailing bytes (default false: the spec forbids holes). */
  allowHoles?: boolean;
  /** Receives non-finite warnings; default `process.emitWarning`. */
  onWarning?: (message: string, error: CheckpointError) => void;
}

/** Contents of a safetensors file. */
export interface SafetensorsContents {
  /** Tensors in file order (ascending data offset). */
  tensors: Map<string, RawTensor>;
  /** `__metadata__` (empty if absent). */
  metadata: Record<string, string>;
}

/** A tensor whose bytes are produced only when the writer gets to it. */
export interface LazyTensor {
  dtype: DType;
  shape: number[];
  /** Returns exactly product(shape) x dtype-size little-endian bytes. */
  load(): Uint8Array;
}

/** {@link LazyTensor} for the async writers: `load` may return a promise. */
export interface AsyncLazyTensor {
  dtype: DType;
  shape: number[];
  load(): Uint8Array | Promise<Uint8Array>;
}

/** Writer input: materialized or lazy tensors. */
export type TensorInput = RawTensor | LazyTensor;
export type AsyncTensorInput = RawTensor | AsyncLazyTensor;

/** Named tensors: a Map or any iterable of `[name, tensor]` pairs, written in iteration order. */
export type TensorEntries<T> = ReadonlyMap<string, T> | Iterable<readonly [string, T]>;

/** Name, dtype and shape: what layout comparisons look at. */
export interface TensorLayout {
  dtype: DType;
  shape: readonly number[];
}

/** Where a tensor lives in a file. */
export interface TensorInfo extends TensorLayout {
  name: string;
  shape: number[];
  /** Bytes of data. */
  byteLength: number;
  /** Absolute byte offset of the data in `file`. */
  offset: number;
  file: string;
}

/** A lazily-read checkpoint (single file or sharded). */
export interface TensorReader {
  /** Tensor names, in file order (shard-major for sharded checkpoints). */
  keys(): string[];
  has(name: string): boolean;
  /** Throws ERR_NOT_FOUND for unknown names. */
  info(name: string): TensorInfo;
  /** Name -> dtype/shape of every tensor, in order; accepted by {@link compareStateDicts}. */
  layout(): Map<string, TensorLayout>;
  /** Reads one tensor into a fresh buffer (positioned read). */
  read(name: string): RawTensor;
  readAsync(name: string): Promise<RawTensor>;
  /** A {@link LazyTensor} reading this tensor when loaded, to stream into a writer. */
  lazy(name: string): LazyTensor;
  /**
   * Where a tensor's bytes are, on the descriptor this reader holds open (and validated the
   * header of): for native code that reads them in place. Valid until {@link close}.
   */
  locate?(name: string): TensorLocation;
  /** Closes the file descriptor(s). Idempotent. */
  close(): void;
  [Symbol.dispose](): void;
}

/** A tensor's bytes in an open file: {@link TensorReader.locate}. */
export interface TensorLocation {
  fd: number;
  file: string;
  /** Absolute byte offset of the data. */
  offset: number;
  byteLength: number;
}

export interface WriteOptions {
  /** fsync the data (and the directory) before/after renaming into place (default true). */
  fsync?: boolean;
}

// ---------------------------------------------------------------------------
// Shared helpers

/** Largest chunk per read/write syscall (Node caps one I/O at 2 GiB - 1). */
const IO_CHUNK = 1 << 30;

function checkBufferable(size: number, file: string): void {
  if (size > bufferConstants.MAX_LENGTH) {
    throw new CheckpointError('ERR_FILE_TOO_LARGE', `file is ${size} bytes, more than the largest Buffer (${bufferConstants.MAX_LENGTH}); use openSafetensors() to read it lazily`, { file });
  }
}

/** Reads exactly `target.byteLength` bytes at `position`. */
function readFullySync(fd: number, target: Uint8Array, position: number, file: string): void {
  let off = 0;
  while (off < target.byteLength) {
    const n = fs.readSync(fd, target, off, Math.min(IO_CHUNK, target.byteLength - off), position + off);
    if (n === 0) {
      throw new CheckpointError('ERR_TRUNCATED', `unexpected end of file at byte ${position + off} (file changed while being read?)`, { file });
    }
    off += n;
  }
}

function readAtAsync(fd: number, target: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, target, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

async function readFullyAsync(fd: number, target: Uint8Array, position: number, file: string): Promise<void> {
  let off = 0;
  while (off < target.byteLength) {
    const n = await readAtAsync(fd, target, off, Math.min(IO_CHUNK, target.byteLength - off), position + off);
    if (n === 0) {
      throw new CheckpointError('ERR_TRUNCATED', `unexpected end of file at byte ${position + off} (file changed while being read?)`, { file });
    }
    off += n;
  }
}

/** A fresh Uint8Array of `size` bytes at offset 0 of its own ArrayBuffer (hence maximally aligned): see ./alloc. */
function allocAligned(size: number): Uint8Array {
  return allocTensorBytes(size);
}

function checkFinite(t: RawTensor, name: string, file: string, opts: ReadOptions): void {
  const policy = opts.nonFinite ?? 'allow';
  if (policy === 'allow' || !isFloatDType(t.dtype)) return;
  const { count, first } = findNonFinite(t);
  if (count === 0) return;
  const err = new CheckpointError(
    'ERR_NON_FINITE',
    `${count} non-finite value(s) (NaN/Infinity) among ${numel(t.shape)} ${t.dtype} elements, first at flat index ${first}`,
    { file, tensor: name },
  );
  if (policy === 'error') throw err;
  if (opts.onWarning !== undefined) opts.onWarning(err.message, err);
  else process.emitWarning(err.message, { type: 'CheckpointWarning', code: 'ERR_NON_FINITE' });
}

function notFound(name: string, file: string): CheckpointError {
  return new CheckpointError('ERR_NOT_FOUND', 'no such tensor', { file, tensor: name });
}

// ---------------------------------------------------------------------------
// Whole-file reading

/**
 * Parses safetensors bytes already in memory. Tensor `data` are views into `bytes`.
 * @param opts.file name used in error messages (default `"<buffer>"`)
 */
export function parseSafetensors(bytes: Uint8Array, opts: ReadOptions & { file?: string } = {}): SafetensorsContents {
  const file = opts.file ?? '<buffer>';
  const n = readHeaderLength(bytes, bytes.byteLength, file, opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES);
  const base = 8 + n;
  const header = parseHeader(bytes.subarray(8, base), bytes.byteLength - base, file, opts);
  const tensors = new Map<string, RawTensor>();
  for (const e of header.entries) {
    const data = new Uint8Array(bytes.buffer, bytes.byteOffset + base + e.begin, e.end - e.begin);
    const t: RawTensor = { dtype: e.dtype, shape: e.shape, data };
    checkFinite(t, e.name, file, opts);
    tensors.set(e.name, t);
  }
  return { tensors, metadata: header.metadata };
}

/** Reads a whole file into one fresh buffer. */
function readWholeFileSync(file: string): Uint8Array {
  const fd = openForReading(file);
  try {
    const size = fs.fstatSync(fd).size;
    checkBufferable(size, file);
    const buf = allocAligned(size);
    readFullySync(fd, buf, 0, file);
    return buf;
  } catch (e) {
    throw ioError(file, 'read file', e);
  } finally {
    fs.closeSync(fd);
  }
}

async function readWholeFileAsync(file: string): Promise<Uint8Array> {
  const fh = await openForReadingAsync(file);
  try {
    const size = (await fh.stat()).size;
    checkBufferable(size, file);
    const buf = allocAligned(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(buf, off, Math.min(IO_CHUNK, size - off), off);
      if (bytesRead === 0) {
        throw new CheckpointError('ERR_TRUNCATED', `unexpected end of file at byte ${off} (file changed while being read?)`, { file });
      }
      off += bytesRead;
    }
    return buf;
  } catch (e) {
    throw ioError(file, 'read file', e);
  } finally {
    await fh.close();
  }
}

/**
 * Reads and validates a safetensors file. Tensors are zero-copy views into
 * one buffer holding the file (see the module comment about alignment).
 */
export function readSafetensors(file: string, opts: ReadOptions = {}): SafetensorsContents {
  return parseSafetensors(readWholeFileSync(file), { ...opts, file });
}

/** Async {@link readSafetensors} (the read runs on the libuv thread pool). */
export async function readSafetensorsAsync(file: string, opts: ReadOptions = {}): Promise<SafetensorsContents> {
  return parseSafetensors(await readWholeFileAsync(file), { ...opts, file });
}

// ---------------------------------------------------------------------------
// Lazy reader

/** A safetensors file opened lazily: header parsed, tensor bytes read on demand. */
export class SafetensorsFile implements TensorReader {
  /** The file path. */
  readonly file: string;
  /** `__metadata__`. */
  readonly metadata: Record<string, string>;
  /** Total file size when opened. */
  readonly fileSize: number;
  private fd: number;
  private readonly base: number;
  private readonly entries: Map<string, HeaderEntry>;
  private readonly opts: ReadOptions;

  /** Use {@link openSafetensors}. */
  constructor(file: string, opts: ReadOptions = {}) {
    this.file = file;
    this.opts = opts;
    this.fd = openForReading(file);
    try {
      this.fileSize = fs.fstatSync(this.fd).size;
      const prefix = new Uint8Array(8);
      if (this.fileSize >= 8) readFullySync(this.fd, prefix, 0, file);
      const n = readHeaderLength(prefix, this.fileSize, file, opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES);
      const headerBytes = new Uint8Array(n);
      readFullySync(this.fd, headerBytes, 8, file);
      this.base = 8 + n;
      const header = parseHeader(headerBytes, this.fileSize - this.base, file, opts);
      this.metadata = header.metadata;
      this.entries = new Map(header.entries.map((e) => [e.name, e]));
    } catch (e) {
      fs.closeSync(this.fd);
      throw ioError(file, 'read header', e);
    }
  }

  private entry(name: string): HeaderEntry {
    const e = this.entries.get(name);
    if (e === undefined) throw notFound(name, this.file);
    if (this.fd < 0) throw new CheckpointError('ERR_IO', 'reader is closed', { file: this.file, tensor: name });
    return e;
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entries.get(name);
    if (e === undefined) throw notFound(name, this.file);
    return { name, dtype: e.dtype, shape: e.shape.slice(), byteLength: e.end - e.begin, offset: this.base + e.begin, file: this.file };
  }

  layout(): Map<string, TensorLayout> {
    return new Map([...this.entries].map(([n, e]) => [n, { dtype: e.dtype, shape: e.shape.slice() }]));
  }

  locate(name: string): TensorLocation {
    const e = this.entry(name);
    return { fd: this.fd, file: this.file, offset: this.base + e.begin, byteLength: e.end - e.begin };
  }

  read(name: string): RawTensor {
    const e = this.entry(name);
    const data = allocAligned(e.end - e.begin);
    try {
      readFullySync(this.fd, data, this.base + e.begin, this.file);
    } catch (err) {
      throw ioError(this.file, `read tensor ${quote(name)}`, err);
    }
    const t: RawTensor = { dtype: e.dtype, shape: e.shape.slice(), data };
    checkFinite(t, name, this.file, this.opts);
    return t;
  }

  async readAsync(name: string): Promise<RawTensor> {
    const e = this.entry(name);
    const data = allocAligned(e.end - e.begin);
    try {
      await readFullyAsync(this.fd, data, this.base + e.begin, this.file);
    } catch (err) {
      throw ioError(this.file, `read tensor ${quote(name)}`, err);
    }
    const t: RawTensor = { dtype: e.dtype, shape: e.shape.slice(), data };
    checkFinite(t, name, this.file, this.opts);
    return t;
  }

  lazy(name: string): LazyTensor {
    const e = this.entries.get(name);
    if (e === undefined) throw notFound(name, this.file);
    return { dtype: e.dtype, shape: e.shape.slice(), load: () => this.read(name).data };
  }

  close(): void {
    if (this.fd >= 0) {
      const fd = this.fd;
      this.fd = -1;
      fs.closeSync(fd);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens a safetensors file lazily: reads and validates only the header
 * (bounded by `maxHeaderBytes`); tensors are read on demand. Close it when done
 * (or `using r = openSafetensors(f)`).
 */
export function openSafetensors(file: string, opts: ReadOptions = {}): SafetensorsFile {
  return new SafetensorsFile(file, opts);
}

// ---------------------------------------------------------------------------
// Writing

interface PlannedTensor<T> {
  name: string;
  tensor: T;
  byteLength: number;
}

function isPlainStringMap(x: unknown): x is Record<string, string> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && Object.values(x).every((v) => typeof v === 'string');
}

/** Validates writer inputs before anything touches the disk. */
function planTensors<T extends RawTensor | AsyncLazyTensor>(
  file: string,
  tensors: TensorEntries<T>,
  metadata: Record<string, string> | undefined,
): PlannedTensor<T>[] {
  if (metadata !== undefined && !isPlainStringMap(metadata)) {
    throw new CheckpointError('ERR_METADATA', 'metadata must be an object mapping strings to strings', { file });
  }
  const seen = new Set<string>();
  const items: PlannedTensor<T>[] = [];
  for (const [name, t] of tensors as Iterable<readonly [string, T]>) {
    if (typeof name !== 'string') throw new CheckpointError('ERR_INVALID_ARGUMENT', `tensor name must be a string, got ${typeof name}`, { file });
    const where = { file, tensor: name };
    if (name === METADATA_KEY) throw new CheckpointError('ERR_INVALID_ARGUMENT', `"${METADATA_KEY}" is reserved and cannot name a tensor`, where);
    if (seen.has(name)) throw new CheckpointError('ERR_DUPLICATE_KEY', 'tensor name given twice', where);
    seen.add(name);
    if (typeof t !== 'object' || t === null) throw new CheckpointError('ERR_INVALID_ARGUMENT', 'tensor must be an object', where);
    if (!isDType(t.dtype)) throw new CheckpointError('ERR_DTYPE', `unknown dtype ${escapeControl(JSON.stringify(t.dtype) ?? String(t.dtype))}`, where);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new CheckpointError('ERR_SHAPE', `shape must be an array of non-negative integers, got ${escapeControl(JSON.stringify(t.shape) ?? String(t.shape))}`, where);
    }
    const byteLength = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (!Number.isSafeInteger(byteLength)) throw new CheckpointError('ERR_SHAPE', `shape [${t.shape.join(',')}] is too large`, where);
    if ('data' in t) {
      checkData(t.data, byteLength, t, file, name);
    } else if (typeof (t as AsyncLazyTensor).load !== 'function') {
      throw new CheckpointError('ERR_INVALID_ARGUMENT', 'tensor needs either `data` (Uint8Array) or `load()`', where);
    }
    items.push({ name, tensor: t, byteLength });
  }
  return items;
}

function checkData(data: unknown, byteLength: number, t: TensorLayout, file: string, name: string): asserts data is Uint8Array {
  if (!(data instanceof Uint8Array)) {
    throw new CheckpointError('ERR_INVALID_ARGUMENT', 'data must be a Uint8Array of little-endian bytes (wrap a typed array `a` as new Uint8Array(a.buffer, a.byteOffset, a.byteLength))', { file, tensor: name });
  }
  if (data.byteLength !== byteLength) {
    throw new CheckpointError('ERR_SIZE_MISMATCH', `data has ${data.byteLength} bytes but ${t.dtype}[${t.shape.join(',')}] needs ${byteLength}`, { file, tensor: name });
  }
}


function unlinkQuietly(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    /* already gone */
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    /* ignore */
  }
}

function fsyncDirQuietly(dir: string): void {
  let fd = -1;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* not supported everywhere (e.g. Windows); best effort */
  } finally {
    if (fd >= 0) closeQuietly(fd);
  }
}

function writeFullySync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.byteLength) off += fs.writeSync(fd, data, off, Math.min(IO_CHUNK, data.byteLength - off));
}

async function writeFullyAsync(fh: fs.promises.FileHandle, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.byteLength) off += (await fh.write(data, off, Math.min(IO_CHUNK, data.byteLength - off))).bytesWritten;
}

/**
 * Writes header + tensors into a fresh temporary file next to `file`; returns
 * its path. On any failure the temporary file is removed and the error rethrown.
 */
function writeTempSync(file: string, header: Uint8Array, items: PlannedTensor<TensorInput>[], opts: WriteOptions): string {
  cleanStaleTempFiles(path.dirname(file), path.basename(file));
  const tmp = tempPathFor(file);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx');
  } catch (e) {
    throw ioError(file, `create temporary file ${tmp}`, e);
  }
  try {
    writeFullySync(fd, header);
    for (const item of items) {
      const t = item.tensor;
      const data = 'data' in t ? t.data : t.load();
      checkData(data, item.byteLength, t, file, item.name);
      writeFullySync(fd, data);
    }
    if (opts.fsync !== false) fs.fsyncSync(fd);
    fs.closeSync(fd);
  } catch (e) {
    closeQuietly(fd);
    unlinkQuietly(tmp);
    throw ioError(file, 'write', e);
  }
  return tmp;
}

/**
 * Creates `file`'s temporary (after removing stale ones), runs `body` on it, fsyncs and closes
 * it; on any failure the temporary is removed. Returns the temporary's path, for commitTemps.
 */
async function withTempFileAsync(file: string, opts: WriteOptions, body: (fh: fs.promises.FileHandle) => Promise<void>): Promise<string> {
  cleanStaleTempFiles(path.dirname(file), path.basename(file));
  const tmp = tempPathFor(file);
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(tmp, 'wx');
  } catch (e) {
    throw ioError(file, `create temporary file ${tmp}`, e);
  }
  try {
    await body(fh);
    if (opts.fsync !== false) await fh.sync();
    await fh.close();
  } catch (e) {
    await fh.close().catch(() => undefined);
    unlinkQuietly(tmp);
    // Typed errors (a bad tensor, a native read that failed) keep their class and message.
    throw e instanceof TangentError ? e : ioError(file, 'write', e);
  }
  return tmp;
}

function writeTempAsync(file: string, header: Uint8Array, items: PlannedTensor<AsyncTensorInput>[], opts: WriteOptions): Promise<string> {
  return withTempFileAsync(file, opts, async (fh) => {
    await writeFullyAsync(fh, header);
    for (const item of items) {
      const t = item.tensor;
      const data = 'data' in t ? t.data : await t.load();
      checkData(data, item.byteLength, t, file, item.name);
      await writeFullyAsync(fh, data);
    }
  });
}

/** Renames temporaries into place (in order); on failure removes the temporaries not yet renamed. */
function commitTemps(pairs: ReadonlyArray<readonly [tmp: string, dest: string]>, opts: WriteOptions): void {
  for (let i = 0; i < pairs.length; i++) {
    const [tmp, dest] = pairs[i]!;
    try {
      fs.renameSync(tmp, dest);
    } catch (e) {
      for (let j = i; j < pairs.length; j++) unlinkQuietly(pairs[j]![0]);
      throw ioError(dest, `rename ${tmp} into place`, e);
    }
  }
  if (opts.fsync !== false) {
    for (const dir of new Set(pairs.map(([, dest]) => path.dirname(dest)))) fsyncDirQuietly(dir);
  }
}

/**
 * Writes a safetensors file atomically: tensors in the given order with
 * contiguous offsets, header padded with spaces to a multiple of 8. All inputs
 * are validated before anything is written; a lazy tensor producing bytes of
 * the wrong size aborts the write. On failure, neither the output nor the
 * temporary file exists afterwards (a previous output at `file` is untouched).
 */
export function writeSafetensors(
  file: string,
  tensors: TensorEntries<TensorInput>,
  metadata?: Record<string, string>,
  opts: WriteOptions = {},
): void {
  const items = planTensors(file, tensors, metadata);
  const { bytes } = encodeHeader(items.map((i) => ({ name: i.name, dtype: i.tensor.dtype, shape: i.tensor.shape })), metadata);
  const tmp = writeTempSync(file, bytes, items, opts);
  commitTemps([[tmp, file]], opts);
}

/**
 * Writes a safetensors file whose tensor bytes `fill` writes itself, with positioned writes on the
 * open temporary file (`fd`) at the offsets given (absolute, in the order of `specs`): for native
 * code writing straight from its own buffers. Header, temporary name, fsync and rename as
 * {@link writeSafetensors}: if `fill` throws, neither the output nor the temporary file remains.
 */
export async function writeSafetensorsFilled(
  file: string,
  specs: ReadonlyArray<{ name: string; dtype: DType; shape: number[] }>,
  metadata: Record<string, string> | undefined,
  fill: (fd: number, offsets: number[]) => Promise<void>,
  opts: WriteOptions = {},
): Promise<void> {
  const items = planTensors(file, specs.map((sp) => [sp.name, { dtype: sp.dtype, shape: sp.shape, load: () => new Uint8Array(0) }] as const), metadata);
  const { bytes, dataLength } = encodeHeader(items.map((i) => ({ name: i.name, dtype: i.tensor.dtype, shape: i.tensor.shape })), metadata);
  const offsets: number[] = [];
  let at = bytes.length;
  for (const i of items) {
    offsets.push(at);
    at += i.byteLength;
  }
  const tmp = await withTempFileAsync(file, opts, async (fh) => {
    await writeFullyAsync(fh, bytes);
    await fh.truncate(bytes.length + dataLength);
    await fill(fh.fd, offsets);
  });
  commitTemps([[tmp, file]], opts);
}

/** Async {@link writeSafetensors}; lazy tensors may load asynchronously. */
export async function writeSafetensorsAsync(
  file: string,
  tensors: TensorEntries<AsyncTensorInput>,
  metadata?: Record<string, string>,
  opts: WriteOptions = {},
): Promise<void> {
  const items = planTensors(file, tensors, metadata);
  const { bytes } = encodeHeader(items.map((i) => ({ name: i.name, dtype: i.tensor.dtype, shape: i.tensor.shape })), metadata);
  const tmp = await writeTempAsync(file, bytes, items, opts);
  commitTemps([[tmp, file]], opts);
}

// ---------------------------------------------------------------------------
// Sharded checkpoints

/** Default index file name (Hugging Face convention). */
export const DEFAULT_INDEX_NAME = 'model.safetensors.index.json';

/** A validated `*.safetensors.index.json`. */
export interface ShardedIndex {
  /** Path of the index file. */
  indexFile: string;
  /** Directory holding the shards. */
  dir: string;
  /** The index's `metadata` object (e.g. `{ total_size: 123 }`; values are not necessarily strings). */
  metadata: Record<string, unknown>;
  /** Tensor name -> shard file name (relative to `dir`), in index order. */
  weightMap: Map<string, string>;
  /** Distinct shard file names in order of first appearance. */
  shards: string[];
}

/** `dir` -> `dir/model.safetensors.index.json` (or the only `*.safetensors.index.json` there); a file path is kept. */
function resolveIndexPath(dirOrIndex: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(dirOrIndex);
  } catch (e) {
    throw ioError(dirOrIndex, 'find sharded index', e);
  }
  if (!st.isDirectory()) return dirOrIndex;
  const def = path.join(dirOrIndex, DEFAULT_INDEX_NAME);
  if (fs.existsSync(def)) return def;
  const found = fs.readdirSync(dirOrIndex).filter((f) => f.endsWith('.safetensors.index.json'));
  if (found.length === 1) return path.join(dirOrIndex, found[0]!);
  throw new CheckpointError('ERR_SHARD', found.length === 0
    ? `no ${DEFAULT_INDEX_NAME} (nor any *.safetensors.index.json) in the directory`
    : `several index files in the directory (${found.join(', ')}); pass one explicitly`, { file: dirOrIndex });
}

/** Parses and checks the index file's JSON (not the shards). */
function parseIndexFile(indexFile: string): ShardedIndex {
  let bytes: Buffer;
  const fd = openForReading(indexFile);
  try {
    const size = fs.fstatSync(fd).size;
    if (size > DEFAULT_MAX_HEADER_BYTES) {
      throw new CheckpointError('ERR_HEADER_TOO_LARGE', `index is ${size} bytes, more than the ${DEFAULT_MAX_HEADER_BYTES}-byte limit of a header`, { file: indexFile });
    }
    bytes = fs.readFileSync(fd);
  } catch (e) {
    throw ioError(indexFile, 'read sharded index', e);
  } finally {
    fs.closeSync(fd);
  }
  const { value, nestedKeys } = parseJsonObject(bytes, indexFile, 'index', (key, p) => (p[0] === 'weight_map' && p.length === 1 ? key : undefined));
  const rawMeta = value['metadata'];
  if (rawMeta !== undefined && (typeof rawMeta !== 'object' || rawMeta === null || Array.isArray(rawMeta))) {
    throw new CheckpointError('ERR_SHARD', '"metadata" must be an object', { file: indexFile });
  }
  const wm = value['weight_map'];
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new CheckpointError('ERR_SHARD', '"weight_map" must be an object mapping tensor names to shard files', { file: indexFile });
  }
  const wmObj = wm as Record<string, unknown>;
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  const shardSet = new Set<string>();
  for (const name of nestedKeys.get('weight_map') ?? Object.keys(wmObj)) {
    const shard = wmObj[name];
    const where = { file: indexFile, tensor: name };
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new CheckpointError('ERR_SHARD', `weight_map value must be a shard file name, got ${escapeControl(JSON.stringify(shard) ?? String(shard))}`, where);
    }
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new CheckpointError('ERR_SHARD', `shard path ${quote(shard)} must be relative to the index directory, without ".."`, where);
    }
    weightMap.set(name, shard);
    if (!shardSet.has(shard)) {
      shardSet.add(shard);
      shards.push(shard);
    }
  }
  return {
    indexFile,
    dir: path.dirname(indexFile),
    metadata: { ...((rawMeta as Record<string, unknown> | undefined) ?? {}) },
    weightMap,
    shards,
  };
}

/**
 * Opens every shard lazily and checks it against the index: the shard exists
 * and is a valid safetensors file, holds every tensor the index assigns to it,
 * and no tensor the index assigns elsewhere (or does not list).
 * @returns the open readers, by shard name (caller closes)
 */
function openAndCheckShards(index: ShardedIndex, opts: ReadOptions): Map<string, SafetensorsFile> {
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of index.weightMap) {
    let list = byShard.get(shard);
    if (list === undefined) byShard.set(shard, (list = []));
    list.push(name);
  }
  const readers = new Map<string, SafetensorsFile>();
  try {
    for (const shard of index.shards) {
      const shardPath = path.join(index.dir, shard);
      const expected = byShard.get(shard)!;
      if (!fs.existsSync(shardPath)) {
        throw new CheckpointError('ERR_SHARD', `shard file is missing (listed in ${index.indexFile})`, { file: shardPath, tensor: expected[0]! });
      }
      const r = openSafetensors(shardPath, opts);
      readers.set(shard, r);
      for (const name of expected) {
        if (!r.has(name)) {
          throw new CheckpointError('ERR_SHARD', `not in this shard, although ${path.basename(index.indexFile)} maps it here`, { file: shardPath, tensor: name });
        }
      }
      for (const name of r.keys()) {
        const mapped = index.weightMap.get(name);
        if (mapped !== shard) {
          const why = mapped === undefined ? 'is not listed in the index weight_map' : `is mapped to shard ${quote(mapped)} by the index`;
          throw new CheckpointError('ERR_SHARD', `present in this shard but ${why}`, { file: shardPath, tensor: name });
        }
      }
    }
  } catch (e) {
    for (const r of readers.values()) r.close();
    throw e;
  }
  return readers;
}

/**
 * Reads `model.safetensors.index.json` (given the directory or the index path)
 * and validates it against the shards (headers only; pass `validateShards:
 * false` to check only the index JSON).
 */
export function readShardedIndex(dirOrIndex: string, opts: ReadOptions & { validateShards?: boolean } = {}): ShardedIndex {
  const index = parseIndexFile(resolveIndexPath(dirOrIndex));
  if (opts.validateShards !== false) {
    for (const r of openAndCheckShards(index, opts).values()) r.close();
  }
  return index;
}

/** A lazily-read sharded checkpoint. */
export class ShardedReader implements TensorReader {
  readonly index: ShardedIndex;
  private readonly readers: Map<string, SafetensorsFile>;
  private readonly order: string[];

  /** Use {@link openSharded}. */
  constructor(dirOrIndex: string, opts: ReadOptions = {}) {
    this.index = parseIndexFile(resolveIndexPath(dirOrIndex));
    this.readers = openAndCheckShards(this.index, opts);
    this.order = [...this.readers.values()].flatMap((r) => r.keys());
  }

  private reader(name: string): SafetensorsFile {
    const shard = this.index.weightMap.get(name);
    if (shard === undefined) throw notFound(name, this.index.indexFile);
    return this.readers.get(shard)!;
  }

  keys(): string[] {
    return this.order.slice();
  }

  has(name: string): boolean {
    return this.index.weightMap.has(name);
  }

  info(name: string): TensorInfo {
    return this.reader(name).info(name);
  }

  layout(): Map<string, TensorLayout> {
    return new Map([...this.readers.values()].flatMap((r) => [...r.layout()]));
  }

  read(name: string): RawTensor {
    return this.reader(name).read(name);
  }

  readAsync(name: string): Promise<RawTensor> {
    return this.reader(name).readAsync(name);
  }

  locate(name: string): TensorLocation {
    return this.reader(name).locate(name);
  }

  lazy(name: string): LazyTensor {
    return this.reader(name).lazy(name);
  }

  /** The `__metadata__` of each shard, by shard name. */
  shardMetadata(): Map<string, Record<string, string>> {
    return new Map([...this.readers].map(([s, r]) => [s, r.metadata]));
  }

  close(): void {
    for (const r of this.readers.values()) r.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens a sharded checkpoint lazily (validating it like {@link readShardedIndex}); close it when done. */
export function openSharded(dirOrIndex: string, opts: ReadOptions = {}): ShardedReader {
  return new ShardedReader(dirOrIndex, opts);
}

/**
 * Reads a whole sharded checkpoint: tensors (zero-copy views into one buffer
 * per shard) in shard order then file order, plus the validated index.
 */
export function readSharded(dirOrIndex: string, opts: ReadOptions = {}): { tensors: Map<string, RawTensor>; index: ShardedIndex } {
  const index = readShardedIndex(dirOrIndex, opts);
  const tensors = new Map<string, RawTensor>();
  for (const shard of index.shards) {
    for (const [name, t] of readSafetensors(path.join(index.dir, shard), opts).tensors) tensors.set(name, t);
  }
  return { tensors, index };
}

export interface ShardedWriteOptions extends WriteOptions {
  /**
   * Upper bound on the tensor bytes per shard (default 2e9). Tensors are packed
   * greedily in the given order; a tensor larger than the bound gets a shard of
   * its own. Header bytes are not counted (as in Hugging Face's sharding).
   */
  maxShardBytes?: number;
  /** `__metadata__` written into every shard. */
  metadata?: Record<string, string>;
  /** Extra entries of the index's `metadata` (`total_size` is always set). */
  indexMetadata?: Record<string, unknown>;
  /** File name prefix (default `"model"`): `<prefix>-00001-of-00003.safetensors`, `<prefix>.safetensors.index.json`. */
  prefix?: string;
}

export interface ShardedWriteResult {
  /** Path of the index file written. */
  indexFile: string;
  /** Paths of the shards written, in order. */
  shards: string[];
  /** Tensor name -> shard file name. */
  weightMap: Map<string, string>;
  /** Sum of the tensors' byte lengths (the index's `total_size`). */
  totalSize: number;
}

const DEFAULT_MAX_SHARD_BYTES = 2e9;

interface ShardPlan<T> {
  shardNames: string[];
  groups: PlannedTensor<T>[][];
  indexName: string;
  indexJson: string;
  weightMap: Map<string, string>;
  totalSize: number;
}

function planShards<T extends RawTensor | AsyncLazyTensor>(
  dir: string,
  tensors: TensorEntries<T>,
  opts: ShardedWriteOptions,
): ShardPlan<T> {
  const prefix = opts.prefix ?? 'model';
  const indexName = `${prefix}.safetensors.index.json`;
  const indexPath = path.join(dir, indexName);
  const max = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(max > 0)) throw new CheckpointError('ERR_INVALID_ARGUMENT', `maxShardBytes must be positive, got ${max}`, { file: indexPath });
  if (prefix.length === 0 || /[\\/]/.test(prefix)) {
    throw new CheckpointError('ERR_INVALID_ARGUMENT', `prefix must be a plain file name, got ${JSON.stringify(prefix)}`, { file: indexPath });
  }
  if (opts.indexMetadata !== undefined && (typeof opts.indexMetadata !== 'object' || opts.indexMetadata === null || Array.isArray(opts.indexMetadata))) {
    throw new CheckpointError('ERR_METADATA', 'indexMetadata must be an object', { file: indexPath });
  }
  const items = planTensors(indexPath, tensors, opts.metadata);
  const groups: PlannedTensor<T>[][] = [];
  let cur: PlannedTensor<T>[] = [];
  let curBytes = 0;
  for (const item of items) {
    if (cur.length > 0 && curBytes + item.byteLength > max) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(item);
    curBytes += item.byteLength;
  }
  if (cur.length > 0 || groups.length === 0) groups.push(cur);
  const n = groups.length;
  const pad = (i: number): string => String(i).padStart(5, '0');
  const shardNames = groups.map((_, i) => `${prefix}-${pad(i + 1)}-of-${pad(n)}.safetensors`);
  const weightMap = new Map<string, string>();
  groups.forEach((g, i) => g.forEach((item) => weightMap.set(item.name, shardNames[i]!)));
  const totalSize = items.reduce((s, i) => s + i.byteLength, 0);
  const meta = { ...(opts.indexMetadata ?? {}), total_size: totalSize };
  // Built by hand to keep weight_map in tensor order (JS objects hoist integer-like keys).
  const lines = [...weightMap].map(([k, v]) => `    ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  const indexJson = `{\n  "metadata": ${JSON.stringify(meta, null, 2).replace(/\n/g, '\n  ')},\n  "weight_map": {\n${lines.join(',\n')}\n  }\n}\n`;
  return { shardNames, groups, indexName, indexJson, weightMap, totalSize };
}

function headerFor(group: PlannedTensor<RawTensor | AsyncLazyTensor>[], metadata: Record<string, string> | undefined): Uint8Array {
  return encodeHeader(group.map((i) => ({ name: i.name, dtype: i.tensor.dtype, shape: i.tensor.shape })), metadata).bytes;
}

function writeSmallTempSync(file: string, text: string, opts: WriteOptions): string {
  const data = Buffer.from(text, 'utf8');
  return writeTempSync(file, data, [], opts);
}

/**
 * Writes a sharded checkpoint into `dir` (created if needed):
 * `<prefix>-0000i-of-0000N.safetensors` shards and `<prefix>.safetensors.index.json`.
 * Every file is first written under a temporary name; only when all are
 * complete are they renamed into place, shards first and the index last, so
 * the index never points at incomplete shards. A failure while writing leaves
 * no new file behind. (The renames themselves are not one atomic group, and
 * shards of a previous, differently-sized checkpoint in `dir` are not removed.)
 * Always writes an index, even for a single shard.
 */
export function writeSharded(dir: string, tensors: TensorEntries<TensorInput>, opts: ShardedWriteOptions = {}): ShardedWriteResult {
  const plan = planShards(dir, tensors, opts);
  try {
    makeDirectory(dir);
  } catch (e) {
    throw ioError(dir, 'create directory', e);
  }
  cleanStaleTempFiles(dir);
  const pairs: Array<[string, string]> = [];
  try {
    plan.groups.forEach((g, i) => {
      const dest = path.join(dir, plan.shardNames[i]!);
      pairs.push([writeTempSync(dest, headerFor(g, opts.metadata), g, opts), dest]);
    });
    const indexPath = path.join(dir, plan.indexName);
    pairs.push([writeSmallTempSync(indexPath, plan.indexJson, opts), indexPath]);
  } catch (e) {
    for (const [tmp] of pairs) unlinkQuietly(tmp);
    throw e;
  }
  commitTemps(pairs, opts);
  return { indexFile: path.join(dir, plan.indexName), shards: plan.shardNames.map((s) => path.join(dir, s)), weightMap: plan.weightMap, totalSize: plan.totalSize };
}

/**
 * The frame both async sharded writers share: the directory made and swept of stale temporaries,
 * each shard written to a temporary by `writeShard` (which returns its temporary's path), then the
 * index; all renamed into place at the end, or every temporary removed on failure.
 */
async function writeShardsAsync<T extends RawTensor | AsyncLazyTensor>(
  dir: string,
  plan: ShardPlan<T>,
  opts: ShardedWriteOptions,
  writeShard: (group: PlannedTensor<T>[], dest: string) => Promise<string>,
): Promise<ShardedWriteResult> {
  try {
    makeDirectory(dir);
  } catch (e) {
    throw ioError(dir, 'create directory', e);
  }
  cleanStaleTempFiles(dir);
  const pairs: Array<[string, string]> = [];
  try {
    for (let i = 0; i < plan.groups.length; i++) {
      const dest = path.join(dir, plan.shardNames[i]!);
      pairs.push([await writeShard(plan.groups[i]!, dest), dest]);
    }
    const indexPath = path.join(dir, plan.indexName);
    pairs.push([await writeTempAsync(indexPath, Buffer.from(plan.indexJson, 'utf8'), [], opts), indexPath]);
  } catch (e) {
    for (const [tmp] of pairs) unlinkQuietly(tmp);
    throw e;
  }
  commitTemps(pairs, opts);
  return { indexFile: path.join(dir, plan.indexName), shards: plan.shardNames.map((s) => path.join(dir, s)), weightMap: plan.weightMap, totalSize: plan.totalSize };
}

/** Async {@link writeSharded}; lazy tensors may load asynchronously. */
export async function writeShardedAsync(dir: string, tensors: TensorEntries<AsyncTensorInput>, opts: ShardedWriteOptions = {}): Promise<ShardedWriteResult> {
  return writeShardsAsync(dir, planShards(dir, tensors, opts), opts, (g, dest) => writeTempAsync(dest, headerFor(g, opts.metadata), g, opts));
}

/**
 * {@link writeShardedAsync} for tensor bytes that `fill` writes itself (native code, straight from
 * its own buffers): shards are planned from the specs alone, and for each shard `fill(fd, offsets,
 * first, file)` writes the tensors specs[first … first + offsets.length) with positioned writes at
 * the absolute offsets given, into the open temporary file. Temporary names, fsync, shards before
 * the index and the cleanup on failure as {@link writeShardedAsync}.
 */
export async function writeShardedFilled(
  dir: string,
  specs: ReadonlyArray<{ name: string; dtype: DType; shape: number[] }>,
  opts: ShardedWriteOptions,
  fill: (fd: number, offsets: number[], first: number, file: string) => Promise<void>,
): Promise<ShardedWriteResult> {
  const plan = planShards(dir, specs.map((sp) => [sp.name, { dtype: sp.dtype, shape: sp.shape, load: async () => new Uint8Array(0) }] as const), opts);
  let first = 0;
  return writeShardsAsync(dir, plan, opts, async (g, dest) => {
    const header = headerFor(g, opts.metadata);
    const offsets: number[] = [];
    let at = header.length;
    for (const item of g) {
      offsets.push(at);
      at += item.byteLength;
    }
    const start = first;
    first += g.length;
    return withTempFileAsync(dest, opts, async (fh) => {
      await writeFullyAsync(fh, header);
      await fh.truncate(at);
      await fill(fh.fd, offsets, start, dest);
    });
  });
}

// ---------------------------------------------------------------------------
// Layout comparison

/**
 * Anything with named tensor layouts: a Map or array of `[name, {dtype, shape}]`
 * (e.g. `readSafetensors(f).tensors`), a `{tensors}` object as returned by the
 * readers, or a {@link TensorReader}.
 */
export type LayoutSource =
  | ReadonlyMap<string, TensorLayout>
  | Iterable<readonly [string, TensorLayout]>
  | { tensors: ReadonlyMap<string, TensorLayout> }
  | { layout(): ReadonlyMap<string, TensorLayout> };

/** Result of {@link compareStateDicts}; lists follow the order of `a` (then `b`). */
export interface StateDictDiff {
  onlyInA: string[];
  onlyInB: string[];
  shapeMismatches: Array<{ key: string; shapeA: number[]; shapeB: number[] }>;
  dtypeMismatches: Array<{ key: string; dtypeA: DType; dtypeB: DType }>;
  /** True when all four lists are empty. */
  same: boolean;
}

function toLayoutMap(src: LayoutSource): ReadonlyMap<string, TensorLayout> {
  if (src instanceof Map) return src as ReadonlyMap<string, TensorLayout>;
  const obj = src as { layout?: unknown; tensors?: unknown };
  if (typeof obj.layout === 'function') return (src as { layout(): ReadonlyMap<string, TensorLayout> }).layout();
  if (obj.tensors instanceof Map) return obj.tensors as ReadonlyMap<string, TensorLayout>;
  return new Map(src as Iterable<readonly [string, TensorLayout]>);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Structured difference of two state dicts' names, shapes and dtypes (values are not compared). */
export function compareStateDicts(a: LayoutSource, b: LayoutSource): StateDictDiff {
  const ma = toLayoutMap(a);
  const mb = toLayoutMap(b);
  const diff: StateDictDiff = { onlyInA: [], onlyInB: [], shapeMismatches: [], dtypeMismatches: [], same: true };
  for (const [key, ta] of ma) {
    const tb = mb.get(key);
    if (tb === undefined) {
      diff.onlyInA.push(key);
      continue;
    }
    if (!sameShape(ta.shape, tb.shape)) diff.shapeMismatches.push({ key, shapeA: [...ta.shape], shapeB: [...tb.shape] });
    if (ta.dtype !== tb.dtype) diff.dtypeMismatches.push({ key, dtypeA: ta.dtype, dtypeB: tb.dtype });
  }
  for (const key of mb.keys()) if (!ma.has(key)) diff.onlyInB.push(key);
  diff.same = diff.onlyInA.length + diff.onlyInB.length + diff.shapeMismatches.length + diff.dtypeMismatches.length === 0;
  return diff;
}

export interface AssertSameLayoutOptions {
  /** Names of the two sides in the message (default "a" and "b"). */
  nameA?: string;
  nameB?: string;
  /** Items listed per category before "... and N more" (default 10). */
  maxListed?: number;
  /** Do not treat dtype differences as mismatches (e.g. merging bf16 into f32). */
  ignoreDtype?: boolean;
}

function listTruncated(items: string[], max: number): string {
  const shown = items.slice(0, max).join(', ');
  return items.length > max ? `${shown}, ... and ${items.length - max} more` : shown;
}

/**
 * Throws a CheckpointError (code ERR_KEY_MISMATCH) describing every difference
 * unless `a` and `b` have the same tensor names, shapes and (unless
 * `ignoreDtype`) dtypes. Long lists are truncated with a count.
 */
export function assertSameLayout(a: LayoutSource, b: LayoutSource, opts: AssertSameLayoutOptions = {}): StateDictDiff {
  const diff = compareStateDicts(a, b);
  const nameA = opts.nameA ?? 'a';
  const nameB = opts.nameB ?? 'b';
  const max = opts.maxListed ?? 10;
  const dtypeMismatches = opts.ignoreDtype === true ? [] : diff.dtypeMismatches;
  const lines: string[] = [];
  if (diff.onlyInA.length > 0) lines.push(`${diff.onlyInA.length} tensor(s) only in ${nameA}: ${listTruncated(diff.onlyInA, max)}`);
  if (diff.onlyInB.length > 0) lines.push(`${diff.onlyInB.length} tensor(s) only in ${nameB}: ${listTruncated(diff.onlyInB, max)}`);
  if (diff.shapeMismatches.length > 0) {
    const items = diff.shapeMismatches.map((m) => `${m.key} [${m.shapeA.join(',')}] vs [${m.shapeB.join(',')}]`);
    lines.push(`${items.length} shape mismatch(es) (${nameA} vs ${nameB}): ${listTruncated(items, max)}`);
  }
  if (dtypeMismatches.length > 0) {
    const items = dtypeMismatches.map((m) => `${m.key} ${m.dtypeA} vs ${m.dtypeB}`);
    lines.push(`${items.length} dtype mismatch(es) (${nameA} vs ${nameB}): ${listTruncated(items, max)}`);
  }
  if (lines.length > 0) {
    const first = diff.onlyInA[0] ?? diff.onlyInB[0] ?? diff.shapeMismatches[0]?.key ?? dtypeMismatches[0]?.key;
    throw new CheckpointError('ERR_KEY_MISMATCH', `tensor layouts of ${nameA} and ${nameB} differ:\n  ${lines.join('\n  ')}`, first !== undefined ? { tensor: first } : {});
  }
  return diff;
}

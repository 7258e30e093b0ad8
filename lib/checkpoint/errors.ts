/**
 * Error type shared by the checkpoint readers and writers.
 *
 * Every failure raised by `lib/checkpoint/*` is a {@link CheckpointError} with a
 * stable machine-readable {@link CheckpointError.code}, the offending file and,
 * where one is involved, the tensor name. The human-readable message always
 * starts with the file and tensor so that it can be shown as-is:
 *
 *     /ckpt/model.safetensors: tensor "blocks.0.attn.qkv.weight": data_offsets [0,12] hold 12 bytes but float32[2,3] needs 24
 */

/** Stable error codes. */
export type CheckpointErrorCode =
  /** The file could not be opened/read/written (the fs error is the `cause`). */
  | 'ERR_IO'
  /** File shorter than 8 bytes, or a tensor's data extends past the end of the file. */
  | 'ERR_TRUNCATED'
  /** The 8-byte header length points past the end of the file. */
  | 'ERR_HEADER_BOUNDS'
  /** The header length exceeds the configured maximum (100 MB by default). */
  | 'ERR_HEADER_TOO_LARGE'
  /** The header (or an index file) is not valid UTF-8 JSON, or not a JSON object. */
  | 'ERR_JSON'
  /** The same key appears twice in one JSON object of a header or index. */
  | 'ERR_DUPLICATE_KEY'
  /** A tensor entry is not an object or lacks `dtype` / `shape` / `data_offsets`. */
  | 'ERR_SCHEMA'
  /** Unknown or unsupported dtype. */
  | 'ERR_DTYPE'
  /** Shape is not an array of non-negative integers. */
  | 'ERR_SHAPE'
  /** `data_offsets` is not a pair of non-negative integers with begin <= end. */
  | 'ERR_OFFSETS'
  /** Two tensors' byte ranges overlap. */
  | 'ERR_OVERLAP'
  /** The data section has bytes not covered by any tensor (a hole), when holes are not allowed. */
  | 'ERR_GAP'
  /** Byte count differs from product(shape) x dtype size. */
  | 'ERR_SIZE_MISMATCH'
  /** `__metadata__` is not a string -> string map. */
  | 'ERR_METADATA'
  /** A float tensor contains NaN or +/-Infinity (only with `nonFinite: 'error'`). */
  | 'ERR_NON_FINITE'
  /** Two checkpoints do not have the same tensor names / shapes / dtypes. */
  | 'ERR_KEY_MISMATCH'
  /** Sharded checkpoint index inconsistent with its shards (missing shard, tensor in the wrong shard, ...). */
  | 'ERR_SHARD'
  /** File larger than the largest Buffer Node can allocate (use the lazy reader). */
  | 'ERR_FILE_TOO_LARGE'
  /** A tensor name asked of a reader does not exist. */
  | 'ERR_NOT_FOUND'
  /** Bad argument given to a writer (non-Uint8Array data, reserved name, ...). */
  | 'ERR_INVALID_ARGUMENT'
  /**
   * A reader limit was reached before allocating: bytes a record would inflate to, bytes a view
   * would materialize, pickle size, nesting depth (see docs/security.md).
   */
  | 'ERR_LIMIT';

export interface CheckpointErrorOptions {
  /** The file (or index file) concerned. */
  file?: string;
  /** The tensor concerned, if any. */
  tensor?: string;
  /** Underlying error (e.g. an fs error). */
  cause?: unknown;
}

/** Formats `"<file>: tensor \"<name>\": <detail>"`, omitting the absent parts. */
function formatMessage(detail: string, opts: CheckpointErrorOptions): string {
  let prefix = '';
  if (opts.file !== undefined) prefix += `${opts.file}: `;
  if (opts.tensor !== undefined) prefix += `tensor ${quote(opts.tensor)}: `;
  return prefix + detail;
}

import * as fs from 'node:fs';
import { TangentError } from '../errors';
import { quote } from './escape';

/** Any validation or I/O failure while reading or writing checkpoints. */
export class CheckpointError extends TangentError {
  override name = 'CheckpointError';
  /** Stable machine-readable code. */
  override readonly code: CheckpointErrorCode;
  /** The file concerned, when there is one. */
  readonly file?: string;
  /** The tensor concerned, when there is one. */
  readonly tensor?: string;
  /** The message without the file/tensor prefix. */
  readonly detail: string;

  constructor(code: CheckpointErrorCode, detail: string, opts: CheckpointErrorOptions = {}) {
    super(formatMessage(detail, opts));
    if (opts.cause !== undefined) (this as { cause?: unknown }).cause = opts.cause;
    this.code = code;
    this.detail = detail;
    if (opts.file !== undefined) this.file = opts.file;
    if (opts.tensor !== undefined) this.tensor = opts.tensor;
  }
}

/** Wraps an fs error (keeping it as `cause`), passing CheckpointErrors through. */
export function ioError(file: string, action: string, cause: unknown): CheckpointError {
  if (cause instanceof CheckpointError) return cause;
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new CheckpointError('ERR_IO', `cannot ${action}: ${reason}`, { file, cause });
}

const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0);

function notRegular(file: string, st: fs.Stats): CheckpointError {
  const kind = st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO (named pipe)' : st.isSocket() ? 'a socket'
    : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : 'not a regular file';
  return new CheckpointError('ERR_IO', `cannot read a checkpoint from ${kind}: only regular files are read`, { file });
}

/**
 * Opens a checkpoint file for reading; an fs failure becomes CheckpointError ERR_IO naming it.
 * Only regular files are accepted: the open is non-blocking (a FIFO without a writer, or a device,
 * would otherwise block `open()` or `read()` forever) and the opened descriptor is checked with
 * fstat, so a path swapped between a stat and the open cannot slip through.
 */
export function openForReading(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_FLAGS);
  } catch (e) {
    throw ioError(file, 'open file', e);
  }
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    throw ioError(file, 'stat file', e);
  }
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw notRegular(file, st);
  }
  return fd;
}

/** {@link openForReading} with a promise FileHandle (the open runs on the thread pool). */
export async function openForReadingAsync(file: string): Promise<fs.promises.FileHandle> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, OPEN_FLAGS);
  } catch (e) {
    throw ioError(file, 'open file', e);
  }
  let st: fs.Stats;
  try {
    st = await fh.stat();
  } catch (e) {
    await fh.close();
    throw ioError(file, 'stat file', e);
  }
  if (!st.isFile()) {
    await fh.close();
    throw notRegular(file, st);
  }
  return fh;
}

/** Throws ERR_IO unless `file` (after symlinks) is a regular file; never opens it. */
export function assertRegularFile(file: string): fs.Stats {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw ioError(file, 'stat file', e);
  }
  if (!st.isFile()) throw notRegular(file, st);
  return st;
}

/**
 * PyTorch archives as data, in TypeScript: `torch.save` checkpoints in the zip format
 * (torch >= 1.6) holding a state dict, read and written, and the parameters and buffers of
 * TorchScript archives (`torch.jit.save`), read without running any of their code.
 *
 * Why: libtorch's C++ `torch::pickle_load` cannot read what Python's
 * `torch.save(model.state_dict())` writes (`collections.OrderedDict`, SETITEM, arbitrary archive
 * names), and `torch::jit::load` executes the archive's code (`__setstate__`, class
 * definitions): neither may touch a file from a stranger.
 *
 * Layout of such a file (a zip archive, records normally STORED):
 *
 *     <archive>/data.pkl      pickle (protocol 2) of the object
 *     <archive>/data/<key>    raw little-endian bytes of each storage
 *     <archive>/version       "3\n"
 *     <archive>/byteorder     "little" (newer torch)
 *     <archive>/code/...      TorchScript only: the program (never read here)
 *     <archive>/constants.pkl TorchScript only: tensor constants of the code (not parameters)
 *
 * The container is `zip.ts`, the pickle VM `pickle.ts`; this file holds what connects them and
 * its one limit: the bytes materialized for tensor views (see {@link readTorchCheckpoint}).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { DTYPE_BYTES, RawTensor, isDType, numel, shapeProblem } from './dtype';
import { CheckpointError, ioError, openForReading } from './errors';
import { quote } from './escape';
import { PyDict, PyObject, StorageRef, TensorView, Unpickler, describe, encodeStateDictPickle, keyRepr } from './pickle';
import { cleanStaleTempFiles, tempPathFor } from './tempfiles';
import { DEFAULT_MAX_DEFLATE_RATIO, MAX_RECORD, ZipReader, ZipWriter, type ZipEntry } from './zip';

// ---------------------------------------------------------------------------
// Public API

/** Result of {@link readTorchCheckpoint} and {@link readTorchScriptTensors}. */
export interface TorchCheckpoint {
  /** Tensors in file order. Contiguous tensors covering a whole storage are views of the storage buffer. */
  tensors: Map<string, RawTensor>;
  /** The top folder of the zip archive (`archive`, or the file stem for older torch). */
  archiveName: string;
}

/** Limits of the readers (defaults in docs/security.md). */
export interface TorchReadOptions {
  /** Largest data.pkl accepted, in bytes (inflated). Default 64 MiB. */
  maxPickleBytes?: number;
  /**
   * Largest compression ratio of a DEFLATE storage record above 1 MiB (torch.save never
   * compresses; zeros compress 1000:1, weights about 1.1:1). Default 100; Infinity to allow any.
   */
  maxDeflateRatio?: number;
}

export { DEFAULT_MAX_DEFLATE_RATIO };

/** Options of {@link writeTorchCheckpoint}. */
export interface TorchWriteOptions {
  /** Top folder of the archive; default `archive` (what torch >= 2.0 writes). */
  archiveName?: string;
  /** Write zip64 structures even when not needed (testing interoperability). */
  forceZip64?: boolean;
}

export const DEFAULT_MAX_PICKLE_BYTES = 64 * 1024 * 1024;
/**
 * Bytes that tensor views may materialize beyond the bytes of the storages the file holds:
 * views that repeat elements (stride 0, overlapping strides, the same storage viewed many times)
 * are refused past it, before allocating.
 */
export const VIEW_SLACK_BYTES = 16 * 1024 * 1024;

/**
 * Reads a `torch.save` zip checkpoint holding a state dict (a dict / OrderedDict of tensors,
 * possibly wrapped as `{"state_dict": ...}` or `{"model": ...}`).
 *
 * Memory is bounded by what the file declares: each storage record must hold exactly the bytes
 * its pickle entry declares (checked before it is read or inflated), data.pkl is at most
 * `maxPickleBytes`, and the copies made for strided or partial views may not exceed the storage
 * bytes read plus {@link VIEW_SLACK_BYTES}.
 *
 * @throws CheckpointError ERR_IO (unreadable file, not a zip, legacy format, corrupt record, a
 *   TorchScript archive), ERR_TRUNCATED, ERR_OVERLAP (zip records sharing bytes), ERR_SCHEMA
 *   (unsupported pickle content, non-tensor value, unknown global), ERR_DTYPE, ERR_DUPLICATE_KEY,
 *   ERR_SIZE_MISMATCH, ERR_LIMIT.
 */
export function readTorchCheckpoint(file: string, opts: TorchReadOptions = {}): TorchCheckpoint {
  return withArchive(file, opts, (a) => {
    if (a.torchScript) {
      throw new CheckpointError('ERR_SCHEMA',
        'this is a TorchScript archive (torch.jit.save), not a torch.save state dict; read its tensors with readTorchScriptTensors '
        + '(loadStateDict does), or save model.state_dict() with torch.save', { file });
    }
    const root = a.unpickle(false);
    return { tensors: a.materializeAll(stateDictEntries(file, root)), archiveName: a.archiveName };
  });
}

/**
 * The parameters and buffers of a TorchScript archive, read as data: data.pkl is unpickled by
 * the same allow-listed VM, module classes become inert objects holding their attribute dicts,
 * and every tensor attribute is returned under its dotted path (`fc1.weight`), parameters
 * (requires_grad) first, then the other tensors, each group in file order. The archive's code is
 * never read or run; a module whose state is not an attribute dict (a custom `__getstate__`) is
 * refused with ERR_SCHEMA pointing to `Model.load`, which runs the code.
 */
export function readTorchScriptTensors(file: string, opts: TorchReadOptions = {}): TorchCheckpoint {
  return withArchive(file, opts, (a) => {
    if (!a.torchScript) {
      throw new CheckpointError('ERR_SCHEMA', 'not a TorchScript archive (no code/ or constants.pkl): read it with readTorchCheckpoint', { file });
    }
    const root = a.unpickle(true);
    return { tensors: a.materializeAll(moduleEntries(file, root)), archiveName: a.archiveName };
  });
}

/** Whether `file` is a zip archive holding TorchScript (`code/` or `constants.pkl` next to data.pkl). */
export function isTorchScriptArchive(file: string): boolean {
  return withArchive(file, {}, (a) => a.torchScript);
}

/**
 * Writes `tensors` the way `torch.save(OrderedDict(...))` does: a STORED zip
 * with `archive/data.pkl` (pickle protocol 2), one 64-byte-aligned record
 * `archive/data/<i>` per tensor, `archive/version` and `archive/byteorder`.
 * The file is written to a temporary file in the same directory, then renamed;
 * temporaries left there by killed writers are removed first.
 *
 * @throws CheckpointError ERR_INVALID_ARGUMENT, ERR_DUPLICATE_KEY, ERR_SHAPE, ERR_DTYPE, ERR_SIZE_MISMATCH, ERR_IO.
 */
export function writeTorchCheckpoint(
  file: string,
  tensors: Map<string, RawTensor> | Iterable<[string, RawTensor]>,
  options: TorchWriteOptions = {},
): void {
  const archive = options.archiveName ?? 'archive';
  if (archive === '' || /[\/\\\0]/.test(archive)) {
    throw new CheckpointError('ERR_INVALID_ARGUMENT', `invalid archive name ${quote(archive)}`, { file });
  }
  // Validate everything before touching the disk.
  const items: Array<[string, RawTensor]> = [];
  const seen = new Set<string>();
  for (const entry of tensors) {
    const [name, t] = entry;
    if (typeof name !== 'string') {
      throw new CheckpointError('ERR_INVALID_ARGUMENT', `tensor names must be strings, got ${typeof name}`, { file });
    }
    if (seen.has(name)) throw new CheckpointError('ERR_DUPLICATE_KEY', 'duplicate tensor name', { file, tensor: name });
    seen.add(name);
    validateTensor(file, name, t);
    items.push([name, t]);
  }
  const pickle = encodeStateDictPickle(items);

  const dir = path.dirname(file);
  cleanStaleTempFiles(dir, path.basename(file));
  const tmp = tempPathFor(file);
  let fd: number | undefined;
  try {
    try {
      fd = fs.openSync(tmp, 'wx');
    } catch (e) {
      throw ioError(file, `create temporary file ${tmp}`, e);
    }
    const zw = new ZipWriter(file, fd, options.forceZip64 === true);
    zw.add(`${archive}/data.pkl`, pickle);
    items.forEach(([, t], i) => zw.add(`${archive}/data/${i}`, t.data));
    zw.add(`${archive}/version`, Buffer.from('3\n'));
    zw.add(`${archive}/byteorder`, Buffer.from('little'));
    zw.finish();
    try {
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fd = undefined;
      fs.renameSync(tmp, file);
    } catch (e) {
      throw ioError(file, 'write file', e);
    }
  } catch (e) {
    if (fd !== undefined) {
      try { fs.closeSync(fd); } catch { /* ignore */ }
    }
    try { fs.unlinkSync(tmp); } catch { /* ignore */ }
    throw e;
  }
}

// ---------------------------------------------------------------------------
// Archive access: data.pkl, storages, views

/** Recognises what a non-zip file is, for a helpful message. */
function notZipError(file: string, fd: number, size: number): CheckpointError {
  const head = Buffer.alloc(Math.min(size, 2));
  fs.readSync(fd, head, 0, head.length, 0);
  if (head.length >= 2 && head[0] === 0x80 && head[1]! <= 5) {
    return new CheckpointError('ERR_IO',
      'this is a legacy (non-zip) torch.save file (torch < 1.6 or _use_new_zipfile_serialization=False), which is not supported; '
      + 're-save it with torch.save from torch >= 1.6', { file });
  }
  if (size >= 263) {
    const tar = Buffer.alloc(5);
    fs.readSync(fd, tar, 0, 5, 257);
    if (tar.toString('latin1') === 'ustar') {
      return new CheckpointError('ERR_IO', 'this is a legacy tar-format torch.save file (torch < 0.4), which is not supported', { file });
    }
  }
  return new CheckpointError('ERR_IO', 'not a torch.save zip checkpoint (no zip signature at the start of the file)', { file });
}

function withArchive<T>(file: string, opts: TorchReadOptions, body: (a: Archive) => T): T {
  const fd = openForReading(file);
  try {
    let size: number;
    const head = Buffer.alloc(4);
    try {
      size = fs.fstatSync(fd).size;
      fs.readSync(fd, head, 0, Math.min(4, size), 0);
    } catch (e) {
      throw ioError(file, 'read file', e);
    }
    if (!ZipReader.isZip(head)) throw notZipError(file, fd, size);
    return body(new Archive(file, new ZipReader(file, fd), opts));
  } finally {
    try { fs.closeSync(fd); } catch { /* ignore */ }
  }
}

class Archive {
  readonly prefix: string;
  readonly archiveName: string;
  readonly torchScript: boolean;
  private readonly pkl: ZipEntry;
  private readonly maxPickleBytes: number;
  private readonly maxDeflateRatio: number;
  /** Storage bytes by key, read on first use. */
  private readonly storages = new Map<string, { ref: StorageRef; bytes: Uint8Array }>();
  private storageBytes = 0;
  private copiedBytes = 0;

  constructor(private readonly file: string, private readonly zip: ZipReader, opts: TorchReadOptions) {
    this.maxPickleBytes = opts.maxPickleBytes ?? DEFAULT_MAX_PICKLE_BYTES;
    this.maxDeflateRatio = opts.maxDeflateRatio ?? DEFAULT_MAX_DEFLATE_RATIO;
    const { order, entries } = zip;
    const candidates = order.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    let chosen: string | undefined;
    if (candidates.length === 1) chosen = candidates[0];
    else if (candidates.length > 1) {
      // torch takes the archive name from the first record.
      const first = order[0]!;
      const top = first.slice(0, first.indexOf('/') + 1);
      chosen = candidates.find((c) => c.startsWith(top) && top !== '') ?? candidates[0];
    }
    if (chosen === undefined) {
      throw new CheckpointError('ERR_SCHEMA', 'zip archive has no <archive>/data.pkl record: not a torch.save checkpoint', { file });
    }
    this.prefix = chosen.slice(0, chosen.length - 'data.pkl'.length);
    this.archiveName = this.prefix.slice(0, -1);
    this.pkl = entries.get(chosen)!;
    // Decided from the central directory's entry names, never from file contents (a tensor
    // named "x/code/y" inside data.pkl is not TorchScript).
    this.torchScript = entries.has(`${this.prefix}constants.pkl`) || order.some((n) => n.startsWith(`${this.prefix}code/`));
  }

  unpickle(torchScript: boolean): unknown {
    const bytes = this.zip.read(this.pkl, this.maxPickleBytes, `${quote(this.pkl.name)} (the pickle)`);
    return new Unpickler(this.file, bytes, { torchScript, record: 'data.pkl' }).load();
  }

  private fail(code: 'ERR_SCHEMA' | 'ERR_SIZE_MISMATCH' | 'ERR_LIMIT', detail: string, tensor: string): never {
    throw new CheckpointError(code, detail, { file: this.file, tensor });
  }

  /** The bytes of storage `ref`, exactly as many as it declares (refused before reading otherwise). */
  private storage(ref: StorageRef, tensor: string): Uint8Array {
    const have = this.storages.get(ref.key);
    if (have !== undefined) {
      if (have.ref.dtype !== ref.dtype || have.ref.numel !== ref.numel) {
        this.fail('ERR_SCHEMA', `storage ${quote(ref.key)} is declared as ${ref.numel} ${ref.dtype} here and as ${have.ref.numel} ${have.ref.dtype} elsewhere`, tensor);
      }
      return have.bytes;
    }
    const name = `${this.prefix}data/${ref.key}`;
    const entry = this.zip.entries.get(name);
    if (entry === undefined) this.fail('ERR_SCHEMA', `storage record ${quote(name)} is missing from the archive`, tensor);
    const need = ref.nbytes;
    if (!Number.isSafeInteger(need) || entry.size !== need) {
      this.fail('ERR_SIZE_MISMATCH', `storage record ${name} holds ${entry.size} bytes but ${ref.numel} ${ref.dtype} elements need ${need}`, tensor);
    }
    if (need > MAX_RECORD) this.fail('ERR_LIMIT', `storage record ${name} is ${need} bytes, larger than the ${MAX_RECORD}-byte limit of one record`, tensor);
    let bytes: Uint8Array;
    try {
      bytes = this.zip.read(entry, need, `storage record ${quote(name)}`, this.maxDeflateRatio);
    } catch (e) {
      // Name the tensor that needed the record, too.
      if (e instanceof CheckpointError && e.tensor === undefined) throw new CheckpointError(e.code, e.detail, { file: this.file, tensor, cause: e });
      throw e;
    }
    this.storages.set(ref.key, { ref, bytes });
    this.storageBytes += bytes.length;
    return bytes;
  }

  /** Charges `bytes` of copies to the budget (before allocating). */
  private charge(bytes: number, v: TensorView, tensor: string): void {
    if (this.copiedBytes + bytes > this.storageBytes + VIEW_SLACK_BYTES) {
      this.fail('ERR_LIMIT',
        `tensor view (offset ${v.offset}, size [${v.size.join(',')}], stride [${v.stride.join(',')}]) would materialize ${bytes} bytes from a `
        + `${v.storage.nbytes}-byte storage; views are copied only up to the ${this.storageBytes} storage bytes the file holds plus `
        + `${VIEW_SLACK_BYTES} (views that repeat elements, such as stride-0 expansions, are refused past that)`, tensor);
    }
    this.copiedBytes += bytes;
  }

  /** A contiguous RawTensor from a (possibly strided, offset) view of a storage. */
  materialize(name: string, v: TensorView): RawTensor {
    const s = v.storage;
    const { offset, size, stride } = v;
    const esize = DTYPE_BYTES[s.dtype];
    const shape = [...size];
    const n = numel(size);
    const big = shapeProblem(size, esize);
    if (big) this.fail('ERR_LIMIT', `tensor ${big}`, name);
    if (n === 0) return { dtype: s.dtype, shape, data: new Uint8Array(0) };
    let maxIndex = offset;
    for (let i = 0; i < size.length; i++) maxIndex += (size[i]! - 1) * stride[i]!;
    if (!Number.isSafeInteger(maxIndex) || maxIndex >= s.numel) {
      this.fail('ERR_SCHEMA', `tensor view (offset ${offset}, size [${size.join(',')}], stride [${stride.join(',')}]) reaches element ${maxIndex} of a ${s.numel}-element storage`, name);
    }
    const bytes = this.storage(s, name);
    // Contiguous (row-major, ignoring size-1 dims)?
    let contiguous = true;
    let expected = 1;
    for (let i = size.length - 1; i >= 0; i--) {
      if (size[i] === 1) continue;
      if (stride[i] !== expected) { contiguous = false; break; }
      expected *= size[i]!;
    }
    if (contiguous) {
      const begin = offset * esize;
      const end = begin + n * esize;
      // The whole storage: share it (zero-copy). A part of it: copy, so that a
      // small view does not keep a large storage alive.
      if (begin === 0 && end === bytes.length) return { dtype: s.dtype, shape, data: bytes };
      this.charge(end - begin, v, name);
      return { dtype: s.dtype, shape, data: bytes.slice(begin, end) };
    }
    this.charge(n * esize, v, name);
    // Strided copy; rows along a unit-stride last dim are copied at once.
    const out = new Uint8Array(n * esize);
    const nd = size.length;
    const rowLen = stride[nd - 1] === 1 ? size[nd - 1]! : 1;
    const outerDims = rowLen === 1 ? nd : nd - 1;
    const idx = new Array<number>(outerDims).fill(0);
    const rowBytes = rowLen * esize;
    let o = 0;
    for (;;) {
      let src = offset;
      for (let i = 0; i < outerDims; i++) src += idx[i]! * stride[i]!;
      const b = src * esize;
      if (rowBytes === esize) {
        for (let k = 0; k < esize; k++) out[o + k] = bytes[b + k]!;
      } else {
        out.set(bytes.subarray(b, b + rowBytes), o);
      }
      o += rowBytes;
      let d = outerDims - 1;
      while (d >= 0) {
        if (++idx[d]! < size[d]!) break;
        idx[d] = 0;
        d--;
      }
      if (d < 0) break;
    }
    return { dtype: s.dtype, shape, data: out };
  }

  materializeAll(entries: Array<[string, TensorView]>): Map<string, RawTensor> {
    const out = new Map<string, RawTensor>();
    for (const [name, v] of entries) out.set(name, this.materialize(name, v));
    return out;
  }
}

/** The unpickled root of a torch.save file -> (name, view) pairs (unwrapping `state_dict` / `model` wrappers). */
function stateDictEntries(file: string, root: unknown): Array<[string, TensorView]> {
  if (!(root instanceof PyDict)) {
    throw new CheckpointError('ERR_SCHEMA', `data.pkl holds a ${describe(root)}, not a dict of tensors`, { file });
  }
  let d = root;
  const allTensors = (x: PyDict): boolean => [...x.map.values()].every((v) => v instanceof TensorView);
  if (!allTensors(d)) {
    for (const wrapper of ['state_dict', 'model']) {
      const inner = d.map.get(wrapper);
      if (inner instanceof PyDict) { d = inner; break; }
    }
  }
  const out: Array<[string, TensorView]> = [];
  for (const [k, v] of d.map) {
    if (typeof k !== 'string') {
      throw new CheckpointError('ERR_SCHEMA', `state dict key ${keyRepr(k)} is not a string`, { file });
    }
    if (!(v instanceof TensorView)) {
      throw new CheckpointError('ERR_SCHEMA', `value is a ${describe(v)}, not a tensor`, { file, tensor: k });
    }
    out.push([k, v]);
  }
  return out;
}

/** Module nesting deeper than this in a TorchScript archive is refused. */
const MAX_MODULE_DEPTH = 64;

/** The tensor attributes of a TorchScript module tree, by dotted path: parameters first, then the rest. */
function moduleEntries(file: string, root: unknown): Array<[string, TensorView]> {
  if (!(root instanceof PyObject)) {
    throw new CheckpointError('ERR_SCHEMA', `data.pkl of a TorchScript archive holds a ${describe(root)}, not a module object`, { file });
  }
  const params: Array<[string, TensorView]> = [];
  const others: Array<[string, TensorView]> = [];
  const names = new Set<string>();
  const seen = new Set<PyObject>();
  const walk = (obj: PyObject, prefix: string, depth: number): void => {
    if (depth > MAX_MODULE_DEPTH) {
      throw new CheckpointError('ERR_LIMIT', `modules nest deeper than ${MAX_MODULE_DEPTH} levels (at ${quote(prefix)})`, { file });
    }
    if (seen.has(obj)) return; // a module shared under two names: listed once, like named_parameters()
    seen.add(obj);
    if (obj.state === undefined) {
      throw new CheckpointError('ERR_SCHEMA', `module ${quote(prefix || '<root>')} of class ${quote(obj.cls.toString())} has no state`, { file });
    }
    for (const [k, v] of obj.state.map) {
      if (typeof k !== 'string') throw new CheckpointError('ERR_SCHEMA', `attribute name ${keyRepr(k)} is not a string`, { file });
      const name = prefix + k;
      if (v instanceof TensorView) {
        if (names.has(name)) throw new CheckpointError('ERR_DUPLICATE_KEY', 'two tensors have this name', { file, tensor: name });
        names.add(name);
        (v.requiresGrad ? params : others).push([name, v]);
      } else if (v instanceof PyObject) {
        walk(v, `${name}.`, depth + 1);
      }
      // Other attributes (training flags, ints, lists, None) are not tensors: skipped.
    }
  };
  walk(root, '', 0);
  return [...params, ...others];
}

// ---------------------------------------------------------------------------
// Writing

function validateTensor(file: string, name: string, t: RawTensor): void {
  if (t === null || typeof t !== 'object') throw new CheckpointError('ERR_INVALID_ARGUMENT', 'not a tensor', { file, tensor: name });
  if (!isDType(t.dtype)) throw new CheckpointError('ERR_DTYPE', `unsupported dtype ${quote(String(t.dtype))}`, { file, tensor: name });
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new CheckpointError('ERR_SHAPE', `shape ${JSON.stringify(t.shape)} is not an array of non-negative integers`, { file, tensor: name });
  }
  if (!(t.data instanceof Uint8Array)) {
    throw new CheckpointError('ERR_INVALID_ARGUMENT', 'data must be a Uint8Array', { file, tensor: name });
  }
  const need = numel(t.shape) * DTYPE_BYTES[t.dtype];
  if (t.data.byteLength !== need) {
    throw new CheckpointError('ERR_SIZE_MISMATCH', `${t.data.byteLength} bytes but ${t.dtype}[${t.shape.join(',')}] needs ${need}`, { file, tensor: name });
  }
}

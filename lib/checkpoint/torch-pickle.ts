/**
 * Pure-TypeScript reader and writer for PyTorch `torch.save` checkpoints in the
 * zip format (torch >= 1.6), restricted to state dicts (string -> tensor maps).
 *
 * Why: libtorch's C++ `torch::pickle_load` cannot read what Python's
 * `torch.save(model.state_dict())` writes (`collections.OrderedDict`, SETITEM,
 * arbitrary archive names), so the format is implemented here.
 *
 * Layout of such a file (a zip archive, records normally STORED):
 *
 *     <archive>/data.pkl      pickle (protocol 2) of the object
 *     <archive>/data/<key>    raw little-endian bytes of each storage
 *     <archive>/version       "3\n"
 *     <archive>/byteorder     "little" (newer torch)
 *
 * Reading runs a minimal pickle VM that understands only the opcodes torch.save
 * emits and resolves only an allow-list of globals (`collections.OrderedDict`,
 * `torch._utils._rebuild_tensor_v2`, the typed `torch.*Storage` classes, ...).
 * Nothing is ever imported or executed: an unknown global is an error, which
 * is the point of a safe loader.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { DType, DTYPE_BYTES, RawTensor, isDType, numel } from './dtype';
import { CheckpointError, ioError, openForReading } from './errors';

// ---------------------------------------------------------------------------
// Public API

/** Result of {@link readTorchCheckpoint}. */
export interface TorchCheckpoint {
  /** Tensors in file order. Contiguous tensors covering a whole storage are views of the storage buffer. */
  tensors: Map<string, RawTensor>;
  /** The top folder of the zip archive (`archive`, or the file stem for older torch). */
  archiveName: string;
}

/** Options of {@link writeTorchCheckpoint}. */
export interface TorchWriteOptions {
  /** Top folder of the archive; default `archive` (what torch >= 2.0 writes). */
  archiveName?: string;
  /** Write zip64 structures even when not needed (testing interoperability). */
  forceZip64?: boolean;
}

/**
 * Reads a `torch.save` zip checkpoint holding a state dict (a dict /
 * OrderedDict of tensors, possibly wrapped as `{"state_dict": ...}` or
 * `{"model": ...}`).
 *
 * @throws CheckpointError ERR_IO (unreadable file, not a zip, legacy format, corrupt record),
 *   ERR_TRUNCATED, ERR_SCHEMA (unsupported pickle content, non-tensor value, unknown global),
 *   ERR_DTYPE, ERR_DUPLICATE_KEY, ERR_SIZE_MISMATCH.
 */
export function readTorchCheckpoint(file: string): TorchCheckpoint {
  const fd = openForReading(file);
  try {
    const zip = new ZipReader(file, fd);
    const { pkl, prefix } = zip.findDataPkl();
    const archiveName = prefix.slice(0, -1);
    const storages = new Map<string, Uint8Array>();
    const loadRecord = (key: string): Uint8Array => {
      let bytes = storages.get(key);
      if (bytes === undefined) {
        const entry = zip.entries.get(`${prefix}data/${key}`);
        if (entry === undefined) {
          throw new CheckpointError('ERR_SCHEMA', `storage record ${JSON.stringify(`${prefix}data/${key}`)} is missing from the archive`, { file });
        }
        bytes = zip.read(entry);
        storages.set(key, bytes);
      }
      return bytes;
    };
    const root = new Unpickler(file, zip.read(pkl), loadRecord).load();
    return { tensors: toStateDict(file, root), archiveName };
  } finally {
    try { fs.closeSync(fd); } catch { /* ignore */ }
  }
}

/**
 * Writes `tensors` the way `torch.save(OrderedDict(...))` does: a STORED zip
 * with `archive/data.pkl` (pickle protocol 2), one 64-byte-aligned record
 * `archive/data/<i>` per tensor, `archive/version` and `archive/byteorder`.
 * The file is written to a temporary file in the same directory, then renamed.
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
    throw new CheckpointError('ERR_INVALID_ARGUMENT', `invalid archive name ${JSON.stringify(archive)}`, { file });
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
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
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
// Dtypes <-> torch storage classes

const STORAGE_DTYPES: Readonly<Record<string, DType>> = Object.freeze({
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
});

const DTYPE_STORAGES: Readonly<Record<DType, string>> = Object.freeze(
  Object.fromEntries(Object.entries(STORAGE_DTYPES).map(([s, d]) => [d, s])) as Record<DType, string>,
);

// ---------------------------------------------------------------------------
// Zip reading

interface ZipEntry {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const MAX_RECORD = 0x7fffffff; // largest single Buffer we read at once (the fs API limit)

/** Random-access reader of a zip file's central directory and records. */
class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  /** Entry names in central-directory order. */
  readonly order: string[] = [];
  private readonly size: number;

  constructor(private readonly file: string, private readonly fd: number) {
    try {
      this.size = fs.fstatSync(fd).size;
    } catch (e) {
      throw ioError(file, 'stat file', e);
    }
    this.parseDirectory();
  }

  /** Reads exactly `length` bytes at `position` (ERR_TRUNCATED past the end of the file). */
  readAt(position: number, length: number, what: string): Buffer {
    if (position < 0 || position + length > this.size) {
      throw new CheckpointError('ERR_TRUNCATED', `${what} (bytes ${position}..${position + length}) extends past the end of the ${this.size}-byte file`, { file: this.file });
    }
    if (length > MAX_RECORD) {
      throw new CheckpointError('ERR_FILE_TOO_LARGE', `${what} is ${length} bytes, larger than the ${MAX_RECORD}-byte limit of one read`, { file: this.file });
    }
    const buf = Buffer.allocUnsafeSlow(length); // own ArrayBuffer (not the shared pool)
    let done = 0;
    try {
      while (done < length) {
        const n = fs.readSync(this.fd, buf, done, length - done, position + done);
        if (n === 0) break;
        done += n;
      }
    } catch (e) {
      throw ioError(this.file, 'read file', e);
    }
    if (done < length) throw new CheckpointError('ERR_TRUNCATED', `${what}: unexpected end of file`, { file: this.file });
    return buf;
  }

  private parseDirectory(): void {
    const file = this.file;
    const head = this.readAt(0, Math.min(this.size, 4), 'file header');
    if (head.length < 4 || head.readUInt32LE(0) !== SIG_LOCAL) {
      if (head.length >= 2 && head[0] === 0x80 && head[1]! <= 5) {
        throw new CheckpointError('ERR_IO',
          'this is a legacy (non-zip) torch.save file (torch < 1.6 or _use_new_zipfile_serialization=False), which is not supported; '
          + 're-save it with torch.save from torch >= 1.6', { file });
      }
      if (this.size >= 263 && this.readAt(257, 5, 'tar header').toString('latin1') === 'ustar') {
        throw new CheckpointError('ERR_IO', 'this is a legacy tar-format torch.save file (torch < 0.4), which is not supported', { file });
      }
      throw new CheckpointError('ERR_IO', 'not a torch.save zip checkpoint (no zip signature at the start of the file)', { file });
    }
    // End of central directory: 22 bytes + comment (<= 65535), searched backwards.
    const tailLen = Math.min(this.size, 22 + 0xffff);
    const tailStart = this.size - tailLen;
    const tail = this.readAt(tailStart, tailLen, 'end of central directory');
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === SIG_EOCD && i + 22 + tail.readUInt16LE(i + 20) <= tail.length) { eocd = i; break; }
    }
    if (eocd < 0) {
      throw new CheckpointError('ERR_TRUNCATED', 'zip end-of-central-directory record not found: the file is truncated or not a zip archive', { file });
    }
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    const eocdPos = tailStart + eocd;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // zip64: the locator sits just before the EOCD record.
      if (eocdPos < 20) throw new CheckpointError('ERR_IO', 'zip64 end-of-central-directory locator missing', { file });
      const loc = this.readAt(eocdPos - 20, 20, 'zip64 locator');
      if (loc.readUInt32LE(0) !== SIG_ZIP64_LOCATOR) throw new CheckpointError('ERR_IO', 'zip64 end-of-central-directory locator missing', { file });
      const recPos = safeNumber(loc.readBigUInt64LE(8), file, 'zip64 EOCD offset');
      const rec = this.readAt(recPos, 56, 'zip64 end-of-central-directory record');
      if (rec.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw new CheckpointError('ERR_IO', 'bad zip64 end-of-central-directory signature', { file });
      count = safeNumber(rec.readBigUInt64LE(32), file, 'zip64 entry count');
      cdSize = safeNumber(rec.readBigUInt64LE(40), file, 'zip64 central directory size');
      cdOffset = safeNumber(rec.readBigUInt64LE(48), file, 'zip64 central directory offset');
    }
    if (cdOffset + cdSize > this.size) {
      throw new CheckpointError('ERR_TRUNCATED', `zip central directory (bytes ${cdOffset}..${cdOffset + cdSize}) extends past the end of the ${this.size}-byte file`, { file });
    }
    const cd = this.readAt(cdOffset, cdSize, 'zip central directory');
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
        throw new CheckpointError('ERR_IO', `corrupt zip central directory (entry ${i} of ${count})`, { file });
      }
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      let compressedSize = cd.readUInt32LE(p + 20);
      let size = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      let localOffset = cd.readUInt32LE(p + 42);
      if (p + 46 + nameLen + extraLen + commentLen > cd.length) {
        throw new CheckpointError('ERR_IO', `corrupt zip central directory (entry ${i} of ${count})`, { file });
      }
      const name = cd.toString((flags & 0x800) !== 0 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen);
      // zip64 extended information extra field (id 1): the 0xffffffff fields, in order.
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      while (e + 4 <= eEnd) {
        const id = cd.readUInt16LE(e);
        const len = cd.readUInt16LE(e + 2);
        if (id === 0x0001) {
          let q = e + 4;
          const next = (what: string): number => {
            if (q + 8 > e + 4 + len) throw new CheckpointError('ERR_IO', `corrupt zip64 extra field of ${JSON.stringify(name)}`, { file });
            const v = safeNumber(cd.readBigUInt64LE(q), file, what);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = next('zip64 size');
          if (compressedSize === 0xffffffff) compressedSize = next('zip64 compressed size');
          if (localOffset === 0xffffffff) localOffset = next('zip64 offset');
        }
        e += 4 + len;
      }
      if ((flags & 0x1) !== 0) throw new CheckpointError('ERR_IO', `zip entry ${JSON.stringify(name)} is encrypted`, { file });
      if (this.entries.has(name)) {
        throw new CheckpointError('ERR_DUPLICATE_KEY', `zip entry ${JSON.stringify(name)} appears twice`, { file });
      }
      this.entries.set(name, { name, method, crc, compressedSize, size, localOffset });
      this.order.push(name);
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  /** Locates `<archive>/data.pkl`; the archive name is the top folder. */
  findDataPkl(): { pkl: ZipEntry; prefix: string } {
    const candidates = this.order.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    let chosen: string | undefined;
    if (candidates.length === 1) chosen = candidates[0];
    else if (candidates.length > 1) {
      // torch takes the archive name from the first record.
      const first = this.order[0]!;
      const top = first.slice(0, first.indexOf('/') + 1);
      chosen = candidates.find((c) => c.startsWith(top) && top !== '') ?? candidates[0];
    }
    if (chosen === undefined) {
      throw new CheckpointError('ERR_SCHEMA', 'zip archive has no <archive>/data.pkl record: not a torch.save checkpoint', { file: this.file });
    }
    const prefix = chosen.slice(0, chosen.length - 'data.pkl'.length);
    if (this.entries.has(`${prefix}constants.pkl`) || this.order.some((n) => n.startsWith(`${prefix}code/`))) {
      throw new CheckpointError('ERR_SCHEMA',
        'this is a TorchScript archive (torch.jit.save), not a torch.save state dict; save model.state_dict() with torch.save instead',
        { file: this.file });
    }
    return { pkl: this.entries.get(chosen)!, prefix };
  }

  /** The (decompressed, CRC-checked) bytes of a record. */
  read(entry: ZipEntry): Uint8Array {
    const file = this.file;
    const lh = this.readAt(entry.localOffset, 30, `local header of ${JSON.stringify(entry.name)}`);
    if (lh.readUInt32LE(0) !== SIG_LOCAL) {
      throw new CheckpointError('ERR_IO', `bad local header signature for zip entry ${JSON.stringify(entry.name)}`, { file });
    }
    const dataStart = entry.localOffset + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
    const raw = this.readAt(dataStart, entry.compressedSize, `zip entry ${JSON.stringify(entry.name)}`);
    let data: Buffer;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) {
        throw new CheckpointError('ERR_IO', `stored zip entry ${JSON.stringify(entry.name)} has compressed size ${entry.compressedSize} != size ${entry.size}`, { file });
      }
      data = raw;
    } else if (entry.method === 8) {
      try {
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, Math.min(entry.size, MAX_RECORD)) });
      } catch (e) {
        throw new CheckpointError('ERR_IO', `cannot inflate zip entry ${JSON.stringify(entry.name)}: ${e instanceof Error ? e.message : String(e)}`, { file, cause: e });
      }
      if (data.length !== entry.size) {
        throw new CheckpointError('ERR_IO', `zip entry ${JSON.stringify(entry.name)} inflates to ${data.length} bytes, expected ${entry.size}`, { file });
      }
    } else {
      throw new CheckpointError('ERR_IO', `zip entry ${JSON.stringify(entry.name)} uses unsupported compression method ${entry.method}`, { file });
    }
    if (crc32(data) !== entry.crc) {
      throw new CheckpointError('ERR_IO', `CRC-32 mismatch in zip entry ${JSON.stringify(entry.name)}: the file is corrupt`, { file });
    }
    return data;
  }
}

function safeNumber(v: bigint, file: string, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError('ERR_IO', `${what} ${v} is out of range`, { file });
  return Number(v);
}

// CRC-32: zlib.crc32 (Node >= 20.15 / 22.2), else a table implementation.
let crcTable: Int32Array | undefined;
function crc32(data: Uint8Array): number {
  const native = (zlib as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;
  if (typeof native === 'function') return native(data) >>> 0;
  if (crcTable === undefined) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  let c = -1;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

// ---------------------------------------------------------------------------
// Pickle VM (read side)

/** An allow-listed global (never resolved to anything executable). */
class PyGlobal {
  constructor(readonly module: string, readonly name: string, readonly storageDType?: DType) {}
  toString(): string { return `${this.module}.${this.name}`; }
}
class PyTuple { constructor(readonly items: unknown[]) {} }
class PyList { constructor(readonly items: unknown[]) {} }
/** dict / OrderedDict, insertion-ordered; keys are strings, numbers, booleans or null. */
class PyDict {
  readonly map = new Map<unknown, unknown>();
  constructor(readonly ordered: boolean) {}
}
class StorageRef { constructor(readonly key: string, readonly dtype: DType, readonly numel: number, readonly bytes: Uint8Array) {} }
class PyTensor { constructor(readonly tensor: RawTensor) {} }

const ALLOWED_GLOBALS: ReadonlySet<string> = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
]);

const OPNAMES: Readonly<Record<number, string>> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (typeof v === 'string') return `str ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'number' || typeof v === 'bigint') return `int/float ${String(v)}`;
  if (typeof v === 'boolean') return `bool ${v ? 'True' : 'False'}`;
  if (v instanceof PyTensor) return 'tensor';
  if (v instanceof PyDict) return v.ordered ? 'OrderedDict' : 'dict';
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (v instanceof PyList) return `list of ${v.items.length}`;
  if (v instanceof PyGlobal) return `global ${v.toString()}`;
  if (v instanceof StorageRef) return 'storage';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v;
}

function keyRepr(k: unknown): string {
  return typeof k === 'string' ? JSON.stringify(k) : describe(k);
}

class Unpickler {
  private pos = 0;
  private stack: unknown[] = [];
  private readonly metastack: unknown[][] = [];
  private readonly memo = new Map<number, unknown>();
  private op = 0;
  private opPos = 0;

  constructor(
    private readonly file: string,
    private readonly buf: Uint8Array,
    private readonly loadRecord: (key: string) => Uint8Array,
  ) {}

  private fail(detail: string, code: 'ERR_SCHEMA' | 'ERR_TRUNCATED' | 'ERR_DTYPE' = 'ERR_SCHEMA'): never {
    const name = OPNAMES[this.op] ?? `0x${this.op.toString(16).padStart(2, '0')}`;
    throw new CheckpointError(code, `data.pkl: ${detail} (opcode ${name} at offset ${this.opPos})`, { file: this.file });
  }

  private take(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.buf.length) this.fail(`pickle ends early: need ${n} more bytes`, 'ERR_TRUNCATED');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  private u8(): number { return this.take(1)[0]!; }
  private u16(): number { const b = this.take(2); return b[0]! | (b[1]! << 8); }
  private u32(): number { const b = this.take(4); return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0; }
  private i32(): number { return this.u32() | 0; }
  private u64(): number {
    const lo = this.u32();
    const hi = this.u32();
    const v = hi * 2 ** 32 + lo;
    if (!Number.isSafeInteger(v)) this.fail('length out of range');
    return v;
  }
  private line(): string {
    const start = this.pos;
    while (this.pos < this.buf.length && this.buf[this.pos] !== 0x0a) this.pos++;
    if (this.pos >= this.buf.length) this.fail('pickle ends inside a text line', 'ERR_TRUNCATED');
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + start, this.pos - start).toString('utf8');
    this.pos++;
    return s;
  }
  private utf8(n: number): string {
    const b = this.take(n);
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');
  }

  private push(v: unknown): void { this.stack.push(v); }
  private pop(): unknown {
    if (this.stack.length === 0) this.fail(this.metastack.length > 0 ? 'unexpected MARK on the stack' : 'stack underflow');
    return this.stack.pop();
  }
  private top(): unknown {
    if (this.stack.length === 0) this.fail('stack underflow');
    return this.stack[this.stack.length - 1];
  }
  private popMark(): unknown[] {
    const items = this.stack;
    const prev = this.metastack.pop();
    if (prev === undefined) this.fail('no MARK on the stack');
    this.stack = prev;
    return items;
  }

  private global(module: string, name: string): PyGlobal {
    const full = `${module}.${name}`;
    if (ALLOWED_GLOBALS.has(full)) return new PyGlobal(module, name);
    if (module === 'torch' && /^[A-Za-z0-9]+Storage$/.test(name)) {
      const dtype = STORAGE_DTYPES[name];
      if (dtype === undefined) this.fail(`unsupported storage type torch.${name}`, 'ERR_DTYPE');
      return new PyGlobal(module, name, dtype);
    }
    this.fail(`refusing to load global ${JSON.stringify(full)}: only tensors and (Ordered)dicts are allowed in a safe state-dict load`);
  }

  private dictSet(d: PyDict, key: unknown, value: unknown): void {
    if (!(typeof key === 'string' || typeof key === 'number' || typeof key === 'boolean' || key === null || typeof key === 'bigint')) {
      this.fail(`unsupported dict key (${describe(key)})`);
    }
    if (d.map.has(key)) {
      throw new CheckpointError('ERR_DUPLICATE_KEY', `data.pkl: key ${keyRepr(key)} is set twice in one dict (offset ${this.opPos})`,
        typeof key === 'string' ? { file: this.file, tensor: key } : { file: this.file });
    }
    d.map.set(key, value);
  }

  private int(v: unknown, what: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(`${what} must be an integer, got ${describe(v)}`);
    return v;
  }

  private intTuple(v: unknown, what: string): number[] {
    if (!(v instanceof PyTuple)) this.fail(`${what} must be a tuple, got ${describe(v)}`);
    return v.items.map((x) => this.int(x, what));
  }

  private call(fn: unknown, argsV: unknown): unknown {
    if (!(fn instanceof PyGlobal)) this.fail(`cannot call ${describe(fn)}`);
    if (!(argsV instanceof PyTuple)) this.fail(`arguments of ${fn.toString()} must be a tuple, got ${describe(argsV)}`);
    const args = argsV.items;
    switch (fn.toString()) {
      case 'collections.OrderedDict': {
        const d = new PyDict(true);
        if (args.length === 1 && args[0] instanceof PyList) {
          for (const pair of args[0].items) {
            if (!(pair instanceof PyTuple) || pair.items.length !== 2) this.fail('OrderedDict() argument must be a list of pairs');
            this.dictSet(d, pair.items[0], pair.items[1]);
          }
        } else if (args.length !== 0) this.fail(`unsupported OrderedDict() arguments (${args.map(describe).join(', ')})`);
        return d;
      }
      case 'torch._utils._rebuild_tensor_v2':
      case 'torch._utils._rebuild_tensor': {
        if (args.length < 4) this.fail(`${fn.toString()} expects at least 4 arguments, got ${args.length}`);
        const storage = args[0];
        if (!(storage instanceof StorageRef)) this.fail(`${fn.toString()}: first argument must be a storage, got ${describe(storage)}`);
        const offset = this.int(args[1], 'storage_offset');
        const size = this.intTuple(args[2], 'size');
        const stride = this.intTuple(args[3], 'stride');
        return new PyTensor(this.materialize(storage, offset, size, stride));
      }
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state': {
        if (args.length < 1 || !(args[0] instanceof PyTensor)) this.fail(`${fn.toString()}: first argument must be a tensor`);
        return args[0];
      }
      default:
        this.fail(`${fn.toString()} cannot be called`);
    }
  }

  /** A contiguous RawTensor from a (possibly strided, offset) view of a storage. */
  private materialize(s: StorageRef, offset: number, size: number[], stride: number[]): RawTensor {
    if (size.length !== stride.length) this.fail(`size (${size.length} dims) and stride (${stride.length} dims) differ in length`);
    if (size.some((d) => d < 0) || stride.some((d) => d < 0) || offset < 0) this.fail('negative size, stride or storage offset');
    const esize = DTYPE_BYTES[s.dtype];
    const n = numel(size);
    const shape = [...size];
    if (n === 0) return { dtype: s.dtype, shape, data: new Uint8Array(0) };
    let maxIndex = offset;
    for (let i = 0; i < size.length; i++) maxIndex += (size[i]! - 1) * stride[i]!;
    if (maxIndex >= s.numel) {
      this.fail(`tensor view (offset ${offset}, size [${size.join(',')}], stride [${stride.join(',')}]) reaches element ${maxIndex} of a ${s.numel}-element storage`);
    }
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
      const data = begin === 0 && end === s.bytes.length ? s.bytes : s.bytes.slice(begin, end);
      return { dtype: s.dtype, shape, data };
    }
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
        for (let k = 0; k < esize; k++) out[o + k] = s.bytes[b + k]!;
      } else {
        out.set(s.bytes.subarray(b, b + rowBytes), o);
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

  private persistentLoad(pid: unknown): StorageRef {
    if (!(pid instanceof PyTuple) || pid.items.length < 5 || pid.items[0] !== 'storage') {
      this.fail(`unsupported persistent id (${describe(pid)}); expected ('storage', type, key, location, numel)`);
    }
    const [, type, key, , numelV] = pid.items;
    if (!(type instanceof PyGlobal) || type.storageDType === undefined) this.fail(`persistent id storage type must be a torch.*Storage class, got ${describe(type)}`);
    if (typeof key !== 'string') this.fail(`persistent id storage key must be a string, got ${describe(key)}`);
    const count = this.int(numelV, 'storage numel');
    const dtype = type.storageDType;
    const bytes = this.loadRecord(key);
    const need = count * DTYPE_BYTES[dtype];
    if (bytes.length < need) {
      throw new CheckpointError('ERR_SIZE_MISMATCH', `storage data/${key} holds ${bytes.length} bytes but ${count} ${dtype} elements need ${need}`, { file: this.file });
    }
    return new StorageRef(key, dtype, count, bytes);
  }

  load(): unknown {
    const buf = this.buf;
    while (this.pos < buf.length) {
      this.opPos = this.pos;
      const op = (this.op = buf[this.pos++]!);
      switch (op) {
        case 0x80: { // PROTO
          const proto = this.u8();
          if (proto < 2 || proto > 5) this.fail(`unsupported pickle protocol ${proto}`);
          break;
        }
        case 0x95: this.u64(); break; // FRAME: length of the next frame, irrelevant here
        case 0x63: { // GLOBAL
          const module = this.line();
          const name = this.line();
          this.push(this.global(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') this.fail('STACK_GLOBAL needs two strings');
          this.push(this.global(module, name));
          break;
        }
        case 0x71: this.memo.set(this.u8(), this.top()); break; // BINPUT
        case 0x72: this.memo.set(this.u32(), this.top()); break; // LONG_BINPUT
        case 0x94: this.memo.set(this.memo.size, this.top()); break; // MEMOIZE
        case 0x68: case 0x6a: { // BINGET, LONG_BINGET
          const i = op === 0x68 ? this.u8() : this.u32();
          if (!this.memo.has(i)) this.fail(`memo entry ${i} is not defined`);
          this.push(this.memo.get(i));
          break;
        }
        case 0x28: this.metastack.push(this.stack); this.stack = []; break; // MARK
        case 0x30: this.pop(); break; // POP
        case 0x31: this.popMark(); break; // POP_MARK
        case 0x32: this.push(this.top()); break; // DUP
        case 0x29: this.push(new PyTuple([])); break; // EMPTY_TUPLE
        case 0x74: this.push(new PyTuple(this.popMark())); break; // TUPLE
        case 0x85: case 0x86: case 0x87: { // TUPLE1/2/3
          const k = op - 0x84;
          if (this.stack.length < k) this.fail('stack underflow');
          this.push(new PyTuple(this.stack.splice(this.stack.length - k, k)));
          break;
        }
        case 0x7d: this.push(new PyDict(false)); break; // EMPTY_DICT
        case 0x73: { // SETITEM
          const value = this.pop();
          const key = this.pop();
          const d = this.top();
          if (!(d instanceof PyDict)) this.fail(`SETITEM on ${describe(d)}`);
          this.dictSet(d, key, value);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.popMark();
          const d = this.top();
          if (!(d instanceof PyDict)) this.fail(`SETITEMS on ${describe(d)}`);
          if (items.length % 2 !== 0) this.fail('SETITEMS with an odd number of items');
          for (let i = 0; i < items.length; i += 2) this.dictSet(d, items[i], items[i + 1]);
          break;
        }
        case 0x5d: this.push(new PyList([])); break; // EMPTY_LIST
        case 0x61: { // APPEND
          const v = this.pop();
          const l = this.top();
          if (!(l instanceof PyList)) this.fail(`APPEND on ${describe(l)}`);
          l.items.push(v);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.popMark();
          const l = this.top();
          if (!(l instanceof PyList)) this.fail(`APPENDS on ${describe(l)}`);
          l.items.push(...items);
          break;
        }
        case 0x58: this.push(this.utf8(this.u32())); break; // BINUNICODE
        case 0x8c: this.push(this.utf8(this.u8())); break; // SHORT_BINUNICODE
        case 0x8d: this.push(this.utf8(this.u64())); break; // BINUNICODE8
        case 0x43: this.push(this.take(this.u8()).slice()); break; // SHORT_BINBYTES
        case 0x42: this.push(this.take(this.u32()).slice()); break; // BINBYTES
        case 0x8e: this.push(this.take(this.u64()).slice()); break; // BINBYTES8
        case 0x4a: this.push(this.i32()); break; // BININT
        case 0x4b: this.push(this.u8()); break; // BININT1
        case 0x4d: this.push(this.u16()); break; // BININT2
        case 0x8a: case 0x8b: { // LONG1, LONG4
          const n = op === 0x8a ? this.u8() : this.u32();
          const b = this.take(n);
          let v = 0n;
          for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
          if (n > 0 && (b[n - 1]! & 0x80) !== 0) v -= 1n << BigInt(8 * n);
          this.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
          break;
        }
        case 0x47: { // BINFLOAT (big-endian)
          const b = this.take(8);
          this.push(new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false));
          break;
        }
        case 0x4e: this.push(null); break; // NONE
        case 0x88: this.push(true); break; // NEWTRUE
        case 0x89: this.push(false); break; // NEWFALSE
        case 0x52: { // REDUCE
          const args = this.pop();
          const fn = this.pop();
          this.push(this.call(fn, args));
          break;
        }
        case 0x62: { // BUILD
          const state = this.pop();
          const obj = this.top();
          // OrderedDict._metadata (nn.Module state dicts) and tensor/parameter state: ignored.
          if (!(obj instanceof PyDict || obj instanceof PyTensor)) this.fail(`BUILD on ${describe(obj)}`);
          void state;
          break;
        }
        case 0x51: this.push(this.persistentLoad(this.pop())); break; // BINPERSID
        case 0x2e: { // STOP
          const result = this.pop();
          if (this.metastack.length !== 0) this.fail('STOP with an unclosed MARK');
          return result;
        }
        default:
          this.fail(`unsupported pickle opcode ${OPNAMES[op] ?? 'unknown'} (byte 0x${op.toString(16).padStart(2, '0')})`);
      }
    }
    this.fail('pickle has no STOP opcode', 'ERR_TRUNCATED');
  }
}

/** The unpickled root -> a name -> tensor map (unwrapping `state_dict` / `model` wrappers). */
function toStateDict(file: string, root: unknown): Map<string, RawTensor> {
  if (!(root instanceof PyDict)) {
    throw new CheckpointError('ERR_SCHEMA', `data.pkl holds a ${describe(root)}, not a dict of tensors`, { file });
  }
  let d = root;
  const allTensors = (x: PyDict): boolean => [...x.map.values()].every((v) => v instanceof PyTensor);
  if (!allTensors(d)) {
    for (const wrapper of ['state_dict', 'model']) {
      const inner = d.map.get(wrapper);
      if (inner instanceof PyDict) { d = inner; break; }
    }
  }
  const out = new Map<string, RawTensor>();
  for (const [k, v] of d.map) {
    if (typeof k !== 'string') {
      throw new CheckpointError('ERR_SCHEMA', `state dict key ${keyRepr(k)} is not a string`, { file });
    }
    if (!(v instanceof PyTensor)) {
      throw new CheckpointError('ERR_SCHEMA', `value is a ${describe(v)}, not a tensor`, { file, tensor: k });
    }
    out.set(k, v.tensor);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Writing

function validateTensor(file: string, name: string, t: RawTensor): void {
  if (t === null || typeof t !== 'object') throw new CheckpointError('ERR_INVALID_ARGUMENT', 'not a tensor', { file, tensor: name });
  if (!isDType(t.dtype)) throw new CheckpointError('ERR_DTYPE', `unsupported dtype ${JSON.stringify(t.dtype)}`, { file, tensor: name });
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

/** Minimal protocol-2 pickle encoder for what torch.save(OrderedDict of tensors) emits. */
class PickleWriter {
  private chunks: Buffer[] = [];
  private readonly memo = new Map<string, number>();

  raw(...bytes: number[]): void { this.chunks.push(Buffer.from(bytes)); }
  bytes(b: Buffer): void { this.chunks.push(b); }

  put(id: string): void {
    const i = this.memo.size;
    this.memo.set(id, i);
    if (i < 256) this.raw(0x71, i); // BINPUT
    else { const b = Buffer.alloc(5); b[0] = 0x72; b.writeUInt32LE(i, 1); this.bytes(b); } // LONG_BINPUT
  }
  /** Pushes a memoized global (GLOBAL the first time, BINGET after). */
  global(module: string, name: string): void {
    const id = `global:${module}.${name}`;
    const i = this.memo.get(id);
    if (i !== undefined) { this.get(i); return; }
    this.bytes(Buffer.from(`c${module}\n${name}\n`, 'utf8'));
    this.put(id);
  }
  get(i: number): void {
    if (i < 256) this.raw(0x68, i);
    else { const b = Buffer.alloc(5); b[0] = 0x6a; b.writeUInt32LE(i, 1); this.bytes(b); }
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h[0] = 0x58; // BINUNICODE
    h.writeUInt32LE(b.length, 1);
    this.bytes(h);
    this.bytes(b);
  }
  int(v: number): void {
    if (v >= 0 && v < 256) this.raw(0x4b, v); // BININT1
    else if (v >= 0 && v < 65536) this.raw(0x4d, v & 0xff, v >>> 8); // BININT2
    else if (v >= -(2 ** 31) && v < 2 ** 31) { const b = Buffer.alloc(5); b[0] = 0x4a; b.writeInt32LE(v, 1); this.bytes(b); } // BININT
    else { // LONG1: minimal two's complement little-endian
      let x = BigInt(v);
      const out: number[] = [];
      for (;;) {
        out.push(Number(x & 0xffn));
        x >>= 8n;
        const sign = (out[out.length - 1]! & 0x80) !== 0;
        if ((x === 0n && !sign) || (x === -1n && sign)) break;
      }
      this.raw(0x8a, out.length, ...out);
    }
  }
  tuple(push: Array<() => void>): void {
    if (push.length === 0) { this.raw(0x29); return; }
    if (push.length > 3) this.raw(0x28); // MARK
    for (const p of push) p();
    this.raw(push.length > 3 ? 0x74 : 0x84 + push.length); // TUPLE or TUPLE1/2/3
  }
  orderedDict(): void {
    this.global('collections', 'OrderedDict');
    this.raw(0x29, 0x52); // EMPTY_TUPLE REDUCE
  }
  result(): Buffer { return Buffer.concat(this.chunks); }
}

function contiguousStride(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) { stride[i] = s; s *= shape[i]!; }
  return stride;
}

function encodeStateDictPickle(items: ReadonlyArray<[string, RawTensor]>): Buffer {
  const w = new PickleWriter();
  w.raw(0x80, 2); // PROTO 2
  w.orderedDict();
  w.put('root');
  const BATCH = 1000; // as Python's pickle
  for (let start = 0; start < items.length; start += BATCH) {
    const batch = items.slice(start, start + BATCH);
    if (batch.length > 1) w.raw(0x28); // MARK
    batch.forEach(([name, t], j) => {
      const i = start + j;
      w.str(name);
      w.global('torch._utils', '_rebuild_tensor_v2');
      w.raw(0x28); // MARK (args)
      // persistent id ('storage', torch.XStorage, '<i>', 'cpu', numel)
      w.tuple([
        () => w.str('storage'),
        () => w.global('torch', DTYPE_STORAGES[t.dtype]),
        () => w.str(String(i)),
        () => w.str('cpu'),
        () => w.int(numel(t.shape)),
      ]);
      w.raw(0x51); // BINPERSID
      w.int(0); // storage_offset
      w.tuple(t.shape.map((d) => () => w.int(d)));
      w.tuple(contiguousStride(t.shape).map((d) => () => w.int(d)));
      w.raw(0x89); // requires_grad = False
      w.orderedDict(); // backward_hooks
      w.raw(0x74, 0x52); // TUPLE REDUCE
    });
    w.raw(batch.length > 1 ? 0x75 : 0x73); // SETITEMS or SETITEM
  }
  w.raw(0x2e); // STOP
  return w.result();
}

const ALIGN = 64; // torch's kFieldAlignment
const COALESCE = 1 << 20;

/** Streams STORED records to `fd`, 64-byte aligning each record's data like torch's PyTorchStreamWriter. */
class ZipWriter {
  private offset = 0;
  private readonly central: Buffer[] = [];
  private count = 0;

  constructor(private readonly file: string, private readonly fd: number, private readonly forceZip64: boolean) {}

  /** Small writes are coalesced into one buffer to save system calls. */
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  private write(b: Uint8Array): void {
    this.offset += b.byteLength;
    if (b.byteLength < COALESCE) {
      this.pending.push(b);
      this.pendingBytes += b.byteLength;
      if (this.pendingBytes >= COALESCE) this.flush();
      return;
    }
    this.flush();
    this.writeNow(b);
  }

  /** Writes out the coalesced small writes (call before closing). */
  flush(): void {
    if (this.pending.length === 0) return;
    const b = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    this.writeNow(b);
  }

  private writeNow(b: Uint8Array): void {
    let done = 0;
    try {
      while (done < b.byteLength) done += fs.writeSync(this.fd, b, done, b.byteLength - done);
    } catch (e) {
      throw ioError(this.file, 'write file', e);
    }
  }

  add(name: string, data: Uint8Array): void {
    const nameBuf = Buffer.from(name, 'utf8');
    const size = data.byteLength;
    const crc = crc32(data);
    const bigSize = this.forceZip64 || size >= 0xffffffff;
    const bigOffset = this.forceZip64 || this.offset >= 0xffffffff;
    const localOffset = this.offset;

    // Local header extra: [zip64 sizes] + "FB" padding field aligning the data.
    const z64Local = bigSize ? 20 : 0;
    const start = localOffset + 30 + nameBuf.length + z64Local + 4;
    const padding = (ALIGN - (start % ALIGN)) % ALIGN;
    const extra = Buffer.alloc(z64Local + 4 + padding, 0x5a /* 'Z' */);
    let e = 0;
    if (bigSize) {
      extra.writeUInt16LE(0x0001, 0); extra.writeUInt16LE(16, 2);
      extra.writeBigUInt64LE(BigInt(size), 4); extra.writeBigUInt64LE(BigInt(size), 12);
      e = 20;
    }
    extra.write('FB', e, 'latin1');
    extra.writeUInt16LE(padding, e + 2);

    const version = bigSize || bigOffset ? 45 : 20;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(SIG_LOCAL, 0);
    lh.writeUInt16LE(version, 4);
    lh.writeUInt16LE(0x800, 6); // flags: UTF-8 names
    lh.writeUInt16LE(0, 8); // STORED
    lh.writeUInt16LE(0, 10); // time
    lh.writeUInt16LE(0x21, 12); // date 1980-01-01
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(bigSize ? 0xffffffff : size, 18);
    lh.writeUInt32LE(bigSize ? 0xffffffff : size, 22);
    lh.writeUInt16LE(nameBuf.length, 26);
    lh.writeUInt16LE(extra.length, 28);
    this.write(lh);
    this.write(nameBuf);
    this.write(extra);
    this.write(data);

    // Central directory entry.
    const z64: bigint[] = [];
    if (bigSize) z64.push(BigInt(size), BigInt(size));
    if (bigOffset) z64.push(BigInt(localOffset));
    const cextra = Buffer.alloc(z64.length > 0 ? 4 + 8 * z64.length : 0);
    if (z64.length > 0) {
      cextra.writeUInt16LE(0x0001, 0);
      cextra.writeUInt16LE(8 * z64.length, 2);
      z64.forEach((v, i) => cextra.writeBigUInt64LE(v, 4 + 8 * i));
    }
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(SIG_CENTRAL, 0);
    ch.writeUInt16LE(version, 4); // version made by
    ch.writeUInt16LE(version, 6); // version needed
    ch.writeUInt16LE(0x800, 8);
    ch.writeUInt16LE(0, 10);
    ch.writeUInt16LE(0, 12);
    ch.writeUInt16LE(0x21, 14);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(bigSize ? 0xffffffff : size, 20);
    ch.writeUInt32LE(bigSize ? 0xffffffff : size, 24);
    ch.writeUInt16LE(nameBuf.length, 28);
    ch.writeUInt16LE(cextra.length, 30);
    ch.writeUInt16LE(0, 32); // comment
    ch.writeUInt16LE(0, 34); // disk
    ch.writeUInt16LE(0, 36); // internal attrs
    ch.writeUInt32LE(0, 38); // external attrs
    ch.writeUInt32LE(bigOffset ? 0xffffffff : localOffset, 42);
    this.central.push(ch, nameBuf, cextra);
    this.count++;
  }

  finish(): void {
    const cdOffset = this.offset;
    for (const b of this.central) this.write(b);
    const cdSize = this.offset - cdOffset;
    const zip64 = this.forceZip64 || this.count >= 0xffff || cdOffset >= 0xffffffff || cdSize >= 0xffffffff;
    if (zip64) {
      const recPos = this.offset;
      const rec = Buffer.alloc(56);
      rec.writeUInt32LE(SIG_ZIP64_EOCD, 0);
      rec.writeBigUInt64LE(44n, 4); // size of the rest of the record
      rec.writeUInt16LE(45, 12);
      rec.writeUInt16LE(45, 14);
      rec.writeUInt32LE(0, 16);
      rec.writeUInt32LE(0, 20);
      rec.writeBigUInt64LE(BigInt(this.count), 24);
      rec.writeBigUInt64LE(BigInt(this.count), 32);
      rec.writeBigUInt64LE(BigInt(cdSize), 40);
      rec.writeBigUInt64LE(BigInt(cdOffset), 48);
      this.write(rec);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(SIG_ZIP64_LOCATOR, 0);
      loc.writeUInt32LE(0, 4);
      loc.writeBigUInt64LE(BigInt(recPos), 8);
      loc.writeUInt32LE(1, 16);
      this.write(loc);
    }
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(SIG_EOCD, 0);
    const n = zip64 ? 0xffff : this.count;
    eocd.writeUInt16LE(n, 8);
    eocd.writeUInt16LE(n, 10);
    eocd.writeUInt32LE(zip64 ? 0xffffffff : cdSize, 12);
    eocd.writeUInt32LE(zip64 ? 0xffffffff : cdOffset, 16);
    eocd.writeUInt16LE(0, 20);
    this.write(eocd);
    this.flush();
  }
}

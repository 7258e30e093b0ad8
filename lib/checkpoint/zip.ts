/**
 * The zip container of torch.save and TorchScript archives: a random-access reader of the central
 * directory and its records, and a streaming writer of STORED records aligned like PyTorch's.
 *
 * The reader treats the file as hostile. Its limits live here:
 *
 *  - every record must lie in its own byte range: local header + name + extra + data of one entry
 *    may not reach the next entry's local header (nor the central directory), so two entries can
 *    never share or overlap bytes (ERR_OVERLAP);
 *  - the local header must name the same entry, with the same compression method, as the central
 *    directory (ERR_IO);
 *  - bytes are inflated only up to the size the central directory declares, and only after the
 *    caller has accepted that size ({@link ZipReader.read}'s `limit`; ERR_LIMIT above it); a DEFLATE
 *    record claiming more than DEFLATE's maximum ratio (1032:1) is refused before inflating, and
 *    one above the caller's `maxRatio` (past 1 MiB) too (ERR_LIMIT);
 *  - the output must inflate to exactly the declared size and match the CRC-32.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';

import { CheckpointError, ioError } from './errors';
import { quote } from './escape';
import { allocTensorBytes } from './alloc';

export interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
  /** Where the next entry's local header (or the central directory) starts: this entry's bytes end before it. */
  limit: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
/** Largest single Buffer read at once (the fs API limit). */
export const MAX_RECORD = 0x7fffffff;
/** DEFLATE cannot expand more than 1032:1 (258-byte matches coded in 2 bits); a larger claim is a lie. */
const MAX_DEFLATE_RATIO = 1032;
/**
 * The compression ratio a DEFLATE record above {@link RATIO_FREE_BYTES} may have unless the caller
 * allows more: the one default of every reader of zip archives (torch.save, TorchScript, .pt2, .npz).
 */
export const DEFAULT_MAX_DEFLATE_RATIO = 100;
/** Records up to this size may inflate at any ratio (a caller's `maxRatio` applies above it). */
export const RATIO_FREE_BYTES = 1024 * 1024;

/** Random-access reader of a zip file's central directory and records. */
export class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  /** Entry names in central-directory order. */
  readonly order: string[] = [];
  readonly size: number;

  constructor(readonly file: string, private readonly fd: number) {
    try {
      this.size = fs.fstatSync(fd).size;
    } catch (e) {
      throw ioError(file, 'stat file', e);
    }
    this.parseDirectory();
  }

  /** Reads exactly `length` bytes at `position` (ERR_TRUNCATED past the end of the file). */
  readAt(position: number, length: number, what: string): Buffer {
    this.checkRange(position, length, what); // before allocating
    return this.readInto(Buffer.allocUnsafeSlow(length), position, what) as Buffer;
  }

  /** Throws unless `length` bytes at `position` lie inside the file and fit one read. */
  checkRange(position: number, length: number, what: string): void {
    if (position < 0 || position + length > this.size) {
      throw new CheckpointError('ERR_TRUNCATED', `${what} (bytes ${position}..${position + length}) extends past the end of the ${this.size}-byte file`, { file: this.file });
    }
    if (length > MAX_RECORD) {
      throw new CheckpointError('ERR_FILE_TOO_LARGE', `${what} is ${length} bytes, larger than the ${MAX_RECORD}-byte limit of one read`, { file: this.file });
    }
  }

  /** Reads `into.length` bytes at `position` into `into`. */
  readInto(into: Uint8Array, position: number, what: string): Uint8Array {
    const length = into.length;
    this.checkRange(position, length, what);
    const buf = into;
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

  /** The first bytes of the file (for format sniffing by the caller). */
  static isZip(head: Uint8Array): boolean {
    return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  }

  private parseDirectory(): void {
    const file = this.file;
    const head = this.readAt(0, Math.min(this.size, 4), 'file header');
    if (!ZipReader.isZip(head)) {
      throw new CheckpointError('ERR_IO', 'not a zip archive (no zip signature at the start of the file)', { file });
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
    // Each central entry takes >= 46 bytes: a count the directory cannot hold is a lie.
    if (count * 46 > cdSize) {
      throw new CheckpointError('ERR_IO', `zip central directory of ${cdSize} bytes cannot hold the ${count} entries it declares`, { file });
    }
    const cd = this.readAt(cdOffset, cdSize, 'zip central directory');
    let p = 0;
    const list: ZipEntry[] = [];
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
            if (q + 8 > Math.min(e + 4 + len, eEnd)) throw new CheckpointError('ERR_IO', `corrupt zip64 extra field of ${quote(name)}`, { file });
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
      if ((flags & 0x1) !== 0) throw new CheckpointError('ERR_IO', `zip entry ${quote(name)} is encrypted`, { file });
      if (this.entries.has(name)) {
        throw new CheckpointError('ERR_DUPLICATE_KEY', `zip entry ${quote(name)} appears twice`, { file });
      }
      const entry: ZipEntry = { name, method, flags, crc, compressedSize, size, localOffset, limit: cdOffset };
      this.entries.set(name, entry);
      this.order.push(name);
      list.push(entry);
      p += 46 + nameLen + extraLen + commentLen;
    }
    // Every record lives between its local header and the next one (or the central directory).
    const byOffset = [...list].sort((a, b) => a.localOffset - b.localOffset);
    for (let i = 0; i < byOffset.length; i++) {
      const a = byOffset[i]!;
      const next = byOffset[i + 1];
      a.limit = next !== undefined ? next.localOffset : cdOffset;
      const minEnd = a.localOffset + 30 + Buffer.byteLength(a.name, 'utf8') + a.compressedSize;
      if (next !== undefined && minEnd > next.localOffset) {
        const [x, y] = [a.name, next.name].sort();
        throw new CheckpointError('ERR_OVERLAP', `zip entries ${quote(x!)} and ${quote(y!)} overlap (bytes from ${next.localOffset} are claimed by both)`, { file });
      }
      if (minEnd > cdOffset) {
        throw new CheckpointError('ERR_OVERLAP', `zip entry ${quote(a.name)} (bytes ${a.localOffset}..${minEnd}) overlaps the central directory at ${cdOffset}`, { file });
      }
    }
  }

  /**
   * The (decompressed, CRC-checked) bytes of a record. `limit` is the most bytes the caller
   * accepts for it: a larger declared size is refused (ERR_LIMIT) before anything is read or
   * inflated.
   */
  read(entry: ZipEntry, limit: number, what = `zip entry ${quote(entry.name)}`, maxRatio = Infinity): Uint8Array {
    const file = this.file;
    if (entry.size > limit) {
      throw new CheckpointError('ERR_LIMIT', `${what} declares ${entry.size} bytes, above the limit of ${limit} bytes for it`, { file });
    }
    if (entry.method === 8 && entry.size > RATIO_FREE_BYTES && entry.size > entry.compressedSize * maxRatio) {
      throw new CheckpointError('ERR_LIMIT',
        `${what} would inflate ${entry.compressedSize} bytes to ${entry.size} (more than ${maxRatio}:1, the limit for compressed records; `
        + 'pass a larger maxDeflateRatio to read it)', { file });
    }
    const dataStart = this.dataStart(entry, what);
    let data: Uint8Array;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) {
        throw new CheckpointError('ERR_IO', `stored ${what} has compressed size ${entry.compressedSize} != size ${entry.size}`, { file });
      }
      this.checkRange(dataStart, entry.size, what);
      data = this.readInto(allocTensorBytes(entry.size), dataStart, what);
    } else if (entry.method === 8) {
      if (entry.size > entry.compressedSize * MAX_DEFLATE_RATIO + 1024) {
        throw new CheckpointError('ERR_IO', `${what} claims to inflate ${entry.compressedSize} bytes to ${entry.size}, beyond DEFLATE's maximum ratio`, { file });
      }
      const raw = this.readAt(dataStart, entry.compressedSize, what);
      try {
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, Math.min(entry.size, MAX_RECORD)) });
      } catch (e) {
        throw inflateError(e, entry, what, file);
      }
      if (data.length !== entry.size) {
        throw new CheckpointError('ERR_IO', `${what} inflates to ${data.length} bytes, expected ${entry.size}`, { file });
      }
    } else {
      throw new CheckpointError('ERR_IO', `${what} uses unsupported compression method ${entry.method}`, { file });
    }
    if (crc32(data) !== entry.crc) {
      throw new CheckpointError('ERR_IO', `CRC-32 mismatch in ${what}: the file is corrupt`, { file });
    }
    return data;
  }

  /**
   * The first bytes of a record, at most `n` (fewer if the record is shorter), without reading or
   * inflating the rest: for a format header that says how large the record must be before the
   * caller accepts its size. Not CRC-checked (the whole record is, when read).
   */
  readPrefix(entry: ZipEntry, n: number, what = `zip entry ${quote(entry.name)}`): Uint8Array {
    const file = this.file;
    const dataStart = this.dataStart(entry, what);
    const want = Math.min(n, entry.size);
    if (entry.method === 0) return this.readAt(dataStart, Math.min(want, entry.compressedSize), what);
    if (entry.method !== 8) throw new CheckpointError('ERR_IO', `${what} uses unsupported compression method ${entry.method}`, { file });
    // Inflate a compressed prefix only: DEFLATE needs at least want / 1032 input bytes for `want`
    // output bytes, and a prefix of c bytes never yields more than 1032·c + 258.
    let c = Math.min(entry.compressedSize, Math.max(64, Math.ceil(want / MAX_DEFLATE_RATIO) + 16));
    for (;;) {
      const raw = this.readAt(dataStart, c, what);
      let out: Buffer;
      try {
        out = zlib.inflateRawSync(raw, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: c * MAX_DEFLATE_RATIO + 1024 });
      } catch (e) {
        throw inflateError(e, entry, what, file);
      }
      if (out.length >= want || c === entry.compressedSize) return new Uint8Array(out.buffer, out.byteOffset, Math.min(out.length, want));
      c = Math.min(entry.compressedSize, c * 4);
    }
  }

  /** Where a record's data starts, after checking its local header against the central directory. */
  private dataStart(entry: ZipEntry, what: string): number {
    const file = this.file;
    const lh = this.readAt(entry.localOffset, 30, `local header of ${what}`);
    if (lh.readUInt32LE(0) !== SIG_LOCAL) {
      throw new CheckpointError('ERR_IO', `bad local header signature for ${what}`, { file });
    }
    const localNameLen = lh.readUInt16LE(26);
    const localName = this.readAt(entry.localOffset + 30, localNameLen, `local header of ${what}`)
      .toString((lh.readUInt16LE(6) & 0x800) !== 0 ? 'utf8' : 'latin1');
    if (localName !== entry.name) {
      throw new CheckpointError('ERR_IO', `local header of zip entry ${quote(entry.name)} names ${quote(localName)}: the archive is inconsistent`, { file });
    }
    if (lh.readUInt16LE(8) !== entry.method) {
      throw new CheckpointError('ERR_IO', `local header of zip entry ${quote(entry.name)} says compression method ${lh.readUInt16LE(8)}, the central directory ${entry.method}`, { file });
    }
    const dataStart = entry.localOffset + 30 + localNameLen + lh.readUInt16LE(28);
    if (dataStart + entry.compressedSize > entry.limit) {
      throw new CheckpointError('ERR_OVERLAP', `zip entry ${quote(entry.name)} (bytes ${entry.localOffset}..${dataStart + entry.compressedSize}) overlaps the next record or the central directory at ${entry.limit}`, { file });
    }
    return dataStart;
  }
}

/** A zlib failure while inflating `entry`, said in the archive's terms. */
function inflateError(e: unknown, entry: ZipEntry, what: string, file: string): CheckpointError {
  // maxOutputLength reached: the stream holds more than the central directory declares.
  if ((e as NodeJS.ErrnoException)?.code === 'ERR_BUFFER_TOO_LARGE')
    return new CheckpointError('ERR_IO', `${what} inflates to more than the ${entry.size} bytes the zip directory declares for it: the archive is corrupt or crafted`, { file, cause: e });
  return new CheckpointError('ERR_IO', `cannot inflate ${what}: ${e instanceof Error ? e.message : String(e)}`, { file, cause: e });
}

function safeNumber(v: bigint, file: string, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError('ERR_IO', `${what} ${v} is out of range`, { file });
  return Number(v);
}

// CRC-32: zlib.crc32 (Node >= 20.15 / 22.2), else a table implementation.
let crcTable: Int32Array | undefined;
export function crc32(data: Uint8Array): number {
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
// Writing

const ALIGN = 64; // torch's kFieldAlignment
const COALESCE = 1 << 20;

/** Streams STORED records to `fd`, 64-byte aligning each record's data like torch's PyTorchStreamWriter. */
export class ZipWriter {
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

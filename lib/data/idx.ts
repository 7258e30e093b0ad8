/**
 * Parser for the IDX format used by MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/):
 *
 *   bytes 0-1  0x00 0x00
 *   byte  2    element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
 *   byte  3    number of dimensions d (>= 1)
 *   then       d big-endian uint32 dimension sizes
 *   then       prod(dims) elements, big-endian
 *
 * Files may be gzip-compressed (detected by the 0x1f 0x8b gzip magic, not by the file name).
 * Every malformation (bad magic, unknown type, truncated header or data, trailing bytes, corrupt
 * gzip) throws an `IdxFormatError` whose message starts with the file name.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';

export class IdxFormatError extends Error {
  /** The file (or label) the bad data came from. */
  readonly file: string;
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'IdxFormatError';
    this.file = file;
  }
}

export type IdxDtype = 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';
export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxArray {
  dtype: IdxDtype;
  dims: number[];
  data: IdxData;
}

const TYPES: Record<number, { dtype: IdxDtype; size: number }> = {
  0x08: { dtype: 'uint8', size: 1 },
  0x09: { dtype: 'int8', size: 1 },
  0x0b: { dtype: 'int16', size: 2 },
  0x0c: { dtype: 'int32', size: 4 },
  0x0d: { dtype: 'float32', size: 4 },
  0x0e: { dtype: 'float64', size: 8 },
};

/**
 * Parses an uncompressed IDX buffer. `file` names the source in error messages.
 * Trailing bytes after the data are an error (they signal a wrong header).
 */
export function parseIdx(buf: Uint8Array, file: string): IdxArray {
  if (buf.length < 4) throw new IdxFormatError(file, `truncated idx header: expected at least 4 bytes, got ${buf.length}`);
  if (buf[0] !== 0 || buf[1] !== 0) {
    throw new IdxFormatError(file, `bad idx magic number: first two bytes must be 0x00 0x00, got 0x${hex(buf[0]!)} 0x${hex(buf[1]!)}`);
  }
  const t = TYPES[buf[2]!];
  if (!t) throw new IdxFormatError(file, `unknown idx element type 0x${hex(buf[2]!)}`);
  const nd = buf[3]!;
  if (nd === 0) throw new IdxFormatError(file, 'idx header declares 0 dimensions');
  const headerLen = 4 + 4 * nd;
  if (buf.length < headerLen) {
    throw new IdxFormatError(file, `truncated idx header: ${nd} dimensions need ${headerLen} bytes, got ${buf.length}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims: number[] = [];
  let n = 1;
  for (let i = 0; i < nd; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    n *= d;
  }
  const dataLen = n * t.size;
  const got = buf.length - headerLen;
  if (got < dataLen) {
    throw new IdxFormatError(
      file,
      `truncated idx data: dims [${dims.join(', ')}] of ${t.dtype} need ${dataLen} bytes after the ${headerLen}-byte header, got ${got}`,
    );
  }
  if (got > dataLen) {
    throw new IdxFormatError(file, `${got - dataLen} unexpected trailing bytes after idx data of dims [${dims.join(', ')}]`);
  }
  let data: IdxData;
  switch (t.dtype) {
    case 'uint8': {
      // Copy (a Buffer's subarray/slice would alias Node's shared pool).
      const a = new Uint8Array(n);
      a.set(buf.subarray(headerLen, headerLen + n));
      data = a;
      break;
    }
    case 'int8': {
      const a = new Int8Array(n);
      a.set(new Int8Array(buf.buffer, buf.byteOffset + headerLen, n));
      data = a;
      break;
    }
    case 'int16': {
      const a = new Int16Array(n);
      for (let i = 0; i < n; i++) a[i] = view.getInt16(headerLen + 2 * i, false);
      data = a;
      break;
    }
    case 'int32': {
      const a = new Int32Array(n);
      for (let i = 0; i < n; i++) a[i] = view.getInt32(headerLen + 4 * i, false);
      data = a;
      break;
    }
    case 'float32': {
      const a = new Float32Array(n);
      for (let i = 0; i < n; i++) a[i] = view.getFloat32(headerLen + 4 * i, false);
      data = a;
      break;
    }
    case 'float64': {
      const a = new Float64Array(n);
      for (let i = 0; i < n; i++) a[i] = view.getFloat64(headerLen + 8 * i, false);
      data = a;
      break;
    }
  }
  return { dtype: t.dtype, dims, data };
}

/** Un-gzips `buf` if it starts with the gzip magic; errors name `file`. */
export function maybeGunzip(buf: Uint8Array, file: string): Uint8Array {
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    // Inflate no further than the size the gzip trailer declares (ISIZE, the size mod 2^32: IDX
    // files are far smaller), which DEFLATE's maximum ratio (1032:1) bounds by the file's size.
    if (buf.length < 18) throw new IdxFormatError(file, 'corrupt or truncated gzip stream (shorter than a gzip header and trailer)');
    const declared = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).readUInt32LE(buf.length - 4);
    if (declared > buf.length * 1032) throw new IdxFormatError(file, `corrupt or truncated gzip stream: its trailer declares ${declared} bytes from ${buf.length}, beyond DEFLATE's maximum ratio`);
    try {
      const out = zlib.gunzipSync(buf, { maxOutputLength: Math.max(1, declared) });
      if (out.length !== declared) throw new IdxFormatError(file, `corrupt or truncated gzip stream: it inflates to ${out.length} bytes, its trailer declares ${declared}`);
      return out;
    } catch (e) {
      if (e instanceof IdxFormatError) throw e;
      if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw new IdxFormatError(file, `corrupt or truncated gzip stream: it inflates to more than the ${declared} bytes its trailer declares`);
      throw new IdxFormatError(file, `corrupt or truncated gzip stream (${(e as Error).message})`);
    }
  }
  return buf;
}

/** Reads and parses an IDX file, gzip-compressed or not. */
export function readIdxFile(file: string): IdxArray {
  return parseIdx(maybeGunzip(fs.readFileSync(file), file), file);
}

function hex(b: number): string {
  return b.toString(16).padStart(2, '0');
}

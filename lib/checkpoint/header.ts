/**
 * The safetensors header: parsing with full validation, and serialization.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *
 *     [u64 little-endian N][N bytes of UTF-8 JSON, space-padded][data section]
 *
 * The JSON maps tensor names to `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}`
 * (offsets relative to the start of the data section) and may hold
 * `"__metadata__": {string: string}`.
 *
 * Validation decisions:
 *  - Holes: by default the data section must be covered exactly by the tensors
 *    (no gap between tensors, none at the start, no trailing bytes) as the
 *    specification requires ("cannot contain holes", which prevents polyglot
 *    files) and as the reference implementation enforces. `allowHoles: true`
 *    accepts gaps and trailing bytes; overlaps are always rejected.
 *  - A zero-length tensor lying strictly inside another tensor's range is an overlap.
 *  - Unknown extra fields in a tensor entry are ignored (as the reference does).
 *  - `"__metadata__": null` is accepted as "no metadata" (the reference treats
 *    it as an absent optional); anything else must be a string -> string map.
 *  - Padding after the JSON may be any JSON whitespace (writers use spaces).
 *  - Tensor order ("file order") is ascending data offset; ties (zero-length
 *    tensors) keep the textual order of the header keys.
 */
import { CheckpointError } from './errors';
import { DType, DTYPE_BYTES, dtypeFromSafetensors, dtypeToSafetensors, numel, SAFETENSORS_DTYPE_CODES, shapeProblem } from './dtype';
import { escapeControl, quote } from './escape';
import { MAX_JSON_DEPTH, jsonDepthExceeded, scanJsonKeys } from './json-scan';

/** Default cap on the header length, as in the reference implementation. */
export const DEFAULT_MAX_HEADER_BYTES = 100_000_000;

/** Key under which safetensors stores free-form string metadata. */
export const METADATA_KEY = '__metadata__';

/** One validated tensor entry of a header. */
export interface HeaderEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Offset of the first byte, relative to the data section. */
  begin: number;
  /** Offset past the last byte, relative to the data section. */
  end: number;
}

/** A validated header. */
export interface ParsedHeader {
  /** Tensors in file order (ascending offset). */
  entries: HeaderEntry[];
  metadata: Record<string, string>;
}

export interface HeaderValidationOptions {
  /** Accept gaps between tensors and trailing bytes (default false, per the spec). */
  allowHoles?: boolean;
}

/**
 * Reads and checks the 8-byte header length against the file size and the cap.
 * @param prefix at least the first 8 bytes of the file
 * @returns N, the JSON header length; the data section starts at 8 + N
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, file: string, maxHeaderBytes: number): number {
  if (fileSize < 8 || prefix.byteLength < 8) {
    throw new CheckpointError('ERR_TRUNCATED', `file is ${fileSize} bytes, shorter than the 8-byte header length`, { file });
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(maxHeaderBytes)) {
    throw new CheckpointError('ERR_HEADER_TOO_LARGE', `header length ${n} exceeds the maximum of ${maxHeaderBytes} bytes`, { file });
  }
  if (n > BigInt(fileSize - 8)) {
    throw new CheckpointError('ERR_HEADER_BOUNDS', `header length ${n} runs past the end of the file (${fileSize} bytes)`, { file });
  }
  return Number(n);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** In a header, a duplicate concerns the tensor named by the top-level key leading to it. */
function headerTensorFor(key: string, path: string[]): string | undefined {
  const name = path.length === 0 ? key : path[0]!;
  return name === METADATA_KEY ? undefined : name;
}

/**
 * Decodes JSON text from bytes and parses it, checking it is an object without
 * duplicate keys. Shared with the sharded index reader.
 * @param tensorFor names the tensor a duplicate key concerns, for the error
 * @returns the object plus key order information
 */
export function parseJsonObject(
  bytes: Uint8Array,
  file: string,
  what: string,
  tensorFor: (key: string, path: string[]) => string | undefined = headerTensorFor,
): { value: Record<string, unknown>; keys: string[]; nestedKeys: Map<string, string[]> } {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (e) {
    throw new CheckpointError('ERR_JSON', `${what} is not valid UTF-8`, { file, cause: e });
  }
  const deep = jsonDepthExceeded(text, MAX_JSON_DEPTH);
  if (deep >= 0) {
    throw new CheckpointError('ERR_JSON', `${what} nests arrays/objects deeper than ${MAX_JSON_DEPTH} levels (at character ${deep})`, { file });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new CheckpointError('ERR_JSON', `${what} is not valid JSON: ${reason}`, { file, cause: e });
  }
  if (!isPlainObject(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
    throw new CheckpointError('ERR_JSON', `${what} must be a JSON object, got ${kind}`, { file });
  }
  const scan = scanJsonKeys(text);
  if (scan.duplicate !== undefined) {
    const { key, path } = scan.duplicate;
    const where = path.length === 0 ? `the top level of the ${what}` : `${path.map((p) => quote(p)).join(' > ')}`;
    const tensorName = tensorFor(key, path);
    throw new CheckpointError('ERR_DUPLICATE_KEY', `duplicate key ${quote(key)} in ${where}`, {
      file,
      ...(tensorName !== undefined ? { tensor: tensorName } : {}),
    });
  }
  return { value, keys: scan.topLevelKeys, nestedKeys: scan.secondLevelKeys };
}

function describe(x: unknown): string {
  const s = escapeControl(JSON.stringify(x) ?? String(x));
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Parses and validates a header.
 * @param headerBytes the N JSON bytes (after the 8-byte length)
 * @param dataLength size of the data section (file size - 8 - N)
 */
export function parseHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  file: string,
  opts: HeaderValidationOptions = {},
): ParsedHeader {
  const { value: header, keys } = parseJsonObject(headerBytes, file, 'header');

  // __metadata__
  const metadata: Record<string, string> = {};
  const rawMeta = header[METADATA_KEY];
  if (rawMeta !== undefined && rawMeta !== null) {
    if (!isPlainObject(rawMeta)) {
      throw new CheckpointError('ERR_METADATA', `${METADATA_KEY} must be an object of strings, got ${describe(rawMeta)}`, { file });
    }
    for (const [k, v] of Object.entries(rawMeta)) {
      if (typeof v !== 'string') {
        throw new CheckpointError('ERR_METADATA', `${METADATA_KEY}[${quote(k)}] must be a string, got ${describe(v)}`, { file });
      }
      metadata[k] = v;
    }
  }

  // Tensor entries, in textual order.
  const entries: HeaderEntry[] = [];
  for (const name of keys) {
    if (name === METADATA_KEY) continue;
    const raw = header[name];
    const where = { file, tensor: name };
    if (!isPlainObject(raw)) throw new CheckpointError('ERR_SCHEMA', `entry must be an object, got ${describe(raw)}`, where);
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (!(field in raw)) throw new CheckpointError('ERR_SCHEMA', `entry lacks "${field}"`, where);
    }
    const code = raw['dtype'];
    const dtype = typeof code === 'string' ? dtypeFromSafetensors(code) : undefined;
    if (dtype === undefined) {
      const known = Object.values(SAFETENSORS_DTYPE_CODES).join(', ');
      throw new CheckpointError('ERR_DTYPE', `unknown or unsupported dtype ${describe(code)} (supported: ${known})`, where);
    }
    const shape = raw['shape'];
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw new CheckpointError('ERR_SHAPE', `shape must be an array of non-negative integers, got ${describe(shape)}`, where);
    }
    const offsets = raw['data_offsets'];
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw new CheckpointError('ERR_OFFSETS', `data_offsets must be two non-negative integers [begin, end] with begin <= end, got ${describe(offsets)}`, where);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLength) {
      throw new CheckpointError('ERR_TRUNCATED', `data_offsets [${begin},${end}] run past the end of the data section (${dataLength} bytes); the file may be truncated`, where);
    }
    const dims = shape as number[];
    const big = shapeProblem(dims, DTYPE_BYTES[dtype]);
    if (big) throw new CheckpointError('ERR_SHAPE', big, where);
    const expected = numel(dims) * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      throw new CheckpointError('ERR_SIZE_MISMATCH', `data_offsets [${begin},${end}] hold ${end - begin} bytes but ${dtype}[${dims.join(',')}] needs ${expected}`, where);
    }
    entries.push({ name, dtype, shape: dims.slice(), begin, end });
  }

  // File order; overlap and hole checks.
  const order = entries.map((e, i) => ({ e, i }));
  order.sort((x, y) => x.e.begin - y.e.begin || x.e.end - y.e.end || x.i - y.i);
  const sorted = order.map((x) => x.e);
  let covered = 0; // end of the bytes covered so far
  let coveredBy: HeaderEntry | undefined;
  for (const e of sorted) {
    if (e.begin < covered) {
      throw new CheckpointError('ERR_OVERLAP', `bytes [${e.begin},${e.end}) overlap tensor ${quote(coveredBy!.name)} [${coveredBy!.begin},${coveredBy!.end})`, { file, tensor: e.name });
    }
    if (!opts.allowHoles && e.begin > covered) {
      throw new CheckpointError('ERR_GAP', `data section has a hole: bytes [${covered},${e.begin}) before this tensor belong to no tensor`, { file, tensor: e.name });
    }
    covered = e.end; // e.begin >= covered here, so this never moves backwards
    coveredBy = e;
  }
  if (!opts.allowHoles && covered !== dataLength) {
    throw new CheckpointError('ERR_GAP', `data section has ${dataLength - covered} trailing bytes [${covered},${dataLength}) that belong to no tensor`, { file });
  }
  return { entries: sorted, metadata };
}

/** What the writer needs to know of a tensor to lay out the header. */
export interface HeaderSpec {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

/**
 * Serializes a header for tensors stored contiguously in the given order:
 * the 8-byte length followed by the JSON, padded with spaces so that the data
 * section starts at a multiple of 8 (as the reference implementation does).
 * `__metadata__` comes first when given. Tensor names keep their order
 * (the JSON is assembled by hand, since JS objects reorder integer-like keys).
 * @returns the bytes to write before the data, and the data section length
 */
export function encodeHeader(specs: readonly HeaderSpec[], metadata?: Record<string, string>): { bytes: Buffer; dataLength: number } {
  const parts: string[] = [];
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  let offset = 0;
  for (const s of specs) {
    const size = numel(s.shape) * DTYPE_BYTES[s.dtype];
    const entry = { dtype: dtypeToSafetensors(s.dtype), shape: s.shape, data_offsets: [offset, offset + size] };
    parts.push(`${JSON.stringify(s.name)}:${JSON.stringify(entry)}`);
    offset += size;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = json.length + ((8 - (json.length % 8)) % 8);
  const bytes = Buffer.alloc(8 + padded, 0x20);
  bytes.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(bytes, 8);
  return { bytes, dataLength: offset };
}

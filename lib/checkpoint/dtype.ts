/**
 * Dtypes of raw (engine-independent) tensors, their safetensors codes, and
 * bit-exact float16 / bfloat16 <-> float32 conversion.
 *
 * All tensor bytes are little-endian, as in the safetensors format. Every
 * platform Node supports in practice is little-endian; {@link typedView}
 * refuses to run on a big-endian host rather than silently return garbage.
 */

/** Element types supported by the checkpoint code. */
export type DType =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'bfloat16'
  | 'int64'
  | 'int32'
  | 'int16'
  | 'int8'
  | 'uint8'
  | 'bool';

/** The floating-point subset of {@link DType}. */
export type FloatDType = 'float32' | 'float64' | 'float16' | 'bfloat16';

/**
 * A tensor as raw little-endian bytes.
 *
 * When it comes from `readSafetensors`, `data` is a view into the buffer
 * holding the whole file (zero-copy). Such views keep that whole buffer
 * alive, and are not necessarily aligned to the dtype size (safetensors
 * does not require aligned offsets), so use {@link typedView}, which copies
 * only when needed, instead of `new Float32Array(data.buffer, ...)`.
 */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** All supported dtypes. */
export const DTYPES: readonly DType[] = Object.freeze([
  'float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool',
] as const);

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = Object.freeze({
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
});

/** Our dtype name -> the safetensors header code. */
export const SAFETENSORS_DTYPE_CODES: Readonly<Record<DType, string>> = Object.freeze({
  float32: 'F32', float64: 'F64', float16: 'F16', bfloat16: 'BF16',
  int64: 'I64', int32: 'I32', int16: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
});

const FROM_SAFETENSORS: ReadonlyMap<string, DType> = new Map(
  (Object.entries(SAFETENSORS_DTYPE_CODES) as Array<[DType, string]>).map(([d, c]) => [c, d]),
);

/** Bytes per element of `dtype`. */
export function dtypeSize(dtype: DType): number {
  return DTYPE_BYTES[dtype];
}

/** Type guard for {@link DType}. */
export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, x);
}

/** True for float32 / float64 / float16 / bfloat16. */
export function isFloatDType(dtype: DType): dtype is FloatDType {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'float16' || dtype === 'bfloat16';
}

/** Safetensors code (`"F32"`, `"BF16"`, ...) -> dtype, or undefined if unsupported. */
export function dtypeFromSafetensors(code: string): DType | undefined {
  return FROM_SAFETENSORS.get(code);
}

/** Dtype -> safetensors code. */
export function dtypeToSafetensors(dtype: DType): string {
  return SAFETENSORS_DTYPE_CODES[dtype];
}

/** Product of the dimensions (1 for a scalar, `[]`). May exceed 2^53 for absurd shapes; callers compare. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Why libtorch could not describe a tensor of `shape` with elements of `elementBytes`, or
 * undefined: its sizes, contiguous strides and byte count must be exact integers (the product of
 * the non-zero dimensions, which an empty tensor's strides still multiply). Readers check this on
 * every shape a file declares, so `[0, 2^62, 2^62]` is an error naming the tensor, not libtorch's
 * "Storage size calculation overflowed".
 */
export function shapeProblem(shape: readonly number[], elementBytes: number): string | undefined {
  let span = elementBytes;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) return `shape [${shape.join(',')}] has a dimension that is not a non-negative integer`;
    if (d > 0) span *= d;
  }
  if (!Number.isSafeInteger(span)) return `shape [${shape.join(',')}] is too large: its dimensions multiply to more than ${Number.MAX_SAFE_INTEGER} bytes`;
  return undefined;
}

/** Expected byte length of a tensor of `dtype` and `shape`. */
export function byteLengthOf(dtype: DType, shape: readonly number[]): number {
  return numel(shape) * DTYPE_BYTES[dtype];
}

// ---------------------------------------------------------------------------
// float16 / bfloat16 <-> float32 scalar conversions

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The IEEE-754 binary32 bit pattern of `x` (rounded to float32 first). */
export function float32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

/** The float32 value with bit pattern `bits`. */
export function float32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0]!;
}

/**
 * float32 -> IEEE half (binary16) bit pattern, rounding to nearest, ties to even.
 * `x` is first rounded to float32 (the conversion is defined on float32 values).
 * Overflow gives +/-Infinity, tiny values become subnormals or +/-0, NaN stays a
 * (quiet) NaN keeping the top payload bits.
 */
export function float32ToFloat16Bits(x: number): number {
  const f = float32Bits(x);
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 127 + 15; // re-biased exponent
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> Inf
  if (e <= 0) {
    // Result is subnormal (or zero). Values below 2^-25 round to zero.
    if (e < -10) return sign;
    const m = mant | 0x800000; // restore the implicit bit (24 significant bits)
    const shift = 14 - e; // 14..24
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++; // may carry into the smallest normal: correct
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++; // carry may reach 0x7c00 = Inf: correct
  return sign | half;
}

/** IEEE half bit pattern -> its (exact) value as a number. */
export function float16BitsToFloat32(h: number): number {
  const sign = (h & 0x8000) !== 0 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * float32 -> bfloat16 bit pattern, rounding to nearest, ties to even
 * (`x` is first rounded to float32). NaN stays a quiet NaN of the same sign.
 */
export function float32ToBFloat16Bits(x: number): number {
  const f = float32Bits(x);
  if ((f & 0x7fffffff) > 0x7f800000) return ((f >>> 16) | 0x0040) & 0xffff;
  // f + bias < 2^32 for every non-NaN f, so plain arithmetic is exact.
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 bit pattern -> its (exact) value. */
export function bfloat16BitsToFloat32(h: number): number {
  return float32FromBits((h & 0xffff) << 16);
}

// ---------------------------------------------------------------------------
// Array conversions

let f16Table: Float32Array | undefined;

/** 65536-entry float16 -> float32 lookup table, built on first use (256 KB). */
function float16Table(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = float16BitsToFloat32(h);
  }
  return f16Table;
}

/** Converts float16 bit patterns to float32 values. */
export function float16ToFloat32Array(bits: Uint16Array): Float32Array {
  const table = float16Table();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!;
  return out;
}

/** Converts values to float16 bit patterns (round to nearest even). */
export function float32ArrayToFloat16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16Bits(values[i]!);
  return out;
}

/** Converts bfloat16 bit patterns to float32 values. */
export function bfloat16ToFloat32Array(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i]! << 16;
  return out;
}

/** Converts values to bfloat16 bit patterns (round to nearest even). */
export function float32ArrayToBFloat16(values: ArrayLike<number>): Uint16Array {
  const src = values instanceof Float32Array ? values : Float32Array.from(values);
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const f = srcBits[i]!;
    out[i] = (f & 0x7fffffff) > 0x7f800000
      ? ((f >>> 16) | 0x0040) & 0xffff
      : ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Typed views of raw tensors

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The typed array for each dtype; float16 / bfloat16 are raw bit patterns (Uint16Array). */
export interface TypedArrayFor {
  float32: Float32Array;
  float64: Float64Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  int64: BigInt64Array;
  int32: Int32Array;
  int16: Int16Array;
  int8: Int8Array;
  uint8: Uint8Array;
  bool: Uint8Array;
}

export type TypedCtor = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): ArrayBufferView; BYTES_PER_ELEMENT: number };

/** The typed-array constructor for each dtype (float16 / bfloat16: Uint16Array of raw bits). */
export const TYPED_ARRAY_CTORS: Readonly<Record<DType, TypedCtor>> = Object.freeze({
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, bfloat16: Uint16Array,
  int64: BigInt64Array, int32: Int32Array, int16: Int16Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
});

/**
 * A typed array over the tensor's elements: a zero-copy view when `data` is
 * aligned to the element size, otherwise a view over an aligned copy
 * (safetensors offsets need not be aligned, so callers must not assume
 * `new Float32Array(t.data.buffer, t.data.byteOffset)` works).
 */
export function typedView<D extends DType>(t: RawTensor & { dtype: D }): TypedArrayFor[D] {
  if (!LITTLE_ENDIAN) throw new Error('typedView: big-endian hosts are not supported');
  const ctor = TYPED_ARRAY_CTORS[t.dtype];
  const size = ctor.BYTES_PER_ELEMENT;
  if (t.data.byteLength % size !== 0) {
    throw new RangeError(`typedView: ${t.data.byteLength} bytes is not a multiple of the ${t.dtype} size ${size}`);
  }
  let data = t.data;
  if (data.byteOffset % size !== 0) data = data.slice(); // aligned copy
  return new ctor(data.buffer, data.byteOffset, data.byteLength / size) as TypedArrayFor[D];
}

/**
 * Decodes a float (or integer/bool) tensor to float32 values. float64 and
 * int64 values are rounded to the nearest float32.
 */
export function toFloat32Array(t: RawTensor): Float32Array {
  switch (t.dtype) {
    case 'float32': {
      const v = typedView(t as RawTensor & { dtype: 'float32' });
      return v.buffer === t.data.buffer ? new Float32Array(v) : v; // always return an owned copy
    }
    case 'float16': return float16ToFloat32Array(typedView(t as RawTensor & { dtype: 'float16' }));
    case 'bfloat16': return bfloat16ToFloat32Array(typedView(t as RawTensor & { dtype: 'bfloat16' }));
    case 'int64': {
      const v = typedView(t as RawTensor & { dtype: 'int64' });
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = Number(v[i]!);
      return out;
    }
    default: return Float32Array.from(typedView(t) as ArrayLike<number>);
  }
}

/** Encodes float values as a raw float tensor of `dtype` (rounding to nearest even for float16/bfloat16). */
export function fromFloat32Array(values: ArrayLike<number>, shape: number[], dtype: FloatDType = 'float32'): RawTensor {
  if (numel(shape) !== values.length) {
    throw new RangeError(`fromFloat32Array: ${values.length} values do not fit shape [${shape.join(',')}]`);
  }
  let arr: ArrayBufferView;
  switch (dtype) {
    case 'float32': arr = Float32Array.from(values); break;
    case 'float64': arr = Float64Array.from(values); break;
    case 'float16': arr = float32ArrayToFloat16(values); break;
    case 'bfloat16': arr = float32ArrayToBFloat16(values); break;
  }
  return { dtype, shape: [...shape], data: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength) };
}

// ---------------------------------------------------------------------------
// Non-finite detection (bit tests on the raw bytes, so alignment does not matter)

/** Result of {@link findNonFinite}. */
export interface NonFiniteReport {
  /** Number of NaN / +/-Infinity elements. */
  count: number;
  /** Index of the first one, or -1. */
  first: number;
}

/** Counts NaN / +/-Infinity elements of a float tensor (0 for integer dtypes). */
export function findNonFinite(t: RawTensor): NonFiniteReport {
  const b = t.data;
  let count = 0;
  let first = -1;
  switch (t.dtype) {
    case 'float32':
      // exponent all ones: bits 30..23 -> byte 3 low 7 bits and byte 2 top bit
      for (let i = 0, o = 0; o + 3 < b.length; i++, o += 4) {
        if ((b[o + 3]! & 0x7f) === 0x7f && (b[o + 2]! & 0x80) !== 0) { if (count++ === 0) first = i; }
      }
      break;
    case 'float64':
      for (let i = 0, o = 0; o + 7 < b.length; i++, o += 8) {
        if ((b[o + 7]! & 0x7f) === 0x7f && (b[o + 6]! & 0xf0) === 0xf0) { if (count++ === 0) first = i; }
      }
      break;
    case 'float16':
      for (let i = 0, o = 0; o + 1 < b.length; i++, o += 2) {
        if ((b[o + 1]! & 0x7c) === 0x7c) { if (count++ === 0) first = i; }
      }
      break;
    case 'bfloat16':
      for (let i = 0, o = 0; o + 1 < b.length; i++, o += 2) {
        if ((b[o + 1]! & 0x7f) === 0x7f && (b[o]! & 0x80) !== 0) { if (count++ === 0) first = i; }
      }
      break;
    default:
      break;
  }
  return { count, first };
}

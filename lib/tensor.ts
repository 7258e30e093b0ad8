/**
 * Tensor: a handle on a libtorch tensor. Made from a TypedArray (without copying when the array's
 * memory is addon-owned, see {@link Tensor.from}), read back as a TypedArray, moved with `to()`,
 * released with `dispose()` or a `using` declaration. Bytes a tensor owns natively are reported to V8 as
 * external memory, so the garbage collector sees them.
 */
import { native, type NativeTensor } from './binding';
import { setTensorMemoryAllocator } from './checkpoint/alloc';
import { DTYPE_BYTES, DTYPES, isFloatDType, numel, TYPED_ARRAY_CTORS, type DType, type TypedArrayFor } from './checkpoint/dtype';
import { ArgumentError, DisposedError, DTypeError, ShapeError } from './errors';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

// Dtypes, their element sizes and typed arrays are declared once, in checkpoint/dtype.
export { DTYPES, isFloatDType, numel, type DType, type TypedArrayFor };

export type AnyTypedArray = TypedArrayFor[DType];

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = DTYPE_BYTES;

export function assertDType(d: unknown, what = 'dtype'): asserts d is DType {
  if (typeof d !== 'string' || !(DTYPES as readonly string[]).includes(d))
    throw new DTypeError(`${what}: unknown dtype ${JSON.stringify(d)} (expected one of ${DTYPES.join(', ')})`);
}

export function assertDevice(d: unknown, what = 'device'): asserts d is Device {
  if (typeof d !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(d))
    throw new ArgumentError(`${what}: expected 'cpu', 'cuda' or 'cuda:N', got ${JSON.stringify(d)}`);
}

function inferDType(a: ArrayBufferView): DType | undefined {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Int16Array) return 'int16';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Uint8Array || a instanceof Uint8ClampedArray) return 'uint8';
  return undefined; // Uint16Array: float16 or bfloat16, must be said
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function assertShape(shape: unknown, what = 'shape'): asserts shape is number[] {
  if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0))
    throw new ShapeError(`${what} must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
}

function assertAttached(data: ArrayBufferView): void {
  const buf = data.buffer as ArrayBufferLike & { detached?: boolean };
  if (buf.detached === true || (data.byteLength === 0 && isDetached(buf)))
    throw new ArgumentError("Tensor.from: the array's ArrayBuffer is detached (transferred); nothing to read");
}

function isDetached(buf: ArrayBufferLike): boolean {
  try {
    new Uint8Array(buf, 0, 0);
    return false;
  } catch {
    return true;
  }
}

/** Addon-owned, zero-filled memory (see {@link Tensor.allocArray}), or undefined without it. */
/** The addon's allocator; null without the addon (pure checkpoint reading) or with an older one. */
let sharedAllocator: ((bytes: number) => ArrayBuffer | undefined) | null | undefined;
function allocateShared(bytes: number): ArrayBuffer | undefined {
  if (sharedAllocator === undefined) {
    try {
      const b = native();
      sharedAllocator = typeof b.allocate === 'function' ? (n) => b.allocate(n) : null;
    } catch {
      sharedAllocator = null;
    }
  }
  return sharedAllocator === null ? undefined : sharedAllocator(bytes);
}

// The checkpoint readers read tensor bytes into addon-owned memory: loading stays zero-copy.
setTensorMemoryAllocator((bytes) => {
  const ab = allocateShared(bytes);
  return ab === undefined ? undefined : new Uint8Array(ab);
});

export class Tensor implements Disposable {
  /** @internal */
  private handle: NativeTensor | null;

  private constructor(handle: NativeTensor) {
    this.handle = handle;
  }

  /** @internal Wrap a native handle. */
  static wrap(handle: NativeTensor): Tensor {
    return new Tensor(handle);
  }

  /**
   * A CPU tensor holding `data`'s values. The dtype is inferred from the array type, except for
   * Uint16Array (float16 or bfloat16 bits) where it must be given.
   *
   * The zero-copy rule (docs/security.md): a tensor shares memory only with arrays over memory
   * the addon owns — {@link Tensor.allocArray}, `tensor.data()` of such a tensor, and the
   * buffers the checkpoint readers fill — and then writes to the array are seen by the tensor;
   * that memory stays alive and in place while any tensor uses it, whatever happens to the
   * ArrayBuffer (transferred, detached, collected). Any other array (a plain, resizable or
   * shared ArrayBuffer, a Buffer) is copied, so moving, shrinking or freeing it afterwards cannot
   * touch the tensor. A detached ArrayBuffer is refused with ArgumentError.
   */
  static from<D extends DType>(data: TypedArrayFor[D], shape: readonly number[], dtype?: D): Tensor {
    if (!ArrayBuffer.isView(data) || data instanceof DataView)
      throw new ArgumentError('Tensor.from: data must be a TypedArray');
    assertAttached(data);
    assertShape(shape, 'Tensor.from: shape');
    const d = dtype ?? inferDType(data);
    if (d === undefined)
      throw new DTypeError('Tensor.from: a Uint16Array holds float16 or bfloat16 bits; pass the dtype');
    assertDType(d, 'Tensor.from');
    const expected = TYPED_ARRAY_CTORS[d].name;
    const got = data.constructor.name;
    if (got !== expected && !(expected === 'Uint8Array' && got === 'Uint8ClampedArray'))
      throw new DTypeError(`Tensor.from: dtype ${d} needs a ${expected}, got a ${got}`);
    const n = numel(shape);
    const len = (data as { length: number }).length;
    if (n !== len)
      throw new ShapeError(`Tensor.from: shape ${shapeStr(shape)} holds ${n} elements, the ${got} has ${len}`);
    return new Tensor(new (native().Tensor)(data, [...shape], d));
  }

  /**
   * A zero-filled TypedArray over addon-owned memory, which {@link Tensor.from} wraps without
   * copying (the way to build large inputs in place). Falls back to an ordinary array (then
   * copied by `from`) where this Node forbids external ArrayBuffers.
   */
  static allocArray<D extends DType>(dtype: D, length: number): TypedArrayFor[D] {
    assertDType(dtype, 'Tensor.allocArray');
    if (!Number.isSafeInteger(length) || length < 0)
      throw new ArgumentError(`Tensor.allocArray: length must be a non-negative integer, got ${length}`);
    const Ctor = TYPED_ARRAY_CTORS[dtype] as unknown as new (b: ArrayBuffer | number, o?: number, n?: number) => TypedArrayFor[D];
    const ab = allocateShared(length * DTYPE_BYTES[dtype]);
    return ab === undefined ? new Ctor(length) : new Ctor(ab, 0, length);
  }

  /** A float32 tensor from plain numbers (copied). */
  static fromArray(values: ArrayLike<number>, shape: readonly number[], dtype: 'float32' | 'float64' = 'float32'): Tensor {
    const data = dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values);
    return Tensor.from(data, shape, dtype);
  }

  /** An int64 tensor from plain integers (copied), e.g. class labels. */
  static fromLabels(values: ArrayLike<number>): Tensor {
    const data = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]!);
    return Tensor.from(data, [values.length], 'int64');
  }

  /** @internal The native handle; throws DisposedError after dispose(). */
  get native(): NativeTensor {
    if (this.handle === null) throw new DisposedError('tensor has been disposed');
    return this.handle;
  }

  get shape(): number[] {
    return this.native.shape;
  }
  get dtype(): DType {
    return this.native.dtype;
  }
  get device(): string {
    return this.native.device;
  }
  get numel(): number {
    return numel(this.shape);
  }
  get nbytes(): number {
    return this.native.nbytes;
  }
  get disposed(): boolean {
    return this.handle === null;
  }

  /**
   * The values as a TypedArray: the very array the tensor was made from if it still shares it,
   * otherwise a copy. CPU tensors only (await `to('cpu')` first).
   */
  data<D extends DType = DType>(): TypedArrayFor[D] {
    return this.native.data() as TypedArrayFor[D];
  }

  /** Values as plain numbers (int64 converted with Number()). */
  toArray(): number[] {
    const d = this.data();
    return Array.from(d as ArrayLike<number | bigint>, (v) => Number(v));
  }

  /** A contiguous copy that owns its memory. */
  clone(): Tensor {
    return new Tensor(this.native.clone());
  }

  /** A copy on another device and/or in another dtype (this tensor itself if nothing changes). */
  async to(target: Device | DType | { device?: Device; dtype?: DType }): Promise<Tensor> {
    let device: Device | null = null;
    let dtype: DType | null = null;
    if (typeof target === 'string') {
      if ((DTYPES as readonly string[]).includes(target)) dtype = target as DType;
      else {
        assertDevice(target, 'Tensor.to');
        device = target;
      }
    } else {
      if (target.device !== undefined) {
        assertDevice(target.device, 'Tensor.to: device');
        device = target.device;
      }
      if (target.dtype !== undefined) {
        assertDType(target.dtype, 'Tensor.to: dtype');
        dtype = target.dtype;
      }
    }
    return new Tensor(await this.native.to(device, dtype));
  }

  /** Release the native tensor now (idempotent). Using the tensor afterwards throws DisposedError. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return this.handle === null ? 'Tensor(disposed)' : `Tensor(${shapeStr(this.shape)}, ${this.dtype}, ${this.device})`;
  }
}

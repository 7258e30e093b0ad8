/**
 * Where the readers put the bytes they read. Tensors share only memory the native addon owns
 * (JS-owned memory can be freed or moved by V8 while native code reads it: see docs/security.md),
 * so once lib/tensor.ts is loaded it installs the addon's allocator here and the bytes of a
 * checkpoint become tensors without a copy. Without the addon (pure reading), plain buffers.
 */

let allocator: ((bytes: number) => Uint8Array | undefined) | undefined;

/** Installs the allocator used for tensor bytes read from files (lib/tensor.ts does). */
export function setTensorMemoryAllocator(fn: ((bytes: number) => Uint8Array | undefined) | undefined): void {
  allocator = fn;
}

/** `bytes` of memory for tensor data (offset 0 of its own buffer, so maximally aligned). */
export function allocTensorBytes(bytes: number): Uint8Array {
  if (allocator !== undefined && bytes > 0) {
    const b = allocator(bytes);
    if (b !== undefined) return b;
  }
  const b = Buffer.allocUnsafeSlow(bytes);
  return new Uint8Array(b.buffer, b.byteOffset, bytes);
}

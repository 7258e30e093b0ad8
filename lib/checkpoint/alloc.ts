/**
 * Where the readers put the bytes they read. Tensors share only memory the native addon owns
 * (JS-owned memory can be freed or moved by V8 while native code reads it: see docs/security.md),
 * so once lib/tensor.ts is loaded it installs the addon's allocator here and the bytes of a
 * checkpoint become tensors without a copy. Without the addon (pure reading), plain buffers.
 */

import * as os from 'node:os';

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 1)} GiB`;
}

/**
 * Why `bytes` cannot be allocated for `what`, or undefined if it may be tried: sizes computed
 * from a file's or a config's numbers (shapes, widths) are checked with this before anything is
 * allocated, so an absurd size is an error naming it instead of the allocator's abort. The bound
 * is the machine's physical memory (os.totalmem()): more can never succeed in one process.
 */
export function allocationProblem(bytes: number, what: string): string | undefined {
  const total = os.totalmem();
  if (!Number.isSafeInteger(bytes) || bytes < 0) return `${what} would need ${bytes} bytes, beyond any allocation`;
  if (bytes > total) return `${what} would need ${bytes} bytes (${gib(bytes)}), more than this machine's memory (${gib(total)})`;
  return undefined;
}

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

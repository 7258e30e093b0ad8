/** Process-wide runtime settings of the native engine. */
import { native, type NativeInfo } from './binding';
import { ArgumentError } from './errors';

/**
 * Intra-op threads for libtorch (and OpenBLAS when present). libtorch's default counts physical
 * cores, which is 1 on many VMs: set this explicitly, and state it with every benchmark.
 */
export function setNumThreads(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new ArgumentError(`threads must be an integer >= 1, got ${n}`);
  native().setNumThreads(n);
}

export function getNumThreads(): number {
  return native().getNumThreads();
}

/** libtorch version, CUDA availability, and the parallel backend's settings. */
export function runtimeInfo(): NativeInfo {
  return native().info();
}

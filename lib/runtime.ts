/** Process-wide runtime settings of the native engine. */
import { native, type NativeInfo } from './binding';
import * as os from 'node:os';
import { ArgumentError } from './errors';
import { install, type InstallResult } from './install/build';
import { packageRoot, readLibtorchRecord, type LibtorchRecord } from './install/record';

/** The most threads {@link setNumThreads} accepts: 4 per logical CPU (thousands hang libtorch's pool). */
export const MAX_THREADS = Math.max(4, 4 * os.availableParallelism());

/**
 * Intra-op threads for libtorch (and OpenBLAS when present). libtorch's default counts physical
 * cores, which is 1 on many VMs: set this explicitly, and state it with every benchmark.
 */
export function setNumThreads(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_THREADS)
    throw new ArgumentError(`threads must be an integer from 1 to ${MAX_THREADS} (4 per CPU), got ${n}`);
  native().setNumThreads(n);
}

export function getNumThreads(): number {
  return native().getNumThreads();
}

/**
 * libtorch version, CUDA availability, the parallel backend's settings, and `libtorch`: the record
 * of the libtorch the addon was built against (path, version, CPU/CUDA, how it was found).
 */
export function runtimeInfo(): NativeInfo & { libtorch: LibtorchRecord | null } {
  return { ...native().info(), libtorch: libtorchBuildInfo() };
}

/**
 * The libtorch the loaded (or loadable) addon was built against — path, version, CPU or CUDA, and
 * how the installer found it — from the record CMakeLists.txt writes beside tangent.node; null
 * when the addon is not built. Does not load the addon.
 */
export function libtorchBuildInfo(): LibtorchRecord | null {
  return readLibtorchRecord(packageRoot(__dirname));
}

/**
 * Builds the native addon again against the libtorch found now (`tangent rebuild`): the same
 * steps and output as the install script. Resolves to its result; `code` is the exit status.
 */
export function rebuildNative(opts: { print?: (line: string) => void } = {}): Promise<InstallResult> {
  return install({ root: packageRoot(__dirname), force: true, print: opts.print });
}

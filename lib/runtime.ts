/** Process-wide runtime settings of the native engine. */
import { native, type JvpMethod, type NativeInfo } from './binding';
import { chooseOpenblasCoreType, type CoreTypeChoice } from './install/blas';
import * as os from 'node:os';
import { ArgumentError } from './errors';
import { install, type InstallResult } from './install/build';
import { packageRoot, readLibtorchRecord, type LibtorchRecord } from './install/record';
import { loadedLibtorchDirs } from './install/load';

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

export type { JvpMethod };
const JVP_METHODS: readonly JvpMethod[] = ['auto', 'forward-ad'];

/**
 * How JVPs — and so linearized forwards and linearized training — are computed, process-wide.
 * 'auto' (the default): a model's hand-written JVP where it has one (the built-in ViT: primal and
 * tangent side by side in plain tensor ops, native/models/vit.cpp), forward-mode AD elsewhere.
 * 'forward-ad': always libtorch's forward-mode AD (dual tensors). Both give the same values to
 * float rounding (the native tests compare them); 'forward-ad' is there to cross-check and compare.
 */
export function setJvpMethod(method: JvpMethod): void {
  if (!JVP_METHODS.includes(method))
    throw new ArgumentError(`jvp method must be one of ${JVP_METHODS.map((m) => `'${m}'`).join(', ')}, got ${JSON.stringify(method)}`);
  native().setJvpMethod(method);
}

export function getJvpMethod(): JvpMethod {
  return native().getJvpMethod();
}

/**
 * libtorch version, CUDA availability, the parallel backend's settings, the BLAS kernels in use
 * (`blas`, with `openblasCoreType`: who set OPENBLAS_CORETYPE, see lib/install/blas.ts), the JVP
 * method, and `libtorch`: the record of the libtorch the addon was built against (path, version,
 * CPU/CUDA, how it was found).
 */
export function runtimeInfo(): NativeInfo & { libtorch: LibtorchRecord | null; libtorchLoaded: string[]; openblasCoreType: CoreTypeChoice } {
  const info = native().info();
  // Which libtorch_cpu this process actually runs (from /proc/self/maps), beside the build's record.
  return { ...info, openblasCoreType: chooseOpenblasCoreType(), libtorch: libtorchBuildInfo(), libtorchLoaded: loadedLibtorchDirs() };
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

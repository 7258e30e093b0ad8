/**
 * OpenBLAS kernels on CPUs it does not recognise. OpenBLAS (Debian's libtorch does its matrix
 * products through it) picks its kernels from the CPU's family and model numbers when it loads;
 * a model it does not know — cloud VMs often report a generic "Intel Xeon Processor" — gets its
 * oldest x86-64 kernels ("Prescott", SSE3). On this project's 2-core AVX-512 VMs that made every
 * float32 GEMM 3–4× slower (a 6400×128·128×384 product: 38 GFLOP/s instead of 130) for this
 * library and for PyTorch alike. OpenBLAS reads `OPENBLAS_CORETYPE` once, as it loads; so before
 * the addon (and with it libtorch and OpenBLAS) is loaded, and only when the variable is unset,
 * it is set to the newest kernel family the CPU's own flags support: `SkylakeX` (AVX-512 F, CD,
 * BW, DQ, VL) or `Haswell` (AVX2 + FMA). Those kernels run on every CPU with those flags, and
 * for float32/float64 GEMMs they are what OpenBLAS uses on the CPUs it does recognise. Set
 * `OPENBLAS_CORETYPE` yourself to choose, or `TANGENT_OPENBLAS_CORETYPE=auto` to leave it to
 * OpenBLAS. Child processes inherit the variable (a PyTorch peer in `npm run bench` gets the same
 * kernels). `runtimeInfo().blas` reports the kernels OpenBLAS is using. (A worker thread's
 * process.env is its own copy unless the worker shares the environment: where the addon is first
 * loaded in such a worker, OpenBLAS does not see the variable; set it before starting Node.)
 */
import * as fs from 'node:fs';

export interface CoreTypeChoice {
  /** The value OPENBLAS_CORETYPE has for this process (null: unset, OpenBLAS chooses). */
  coreType: string | null;
  /** Who chose it. */
  source: 'user' | 'tangent-edit' | 'openblas';
}

/** The OpenBLAS kernel family for a CPU with these /proc/cpuinfo flags (null: leave it to OpenBLAS). */
export function coreTypeForFlags(flags: ReadonlySet<string>): string | null {
  if (['avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'].every((f) => flags.has(f))) return 'SkylakeX';
  if (flags.has('avx2') && flags.has('fma')) return 'Haswell';
  return null;
}

/** The flags of the first CPU in a /proc/cpuinfo text. */
export function cpuFlags(cpuinfo: string): Set<string> {
  const line = /^flags\s*:(.*)$/m.exec(cpuinfo);
  return new Set(line ? line[1]!.trim().split(/\s+/) : []);
}

let choice: CoreTypeChoice | null = null;

/**
 * Sets OPENBLAS_CORETYPE in `env` (default: this process's) as described above, once; returns
 * what was decided. Call before the addon loads.
 */
export function chooseOpenblasCoreType(env: NodeJS.ProcessEnv = process.env, readCpuinfo = defaultCpuinfo): CoreTypeChoice {
  if (env === process.env && choice) return choice;
  let c: CoreTypeChoice;
  if (env.OPENBLAS_CORETYPE) c = { coreType: env.OPENBLAS_CORETYPE, source: 'user' };
  else if (env.TANGENT_OPENBLAS_CORETYPE === 'auto' || process.platform !== 'linux' || process.arch !== 'x64') c = { coreType: null, source: 'openblas' };
  else {
    const core = coreTypeForFlags(cpuFlags(readCpuinfo()));
    if (core) env.OPENBLAS_CORETYPE = core;
    c = core ? { coreType: core, source: 'tangent-edit' } : { coreType: null, source: 'openblas' };
  }
  if (env === process.env) choice = c;
  return c;
}

function defaultCpuinfo(): string {
  try {
    return fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}

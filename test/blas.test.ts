/**
 * OPENBLAS_CORETYPE (lib/install/blas.ts): the kernel family chosen from the CPU's flags, left to
 * the user when set, and — on a machine whose BLAS is OpenBLAS — in effect in this process.
 */
import t from 'tap';
import { runtimeInfo } from '../lib';
import { chooseOpenblasCoreType, coreTypeForFlags, cpuFlags } from '../lib/install/blas';

const CPUINFO = (flags: string) => `processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: ${flags}\n\nprocessor\t: 1\nflags\t\t: sse\n`;
const AVX512 = 'fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl';

t.test('the kernel family follows the flags', async (t) => {
  t.equal(coreTypeForFlags(cpuFlags(CPUINFO(AVX512))), 'SkylakeX');
  t.equal(coreTypeForFlags(cpuFlags(CPUINFO('fpu sse avx avx2 fma avx512f'))), 'Haswell', 'AVX-512 F alone is not SkylakeX');
  t.equal(coreTypeForFlags(cpuFlags(CPUINFO('fpu sse avx avx2'))), null, 'AVX2 without FMA: left to OpenBLAS');
  t.equal(coreTypeForFlags(cpuFlags('')), null, 'no cpuinfo: left to OpenBLAS');
  t.same([...cpuFlags(CPUINFO('a b'))], ['a', 'b'], 'the first CPU’s flags line');
});

t.test('set only when unset, and not with TANGENT_OPENBLAS_CORETYPE=auto', async (t) => {
  const linuxX64 = process.platform === 'linux' && process.arch === 'x64';
  const env: NodeJS.ProcessEnv = {};
  const c = chooseOpenblasCoreType(env, () => CPUINFO(AVX512));
  if (linuxX64) {
    t.same(c, { coreType: 'SkylakeX', source: 'tangent-edit' });
    t.equal(env.OPENBLAS_CORETYPE, 'SkylakeX', 'written into the environment OpenBLAS reads');
  } else t.same(c, { coreType: null, source: 'openblas' }, 'only on Linux x86-64');
  const user: NodeJS.ProcessEnv = { OPENBLAS_CORETYPE: 'Zen' };
  t.same(chooseOpenblasCoreType(user, () => CPUINFO(AVX512)), { coreType: 'Zen', source: 'user' });
  t.equal(user.OPENBLAS_CORETYPE, 'Zen', "the user's choice stands");
  const optOut: NodeJS.ProcessEnv = { TANGENT_OPENBLAS_CORETYPE: 'auto' };
  t.same(chooseOpenblasCoreType(optOut, () => CPUINFO(AVX512)), { coreType: null, source: 'openblas' });
  t.equal(optOut.OPENBLAS_CORETYPE, undefined, 'nothing set');
});

t.test('in effect in this process', async (t) => {
  const info = runtimeInfo();
  if (!info.blas) {
    t.pass(`the BLAS here is not OpenBLAS (${info.parallelInfo.split('\n')[0]}); nothing to check`);
    return;
  }
  t.equal(info.blas.library, 'OpenBLAS');
  if (info.openblasCoreType.coreType) t.equal(info.blas.core.toLowerCase(), info.openblasCoreType.coreType.toLowerCase(), `OpenBLAS runs the ${info.openblasCoreType.coreType} kernels (set by ${info.openblasCoreType.source})`);
  else t.ok(info.blas.core.length > 0, `OpenBLAS chose ${info.blas.core} itself`);
});

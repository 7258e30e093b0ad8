/**
 * `npm run bench`: speed and memory figures, measured in one run and printed and written as
 * JSON (bench/results/latest.json). Targets are ratios measured in the same run, never timed
 * tests. Options: --threads N (default 2), --quick, --only NAME[,NAME] (core, merge, analysis,
 * models, mergeio, clip).
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { runtimeInfo } from '../lib';
import { writeFileAtomic } from '../lib/util/fs';
import { benchCore } from './core';
import { benchMerge } from './merge';

export interface BenchContext {
  threads: number;
  quick: boolean;
  log: (s: string) => void;
}

export type Suite = (ctx: BenchContext) => Promise<Record<string, unknown>>;

const SUITES: Record<string, Suite> = {
  core: benchCore,
  merge: benchMerge,
  analysis: (ctx) => import('./analysis').then((m) => m.benchAnalysis(ctx)),
  models: (ctx) => import('./models').then((m) => m.benchModels(ctx)),
  mergeio: (ctx) => import('./merge-io').then((m) => m.benchMergeIo(ctx)),
  clip: (ctx) => import('./clip').then((m) => m.benchClip(ctx)),
};

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const threads = Number(arg('--threads') ?? 2);
  const quick = process.argv.includes('--quick');
  const only = arg('--only')?.split(',');
  const ctx: BenchContext = { threads, quick, log: (s) => console.log(s) };
  // Loading the addon first also settles OPENBLAS_CORETYPE (lib/install/blas.ts), which the
  // PyTorch peers inherit: both sides run the same BLAS kernels.
  const info = runtimeInfo();
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: +(os.totalmem() / 2 ** 30).toFixed(1), node: process.version },
    threads,
    quick,
    blas: info.blas,
    openblasCoreType: info.openblasCoreType,
    jvpMethod: info.jvpMethod,
    // The libtorch both sides run (the peer is its own PyTorch: bench/stats.ts peerPython) and the
    // math libraries it brings (pip wheels: MKL and oneDNN; Debian: OpenBLAS), from at::get_parallel_info.
    libtorch: info.libtorch && { version: info.libtorch.version, variant: info.libtorch.variant, libDir: info.libtorch.libDir, python: info.libtorch.python },
    mathLibraries: info.parallelInfo.split('\n').map((l) => l.trim()).filter((l) => /Math Kernel|MKL-DNN|oneDNN|OpenMP \d|parallel backend/.test(l)),
  };
  console.log(`libtorch ${info.libtorch?.version ?? info.torchVersion} (${info.libtorch?.variant ?? '?'}), PyTorch peer ${info.libtorch?.python ?? '/usr/bin/python3'}; ${(results.mathLibraries as string[]).join('; ')}`);
  console.log(`BLAS: ${info.blas ? `OpenBLAS, ${info.blas.core} kernels (OPENBLAS_CORETYPE${info.openblasCoreType.coreType ? `=${info.openblasCoreType.coreType}, set by ${info.openblasCoreType.source}` : 'unset'}; the PyTorch peers get the same)` : 'not OpenBLAS'}; JVP method ${info.jvpMethod}`);
  for (const [name, suite] of Object.entries(SUITES)) {
    if (only && !only.includes(name)) continue;
    console.log(`\n== ${name} (${threads} threads) ==`);
    results[name] = await suite(ctx);
  }
  const out = path.resolve(__dirname, '..', '..', 'bench', 'results');
  const file = path.join(out, 'latest.json');
  writeFileAtomic(file, JSON.stringify(results, null, 2));
  console.log(`\nwrote ${path.relative(process.cwd(), file)}`);
}

void main();

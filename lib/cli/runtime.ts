/** `tangent info`, `tangent rebuild` and `tangent demo`. */
import type { Command } from 'commander';
import { intArg } from './options';

export function registerRuntimeCommands(program: Command): void {
  program
    .command('info')
    .description('libtorch version, CUDA availability, threads, the libtorch the addon was built against (JSON)')
    .action(async () => {
      const { runtimeInfo } = await import('../runtime');
      console.log(JSON.stringify(runtimeInfo(), null, 2));
    });

  program
    .command('rebuild')
    .description('build the native addon again against the libtorch found now (what npm install does; see README "Use it in your project")')
    .action(async () => {
      const { rebuildNative } = await import('../runtime');
      process.exitCode = (await rebuildNative()).code;
    });

  program
    .command('demo')
    .description("the paper's pipeline end to end at small scale: tables, figures and results/README.md")
    .usage('[--quick] [--seeds N] [--out DIR] [--threads N] [--json]')
    .option('--quick', 'a smaller, faster run (about 1.5 minutes on 2 cores; one seed)')
    .option('--seeds <n>', 'fine-tuning + evaluation seeds, θ0 shared (default 3; --quick: 1)', intArg('--seeds'))
    .option('--threads <n>', 'libtorch intra-op threads (default 2)', intArg('--threads'), 2)
    .option('--json', 'also print the measurements as JSON')
    .option('--out <dir>', 'where tables, JSON, figures and README.md go', 'results')
    .action(async (o: { quick?: boolean; seeds?: number; threads: number; json?: boolean; out: string }) => {
      const { runDemo } = await import('../demo');
      await runDemo({ quick: o.quick, seeds: o.seeds, threads: o.threads, json: o.json, out: o.out });
    });
}

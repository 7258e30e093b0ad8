#!/usr/bin/env node
/** The `tangent` command line. */
import { Command, InvalidArgumentError } from 'commander';
import { registerAnalysisCommands } from './analysis/cli';
import { TangentError } from './errors';
import { registerMergeCommands } from './merge-cli';
import { registerTrainCommands } from './train/cli';

function intOption(name: string, min = 1) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got '${value}'`);
    return n;
  };
}

export function buildCli(): Command {
  const program = new Command();
  program.name('tangent').description('Task arithmetic in weight space and in the tangent space, on libtorch').showHelpAfterError();

  program
    .command('info')
    .description('libtorch version, CUDA availability, threads')
    .action(async () => {
      const { runtimeInfo } = await import('./runtime');
      console.log(JSON.stringify(runtimeInfo(), null, 2));
    });

  program
    .command('demo')
    .description('run the main job end to end and print what it measured')
    .option('--quick', 'a smaller, faster run')
    .option('--threads <n>', 'libtorch intra-op threads', intOption('--threads'), 2)
    .option('--json', 'also print the measurements as JSON')
    .option('--out <dir>', 'where tables, JSON and figures go', 'results')
    .action(async (o: { quick?: boolean; threads: number; json?: boolean; out: string }) => {
      const { runDemo } = await import('./demo');
      await runDemo({ quick: o.quick, threads: o.threads, json: o.json, out: o.out });
    });

  registerMergeCommands(program);
  registerTrainCommands(program);
  registerAnalysisCommands(program);
  return program;
}

if (require.main === module) {
  buildCli()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      if (err instanceof TangentError) {
        console.error(`tangent: ${err.name}: ${err.message}`);
        process.exit(2);
      }
      throw err;
    });
}

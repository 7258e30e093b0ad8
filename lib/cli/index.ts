/**
 * The `tangent` program: every verb group registers itself from its own file in this folder.
 * Conventions shared by every verb (./options): kebab-case flags, `--config file.yaml` with
 * snake_case keys where a verb has many settings, `--json` for machine-readable output on stdout
 * (progress and logs go to stderr), every option and task name validated before any work starts;
 * an option error prints one line and the verb's usage, and exits with code 2.
 */
import { Command, CommanderError } from 'commander';
import { TangentError } from '../errors';
import { registerAnalysisCommands } from './analysis';
import { registerCheckpointCommands } from './checkpoints';
import { registerCleanCommand } from './clean';
import { registerClipCommands } from './clip';
import { registerEvalCommands } from './eval';
import { registerDistributed } from './launch';
import { registerRuntimeCommands } from './runtime';
import { registerTrainCommands } from './train';
import { NO_USAGE, usageLine, workStarted } from './options';

function packageVersion(): string {
  // dist/lib/cli/index.js and lib/cli/index.ts are both three levels below the package root.
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const p = require(rel) as { name?: string; version?: string };
      if (p.name === 'tangent-edit' && p.version) return p.version;
    } catch {
      /* try the next */
    }
  }
  return 'unknown';
}

export function buildCli(): Command {
  const program = new Command();
  program
    .name('tangent')
    .description('Task arithmetic in weight space and in the tangent space, on libtorch')
    .version(packageVersion(), '-V, --version', 'print the tangent-edit version')
    .exitOverride()
    .configureOutput({ outputError: (s, write) => write(s.replace(/^error: /, 'tangent: ')) });
  registerRuntimeCommands(program);
  registerCheckpointCommands(program);
  registerCleanCommand(program); // tangent clean: stale temporaries of killed writes
  registerTrainCommands(program);
  registerClipCommands(program);
  registerEvalCommands(program);
  registerAnalysisCommands(program);
  registerDistributed(program); // tangent launch; --world-size/--rank/--master on the data-parallel verbs
  // An option error prints one line, then this verb's usage (not the whole help).
  for (const c of program.commands) c.showHelpAfterError(usageLine(c));
  return program;
}

/** Runs the CLI; errors print one line (and, for option errors, the verb's usage) and exit 2. */
export function main(argv: string[]): void {
  const program = buildCli();
  let current: Command | null = null;
  program.hook('preAction', (_p, action) => {
    current = action;
  });
  program.parseAsync(argv).catch((err: unknown) => {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      process.exit(2); // commander printed the one-line error and the usage
    }
    if (err instanceof TangentError || (err instanceof Error && err.name === 'MissingDependencyError')) {
      const verb = (current as Command | null)?.name();
      console.error(`tangent${verb ? ` ${verb}` : ''}: ${err.name}: ${err.message}`);
      // The usage helps with a bad option, not with a problem met during the work.
      if (err.name === 'ArgumentError' && current && !workStarted() && !NO_USAGE.has((current as Command).name())) console.error(usageLine(current));
      process.exit(2);
    }
    throw err;
  });
}

/**
 * Scale-out on the command line (lib/distributed):
 *   tangent launch --nproc N [--nnodes M --node-rank K --master ADDR:PORT] -- VERB [ARGS…]
 * starts N local ranks of a verb with the rendezvous in their environment (WORLD_SIZE, RANK,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), as torchrun does; and every verb that
 * trains or evaluates accepts `--world-size`, `--rank`, `--master ADDR:PORT` (or those variables)
 * to run as one rank of a job. Such a verb joins the group before it starts, runs data-parallel
 * (the group is the default one: finetune and the evaluator use it), uses cores ÷ local ranks
 * threads unless --threads says otherwise, and only rank 0 reports and writes files.
 * `--nproc` above this machine's cores is refused unless `--oversubscribe` (see {@link checkNproc}).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as os from 'node:os';
import type { Command } from 'commander';
import { ArgumentError } from '../errors';
import { intArg } from './options';

/** The verbs that run data-parallel. */
export const DATA_PARALLEL_VERBS: readonly string[] = ['finetune', 'eval', 'addition-sweep', 'negation-sweep'];

/** `--world-size`, `--rank`, `--master`, `--dist-timeout` on a verb. */
export function distributedOptions(c: Command): Command {
  return c
    .option('--world-size <n>', 'ranks in the job (default: WORLD_SIZE, else one process)', intArg('--world-size'))
    .option('--rank <k>', "this process's rank (default: RANK)", intArg('--rank', 0))
    .option('--master <addr:port>', "rank 0's address and port (default: MASTER_ADDR:MASTER_PORT)")
    .option('--dist-timeout <ms>', 'rendezvous and collective timeout (default: TANGENT_DIST_TIMEOUT_MS, else 120000)', intArg('--dist-timeout'));
}

const DIST_KEYS = ['worldSize', 'rank', 'master', 'distTimeout'] as const;

/** Joins the job a data-parallel verb belongs to (if any), before its action runs. */
async function join(action: Command): Promise<void> {
  if (!DATA_PARALLEL_VERBS.includes(action.name())) return;
  const o = action.opts<Record<string, unknown>>();
  const settings = { worldSize: o.worldSize as number | undefined, rank: o.rank as number | undefined, master: o.master as string | undefined, timeoutMs: o.distTimeout as number | undefined };
  for (const k of DIST_KEYS) action.setOptionValue(k, undefined); // the verbs' own schemas are strict
  const { resolveDistributed, threadsPerLocalRank, ProcessGroup, setDefaultProcessGroup } = await import('../distributed');
  const pgo = resolveDistributed(settings);
  if (!pgo) return;
  if (action.getOptionValue('threads') === undefined) action.setOptionValue('threads', threadsPerLocalRank());
  const pg = await ProcessGroup.init(pgo);
  setDefaultProcessGroup(pg);
  if (pg.rank === 0) console.error(`tangent ${action.name()}: rank 0 of ${pg.worldSize} (${pg.backend}, master ${pg.master.addr}:${pg.master.port}, timeout ${pg.timeoutMs / 1000} s)`);
  else {
    // Rank 0 alone reports: no progress, no stdout, no --out/--markdown files (finetune's
    // checkpoint is rank 0's alone inside finetune itself).
    action.setOptionValue('progress', 'none');
    if (action.name() !== 'finetune') {
      action.setOptionValue('out', undefined);
      action.setOptionValue('markdown', undefined);
    }
    console.log = () => undefined;
  }
}

async function leave(): Promise<void> {
  const { defaultProcessGroup, setDefaultProcessGroup } = await import('../distributed');
  const pg = defaultProcessGroup();
  if (!pg) return;
  setDefaultProcessGroup(undefined);
  await pg.close();
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface LaunchOptions {
  nproc: number;
  nnodes?: number;
  nodeRank?: number;
  master?: string;
  distTimeout?: number;
  /** Seconds to let the other ranks report a failed rank before they are terminated (default 30). */
  grace?: number;
  /** Start more local ranks than this machine has cores (up to {@link MAX_RANKS_PER_CORE} × cores). */
  oversubscribe?: boolean;
}

/** Local ranks per core allowed even with `--oversubscribe` (the bound `setNumThreads` puts on threads). */
export const MAX_RANKS_PER_CORE = 4;

/**
 * Refuses `nproc` local ranks above the cores (`os.availableParallelism()`, which honours CPU
 * affinity) unless `oversubscribe`, and above 4 × the cores in any case. Each rank is a whole
 * process — Node, its own libtorch and thread pool, its own copy of the model and data (about
 * 200 MB for the small models, more for real ones) — and data-parallel ranks wait for each other
 * at every step, so ranks beyond the cores only contend for them: the job runs slower and a
 * typo (`--nproc 1000`) exhausts memory before the first step.
 */
export function checkNproc(nproc: number, oversubscribe = false, cores = os.availableParallelism()): void {
  if (!Number.isSafeInteger(nproc) || nproc < 1) throw new ArgumentError(`--nproc must be an integer >= 1, got ${String(nproc)}`);
  const hard = MAX_RANKS_PER_CORE * cores;
  const why = `each rank is a separate process with its own libtorch, threads and memory (~200 MB or more), and the ranks wait for each other at every step, so ranks beyond the cores oversubscribe the CPU: slower, not faster`;
  if (nproc > cores && !oversubscribe)
    throw new ArgumentError(`--nproc ${nproc} is more than this machine's ${cores} cores: ${why}; give --nproc ${cores} or fewer (more hosts: --nnodes), or pass --oversubscribe to start them anyway`);
  if (nproc > hard)
    throw new ArgumentError(`--nproc ${nproc} is above ${hard} (${MAX_RANKS_PER_CORE} × this machine's ${cores} cores), the most tangent launch starts even with --oversubscribe: ${why}`);
}

/** Starts the local ranks of `verb args…`; resolves with the exit code the launcher should end with. */
export async function launch(o: LaunchOptions, argv: string[], entry = process.argv[1]!): Promise<number> {
  const [verb, ...args] = argv;
  checkNproc(o.nproc, o.oversubscribe);
  if (!verb) throw new ArgumentError('give the verb to run after --, e.g. tangent launch --nproc 2 -- finetune --data …');
  if (!DATA_PARALLEL_VERBS.includes(verb)) throw new ArgumentError(`tangent launch runs ${DATA_PARALLEL_VERBS.join(', ')}; '${verb}' does not run data-parallel`);
  for (const a of args)
    if (/^--(world-size|rank|master)(=|$)/.test(a)) throw new ArgumentError(`${a.split('=')[0]} is set by tangent launch; leave it out of the verb's arguments`);
  const nnodes = o.nnodes ?? 1;
  const nodeRank = o.nodeRank ?? 0;
  if (nodeRank >= nnodes) throw new ArgumentError(`--node-rank ${nodeRank} must be below --nnodes ${nnodes}`);
  if (nnodes > 1 && !o.master) throw new ArgumentError('--nnodes > 1 needs --master ADDR:PORT (the address of node 0 and a free port on it)');
  const { parseMaster } = await import('../distributed/group');
  const master = o.master ? parseMaster(o.master, '--master') : { addr: '127.0.0.1', port: await freePort('127.0.0.1') };
  const world = nnodes * o.nproc;
  const children: ChildProcess[] = [];
  const exits: Array<Promise<{ rank: number; code: number | null; signal: NodeJS.Signals | null }>> = [];
  let failed: { rank: number; code: number | null; signal: NodeJS.Signals | null } | null = null;
  let killer: NodeJS.Timeout | undefined;
  const grace = (o.grace ?? 30) * 1000;
  const terminate = (sig: NodeJS.Signals) => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(sig);
  };
  const forward = (sig: NodeJS.Signals) => () => terminate(sig);
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  console.error(`tangent launch: ${o.nproc} rank(s) of ${world} on this host (node ${nodeRank} of ${nnodes}), master ${master.addr}:${master.port}: tangent ${verb}`);
  for (let local = 0; local < o.nproc; local++) {
    const rank = nodeRank * o.nproc + local;
    const env = {
      ...process.env,
      WORLD_SIZE: String(world),
      RANK: String(rank),
      LOCAL_RANK: String(local),
      LOCAL_WORLD_SIZE: String(o.nproc),
      MASTER_ADDR: master.addr,
      MASTER_PORT: String(master.port),
      ...(o.distTimeout ? { TANGENT_DIST_TIMEOUT_MS: String(o.distTimeout) } : {}),
    };
    const child = spawn(process.execPath, [...process.execArgv, entry, verb, ...args], { env, stdio: 'inherit' });
    children.push(child);
    exits.push(
      new Promise((resolve) =>
        child.on('exit', (code, signal) => {
          const r = { rank, code, signal };
          if ((code !== 0 || signal) && !failed) {
            failed = r;
            console.error(`tangent launch: rank ${rank} (pid ${child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; the other ranks get ${grace / 1000} s to report it before they are stopped`);
            killer = setTimeout(() => {
              terminate('SIGTERM');
              setTimeout(() => terminate('SIGKILL'), 5000).unref();
            }, grace);
            killer.unref();
          }
          resolve(r);
        }),
      ),
    );
  }
  await Promise.all(exits);
  if (killer) clearTimeout(killer);
  process.off('SIGINT', onInt);
  process.off('SIGTERM', onTerm);
  const f = failed as { rank: number; code: number | null; signal: NodeJS.Signals | null } | null;
  if (!f) return 0;
  return f.code ?? 1;
}

/** `tangent launch`, the distributed flags on the data-parallel verbs, and joining/leaving the job around their actions. */
export function registerDistributed(program: Command): void {
  program
    .command('launch')
    .description('start N local ranks of a verb with the rendezvous set (like torchrun); see README "Scale-out"')
    .usage('--nproc N [--oversubscribe] [--nnodes M --node-rank K] [--master ADDR:PORT] [--dist-timeout MS] -- VERB [ARGS…]')
    .option('--nproc <n>', "ranks on this host (required; at most this host's cores unless --oversubscribe)", intArg('--nproc'))
    .option('--oversubscribe', `allow --nproc above the cores (up to ${MAX_RANKS_PER_CORE} × cores)`)
    .option('--nnodes <n>', 'hosts in the job (default 1)', intArg('--nnodes'))
    .option('--node-rank <k>', "this host's index, 0 on the host of rank 0 (default 0)", intArg('--node-rank', 0))
    .option('--master <addr:port>', 'rank 0 address and port (default 127.0.0.1 and a free port; required with --nnodes > 1)')
    .option('--dist-timeout <ms>', 'rendezvous and collective timeout for every rank (default 120000)', intArg('--dist-timeout'))
    .option('--grace <s>', 'after a rank fails, seconds the others get to report it before they are stopped (default 30)', intArg('--grace', 0))
    .argument('<verb-and-args...>', 'the verb and its arguments, after --')
    .action(async (argv: string[], o: LaunchOptions & { nproc?: number }) => {
      if (o.nproc === undefined) throw new ArgumentError('--nproc is required');
      const code = await launch(o as LaunchOptions, argv);
      process.exitCode = code;
    });
  for (const c of program.commands) if (DATA_PARALLEL_VERBS.includes(c.name())) distributedOptions(c);
  program.hook('preAction', async (_p, action) => join(action));
  program.hook('postAction', async () => leave());
}

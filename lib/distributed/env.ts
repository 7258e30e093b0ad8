/**
 * Where a rank learns its place in a job: explicit options (the CLI's `--world-size`, `--rank`,
 * `--master ADDR:PORT`), else the environment torchrun and `tangent launch` set (`WORLD_SIZE`,
 * `RANK`, `MASTER_ADDR`, `MASTER_PORT`, `LOCAL_WORLD_SIZE`), else a single process.
 */
import * as os from 'node:os';
import { ArgumentError } from '../errors';
import { DEFAULT_TIMEOUT_MS, parseMaster, type ProcessGroupOptions } from './group';

export interface DistributedSettings {
  worldSize?: number;
  rank?: number;
  master?: string;
  /** Rendezvous and collective timeout (ms); env TANGENT_DIST_TIMEOUT_MS. */
  timeoutMs?: number;
}

function envInt(env: NodeJS.ProcessEnv, name: string, min: number): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new ArgumentError(`environment variable ${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return n;
}

/**
 * The process-group options for this process, or null when it runs alone (no world size, or 1).
 * Options win over the environment; errors name the option and the variable.
 */
export function resolveDistributed(o: DistributedSettings = {}, env: NodeJS.ProcessEnv = process.env): ProcessGroupOptions | null {
  const worldSize = o.worldSize ?? envInt(env, 'WORLD_SIZE', 1);
  if (worldSize === undefined || worldSize === 1) {
    if (o.rank !== undefined && o.rank !== 0) throw new ArgumentError(`--rank ${o.rank} needs --world-size (or WORLD_SIZE) > ${o.rank}`);
    return null;
  }
  const rank = o.rank ?? envInt(env, 'RANK', 0);
  if (rank === undefined) throw new ArgumentError(`a world size of ${worldSize} needs --rank (or RANK)`);
  if (rank >= worldSize) throw new ArgumentError(`rank ${rank} must be below the world size ${worldSize}`);
  let master = o.master;
  if (master === undefined) {
    const addr = env.MASTER_ADDR;
    const port = env.MASTER_PORT;
    if (!addr || !port) throw new ArgumentError(`a world size of ${worldSize} needs --master ADDR:PORT (or MASTER_ADDR and MASTER_PORT)`);
    master = `${addr.includes(':') ? `[${addr}]` : addr}:${port}`;
  }
  parseMaster(master, '--master');
  const timeoutMs = o.timeoutMs ?? envInt(env, 'TANGENT_DIST_TIMEOUT_MS', 1) ?? DEFAULT_TIMEOUT_MS;
  return { worldSize, rank, master, timeoutMs };
}

/** Threads per process when several share a host: cores ÷ local ranks (LOCAL_WORLD_SIZE), at least 1. */
export function threadsPerLocalRank(env: NodeJS.ProcessEnv = process.env, cores = os.availableParallelism()): number {
  const local = envInt(env, 'LOCAL_WORLD_SIZE', 1) ?? 1;
  return Math.max(1, Math.floor(cores / local));
}

/**
 * Process groups over libtorch's torch.distributed c10d (native/distributed.h): a TCPStore
 * rendezvous hosted by rank 0, Gloo on CPU, NCCL with a CUDA libtorch built with it. Collectives
 * are in place, bucketed, and return Promises; every wait is bounded by `timeoutMs`, and a rank
 * that never joins, dies or freezes makes the others reject with a DistributedError naming it.
 *
 * The store is laid out as PyTorch's `init_process_group('gloo', init_method='tcp://…')` lays it
 * out, so a PyTorch rank can join a tangent-edit job (test/distributed-python.test.ts).
 */
import { native, type NativeProcessGroup } from '../binding';
import { ArgumentError, StateError } from '../errors';
import type { Params } from '../model';
import { Tensor } from '../tensor';

export type Backend = 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';

export interface ProcessGroupOptions {
  worldSize: number;
  rank: number;
  /** Rank 0's store address, `ADDR:PORT` (IPv4 or a host name). */
  master: string;
  /** Bounds store connection, group creation and every collective. Default 120 000 ms. */
  timeoutMs?: number;
  backend?: Backend;
  /** Gloo's network interface (default: GLOO_SOCKET_IFNAME, else the local address routing to the master). */
  interface?: string;
  /** Gloo's bind address (overrides the routed address). */
  bindAddress?: string;
  /** Gloo worker threads (default 2). */
  glooThreads?: number;
}

export const DEFAULT_TIMEOUT_MS = 120_000;
/** Default bucket size of all-reduce and broadcast (as PyTorch DDP's 25 MiB). */
export const DEFAULT_BUCKET_BYTES = 25 << 20;

function intIn(v: unknown, name: string, lo: number, hi = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(v) || (v as number) < lo || (v as number) > hi)
    throw new ArgumentError(`${name} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return v as number;
}

/** `ADDR:PORT` → parts ([v6]:port accepted); ArgumentError naming `what` otherwise. */
export function parseMaster(master: string, what = 'master'): { addr: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(master.trim());
  if (!m) throw new ArgumentError(`${what} must be ADDR:PORT, got ${JSON.stringify(master)}`);
  return { addr: m[1]!, port: intIn(Number(m[2]), `${what} port`, 1, 65535) };
}

/** Which backends this build's libtorch provides. */
export function backends(): { gloo: boolean; nccl: boolean } {
  return native().distributedBackends();
}

function tensorsOf(t: readonly Tensor[] | Params, what: string): Tensor[] {
  const list = t instanceof Map ? [...t.values()] : Array.isArray(t) ? [...t] : Object.values(t as Record<string, Tensor>);
  for (const [i, x] of list.entries()) if (!(x instanceof Tensor)) throw new ArgumentError(`${what}: element ${i} is not a Tensor`);
  return list;
}

/** A member of a process group; see the module comment. */
export class ProcessGroup implements AsyncDisposable {
  private constructor(
    private readonly h: NativeProcessGroup,
    readonly master: { addr: string; port: number },
    readonly timeoutMs: number,
  ) {}

  /** Joins the group (rank 0 hosts the store); resolves once every rank has joined. */
  static async init(o: ProcessGroupOptions): Promise<ProcessGroup> {
    const worldSize = intIn(o.worldSize, 'worldSize', 1);
    const rank = intIn(o.rank, 'rank', 0, worldSize - 1);
    const { addr, port } = parseMaster(o.master);
    const timeoutMs = intIn(o.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs', 1);
    const backend = o.backend ?? 'gloo';
    if (backend !== 'gloo' && backend !== 'nccl') throw new ArgumentError(`backend must be 'gloo' or 'nccl', got ${JSON.stringify(backend)}`);
    const h = new (native().ProcessGroup)();
    await h.init({
      masterAddr: addr,
      port,
      worldSize,
      rank,
      timeoutMs,
      backend,
      interface: o.interface,
      bindAddress: o.bindAddress,
      glooThreads: o.glooThreads === undefined ? undefined : intIn(o.glooThreads, 'glooThreads', 1, 64),
    });
    return new ProcessGroup(h, { addr, port: h.port }, timeoutMs);
  }

  get rank(): number {
    return this.h.rank;
  }
  get worldSize(): number {
    return this.h.worldSize;
  }
  get backend(): Backend {
    return this.h.backend as Backend;
  }
  get closed(): boolean {
    return this.h.closed;
  }
  /** The failure that broke the group ('' while healthy). */
  get broken(): string {
    return this.h.broken;
  }

  private live(what: string): void {
    if (this.h.closed) throw new StateError(`${what} on a closed process group (rank ${this.rank})`);
  }

  /**
   * In place: every tensor becomes the reduction over ranks (mean = sum / worldSize). `prescale`
   * multiplies this rank's values first (weighted sums over shards of unequal size).
   */
  async allReduce(tensors: readonly Tensor[] | Params, o: { op?: ReduceOp; bucketBytes?: number; prescale?: number } = {}): Promise<void> {
    this.live('allReduce');
    const op = o.op ?? 'sum';
    if (!['sum', 'mean', 'max', 'min'].includes(op)) throw new ArgumentError(`op must be sum, mean, max or min, got ${JSON.stringify(op)}`);
    const list = tensorsOf(tensors, 'allReduce');
    const prescale = o.prescale ?? 1;
    if (typeof prescale !== 'number' || !Number.isFinite(prescale)) throw new ArgumentError(`prescale must be a finite number, got ${JSON.stringify(prescale)}`);
    await this.h.allReduce(list.map((t) => t.native), op, intIn(o.bucketBytes ?? DEFAULT_BUCKET_BYTES, 'bucketBytes', 1), prescale);
  }

  /** In place: every rank receives `root`'s values (shapes and dtypes must match across ranks). */
  async broadcast(tensors: readonly Tensor[] | Params, o: { root?: number; bucketBytes?: number } = {}): Promise<void> {
    this.live('broadcast');
    const root = intIn(o.root ?? 0, 'root', 0, this.worldSize - 1);
    const list = tensorsOf(tensors, 'broadcast');
    await this.h.broadcast(list.map((t) => t.native), root, intIn(o.bucketBytes ?? DEFAULT_BUCKET_BYTES, 'bucketBytes', 1));
  }

  /** Sums plain numbers over ranks, exactly for integers below 2^53 (float64). */
  async sumNumbers(values: readonly number[]): Promise<number[]> {
    if (values.length === 0) return [];
    const t = Tensor.from(Float64Array.from(values), [values.length]);
    try {
      await this.allReduce([t]);
      return Array.from(t.data() as Float64Array);
    } finally {
      t.dispose();
    }
  }

  async barrier(): Promise<void> {
    this.live('barrier');
    await this.h.barrier();
  }

  /** Leaves the group: a barrier first (so no rank tears the store down under another), unless `abort`. Idempotent. */
  async close(o: { abort?: boolean } = {}): Promise<void> {
    if (this.h.closed) return;
    await this.h.close(o.abort === true || this.h.broken !== '');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close({ abort: this.broken !== '' });
  }
}

/**
 * The contiguous share [start, end) of `n` items that `rank` of `worldSize` takes: the union over
 * ranks is [0, n) in order, sizes differ by at most one.
 */
export function shardRange(n: number, rank: number, worldSize: number): { start: number; end: number } {
  return { start: Math.floor((rank * n) / worldSize), end: Math.floor(((rank + 1) * n) / worldSize) };
}

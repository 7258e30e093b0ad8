/**
 * Data parallelism over a ProcessGroup, as the fine-tuning loop and the evaluator use it:
 * every rank takes a disjoint, contiguous shard of each global batch (the union, in order, is the
 * single-process batch), gradients are weighted by shard size and summed (bucketed, in place), and
 * the state every rank starts from is broadcast from rank 0. With equal shards the result equals
 * one process on the global batch up to float summation order.
 */
import { ArgumentError } from '../errors';
import type { GradResult, Head, Params } from '../model';
import type { Tensor } from '../tensor';
import { type ProcessGroup, shardRange } from './group';

/** Tensors of parameter sets (names sorted, so every rank lists them alike) and heads. */
function flatten(states: ReadonlyArray<Params | undefined>, heads: ReadonlyArray<Head | undefined>): Tensor[] {
  const out: Tensor[] = [];
  for (const s of states) {
    if (!s) continue;
    const entries = s instanceof Map ? [...s.entries()] : Object.entries(s);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [, t] of entries) out.push(t);
  }
  for (const h of heads) {
    if (!h) continue;
    out.push(h.weight);
    if (h.bias) out.push(h.bias);
  }
  return out;
}

/** Overwrites these parameter sets and heads with rank 0's values, in place (one bucketed broadcast). */
export async function broadcastFromRoot(pg: ProcessGroup, states: ReadonlyArray<Params | undefined>, heads: ReadonlyArray<Head | undefined> = []): Promise<void> {
  await pg.broadcast(flatten(states, heads), { root: 0 });
}

/** This rank's contiguous share of a global batch's indices. */
export function shardOf<T extends { subarray(a: number, b: number): T; length: number }>(indices: T, pg: ProcessGroup): T {
  const { start, end } = shardRange(indices.length, pg.rank, pg.worldSize);
  return indices.subarray(start, end);
}

/** Checks that every rank gets a non-empty shard of a batch of `batchSize`. */
export function checkShardable(batchSize: number, pg: ProcessGroup, what = 'batchSize'): void {
  if (batchSize < pg.worldSize)
    throw new ArgumentError(`${what} ${batchSize} is smaller than the world size ${pg.worldSize}: every rank needs at least one sample per batch`);
}

/**
 * Turns this rank's step on `n` of the global batch's `batch` samples into the global step, in
 * place: grads ← Σ_r (n_r / batch) · grads_r (the mean-loss gradient over the global batch),
 * loss ← Σ_r (n_r / batch) · loss_r, correct ← Σ_r correct_r.
 */
export async function reduceStep(pg: ProcessGroup, r: GradResult, n: number, batch: number, o: { bucketBytes?: number } = {}): Promise<GradResult> {
  const w = n / batch;
  await pg.allReduce([...r.grads.values()], { op: 'sum', prescale: w, bucketBytes: o.bucketBytes });
  const [loss, correct] = await pg.sumNumbers([r.loss * w, r.correct]);
  return { loss: loss!, correct: correct!, grads: r.grads };
}

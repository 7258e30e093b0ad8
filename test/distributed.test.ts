/**
 * Data parallelism over c10d with two local processes on 127.0.0.1 (Gloo): collectives give exact
 * values; fine-tuning (standard and linear) over two ranks gives the loss curve and θ of one
 * process on the same global batches, even when rank 1 starts from another θ0 (broadcast from
 * rank 0) and when the shards are unequal; evaluation over two ranks equals one, exactly.
 */
import t from 'tap';
import { setNumThreads } from '../lib';
import { backends, shardRange, resolveDistributed, threadsPerLocalRank } from '../lib/distributed';
import { runEval, runFinetune, type EvalOut, type FinetuneOut } from './fixtures/distributed/rank';
import { runRanks } from './fixtures/distributed/spawn';

t.setTimeout(120_000);
setNumThreads(1);

function maxRelDiff(a: Record<string, number[]>, b: Record<string, number[]>): number {
  let worst = 0;
  for (const [n, x] of Object.entries(a)) {
    const y = b[n]!;
    let num = 0;
    let den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i]! - y[i]!) ** 2;
      den += y[i]! ** 2;
    }
    worst = Math.max(worst, Math.sqrt(num / Math.max(den, 1e-30)));
  }
  return worst;
}

t.test('pure helpers: shards, settings from options and the environment', async (t) => {
  for (const [n, w] of [[32, 2], [33, 2], [7, 3], [5, 5]] as const) {
    const parts = Array.from({ length: w }, (_, r) => shardRange(n, r, w));
    t.same(parts.map((p) => p.start), [0, ...parts.slice(0, -1).map((p) => p.end)], `shards of ${n} over ${w} are contiguous`);
    t.equal(parts.at(-1)!.end, n);
    t.ok(Math.max(...parts.map((p) => p.end - p.start)) - Math.min(...parts.map((p) => p.end - p.start)) <= 1, 'sizes differ by at most one');
  }
  t.equal(resolveDistributed({}, {}), null, 'no settings: one process');
  t.same(resolveDistributed({}, { WORLD_SIZE: '2', RANK: '1', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' }), { worldSize: 2, rank: 1, master: '10.0.0.1:29500', timeoutMs: 120000 });
  t.same(resolveDistributed({ worldSize: 4, rank: 3, master: 'h:1234', timeoutMs: 5 }, { WORLD_SIZE: '2' }), { worldSize: 4, rank: 3, master: 'h:1234', timeoutMs: 5 }, 'options win');
  t.throws(() => resolveDistributed({ worldSize: 2 }, {}), /needs --rank \(or RANK\)/);
  t.throws(() => resolveDistributed({ worldSize: 2, rank: 0 }, {}), /needs --master ADDR:PORT \(or MASTER_ADDR and MASTER_PORT\)/);
  t.throws(() => resolveDistributed({ worldSize: 2, rank: 2, master: 'a:1' }, {}), /rank 2 must be below the world size 2/);
  t.throws(() => resolveDistributed({ worldSize: 2, rank: 0, master: 'nohost' }, {}), /--master must be ADDR:PORT/);
  t.throws(() => resolveDistributed({}, { WORLD_SIZE: 'two' }), /WORLD_SIZE must be an integer/);
  t.equal(threadsPerLocalRank({ LOCAL_WORLD_SIZE: '2' }, 2), 1);
  t.equal(threadsPerLocalRank({ LOCAL_WORLD_SIZE: '3' }, 16), 5);
  t.equal(threadsPerLocalRank({}, 4), 4);
  t.ok(backends().gloo, 'this build has gloo');
});

// One pair of processes runs every scenario in order on one group (start-up dominates the cost).
const SCENARIOS = ['collectives', 'finetune:standard:32', 'finetune:linear:32', 'finetune:standard:33', 'eval'];
const ranks = runRanks(2, SCENARIOS);

t.test('two ranks start, join and finish', async (t) => {
  for (const r of await ranks) t.equal(r.code, 0, `rank ${r.rank} exits 0${r.code ? `: ${r.stdout}${r.stderr}` : ''}`);
});

function get<T>(r: { result: Record<string, unknown> | null }, k: string): T {
  return (r.result?.[k] ?? {}) as T;
}

t.test('two processes: all-reduce (bucketed, mean, weighted), broadcast, exact sums of numbers', async (t) => {
  for (const r of await ranks) {
    const c = get<Record<string, unknown>>(r, 'collectives');
    t.same(c.sum, [3, 6, 9, 30, -3], `rank ${r.rank}: sums over two dtypes in 8-byte buckets`);
    t.same(c.mean, [1.5, 1.5], `rank ${r.rank}: mean`);
    t.same(c.weighted, [0.75], `rank ${r.rank}: prescaled sum 0.25·1 + 0.25·2`);
    t.same(c.bcast, [2, 2, 2, 2], `rank ${r.rank}: broadcast from rank 1`);
    t.same(c.nums, [1, 2, 2 ** 41 + 1], `rank ${r.rank}: integers summed exactly (float64)`);
  }
});

for (const [mode, batch] of [['standard', 32], ['linear', 32], ['standard', 33]] as const)
  t.test(`two processes fine-tune (${mode}, global batch ${batch}) as one process does on the same batches`, async (t) => {
    const ref = await runFinetune(mode, batch, 100); // one process, θ0 from seed 100
    const [a, b] = (await ranks).map((r) => get<FinetuneOut>(r, `finetune:${mode}:${batch}`)); // rank 1 built θ0 from seed 101
    t.equal(a!.loss?.length, 8, 'eight steps');
    const lossDiff = Math.max(...a!.loss.map((l, i) => Math.abs(l - ref.loss[i]!)));
    t.ok(lossDiff < 1e-5, `loss curve equals one process's (max |Δ| ${lossDiff.toExponential(2)}${batch % 2 ? '; shards of 16 and 17 weighted by size' : ''})`);
    t.same(a!.acc, ref.acc, 'batch accuracies equal exactly (correct counts summed)');
    const gn = Math.max(...a!.gradNorm.map((g, i) => Math.abs(g - ref.gradNorm[i]!) / ref.gradNorm[i]!));
    t.ok(gn < 1e-5, `global gradient norms equal (max rel Δ ${gn.toExponential(2)})`);
    const d = maxRelDiff(a!.theta, ref.theta);
    t.ok(d < 1e-5, `final θ equals one process's (max rel Δ ${d.toExponential(2)})`);
    t.same(b!.theta, a!.theta, 'both ranks end with bit-identical θ');
    t.same(b!.loss, a!.loss, 'both ranks report the same loss curve');
  });

t.test('evaluation over two ranks equals one process exactly (integer counts)', async (t) => {
  const ref: EvalOut = await runEval();
  for (const r of await ranks) t.same(get<EvalOut>(r, 'eval'), ref, `rank ${r.rank}: counts ${JSON.stringify(ref)} (f, f_lin, α curve) equal one process's`);
  t.ok(ref.correct0 > 0 && ref.correct0 < ref.count, 'the counts are not trivial');
});

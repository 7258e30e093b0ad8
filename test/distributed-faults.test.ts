/**
 * Faults in a two-process job (Gloo on 127.0.0.1): a rank killed mid-run (SIGKILL, no clean-up)
 * makes the other stop with a DistributedError naming it, well within the timeout, and leaves no
 * checkpoint (not even a temporary file); a rank that never joins is named after the timeout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { runRanks, freePort } from './fixtures/distributed/spawn';

t.setTimeout(120_000);

// All three jobs start at once (each is mostly waiting), then the subtests read their results.
const dir = t.testdir({});
const file = path.join(dir, 'ft.safetensors');
const die = runRanks(2, [`die:${file}`], { distTimeoutMs: 10_000 });
const alone = (rank: number) => freePort().then((port) => runRanks(2, ['collectives'], { distTimeoutMs: 3000, only: [rank], port }));
const alone0 = alone(0);
const alone1 = alone(1);

t.test('a rank killed mid-run: the other stops naming it, within the timeout, no checkpoint', async (t) => {
  const [r0, r1] = await die;
  t.equal(r1!.signal, 'SIGKILL', 'rank 1 was killed');
  const d = (r0!.result?.[`die:${file}`] ?? {}) as { error?: string; message?: string; ms?: number; fileExists?: boolean; dir?: string[] };
  t.equal(d.error, 'DistributedError', `rank 0 fails with a DistributedError${r0!.result ? '' : `: ${r0!.stdout}${r0!.stderr}`}`);
  t.match(d.message, /rank 1 stopped/, `the message names rank 1: ${d.message}`);
  t.match(d.message, /timeout 10 s/, 'and states the timeout');
  t.ok(d.ms! < 10_000, `rank 0 stopped ${d.ms} ms into the run (3 steps + detection), under the 10 s timeout`);
  t.equal(d.fileExists, false, 'no checkpoint was written');
  t.same(d.dir, [], 'no temporary file is left in the output directory');
  t.equal(r0!.code, 0, 'rank 0 itself exited cleanly after reporting');
  t.same(fs.readdirSync(dir), [], 'the directory is still empty');
});

t.test('a rank that never joins is named after the timeout; so is a missing rank 0', async (t) => {
  const a = (await alone0)[0]!.result as { error?: string; message?: string; initMs?: number };
  t.equal(a.error, 'DistributedError', 'rank 0 alone: DistributedError');
  t.match(a.message, /rank 1 did not join/, `names rank 1: ${a.message}`);
  t.match(a.message, /within 3 s/, 'states the timeout');
  t.ok(a.initMs! >= 2900 && a.initMs! < 15_000, `gave up after ${a.initMs} ms (timeout 3 s), never hangs`);
  const b = (await alone1)[0]!.result as { error?: string; message?: string; initMs?: number };
  t.equal(b.error, 'DistributedError', 'rank 1 alone: DistributedError');
  t.match(b.message, /rank 0 did not answer at the rendezvous store 127\.0\.0\.1:\d+ within 3 s/, `names rank 0 and the store: ${b.message}`);
  t.ok(b.initMs! < 15_000, `gave up after ${b.initMs} ms`);
});

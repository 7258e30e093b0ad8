/**
 * A frozen rank (SIGSTOP mid-run: alive, but silent) is bounded by the group timeout: the other
 * rank fails with a DistributedError naming it after the timeout, before the frozen one is gone.
 */
import t from 'tap';
import { runRanks } from './fixtures/distributed/spawn';

t.setTimeout(120_000);

t.test('a frozen rank is named after the timeout, never a hang', async (t) => {
  const timeoutMs = 6000;
  const killAfter = 10_000; // rank 1's watchdog: it is still frozen (alive) when rank 0 reports
  const [r0, r1] = await runRanks(2, [`freeze:${killAfter}`], { distTimeoutMs: timeoutMs, timeoutMs: 80_000 });
  const d = (r0!.result?.[`freeze:${killAfter}`] ?? {}) as { error?: string; message?: string; msAfterFreeze?: number };
  t.equal(d.error, 'DistributedError', `rank 0 fails with a DistributedError${r0!.result ? '' : `: ${r0!.stdout}${r0!.stderr}`}`);
  t.match(d.message, /rank 1 stopped \(no heartbeat/, `names the frozen rank: ${d.message}`);
  t.match(d.message, /timeout 6 s/, 'states the timeout');
  t.ok(d.msAfterFreeze! >= timeoutMs - 500 && d.msAfterFreeze! < killAfter, `reported ${d.msAfterFreeze} ms after the freeze: bounded by the 6 s timeout, while rank 1 was still frozen`);
  t.equal(r1!.signal, 'SIGKILL', "rank 1 ended by its watchdog's SIGKILL");
});

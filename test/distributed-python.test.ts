/**
 * A Node rank and a PyTorch rank in one job: Debian's python3-torch joins through its own
 * init_process_group('gloo', 'tcp://…') (test/fixtures/distributed/py_rank.py), either side hosting
 * the store, and the two all-reduce, broadcast and meet a barrier together. Without torch the test
 * is skipped with the reason, except under CI=true, where it fails.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { freePort, runProcess, runRanks } from './fixtures/distributed/spawn';

t.setTimeout(120_000);
const PY = process.env['TANGENT_TEST_PYTHON'] ?? '/usr/bin/python3';
const probe = fs.existsSync(PY) ? spawnSync(PY, ['-c', 'import torch.distributed as d; assert d.is_available() and d.is_gloo_available(); import torch; print(torch.__version__)'], { encoding: 'utf8' }) : null;
const why = !probe ? `${PY} not found` : probe.status !== 0 ? `${PY} cannot import torch.distributed with gloo (apt-get install python3-torch): ${probe.stderr.trim().split('\n').at(-1)}` : '';

if (why) {
  if (process.env.CI === 'true') t.fail(`the PyTorch interop test needs Debian's python3-torch under CI: ${why}`);
  else {
    console.error(`# skipping the PyTorch interop test: ${why}`);
    t.test('a Node rank and a PyTorch rank all-reduce together', { skip: `PyTorch interop: ${why}` }, async () => undefined);
  }
} else {
  const env = { GLOO_SOCKET_IFNAME: 'lo' };
  const SCRIPT = path.join(__dirname, 'fixtures', 'distributed', 'py_rank.py');
  const job = async (nodeRank: number) => {
    const port = await freePort();
    const py = runProcess(PY, [SCRIPT, String(1 - nodeRank), '2', String(port)], env, 1 - nodeRank, 60_000);
    const [node] = await runRanks(2, ['python'], { only: [nodeRank], port, distTimeoutMs: 20_000, env });
    return { node: node!, py: await py };
  };
  const both = [job(0), job(1)];
  for (const [i, nodeRank] of [0, 1].entries())
    t.test(`Node rank ${nodeRank} and PyTorch ${probe!.stdout.trim()} rank ${1 - nodeRank} (rank 0 hosts the store)`, async (t) => {
      const { node, py } = await both[i]!;
      t.equal(py.code, 0, `the PyTorch rank exits 0${py.code ? `: ${py.stdout}${py.stderr}` : ''}`);
      t.equal(node.code, 0, `the Node rank exits 0${node.code ? `: ${node.stdout}${node.stderr}` : ''}`);
      const n = (node.result?.python ?? {}) as { sum?: number[]; bcast?: number[] };
      t.same(n.sum, [3, 6, 9, 300], 'Node: all-reduce sums both ranks');
      t.same(py.result?.sum, [3, 6, 9, 300], 'PyTorch: the same sums');
      t.same(n.bcast, [1, 1], 'Node: broadcast from rank 0');
      t.same(py.result?.bcast, [1, 1], 'PyTorch: the same broadcast');
    });
}

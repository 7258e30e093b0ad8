/**
 * `tangent launch --nproc 2 -- finetune …` (the compiled CLI) against `tangent finetune …` in one
 * process, on a small safetensors dataset and the TorchScript fixture: the same θ in the checkpoint
 * (to float tolerance), one report (rank 0's), the same pre-trained accuracy from the sharded
 * evaluation; `--world-size`/`--rank`/`--master` validation names the flag.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { loadStateDict, saveStateDict, Tensor } from '../lib';
import { CLI, skipWithoutDist, TS } from './cli-fixtures';
import { freePort } from './fixtures/distributed/spawn';

t.setTimeout(120_000);
const dir = t.testdir({});
const f = (n: string) => path.join(dir, n);
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 90_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });

t.test('launch --nproc 2 -- finetune equals finetune in one process', { skip: skipWithoutDist }, async (t) => {
  // 96 grey 8×8 images, 4 classes told apart by a bright column band (+ deterministic texture).
  const n = 96;
  const x = new Float32Array(n * 64);
  const y = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 4;
    y[i] = BigInt(c);
    for (let k = 0; k < 64; k++) x[i * 64 + k] = ((k % 8) >> 1 === c ? 0.8 : 0.1) + ((i * 13 + k * 7) % 25) / 250;
  }
  await saveStateDict(f('data.safetensors'), new Map([['images', Tensor.from(x, [n, 1, 8, 8])], ['labels', Tensor.from(y, [n], 'int64')]]));
  const args = (out: string) => ['finetune', '--data', f('data.safetensors'), '--model', TS, '--trust-code', '--mode', 'standard', '--out', f(out), '--steps', '4', '--batch-size', '16', '--lr', '0.01', '--seed', '1', '--threads', '1', '--progress', 'none', '--json'];
  const one = cli(...args('one.safetensors'));
  t.equal(one.status, 0, `one process: exit 0${one.status ? `: ${one.stderr}` : ''}`);
  const two = cli('launch', '--nproc', '2', '--dist-timeout', '30000', '--', ...args('two.safetensors'));
  t.equal(two.status, 0, `launch --nproc 2: exit 0${two.status ? `: ${two.stderr}` : ''}`);
  t.match(two.stderr, /tangent finetune: rank 0 of 2 \(gloo, master 127\.0\.0\.1:\d+, timeout 30 s\)/, 'rank 0 says where the job is');
  const reports = two.stdout.trim().startsWith('{') ? [JSON.parse(two.stdout)] : [];
  t.equal(reports.length, 1, 'one report on stdout (rank 0 alone reports)');
  const r1 = JSON.parse(one.stdout);
  t.equal(reports[0]?.steps, 4);
  t.equal(reports[0]?.pretrained.val, r1.pretrained.val, `sharded evaluation of θ0 equals one process's exactly (${r1.pretrained.val})`);
  t.ok(Math.abs(reports[0]?.finetuned.test - r1.finetuned.test) <= 1 / 10, 'fine-tuned test accuracy agrees');
  const a = (await loadStateDict(f('one.safetensors'))).tensors;
  const b = (await loadStateDict(f('two.safetensors'))).tensors;
  t.same([...b.keys()], [...a.keys()], 'same parameter names');
  let worst = 0;
  for (const [k, ta] of a) {
    const u = ta.data() as Float32Array;
    const v = b.get(k)!.data() as Float32Array;
    for (let i = 0; i < u.length; i++) worst = Math.max(worst, Math.abs(u[i]! - v[i]!) / Math.max(1e-3, Math.abs(u[i]!)));
  }
  t.ok(worst < 1e-4, `θ from two ranks equals θ from one (max rel Δ ${worst.toExponential(2)})`);
  t.same(fs.readdirSync(dir).sort(), ['data.safetensors', 'one.optim.safetensors', 'one.safetensors', 'two.optim.safetensors', 'two.safetensors'], 'one checkpoint per run, no temporary files');

  // The two-host recipe on one host: two launchers, --nnodes 2, node ranks 0 and 1, one rank each.
  const port = await freePort();
  const node = (k: number) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const p = spawn(process.execPath, [CLI, 'launch', '--nproc', '1', '--nnodes', '2', '--node-rank', String(k), '--master', `127.0.0.1:${port}`, '--dist-timeout', '30000', '--', ...args('nodes.safetensors')], { env: { ...process.env, OMP_NUM_THREADS: '1' } });
      let out = '';
      let err = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), 90_000);
      p.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out, err });
      });
    });
  const [n0, n1] = await Promise.all([node(0), node(1)]);
  t.equal(n0.code, 0, `node 0 exits 0${n0.code ? `: ${n0.err}` : ''}`);
  t.equal(n1.code, 0, `node 1 exits 0${n1.code ? `: ${n1.err}` : ''}`);
  t.match(n0.err, /1 rank\(s\) of 2 on this host \(node 0 of 2\)/, 'node 0 runs rank 0 of 2');
  t.equal(n1.out.trim(), '', 'node 1 (rank 1) prints no report');
  const c = (await loadStateDict(f('nodes.safetensors'))).tensors;
  let worstNodes = 0;
  for (const [k, ta] of a) {
    const u = ta.data() as Float32Array;
    const v = c.get(k)!.data() as Float32Array;
    for (let i = 0; i < u.length; i++) worstNodes = Math.max(worstNodes, Math.abs(u[i]! - v[i]!) / Math.max(1e-3, Math.abs(u[i]!)));
  }
  t.ok(worstNodes < 1e-4, `θ from the two "hosts" equals θ from one process (max rel Δ ${worstNodes.toExponential(2)})`);
});

t.test('the distributed flags are validated before any work', { skip: skipWithoutDist }, async (t) => {
  const r = cli('eval', '--checkpoints', f('none.safetensors'), '--world-size', '2', '--rank', '0');
  t.not(r.status, 0);
  t.match(r.stderr, /needs --master ADDR:PORT \(or MASTER_ADDR and MASTER_PORT\)/, r.stderr.trim());
  const l = cli('launch', '--nproc', '2', '--', 'merge', '--config', 'x.yaml');
  t.not(l.status, 0);
  t.match(l.stderr, /tangent launch runs finetune, eval, addition-sweep, negation-sweep; 'merge' does not run data-parallel/, l.stderr.trim());
});

/**
 * Scale-out benchmark (lib/distributed): a data-parallel training step of the built-in ViT
 * (dim 128, depth 4, 28×28, the bench/core.ts model) over 1 and 2 local processes with 1 libtorch
 * thread each, against one process with 2 threads, for both the strong-scaling case (global batch
 * B, split over the ranks) and the weak one (B per rank); the gradient all-reduce timed apart from
 * the compute, and a raw 10M-float all-reduce (beside PyTorch's own gloo when python3-torch exists).
 *
 *   node dist/bench/distributed.js [--batch 128] [--steps 8] [--quick] [--out FILE]
 *   node dist/bench/distributed.js --raw-only   (10M-float all-reduce, ours and PyTorch's, interleaved)
 *
 * Every configuration runs in fresh processes (rendezvous on 127.0.0.1); figures are medians over
 * the timed steps after two warm-up steps. On a 2-core machine two 1-thread processes and one
 * 2-thread process use the same cores: read the ratios, not the absolute times.
 */
import { peerPython } from './stats';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Model, Tensor, setNumThreads, type Mode } from '../lib';
import { ProcessGroup, reduceStep, resolveDistributed, shardOf } from '../lib/distributed';
import { batchTensors } from '../lib/data/splits';
import type { ImageSet } from '../lib/data';
import { AdamW } from '../lib/train/optim';
import { writeFileAtomic } from '../lib/util/fs';

const CONFIG = { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 } as const;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : NaN;
};

function syntheticSet(n: number): ImageSet {
  const images = new Float32Array(n * 784);
  const labels = new Int32Array(n);
  let a = 12345;
  for (let i = 0; i < images.length; i++) {
    a = (Math.imul(a, 1103515245) + 12345) >>> 0;
    images[i] = a / 2 ** 32 - 0.5;
  }
  for (let i = 0; i < n; i++) labels[i] = i % 10;
  return { name: 'bench', images, labels, count: n, shape: [1, 28, 28], classes: 10 };
}

interface WorkerResult {
  rank: number;
  worldSize: number;
  threads: number;
  mode: Mode;
  globalBatch: number;
  stepMs: number;
  computeMs: number;
  allReduceMs: number;
  updateMs: number;
  gradBytes: number;
  /** The gradients' all-reduce alone, after a barrier. */
  isolatedMs?: number;
  raw10MMs?: number;
}

/** One rank (or the only process): timed steps of the data-parallel loop, phases apart. */
async function worker(): Promise<void> {
  const mode = (arg('--mode') ?? 'standard') as Mode;
  const globalBatch = Number(arg('--batch') ?? 128);
  const steps = Number(arg('--steps') ?? 8);
  const threads = Number(arg('--threads') ?? 1);
  setNumThreads(threads);
  const o = resolveDistributed();
  const pg = o ? await ProcessGroup.init(o) : undefined;
  const model = Model.create(CONFIG, { seed: 0 });
  const theta0 = model.parameters();
  const lin = mode === 'linear' ? model.linearize(theta0) : null;
  const opt = AdamW.create(theta0, { lr: 1e-4, weightDecay: 0.1, maxGradNorm: 1 });
  const set = syntheticSet(globalBatch * 2);
  const t: { step: number[]; compute: number[]; comm: number[]; update: number[] } = { step: [], compute: [], comm: [], update: [] };
  let gradBytes = 0;
  for (let s = 0; s < steps + 2; s++) {
    const global = Uint32Array.from({ length: globalBatch }, (_, i) => (s * globalBatch + i) % set.count);
    const mine = pg ? shardOf(global, pg) : global;
    const { x, y } = batchTensors(set, mine);
    if (pg) await pg.barrier(); // every rank starts the step together
    const t0 = performance.now();
    const params = opt.params;
    let r = lin ? await lin.lossAndGrad(x, y, { params }) : await model.lossAndGrad(x, y, { params });
    const t1 = performance.now();
    if (pg) r = await reduceStep(pg, r, mine.length, global.length);
    const t2 = performance.now();
    await opt.update(r.grads, 1e-4);
    const t3 = performance.now();
    gradBytes = [...r.grads.values()].reduce((a, g) => a + g.nbytes, 0);
    for (const g of r.grads.values()) g.dispose();
    x.dispose();
    y.dispose();
    if (s >= 2) {
      t.step.push(t3 - t0);
      t.compute.push(t1 - t0);
      t.comm.push(t2 - t1);
      t.update.push(t3 - t2);
    }
  }
  // The gradients' all-reduce alone (after a barrier: no waiting for a slower rank's compute).
  let isolatedMs: number | undefined;
  if (pg) {
    const g = [...opt.params.values()].map((p) => p.clone());
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      await pg.barrier();
      const a = performance.now();
      await pg.allReduce(g);
      times.push(performance.now() - a);
    }
    isolatedMs = median(times.slice(1));
    for (const x of g) x.dispose();
  }
  let raw10MMs: number | undefined;
  if (pg && process.argv.includes('--raw')) {
    const big = Tensor.from(new Float32Array(10_000_000).fill(1), [10_000_000]);
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      await pg.barrier();
      const a = performance.now();
      await pg.allReduce([big]);
      times.push(performance.now() - a);
    }
    raw10MMs = median(times.slice(1));
  }
  const out: WorkerResult = {
    rank: pg?.rank ?? 0,
    worldSize: pg?.worldSize ?? 1,
    threads,
    mode,
    globalBatch,
    stepMs: median(t.step),
    computeMs: median(t.compute),
    allReduceMs: median(t.comm),
    updateMs: median(t.update),
    gradBytes,
    isolatedMs,
    raw10MMs,
  };
  if (pg) await pg.close();
  console.log(`RESULT ${JSON.stringify(out)}`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 600_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${out}`));
    });
  });
}

/** `procs` processes of `threads` threads each on one job; rank 0's result. */
async function job(procs: number, threads: number, mode: Mode, globalBatch: number, steps: number, raw = false): Promise<WorkerResult> {
  const port = await freePort();
  const outs = await Promise.all(
    Array.from({ length: procs }, (_, r) =>
      run(process.execPath, [...process.execArgv, __filename, '--worker', '--mode', mode, '--batch', String(globalBatch), '--steps', String(steps), '--threads', String(threads), ...(raw ? ['--raw'] : [])], {
        OMP_NUM_THREADS: String(threads),
        ...(procs > 1 ? { WORLD_SIZE: String(procs), RANK: String(r), LOCAL_WORLD_SIZE: String(procs), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) } : { WORLD_SIZE: '' }),
      }),
    ),
  );
  const line = outs[0]!.split('\n').find((l) => l.startsWith('RESULT '))!;
  return JSON.parse(line.slice(7)) as WorkerResult;
}

/** PyTorch's own gloo all-reduce of 10M floats over two processes (python3-torch), or null. */
function pytorchRaw(port: number): Promise<number | null> {
  const py = peerPython();
  if (!fs.existsSync(py) || spawnSync(py, ['-c', 'import torch.distributed'], { stdio: 'ignore' }).status !== 0) return Promise.resolve(null);
  const script = `
import sys, time, datetime, torch, torch.distributed as d
r = int(sys.argv[1]); torch.set_num_threads(1)
d.init_process_group('gloo', init_method='tcp://127.0.0.1:${port}', rank=r, world_size=2, timeout=datetime.timedelta(seconds=60))
t = torch.ones(10_000_000); ts = []
for i in range(6):
    d.barrier(); a = time.perf_counter(); d.all_reduce(t); ts.append(1000 * (time.perf_counter() - a))
ts = sorted(ts[1:]); print('RESULT', (ts[2]))
d.destroy_process_group()`;
  return Promise.all([0, 1].map((r) => run(py, ['-c', script, String(r)], { GLOO_SOCKET_IFNAME: 'lo', OMP_NUM_THREADS: '1' })))
    .then((o) => Number(o[0]!.split('\n').find((l) => l.startsWith('RESULT '))!.slice(7)))
    .catch(() => null);
}

async function main(): Promise<void> {
  if (process.argv.includes('--worker')) return worker();
  if (process.argv.includes('--raw-only')) {
    // Ours and PyTorch's gloo, interleaved three times: the fair comparison on a shared machine.
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let i = 0; i < 3; i++) {
      ours.push((await job(2, 1, 'standard', 2, 1, true)).raw10MMs!);
      const p = await pytorchRaw(await freePort());
      if (p !== null) theirs.push(p);
    }
    console.log(`10M-float all-reduce over 2 processes, medians of 3 interleaved runs: tangent-edit ${median(ours).toFixed(1)} ms ${JSON.stringify(ours.map((v) => +v.toFixed(1)))}; PyTorch gloo ${theirs.length ? `${median(theirs).toFixed(1)} ms ${JSON.stringify(theirs.map((v) => +v.toFixed(1)))}` : 'n/a'}`);
    return;
  }
  const quick = process.argv.includes('--quick');
  const B = Number(arg('--batch') ?? (quick ? 64 : 128));
  const steps = Number(arg('--steps') ?? (quick ? 4 : 8));
  const log = (s: string) => console.log(s);
  log(`# distributed bench: ViT dim 128 depth 4 (28×28), ${os.cpus().length} CPUs, global batch ${B}, ${steps} timed steps, medians`);
  const rows: Array<Record<string, unknown>> = [];
  for (const mode of ['standard', 'linear'] as const) {
    const one1 = await job(1, 1, mode, B, steps);
    const one2 = await job(1, 2, mode, B, steps);
    const two1 = await job(2, 1, mode, B, steps, mode === 'standard');
    const one1w = await job(1, 1, mode, 2 * B, steps);
    const one2w = await job(1, 2, mode, 2 * B, steps);
    const two1w = await job(2, 1, mode, 2 * B, steps);
    const fmt = (r: WorkerResult) => `${r.stepMs.toFixed(0)} ms (compute ${r.computeMs.toFixed(0)}, all-reduce ${r.allReduceMs.toFixed(1)}, update ${r.updateMs.toFixed(1)})`;
    log(`\n## ${mode} step, strong scaling (global batch ${B})`);
    log(`1 process × 1 thread : ${fmt(one1)}`);
    log(`1 process × 2 threads: ${fmt(one2)}  → speed-up ${(one1.stepMs / one2.stepMs).toFixed(2)}×`);
    log(`2 processes × 1 thread: ${fmt(two1)}  → speed-up ${(one1.stepMs / two1.stepMs).toFixed(2)}× (vs 2 threads: ${(one2.stepMs / two1.stepMs).toFixed(2)}×)`);
    log(`## ${mode} step, weak scaling (batch ${B} per rank; one process runs ${2 * B})`);
    log(`1 process × 1 thread, batch ${2 * B}: ${fmt(one1w)}`);
    log(`1 process × 2 threads, batch ${2 * B}: ${fmt(one2w)}`);
    log(`2 processes × 1 thread, ${B} each: ${fmt(two1w)}  → throughput vs 1×1 ${(one1w.stepMs / two1w.stepMs).toFixed(2)}×, vs 1×2 ${(one2w.stepMs / two1w.stepMs).toFixed(2)}×`);
    log(`gradient all-reduce (${(two1.gradBytes / 2 ** 20).toFixed(2)} MiB): ${two1.allReduceMs.toFixed(1)} ms inside the step (includes waiting for the slower rank), ${two1.isolatedMs!.toFixed(1)} ms alone after a barrier`);
    rows.push({ mode, globalBatch: B, strong: { one1, one2, two1 }, weak: { one1: one1w, one2: one2w, two1: two1w } });
    if (two1.raw10MMs !== undefined) log(`raw all-reduce of 10M float32 (40 MB) over 2 processes: ${two1.raw10MMs.toFixed(1)} ms`);
  }
  const pyRaw = await pytorchRaw(await freePort());
  if (pyRaw !== null) log(`PyTorch (python3-torch) gloo all-reduce of 10M float32 over 2 processes: ${pyRaw.toFixed(1)} ms`);
  const out = arg('--out') ?? path.join(__dirname, '..', '..', 'bench', 'results', 'distributed.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  writeFileAtomic(out, `${JSON.stringify({ date: new Date().toISOString(), cpus: os.cpus().length, node: process.version, rows, raw10M: (rows[0]!.strong as { two1: WorkerResult }).two1.raw10MMs, pytorchRaw10M: pyRaw }, null, 2)}\n`);
  log(`\nwritten ${out}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});

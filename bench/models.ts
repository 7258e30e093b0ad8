/**
 * A real model: torchvision vit_b_32 (88.2M parameters) as a torch.export program (.pt2, when the
 * peer's PyTorch is 2.x) and as TorchScript, traced and scripted, batch 8 (--quick: 2) at
 * 224×224. Forward, JVP, linearized forward, standard and linearized train step (loss and
 * gradients), each timed in rounds with PyTorch's eager module in a peer process
 * (bench/reference_pytorch.py --serve-models): .pt2, traced, scripted, fair peer, [default peer,]
 * .pt2, … so drift hits all alike. The fair peer runs with OMP_WAIT_POLICY=PASSIVE;
 * PyTorch's default settings are reported beside it, labelled. Needs Debian's python3-torch and
 * python3-torchvision (they also write the modules, so both sides hold the same weights).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { combineStates, Model, setNumThreads, Tensor, type StateDict } from '../lib';
import { seededNormal as normal } from '../lib/util/random';
import type { BenchContext } from './run';
import { defaultPeerEnv, defaultPeerLabel, fmt, medianOf, perturbed, peerPython } from './stats';

const PY = peerPython();
const SCRIPT = path.resolve(__dirname, '..', '..', 'bench', 'reference_pytorch.py');
const WARMUP = 3;
const OPS = ['forward', 'jvp', 'linearizedForward', 'standardTrainStep', 'linearizedTrainStep'] as const;
type Op = (typeof OPS)[number];

/** Multiply-add bound of each operation, in units of one forward's multiply-adds (y = xWᵀ: the
 * tangent ẋWᵀ + xẆᵀ is two more products; a backward is two). */
const MAC_UNITS: Record<Op, number> = { forward: 1, jvp: 3, linearizedForward: 3, standardTrainStep: 3, linearizedTrainStep: 5 };

/** A PyTorch process running bench/reference_pytorch.py in a --serve-* mode: one operation per
 * request, its time in milliseconds back (also used by bench/core.ts). */
export class Peer {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterableIterator<string>;
  info: { torch: string; threads: number; params?: number; forwardMacs?: number } | null = null;

  constructor(
    readonly label: string,
    env: NodeJS.ProcessEnv,
    args: string[],
    script = SCRIPT,
  ) {
    this.proc = spawn(PY, [script, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.resume();
    this.lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
  }

  private async next(): Promise<Record<string, unknown>> {
    const r = await this.lines.next();
    if (r.done) throw new Error(`PyTorch peer (${this.label}) exited`);
    return JSON.parse(r.value) as Record<string, unknown>;
  }

  async ready(): Promise<void> {
    this.info = (await this.next()) as unknown as Peer['info'];
  }

  async run(op: string): Promise<number> {
    this.proc.stdin.write(`${op}\n`);
    const r = await this.next();
    return (op === 'rss' ? r.maxRssMiB : r.ms) as number;
  }

  close(): void {
    this.proc.stdin.end('quit\n');
  }
}

function time(fn: () => Promise<void>): () => Promise<number> {
  return async () => {
    const s = performance.now();
    await fn();
    return performance.now() - s;
  };
}

function disposeAll(m: StateDict): void {
  for (const t of m.values()) t.dispose();
}

export async function benchModels(ctx: BenchContext): Promise<Record<string, unknown>> {
  const probe = spawnSync(PY, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    const why = `needs ${PY} with torch and torchvision (apt-get install python3-torch python3-torchvision)`;
    ctx.log(`  skipped: ${why}`);
    return { skipped: why };
  }
  setNumThreads(ctx.threads);
  const arch = 'vit_b_32';
  const batch = ctx.quick ? 2 : 8;
  const reps = ctx.quick ? 2 : 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-bench-models-'));
  const peerArgs = ['--serve-models', arch, String(batch), String(ctx.threads)];
  const fair = new Peer('fair: OMP_WAIT_POLICY=PASSIVE', { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' }, [...peerArgs, dir]);
  try {
    await fair.ready(); // it also writes the scripted and traced modules
    const env = defaultPeerEnv();
    const dflt = new Peer('default settings', env, peerArgs);
    await dflt.ready();
    const info = fair.info as { torch: string; threads: number; params: number; forwardMacs: number };
    ctx.log(`${arch}: ${(info.params / 1e6).toFixed(1)}M parameters, batch ${batch}, 224×224, ${ctx.threads} threads; PyTorch ${info.torch} eager peer; ${(info.forwardMacs / 1e9).toFixed(1)} G multiply-adds per forward; median of ${reps} alternating runs; load average at start ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);

    const x = Tensor.from(normal(batch * 3 * 224 * 224, 1), [batch, 3, 224, 224]);
    const y = Tensor.fromLabels(Array.from({ length: batch }, (_, i) => i % 1000));
    const out: Record<string, unknown> = {};
    const peerTimes: Record<'fair' | 'default', Record<Op, number[]>> = {
      fair: Object.fromEntries(OPS.map((o) => [o, []])) as unknown as Record<Op, number[]>,
      default: Object.fromEntries(OPS.map((o) => [o, []])) as unknown as Record<Op, number[]>,
    };
    // The same module three ways, each timed in turn with the peer within every round: the
    // torch.export program (.pt2, when the peer's PyTorch writes one), traced and scripted.
    const variants = (['exported', 'traced', 'scripted'] as const).filter((v) => fs.existsSync(path.join(dir, v === 'exported' ? `${arch}.pt2` : `${arch}.${v}.pt`)));
    type Variant = (typeof variants)[number];
    const empty = () => Object.fromEntries(OPS.map((o) => [o, []])) as unknown as Record<Op, number[]>;
    const loaded = new Map<Variant, { model: Model; loadMs: number; ours: Record<Op, () => Promise<number>>; release: () => void }>();
    for (const variant of variants) {
      const loadStart = performance.now();
      // TorchScript runs its code when loaded: these are the modules the bench's own Python just wrote.
      const model = await Model.load(path.join(dir, variant === 'exported' ? `${arch}.pt2` : `${arch}.${variant}.pt`), { trustCode: variant !== 'exported' });
      const loadMs = performance.now() - loadStart;
      const theta0 = model.parameters();
      const { tangent, theta } = await perturbed(theta0);
      const lin = model.linearize();
      const ours: Record<Op, () => Promise<number>> = {
        forward: time(async () => (await model.forward(x)).dispose()),
        jvp: time(async () => {
          const r = await model.jvp(x, tangent);
          r.primal.dispose();
          r.tangent.dispose();
        }),
        linearizedForward: time(async () => (await lin.forward(x, theta)).dispose()),
        standardTrainStep: time(async () => disposeAll((await model.lossAndGrad(x, y, { params: theta })).grads)),
        linearizedTrainStep: time(async () => disposeAll((await lin.lossAndGrad(x, y, { params: theta })).grads)),
      };
      loaded.set(variant, { model, loadMs, ours, release: () => { disposeAll(tangent); disposeAll(theta); model.dispose(); } });
    }
    const mine = new Map(variants.map((v) => [v, empty()]));
    const warm = new Map(variants.map((v) => [v, empty()]));
    // Warm-up, both sides alike: WARMUP rounds of every operation. The first model a Node
    // process loads runs its first few linearized steps up to 2× slower while glibc's malloc
    // arenas of libuv's pool threads (each async call runs on one of four) grow; Python's peer
    // computes on its one main thread. The warm-up times are kept, and printed.
    for (let w = 0; w < WARMUP; w++)
      for (const op of OPS) {
        for (const v of variants) warm.get(v)![op].push(await loaded.get(v)!.ours[op]());
        await fair.run(op);
      }
    // Rounds: every variant, then the fair peer, for each operation (ours, ours, ours, peer, …).
    for (let r = 0; r < reps; r++)
      for (const op of OPS) {
        for (const v of variants) mine.get(v)![op].push(await loaded.get(v)!.ours[op]());
        peerTimes.fair[op].push(await fair.run(op));
        // Default settings: one run per operation (it is 2–5× slower), for the record only.
        if (r === 0) peerTimes.default[op].push(await dflt.run(op));
      }
    const fairMed = Object.fromEntries(OPS.map((o) => [o, medianOf(peerTimes.fair[o])])) as Record<Op, number>;
    const medians = new Map(variants.map((v) => [v, Object.fromEntries(OPS.map((o) => [o, medianOf(mine.get(v)![o])])) as Record<Op, number>]));
    for (const variant of variants) {
      const med = medians.get(variant)!;
      const { loadMs } = loaded.get(variant)!;
      const w = warm.get(variant)!;
      ctx.log(`  ${variant} (load ${fmt(loadMs)}; warm-up, ours: ${OPS.map((o) => `${o} ${w[o].map((v) => fmt(v)).join(' ')}`).join(', ')}):`);
      ctx.log(`    ${'operation'.padEnd(20)} ${'tangent-edit'.padStart(12)} ${'PyTorch fair'.padStart(12)} ${'ratio'.padStart(6)}  ${'× forward (MAC bound)'.padStart(22)}  GMAC/s`);
      for (const op of OPS) {
        const gmacs = (MAC_UNITS[op] * info.forwardMacs) / 1e9;
        ctx.log(
          `    ${op.padEnd(20)} ${fmt(med[op]).padStart(12)} ${fmt(fairMed[op]).padStart(12)} ${(med[op] / fairMed[op]).toFixed(2).padStart(6)}  ${`${(med[op] / med.forward).toFixed(2)} (${MAC_UNITS[op]})`.padStart(22)}  ${(gmacs / (med[op] / 1000)).toFixed(1)}`,
        );
      }
      out[variant] = {
        loadMs,
        warmUpRunsMs: w,
        medianMs: med,
        runsMs: mine.get(variant),
        fairPeerMedianMs: fairMed,
        ratioToFairPeer: Object.fromEntries(OPS.map((o) => [o, med[o] / fairMed[o]])),
        overForward: Object.fromEntries(OPS.map((o) => [o, med[o] / med.forward])),
      };
    }
    if (medians.has('exported') && medians.has('traced')) {
      const e = medians.get('exported')!;
      const tr = medians.get('traced')!;
      out.exportedOverTraced = Object.fromEntries(OPS.map((o) => [o, e[o] / tr[o]]));
      ctx.log(`  .pt2 / traced TorchScript, same run: ${OPS.map((o) => `${o} ${(e[o] / tr[o]).toFixed(2)}`).join(', ')}`);
    }
    for (const l of loaded.values()) l.release();
    const dfltMed = Object.fromEntries(OPS.map((o) => [o, medianOf(peerTimes.default[o])])) as Record<Op, number>;
    ctx.log(`  PyTorch with ${defaultPeerLabel()} (one run each, labelled, not the comparison): ${OPS.map((o) => `${o} ${fmt(dfltMed[o])}`).join(', ')}`);
    const rss = { tangentEditMaxRssMiB: process.resourceUsage().maxRSS / 1024, fairPeerMaxRssMiB: await fair.run('rss'), defaultPeerMaxRssMiB: await dflt.run('rss') };
    ctx.log(`  peak RSS: tangent-edit process ${rss.tangentEditMaxRssMiB.toFixed(0)} MiB (${variants.length} variants loaded at once), PyTorch peer ${rss.fairPeerMaxRssMiB.toFixed(0)} MiB`);
    dflt.close();
    return {
      arch,
      batch,
      imageSize: 224,
      threads: ctx.threads,
      reps,
      params: info.params,
      forwardMacs: info.forwardMacs,
      macUnits: MAC_UNITS,
      torch: info.torch,
      loadAverageAtStart: os.loadavg(),
      ...out,
      fairPeer: { env: 'OMP_WAIT_POLICY=PASSIVE', runsMs: peerTimes.fair, medianMs: Object.fromEntries(OPS.map((o) => [o, medianOf(peerTimes.fair[o])])) },
      defaultPeer: { env: defaultPeerLabel(), runsMs: peerTimes.default, medianMs: dfltMed },
      peakRss: rss,
    };
  } finally {
    fair.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The paper's model against the paper's code: CLIP ViT-B/32's image tower (open_clip's
 * architecture, random init written by the peer so both sides hold the same weights) at batch 8
 * and 32 (--quick: 2), 224×224: forward, JVP, linearized forward and linearized train step (AdamW,
 * frozen normalised head as the paper's zero-shot heads), peak RSS. Peer: bench/clip_reference.py
 * — open_clip's eager forward and a LinearizedModel as gortizji/tangent_task_arithmetic builds it
 * (torch.func.jvp over functional_call, SDPA math path, train mode), with OMP_WAIT_POLICY=PASSIVE.
 * Rounds alternate ours / peer per operation. The first linearized steps of the process are
 * reported beside the median (the warm-up a short job pays).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Clip, setNumThreads, Tensor, type StateDict } from '../lib';
import { AdamW } from '../lib/train/optim';
import { seededNormal as normal } from '../lib/util/random';
import { Peer } from './models';
import type { BenchContext } from './run';
import { fmt, medianOf, peerPython, perturbed } from './stats';

const SCRIPT = path.resolve(__dirname, '..', '..', 'bench', 'clip_reference.py');
const OPS = ['forward', 'jvp', 'linearizedForward', 'linearizedTrainStep'] as const;
type Op = (typeof OPS)[number];
/** Multiply-add bound in forwards (ẏ = ẋWᵀ + xẆᵀ is two more products, a backward two). */
const MAC_UNITS: Record<Op, number> = { forward: 1, jvp: 3, linearizedForward: 3, linearizedTrainStep: 5 };
const FIRST_STEPS = 5;

/** Multiply-adds of one image tower forward per image (patch conv, blocks, projection). */
function towerMacs(c: { imageSize: number; patchSize: number; width: number; layers: number; mlpDim?: number; embedDim: number }): number {
  const g = c.imageSize / c.patchSize;
  const T = g * g + 1;
  const D = c.width;
  const M = c.mlpDim ?? 4 * D;
  const block = 4 * T * D * D + 2 * T * T * D + 2 * T * D * M;
  return g * g * D * 3 * c.patchSize * c.patchSize + c.layers * block + D * c.embedDim;
}

function disposeAll(m: StateDict): void {
  for (const t of m.values()) t.dispose();
}

export async function benchClip(ctx: BenchContext): Promise<Record<string, unknown>> {
  const PY = peerPython();
  const probe = spawnSync(PY, ['-c', 'import torch, open_clip, safetensors'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    const why = `needs ${PY} with torch, open_clip and safetensors (scripts/setup-torch.sh installs them in the PyTorch 2.x venv)`;
    ctx.log(`  skipped: ${why}`);
    return { skipped: why };
  }
  setNumThreads(ctx.threads);
  const arch = 'ViT-B-32';
  const batches = ctx.quick ? [2] : [8, 32];
  const reps = ctx.quick ? 2 : 3;
  const warmup = ctx.quick ? 1 : 2;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-bench-clip-'));
  const out: Record<string, unknown> = { arch, threads: ctx.threads, reps, warmup, batches, macUnits: MAC_UNITS };
  let firstSteps: { ours: number[]; peer: number[] } | null = null;
  try {
    for (const batch of batches) {
      const weights = path.join(dir, `${arch}.safetensors`);
      const peer = new Peer('fair: OMP_WAIT_POLICY=PASSIVE', { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' }, [arch, String(batch), String(ctx.threads), weights], SCRIPT);
      try {
        await peer.ready(); // it writes the weights
        const info = peer.info as unknown as { torch: string; open_clip: string; params: number };
        const clip = await Clip.load(arch, weights);
        // A fine-tuning job needs the text tower only to build its heads: released, as such a job would.
        clip.text.dispose();
        const model = clip.vision;
        const cfg = model.config as Parameters<typeof towerMacs>[0];
        const macs = towerMacs(cfg) * batch;
        ctx.log(`CLIP ${arch} image tower: ${(info.params / 1e6).toFixed(1)}M parameters, batch ${batch}, 224×224, ${ctx.threads} threads; peer PyTorch ${info.torch}, open_clip ${info.open_clip} (paper's LinearizedModel via torch.func); ${(macs / 1e9).toFixed(1)} G multiply-adds per forward; median of ${reps} alternating runs after ${warmup} warm-up rounds; load average ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
        const x = Tensor.from(normal(batch * 3 * 224 * 224, 1), [batch, 3, 224, 224]);
        const y = Tensor.fromLabels(Array.from({ length: batch }, (_, i) => i % 10));
        const hw = normal(10 * cfg.embedDim, 5);
        for (let c = 0; c < 10; c++) {
          const row = hw.subarray(c * cfg.embedDim, (c + 1) * cfg.embedDim);
          const n = Math.hypot(...row);
          for (let k = 0; k < row.length; k++) row[k] = (100 * row[k]!) / n;
        }
        const head = { weight: Tensor.from(Float32Array.from(hw), [10, cfg.embedDim]), normalize: true };
        const theta0 = model.parameters();
        const { tangent, theta: theta1 } = await perturbed(theta0);
        const lin = model.linearize();
        // θ lives in the optimizer (as the peer's LinearizedModel holds its trainable θ): one copy.
        const opt = AdamW.create(theta1, { lr: 1e-5, weightDecay: 0.1 });
        disposeAll(theta1);
        const theta = opt.params;
        const step = async (): Promise<void> => {
          const g = await lin.lossAndGrad(x, y, { params: opt.params, head });
          await opt.update(g.grads, 1e-5);
          disposeAll(g.grads);
        };
        const ours: Record<Op, () => Promise<void>> = {
          forward: async () => (await model.forward(x)).dispose(),
          jvp: async () => {
            const r = await model.jvp(x, tangent);
            r.primal.dispose();
            r.tangent.dispose();
          },
          linearizedForward: async () => (await lin.forward(x, theta)).dispose(),
          linearizedTrainStep: step,
        };
        const timed = async (fn: () => Promise<void>): Promise<number> => {
          const s = performance.now();
          await fn();
          return performance.now() - s;
        };
        // The process's first linearized steps, before any other work on this model (what a short job pays).
        if (firstSteps === null) {
          firstSteps = { ours: [], peer: [] };
          for (let i = 0; i < FIRST_STEPS; i++) {
            firstSteps.ours.push(await timed(step));
            firstSteps.peer.push(await peer.run('linearizedTrainStep'));
          }
          ctx.log(`  each process's first ${FIRST_STEPS} linearized steps (batch ${batch}): tangent-edit ${firstSteps.ours.map(fmt).join(', ')}; paper code ${firstSteps.peer.map(fmt).join(', ')}`);
        }
        for (let w = 0; w < warmup; w++)
          for (const op of OPS) {
            await ours[op]();
            await peer.run(op);
          }
        const mine = Object.fromEntries(OPS.map((o) => [o, [] as number[]])) as Record<Op, number[]>;
        const theirs = Object.fromEntries(OPS.map((o) => [o, [] as number[]])) as Record<Op, number[]>;
        for (let r = 0; r < reps; r++)
          for (const op of OPS) {
            mine[op].push(await timed(ours[op]));
            theirs[op].push(await peer.run(op));
          }
        const med = Object.fromEntries(OPS.map((o) => [o, medianOf(mine[o])])) as Record<Op, number>;
        const pm = Object.fromEntries(OPS.map((o) => [o, medianOf(theirs[o])])) as Record<Op, number>;
        ctx.log(`    ${'operation'.padEnd(20)} ${'tangent-edit'.padStart(12)} ${'paper code'.padStart(12)} ${'speed-up'.padStart(8)}  ${'ours × fwd (MAC bound)'.padStart(22)}  ${'peer × fwd'.padStart(10)}`);
        for (const op of OPS)
          ctx.log(`    ${op.padEnd(20)} ${fmt(med[op]).padStart(12)} ${fmt(pm[op]).padStart(12)} ${(pm[op] / med[op]).toFixed(2).padStart(8)}  ${`${(med[op] / med.forward).toFixed(2)} (${MAC_UNITS[op]})`.padStart(22)}  ${(pm[op] / pm.forward).toFixed(2).padStart(10)}`);
        const rss = { tangentEditMaxRssMiB: process.resourceUsage().maxRSS / 1024, peerMaxRssMiB: await peer.run('rss') };
        ctx.log(`  peak RSS: tangent-edit process ${rss.tangentEditMaxRssMiB.toFixed(0)} MiB (so far in this process), PyTorch peer ${rss.peerMaxRssMiB.toFixed(0)} MiB`);
        out[`batch${batch}`] = {
          batch,
          params: info.params,
          forwardMacs: macs,
          torch: info.torch,
          openClip: info.open_clip,
          medianMs: med,
          runsMs: mine,
          peerMedianMs: pm,
          peerRunsMs: theirs,
          speedUp: Object.fromEntries(OPS.map((o) => [o, pm[o] / med[o]])),
          overForward: Object.fromEntries(OPS.map((o) => [o, med[o] / med.forward])),
          overMacBound: Object.fromEntries(OPS.map((o) => [o, med[o] / med.forward / MAC_UNITS[o]])),
          peakRss: rss,
        };
        x.dispose();
        y.dispose();
        head.weight.dispose();
        disposeAll(tangent);
        opt.dispose();
        clip.vision.dispose();
      } finally {
        peer.close();
      }
    }
    out.firstLinearizedStepsMs = firstSteps;
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

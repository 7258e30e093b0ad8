/**
 * Merging 8 task vectors of a CLIP ViT-B/32-sized model (87.8M float32 parameters, its real
 * tensor layout): the fused kernel's throughput as a fraction of a memcpy of the same bytes
 * (target ≥ 70%), against a naive one-operation-at-a-time loop (target ≥ 3× faster); peak resident
 * memory of a streaming merge of 8 checkpoint files; safetensors load time against reading the
 * file's bytes (target ≤ 1.2×).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../lib/binding';
import { combineStates, saveStateDict, setNumThreads, Tensor, type StateDict } from '../lib';
import type { BenchContext } from './run';
import { benchSafetensorsLoad, vitB32Shapes } from './safetensors-load';
import { fmt, mediansInterleaved } from './stats';

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function makeState(shapes: Array<[string, number[]]>, value: number): StateDict {
  return new Map(shapes.map(([n, s]) => {
    const a = Tensor.allocArray('float32', s.reduce((x, y) => x * y, 1)).fill(value); // addon-owned: shared, not copied
    for (let i = 0; i < a.length; i += 4099) a[i] = value + i * 1e-7; // not constant
    return [n, Tensor.from(a, s)];
  }));
}

export async function benchMerge(ctx: BenchContext): Promise<Record<string, unknown>> {
  setNumThreads(ctx.threads);
  const K = 8;
  const shapes = vitB32Shapes();
  const params = shapes.reduce((s, [, sh]) => s + sh.reduce((a, b) => a * b, 1), 0);
  const B = params * 4;
  const base = makeState(shapes, 1);
  const taus = Array.from({ length: K }, (_, k) => makeState(shapes, 0.01 * (k + 1)));
  const alphas = taus.map((_, k) => 0.3 + 0.05 * k);
  // memcpy baseline: 5 model-sized copies move 10·B bytes, as the fused merge does (9 reads + 1 write).
  const dst = makeState(shapes, 0);
  const copySrcs = [base, ...taus.slice(0, 4)];
  const names = shapes.map(([n]) => n);
  const reps = ctx.quick ? 3 : 7;
  const ms = await mediansInterleaved(
    {
      memcpy: async () => {
        for (const src of copySrcs) await native().copyInto(names.map((n) => dst.get(n)!.native), names.map((n) => src.get(n)!.native));
      },
      fused: async () => {
        const out = await combineStates(base, taus, alphas);
        for (const t of out.values()) t.dispose();
        gc();
      },
      // The textbook loop: θ ← θ + α_k τ_k for one task vector at a time over the whole model,
      // each a separate ATen multiply and add (model-sized temporaries, K passes through memory).
      naive: async () => {
        let theta = await combineStates(base, [], []);
        for (let k = 0; k < K; k++) {
          const next = await combineStates(theta, [taus[k]!], [alphas[k]!], { naive: true });
          for (const t of theta.values()) t.dispose();
          theta = next;
        }
        for (const t of theta.values()) t.dispose();
        gc();
      },
      // ATen ops, but tensor-major: all K terms of one tensor before the next (temporaries stay in cache).
      atenPerTensor: async () => {
        const out = await combineStates(base, taus, alphas, { naive: true });
        for (const t of out.values()) t.dispose();
        gc();
      },
    },
    reps,
    1,
  );
  const traffic = (K + 2) * B; // bytes read + written by the fused kernel
  const gbps = (bytes: number, t: number) => bytes / (t / 1000) / 1e9;
  const fusedGBs = gbps(traffic, ms.fused!);
  const memcpyGBs = gbps(2 * B * copySrcs.length, ms.memcpy!);
  const fraction = fusedGBs / memcpyGBs;
  const speedup = ms.naive! / ms.fused!;
  ctx.log(`θ0 + Σ α_i τ_i, ${K} task vectors × ${(params / 1e6).toFixed(1)}M float32 params (${shapes.length} tensors), ${ctx.threads} threads, median of ${reps}`);
  ctx.log(`  fused   ${fmt(ms.fused!)}  ${fusedGBs.toFixed(2)} GB/s`);
  ctx.log(`  memcpy  ${fmt(ms.memcpy!)}  ${memcpyGBs.toFixed(2)} GB/s (same bytes moved)`);
  ctx.log(`  naive   ${fmt(ms.naive!)}  (θ ← θ + α_k τ_k, one task vector and one ATen op at a time over the whole model)`);
  ctx.log(`  ATen per tensor ${fmt(ms.atenPerTensor!)}  (the same ATen ops, tensor-major: temporaries stay in cache)`);
  ctx.log(`  fused / memcpy throughput ${(fraction * 100).toFixed(0)}%  (target ≥ 70%: ${fraction >= 0.7 ? 'met' : 'MISSED'})`);
  ctx.log(`  fused vs naive ${speedup.toFixed(2)}× faster  (target ≥ 3×: ${speedup >= 3 ? 'met' : 'MISSED'})`);
  for (const s of [base, dst, ...taus]) for (const t of s.values()) t.dispose();
  gc();

  // Streaming merge of K checkpoint files in a child process: its peak RSS (VmHWM).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-bench-merge-'));
  let stream: Record<string, number> = {};
  try {
    const ckK = ctx.quick ? 2 : K;
    for (let k = 0; k <= ckK; k++) {
      const sd = makeState(shapes, k === 0 ? 1 : 1 + 0.01 * k);
      await saveStateDict(path.join(dir, `m${k}.safetensors`), sd);
      for (const t of sd.values()) t.dispose();
      gc();
    }
    const cfg = {
      base_model: 'm0.safetensors',
      models: Array.from({ length: ckK }, (_, k) => ({ model: `m${k + 1}.safetensors`, weight: 0.3 })),
      method: 'task_arithmetic',
      output: 'merged.safetensors',
    };
    const script = `
      const { mergeCheckpoints, parseMergeConfig, setNumThreads } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib'))});
      setNumThreads(${ctx.threads});
      mergeCheckpoints(parseMergeConfig(${JSON.stringify(cfg)}), { configDir: ${JSON.stringify(dir)} }).then((r) => {
        const hwm = /VmHWM:\\s+(\\d+) kB/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'));
        console.log(JSON.stringify({ ms: r.ms, peakRssBytes: Number(hwm[1]) * 1024 }));
      });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`streaming merge child failed: ${r.stderr}`);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ms: number; peakRssBytes: number };
    const largest = Math.max(...shapes.map(([, s]) => s.reduce((a, b) => a * b, 1) * 4));
    stream = { models: ckK, ms: res.ms, peakRssBytes: res.peakRssBytes, modelBytes: B, largestTensorBytes: largest, kModelsBytes: (ckK + 1) * B };
    ctx.log(`  streaming merge of ${ckK} checkpoint files: ${fmt(res.ms)}, peak RSS ${(res.peakRssBytes / 2 ** 20).toFixed(0)} MiB (one model ${(B / 2 ** 20).toFixed(0)} MiB, ${ckK + 1} models ${(((ckK + 1) * B) / 2 ** 20).toFixed(0)} MiB, largest tensor ${(largest / 2 ** 20).toFixed(1)} MiB)`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const load = await benchSafetensorsLoad({ bytes: B });
  ctx.log(`  safetensors load ${fmt(load.loadMs)} vs reading the bytes ${fmt(load.readBytesMs)}: ${load.ratio.toFixed(2)}×  (target ≤ 1.2×: ${load.ratio <= 1.2 ? 'met' : 'MISSED'})`);
  return {
    taskVectors: K,
    params,
    tensors: shapes.length,
    threads: ctx.threads,
    reps,
    medianMs: ms,
    fusedGBs,
    memcpyGBs,
    fusedOverMemcpy: fraction,
    fusedSpeedupOverNaive: speedup,
    streaming: stream,
    safetensorsLoad: load,
    targets: { fusedOverMemcpy: 0.7, fusedSpeedupOverNaive: 3, safetensorsLoadRatio: 1.2 },
  };
}

/**
 * Editing throughput, disk to disk (`--only mergeio`): task arithmetic over a base + 4 fine-tuned
 * safetensors checkpoints in ViT-B/32's layout (87.8M float32 each, page cache warm), λ = 0.3.
 * `mergeCheckpoints` timed in this process (libtorch already loaded), alternating with a short
 * PyTorch program over memory-mapped inputs (bench/merge_reference.py, its time after
 * `import torch`), and the I/O floor: reading every input byte and writing + fsync'ing the output.
 * Medians of 3 (--quick: 1). Both outputs are compared. Then the LLM layout case (bench/merge-io-llm.ts:
 * base + 2 fine-tuned Llama-layout checkpoints, 0.48 B params in bf16, sharded; `tangent merge` vs a
 * Python per-tensor loop, whole processes, for task arithmetic, TIES and SLERP), under `llm`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadStateDict, mergeCheckpoints, parseMergeConfig, saveStateDict, setNumThreads, Tensor, type StateDict } from '../lib';
import type { BenchContext } from './run';
import { benchMergeIoLlm, ioFloor } from './merge-io-llm';
import { vitB32Shapes } from './safetensors-load';
import { fmt, medianOf, peerPython } from './stats';

const PY = peerPython();
const SCRIPT = path.resolve(__dirname, '..', '..', 'bench', 'merge_reference.py');

export async function benchMergeIo(ctx: BenchContext): Promise<Record<string, unknown>> {
  setNumThreads(ctx.threads);
  const hasTorch = spawnSync(PY, ['-c', 'import torch, numpy'], { stdio: 'ignore' }).status === 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-bench-mergeio-'));
  const K = 4;
  const lambda = 0.3;
  const reps = ctx.quick ? 1 : 3;
  try {
    const shapes = vitB32Shapes();
    let bytes = 0;
    for (let k = 0; k <= K; k++) {
      const sd: StateDict = new Map();
      for (const [n, s] of shapes) {
        const a = Tensor.allocArray('float32', s.reduce((x, y) => x * y, 1));
        for (let i = 0; i < a.length; i++) a[i] = Math.sin(i * 0.001 + k + n.length);
        sd.set(n, Tensor.from(a, s));
      }
      await saveStateDict(path.join(dir, `m${k}.safetensors`), sd);
      if (k === 0) for (const t of sd.values()) bytes += t.nbytes;
      for (const t of sd.values()) t.dispose();
    }
    const inputs = Array.from({ length: K + 1 }, (_, k) => path.join(dir, `m${k}.safetensors`));
    for (const f of inputs) fs.readFileSync(f); // page cache warm
    const cfg = parseMergeConfig({
      base_model: 'm0.safetensors',
      models: Array.from({ length: K }, (_, k) => ({ model: `m${k + 1}.safetensors`, weight: 1 })),
      method: 'task_arithmetic',
      parameters: { lambda },
      output: 'ours.safetensors',
    });
    const ours: number[] = [];
    const peer: number[] = [];
    const peerImport: number[] = [];
    const floor: number[] = [];
    for (let r = 0; r < reps; r++) {
      const s = performance.now();
      await mergeCheckpoints(cfg, { configDir: dir });
      ours.push(performance.now() - s);
      if (hasTorch) {
        const p = spawnSync(PY, [SCRIPT, path.join(dir, 'peer.safetensors'), String(lambda), ...inputs], {
          encoding: 'utf8',
          env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE', TANGENT_BENCH_THREADS: String(ctx.threads) },
        });
        if (p.status !== 0) throw new Error(`merge_reference.py failed: ${p.stderr}`);
        const j = JSON.parse(p.stdout) as { ms: number; importMs: number };
        peer.push(j.ms);
        peerImport.push(j.importMs);
      }
      floor.push(ioFloor(inputs, path.join(dir, 'floor'), bytes, Infinity));
    }
    let maxDiff: number | null = null;
    if (hasTorch) {
      const a = (await loadStateDict(path.join(dir, 'ours.safetensors'))).tensors;
      const b = (await loadStateDict(path.join(dir, 'peer.safetensors'))).tensors;
      maxDiff = 0;
      for (const [n, t] of a) {
        const x = t.data() as Float32Array;
        const y = b.get(n)!.data() as Float32Array;
        for (let i = 0; i < x.length; i++) maxDiff = Math.max(maxDiff, Math.abs(x[i]! - y[i]!));
      }
    }
    const med = { ours: medianOf(ours), floor: medianOf(floor), peer: hasTorch ? medianOf(peer) : null };
    ctx.log(`task arithmetic, base + ${K} checkpoints of ${(bytes / 2 ** 20).toFixed(0)} MiB (ViT-B/32 layout, float32), page cache warm, ${ctx.threads} threads, median of ${reps}`);
    ctx.log(`  mergeCheckpoints (in process, libtorch loaded)  ${fmt(med.ours)}  (${(med.ours / med.floor).toFixed(2)}× the I/O floor)`);
    if (med.peer !== null)
      ctx.log(`  PyTorch loop over memory-mapped inputs (fair: OMP_WAIT_POLICY=PASSIVE; after import torch ${fmt(medianOf(peerImport))})  ${fmt(med.peer)}  → ours ${(med.ours / med.peer).toFixed(2)}× its time (target ≤ 1.0×); outputs differ by at most ${maxDiff!.toExponential(1)}`);
    ctx.log(`  I/O floor: read ${K + 1} inputs, write + fsync the output  ${fmt(med.floor)}`);
    for (const f of [...inputs, 'ours.safetensors', 'peer.safetensors']) fs.rmSync(path.resolve(dir, f), { force: true });
    ctx.log('');
    const llm = await benchMergeIoLlm(ctx, dir);
    return { models: K, lambda, modelBytes: bytes, reps, runsMs: { ours, peer, peerImport, floor }, medianMs: med, oursOverPeer: med.peer ? med.ours / med.peer : null, oursOverFloor: med.ours / med.floor, maxAbsDiff: maxDiff, llm };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Native core on the built-in ViT (dim 128, depth 4, heads 4, patch 4, 28×28, 10 classes,
 * batch 128): plain forward, linearized forward, standard and linearized train steps (loss,
 * gradients and an SGD update), double-backward JVP. Targets: linearized forward ≤ 1.6× plain
 * forward, linearized train step ≤ 1.4× standard step.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { combineStates, Model, setNumThreads, Tensor, type StateDict } from '../lib';
import type { BenchContext } from './run';
import { seededNormal as normal } from '../lib/util/random';
import { fmt, mediansInterleaved } from './stats';

export async function benchCore(ctx: BenchContext): Promise<Record<string, unknown>> {
  setNumThreads(ctx.threads);
  const config = { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 } as const;
  const batch = 128;
  const model = Model.create(config, { seed: 0 });
  const x = Tensor.from(normal(batch * 784, 1), [batch, 1, 28, 28]);
  const y = Tensor.fromLabels(Array.from({ length: batch }, (_, i) => i % 10));
  const theta0 = model.parameters();
  const tangent: StateDict = new Map();
  let s = 2;
  for (const [n, p] of theta0) tangent.set(n, Tensor.from(normal(p.numel, s++).map((v) => v * 1e-2), p.shape));
  const theta = await combineStates(theta0, [tangent], [1]);
  const lin = model.linearize();
  const sgd = async (params: StateDict, grads: StateDict): Promise<void> => {
    const next = await combineStates(params, [grads], [-1e-3]);
    for (const t of next.values()) t.dispose();
    for (const t of grads.values()) t.dispose();
  };
  const reps = ctx.quick ? 5 : 15;
  const ms = await mediansInterleaved(
    {
      forward: async () => (await model.forward(x, theta)).dispose(),
      linearizedForward: async () => (await lin.forward(x, theta)).dispose(),
      standardTrainStep: async () => sgd(theta, (await model.lossAndGrad(x, y, { params: theta })).grads),
      linearizedTrainStep: async () => sgd(theta, (await lin.lossAndGrad(x, y, { params: theta })).grads),
      jvp: async () => {
        const r = await model.jvp(x, tangent);
        r.primal.dispose();
        r.tangent.dispose();
      },
      doubleBackwardJvp: async () => (await model.jvpDoubleBackward(x, tangent)).dispose(),
    },
    reps,
  );
  const ratios = {
    linearizedForwardOverForward: ms.linearizedForward! / ms.forward!,
    linearizedStepOverStandardStep: ms.linearizedTrainStep! / ms.standardTrainStep!,
    doubleBackwardOverForwardAdJvp: ms.doubleBackwardJvp! / ms.jvp!,
  };
  const targets = { linearizedForwardOverForward: 1.6, linearizedStepOverStandardStep: 1.4 };
  ctx.log(`ViT dim 128, depth 4, heads 4, patch 4, 28×28, batch ${batch}, ${model.numel} params, ${ctx.threads} threads, median of ${reps}`);
  for (const [k, v] of Object.entries(ms)) ctx.log(`  ${k.padEnd(22)} ${fmt(v)}`);
  for (const [k, v] of Object.entries(ratios)) {
    const target = (targets as Record<string, number>)[k];
    ctx.log(`  ${k.padEnd(32)} ${v.toFixed(2)}×${target ? `  (target ≤ ${target}×: ${v <= target ? 'met' : 'MISSED'})` : ''}`);
  }
  // The same model and measurements in PyTorch's Python API (Debian python3-torch, the same
  // libtorch), run here in the same session, when it is installed.
  // The fair peer runs with OMP_WAIT_POLICY=PASSIVE: with GNU OpenMP's default spin-waiting,
  // PyTorch's main thread fights OpenBLAS's threads on small machines and runs 2–3× slower. The
  // default-settings figure is kept beside it, labelled.
  let pytorch: unknown = null;
  let pytorchDefault: unknown = null;
  const py = '/usr/bin/python3';
  if (fs.existsSync(py) && spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) {
    const run = (label: string, env: NodeJS.ProcessEnv): unknown => {
      const r = spawnSync(py, [path.resolve(__dirname, '..', '..', 'bench', 'reference_pytorch.py'), String(ctx.threads), String(reps)], { encoding: 'utf8', env });
      if (r.status !== 0) {
        ctx.log(`  (PyTorch reference, ${label}, failed: ${r.stderr.trim().split('\n').pop()})`);
        return null;
      }
      const ref = JSON.parse(r.stdout) as { torch: string; medianMs: Record<string, number>; ratios: Record<string, number> };
      ctx.log(`  PyTorch ${ref.torch} Python API, same model, ${ctx.threads} threads, ${label}: forward ${fmt(ref.medianMs.forward!)}, linearized forward ${fmt(ref.medianMs.linearizedForward!)} (${ref.ratios.linearizedForwardOverForward!.toFixed(2)}×), standard step ${fmt(ref.medianMs.standardTrainStep!)}, linearized step ${fmt(ref.medianMs.linearizedTrainStep!)} (${ref.ratios.linearizedStepOverStandardStep!.toFixed(2)}×)`);
      return { ...ref, env: label };
    };
    const dflt = { ...process.env };
    delete dflt.OMP_WAIT_POLICY;
    pytorch = run('fair (OMP_WAIT_POLICY=PASSIVE)', { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' });
    pytorchDefault = run('default settings (not the comparison)', dflt);
    const ref = pytorch as { medianMs: Record<string, number> } | null;
    if (ref)
      ctx.log(`  speed-up over the fair peer: ${(['forward', 'linearizedForward', 'standardTrainStep', 'linearizedTrainStep'] as const).map((k) => `${k} ${(ref.medianMs[k]! / ms[k]!).toFixed(2)}×`).join(', ')}`);
  }
  return { model: config, batch, params: model.numel, threads: ctx.threads, reps, medianMs: ms, ratios, targets, pytorchReference: pytorch, pytorchReferenceDefaultSettings: pytorchDefault };
}

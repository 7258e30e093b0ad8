/**
 * Native core on the built-in ViT (dim 128, depth 4, heads 4, patch 4, 28×28, 10 classes,
 * batch 128): plain forward, linearized forward, standard and linearized train steps (loss,
 * gradients and an SGD update), double-backward JVP, and the linearized calls by forward-mode AD
 * (setJvpMethod("forward-ad")) beside the default hand-written JVP. Targets: linearized forward ≤ 1.6× plain
 * forward, linearized train step ≤ 1.4× standard step.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { combineStates, Model, setJvpMethod, setNumThreads, Tensor, type StateDict } from '../lib';
import type { BenchContext } from './run';
import { seededNormal as normal } from '../lib/util/random';
import { defaultPeerEnv, defaultPeerLabel, fmt, mediansInterleaved, perturbed, peerPython } from './stats';
import { Peer } from './models';

export async function benchCore(ctx: BenchContext): Promise<Record<string, unknown>> {
  setNumThreads(ctx.threads);
  const config = { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 } as const;
  const batch = 128;
  const model = Model.create(config, { seed: 0 });
  const x = Tensor.from(normal(batch * 784, 1), [batch, 1, 28, 28]);
  const y = Tensor.fromLabels(Array.from({ length: batch }, (_, i) => i % 10));
  const theta0 = model.parameters();
  const { tangent, theta } = await perturbed(theta0);
  const lin = model.linearize();
  const sgd = async (params: StateDict, grads: StateDict): Promise<void> => {
    const next = await combineStates(params, [grads], [-1e-3]);
    for (const t of next.values()) t.dispose();
    for (const t of grads.values()) t.dispose();
  };
  const withForwardAd = async (f: () => Promise<void>): Promise<void> => {
    setJvpMethod('forward-ad');
    try {
      await f();
    } finally {
      setJvpMethod('auto');
    }
  };
  const reps = ctx.quick ? 5 : 15;
  // PyTorch's Python API on the same model and the same libtorch (the build's PyTorch), in a peer
  // process whose runs alternate with ours (ours, PyTorch, ours, …) so drift hits both alike. The
  // fair peer runs with OMP_WAIT_POLICY=PASSIVE: with GNU OpenMP's default spin-waiting,
  // PyTorch's main thread fights OpenBLAS's threads on small machines and runs 2–3× slower.
  const py = peerPython();
  const hasTorch = fs.existsSync(py) && spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
  const peer = hasTorch ? new Peer('fair', { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' }, ['--serve-core', String(ctx.threads)]) : null;
  await peer?.ready();
  const OPS = ['forward', 'linearizedForward', 'standardTrainStep', 'linearizedTrainStep'] as const;
  const peerFns: Record<string, () => Promise<unknown>> = {};
  if (peer) for (const op of OPS) peerFns[`pytorch.${op}`] = () => peer.run(op);
  const oursFns: Record<string, () => Promise<unknown>> = {
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
    // The same two linearized calls through libtorch's forward-mode AD instead of the ViT's
    // hand-written JVP (setJvpMethod('forward-ad')): the "before" of that change, in this run.
    linearizedForwardByForwardAd: async () => withForwardAd(async () => (await lin.forward(x, theta)).dispose()),
    linearizedTrainStepByForwardAd: async () => withForwardAd(async () => sgd(theta, (await lin.lossAndGrad(x, y, { params: theta })).grads)),
  };
  const fns: Record<string, () => Promise<unknown>> = {};
  for (const [k, f] of Object.entries(oursFns)) {
    fns[k] = f;
    if (peerFns[`pytorch.${k}`]) fns[`pytorch.${k}`] = peerFns[`pytorch.${k}`]!;
  }
  const all = await mediansInterleaved(fns, reps);
  peer?.close();
  const ms = Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith('pytorch.')));
  const peerMs = Object.fromEntries(Object.entries(all).filter(([k]) => k.startsWith('pytorch.')).map(([k, v]) => [k.slice(8), v]));
  const ratios = {
    linearizedForwardOverForward: ms.linearizedForward! / ms.forward!,
    linearizedStepOverStandardStep: ms.linearizedTrainStep! / ms.standardTrainStep!,
    doubleBackwardOverJvp: ms.doubleBackwardJvp! / ms.jvp!,
    handWrittenJvpSpeedupLinearizedForward: ms.linearizedForwardByForwardAd! / ms.linearizedForward!,
    handWrittenJvpSpeedupLinearizedTrainStep: ms.linearizedTrainStepByForwardAd! / ms.linearizedTrainStep!,
  };
  const targets = { linearizedForwardOverForward: 1.6, linearizedStepOverStandardStep: 1.4 };
  ctx.log(`ViT dim 128, depth 4, heads 4, patch 4, 28×28, batch ${batch}, ${model.numel} params, ${ctx.threads} threads, median of ${reps}`);
  for (const [k, v] of Object.entries(ms)) ctx.log(`  ${k.padEnd(30)} ${fmt(v)}`);
  for (const [k, v] of Object.entries(ratios)) {
    const target = (targets as Record<string, number>)[k];
    ctx.log(`  ${k.padEnd(42)} ${v.toFixed(2)}×${target ? `  (target ≤ ${target}×: ${v <= target ? 'met' : 'MISSED'})` : ''}`);
  }
  // The same model and measurements in PyTorch's Python API (Debian python3-torch, the same
  // libtorch), run here in the same session, when it is installed.
  let pytorch: unknown = null;
  let pytorchDefault: unknown = null;
  if (peer) {
    pytorch = { torch: peer.info?.torch, env: 'OMP_WAIT_POLICY=PASSIVE', alternating: true, medianMs: peerMs, ratios: { linearizedForwardOverForward: peerMs.linearizedForward! / peerMs.forward!, linearizedStepOverStandardStep: peerMs.linearizedTrainStep! / peerMs.standardTrainStep! } };
    ctx.log(`  PyTorch ${peer.info?.torch} Python API, same model, ${ctx.threads} threads, fair (OMP_WAIT_POLICY=PASSIVE), alternating with ours: ${OPS.map((k) => `${k} ${fmt(peerMs[k]!)}`).join(', ')}`);
    ctx.log(`  speed-up over the fair peer: ${OPS.map((k) => `${k} ${(peerMs[k]! / ms[k]!).toFixed(2)}×`).join(', ')}`);
    // PyTorch's default settings (spin-waiting OpenMP), after the fact, labelled: not the comparison.
    const dflt = defaultPeerEnv();
    const r = spawnSync(py, [path.resolve(__dirname, '..', '..', 'bench', 'reference_pytorch.py'), String(ctx.threads), String(Math.min(reps, 5))], { encoding: 'utf8', env: dflt });
    if (r.status === 0) {
      pytorchDefault = { ...(JSON.parse(r.stdout) as object), env: `${defaultPeerLabel()}, run after ours, not alternating` };
      const d = (pytorchDefault as { medianMs: Record<string, number> }).medianMs;
      ctx.log(`  PyTorch with ${defaultPeerLabel()} (labelled, not the comparison): ${OPS.map((k) => `${k} ${fmt(d[k]!)}`).join(', ')}`);
    }
  }
  return { model: config, batch, params: model.numel, threads: ctx.threads, reps, medianMs: ms, ratios, targets, pytorchReference: pytorch, pytorchReferenceDefaultSettings: pytorchDefault };
}

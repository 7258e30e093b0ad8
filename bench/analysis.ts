/**
 * The paper's analyses on the built-in ViT (dim 128, depth 4, heads 4, patch 4, 28×28,
 * 10 classes; random task vectors of per-parameter scale 1e-2, random inputs):
 * - a 25×25 ξ grid on [−3, 3]², linear via the affine shortcut (two JVPs per input) and
 *   non-linear (625 fused combines + forwards), and the linear grid by brute force (f_lin at
 *   every point) on a 5×5 grid scaled to 625 points for the speed-up of the shortcut;
 * - an N = 1000 empirical NTK Gram matrix (trace over the 10 logits, float32 Jacobian rows,
 *   2 GiB budget) and its eigendecomposition.
 * --quick: 32 inputs per task for ξ and N = 200 for the NTK.
 */
import { weightDisentanglement } from '../lib/analysis/disentanglement';
import { eighSymmetric, empiricalNtk } from '../lib/analysis/ntk';
import { Model, type StateDict } from '../lib/model';
import { getNumThreads, setNumThreads } from '../lib/runtime';
import { Tensor } from '../lib/tensor';
import { seededNormal as normal } from '../lib/util/random';
import type { BenchContext } from './run';

export async function benchAnalysis(ctx: BenchContext): Promise<Record<string, unknown>> {
  setNumThreads(ctx.threads);
  const config = { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 } as const;
  const model = Model.create(config, { seed: 0 });
  const tau = (seed: number): StateDict => {
    const m: StateDict = new Map();
    let s = seed;
    for (const [n, sp] of model.spec) m.set(n, Tensor.from(normal(sp.shape.reduce((a, b) => a * b, 1), s++).map((v) => v * 1e-2), sp.shape));
    return m;
  };
  const tau1 = tau(100);
  const tau2 = tau(1000);
  const perTask = ctx.quick ? 32 : 64;
  const x1 = Tensor.from(normal(perTask * 784, 1), [perTask, 1, 28, 28]);
  const x2 = Tensor.from(normal(perTask * 784, 2).map((v) => v + 0.5), [perTask, 1, 28, 28]);
  ctx.log(`ViT dim 128, depth 4 (${model.numel} params), ${getNumThreads()} threads; ξ on ${perTask} inputs per task`);

  const linear = await weightDisentanglement(model, { mode: 'linear', tau1, tau2, x1, x2 });
  ctx.log(`  ξ 25×25 linear (affine, 2 JVPs per input): ${linear.timing.totalMs.toFixed(0)} ms (JVPs ${linear.timing.modelMs.toFixed(0)} ms, grid arithmetic ${linear.timing.gridMs.toFixed(0)} ms)`);
  const brute = await weightDisentanglement(model, { mode: 'linear', linearMethod: 'forward', tau1, tau2, x1, x2, alphas: [-3, -1.5, 0, 1.5, 3] });
  const bruteFullMs = (brute.timing.totalMs * 625) / (25 + 2 * 5);
  ctx.log(`  ξ 5×5 linear by brute force (f_lin at every point): ${brute.timing.totalMs.toFixed(0)} ms → ≈ ${(bruteFullMs / 1000).toFixed(1)} s for 25×25; shortcut speed-up ≈ ${(bruteFullMs / linear.timing.totalMs).toFixed(0)}×`);
  const nonlinear = await weightDisentanglement(model, { mode: 'nonlinear', tau1, tau2, x1, x2 });
  ctx.log(
    `  ξ 25×25 non-linear: ${(nonlinear.timing.totalMs / 1000).toFixed(1)} s (${nonlinear.timing.modelCalls} forwards ${(nonlinear.timing.modelMs / 1000).toFixed(1)} s, combines ${(nonlinear.timing.combineMs / 1000).toFixed(1)} s overlapped)`,
  );

  const N = ctx.quick ? 200 : 1000;
  const x = Tensor.from(normal(N * 784, 3), [N, 1, 28, 28]);
  const g = await empiricalNtk(model, x, { maxMemoryBytes: 2 * 2 ** 30 });
  const t0 = performance.now();
  const eig = await eighSymmetric(g.gram, 20);
  const eighMs = performance.now() - t0;
  ctx.log(
    `  NTK N=${N} trace over ${g.outputs} logits: ${(g.ms / 1000).toFixed(1)} s (${g.strategy}, ${g.passes} passes, ${g.forwardPasses} batch-1 forwards, ${g.backwardPasses} backward passes, peak Jacobian ${(g.peakJacobianBytes / 2 ** 30).toFixed(2)} GiB); eigh ${eighMs.toFixed(0)} ms`,
  );
  return {
    model: config,
    params: model.numel,
    threads: getNumThreads(),
    xi: {
      grid: '25x25 on [-3,3]^2',
      inputsPerTask: perTask,
      linearAffineMs: linear.timing.totalMs,
      linearAffineJvpMs: linear.timing.modelMs,
      linearAffineGridMs: linear.timing.gridMs,
      linearBruteForce5x5Ms: brute.timing.totalMs,
      linearBruteForceEstimated25x25Ms: bruteFullMs,
      nonlinearMs: nonlinear.timing.totalMs,
      nonlinearForwardMs: nonlinear.timing.modelMs,
      nonlinearCombineMs: nonlinear.timing.combineMs,
      nonlinearModelCalls: nonlinear.timing.modelCalls,
    },
    ntk: {
      n: N,
      kernel: 'trace over logits',
      jacobianDtype: 'float32',
      maxMemoryBytes: 2 * 2 ** 30,
      gramMs: g.ms,
      eighMs,
      strategy: g.strategy,
      passes: g.passes,
      forwardPasses: g.forwardPasses,
      backwardPasses: g.backwardPasses,
      peakJacobianBytes: g.peakJacobianBytes,
      topEigenvalues: Array.from(eig.values.slice(0, 5)),
    },
  };
}

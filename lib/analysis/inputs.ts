/**
 * Inputs of the analyses: state dicts from checkpoint files of any format (lib/checkpoint/io),
 * checked against a model by name; images as tensors; and the built-in demo inputs — θ0, heads
 * and task vectors made with lib/train as the paper protocol makes them. (Models, θ0 and heads for
 * the CLI resolve in lib/cli/inputs.ts.)
 */
import { loadStateDict } from '../checkpoint/io';
import { loadTask, type TaskName } from '../data/tasks';
import { subset, type ImageSet } from '../data/dataset';
import { ParameterError, ShapeError } from '../errors';
import type { Head, Model, StateDict, VitConfig } from '../model';
import { TaskVector } from '../taskvector';
import { isFloatDType, Tensor, type DType } from '../tensor';
import { batchTensors, prepareTask } from '../data/splits';
import { finetune } from '../train/finetune';
import { fitHead, pretrain } from '../train/pretrain';

/** The built-in ViT of the benchmarks (dim 128, depth 4, heads 4, patch 4, 28×28, 10 classes). */
export const DEMO_VIT: VitConfig = { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 };

/**
 * A state dict (θ0 or a task vector) from a checkpoint file of any format (lib/checkpoint/io), by
 * name: every model parameter must be present with the model's shape; names the model does not
 * have are errors; float tensors are cast natively to the model's dtype.
 */
export async function loadStateFile(file: string, model: Model, what: string): Promise<StateDict> {
  let { tensors } = await loadStateDict(file);
  const arch = model.config.arch;
  if (arch === 'clip-vision' || arch === 'clip-text') {
    // CLIP weights in open_clip's or transformers' layout, whole or one tower (lib/clip/weights.ts).
    const { clipTowerState } = await import('../clip/weights');
    try {
      tensors = clipTowerState(tensors, arch === 'clip-vision' ? 'vision' : 'text', file);
    } catch (e) {
      throw new ParameterError(`${what}: ${(e as Error).message}`);
    }
  }
  const unknown = [...tensors.keys()].filter((n) => !model.spec.has(n) && !model.bufferNames.has(n));
  if (unknown.length) throw new ParameterError(`${what} (${file}): names the model does not have: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ` (+${unknown.length - 5} more)` : ''}`);
  const out: StateDict = new Map();
  for (const [name, spec] of model.spec) {
    const t = tensors.get(name);
    if (t === undefined) throw new ParameterError(`${what} (${file}): missing parameter '${name}'`);
    if (t.shape.length !== spec.shape.length || t.shape.some((v, i) => v !== spec.shape[i]))
      throw new ShapeError(`${what} (${file}): '${name}' has shape [${t.shape.join(', ')}], the model expects [${spec.shape.join(', ')}]`);
    out.set(name, await toFloat(t, spec.dtype, `${what} '${name}'`));
  }
  return out;
}

async function toFloat(t: Tensor, dtype: DType, what: string): Promise<Tensor> {
  if (!isFloatDType(t.dtype)) throw new ParameterError(`${what}: tensor has dtype ${t.dtype}; only float tensors belong in a state dict or task vector`);
  return t.dtype === dtype ? t : t.to(dtype);
}

/** Images of a set as a [n, C, H, W] tensor (float32, or float64 for a float64 model). */
export function imagesTensor(set: ImageSet, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  const data = dtype === 'float64' ? Float64Array.from(set.images) : set.images;
  return Tensor.from(data, [set.count, ...set.shape]);
}

/** `n` test inputs of a built-in task (a seeded random subset). */
export async function taskInputs(name: string, n: number, seed = 0): Promise<{ set: ImageSet; x: Tensor }> {
  const { test } = await loadTask(name as TaskName);
  const set = subset(test, Math.min(n, test.count), seed);
  return { set, x: imagesTensor(set) };
}

export interface DemoFineTuneOptions {
  /** AdamW steps of fine-tuning per task and mode (default 60). */
  steps?: number;
  /** AdamW learning rate (default 1e-3, the protocol's). */
  lr?: number;
  seed?: number;
  log?: (s: string) => void;
}

export interface DemoTaskVectors {
  model: Model;
  heads: [Head, Head];
  /** Task vectors of standard (non-linear) fine-tuning. */
  nonlinear: [StateDict, StateDict];
  /** Task vectors of linear fine-tuning (in f_lin). */
  linear: [StateDict, StateDict];
  /** Test accuracy of each fine-tuned model on its own task (a sanity check). */
  accuracy: { nonlinear: [number, number]; linear: [number, number]; pretrained: [number, number] };
  ms: number;
}

/**
 * The demo inputs, built with lib/train exactly as the paper protocol builds them (at a smaller
 * scale): θ0 = the small ViT pre-trained on a Fashion-MNIST subset, frozen ridge heads on its
 * normalized features, and τ_t from `steps` AdamW steps of standard and of linear fine-tuning.
 */
export async function demoTaskVectors(tasks: [string, string], opts: DemoFineTuneOptions = {}): Promise<DemoTaskVectors> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const steps = opts.steps ?? 60;
  const seed = opts.seed ?? 0;
  const source = await prepareTask('fashion', { trainLimit: 6000 });
  const bb = await pretrain({ source: source.train, steps: 150, initSeed: seed });
  const splits = await Promise.all(tasks.map((t) => prepareTask(t as TaskName, { testLimit: 512 })));
  const heads: [Head, Head] = [await fitHead(bb, splits[0]!.train, { maxSamples: 2000 }), await fitHead(bb, splits[1]!.train, { maxSamples: 2000 })];
  const lin = bb.model.linearize(bb.theta0);
  const accuracy = async (mode: 'standard' | 'linear', k: number, params?: StateDict): Promise<number> => {
    const { x, y } = batchTensors(splits[k]!.test, Array.from({ length: splits[k]!.test.count }, (_, i) => i));
    const opt = { params: params ?? bb.theta0, head: heads[k] };
    const r = mode === 'standard' ? await bb.model.evaluate(x, y, opt) : await lin.evaluate(x, y, opt);
    return r.correct / splits[k]!.test.count;
  };
  const pre: [number, number] = [await accuracy('standard', 0), await accuracy('standard', 1)];
  log(`  θ0 (small ViT pre-trained on fashion) with frozen heads: test accuracy ${tasks.map((t, k) => `${t} ${(100 * pre[k]!).toFixed(1)}%`).join(', ')}`);
  const acc = { nonlinear: [0, 0] as [number, number], linear: [0, 0] as [number, number] };
  const run = async (mode: 'standard' | 'linear', k: number): Promise<StateDict> => {
    const r = await finetune({ mode, model: bb.model, theta0: bb.theta0, head: heads[k], train: splits[k]!.train, steps, lr: opts.lr ?? 1e-3, seed });
    const a = await accuracy(mode, k, r.params);
    (mode === 'standard' ? acc.nonlinear : acc.linear)[k] = a;
    log(`  ${mode} fine-tuning on ${tasks[k]}: ${steps} AdamW steps, test accuracy ${(100 * a).toFixed(1)}%`);
    const tau = await TaskVector.from(bb.theta0, r.params);
    r.params.forEach((t) => t.dispose());
    return tau.tensors;
  };
  const nonlinear: [StateDict, StateDict] = [await run('standard', 0), await run('standard', 1)];
  const linear: [StateDict, StateDict] = [await run('linear', 0), await run('linear', 1)];
  return { model: bb.model, heads, nonlinear, linear, accuracy: { ...acc, pretrained: pre }, ms: performance.now() - t0 };
}

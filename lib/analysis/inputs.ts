/**
 * Inputs of the analysis CLI: models (built-in config or TorchScript), state dicts and heads from
 * safetensors (read with lib/checkpoint), task data from lib/data, and the built-in demo inputs —
 * a ViT from a seed as θ0, two real tasks, and task vectors from a few steps of standard vs linear
 * fine-tuning with frozen, L2-normalized heads (as in the paper).
 */
import * as fs from 'node:fs';
import { readSafetensors } from '../checkpoint/safetensors';
import { toFloat32Array, typedView, type RawTensor } from '../checkpoint/dtype';
import { loadTask, type TaskName } from '../data/tasks';
import { mulberry32, subset, type ImageSet } from '../data/dataset';
import { ArgumentError, ParameterError, ShapeError } from '../errors';
import { Model, type Head, type ModelConfig, type StateDict, type VitConfig } from '../model';
import { combineStates } from '../ops';
import { Tensor } from '../tensor';

/** The built-in ViT of the benchmarks (dim 128, depth 4, heads 4, patch 4, 28×28, 10 classes). */
export const DEMO_VIT: VitConfig = { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 };

/**
 * A model from `spec`: a TorchScript file (.pt), a JSON file or inline JSON with a built-in
 * config, or undefined for `fallback`; a built-in model's θ0 comes from `seed`.
 */
export async function loadModel(spec: string | undefined, seed: number, fallback: ModelConfig = DEMO_VIT, dtype: 'float32' | 'float64' = 'float32'): Promise<Model> {
  if (spec === undefined) return Model.create(fallback, { seed, dtype });
  if (spec.endsWith('.pt') || spec.endsWith('.ts')) return Model.load(spec);
  const text = fs.existsSync(spec) ? fs.readFileSync(spec, 'utf8') : spec;
  let cfg: ModelConfig;
  try {
    cfg = JSON.parse(text) as ModelConfig;
  } catch {
    throw new ArgumentError(`--model: '${spec}' is neither a TorchScript .pt file nor a JSON model config (file or inline)`);
  }
  return Model.create(cfg, { seed, dtype });
}

function toModelDtype(raw: RawTensor, dtype: string, what: string): Tensor {
  if (!raw.dtype.startsWith('float') && raw.dtype !== 'bfloat16')
    throw new ParameterError(`${what}: tensor has dtype ${raw.dtype}; only float tensors belong in a state dict or task vector`);
  if (dtype === 'float64') {
    const v = raw.dtype === 'float64' ? Float64Array.from(typedView(raw as RawTensor & { dtype: 'float64' })) : Float64Array.from(toFloat32Array(raw));
    return Tensor.from(v, raw.shape);
  }
  return Tensor.from(toFloat32Array(raw), raw.shape);
}

/**
 * A state dict (θ0 or a task vector) from a safetensors file, by name: every model parameter
 * must be present with the model's shape; names the model does not have are errors; tensors are
 * converted to the model's dtype.
 */
export function loadStateFile(file: string, model: Model, what: string): StateDict {
  const { tensors } = readSafetensors(file);
  const out: StateDict = new Map();
  const unknown = [...tensors.keys()].filter((n) => !model.spec.has(n) && !model.bufferNames.has(n));
  if (unknown.length) throw new ParameterError(`${what} (${file}): names the model does not have: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ` (+${unknown.length - 5} more)` : ''}`);
  for (const [name, spec] of model.spec) {
    const raw = tensors.get(name);
    if (raw === undefined) throw new ParameterError(`${what} (${file}): missing parameter '${name}'`);
    if (raw.shape.length !== spec.shape.length || raw.shape.some((v, i) => v !== spec.shape[i]))
      throw new ShapeError(`${what} (${file}): '${name}' has shape [${raw.shape.join(', ')}], the model expects [${spec.shape.join(', ')}]`);
    out.set(name, toModelDtype(raw, spec.dtype, `${what} '${name}'`));
  }
  return out;
}

/** A frozen head from a safetensors file holding `weight` [classes, features] and optionally `bias`. */
export function loadHeadFile(file: string, normalize: boolean, dtype: string): Head {
  const { tensors } = readSafetensors(file);
  const w = tensors.get('weight');
  if (w === undefined) throw new ParameterError(`head (${file}): no tensor named 'weight'`);
  const b = tensors.get('bias');
  return { weight: toModelDtype(w, dtype, 'head weight'), bias: b === undefined ? undefined : toModelDtype(b, dtype, 'head bias'), normalize };
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
  steps?: number;
  batch?: number;
  /** SGD learning rates of standard and linear fine-tuning. */
  lr?: number;
  linearLr?: number;
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
 * The demo: θ0 = a ViT (features out, numClasses 0) from a seed, one frozen random normalized head
 * per task, and τ_t from `steps` SGD steps of standard and of linear fine-tuning on each task's
 * train split (encoder trained, head frozen).
 */
export async function demoTaskVectors(tasks: [string, string], opts: DemoFineTuneOptions = {}): Promise<DemoTaskVectors> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const steps = opts.steps ?? 40;
  const batch = opts.batch ?? 64;
  const seed = opts.seed ?? 0;
  const model = Model.create({ ...DEMO_VIT, numClasses: 0 }, { seed });
  const theta0 = model.parameters();
  const lin = model.linearize();
  const data = await Promise.all(tasks.map((t) => loadTask(t as TaskName)));
  const heads = data.map((d, k) => {
    const rng = mulberry32(seed * 7919 + k + 1);
    const w = new Float32Array(d.train.classes * DEMO_VIT.dim);
    for (let i = 0; i < w.length; i++) w[i] = Math.sqrt(-2 * Math.log(rng() + 1e-12)) * Math.cos(2 * Math.PI * rng()) * 1.5;
    return { weight: Tensor.from(w, [d.train.classes, DEMO_VIT.dim]), normalize: true } as Head;
  }) as [Head, Head];
  const evalSets = data.map((d) => subset(d.test, Math.min(512, d.test.count), seed + 1));
  const accuracy = async (mode: 'standard' | 'linear', k: number, params: StateDict | undefined): Promise<number> => {
    const set = evalSets[k]!;
    const x = imagesTensor(set);
    const y = Tensor.fromLabels(set.labels);
    const r = mode === 'standard' ? await model.evaluate(x, y, { params, head: heads[k] }) : await lin.evaluate(x, y, { params, head: heads[k] });
    return r.correct / set.count;
  };
  const finetune = async (mode: 'standard' | 'linear', k: number): Promise<StateDict> => {
    const train = data[k]!.train;
    const rng = mulberry32(seed * 104729 + k * 31 + (mode === 'linear' ? 17 : 0));
    const lr = mode === 'linear' ? (opts.linearLr ?? opts.lr ?? 0.1) : (opts.lr ?? 0.1);
    let theta: StateDict = new Map(theta0);
    let last = 0;
    for (let s = 0; s < steps; s++) {
      const idx = Array.from({ length: batch }, () => Math.floor(rng() * train.count));
      const per = train.images.length / train.count;
      const xb = new Float32Array(batch * per);
      idx.forEach((i, b) => xb.set(train.images.subarray(i * per, (i + 1) * per), b * per));
      const x = Tensor.from(xb, [batch, ...train.shape]);
      const y = Tensor.fromLabels(idx.map((i) => train.labels[i]!));
      const r = mode === 'standard' ? await model.lossAndGrad(x, y, { params: theta, head: heads[k] }) : await lin.lossAndGrad(x, y, { params: theta, head: heads[k] });
      const next = await combineStates(theta, [r.grads], [-lr]);
      if (s > 0) theta.forEach((t) => t.dispose());
      r.grads.forEach((t) => t.dispose());
      theta = next;
      last = r.loss;
    }
    const tau = await combineStates(theta, [theta0], [-1]);
    const acc = await accuracy(mode, k, theta);
    theta.forEach((t) => t.dispose());
    log(`  ${mode} fine-tuning on ${tasks[k]}: ${steps} SGD steps (batch ${batch}, lr ${lr}), last loss ${last.toFixed(3)}, test accuracy ${(100 * acc).toFixed(1)}%`);
    (mode === 'standard' ? accNl : accLin)[k] = acc;
    return tau;
  };
  const accNl: [number, number] = [0, 0];
  const accLin: [number, number] = [0, 0];
  const pre: [number, number] = [await accuracy('standard', 0, undefined), await accuracy('standard', 1, undefined)];
  log(`  θ0 (ViT from seed ${seed}) with the frozen heads: test accuracy ${tasks.map((t, k) => `${t} ${(100 * pre[k]!).toFixed(1)}%`).join(', ')}`);
  const nonlinear: [StateDict, StateDict] = [await finetune('standard', 0), await finetune('standard', 1)];
  const linear: [StateDict, StateDict] = [await finetune('linear', 0), await finetune('linear', 1)];
  return { model, heads, nonlinear, linear, accuracy: { nonlinear: accNl, linear: accLin, pretrained: pre }, ms: performance.now() - t0 };
}

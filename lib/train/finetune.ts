/**
 * Fine-tuning, standard and linear, through ONE loop: gradients from `model.lossAndGrad`
 * (standard: f(x; θ)) or `model.linearize(θ0).lossAndGrad` (linear: f_lin(x; θ), backward through
 * the JVP), then one fused native AdamW step (decoupled weight decay, global-norm clipping),
 * cosine schedule with warm-up. Checkpoints are safetensors state dicts of θ; the optimizer state
 * sits beside them in `<name>.optim.safetensors`; a run resumed from them gives bit-identical
 * results to an uninterrupted one (batches are a function of (seed, step); the optimizer state
 * is saved exactly).
 */
import * as fs from 'node:fs';
import type { ImageSet } from '../data';
import { ArgumentError } from '../errors';
import { CheckpointError } from '../checkpoint/errors';
import type { Head, Mode, Model, Params, StateDict } from '../model';
import { AdamW, cosineLr } from './optim';
import { broadcastFromRoot, checkShardable, reduceStep, shardOf } from '../distributed/data-parallel';
import type { ProcessGroup } from '../distributed/group';
import { groupFor } from '../distributed/context';
import { batchTensors, checkDataset, StepSampler } from '../data/splits';
import { assertMatchesModel, hashTensors, loadTensors, saveTensors } from '../util/state';
import { progress as makeProgress, type ProgressOptions } from '../util/progress';

/** The hyper-parameters of a fine-tuning run (all saved in checkpoints). */
export interface FinetuneHyper {
  steps: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  warmupSteps: number;
  /** Global gradient-norm clipping threshold (0: none). */
  maxGradNorm: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Seeds the batch order. */
  seed: number;
}

/**
 * Defaults for the small ViT on 28×28 tasks (the paper's ViT-B/32 recipe, lr 1e-5 / wd 0.1 /
 * batch 128 / 500 warm-up / clip 1 / 2000 steps, rescaled to a 100k-parameter model trained
 * from a briefly pre-trained θ0 on 2 CPU cores).
 */
export const FINETUNE_DEFAULTS: FinetuneHyper = {
  steps: 300,
  batchSize: 128,
  lr: 1e-3,
  weightDecay: 0.1,
  warmupSteps: 30,
  maxGradNorm: 1,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  seed: 0,
};

export interface StepRecord {
  step: number;
  loss: number;
  /** Batch accuracy. */
  acc: number;
  lr: number;
  gradNorm: number;
}

export interface TrainingState {
  params: StateDict;
  expAvg: StateDict;
  expAvgSq: StateDict;
  /** Steps already taken. */
  step: number;
  mode: Mode;
  hyper: FinetuneHyper;
}

export interface CheckpointOptions {
  /** θ goes here (a safetensors state dict); the optimizer state to `optimStatePath(file)`. */
  file: string;
  /** Also checkpoint every this many steps (default: only at the end). */
  every?: number;
  /** Extra metadata (task name, θ0 reference, head hash, model config, ...). */
  metadata?: Record<string, string>;
}

export interface FinetuneOptions extends Partial<FinetuneHyper> {
  mode: Mode;
  model: Model;
  /** θ0: the starting point and, in linear mode, the linearization point. Default: the model's own. */
  theta0?: Params;
  /** Frozen head on the model's features; omit when the model outputs logits itself. */
  head?: Head;
  train: ImageSet;
  /** Continue from a saved state (see loadTrainingState); its mode and hyper-parameters must match. */
  resume?: TrainingState;
  checkpoint?: CheckpointOptions;
  /** Stop after this many total steps (checkpointing first), as an interruption would. */
  stopAtStep?: number;
  progress?: ProgressOptions & { label?: string };
  /**
   * Data-parallel over this group (lib/distributed): each rank takes its contiguous shard of every
   * global batch, gradients are summed weighted by shard size (bucketed, in place), θ0, the head
   * and the optimizer state are broadcast from rank 0 first, and only rank 0 writes checkpoints
   * and shows progress. Every rank returns the same θ. Default: the process's default group
   * (set by the CLI for `tangent launch` / `--world-size`); null: none.
   */
  processGroup?: ProcessGroup | null;
  /** Called with each step's gradients before the optimizer uses them (read only). */
  onGradients?: (step: number, grads: StateDict, loss: number) => void | Promise<void>;
}

export interface FinetuneResult {
  /** θ after the last step taken (owned by the caller). */
  params: StateDict;
  /** Total steps taken (including resumed ones). */
  step: number;
  /** Whether the run reached `steps`. */
  complete: boolean;
  history: StepRecord[];
  ms: number;
  msPerStep: number;
  hyper: FinetuneHyper;
  mode: Mode;
}

function int(v: unknown, name: string, min: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < min) throw new ArgumentError(`${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v as number;
}
function num(v: unknown, name: string, lo: number, hi = Infinity, hiOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (hiOpen && v >= hi))
    throw new ArgumentError(`${name} must be a finite number in [${lo}, ${hi}${hiOpen ? ')' : ']'}, got ${JSON.stringify(v)}`);
  return v;
}

/** Fills defaults and validates every hyper-parameter (ArgumentError naming the field). */
export function resolveHyper(o: Partial<FinetuneHyper>): FinetuneHyper {
  const h = { ...FINETUNE_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([k, v]) => k in FINETUNE_DEFAULTS && v !== undefined)) } as FinetuneHyper;
  int(h.steps, 'steps', 1);
  int(h.batchSize, 'batchSize', 1);
  num(h.lr, 'lr', 0);
  num(h.weightDecay, 'weightDecay', 0);
  int(h.warmupSteps, 'warmupSteps', 0);
  num(h.maxGradNorm, 'maxGradNorm', 0);
  num(h.beta1, 'beta1', 0, 1, true);
  num(h.beta2, 'beta2', 0, 1, true);
  num(h.eps, 'eps', Number.MIN_VALUE);
  int(h.seed, 'seed', 0);
  return h;
}

function sameHyper(a: FinetuneHyper, b: FinetuneHyper): Array<keyof FinetuneHyper> {
  return (Object.keys(FINETUNE_DEFAULTS) as Array<keyof FinetuneHyper>).filter((k) => a[k] !== b[k]);
}

/** The optimizer-state file that goes with checkpoint `file`. */
export function optimStatePath(file: string): string {
  return `${file.replace(/\.safetensors$/, '')}.optim.safetensors`;
}

export const CHECKPOINT_FORMAT = 'tangent-edit/finetuned@1';
const OPTIM_FORMAT = 'tangent-edit/adamw-state@1';

function writeCheckpoint(c: CheckpointOptions, opt: AdamW, mode: Mode, hyper: FinetuneHyper): void {
  const params = opt.params;
  const meta: Record<string, string> = {
    ...(c.metadata ?? {}),
    format: CHECKPOINT_FORMAT,
    mode,
    step: String(opt.step),
    steps: String(hyper.steps),
    complete: String(opt.step >= hyper.steps),
    hyper: JSON.stringify(hyper),
  };
  const paramsHash = hashTensors(params);
  const optim = new Map<string, import('../tensor').Tensor>();
  for (const [n, t] of opt.expAvg) optim.set(`exp_avg/${n}`, t);
  for (const [n, t] of opt.expAvgSq) optim.set(`exp_avg_sq/${n}`, t);
  // Optimizer state first: a checkpoint whose optimizer file is stale is detected (hash) on resume.
  saveTensors(optimStatePath(c.file), optim, { format: OPTIM_FORMAT, step: String(opt.step), mode, hyper: JSON.stringify(hyper), paramsSha256: paramsHash });
  saveTensors(c.file, params, { ...meta, paramsSha256: paramsHash });
}

/**
 * Loads θ, the optimizer moments and the step of a checkpoint written by `finetune`, checked
 * against the model's architecture and each other.
 */
export function loadTrainingState(file: string, model: Model): TrainingState & { metadata: Record<string, string> } {
  const { tensors: params, metadata } = loadTensors(file);
  if (metadata.format !== CHECKPOINT_FORMAT)
    throw new CheckpointError('ERR_METADATA', `not a tangent-edit fine-tuning checkpoint (format ${JSON.stringify(metadata.format)})`, { file });
  assertMatchesModel(params, model, file);
  const of = optimStatePath(file);
  if (!fs.existsSync(of)) throw new CheckpointError('ERR_IO', `optimizer state ${of} not found; cannot resume`, { file });
  const { tensors: o, metadata: om } = loadTensors(of);
  if (om.step !== metadata.step || om.paramsSha256 !== metadata.paramsSha256)
    throw new CheckpointError('ERR_METADATA', `optimizer state (step ${om.step}) does not belong to this checkpoint (step ${metadata.step})`, { file: of });
  const expAvg: StateDict = new Map();
  const expAvgSq: StateDict = new Map();
  for (const n of model.spec.keys()) {
    const a = o.get(`exp_avg/${n}`);
    const b = o.get(`exp_avg_sq/${n}`);
    if (!a || !b) throw new CheckpointError('ERR_KEY_MISMATCH', `optimizer state lacks the moments of '${n}'`, { file: of });
    expAvg.set(n, a);
    expAvgSq.set(n, b);
  }
  const mode = metadata.mode;
  if (mode !== 'standard' && mode !== 'linear') throw new CheckpointError('ERR_METADATA', `unknown mode ${JSON.stringify(mode)}`, { file });
  let hyper: FinetuneHyper;
  try {
    hyper = resolveHyper(JSON.parse(metadata.hyper ?? '{}') as Partial<FinetuneHyper>);
  } catch (e) {
    throw new CheckpointError('ERR_METADATA', `bad hyper-parameters in metadata: ${(e as Error).message}`, { file });
  }
  return { params, expAvg, expAvgSq, step: Number(metadata.step), mode, hyper, metadata };
}

/** Fine-tunes θ (standard or linear mode); see the module comment. Validates everything first. */
export async function finetune(o: FinetuneOptions): Promise<FinetuneResult> {
  if (o.mode !== 'standard' && o.mode !== 'linear') throw new ArgumentError(`mode must be 'standard' or 'linear', got ${JSON.stringify(o.mode)}`);
  const hyper = resolveHyper(o);
  const model = o.model;
  const theta0 = o.theta0 ?? model.parameters();
  model.checkParams(theta0, 'theta0');
  const classes = o.head ? o.head.weight.shape[0]! : 'numClasses' in model.config ? (model.config.numClasses as number) : 'outputDim' in model.config ? (model.config.outputDim as number) : Infinity;
  if (o.head && model.config.arch === 'vit' && (model.config as { numClasses: number }).numClasses !== 0)
    throw new ArgumentError('a head needs a feature model (vit numClasses: 0)');
  checkDataset(o.train, model.config, classes, 'train');
  if (o.stopAtStep !== undefined) int(o.stopAtStep, 'stopAtStep', 1);
  if (o.checkpoint?.every !== undefined) int(o.checkpoint.every, 'checkpoint.every', 1);
  let opt: AdamW;
  if (o.resume) {
    const r = o.resume;
    if (r.mode !== o.mode) throw new ArgumentError(`cannot resume a ${r.mode} run in ${o.mode} mode`);
    const diff = sameHyper(r.hyper, hyper);
    if (diff.length) throw new ArgumentError(`cannot resume: hyper-parameters differ from the checkpoint's (${diff.map((k) => `${k} ${r.hyper[k as keyof FinetuneHyper]} → ${hyper[k as keyof FinetuneHyper]}`).join(', ')})`);
    for (const s of [r.params, r.expAvg, r.expAvgSq]) model.checkParams(s, 'resume state');
    if (r.step > hyper.steps) throw new ArgumentError(`cannot resume: checkpoint is at step ${r.step}, past steps ${hyper.steps}`);
    opt = AdamW.restore(r, hyper);
  } else {
    opt = AdamW.create(theta0, hyper);
  }
  const pg = groupFor(o.processGroup);
  const sampler = new StepSampler(o.train.count, hyper.batchSize, hyper.seed);
  const writer = !pg || pg.rank === 0;
  if (pg) {
    try {
      checkShardable(sampler.batchSize, pg);
      await broadcastFromRoot(pg, [theta0, opt.params, opt.expAvg, opt.expAvgSq], [o.head]);
    } catch (e) {
      opt.dispose();
      throw e;
    }
  }
  const lin = o.mode === 'linear' ? model.linearize(theta0) : null;
  const end = Math.min(hyper.steps, o.stopAtStep ?? hyper.steps);
  const label = o.progress?.label ?? `finetune ${o.mode}`;
  const bar = makeProgress(label, hyper.steps, 'step', writer ? o.progress : { ...o.progress, mode: 'none' });
  const history: StepRecord[] = [];
  const t0 = performance.now();
  const startStep = opt.step;
  bar.update(startStep);
  try {
    while (opt.step < end) {
      const step = opt.step;
      const global = sampler.indices(step);
      const mine = pg ? shardOf(global, pg) : global;
      const { x, y } = batchTensors(o.train, mine);
      const params = opt.params;
      let r = lin
        ? await lin.lossAndGrad(x, y, { params, head: o.head })
        : await model.lossAndGrad(x, y, { params, head: o.head });
      if (pg) r = await reduceStep(pg, r, mine.length, global.length);
      if (o.onGradients) await o.onGradients(step, r.grads, r.loss);
      const lr = cosineLr(step, { lr: hyper.lr, steps: hyper.steps, warmupSteps: hyper.warmupSteps });
      const { gradNorm } = await opt.update(r.grads, lr);
      for (const g of r.grads.values()) g.dispose();
      x.dispose();
      y.dispose();
      history.push({ step, loss: r.loss, acc: r.correct / sampler.batchSize, lr, gradNorm });
      if (writer && o.checkpoint?.every && opt.step % o.checkpoint.every === 0 && opt.step < end) writeCheckpoint(o.checkpoint, opt, o.mode, hyper);
      const recent = history.slice(-20);
      bar.update(opt.step, `loss ${(recent.reduce((a, h) => a + h.loss, 0) / recent.length).toFixed(3)}`);
    }
    if (writer && o.checkpoint) writeCheckpoint(o.checkpoint, opt, o.mode, hyper);
  } catch (e) {
    bar.stop('failed');
    opt.dispose();
    throw e;
  }
  const ms = performance.now() - t0;
  const last = history.slice(-20);
  bar.stop(last.length ? `loss ${(last.reduce((a, h) => a + h.loss, 0) / last.length).toFixed(3)}` : '');
  const params = opt.params;
  for (const t of [...opt.expAvg.values(), ...opt.expAvgSq.values()]) t.dispose();
  return {
    params,
    step: opt.step,
    complete: opt.step >= hyper.steps,
    history,
    ms,
    msPerStep: ms / Math.max(1, opt.step - startStep),
    hyper,
    mode: o.mode,
  };
}

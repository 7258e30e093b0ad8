/**
 * The "pre-trained model" at small scale, and the frozen per-task heads built from it.
 *
 * θ0: a small ViT pre-trained briefly (standard supervised training, AdamW, cosine) on ONE source
 * task (default Fashion-MNIST, which is not among the edited tasks and serves as the control
 * task of negation, like ImageNet in the paper). Its classifier is then dropped: the backbone
 * (`numClasses: 0`) outputs the final class-token features.
 *
 * Heads: for every task, a linear probe on the frozen θ0 features, L2-normalised like the paper's
 * CLIP heads (logits = W · f/‖f‖ + b): by default closed-form ridge regression of one-hot targets
 * (+ an unpenalized bias) with one logit scale fitted to the training cross-entropy (exact,
 * deterministic, milliseconds); optionally multinomial logistic regression by full-batch AdamW.
 * Heads never change afterwards, so task vectors touch only the shared backbone.
 */
import * as fs from 'node:fs';
import { subset, type ImageSet } from '../data';
import { ArgumentError } from '../errors';
import { CheckpointError } from '../checkpoint/errors';
import { Model, type Head, type Params, type StateDict, type VitConfig } from '../model';
import { Tensor } from '../tensor';
import { checkDataset, evalData, disposeEvalData } from '../data/splits';
import { finetune, type FinetuneHyper } from './finetune';
import { AdamW, cosineLr } from './optim';
import { assertMatchesModel, hashTensors, loadTensors, saveTensors, sha256File } from '../util/state';
import type { ProgressOptions } from '../util/progress';

/** The default backbone: 28×28×1 input, 7×7 patches (16 tokens + class token), dim 64, depth 3. */
export const SMALL_VIT: VitConfig = { arch: 'vit', imageSize: 28, patchSize: 7, inChannels: 1, dim: 64, depth: 3, heads: 4, mlpDim: 128, numClasses: 0 };

export const PRETRAIN_DEFAULTS: FinetuneHyper = {
  steps: 600,
  batchSize: 128,
  lr: 2e-3,
  weightDecay: 0.05,
  warmupSteps: 50,
  maxGradNorm: 1,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  seed: 0,
};

export interface Backbone {
  model: Model;
  config: VitConfig;
  theta0: StateDict;
}

export interface PretrainOptions extends Partial<FinetuneHyper> {
  source: ImageSet;
  config?: VitConfig;
  /** Seed of the initialisation (default 0). */
  initSeed?: number;
  progress?: ProgressOptions & { label?: string };
}

/** Pre-trains a ViT on `source` and returns its backbone (classifier dropped) as θ0. */
export async function pretrain(o: PretrainOptions): Promise<Backbone & { ms: number; finalLoss: number }> {
  const config: VitConfig = { ...(o.config ?? SMALL_VIT), numClasses: 0 };
  const full = Model.create({ ...config, numClasses: o.source.classes }, { seed: o.initSeed ?? 0 });
  const hyper = { ...PRETRAIN_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([k, v]) => k in PRETRAIN_DEFAULTS && v !== undefined)) };
  try {
    const r = await finetune({ ...hyper, mode: 'standard', model: full, train: o.source, progress: { label: `pretrain on ${o.source.name}`, ...o.progress } });
    const model = Model.create(config, { seed: o.initSeed ?? 0 });
    const theta0: StateDict = new Map();
    for (const n of model.spec.keys()) theta0.set(n, r.params.get(n)!);
    for (const [n, t] of r.params) if (!theta0.has(n)) t.dispose();
    const last = r.history.slice(-20);
    return { model, config, theta0, ms: r.ms, finalLoss: last.reduce((a, h) => a + h.loss, 0) / Math.max(1, last.length) };
  } finally {
    full.dispose();
  }
}

export const PRETRAINED_FORMAT = 'tangent-edit/pretrained@1';

/** Saves θ0 with its architecture in the metadata (atomic). */
export function saveBackbone(file: string, b: Backbone, metadata: Record<string, string> = {}): void {
  saveTensors(file, b.theta0, { ...metadata, format: PRETRAINED_FORMAT, config: JSON.stringify(b.config) });
}

function parseVitConfig(s: string | undefined, file: string): VitConfig {
  let c: unknown;
  try {
    c = JSON.parse(s ?? 'null');
  } catch {
    throw new CheckpointError('ERR_METADATA', 'metadata "config" is not JSON', { file });
  }
  const o = c as Record<string, unknown> | null;
  if (!o || o.arch !== 'vit') throw new CheckpointError('ERR_METADATA', `metadata "config" must describe a vit backbone, got ${s}`, { file });
  for (const k of ['imageSize', 'patchSize', 'inChannels', 'dim', 'depth', 'heads', 'mlpDim', 'numClasses'])
    if (!Number.isSafeInteger(o[k])) throw new CheckpointError('ERR_METADATA', `metadata "config".${k} must be an integer`, { file });
  return o as unknown as VitConfig;
}

/**
 * Loads θ0 saved by `saveBackbone` (architecture from its metadata; every tensor checked against
 * it), with the file's sha256 and the content hash of its tensors (`theta0Sha256`, `hashTensors`),
 * which fine-tuned checkpoints record (it does not change when θ0 is saved in another format).
 */
export function loadBackbone(file: string): Backbone & { sha256: string; theta0Sha256: string; metadata: Record<string, string> } {
  const { tensors, metadata } = loadTensors(file);
  if (metadata.format !== PRETRAINED_FORMAT)
    throw new CheckpointError('ERR_METADATA', `not a tangent-edit pre-trained checkpoint (format ${JSON.stringify(metadata.format)})`, { file });
  const config = parseVitConfig(metadata.config, file);
  const model = Model.create(config);
  assertMatchesModel(tensors, model, file);
  const theta0: StateDict = new Map([...model.spec.keys()].map((n) => [n, tensors.get(n)!]));
  return { model, config, theta0, sha256: sha256File(file), theta0Sha256: hashTensors(theta0), metadata };
}

export interface HeadOptions {
  /**
   * 'ridge' (default): closed-form ridge regression of one-hot targets on the normalized
   * features (+ a bias column), then one temperature (logit scale) fitted by minimizing the
   * training cross-entropy — deterministic and milliseconds. 'logistic': multinomial logistic
   * regression by full-batch AdamW (`steps`, `lr`) natively.
   */
  method?: 'ridge' | 'logistic';
  /** Ridge penalty (default 1e-2 × N). */
  lambda?: number;
  /** Logistic: full-batch AdamW steps on the cross-entropy (default 300). */
  steps?: number;
  lr?: number;
  weightDecay?: number;
  seed?: number;
  /** At most this many training samples (a seeded random subset). Default all. */
  maxSamples?: number;
}

/** Solves A x = B for symmetric positive-definite A (n×n) and B (n×m), by Cholesky, in place of B. */
function choleskySolve(A: Float64Array, B: Float64Array, n: number, m: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let sum = A[i * n + j]!;
      for (let k = 0; k < j; k++) sum -= L[i * n + k]! * L[j * n + k]!;
      L[i * n + j] = i === j ? Math.sqrt(Math.max(sum, 1e-300)) : sum / L[j * n + j]!;
    }
  const X = Float64Array.from(B);
  for (let c = 0; c < m; c++) {
    for (let i = 0; i < n; i++) {
      let sum = X[i * m + c]!;
      for (let k = 0; k < i; k++) sum -= L[i * n + k]! * X[k * m + c]!;
      X[i * m + c] = sum / L[i * n + i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let sum = X[i * m + c]!;
      for (let k = i + 1; k < n; k++) sum -= L[k * n + i]! * X[k * m + c]!;
      X[i * m + c] = sum / L[i * n + i]!;
    }
  }
  return X;
}

/** Ridge head: W, b (float32) from normalized features F [N, D] and labels. */
function ridgeHead(F: Float32Array, labels: Int32Array, N: number, D: number, C: number, lambda: number): { W: Float32Array; b: Float32Array; acc: number } {
  const n = D + 1; // bias column
  const A = new Float64Array(n * n);
  const B = new Float64Array(n * C);
  const row = new Float64Array(n);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < D; j++) row[j] = F[i * D + j]!;
    row[D] = 1;
    for (let a = 0; a < n; a++) {
      const ra = row[a]!;
      for (let c = 0; c <= a; c++) A[a * n + c]! += ra * row[c]!;
      B[a * C + labels[i]!]! += ra;
    }
  }
  for (let a = 0; a < n; a++) for (let c = 0; c < a; c++) A[c * n + a] = A[a * n + c]!;
  for (let a = 0; a < D; a++) A[a * n + a]! += lambda; // the bias is not penalized
  A[D * n + D]! += 1e-9 * N;
  const X = choleskySolve(A, B, n, C); // [n, C]
  // Raw scores, then the temperature minimizing the training cross-entropy (golden section on log s).
  const Z = new Float64Array(N * C);
  let correct = 0;
  for (let i = 0; i < N; i++) {
    let best = -Infinity;
    let arg = -1;
    for (let c = 0; c < C; c++) {
      let z = X[D * C + c]!;
      for (let j = 0; j < D; j++) z += F[i * D + j]! * X[j * C + c]!;
      Z[i * C + c] = z;
      if (z > best) {
        best = z;
        arg = c;
      }
    }
    if (arg === labels[i]) correct++;
  }
  const ce = (logS: number): number => {
    const s = Math.exp(logS);
    let total = 0;
    for (let i = 0; i < N; i++) {
      let m = -Infinity;
      for (let c = 0; c < C; c++) m = Math.max(m, s * Z[i * C + c]!);
      let sum = 0;
      for (let c = 0; c < C; c++) sum += Math.exp(s * Z[i * C + c]! - m);
      total += m + Math.log(sum) - s * Z[i * C + labels[i]!]!;
    }
    return total / N;
  };
  let lo = Math.log(0.1);
  let hi = Math.log(1000);
  const g = (Math.sqrt(5) - 1) / 2;
  for (let it = 0; it < 40; it++) {
    const a = hi - g * (hi - lo);
    const b2 = lo + g * (hi - lo);
    if (ce(a) < ce(b2)) hi = b2;
    else lo = a;
  }
  const s = Math.exp((lo + hi) / 2);
  const W = new Float32Array(C * D);
  const b = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    for (let j = 0; j < D; j++) W[c * D + j] = s * X[j * C + c]!;
    b[c] = s * X[D * C + c]!;
  }
  return { W, b, acc: correct / N };
}

/** Features f(x; θ0) of a set, L2-normalised, as a [N, D] float32 tensor. */
export async function normalizedFeatures(b: Backbone, set: ImageSet): Promise<Tensor> {
  const d = evalData(set, 500);
  const D = b.config.dim;
  const out = new Float32Array(set.count * D);
  let off = 0;
  try {
    for (const batch of d.batches) {
      const f = await b.model.forward(batch.x, b.theta0);
      out.set(f.data() as Float32Array, off * D);
      f.dispose();
      off += batch.n;
    }
  } finally {
    disposeEvalData(d);
  }
  for (let i = 0; i < set.count; i++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += out[i * D + j]! ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < D; j++) out[i * D + j]! *= inv;
  }
  return Tensor.from(out, [set.count, D]);
}

/** Fits a frozen linear-probe head (normalize: true) for `set` on θ0's features. */
export async function fitHead(b: Backbone, set: ImageSet, o: HeadOptions = {}): Promise<Head & { trainAcc: number }> {
  checkDataset(set, b.config, set.classes, 'head data');
  const steps = o.steps ?? 300;
  if (!Number.isSafeInteger(steps) || steps < 1) throw new ArgumentError(`head steps must be an integer >= 1, got ${steps}`);
  const n = Math.min(set.count, o.maxSamples ?? set.count);
  const use = n < set.count ? subset(set, n, o.seed ?? 0) : set;
  const feats = await normalizedFeatures(b, use);
  if ((o.method ?? 'ridge') === 'ridge') {
    const D = b.config.dim;
    const lambda = o.lambda ?? 1e-2 * use.count;
    if (!(lambda > 0)) throw new ArgumentError(`head lambda must be > 0, got ${lambda}`);
    const r = ridgeHead(feats.data() as Float32Array, use.labels, use.count, D, set.classes, lambda);
    feats.dispose();
    return { weight: Tensor.from(r.W, [set.classes, D]), bias: Tensor.from(r.b, [set.classes]), normalize: true, trainAcc: r.acc };
  }
  const y = Tensor.fromLabels(use.labels);
  const probe = Model.create({ arch: 'mlp', inputDim: b.config.dim, hidden: [], outputDim: set.classes }, { seed: o.seed ?? 0 });
  const opt = AdamW.create(probe.parameters(), { lr: o.lr ?? 0.05, weightDecay: o.weightDecay ?? 0 });
  let correct = 0;
  for (let s = 0; s < steps; s++) {
    const r = await probe.lossAndGrad(feats, y, { params: opt.params });
    correct = r.correct;
    await opt.update(r.grads, cosineLr(s, { lr: opt.opts.lr, steps, warmupSteps: Math.min(10, steps - 1) }));
    for (const g of r.grads.values()) g.dispose();
  }
  const p = opt.params;
  const head = { weight: p.get('layers.0.weight')!.clone(), bias: p.get('layers.0.bias')!.clone(), normalize: true, trainAcc: correct / use.count };
  opt.dispose();
  probe.dispose();
  feats.dispose();
  y.dispose();
  return head;
}

export const HEADS_FORMAT = 'tangent-edit/heads@1';

/** Saves heads as `<task>.weight` / `<task>.bias`, tied to θ0 by a content hash (atomic). */
export function saveHeads(file: string, heads: ReadonlyMap<string, Head>, theta0: Params, metadata: Record<string, string> = {}): void {
  const t = new Map<string, Tensor>();
  for (const [task, h] of heads) {
    t.set(`${task}.weight`, h.weight);
    if (h.bias) t.set(`${task}.bias`, h.bias);
  }
  saveTensors(file, t, { ...metadata, format: HEADS_FORMAT, tasks: JSON.stringify([...heads.keys()]), normalize: 'true', theta0Sha256: hashTensors(theta0) });
}

/** Loads heads saved by `saveHeads`; with `theta0`, checks they were built from it. */
export function loadHeads(file: string, opts: { theta0?: Params; features?: number } = {}): Map<string, Head> {
  if (!fs.existsSync(file)) throw new CheckpointError('ERR_IO', 'no such file', { file });
  const { tensors, metadata } = loadTensors(file);
  if (metadata.format !== HEADS_FORMAT)
    throw new CheckpointError('ERR_METADATA', `not a tangent-edit heads file (format ${JSON.stringify(metadata.format)})`, { file });
  if (opts.theta0 && metadata.theta0Sha256 !== hashTensors(opts.theta0))
    throw new CheckpointError('ERR_METADATA', 'these heads were built from a different pre-trained model (θ0 hash differs)', { file });
  const tasks = JSON.parse(metadata.tasks ?? '[]') as string[];
  const out = new Map<string, Head>();
  for (const task of tasks) {
    const weight = tensors.get(`${task}.weight`);
    if (!weight) throw new CheckpointError('ERR_KEY_MISMATCH', `no head weight for task '${task}'`, { file });
    if (opts.features !== undefined && weight.shape[1] !== opts.features)
      throw new CheckpointError('ERR_KEY_MISMATCH', `head of '${task}' takes ${weight.shape[1]} features, the backbone gives ${opts.features}`, { file, tensor: `${task}.weight` });
    out.set(task, { weight, bias: tensors.get(`${task}.bias`), normalize: metadata.normalize === 'true' });
  }
  return out;
}

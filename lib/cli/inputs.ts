/**
 * What the verbs read, resolved the same way everywhere:
 * - the model and θ0 ("base"): `--pretrained` (θ0; a `tangent pretrain` file names its model in
 *   its metadata), `--model` (a torch.export .pt2 or TorchScript file, a JSON config file, inline JSON or
 *   `builtin:small-vit` / `builtin:vit`, `clip:ViT-B-32` and the other CLIP configs), `--heads` (frozen heads from `tangent pretrain`), and,
 *   for what a flag leaves open, the metadata of the checkpoints given (lib/meta.ts);
 * - checkpoints written by finetune, merge and apply (mode, θ0 hash, tasks checked);
 * - `--data` specs (lib/data/spec.ts), decoded at the model's input size.
 * `parse*` functions only validate (run before any work); `load*` functions read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../checkpoint/errors';
import { loadStateDict } from '../checkpoint/io';
import { parseDataSpec, prepareData, type DataOptions, type DataSpec } from '../data/spec';
import type { TaskSplits } from '../data/splits';
import { escapeControl } from '../checkpoint/escape';
import { ArgumentError, ShapeError, UntrustedCodeError } from '../errors';
import { decodeEditMeta, isFileModel, type EditMeta, type FileRef, type ModelRef } from '../meta';
import { featureDim, Model, type Head, type ModelConfig, type StateDict } from '../model';
import { Tensor } from '../tensor';
import { hashTensors, sha256File } from '../util/state';
import { DEMO_VIT } from '../analysis/inputs';
import { SMALL_VIT } from '../train/pretrain';
import { clipVisionConfig, namedClipConfig, type ClipConfig } from '../clip/configs';

/** `builtin:small-vit`: the backbone `tangent pretrain` trains (features, for heads); `builtin:vit`: the benchmarks' ViT (10 logits). */
export const BUILTIN_MODELS: Record<string, ModelConfig> = { 'small-vit': SMALL_VIT, vit: DEMO_VIT };

/** A `--model`: a file, or a built-in config (for CLIP, its image tower, with the whole CLIP config beside it). */
export type ModelSpec = { kind: 'file'; path: string } | { kind: 'config'; config: ModelConfig; source: string; clip?: ClipConfig };

/** Validates a `--model` value (reads a JSON config file; never loads a model). */
export function parseModelSpec(spec: string): ModelSpec {
  if (spec.startsWith('clip:')) return { kind: 'config', config: clipVisionConfig(namedClipConfig(spec.slice(5))), source: spec, clip: namedClipConfig(spec.slice(5)) };
  if (spec.startsWith('builtin:')) {
    const c = BUILTIN_MODELS[spec.slice(8)];
    if (!c) throw new ArgumentError(`--model: unknown built-in model '${spec.slice(8)}' (built-in: ${Object.keys(BUILTIN_MODELS).map((k) => `builtin:${k}`).join(', ')})`);
    return { kind: 'config', config: c, source: spec };
  }
  const parseJson = (text: string, where: string): ModelSpec => {
    let config: ModelConfig | ClipConfig;
    try {
      config = JSON.parse(text) as ModelConfig | ClipConfig;
    } catch (e) {
      throw new ArgumentError(`--model: ${where} is not valid JSON (${(e as Error).message})`);
    }
    // A whole CLIP ({"arch": "clip", …}): its image tower is the model; the text tower makes heads.
    if (config !== null && typeof config === 'object' && config.arch === 'clip') return { kind: 'config', config: clipVisionConfig(config), source: where, clip: config };
    return { kind: 'config', config: config as ModelConfig, source: where };
  };
  if (spec.trim().startsWith('{')) return parseJson(spec, 'the inline config');
  if (!fs.existsSync(spec))
    throw new ArgumentError(`--model: ${spec}: no such file (expected a torch.export .pt2 or TorchScript file, a JSON model config, inline JSON or ${Object.keys(BUILTIN_MODELS).map((k) => `builtin:${k}`).join(' / ')})`);
  if (spec.endsWith('.json')) return parseJson(fs.readFileSync(spec, 'utf8'), spec);
  return { kind: 'file', path: path.resolve(spec) };
}

/** Checks files named by options exist (before any work). */
export function requireFile(option: string, file: string | undefined): void {
  if (file !== undefined && !fs.existsSync(file)) throw new ArgumentError(`${option}: ${file}: no such file`);
}

export interface Base {
  model: Model;
  theta0: StateDict;
  /** Content hash of θ0's tensors (what checkpoints record as theta0Sha256). */
  theta0Hash: string;
  theta0Ref: FileRef;
  modelRef: ModelRef;
  heads: Map<string, Head> | null;
  headsRef: FileRef | null;
  /** Whether the model outputs features for a head (vit numClasses 0) rather than logits. */
  needsHeads: boolean;
}

export interface BaseFlags {
  model?: string;
  pretrained?: string;
  heads?: string;
  /** Default: the seed a checkpoint's metadata records for a θ0 built from a config, else 0. */
  seed?: number;
  /** `--trust-code`: consent to load a TorchScript model (Model.load's trustCode). */
  trust_code?: boolean;
}

/** A θ0 that was never a file: "<model source> (seed N)", what loadBase records for a model built from a config. */
const SEEDED_THETA0 = /^(.*) \(seed (\d+)\)$/;

/**
 * The model, θ0 and heads, from the flags and (for what they leave open) `meta`, the metadata of
 * a checkpoint. θ0's content is checked against `meta`'s hash. A θ0 that `meta` records as a
 * model built from a config and seed (no file) is built again from that config and seed.
 */
export async function loadBase(flags: BaseFlags, meta?: EditMeta | null, metaFile?: string): Promise<Base> {
  let pretrained = flags.pretrained;
  let modelSpec = flags.model;
  let headsFile = flags.heads;
  let fromMeta = false;
  let seeded: { source: string; seed: number } | undefined;
  if (meta) {
    if (pretrained === undefined && meta.theta0?.path) {
      const m = SEEDED_THETA0.exec(meta.theta0.path);
      if (fs.existsSync(meta.theta0.path)) pretrained = isFileModel(meta.model) && meta.theta0.path === meta.model.path ? undefined : meta.theta0.path;
      else if (m && !isFileModel(meta.model)) seeded = { source: m[1]!, seed: Number(m[2]) };
      else throw new ArgumentError(`${metaFile}: its θ0 ${escapeControl(meta.theta0.path)} does not exist any more; give θ0 with --pretrained`);
    }
    if (modelSpec === undefined && isFileModel(meta.model)) {
      modelSpec = meta.model.path;
      fromMeta = true;
    }
    if (headsFile === undefined && meta.heads?.path) headsFile = meta.heads.path;
  }
  const seed = flags.seed ?? seeded?.seed ?? 0;
  const { loadTensors } = await import('../util/state');
  const { PRETRAINED_FORMAT, loadHeads } = await import('../train/pretrain');
  let model: Model;
  let modelRef: ModelRef;
  let theta0: StateDict;
  let theta0Path: string;
  let rebuilt = false;
  const pretrainedMeta = pretrained !== undefined && pretrained.endsWith('.safetensors') ? loadTensors(pretrained) : null;
  if (pretrainedMeta && pretrainedMeta.metadata.format === PRETRAINED_FORMAT && modelSpec === undefined) {
    const { loadBackbone } = await import('../train/pretrain');
    const bb = loadBackbone(pretrained!);
    model = bb.model;
    modelRef = bb.config;
    theta0 = bb.theta0;
    theta0Path = path.resolve(pretrained!);
  } else {
    const spec = modelSpec !== undefined ? parseModelSpec(modelSpec) : meta?.model && !isFileModel(meta.model) ? ({ kind: 'config', config: meta.model, source: seeded?.source ?? 'metadata' } as const) : null;
    if (spec === null) throw new ArgumentError('no model: give --model (a torch.export .pt2 or TorchScript file, or a built-in config) or --pretrained (θ0 from tangent pretrain)');
    if (spec.kind === 'file') {
      const sha256 = sha256File(spec.path);
      const recorded = fromMeta && isFileModel(meta?.model) ? meta.model.sha256 : undefined;
      if (recorded && recorded !== sha256)
        throw new ArgumentError(`${metaFile} was fine-tuned from the model ${escapeControl(spec.path)} (sha256 ${recorded.slice(0, 12)}…), which has changed since (sha256 ${sha256.slice(0, 12)}…); give the model with --model`);
      try {
        model = await Model.load(spec.path, { trustCode: flags.trust_code ?? false });
      } catch (e) {
        // The model named by a checkpoint's metadata: say where the name came from.
        if (fromMeta && e instanceof UntrustedCodeError) throw new UntrustedCodeError(`the model of ${metaFile} (named in its metadata): ${e.message}`);
        throw e;
      }
      modelRef = { arch: model.config.arch as 'torchscript' | 'exported', path: spec.path, sha256 };
    } else {
      model = Model.create(spec.config, { seed });
      modelRef = spec.config;
    }
    if (pretrained !== undefined) {
      const { loadStateFile } = await import('../analysis/inputs');
      theta0 = await loadStateFile(pretrained, model, '--pretrained');
      theta0Path = path.resolve(pretrained);
    } else {
      theta0 = model.parameters();
      theta0Path = spec.kind === 'file' ? spec.path : `${spec.source} (seed ${seed})`;
      rebuilt = seeded !== undefined && spec.kind === 'config';
    }
  }
  const theta0Hash = hashTensors(theta0);
  if (meta?.theta0 && meta.theta0.sha256 !== theta0Hash && rebuilt)
    throw new ArgumentError(
      `${metaFile} was fine-tuned from θ0 = ${escapeControl(meta.theta0.path)} (sha256 ${meta.theta0.sha256.slice(0, 12)}…), a model built from a config and seed, not a file; built again from ${modelSpec === undefined ? 'the config in its metadata' : escapeControl(modelSpec)} with seed ${seed} it has sha256 ${theta0Hash.slice(0, 12)}…: give θ0 with --pretrained`,
    );
  if (meta?.theta0 && meta.theta0.sha256 !== theta0Hash)
    throw new ArgumentError(`${metaFile} was fine-tuned from a different θ0 (sha256 ${meta.theta0.sha256.slice(0, 12)}…, recorded path ${meta.theta0.path || '?'}) than the one given (sha256 ${theta0Hash.slice(0, 12)}…)`);
  const features = featureDim(model.config);
  const needsHeads = features !== undefined;
  let heads: Map<string, Head> | null = null;
  let headsRef: FileRef | null = null;
  if (headsFile !== undefined) {
    if (!fs.existsSync(headsFile)) throw new ArgumentError(`--heads: ${headsFile}: no such file`);
    heads = loadHeads(headsFile, { theta0, features });
    headsRef = { path: path.resolve(headsFile), sha256: sha256File(headsFile) };
  }
  return { model, theta0, theta0Hash, theta0Ref: { path: theta0Path, sha256: theta0Hash }, modelRef, heads, headsRef, needsHeads };
}

/** The head of `task`, or undefined when the model outputs logits; errors name what is missing. */
export function headFor(base: Base, task: string): Head | undefined {
  if (base.heads) {
    const h = base.heads.get(task);
    if (h) return h;
    if (base.needsHeads) throw new ArgumentError(`${base.headsRef!.path} has no head for task '${task}' (has ${[...base.heads.keys()].join(', ')})`);
    return undefined;
  }
  if (base.needsHeads)
    throw new ArgumentError(
      `the model outputs ${featureDim(base.model.config)} features, not logits: give --heads (from ${base.model.config.arch === 'clip-vision' ? 'tangent heads: zero-shot heads from the text tower' : 'tangent pretrain'}) with a head for task '${task}'`,
    );
  return undefined;
}

/** Input size of a built-in model ([C, H, W]) for decoding image folders; null for TorchScript. */
export function modelInput(model: Model): { channels?: 1 | 3; size?: [number, number]; preprocess?: 'clip' } {
  const c = model.config as { arch: string; imageSize?: number; inChannels?: number };
  if (c.arch === 'clip-vision') return { size: [c.imageSize!, c.imageSize!], channels: 3, preprocess: 'clip' };
  if ((c.arch === 'vit' || c.arch === 'cnn') && c.imageSize !== undefined) return { size: [c.imageSize, c.imageSize], channels: c.inChannels === 3 ? 3 : 1 };
  return {};
}

/**
 * Loads a dataset spec at the model's input size, then checks the model accepts it (one forward
 * of one image) and, with `labels` (default; the analyses use no labels), that its classes fit the outputs.
 */
export async function loadData(spec: DataSpec, base: Base, o: DataOptions, head: Head | undefined, labels = true): Promise<TaskSplits & { spec: string }> {
  const d = await prepareData(spec, { ...modelInput(base.model), ...o });
  const x = Tensor.from(d.test.images.slice(0, d.test.shape.reduce((a, b) => a * b, 1)), [1, ...d.test.shape]);
  let out: Tensor;
  try {
    out = await base.model.forward(x, base.theta0);
  } catch (e) {
    throw new ShapeError(`--data ${spec.spec}: the model does not take its images of shape [${d.test.shape.join(', ')}]: ${(e as Error).message.split('\n')[0]}`);
  } finally {
    x.dispose();
  }
  const outputs = head ? head.weight.shape[0]! : out.shape[out.shape.length - 1]!;
  out.dispose();
  if (labels && d.classes > outputs) throw new ArgumentError(`--data ${spec.spec} has ${d.classes} classes but the ${head ? 'head' : 'model'} has only ${outputs} outputs`);
  return d;
}

export interface EditCheckpoint {
  file: string;
  meta: EditMeta;
  params: StateDict;
}

/** Reads a checkpoint's metadata only (validation before loading models). */
export function readEditMeta(file: string): EditMeta {
  if (!fs.existsSync(file)) throw new ArgumentError(`${file}: no such file`);
  if (!file.endsWith('.safetensors')) throw new CheckpointError('ERR_METADATA', 'not a safetensors checkpoint written by tangent finetune, merge or apply', { file });
  const { openSafetensors } = require('../checkpoint/safetensors') as typeof import('../checkpoint/safetensors');
  const f = openSafetensors(file);
  try {
    return decodeEditMeta(f.metadata ?? {}, file);
  } finally {
    f.close();
  }
}

/** Loads a fine-tuned / merged / applied checkpoint against `base` (names, shapes, θ0 hash). */
export async function loadEditCheckpoint(file: string, base: Base): Promise<EditCheckpoint> {
  const meta = readEditMeta(file);
  if (meta.theta0 && meta.theta0.sha256 !== base.theta0Hash)
    throw new CheckpointError('ERR_METADATA', `was fine-tuned from a different θ0 (sha256 ${meta.theta0.sha256.slice(0, 12)}…) than the one given (sha256 ${base.theta0Hash.slice(0, 12)}…)`, { file });
  const { loadStateFile } = await import('../analysis/inputs');
  return { file, meta, params: await loadStateFile(file, base.model, file) };
}

/** Parses each `--data` spec (validation only) and names its task. */
export function parseDataSpecs(specs: readonly string[], option = '--data'): DataSpec[] {
  const out = specs.map((s) => parseDataSpec(s, option));
  const seen = new Set<string>();
  for (const d of out) {
    if (seen.has(d.name)) throw new ArgumentError(`${option}: two datasets named '${d.name}'`);
    seen.add(d.name);
  }
  return out;
}

/** A state dict file of any format, for its metadata check: is it a tangent checkpoint? */
export async function stateDictFormat(file: string): Promise<string | undefined> {
  if (!file.endsWith('.safetensors')) return undefined;
  const { openSafetensors } = await import('../checkpoint/safetensors');
  const f = openSafetensors(file);
  try {
    return f.metadata?.format;
  } finally {
    f.close();
  }
}

export { loadStateDict };

/**
 * Models with a functional forward: `forward(x, params?)` runs with any named parameter set and
 * never mutates the model, so many parameter sets (θ0, θ_t, θ0 + Σ α τ) share one model. Also
 * JVPs (forward-mode AD, or a model's hand-written JVP: see setJvpMethod), the linearized model f_lin(x; θ) = f(x; θ0) + J(θ − θ0), and the
 * loss/gradient primitives of standard and linear fine-tuning.
 */
import * as fs from 'node:fs';
import { CheckpointError, openForReading } from './checkpoint/errors';
import { escapeControl } from './checkpoint/escape';
import { detectFormat, rawToTensor } from './checkpoint/io';
import { readExportedProgram } from './checkpoint/pt2';
import { allocationProblem } from './checkpoint/alloc';
import { ZipReader } from './checkpoint/zip';
import { native, type NamedNative, type NativeHead, type NativeInput, type NativeModel, type NativeParams } from './binding';
import { ArgumentError, DeviceError, DisposedError, DTypeError, ParameterError, ShapeError, TorchError, UntrustedCodeError } from './errors';
import { assertDevice, shapeStr, Tensor, type Device, type DType } from './tensor';

export interface MlpConfig {
  arch: 'mlp';
  inputDim: number;
  hidden?: number[];
  outputDim: number;
  activation?: 'relu' | 'gelu' | 'tanh';
}
export interface CnnConfig {
  arch: 'cnn';
  inChannels: number;
  imageSize: number;
  /** Each a 3×3 stride-2 convolution + GELU; then global average pooling and a linear layer. */
  channels?: number[];
  outputDim: number;
}
export interface VitConfig {
  arch: 'vit';
  imageSize: number;
  patchSize: number;
  inChannels: number;
  dim: number;
  depth: number;
  heads: number;
  mlpDim: number;
  /** 0: the model outputs the final class-token features (use with a separate head). */
  numClasses: number;
}
/** Fields shared by CLIP's two towers (open_clip's architecture and parameter names; lib/clip). */
export interface ClipTowerConfig {
  width: number;
  layers: number;
  heads: number;
  /** Default 4 × width. */
  mlpDim?: number;
  /** The joint embedding size (the projection's output). */
  embedDim: number;
  /** x·σ(1.702x) as OpenAI's weights were trained (open_clip's `-quickgelu` configs, transformers' `quick_gelu`); default exact GELU. */
  quickGelu?: boolean;
}
/** CLIP's image tower: images [batch, 3, imageSize, imageSize] → embeddings [batch, embedDim] (not normalised). */
export interface ClipVisionConfig extends ClipTowerConfig {
  arch: 'clip-vision';
  imageSize: number;
  patchSize: number;
  /** The open_clip config name it came from (informational). */
  name?: string;
}
/** CLIP's text tower: token ids (int64) [batch, ≤ contextLength] → embeddings [batch, embedDim]. */
export interface ClipTextConfig extends ClipTowerConfig {
  arch: 'clip-text';
  contextLength: number;
  vocabSize: number;
  name?: string;
}
export type ModelConfig = MlpConfig | CnnConfig | VitConfig | ClipVisionConfig | ClipTextConfig;

/** A model read from a file: TorchScript (`torch.jit.save`) or a torch.export program (.pt2). */
export interface FileModelConfig {
  arch: 'torchscript' | 'exported';
  path: string;
  output?: number | string;
}

export interface ModelOptions {
  seed?: number;
  dtype?: 'float32' | 'float64';
  device?: Device;
}

/**
 * A model input: one tensor, or for a TorchScript module whose forward takes several tensors
 * (`forward(x, mask)`), an array of them in forward's order (x first; trailing Optional[Tensor]
 * arguments may be left out). Only x is batched against labels; the others are not differentiated.
 */
export type Input = Tensor | readonly Tensor[];

export interface LoadOptions {
  device?: Device;
  /**
   * Which tensor of a tuple, list or dict result is the model's output: an index, a dict key or a
   * named-tuple field. Required when forward returns more than one tensor; an error otherwise.
   */
  output?: number | string;
  /**
   * Consent to run the file's code: a TorchScript archive runs its own code when it is loaded
   * (torch::jit::load compiles its `code/` and runs its classes' `__setstate__`; forward runs its
   * program). Without `trustCode: true`, `Model.load` of TorchScript throws
   * {@link UntrustedCodeError} before anything reaches libtorch. A torch.export `.pt2` needs none
   * (it is read as data). Default false.
   */
  trustCode?: boolean;
}

/** Named parameters: a Map or a plain object of name → Tensor. */
export type Params = ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;
export type StateDict = Map<string, Tensor>;

/** A frozen classification head: logits = weight · (normalize ? f/‖f‖ : f) + bias. */
export interface Head {
  weight: Tensor;
  bias?: Tensor;
  normalize?: boolean;
}

export interface ParamSpec {
  shape: number[];
  dtype: DType;
  device: string;
}

export interface StepResult {
  /** Mean cross-entropy over the batch. */
  loss: number;
  /** Number of samples whose argmax logit equals the label. */
  correct: number;
}
export interface GradResult extends StepResult {
  /** ∂loss/∂θ per parameter name. */
  grads: StateDict;
}

export type Mode = 'standard' | 'linear';

function entries(p: Params): Array<[string, Tensor]> {
  return p instanceof Map ? [...p.entries()] : Object.entries(p as Record<string, Tensor>);
}

function wrapPairs(pairs: NamedNative): StateDict {
  return new Map(pairs.map(([n, t]) => [n, Tensor.wrap(t)]));
}

function positiveInt(v: unknown, name: string, min = 1): void {
  if (!Number.isSafeInteger(v) || (v as number) < min)
    throw new ArgumentError(`${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
}

/**
 * The width of the features a feature model gives its frozen head (a ViT with numClasses 0: dim;
 * CLIP's image tower: embedDim), or undefined for models that output logits or are files.
 */
export function featureDim(c: ModelConfig | FileModelConfig | { arch: string }): number | undefined {
  if (c.arch === 'vit' && (c as VitConfig).numClasses === 0) return (c as VitConfig).dim;
  if (c.arch === 'clip-vision') return (c as ClipVisionConfig).embedDim;
  return undefined;
}

/**
 * The parameters a valid config declares, as (elements, the fields that size them) — the big
 * tensors, a lower bound of the model's size — checked before anything is allocated, so an absurd
 * width from a config or a checkpoint's metadata is an error naming the field and the bytes rather
 * than libtorch's allocator failing.
 */
function parameterTerms(c: ModelConfig): Array<[number, string]> {
  switch (c.arch) {
    case 'mlp': {
      const dims = [c.inputDim, ...(c.hidden ?? []), c.outputDim];
      const names = ['mlp.inputDim', ...(c.hidden ?? []).map((_, i) => `mlp.hidden[${i}]`), 'mlp.outputDim'];
      return dims.slice(1).map((d, i) => [d * (dims[i]! + 1), `${names[i]} × ${names[i + 1]}`]);
    }
    case 'cnn': {
      const ch = [c.inChannels, ...(c.channels ?? [])];
      const names = ['cnn.inChannels', ...(c.channels ?? []).map((_, i) => `cnn.channels[${i}]`)];
      const t: Array<[number, string]> = ch.slice(1).map((d, i) => [d * (ch[i]! * 9 + 1), `${names[i]} × ${names[i + 1]}`]);
      t.push([c.outputDim * (ch[ch.length - 1]! + 1), `${names[names.length - 1]} × cnn.outputDim`]);
      return t;
    }
    case 'vit': {
      const T = (c.imageSize / c.patchSize) ** 2 + 1;
      return [
        [c.dim * c.inChannels * c.patchSize ** 2, 'vit.dim × vit.inChannels × vit.patchSize²'],
        [T * c.dim, 'vit.imageSize / vit.patchSize and vit.dim'],
        [c.depth * (4 * c.dim * c.dim + 2 * c.dim * c.mlpDim), 'vit.depth × vit.dim × vit.mlpDim'],
        [c.numClasses * c.dim, 'vit.numClasses × vit.dim'],
      ];
    }
    case 'clip-vision':
    case 'clip-text': {
      const a = c.arch;
      const W = c.width;
      const t: Array<[number, string]> = [
        [c.layers * (4 * W * W + 2 * W * (c.mlpDim ?? 4 * W)), `${a}.layers × ${a}.width × ${a}.mlpDim`],
        [W * c.embedDim, `${a}.width × ${a}.embedDim`],
      ];
      if (c.arch === 'clip-vision') {
        t.push([W * 3 * c.patchSize ** 2, 'clip-vision.width × clip-vision.patchSize²']);
        t.push([((c.imageSize / c.patchSize) ** 2 + 1) * W, 'clip-vision.imageSize / clip-vision.patchSize and clip-vision.width']);
      } else {
        t.push([c.vocabSize * W, 'clip-text.vocabSize × clip-text.width']);
        t.push([c.contextLength * W, 'clip-text.contextLength × clip-text.width']);
      }
      return t;
    }
  }
}

function checkConfigSize(c: ModelConfig, dtypeBytes: number): void {
  let total = 0;
  for (const [n, fields] of parameterTerms(c)) {
    const p = allocationProblem(n * dtypeBytes, `its parameters sized by ${fields}`);
    if (p) throw new ArgumentError(`${c.arch} config: ${p}`);
    total += n * dtypeBytes;
  }
  const p = allocationProblem(total, 'its parameters');
  if (p) throw new ArgumentError(`${c.arch} config: ${p}`);
}

function validateConfig(c: ModelConfig): void {
  if (typeof c !== 'object' || c === null) throw new ArgumentError('model config must be an object');
  switch (c.arch) {
    case 'mlp':
      positiveInt(c.inputDim, 'mlp.inputDim');
      positiveInt(c.outputDim, 'mlp.outputDim');
      (c.hidden ?? []).forEach((h, i) => positiveInt(h, `mlp.hidden[${i}]`));
      if (c.activation !== undefined && !['relu', 'gelu', 'tanh'].includes(c.activation))
        throw new ArgumentError(`mlp.activation must be relu, gelu or tanh, got ${JSON.stringify(c.activation)}`);
      return;
    case 'cnn':
      positiveInt(c.inChannels, 'cnn.inChannels');
      positiveInt(c.imageSize, 'cnn.imageSize');
      positiveInt(c.outputDim, 'cnn.outputDim');
      (c.channels ?? []).forEach((h, i) => positiveInt(h, `cnn.channels[${i}]`));
      return;
    case 'vit':
      for (const k of ['imageSize', 'patchSize', 'inChannels', 'dim', 'heads', 'mlpDim'] as const)
        positiveInt(c[k], `vit.${k}`);
      positiveInt(c.depth, 'vit.depth', 0);
      positiveInt(c.numClasses, 'vit.numClasses', 0);
      if (c.imageSize % c.patchSize !== 0)
        throw new ArgumentError(`vit.imageSize ${c.imageSize} is not a multiple of vit.patchSize ${c.patchSize}`);
      if (c.dim % c.heads !== 0) throw new ArgumentError(`vit.dim ${c.dim} is not a multiple of vit.heads ${c.heads}`);
      return;
    case 'clip-vision':
    case 'clip-text': {
      const a = c.arch;
      const keys = a === 'clip-vision' ? (['imageSize', 'patchSize'] as const) : (['contextLength', 'vocabSize'] as const);
      for (const k of ['width', 'heads', 'embedDim', ...keys] as const) positiveInt((c as unknown as Record<string, unknown>)[k], `${a}.${k}`);
      positiveInt(c.layers, `${a}.layers`, 0);
      if (c.mlpDim !== undefined) positiveInt(c.mlpDim, `${a}.mlpDim`);
      if (c.quickGelu !== undefined && typeof c.quickGelu !== 'boolean') throw new ArgumentError(`${a}.quickGelu must be a boolean, got ${JSON.stringify(c.quickGelu)}`);
      if (c.width % c.heads !== 0) throw new ArgumentError(`${a}.width ${c.width} is not a multiple of ${a}.heads ${c.heads}`);
      if (c.arch === 'clip-vision' && c.imageSize % c.patchSize !== 0)
        throw new ArgumentError(`clip-vision.imageSize ${c.imageSize} is not a multiple of clip-vision.patchSize ${c.patchSize}`);
      return;
    }
    default:
      throw new ArgumentError(`unknown arch ${JSON.stringify((c as { arch: unknown }).arch)} (expected mlp, cnn, vit, clip-vision or clip-text)`);
  }
}

/** Whether `file` is a regular file starting with a zip local header (false when it cannot be read). */
function startsAsZip(file: string): boolean {
  let fd: number;
  try {
    fd = openForReading(file);
  } catch {
    return false;
  }
  try {
    const head = Buffer.alloc(4);
    return fs.readSync(fd, head, 0, 4, 0) === 4 && ZipReader.isZip(head);
  } catch {
    return false;
  } finally {
    fs.closeSync(fd);
  }
}

const WEIGHTS_ONLY: Partial<Record<string, string>> = { torch: 'a torch.save checkpoint', safetensors: 'a safetensors checkpoint', sharded: 'a sharded safetensors checkpoint' };

/**
 * What `Model.load` may do with `file`, decided by the checkpoint readers before anything reaches
 * libtorch: read a torch.export program as data, or (with consent) hand a TorchScript archive to
 * torch::jit::load. Weights-only checkpoints and non-models are typed errors naming the file.
 */
function modelFormat(file: string, trustCode: boolean): 'export' | 'torchscript' {
  let format: string;
  try {
    format = detectFormat(file);
  } catch (e) {
    if (e instanceof CheckpointError && /^unknown checkpoint format/.test(e.detail))
      throw new CheckpointError('ERR_IO', 'not a model: Model.load reads a torch.export program (.pt2, torch.export.save) or a TorchScript archive (torch.jit.save), both zip files; this file is neither', { file, cause: e });
    // A zip the readers refuse (malformed, or past their limits): only torch::jit::load could
    // say whether it is TorchScript, so it gets it only with consent.
    if (trustCode && e instanceof CheckpointError && startsAsZip(file)) return 'torchscript';
    throw e;
  }
  if (format === 'export') return 'export';
  const weights = WEIGHTS_ONLY[format];
  if (weights !== undefined)
    throw new ArgumentError(
      `${escapeControl(file)} is ${weights}: weights, not a model (it holds no program to run). Read it with loadStateDict(file) (in tangent: --pretrained, beside a --model that has the program); Model.load takes a torch.export program (.pt2) or a TorchScript archive`,
    );
  if (!trustCode)
    throw new UntrustedCodeError(
      `${escapeControl(file)} is a TorchScript archive, and TorchScript runs its own code when it is loaded (torch::jit::load compiles its code/ and runs its classes' __setstate__; forward runs its program), like Python's torch.load(weights_only=False). ` +
        "Load it only from a source you trust, with Model.load(file, { trustCode: true }) (in tangent: --trust-code). " +
        'A torch.export program (.pt2, written by torch.export.save) carries no code that runs and loads without consent; loadStateDict(file) (tangent inspect, --pretrained) reads the weights alone, as data',
    );
  return 'torchscript';
}

/**
 * A failure of the native TorchScript loader, rethrown naming the file: libtorch's first non-empty
 * line first (the compiler's messages often start with an empty line), the rest after it,
 * escaped (the compiler quotes the archive's code), the native error as `cause`.
 */
function torchScriptLoadError(file: string, e: unknown): unknown {
  if (!(e instanceof TorchError || (e instanceof CheckpointError && e.code === 'ERR_IO'))) return e;
  const prefix = `cannot load TorchScript module '${file}': `;
  const text = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
  const lines = text.split('\n').map((l) => escapeControl(l.trimEnd()));
  while (lines.length > 0 && lines[0]!.trim() === '') lines.shift();
  while (lines.length > 0 && lines.at(-1)!.trim() === '') lines.pop();
  const first = lines.shift()?.trim() ?? 'libtorch gave no reason';
  return new CheckpointError('ERR_IO', `cannot load TorchScript module: ${first}${lines.length ? `\n${lines.join('\n')}` : ''}`, { file, cause: e });
}

export class Model implements Disposable {
  private handle: NativeModel | null;
  private paramCache: StateDict | null = null;
  /** Name → shape/dtype/device of every parameter, in declaration order. */
  readonly spec: ReadonlyMap<string, ParamSpec>;
  /** Names of the non-trainable buffers (TorchScript modules). */
  readonly bufferNames: ReadonlySet<string>;

  private constructor(
    handle: NativeModel,
    readonly config: ModelConfig | FileModelConfig,
  ) {
    this.handle = handle;
    const spec = new Map<string, ParamSpec>();
    for (const [name, t] of handle.parameters()) spec.set(name, { shape: t.shape, dtype: t.dtype, device: t.device });
    this.spec = spec;
    this.bufferNames = new Set(handle.buffers().map(([n]) => n));
  }

  /** A built-in architecture (mlp, cnn, vit, CLIP's towers), initialised from a seed. */
  static create(config: ModelConfig, opts: ModelOptions = {}): Model {
    validateConfig(config);
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new ArgumentError(`seed must be a non-negative integer, got ${seed}`);
    const dtype = opts.dtype ?? 'float32';
    if (dtype !== 'float32' && dtype !== 'float64')
      throw new DTypeError(`model dtype must be float32 or float64, got ${JSON.stringify(dtype)}`);
    checkConfigSize(config, dtype === 'float64' ? 8 : 4);
    const device = opts.device ?? 'cpu';
    assertDevice(device, 'model device');
    return new Model(native().createModel(config.arch, config, seed, dtype, device), config);
  }

  /**
   * A model from a file, by its content: a torch.export program (`torch.export.save`, .pt2) or a
   * TorchScript module (`torch.jit.save`), in eval mode.
   *
   * **torch.export (.pt2)** — the format PyTorch 2.x exports to. The archive is read as data
   * (lib/checkpoint/pt2.ts: its JSON graph and raw weights; its sample-inputs pickle and guards
   * code are never read) and run node by node through libtorch's operator dispatcher
   * (native/models/exported.cpp): every node must be an aten/prims operator this libtorch has,
   * checked against its schema at load. Parameters and buffers are the module's
   * (`named_parameters()` order); dynamic dimensions (`torch.export.Dim`) are checked against
   * their ranges on each call. Safe to load from strangers, within the limits of docs/security.md.
   *
   * **TorchScript** — forward reads parameters and buffers as inputs and plain attributes (int,
   * float, bool, str, lists of them) as constants; tensor arguments are inputs (see
   * {@link Input}). What cannot be lowered to a functional forward is an `UnsupportedError` naming
   * the attribute, argument or op. **This executes the archive's code** (torch::jit::load compiles
   * its `code/` and runs its classes' `__setstate__` while loading), like Python's
   * `torch.load(weights_only=False)`, so it needs `{ trustCode: true }` (else
   * {@link UntrustedCodeError}, before libtorch sees the file): load only TorchScript you trust.
   * To read the weights of an untrusted archive use `loadStateDict`, which reads them as data
   * (docs/security.md). A failure of libtorch's loader is a CheckpointError ERR_IO naming the file.
   *
   * Anything else (a torch.save, safetensors or sharded checkpoint: weights, not a model) is an
   * ArgumentError pointing to `loadStateDict`; a file of no known format a CheckpointError.
   */
  static async load(path: string, opts: LoadOptions = {}): Promise<Model> {
    const device = opts.device ?? 'cpu';
    assertDevice(device, 'model device');
    const output = opts.output;
    if (output !== undefined && !(typeof output === 'string' && output.length > 0) && !(typeof output === 'number' && Number.isSafeInteger(output) && output >= 0))
      throw new ArgumentError(`output must be a non-negative integer index or a non-empty key, got ${JSON.stringify(output)}`);
    const trustCode = opts.trustCode ?? false;
    if (typeof trustCode !== 'boolean') throw new ArgumentError(`trustCode must be a boolean, got ${JSON.stringify(trustCode) ?? String(trustCode)}`);
    if (!fs.existsSync(path)) throw new ArgumentError(`model file not found: ${path}`);
    const format = modelFormat(path, trustCode);
    if (format === 'export') {
      const p = readExportedProgram(path, output === undefined ? {} : { output });
      const tensors = p.state.map((s) => rawToTensor(s.tensor));
      const program = { ...p, state: p.state.map((s, i) => ({ kind: s.kind, name: s.name, value: s.value, tensor: tensors[i]!.native })) };
      const config: FileModelConfig = output === undefined ? { arch: 'exported', path } : { arch: 'exported', path, output };
      try {
        return new Model(await native().loadExported(program, device), config);
      } finally {
        for (const t of tensors) t.dispose();
      }
    }
    const config: FileModelConfig = output === undefined ? { arch: 'torchscript', path } : { arch: 'torchscript', path, output };
    let handle: NativeModel;
    try {
      handle = await native().loadTorchScript(path, device, output ?? null);
    } catch (e) {
      throw torchScriptLoadError(path, e);
    }
    return new Model(handle, config);
  }

  get kind(): string {
    return this.native.kind;
  }

  /** @internal */
  get native(): NativeModel {
    if (this.handle === null) throw new DisposedError('model has been disposed');
    return this.handle;
  }

  /** The model's own parameters θ0 (shared with the model, not copies). */
  parameters(): StateDict {
    if (this.paramCache === null || [...this.paramCache.values()].some((t) => t.disposed))
      this.paramCache = wrapPairs(this.native.parameters());
    return this.paramCache;
  }

  buffers(): StateDict {
    return wrapPairs(this.native.buffers());
  }

  /** Total number of trainable scalars. */
  get numel(): number {
    let n = 0;
    for (const s of this.spec.values()) n += s.shape.reduce((a, b) => a * b, 1);
    return n;
  }

  /**
   * Check a parameter set against the model before crossing into C++: every name known,
   * shapes, dtypes and devices equal; with `complete`, every parameter present.
   */
  checkParams(params: Params, what = 'params', complete = true): Record<string, import('./binding').NativeTensor> {
    const out: Record<string, import('./binding').NativeTensor> = {};
    for (const [name, t] of entries(params)) {
      if (!(t instanceof Tensor)) throw new ArgumentError(`${what}: '${name}' is not a Tensor`);
      const s = this.spec.get(name);
      if (s === undefined) {
        if (this.bufferNames.has(name)) {
          out[name] = t.native;
          continue;
        }
        throw new ParameterError(`${what}: unknown parameter '${name}' for ${this.kind} model`);
      }
      const n = t.native;
      if (n.shape.length !== s.shape.length || n.shape.some((v, i) => v !== s.shape[i]))
        throw new ShapeError(`${what}: parameter '${name}' has shape ${shapeStr(n.shape)}, model expects ${shapeStr(s.shape)}`);
      if (n.dtype !== s.dtype)
        throw new DTypeError(`${what}: parameter '${name}' has dtype ${n.dtype}, model expects ${s.dtype}`);
      if (n.device !== s.device)
        throw new DeviceError(`${what}: parameter '${name}' is on ${n.device}, model is on ${s.device}`);
      out[name] = n;
    }
    if (complete)
      for (const name of this.spec.keys())
        if (!(name in out)) throw new ParameterError(`${what}: missing parameter '${name}'`);
    return out;
  }

  private nativeParams(p: Params | undefined, what: string): NativeParams {
    return p === undefined ? null : this.checkParams(p, what);
  }

  private static input(x: Tensor, what = 'input'): import('./binding').NativeTensor {
    if (!(x instanceof Tensor)) throw new ArgumentError(`${what} must be a Tensor`);
    return x.native;
  }

  /** @internal One tensor, or several (x first) for a multi-input forward. */
  static inputs(x: Input): NativeInput {
    if (!Array.isArray(x)) return Model.input(x as Tensor);
    if (x.length === 0) throw new ArgumentError('input array must hold at least one Tensor');
    return x.map((t, i) => Model.input(t, `input[${i}]`));
  }

  private static head(h: Head | undefined): NativeHead | null {
    if (h === undefined) return null;
    if (!(h.weight instanceof Tensor)) throw new ArgumentError('head.weight must be a Tensor');
    if (h.weight.shape.length !== 2) throw new ShapeError(`head.weight must be [classes, features], got ${shapeStr(h.weight.shape)}`);
    if (h.bias !== undefined && (h.bias.shape.length !== 1 || h.bias.shape[0] !== h.weight.shape[0]))
      throw new ShapeError(`head.bias must be [${h.weight.shape[0]}], got ${shapeStr(h.bias.shape)}`);
    return { weight: h.weight.native, bias: h.bias?.native ?? null, normalize: h.normalize ?? false };
  }

  /** f(x; params), no autograd bookkeeping. `params` defaults to the model's own. */
  async forward(x: Input, params?: Params): Promise<Tensor> {
    return Tensor.wrap(await this.native.forward(Model.inputs(x), this.nativeParams(params, 'params')));
  }

  /**
   * (f(x; θ0), J_θ f(x; θ0) · tangent): by the built-in ViT's hand-written JVP, by forward-mode AD
   * for other models (and for all with setJvpMethod('forward-ad')). Parameters absent from
   * `tangent` have zero tangent. θ0 defaults to the model's own parameters.
   */
  async jvp(x: Input, tangent: Params, opts: { params0?: Params } = {}): Promise<{ primal: Tensor; tangent: Tensor }> {
    const t = this.checkParams(tangent, 'tangent', false);
    const r = await this.native.jvp(Model.inputs(x), this.nativeParams(opts.params0, 'params0'), t);
    return { primal: Tensor.wrap(r.primal), tangent: Tensor.wrap(r.tangent) };
  }

  /** The same JVP by double backward (reverse-over-reverse); slower, for cross-checks. */
  async jvpDoubleBackward(x: Input, tangent: Params, opts: { params0?: Params } = {}): Promise<Tensor> {
    const t = this.checkParams(tangent, 'tangent', false);
    return Tensor.wrap(await this.native.jvpDoubleBackward(Model.inputs(x), this.nativeParams(opts.params0, 'params0'), t));
  }

  /** Jᵀ · cotangent at `params`: one gradient per parameter. */
  async vjp(x: Input, cotangent: Tensor, opts: { params?: Params } = {}): Promise<StateDict> {
    return wrapPairs(
      await this.native.vjp(Model.inputs(x), this.nativeParams(opts.params, 'params'), Model.input(cotangent, 'cotangent')),
    );
  }

  /** The linearized model at θ0 (default: this model's own parameters). Holds θ0 by reference. */
  linearize(params0?: Params): LinearizedModel {
    if (params0 !== undefined) this.checkParams(params0, 'params0');
    return new LinearizedModel(this, params0);
  }

  /** Cross-entropy of head(f(x; params)) on int64 labels `y`, and its gradient w.r.t. θ. */
  async lossAndGrad(x: Input, y: Tensor, opts: { params?: Params; head?: Head } = {}): Promise<GradResult> {
    return this.step('standard', x, y, opts.params, undefined, opts.head, true) as Promise<GradResult>;
  }

  /** Loss and correct count of head(f(x; params)), without gradients. */
  async evaluate(x: Input, y: Tensor, opts: { params?: Params; head?: Head } = {}): Promise<StepResult> {
    return this.step('standard', x, y, opts.params, undefined, opts.head, false);
  }

  /** @internal */
  async step(
    mode: Mode,
    x: Input,
    y: Tensor,
    params: Params | undefined,
    params0: Params | undefined,
    head: Head | undefined,
    grads: boolean,
  ): Promise<StepResult | GradResult> {
    const nx = Model.inputs(x);
    const ny = Model.input(y, 'labels');
    if (ny.dtype !== 'int64') throw new DTypeError(`labels must be int64, got ${ny.dtype}`);
    const args = [mode, nx, ny, this.nativeParams(params, 'params'), this.nativeParams(params0, 'params0'), Model.head(head)] as const;
    const r = grads ? await this.native.lossAndGrad(...args) : await this.native.evaluate(...args);
    return grads ? { loss: r.loss, correct: r.correct, grads: wrapPairs(r.grads ?? []) } : { loss: r.loss, correct: r.correct };
  }

  /**
   * The same architecture with `params` (every parameter; buffers optional) as its own θ0: what
   * `forward(x)` and `jvp` use when no parameters are given, and what `parameters()` returns.
   * Checked like any parameter set (names, shapes, dtypes, device). Shares no native state with
   * this model: dispose each.
   */
  withParameters(params: Params): Model {
    return new Model(this.native.withState(this.checkParams(params, 'params')), this.config);
  }

  /** Release the native model (its parameters become unusable). */
  dispose(): void {
    this.handle?.dispose();
    this.handle = null;
    this.paramCache = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * f_lin(x; θ) = f(x; θ0) + J_θ f(x; θ0) · (θ − θ0), computed with one JVP at θ0 along θ − θ0.
 * Holds θ0 once, by reference (the model's own parameters unless given).
 */
export class LinearizedModel {
  constructor(
    readonly model: Model,
    readonly params0?: Params,
  ) {}

  /** θ0 as a state dict. */
  get theta0(): Params {
    return this.params0 ?? this.model.parameters();
  }

  /** f_lin(x; params); params default to θ0, where f_lin equals f exactly. */
  async forward(x: Input, params?: Params): Promise<Tensor> {
    const m = this.model;
    const p0 = this.params0 === undefined ? null : m.checkParams(this.params0, 'params0');
    const p = params === undefined ? p0 : m.checkParams(params, 'params');
    return Tensor.wrap(await m.native.linearizedForward(Model.inputs(x), p0, p));
  }

  /** J_θ f(x; θ0) · tangent, and f(x; θ0). */
  jvp(x: Input, tangent: Params): Promise<{ primal: Tensor; tangent: Tensor }> {
    return this.model.jvp(x, tangent, { params0: this.params0 });
  }

  /** Cross-entropy of head(f_lin(x; θ)) and its gradient w.r.t. θ (backward through the JVP). */
  async lossAndGrad(x: Input, y: Tensor, opts: { params?: Params; head?: Head } = {}): Promise<GradResult> {
    return this.model.step('linear', x, y, opts.params ?? this.params0, this.params0, opts.head, true) as Promise<GradResult>;
  }

  async evaluate(x: Input, y: Tensor, opts: { params?: Params; head?: Head } = {}): Promise<StepResult> {
    return this.model.step('linear', x, y, opts.params ?? this.params0, this.params0, opts.head, false);
  }
}

/**
 * The raw native surface, typed apart from the public API (as onnxruntime-node does), and its
 * loader. Nothing here validates arguments: lib/ does that before calling in.
 */
import * as path from 'node:path';
import type { DType } from './checkpoint/dtype';
import { CheckpointError } from './checkpoint/errors';
import * as errors from './errors';
import { DistributedError } from './distributed/errors';
import { NativeLoadError } from './errors';

/** Errors the native layer raises from file reads (TorchScript, .pt): CheckpointError ERR_IO. */
class NativeCheckpointError extends CheckpointError {
  constructor(message: string) {
    super('ERR_IO', message);
    this.name = 'CheckpointError';
  }
}

/** The classes the native layer instantiates, by the names it uses. */
const nativeErrorClasses = {
  ArgumentError: errors.ArgumentError,
  ShapeError: errors.ShapeError,
  DTypeError: errors.DTypeError,
  DeviceError: errors.DeviceError,
  ParameterError: errors.ParameterError,
  DisposedError: errors.DisposedError,
  TorchError: errors.TorchError,
  StateError: errors.StateError,
  UnsupportedError: errors.UnsupportedError,
  CheckpointError: NativeCheckpointError,
  DistributedError,
};

// The dtype union is declared once, in checkpoint/dtype.
export type { DType };

export type JvpMethod = 'auto' | 'forward-ad';

export type NamedNative = Array<[string, NativeTensor]>;

export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  readonly nbytes: number;
  data(): ArrayBufferView;
  clone(): NativeTensor;
  to(device: string | null, dtype: DType | null): Promise<NativeTensor>;
  dispose(): void;
}

export interface NativeTensorCtor {
  new (data: ArrayBufferView, shape: number[], dtype: DType): NativeTensor;
}

export interface NativeHead {
  weight: NativeTensor;
  bias?: NativeTensor | null;
  normalize?: boolean;
}

export type NativeParams = Record<string, NativeTensor> | null;

/** One input tensor, or several (x first) for a TorchScript forward that takes more. */
export type NativeInput = NativeTensor | NativeTensor[];

export interface NativeStep {
  loss: number;
  correct: number;
  grads?: NamedNative;
}

export type NativeStepFn = (
  mode: 'standard' | 'linear',
  x: NativeInput,
  y: NativeTensor,
  params: NativeParams,
  params0: NativeParams,
  head: NativeHead | null,
) => Promise<NativeStep>;

export interface NativeModel {
  readonly kind: string;
  readonly disposed: boolean;
  parameters(): NamedNative;
  buffers(): NamedNative;
  forward(x: NativeInput, params: NativeParams): Promise<NativeTensor>;
  jvp(
    x: NativeInput,
    params0: NativeParams,
    tangent: Record<string, NativeTensor>,
  ): Promise<{ primal: NativeTensor; tangent: NativeTensor }>;
  jvpDoubleBackward(
    x: NativeInput,
    params0: NativeParams,
    tangent: Record<string, NativeTensor>,
  ): Promise<NativeTensor>;
  vjp(x: NativeInput, params: NativeParams, cotangent: NativeTensor): Promise<NamedNative>;
  linearizedForward(x: NativeInput, params0: NativeParams, params: NativeParams): Promise<NativeTensor>;
  /** Loss and ∂loss/∂θ (standard, or linear: backward through the JVP at params0). */
  lossAndGrad: NativeStepFn;
  /** Loss and correct count, no gradients. */
  evaluate: NativeStepFn;
  withState(params: NativeParams): NativeModel;
  dispose(): void;
}

export interface NativeOpenFile {
  fd: number;
  /** For messages. */
  path: string;
}

export interface NativeFileMergeItem {
  name: string;
  dtype: string;
  /** Output dtype (the input's for integer tensors). */
  out: string;
  shape: number[];
  /** [index into files, absolute byte offset]: the base first (when `base`), then one per model. */
  inputs: Array<[number, number]>;
  /** Absolute byte offset in the output file. */
  outOffset: number;
  /** Whether inputs[0] is the base (default true). */
  base?: boolean;
  /** Index into mergeFiles' specs (default 0). */
  spec?: number;
  /** Per input, where float inputs differ in dtype (each converted to the compute dtype). */
  dtypes?: string[];
}

/** native/merge.h's MergeSpec; lib/merge.ts fills it (absent fields keep the native defaults). */
export interface NativeMergeSpec {
  method: string;
  /** One per model. */
  weights: number[];
  lambda: number;
  /** Per model (absent: 1, 0, 0). */
  density?: number[];
  gamma?: number[];
  epsilon?: number[];
  seed: number;
  election: 'weighted' | 'unweighted';
  /** slerp, nearswap. */
  t?: number;
  normalize?: boolean;
  rescale?: boolean;
  selectTopk?: number;
  scale?: number;
  maxIter?: number;
  tol?: number;
  eps?: number;
  normalizeWeights?: boolean;
  flatten?: boolean;
  rowWise?: boolean;
  ramEpsilon?: number;
  r?: number;
  alpha?: number;
  compute: DType;
  out: DType;
}

export interface NativeInfo {
  /** OpenBLAS's account of itself when it is the BLAS in this process: kernel family ("core") and build config. */
  blas: { library: 'OpenBLAS'; core: string; config?: string } | null;
  /** How JVPs are computed: 'auto' (a model's hand-written JVP where it has one) or 'forward-ad'. */
  jvpMethod: JvpMethod;
  torchVersion: string;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  parallelInfo: string;
}

export interface NativeExportedProgram {
  path: string;
  numValues: number;
  output: number;
  state: Array<{ kind: 'parameter' | 'buffer' | 'constant'; name: string; value: number; tensor: NativeTensor }>;
  inputs: Array<{ name: string; value: number; dtype: DType; sizes: number[]; symbols: string[]; min: number[]; max: number[] }>;
  constantInputs: never[];
  nodes: Array<{ name: string; target: string; args: object[]; outputs: number[][]; listOutput: boolean[] }>;
}

export interface NativeBinding {
  Tensor: NativeTensorCtor;
  /** Zero-filled addon-owned memory that tensors share without copying; undefined where external buffers are not allowed. */
  allocate(bytes: number): ArrayBuffer | undefined;
  setErrorClasses(classes: Record<string, unknown>): void;
  setNumThreads(n: number): void;
  setJvpMethod(method: JvpMethod): void;
  getJvpMethod(): JvpMethod;
  getNumThreads(): number;
  info(): NativeInfo;
  createModel(kind: string, config: object, seed: number, dtype: DType, device: string): NativeModel;
  loadTorchScript(path: string, device: string, output: number | string | null): Promise<NativeModel>;
  /** A torch.export program checked by lib/checkpoint/pt2.ts (its state as native tensors). */
  loadExported(program: NativeExportedProgram, device: string): Promise<NativeModel>;
  combine(
    bases: Array<NativeTensor | null>,
    inputs: NativeTensor[][],
    coeffs: number[],
    compute: DType,
    /** One output dtype per tensor. */
    out: DType[],
    naive?: boolean,
  ): Promise<NativeTensor[]>;
  /** Fused AdamW step over all parameters, in place (params and both moments); lib/train/optim.ts. */
  adamwStep(
    params: NativeTensor[],
    expAvg: NativeTensor[],
    expAvgSq: NativeTensor[],
    grads: NativeTensor[],
    opts: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; maxGradNorm: number; step: number },
  ): Promise<{ gradNorm: number; clipCoef: number }>;
  globalNorm(tensors: NativeTensor[]): Promise<number>;
  mergeTensor(name: string, base: NativeTensor | null, models: NativeTensor[], spec: NativeMergeSpec): Promise<NativeTensor>;
  /** The native registry of merge methods (native/merge/registry.cpp). */
  mergeMethods(): Array<{ name: string; base: 'required' | 'none' | 'optional'; minModels: number; maxModels: number }>;
  /**
   * Merges tensors file to file (positioned reads and writes on descriptors the caller opened,
   * validated and still owns); resolves with the names of the merged tensors holding NaN/Inf
   * when `checkFinite`.
   */
  mergeFiles(files: NativeOpenFile[], out: NativeOpenFile, items: NativeFileMergeItem[], specs: NativeMergeSpec[], checkFinite: boolean, device?: string): Promise<string[]>;
  dot(a: NativeTensor[], b: NativeTensor[]): Promise<number>;
  copyInto(dst: NativeTensor[], src: NativeTensor[]): Promise<void>;
  /** Empirical NTK Gram matrix at params (null: the model's own); lib/analysis/ntk.ts. */
  ntkGram(model: NativeModel, x: NativeTensor, params: NativeParams, opts: { output: number; dtype: DType; maxMemoryBytes: number; workers: number }): Promise<{ gram: NativeTensor; outputs: number; params: number; forwardPasses: number; backwardPasses: number; jacobianRows: number; capacityRows: number; peakJacobianBytes: number; strategy: 'full' | 'grouped' | 'panels'; passes: number; workers: number }>;
  /** Symmetric eigendecomposition, eigenvalues descending, top-k eigenvectors (k <= 0: all); lib/analysis/ntk.ts. */
  eighSymmetric(matrix: NativeTensor, topK: number): Promise<{ values: NativeTensor; vectors: NativeTensor }>;
  /** A c10d process group handle, empty until init(); lib/distributed. */
  ProcessGroup: new () => NativeProcessGroup;
  distributedBackends(): { gloo: boolean; nccl: boolean };
}

export interface NativeProcessGroupInit {
  masterAddr: string;
  port: number;
  worldSize: number;
  rank: number;
  timeoutMs: number;
  backend: 'gloo' | 'nccl';
  interface?: string;
  bindAddress?: string;
  glooThreads?: number;
}

/** binding/distributed.cpp: every call but the accessors is an AsyncWorker; failures reject with DistributedError. */
export interface NativeProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly port: number;
  readonly backend: string;
  readonly closed: boolean;
  /** The message of the failure that broke the group, or ''. */
  readonly broken: string;
  init(o: NativeProcessGroupInit): Promise<{ rank: number; worldSize: number; port: number }>;
  allReduce(tensors: NativeTensor[], op: 'sum' | 'mean' | 'max' | 'min', bucketBytes: number, prescale: number): Promise<void>;
  broadcast(tensors: NativeTensor[], root: number, bucketBytes: number): Promise<void>;
  barrier(): Promise<void>;
  close(abort: boolean): Promise<void>;
}

import { AddonLoadFailure, loadAddon, packageRoot } from './install';

const ROOT = packageRoot(__dirname);

/** The addon, or NativeLoadError with lib/install/load.ts's diagnosis (every attempt, one remedy). */
function load(): NativeBinding {
  let binding: NativeBinding;
  try {
    binding = loadAddon(ROOT) as NativeBinding;
  } catch (err) {
    throw new NativeLoadError(err instanceof AddonLoadFailure ? err.message : `tangent-edit: cannot load the native addon: ${String(err)}`);
  }
  binding.setErrorClasses(nativeErrorClasses);
  return binding;
}

let cached: NativeBinding | undefined;

/** The native binding, loaded on first use. */
export function native(): NativeBinding {
  cached ??= load();
  return cached;
}

/**
 * Model merging — the methods of lib/merge-methods.ts (task arithmetic, TIES, DARE, breadcrumbs,
 * DELLA, linear, passthrough, SLERP, NuSLERP, multi-SLERP, Karcher, NearSwap, Model Stock, SCE,
 * RAM) — on state
 * dicts in memory or streamed tensor by tensor between checkpoint files (peak memory about K+2
 * copies of the largest tensor, not K models). Exact semantics: docs/merging.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { native, type NativeFileMergeItem, type NativeMergeSpec, type NativeOpenFile } from './binding';
import { CheckpointError } from './checkpoint/errors';
import { DTYPE_BYTES, findNonFinite, isFloatDType as isFloatRaw, numel as numelOf, type RawTensor } from './checkpoint/dtype';
import { openCheckpoint, rawToTensor, saveFormatFor, saveStateDict, tensorToRaw, type LoadedCheckpoint } from './checkpoint/io';
import { quote } from './checkpoint/escape';
import {
  assertSameLayout,
  writeSafetensorsAsync,
  writeSafetensorsFilled,
  writeShardedAsync,
  writeShardedFilled,
  type AsyncLazyTensor,
  type TensorLocation,
  type TensorLayout,
  type TensorReader,
} from './checkpoint/safetensors';
import { ArgumentError } from './errors';
import { assertOutputsNotInputs, confinedPath } from './util/fs';
import type { Params, StateDict } from './model';
import { assertDevice, Tensor, type Device, type DType } from './tensor';

import { MERGE_METHODS, METHODS, paramProblem, type MergeMethod } from './merge-methods';
export { MERGE_METHODS, METHODS, type MergeMethod } from './merge-methods';

const floatDType = z.enum(['float32', 'float64', 'float16', 'bfloat16']);
const SIZE_EXPECTED = 'expected a positive whole number of bytes or a size such as 500MB, 2GB or 1GiB';
const SIZE_UNITS: Record<string, number> = { '': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };
/** Bytes from a positive integer or a size with a unit (500MB, 2GB, 1GiB); NaN for anything else. */
export function parseByteSize(v: number | string): number {
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$/i.exec(v.trim()) : null;
  const n = typeof v === 'number' ? v : m ? Math.round(Number(m[1]) * SIZE_UNITS[(m[2] ?? '').toUpperCase()]!) : NaN;
  return Number.isSafeInteger(n) && n >= 1 ? n : NaN;
}
/** A byte count: a positive integer, or a string with a unit. Every wrong value gets one message naming what is expected. */
const byteSize = z
  .union([z.number(), z.string()], { errorMap: (_issue, ctx) => ({ message: `${SIZE_EXPECTED}, got ${JSON.stringify(ctx.data) ?? String(ctx.data)}` }) })
  .transform((v, ctx) => {
    const n = parseByteSize(v);
    if (Number.isNaN(n)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${SIZE_EXPECTED}, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return n;
  });

const GLOBAL_KEYS = ['lambda', 'election', 'seed', 't', 'normalize', 'rescale', 'select_topk', 'scale', 'max_iter', 'tol', 'eps', 'normalize_weights', 'nuslerp_flatten', 'nuslerp_row_wise', 'epsilon', 'r', 'alpha'] as const;
const MODEL_KEYS = ['density', 'gamma', 'epsilon'] as const;
const anyValue = z.union([z.number(), z.boolean(), z.string()]);

/**
 * Method parameters; which apply to which method, their defaults and ranges: lib/merge-methods.ts
 * and docs/merging.md. A per-model key (density, gamma, della's epsilon) given here is every
 * model's default; `models[].parameters` overrides it per model.
 */
export const MergeParametersSchema = z.object(Object.fromEntries([...new Set([...GLOBAL_KEYS, ...MODEL_KEYS])].map((k) => [k, anyValue.optional()]))).strict();
const ModelParametersSchema = z.object(Object.fromEntries(MODEL_KEYS.map((k) => [k, anyValue.optional()]))).strict();
type Parameters = Partial<Record<(typeof GLOBAL_KEYS)[number] | (typeof MODEL_KEYS)[number], number | boolean | string>>;

/**
 * What is wrong with `method` given these parameters, per-model parameters, weights, number of
 * models and whether a base model is given (nothing: an empty list): each problem as [the key it
 * is about, the message]. Parameters a method does not take are refused by name.
 */
export function methodProblems(
  method: MergeMethod,
  p: Parameters,
  weights: readonly number[],
  models: number,
  opts: { base?: boolean; perModel?: ReadonlyArray<Parameters | undefined> } = {},
): Array<[string[], string]> {
  const def = METHODS[method];
  const out: Array<[string[], string]> = [];
  const hasBase = opts.base ?? true;
  if (def.base === 'required' && !hasBase) out.push([['base_model'], `${method} needs base_model`]);
  if (def.base === 'none' && hasBase) out.push([['base_model'], `${method} takes no base_model (every input is a model: list it under models)`]);
  const [lo, hi] = def.models;
  if (models < lo || (hi > 0 && models > hi))
    out.push([['models'], `${method} takes ${hi === lo ? 'exactly' : 'at least'} ${lo}${hi > lo ? ` to ${hi}` : ''} model${lo === 1 && hi === 1 ? '' : 's'}${def.base === 'required' ? ' beside base_model' : ''}, got ${models}`]);
  for (const [k, v] of Object.entries(p)) {
    if (v === undefined) continue;
    const applies = k in def.global || k in def.perModel;
    if (!applies) {
      out.push([['parameters', k], `${k} does not apply to ${method}`]);
      continue;
    }
    const bad = paramProblem(method, k, v);
    if (bad) out.push([['parameters', k], bad]);
  }
  (opts.perModel ?? []).forEach((pm, i) => {
    for (const [k, v] of Object.entries(pm ?? {})) {
      if (v === undefined) continue;
      if (!(k in def.perModel)) out.push([['models', String(i), 'parameters', k], `${k} does not apply to ${method}${k in def.global ? ' per model (it is one value for the merge: give it under parameters)' : ''}`]);
      else {
        const bad = paramProblem(method, k, v);
        if (bad) out.push([['models', String(i), 'parameters', k], bad]);
      }
    }
  });
  for (const [k, d] of Object.entries(def.global)) if (d === undefined && p[k as keyof Parameters] === undefined) out.push([['parameters', k], `${method} needs ${k} (${method === 'slerp' ? 'the interpolation factor, 0 = base_model … 1 = the model' : 'the distance below which entries take the model\'s value'})`]);
  if (!def.weights && weights.some((w) => w !== 1)) out.push([['models'], `${method} takes no weights (${def.noWeights})`]);
  const normalize = (p.normalize ?? def.global.normalize) === true;
  if (def.weightRule === 'nonnegative' && normalize && weights.some((w) => w < 0)) out.push([['models'], `${method} needs weights >= 0 (the disjoint mean divides by the agreeing ones; or set normalize: false)`]);
  if (def.weightRule === 'nonzero-sum' && (p.normalize ?? p.normalize_weights ?? true) === true && Math.abs(weights.reduce((a, b) => a + b, 0)) < 1e-8)
    out.push([['models'], `${method} divides by the sum of the weights, which is 0 (or set ${method === 'linear' ? 'normalize' : 'normalize_weights'}: false)`]);
  // Per model: breadcrumbs' density + gamma <= 1; della's density ± epsilon inside (0, 1).
  for (let i = 0; i < models; i++) {
    const get = (k: 'density' | 'gamma' | 'epsilon') => (opts.perModel?.[i]?.[k] ?? p[k] ?? def.perModel[k]) as number;
    const where = opts.perModel?.[i] && Object.keys(opts.perModel[i]!).length ? ['models', String(i), 'parameters', 'density'] : ['parameters', 'density'];
    if ('gamma' in def.perModel && get('density') + get('gamma') > 1) out.push([where, `${method} needs density + gamma <= 1${models > 1 ? ` (model ${i})` : ''}`]);
    if ('epsilon' in def.perModel && get('density') < 1 && !(get('density') - get('epsilon') > 0 && get('density') + get('epsilon') < 1))
      out.push([where, `${method} needs density - epsilon > 0 and density + epsilon < 1 (the keep probabilities), got density ${get('density')}, epsilon ${get('epsilon')}${models > 1 ? ` (model ${i})` : ''}`]);
  }
  return out;
}

const MergeConfigObject = z
  .object({
    base_model: z.string().min(1).optional(),
    models: z
      .array(z.object({ model: z.string().min(1), weight: z.number().finite().default(1), parameters: ModelParametersSchema.optional() }).strict())
      .min(1),
    method: z.enum(MERGE_METHODS).default('task_arithmetic'),
    parameters: MergeParametersSchema.default({}),
    dtype: z.enum(['float32', 'float64']).default('float32'),
    out_dtype: floatDType.optional(),
    output: z.string().min(1),
    shard_size: byteSize.optional(),
    non_finite: z.enum(['error', 'warn', 'allow']).default('error'),
  })
  .strict();

export const MergeConfigSchema = MergeConfigObject.superRefine((c, ctx) => {
    const problems = methodProblems(c.method, c.parameters as Parameters, c.models.map((m) => m.weight), c.models.length, {
      base: c.base_model !== undefined,
      perModel: c.models.map((m) => m.parameters as Parameters | undefined),
    });
    for (const [p, message] of problems) ctx.addIssue({ code: z.ZodIssueCode.custom, path: p, message });
  });

export type MergeConfigInput = z.input<typeof MergeConfigSchema>;
export type MergeConfig = z.output<typeof MergeConfigSchema>;

/**
 * Validates a merge config (before any file is read); errors name the field. `perTensor`: the
 * method's parameters come per tensor from a plan (a mergekit config, lib/mergekit.ts) and are
 * checked there; only the files, dtypes and output are checked here.
 */
export function parseMergeConfig(input: unknown, source = 'merge config', opts: { perTensor?: boolean } = {}): MergeConfig {
  const r = (opts.perTensor ? MergeConfigObject : MergeConfigSchema).safeParse(input);
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
    throw new ArgumentError(`${source} is invalid: ${problems.join('; ')}`);
  }
  return r.data;
}

export interface MergeOptions {
  method?: MergeMethod;
  weights?: readonly number[];
  lambda?: number;
  /** Per model: one value for all, or one per model. */
  density?: number | readonly number[];
  gamma?: number | readonly number[];
  /** della: the spread of the keep probabilities (per model); ram, ramplus_tl: the threshold below which |τ| counts as unchanged. */
  epsilon?: number | readonly number[];
  election?: 'weighted' | 'unweighted';
  seed?: number;
  /** slerp: interpolation factor in [0, 1]; nearswap: distance threshold (> 0). */
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
  r?: number;
  alpha?: number;
  compute?: 'float32' | 'float64';
  outDtype?: DType;
}

/** Config key ↔ MergeOptions key. */
const OPTION_OF: Record<string, keyof MergeOptions> = {
  lambda: 'lambda', density: 'density', gamma: 'gamma', epsilon: 'epsilon', election: 'election', seed: 'seed', t: 't', normalize: 'normalize', rescale: 'rescale',
  select_topk: 'selectTopk', scale: 'scale', max_iter: 'maxIter', tol: 'tol', eps: 'eps', normalize_weights: 'normalizeWeights', nuslerp_flatten: 'flatten',
  nuslerp_row_wise: 'rowWise', r: 'r', alpha: 'alpha',
};

/** A config's parameters (global and per model) as MergeOptions. */
export function configOptions(cfg: Pick<MergeConfig, 'method' | 'models' | 'parameters' | 'dtype' | 'out_dtype'>): MergeOptions {
  const o: Record<string, unknown> = { method: cfg.method, weights: cfg.models.map((m) => m.weight), compute: cfg.dtype, outDtype: cfg.out_dtype };
  for (const [k, v] of Object.entries(cfg.parameters)) if (v !== undefined) o[OPTION_OF[k]!] = v;
  const def = METHODS[cfg.method];
  for (const k of ['density', 'gamma', 'epsilon'] as const) {
    if (!(k in def.perModel) || !cfg.models.some((m) => m.parameters?.[k] !== undefined)) continue;
    const dflt = (cfg.parameters[k] as number | undefined) ?? def.perModel[k]!;
    o[k] = cfg.models.map((m) => (m.parameters?.[k] as number | undefined) ?? dflt);
  }
  return o as MergeOptions;
}

function spec(o: MergeOptions, out: DType, models: number, hasBase: boolean): NativeMergeSpec {
  const method = o.method ?? 'task_arithmetic';
  if (!(MERGE_METHODS as readonly string[]).includes(method)) throw new ArgumentError(`unknown merge method ${JSON.stringify(method)} (expected ${MERGE_METHODS.join(', ')})`);
  const def = METHODS[method];
  const weights = o.weights ?? Array(models).fill(1);
  const p: Parameters = {};
  const perModel: Parameters[] = Array.from({ length: models }, () => ({}));
  for (const [key, opt] of Object.entries(OPTION_OF)) {
    const v = o[opt];
    if (v === undefined) continue;
    if (Array.isArray(v)) {
      if (v.length !== models) throw new ArgumentError(`merge options are invalid: ${opt}: ${v.length} values for ${models} models`);
      v.forEach((x, i) => (perModel[i]![key as 'density'] = x as number));
    } else p[key as keyof Parameters] = v as number;
  }
  const problems = methodProblems(method, p, weights, models, { base: hasBase, perModel });
  if (problems.length) throw new ArgumentError(`merge options are invalid: ${problems.map(([k, m]) => `${k[k.length - 1]}: ${m}`).join('; ')}`);
  const per = (k: 'density' | 'gamma' | 'epsilon') => {
    if (!(k in def.perModel)) return undefined;
    const v = o[k];
    return Array.isArray(v) ? [...v] : Array(models).fill(v ?? def.perModel[k]);
  };
  // The global parameters the method takes, given or its defaults, under their MergeOptions names
  // (the binding's names too); ram's global epsilon is the native ramEpsilon.
  const globals: Record<string, unknown> = {};
  for (const key of Object.keys(def.global) as Array<keyof typeof def.global>) {
    const v = o[OPTION_OF[key]!] ?? def.global[key];
    if (v !== undefined) globals[key === 'epsilon' ? 'ramEpsilon' : OPTION_OF[key]!] = v;
  }
  return {
    method,
    weights: [...weights],
    lambda: 1,
    election: 'weighted',
    seed: 0,
    ...globals,
    density: per('density'),
    gamma: per('gamma'),
    epsilon: per('epsilon'),
    compute: o.compute ?? 'float32',
    out,
  };
}

/**
 * Merge one named tensor by `opts.method` (docs/merging.md): θ0 + λ·merge(w_k, θ_k − θ0) for the
 * task-vector methods, the point the others pick. `base` is null for the methods that take none
 * (linear, passthrough, karcher; optional for nuslerp, multislerp). Integer tensors come back
 * unchanged (the base's, else the first model's).
 */
export async function mergeTensor(name: string, base: Tensor | null, finetuned: readonly Tensor[], opts: MergeOptions = {}): Promise<Tensor> {
  const weights = opts.weights ?? finetuned.map(() => 1);
  if (weights.length !== finetuned.length) throw new ArgumentError(`${finetuned.length} models but ${weights.length} weights`);
  weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w)) throw new ArgumentError(`weights[${i}] must be a finite number, got ${String(w)}`);
  });
  const ref = base ?? finetuned[0];
  if (!ref) throw new ArgumentError('merge: no models');
  const out = opts.outDtype && isFloatRaw(ref.dtype) ? opts.outDtype : ref.dtype;
  return Tensor.wrap(await native().mergeTensor(name, base?.native ?? null, finetuned.map((t) => t.native), spec({ ...opts, weights }, out, finetuned.length, base !== null)));
}

/** Merge whole state dicts in memory (names and shapes must match exactly); `base` null for the methods that take none. */
export async function mergeStateDicts(base: Params | null, finetuned: readonly Params[], opts: MergeOptions = {}): Promise<StateDict> {
  const asMap = (p: Params) => (p instanceof Map ? (p as Map<string, Tensor>) : new Map(Object.entries(p as Record<string, Tensor>)));
  const fts = finetuned.map(asMap);
  const b = base === null ? null : asMap(base);
  const ref = b ?? fts[0];
  if (!ref) throw new ArgumentError('merge: no models');
  fts.forEach((f, k) => assertSameLayout(ref, f, { nameA: b ? 'base' : 'model 0', nameB: `model ${k}` }));
  const out: StateDict = new Map();
  for (const [n, t] of ref) out.set(n, await mergeTensor(n, b ? t : null, fts.map((f) => f.get(n)!), opts));
  return out;
}

/** The files of a merge, resolved and checked (see {@link resolveMergePaths}). */
export interface MergePaths {
  /** Absent for the methods that take no base. */
  base?: string;
  models: string[];
  output: string;
  /** What `output` is written as: one safetensors file, a torch.save archive, or a sharded directory. */
  format: 'safetensors' | 'sharded' | 'torch';
}

/**
 * Resolves a merge's paths and checks them before any file is read. With `configDir` (the
 * config came from a file in that folder, `configFile`), relative paths are resolved against it
 * and must stay inside it (`../x` refused, naming the key and the resolved path; absolute paths
 * are taken as written); without it (a config object from the caller's code) they resolve
 * against the working directory, unconfined. The output format comes from the name, as the
 * writers decide it (`.safetensors`, `.pt`/`.pth`/`.bin`, a directory path for shards, or any
 * name with `shard_size`); another extension (`merged.ckpt`) is refused. The output may not be
 * the same file as the base, a model or the config file, nor a folder holding one of them, nor lie
 * inside a sharded input's folder (ArgumentError naming both keys and paths).
 */
export function resolveMergePaths(cfg: Pick<MergeConfig, 'base_model' | 'models' | 'output' | 'shard_size'>, opts: { configDir?: string; configFile?: string } = {}): MergePaths {
  const where = opts.configFile ?? (opts.configDir !== undefined ? path.join(opts.configDir, '(merge config)') : undefined);
  const resolve = (p: string, key: string) => (opts.configDir !== undefined ? confinedPath(opts.configDir, p, key, where!) : path.resolve(p));
  const base = cfg.base_model === undefined ? undefined : resolve(cfg.base_model, 'base_model');
  const models = cfg.models.map((m, k) => resolve(m.model, `models.${k}.model`));
  const output = resolve(cfg.output, 'output');
  // The writers' rule (lib/checkpoint/io.ts saveFormatFor: a trailing slash names a directory);
  // shard_size makes a .safetensors name a directory of shards.
  const named = saveFormatFor(/[/\\]$/.test(cfg.output) ? `${output}${path.sep}` : output);
  const format = named === 'safetensors' && cfg.shard_size !== undefined ? 'sharded' : named;
  try {
    assertOutputsNotInputs(
      [{ key: 'output', path: output, folder: format === 'sharded' }],
      [
        ...(base === undefined ? [] : [{ key: 'base_model', path: base }]),
        ...models.map((m, k) => ({ key: `models.${k}.model`, path: m })),
        ...(opts.configFile ? [{ key: 'the config file', path: path.resolve(opts.configFile) }] : []),
      ],
    );
  } catch (e) {
    throw where && e instanceof ArgumentError ? new ArgumentError(`${where}: ${e.message}`) : e;
  }
  return { base, models, output, format };
}

type Source = TensorReader | LoadedCheckpoint;

function layoutOf(s: Source): Map<string, TensorLayout> {
  if ('layout' in s) return s.layout();
  return new Map([...s.tensors].map(([n, t]) => [n, { dtype: t.dtype, shape: t.shape }]));
}

async function readTensor(s: Source, name: string): Promise<Tensor> {
  if ('readAsync' in s) return rawToTensor(await s.readAsync(name));
  return s.tensors.get(name)!;
}

export interface MergeReport {
  output: string;
  tensors: number;
  bytesWritten: number;
  ms: number;
  nonFinite: string[];
  /** Sharded outputs: the index file written beside the shards. */
  index?: string;
  /** Sharded outputs: the shard files, in order. */
  shards?: string[];
}

/**
 * One output tensor of a merge: its name, where each input comes from (an index into the readers
 * — the base first when there is one, then the models — and the tensor's name there), whether
 * inputs[0] is the base, and the options it is merged with. A plain config merges every tensor
 * of the same name across all files with one set of options; a mergekit config
 * (lib/mergekit.ts) renames layers (slices) and resolves parameters per tensor.
 */
export interface MergePlanItem {
  name: string;
  inputs: Array<{ reader: number; tensor: string }>;
  base: boolean;
  options: MergeOptions;
}

/** Options of {@link mergeCheckpoints}. */
export interface MergeCheckpointOptions {
  onTensor?: (name: string, i: number, n: number) => void;
  /** Bytes of output written so far, of the total (for a bar with bytes/s and ETA). */
  onBytes?: (done: number, total: number) => void;
  /**
   * The folder of the config file the config was read from: relative paths resolve against it
   * and must stay inside it. Without it they resolve against the working directory.
   */
  configDir?: string;
  /** The config file itself (named in errors; the output may not replace it). */
  configFile?: string;
  /** Extra safetensors metadata for the output (e.g. the tangent-edit checkpoint metadata, lib/meta.ts). */
  metadata?: Record<string, string>;
  /** Builds the output tensors from the readers' layouts (default: every tensor of the first reader, by name). */
  plan?: (layouts: Array<Map<string, TensorLayout>>) => MergePlanItem[];
  /**
   * Where the merge computes (default 'cpu'). 'cuda' / 'cuda:N' (an addon built against a CUDA
   * libtorch, a GPU visible): each tensor's inputs are read whole, merged on the device by the
   * methods' whole-tensor forms (docs/merging.md) and written back — host memory then holds the
   * largest tensor's inputs, where the CPU path streams in fixed chunks.
   */
  device?: Device;
}

/** The merge device, checked before any file is opened: a name libtorch knows, a GPU that is there. */
function checkMergeDevice(device: unknown): Device {
  if (device === undefined) return 'cpu';
  assertDevice(device, 'merge device');
  if (device !== 'cpu' && !native().info().cudaAvailable)
    throw new ArgumentError(`merge device ${quote(device)}: this addon's libtorch has no CUDA support or no GPU is visible (libtorch ${native().info().torchVersion}); merge on the CPU, or rebuild against a CUDA libtorch on a machine with a GPU`);
  return device;
}

/**
 * Streams a merge between checkpoint files: for each output tensor, read its inputs, merge
 * natively, write it out — the output is written under a temporary name and renamed at the end,
 * so a failed merge leaves no partial checkpoint. Safetensors inputs into safetensors outputs (one
 * file or shards) go file to file in native code, with no tensor bytes in JavaScript.
 */
export async function mergeCheckpoints(cfg: MergeConfig | import('./mergekit').MergekitConfig, opts: MergeCheckpointOptions = {}): Promise<MergeReport> {
  if ('merge_method' in cfg) {
    // A mergekit config, as-is (lib/mergekit.ts): its output from the config's `output`.
    const { parseMergekitConfig, runMergekit } = await import('./mergekit');
    return runMergekit(parseMergekitConfig(cfg, { source: opts.configFile }), opts);
  }
  const t0 = performance.now();
  const device = checkMergeDevice(opts.device);
  const paths = resolveMergePaths(cfg, opts);
  const base = paths.base === undefined ? undefined : await openCheckpoint(paths.base);
  const models = [] as Source[];
  try {
    for (const m of paths.models) models.push(await openCheckpoint(m));
    const hasBase = base !== undefined;
    const readers: Source[] = hasBase ? [base, ...models] : models;
    const files = hasBase ? [cfg.base_model!, ...cfg.models.map((m) => m.model)] : cfg.models.map((m) => m.model);
    const layouts = readers.map(layoutOf);
    let items: MergePlanItem[];
    if (opts.plan) {
      items = opts.plan(layouts);
      checkPlan(items, layouts, files);
    } else {
      // The same names and shapes; float dtypes may differ (converted to the compute dtype), integer ones may not.
      layouts.slice(1).forEach((l, k) => {
        assertSameLayout(layouts[0]!, l, { nameA: files[0]!, nameB: files[k + 1]!, ignoreDtype: true });
        for (const [n, a] of layouts[0]!) {
          const b = l.get(n)!;
          if (a.dtype !== b.dtype && !(isFloatRaw(a.dtype) && isFloatRaw(b.dtype)))
            throw new CheckpointError('ERR_DTYPE', `tensor ${quote(n)} is ${b.dtype}, while ${files[0]!} has it as ${a.dtype} (only floating-point dtypes may differ between inputs)`, { file: files[k + 1]! });
        }
      });
      const o = configOptions(cfg);
      items = [...layouts[0]!.keys()].map((n) => ({ name: n, inputs: readers.map((_, r) => ({ reader: r, tensor: n })), base: hasBase, options: o }));
    }
    const layoutOfItem = (it: MergePlanItem) => layouts[it.inputs[0]!.reader]!.get(it.inputs[0]!.tensor)!;
    const mixedDtypes = (it: MergePlanItem) => it.inputs.some((inp) => layouts[inp.reader]!.get(inp.tensor)!.dtype !== layoutOfItem(it).dtype);
    const outDtype = (it: MergePlanItem) => {
      const l = layoutOfItem(it);
      return it.options.outDtype && isFloatRaw(l.dtype) ? it.options.outDtype : l.dtype;
    };
    const totalBytes = items.reduce((s, it) => s + numelOf(layoutOfItem(it).shape) * DTYPE_BYTES[outDtype(it) as DType], 0);
    const nonFinite: string[] = [];
    let held: Tensor | null = null;
    let done = 0;
    let bytes = 0;
    const onNonFinite = (name: string) => {
      if (cfg.non_finite === 'error') throw new CheckpointError('ERR_NON_FINITE', 'the merged tensor holds NaN or Inf (non_finite: error)', { file: cfg.output, tensor: name });
      nonFinite.push(name);
      process.emitWarning(`${cfg.output}: tensor ${quote(name)}: the merged tensor holds NaN or Inf`);
    };
    const produce = async (it: MergePlanItem): Promise<RawTensor> => {
      const read = await Promise.all(it.inputs.map((i) => readTensor(readers[i.reader]!, i.tensor)));
      // Mixed float dtypes: every input in the compute dtype, the output in the first input's unless out_dtype says.
      const mixed = mixedDtypes(it);
      const target = mixed ? { dtype: it.options.compute ?? 'float32', device } : { device };
      const inputs = mixed || device !== 'cpu' ? await Promise.all(read.map((t) => t.to(target))) : read;
      if (mixed) it = { ...it, options: { ...it.options, outDtype: it.options.outDtype ?? layoutOfItem(it).dtype } };
      let merged = await mergeTensor(it.name, it.base ? inputs[0]! : null, it.base ? inputs.slice(1) : inputs, it.options);
      it.inputs.forEach((i, k) => 'readAsync' in readers[i.reader]! && read[k]!.dispose());
      if (inputs !== read) inputs.forEach((t) => t.dispose());  // our copies (cast, or on the device)
      if (device !== 'cpu') {
        const onDevice = merged;
        merged = await onDevice.to('cpu');
        onDevice.dispose();
      }
      held?.dispose();
      held = merged;
      const raw = tensorToRaw(merged);
      if (cfg.non_finite !== 'allow' && isFloatRaw(raw.dtype) && findNonFinite(raw).count > 0) onNonFinite(it.name);
      bytes += raw.data.byteLength;
      opts.onTensor?.(it.name, done++, items.length);
      opts.onBytes?.(bytes, totalBytes);
      return raw;
    };
    const metadata = {
      format: 'pt',
      tangent_merge: JSON.stringify({ method: cfg.method, parameters: cfg.parameters, ...(cfg.base_model === undefined ? {} : { base_model: cfg.base_model }), models: cfg.models, dtype: cfg.dtype }),
      ...opts.metadata,
    };
    const { output, format } = paths;
    const specs = items.map((it) => ({ name: it.name, dtype: outDtype(it), shape: [...layoutOfItem(it).shape] }));
    let written: { index?: string; shards?: string[] } = {};
    if ((format === 'safetensors' || format === 'sharded') && readers.every((r) => 'locate' in r && typeof r.locate === 'function')) {
      // File to file in native code: positioned reads from the descriptors the readers validated,
      // the merge, the NaN/Inf check and positioned writes into the output (each shard), with no
      // tensor bytes in JS. Calls cover ~64 MiB of output each, so progress is reported between them.
      const nativeFiles: NativeOpenFile[] = [];
      const fileIndex = new Map<number, number>();
      const indexOf = (loc: TensorLocation) => {
        let i = fileIndex.get(loc.fd);
        if (i === undefined) fileIndex.set(loc.fd, (i = nativeFiles.push({ fd: loc.fd, path: loc.file }) - 1));
        return i;
      };
      const nat = native();
      const specKeys = new Map<string, number>();
      const nativeSpecs: NativeMergeSpec[] = [];
      const specOf = (it: MergePlanItem) => {
        const key = JSON.stringify([it.options, it.inputs.length, it.base]);
        let i = specKeys.get(key);
        if (i === undefined) {
          specKeys.set(key, (i = nativeSpecs.length));
          nativeSpecs.push(spec({ ...it.options, weights: it.options.weights ?? Array(it.inputs.length - (it.base ? 1 : 0)).fill(1) }, 'float32', it.inputs.length - (it.base ? 1 : 0), it.base));
        }
        return i;
      };
      const itemSpecs = items.map(specOf);
      const fill = async (fd: number, offsets: number[], first: number, file: string) => {
        const group: NativeFileMergeItem[] = offsets.map((off, j) => {
          const i = first + j;
          const it = items[i]!;
          return {
            name: it.name,
            dtype: layoutOfItem(it).dtype,
            out: specs[i]!.dtype,
            shape: specs[i]!.shape,
            inputs: it.inputs.map((inp) => {
              const loc = (readers[inp.reader] as TensorReader).locate!(inp.tensor);
              return [indexOf(loc), loc.offset] as [number, number];
            }),
            ...(mixedDtypes(it) ? { dtypes: it.inputs.map((inp) => layouts[inp.reader]!.get(inp.tensor)!.dtype) } : {}),
            outOffset: off,
            base: it.base,
            spec: itemSpecs[i]!,
          };
        });
        for (let g = 0; g < group.length; ) {
          const chunk: NativeFileMergeItem[] = [];
          let chunkBytes = 0;
          while (g < group.length && (chunk.length === 0 || chunkBytes < 64 * 2 ** 20)) {
            chunk.push(group[g]!);
            chunkBytes += numelOf(group[g]!.shape) * DTYPE_BYTES[group[g]!.out as DType];
            g++;
          }
          const bad = await nat.mergeFiles(nativeFiles, { fd, path: file }, chunk, nativeSpecs, cfg.non_finite !== 'allow', device);
          for (const name of bad) onNonFinite(name);
          bytes += chunkBytes;
          for (const it of chunk) opts.onTensor?.(it.name, done++, items.length);
          opts.onBytes?.(bytes, totalBytes);
        }
      };
      if (format === 'safetensors') await writeSafetensorsFilled(output, specs, metadata, (fd, offsets) => fill(fd, offsets, 0, output));
      else {
        const r = await writeShardedFilled(output, specs, { maxShardBytes: cfg.shard_size, metadata }, fill);
        written = { index: r.indexFile, shards: r.shards };
      }
    } else if (format === 'torch') {
      const all: StateDict = new Map();
      for (const it of items) {
        await produce(it);
        all.set(it.name, held!);
        held = null;
      }
      await saveStateDict(output, all, { format: 'torch' });
    } else {
      const entries: Array<[string, AsyncLazyTensor]> = items.map((it, i) => [it.name, { dtype: specs[i]!.dtype, shape: specs[i]!.shape, load: async () => (await produce(it)).data }]);
      if (format === 'safetensors') await writeSafetensorsAsync(output, entries, metadata);
      else {
        const r = await writeShardedAsync(output, entries, { maxShardBytes: cfg.shard_size, metadata });
        written = { index: r.indexFile, shards: r.shards };
      }
    }
    (held as Tensor | null)?.dispose();
    return { output, tensors: items.length, bytesWritten: bytes, ms: performance.now() - t0, nonFinite, ...written };
  } finally {
    for (const s of base ? [base, ...models] : models) if ('close' in s) s.close();
  }
}

/** A plan's items name tensors the readers hold, each item's inputs agree in dtype and shape, and output names are unique. */
function checkPlan(items: MergePlanItem[], layouts: Array<Map<string, TensorLayout>>, files: string[]): void {
  const seen = new Set<string>();
  const checked = new Set<string>();
  for (const it of items) {
    // The options as the merge will take them (ArgumentError naming the tensor), before any write.
    const key = JSON.stringify([it.options, it.inputs.length, it.base]);
    if (!checked.has(key)) {
      checked.add(key);
      const models = it.inputs.length - (it.base ? 1 : 0);
      try {
        spec({ ...it.options, weights: it.options.weights ?? Array(models).fill(1) }, 'float32', models, it.base);
      } catch (e) {
        throw e instanceof ArgumentError ? new ArgumentError(`tensor ${quote(it.name)}: ${e.message}`) : e;
      }
    }
    if (seen.has(it.name)) throw new ArgumentError(`merge plan: output tensor ${quote(it.name)} is produced twice`);
    seen.add(it.name);
    let first: TensorLayout | undefined;
    for (const inp of it.inputs) {
      const l = layouts[inp.reader]?.get(inp.tensor);
      if (!l) throw new CheckpointError('ERR_KEY_MISMATCH', `has no tensor ${quote(inp.tensor)} (needed for the output's ${quote(it.name)})`, { file: files[inp.reader] });
      if (!first) first = l;
      // Float inputs of different dtypes are converted to the compute dtype (as mergekit casts them).
      else if ((l.dtype !== first.dtype && !(isFloatRaw(l.dtype) && isFloatRaw(first.dtype))) || l.shape.length !== first.shape.length || l.shape.some((d, i) => d !== first!.shape[i]))
        throw new CheckpointError(l.dtype !== first.dtype ? 'ERR_DTYPE' : 'ERR_SHAPE', `tensor ${quote(inp.tensor)} is ${l.dtype}[${l.shape.join(', ')}], while the other inputs of ${quote(it.name)} are ${first.dtype}[${first.shape.join(', ')}]`, { file: files[inp.reader] });
    }
  }
}

/** Reads a YAML/JSON merge config file as a document (either schema: tangent-edit's or mergekit's). */
export async function readMergeDocument(file: string): Promise<unknown> {
  const YAML = await import('yaml');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ArgumentError(`cannot read merge config ${file}: ${(err as Error).message}`);
  }
  try {
    return YAML.parse(text);
  } catch (err) {
    throw new ArgumentError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
}

/** Reads and validates a YAML/JSON merge config file in tangent-edit's schema (a mergekit config: lib/mergekit.ts's loadMergekitConfig). */
export async function loadMergeConfig(file: string): Promise<MergeConfig> {
  const doc = await readMergeDocument(file);
  if (typeof doc === 'object' && doc !== null && 'merge_method' in doc)
    throw new ArgumentError(`${file} is a mergekit config (it has merge_method): read it with loadMergekitConfig, or run it with tangent merge --config`);
  return parseMergeConfig(doc, file);
}

/**
 * Model merging: task arithmetic, TIES, DARE (linear and TIES), model breadcrumbs, SLERP,
 * NearSwap and Model Stock, on state
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
  type AsyncLazyTensor,
  type TensorLocation,
  type TensorLayout,
  type TensorReader,
} from './checkpoint/safetensors';
import { ArgumentError } from './errors';
import { assertOutputsNotInputs, confinedPath } from './util/fs';
import type { Params, StateDict } from './model';
import { Tensor, type DType } from './tensor';

export const MERGE_METHODS = ['task_arithmetic', 'ties', 'dare_linear', 'dare_ties', 'breadcrumbs', 'slerp', 'nearswap', 'model_stock'] as const;
export type MergeMethod = (typeof MERGE_METHODS)[number];

const floatDType = z.enum(['float32', 'float64', 'float16', 'bfloat16']);
const SIZE_EXPECTED = 'expected a positive whole number of bytes or a size such as 500MB, 2GB or 1GiB';
const SIZE_UNITS: Record<string, number> = { '': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };
/** A byte count: a positive integer, or a string with a unit. Every wrong value gets one message naming what is expected. */
const byteSize = z
  .union([z.number(), z.string()], { errorMap: (_issue, ctx) => ({ message: `${SIZE_EXPECTED}, got ${JSON.stringify(ctx.data) ?? String(ctx.data)}` }) })
  .transform((v, ctx) => {
    const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$/i.exec(v.trim()) : null;
    const n = typeof v === 'number' ? v : m ? Math.round(Number(m[1]) * SIZE_UNITS[(m[2] ?? '').toUpperCase()]!) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${SIZE_EXPECTED}, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return n;
  });

/** Method parameters; see docs/merging.md for what each means per method. */
export const MergeParametersSchema = z
  .object({
    lambda: z.number().finite().default(1),
    density: z.number().gt(0).lte(1).default(1),
    gamma: z.number().gte(0).lt(1).default(0),
    election: z.enum(['weighted', 'unweighted']).default('weighted'),
    seed: z.number().int().nonnegative().default(0),
    /** slerp: the interpolation factor in [0, 1] (0: the base); nearswap: the distance threshold (> 0). */
    t: z.number().finite().optional(),
  })
  .strict();

/** The methods that pick a point between the base and the models instead of adding task vectors. */
const INTERPOLATING: ReadonlySet<MergeMethod> = new Set(['slerp', 'nearswap', 'model_stock']);

/**
 * What is wrong with `method` given these parameters, weights and number of models (undefined if
 * nothing): each problem as [the key it is about, the message].
 */
export function methodProblems(method: MergeMethod, p: z.output<typeof MergeParametersSchema>, weights: readonly number[], models: number): Array<[string[], string]> {
  const out: Array<[string[], string]> = [];
  if ((method === 'ties' || method === 'dare_ties') && weights.some((w) => w <= 0)) out.push([['models'], `${method} needs positive weights (the disjoint mean divides by them)`]);
  if (method === 'breadcrumbs' && p.density + p.gamma > 1) out.push([['parameters', 'density'], 'breadcrumbs needs density + gamma <= 1']);
  if (method === 'slerp' || method === 'nearswap') {
    if (models !== 1) out.push([['models'], `${method} interpolates between base_model and exactly one model, got ${models}`]);
    if (p.t === undefined) out.push([['parameters', 't'], `${method} needs t (${method === 'slerp' ? 'the interpolation factor, 0 = base_model … 1 = the model' : 'the distance below which entries take the model\'s value'})`]);
    else if (method === 'slerp' && !(p.t >= 0 && p.t <= 1)) out.push([['parameters', 't'], `slerp needs t in [0, 1], got ${p.t}`]);
    else if (method === 'nearswap' && !(p.t > 0)) out.push([['parameters', 't'], `nearswap needs t > 0, got ${p.t}`]);
  } else if (p.t !== undefined) out.push([['parameters', 't'], `t applies to slerp and nearswap only, not ${method}`]);
  if (method === 'model_stock' && models < 2) out.push([['models'], `model_stock needs at least two models beside base_model, got ${models}`]);
  if (INTERPOLATING.has(method)) {
    for (const [k, d] of [['lambda', 1], ['density', 1], ['gamma', 0]] as const)
      if (p[k] !== d) out.push([['parameters', k], `${k} does not apply to ${method}`]);
    if (weights.some((w) => w !== 1)) out.push([['models'], `${method} takes no weights (${method === 'model_stock' ? 'the models are averaged equally' : 't says how far to go'})`]);
  }
  return out;
}

export const MergeConfigSchema = z
  .object({
    base_model: z.string().min(1),
    models: z
      .array(z.object({ model: z.string().min(1), weight: z.number().finite().default(1) }).strict())
      .min(1),
    method: z.enum(MERGE_METHODS).default('task_arithmetic'),
    parameters: MergeParametersSchema.default({}),
    dtype: z.enum(['float32', 'float64']).default('float32'),
    out_dtype: floatDType.optional(),
    output: z.string().min(1),
    shard_size: byteSize.optional(),
    non_finite: z.enum(['error', 'warn', 'allow']).default('error'),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const [p, message] of methodProblems(c.method, c.parameters, c.models.map((m) => m.weight), c.models.length))
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: p, message });
  });

export type MergeConfigInput = z.input<typeof MergeConfigSchema>;
export type MergeConfig = z.output<typeof MergeConfigSchema>;

/** Validates a merge config (before any file is read); errors name the field. */
export function parseMergeConfig(input: unknown, source = 'merge config'): MergeConfig {
  const r = MergeConfigSchema.safeParse(input);
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
  density?: number;
  gamma?: number;
  election?: 'weighted' | 'unweighted';
  seed?: number;
  /** slerp: interpolation factor in [0, 1]; nearswap: distance threshold (> 0). */
  t?: number;
  compute?: 'float32' | 'float64';
  outDtype?: DType;
}

function spec(o: MergeOptions, out: DType, models: number): NativeMergeSpec {
  const method = o.method ?? 'task_arithmetic';
  if (!(MERGE_METHODS as readonly string[]).includes(method)) throw new ArgumentError(`unknown merge method ${JSON.stringify(method)} (expected ${MERGE_METHODS.join(', ')})`);
  const r = MergeParametersSchema.safeParse({ lambda: o.lambda, density: o.density, gamma: o.gamma, election: o.election, seed: o.seed, t: o.t });
  if (!r.success) throw new ArgumentError(`merge options are invalid: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const problems = methodProblems(method, r.data, o.weights ?? Array(models).fill(1), models);
  if (problems.length) throw new ArgumentError(`merge options are invalid: ${problems.map(([k, m]) => `${k[k.length - 1]}: ${m}`).join('; ')}`);
  const { t, ...p } = r.data;
  return { method, ...p, t: t ?? 0.5, compute: o.compute ?? 'float32', out };
}

/** Merge one named tensor: θ0 + λ·merge(w_k, θ_k − θ0), or the point slerp, nearswap or model_stock pick (docs/merging.md). Integer tensors come back as the base's. */
export async function mergeTensor(name: string, base: Tensor, finetuned: readonly Tensor[], opts: MergeOptions = {}): Promise<Tensor> {
  const weights = opts.weights ?? finetuned.map(() => 1);
  if (weights.length !== finetuned.length) throw new ArgumentError(`${finetuned.length} models but ${weights.length} weights`);
  weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w)) throw new ArgumentError(`weights[${i}] must be a finite number, got ${String(w)}`);
  });
  const out = opts.outDtype && isFloatRaw(base.dtype) ? opts.outDtype : base.dtype;
  return Tensor.wrap(await native().mergeTensor(name, base.native, finetuned.map((t) => t.native), [...weights], spec(opts, out, finetuned.length)));
}

/** Merge whole state dicts in memory (names and shapes must match exactly). */
export async function mergeStateDicts(base: Params, finetuned: readonly Params[], opts: MergeOptions = {}): Promise<StateDict> {
  const b = base instanceof Map ? (base as Map<string, Tensor>) : new Map(Object.entries(base as Record<string, Tensor>));
  const fts = finetuned.map((f) => (f instanceof Map ? (f as Map<string, Tensor>) : new Map(Object.entries(f as Record<string, Tensor>))));
  fts.forEach((f, k) => assertSameLayout(b, f, { nameA: 'base', nameB: `model ${k}` }));
  const out: StateDict = new Map();
  for (const [n, t] of b) out.set(n, await mergeTensor(n, t, fts.map((f) => f.get(n)!), opts));
  return out;
}

/** The files of a merge, resolved and checked (see {@link resolveMergePaths}). */
export interface MergePaths {
  base: string;
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
  const base = resolve(cfg.base_model, 'base_model');
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
        { key: 'base_model', path: base },
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
}

/**
 * Streams a merge between checkpoint files: for each tensor of the base, read it and the K
 * models' tensor, merge natively, write it out — the output is written under a temporary name
 * and renamed at the end, so a failed merge leaves no partial checkpoint.
 */
export async function mergeCheckpoints(
  cfg: MergeConfig,
  opts: {
    onTensor?: (name: string, i: number, n: number) => void;
    /**
     * The folder of the config file the config was read from: relative paths resolve against it
     * and must stay inside it. Without it they resolve against the working directory.
     */
    configDir?: string;
    /** The config file itself (named in errors; the output may not replace it). */
    configFile?: string;
    /** Extra safetensors metadata for the output (e.g. the tangent-edit checkpoint metadata, lib/meta.ts). */
    metadata?: Record<string, string>;
  } = {},
): Promise<MergeReport> {
  const t0 = performance.now();
  const paths = resolveMergePaths(cfg, opts);
  const base = await openCheckpoint(paths.base);
  const models = [] as Source[];
  try {
    for (const m of paths.models) models.push(await openCheckpoint(m));
    const baseLayout = layoutOf(base);
    models.forEach((m, k) => assertSameLayout(baseLayout, layoutOf(m), { nameA: cfg.base_model, nameB: cfg.models[k]!.model }));
    const names = [...baseLayout.keys()];
    const weights = cfg.models.map((m) => m.weight);
    const o: MergeOptions = { method: cfg.method, weights, ...cfg.parameters, compute: cfg.dtype, outDtype: cfg.out_dtype };
    const nonFinite: string[] = [];
    let held: Tensor | null = null;
    let done = 0;
    let bytes = 0;
    const produce = async (name: string): Promise<RawTensor> => {
      const inputs = [await readTensor(base, name), ...(await Promise.all(models.map((m) => readTensor(m, name))))];
      const merged = await mergeTensor(name, inputs[0]!, inputs.slice(1), o);
      if ('readAsync' in base) inputs[0]!.dispose();
      models.forEach((m, k) => 'readAsync' in m && inputs[k + 1]!.dispose());
      held?.dispose();
      held = merged;
      const raw = tensorToRaw(merged);
      if (cfg.non_finite !== 'allow' && isFloatRaw(raw.dtype) && findNonFinite(raw).count > 0) {
        if (cfg.non_finite === 'error')
          throw new CheckpointError('ERR_NON_FINITE', 'the merged tensor holds NaN or Inf (non_finite: error)', { file: cfg.output, tensor: name });
        nonFinite.push(name);
        process.emitWarning(`${cfg.output}: tensor ${quote(name)}: the merged tensor holds NaN or Inf`);
      }
      bytes += raw.data.byteLength;
      opts.onTensor?.(name, done++, names.length);
      return raw;
    };
    const metadata = {
      format: 'pt',
      tangent_merge: JSON.stringify({ method: cfg.method, parameters: cfg.parameters, base_model: cfg.base_model, models: cfg.models, dtype: cfg.dtype }),
      ...opts.metadata,
    };
    const { output, format } = paths;
    const readers = [base, ...models];
    if (format === 'safetensors' && readers.every((r) => 'locate' in r && typeof r.locate === 'function')) {
      // File to file in native code: positioned reads from the descriptors the readers validated,
      // the merge, the NaN/Inf check and positioned writes into the output, with no tensor bytes
      // in JS. Calls cover ~64 MiB of output each, so progress is reported between them.
      const specs = names.map((n) => {
        const l = baseLayout.get(n)!;
        return { name: n, dtype: cfg.out_dtype && isFloatRaw(l.dtype) ? cfg.out_dtype : l.dtype, shape: [...l.shape] };
      });
      const files: NativeOpenFile[] = [];
      const fileIndex = new Map<number, number>();
      const indexOf = (loc: TensorLocation) => {
        let i = fileIndex.get(loc.fd);
        if (i === undefined) fileIndex.set(loc.fd, (i = files.push({ fd: loc.fd, path: loc.file }) - 1));
        return i;
      };
      const nat = native();
      const sp = spec(o, 'float32', models.length);
      await writeSafetensorsFilled(output, specs, metadata, async (fd, offsets) => {
        const items: NativeFileMergeItem[] = names.map((n, i) => ({
          name: n,
          dtype: baseLayout.get(n)!.dtype,
          out: specs[i]!.dtype,
          shape: specs[i]!.shape,
          inputs: readers.map((r) => {
            const loc = (r as TensorReader).locate!(n);
            return [indexOf(loc), loc.offset] as [number, number];
          }),
          outOffset: offsets[i]!,
        }));
        for (let i = 0; i < items.length; ) {
          const group: NativeFileMergeItem[] = [];
          let groupBytes = 0;
          while (i < items.length && (group.length === 0 || groupBytes < 64 * 2 ** 20)) {
            group.push(items[i]!);
            groupBytes += (numelOf(items[i]!.shape) * DTYPE_BYTES[items[i]!.out as DType]);
            i++;
          }
          const bad = await nat.mergeFiles(files, { fd, path: output }, group, [...weights], sp, cfg.non_finite !== 'allow');
          for (const name of bad) {
            if (cfg.non_finite === 'error')
              throw new CheckpointError('ERR_NON_FINITE', 'the merged tensor holds NaN or Inf (non_finite: error)', { file: cfg.output, tensor: name });
            nonFinite.push(name);
            process.emitWarning(`${cfg.output}: tensor ${quote(name)}: the merged tensor holds NaN or Inf`);
          }
          bytes += groupBytes;
          for (const it of group) opts.onTensor?.(it.name, done++, names.length);
        }
      });
    } else if (format === 'torch') {
      const all: StateDict = new Map();
      for (const n of names) {
        await produce(n);
        all.set(n, held!);
        held = null;
      }
      await saveStateDict(output, all, { format: 'torch' });
    } else {
      const entries: Array<[string, AsyncLazyTensor]> = names.map((n) => {
        const l = baseLayout.get(n)!;
        const dtype = cfg.out_dtype && isFloatRaw(l.dtype) ? cfg.out_dtype : l.dtype;
        return [n, { dtype, shape: [...l.shape], load: async () => (await produce(n)).data }];
      });
      if (format === 'safetensors') await writeSafetensorsAsync(output, entries, metadata);
      else await writeShardedAsync(output, entries, { maxShardBytes: cfg.shard_size, metadata });
    }
    (held as Tensor | null)?.dispose();
    return { output, tensors: names.length, bytesWritten: bytes, ms: performance.now() - t0, nonFinite };
  } finally {
    for (const s of [base, ...models]) if ('close' in s) s.close();
  }
}

/** Reads and validates a YAML/JSON merge config file. */
export async function loadMergeConfig(file: string): Promise<MergeConfig> {
  const YAML = await import('yaml');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ArgumentError(`cannot read merge config ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new ArgumentError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  return parseMergeConfig(doc, file);
}

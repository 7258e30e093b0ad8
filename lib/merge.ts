/**
 * Model merging: task arithmetic, TIES, DARE (linear and TIES) and model breadcrumbs, on state
 * dicts in memory or streamed tensor by tensor between checkpoint files (peak memory about K+2
 * copies of the largest tensor, not K models). Exact semantics: docs/merging.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { native, type NativeFileMergeItem, type NativeMergeSpec, type NativeOpenFile } from './binding';
import { CheckpointError } from './checkpoint/errors';
import { DTYPE_BYTES, findNonFinite, isFloatDType as isFloatRaw, numel as numelOf, type RawTensor } from './checkpoint/dtype';
import { openCheckpoint, rawToTensor, saveStateDict, tensorToRaw, type LoadedCheckpoint } from './checkpoint/io';
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
import type { Params, StateDict } from './model';
import { Tensor, type DType } from './tensor';

export const MERGE_METHODS = ['task_arithmetic', 'ties', 'dare_linear', 'dare_ties', 'breadcrumbs'] as const;
export type MergeMethod = (typeof MERGE_METHODS)[number];

const floatDType = z.enum(['float32', 'float64', 'float16', 'bfloat16']);
const byteSize = z.union([
  z.number().int().positive(),
  z
    .string()
    .regex(/^\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)?$/i, 'a size such as 500MB, 2GB or a number of bytes')
    .transform((s) => {
      const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(s.trim())!;
      const unit = (m[2] ?? '').toUpperCase();
      const mult: Record<string, number> = { '': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };
      return Math.round(Number(m[1]) * mult[unit]!);
    }),
]);

/** Method parameters; see docs/merging.md for what each means per method. */
export const MergeParametersSchema = z
  .object({
    lambda: z.number().finite().default(1),
    density: z.number().gt(0).lte(1).default(1),
    gamma: z.number().gte(0).lt(1).default(0),
    election: z.enum(['weighted', 'unweighted']).default('weighted'),
    seed: z.number().int().nonnegative().default(0),
  })
  .strict();

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
    if ((c.method === 'ties' || c.method === 'dare_ties') && c.models.some((m) => m.weight <= 0))
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['models'], message: `${c.method} needs positive weights (the disjoint mean divides by them)` });
    if (c.method === 'breadcrumbs' && c.parameters.density + c.parameters.gamma > 1)
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['parameters', 'density'], message: 'breadcrumbs needs density + gamma <= 1' });
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
  compute?: 'float32' | 'float64';
  outDtype?: DType;
}

function spec(o: MergeOptions, out: DType): NativeMergeSpec {
  const p = MergeParametersSchema.parse({ lambda: o.lambda, density: o.density, gamma: o.gamma, election: o.election, seed: o.seed });
  return { method: o.method ?? 'task_arithmetic', ...p, compute: o.compute ?? 'float32', out };
}

/** Merge one named tensor: θ0 + λ·merge(w_k, θ_k − θ0). Integer tensors come back as the base's. */
export async function mergeTensor(name: string, base: Tensor, finetuned: readonly Tensor[], opts: MergeOptions = {}): Promise<Tensor> {
  const weights = opts.weights ?? finetuned.map(() => 1);
  if (weights.length !== finetuned.length) throw new ArgumentError(`${finetuned.length} models but ${weights.length} weights`);
  weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w)) throw new ArgumentError(`weights[${i}] must be a finite number, got ${String(w)}`);
  });
  const out = opts.outDtype && isFloatRaw(base.dtype) ? opts.outDtype : base.dtype;
  return Tensor.wrap(await native().mergeTensor(name, base.native, finetuned.map((t) => t.native), [...weights], spec(opts, out)));
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
    configDir?: string;
    /** Extra safetensors metadata for the output (e.g. the tangent-edit checkpoint metadata, lib/meta.ts). */
    metadata?: Record<string, string>;
  } = {},
): Promise<MergeReport> {
  const t0 = performance.now();
  const resolve = (p: string) => path.resolve(opts.configDir ?? '.', p);
  const base = await openCheckpoint(resolve(cfg.base_model));
  const models = [] as Source[];
  try {
    for (const m of cfg.models) models.push(await openCheckpoint(resolve(m.model)));
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
    const output = resolve(cfg.output);
    const readers = [base, ...models];
    if (output.endsWith('.safetensors') && cfg.shard_size === undefined && readers.every((r) => 'locate' in r && typeof r.locate === 'function')) {
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
      const sp = spec(o, 'float32');
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
    } else if (/\.(pt|pth|bin)$/.test(output)) {
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
      if (output.endsWith('.safetensors') && cfg.shard_size === undefined) await writeSafetensorsAsync(output, entries, metadata);
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

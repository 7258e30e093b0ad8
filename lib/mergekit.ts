/**
 * mergekit's YAML, as its users write it: `merge_method`, `base_model`, `models[].parameters`,
 * global `parameters`, values given as lists interpolated over layers or as `filter`ed lists,
 * `slices` with `layer_range`s (frankenmerges), `dtype` / `out_dtype`, `tokenizer_source`.
 * Translated into a merge config (lib/merge.ts) and a plan of output tensors, each with its
 * inputs and its own options, run by {@link mergeCheckpoints}. Every key mergekit has that is not
 * supported here is refused by name; none is ignored. Semantics and differences: docs/merging.md
 * ("mergekit configs").
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { ArgumentError } from './errors';
import { quote } from './checkpoint/escape';
import type { TensorLayout } from './checkpoint/safetensors';
import { mergeCheckpoints, parseMergeConfig, type MergeCheckpointOptions, type MergeConfig, type MergeOptions, type MergePlanItem, type MergeReport } from './merge';
import { MERGE_METHODS, METHODS, type MergeMethod } from './merge-methods';

/** mergekit methods that exist there and not here (refused with this name). */
const MERGEKIT_ONLY = ['arcee_fusion', 'task_adapter', 'lrp', 'core_space', 'cabs', 'pcb', 'zipit'];
/** mergekit's own defaults where they differ from tangent-edit's (lib/merge-methods.ts). */
const MERGEKIT_DEFAULTS: Partial<Record<MergeMethod, Record<string, number | boolean>>> = {
  dare_ties: { normalize: false },
  breadcrumbs: { gamma: 0.01 },
  breadcrumbs_ties: { gamma: 0.01 },
};
/** mergekit parameters with no numerical effect (accepted, recorded, nothing else). */
const NO_EFFECT = new Set(['int8_mask']);

const scalar = z.union([z.number(), z.boolean(), z.string()]);
const gradient = z.array(z.number()).min(1);
const filtered = z.array(z.object({ filter: z.string().optional(), value: z.union([scalar, gradient]) }).strict()).min(1);
const paramValue = z.union([scalar, gradient, filtered]);
const params = z.record(paramValue);
const modelRef = z.string({ invalid_type_error: 'expected a local path (a model given as an object — LoRA, override_architecture — is not supported)' }).min(1);

const MergekitSchema = z
  .object({
    merge_method: z.string(),
    base_model: modelRef.optional(),
    models: z.array(z.object({ model: modelRef, parameters: params.optional() }).strict()).min(1).optional(),
    slices: z
      .array(
        z
          .object({
            sources: z.array(z.object({ model: modelRef, layer_range: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()]), parameters: params.optional() }).strict()).min(1),
            parameters: params.optional(),
          })
          .strict(),
      )
      .min(1)
      .optional(),
    parameters: params.optional(),
    dtype: z.enum(['float32', 'float16', 'bfloat16', 'float64', 'fp32', 'fp16', 'bf16']).optional(),
    out_dtype: z.enum(['float32', 'float16', 'bfloat16', 'float64', 'fp32', 'fp16', 'bf16']).optional(),
    tokenizer_source: z.string().optional(),
    // tangent-edit's own additions (mergekit takes the output path on its command line).
    output: z.string().min(1).optional(),
    shard_size: z.union([z.number(), z.string()]).optional(),
  })
  .strict();
export type MergekitConfig = z.infer<typeof MergekitSchema>;

/** Keys mergekit has that tangent-edit does not support, with why (refused by name). */
const UNSUPPORTED_KEYS: Record<string, string> = {
  tokenizer: 'building a tokenizer (added tokens, embedding permutation) is not supported; tokenizer_source: base copies the base model\'s tokenizer',
  chat_template: 'chat templates are not written; copy one into the output\'s tokenizer_config.json',
  modules: 'per-module merges are not supported',
  name: 'multi-stage merges are not supported: run one config per stage',
  merge_method_sequence: 'multi-stage merges are not supported',
};

/** Whether `doc` is a mergekit config (it has `merge_method`) rather than tangent-edit's own. */
export function isMergekitConfig(doc: unknown): doc is Record<string, unknown> {
  return typeof doc === 'object' && doc !== null && !Array.isArray(doc) && 'merge_method' in doc;
}

const DTYPE: Record<string, 'float32' | 'float16' | 'bfloat16' | 'float64'> = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16', float32: 'float32', float16: 'float16', bfloat16: 'bfloat16', float64: 'float64' };

/** A validated mergekit config, ready to plan against the models' layouts. */
export interface MergekitPlan {
  /** The merge config the files are opened and checked with (method, base, models, output). */
  config: MergeConfig;
  /** The output tensors, from the readers' layouts (the base first when there is one). */
  plan: NonNullable<MergeCheckpointOptions['plan']>;
  /** The model whose tokenizer files are copied into a folder output, when tokenizer_source asks for one. */
  tokenizerFrom?: string;
  /** The model whose config.json is copied into a folder output (the base, else the first model). */
  configFrom?: string;
  /** The config's out_dtype, else its dtype (written into the output's config.json as its torch dtype, as mergekit). */
  outDtype?: string;
}

// A transformer layer's tensors: <prefix>.<index>.<rest>, with the prefixes Hugging Face models use.
const LAYER = /^(.*?(?:^|\.)(?:layers|h|blocks|layer|block))\.(\d+)\.(.+)$/;

function layerOf(name: string): { prefix: string; index: number; rest: string } | null {
  const m = LAYER.exec(name);
  return m ? { prefix: m[1]!, index: Number(m[2]), rest: m[3]! } : null;
}

/** A parameter's value for one tensor at layer position t (mergekit's rules: gradients interpolated at t; the first filter that is a substring of the name). */
function valueAt(v: z.infer<typeof paramValue>, name: string, t: number, where: string): number | boolean | string {
  if (Array.isArray(v) && v.length > 0 && typeof v[0] === 'object') {
    for (const e of v as z.infer<typeof filtered>) if (e.filter === undefined || e.filter === '*' || name.includes(e.filter)) return valueAt(e.value, name, t, where);
    throw new ArgumentError(`${where}: no filter matches tensor ${quote(name)} (add an entry without filter as the default)`);
  }
  if (Array.isArray(v)) {
    const g = v as number[];
    if (g.length === 1) return g[0]!;
    const s = t * (g.length - 1);
    const i0 = Math.floor(s);
    const i1 = Math.min(g.length - 1, i0 + 1);
    const f = s - i0;
    return (1 - f) * g[i0]! + f * g[i1]!;
  }
  return v as number | boolean | string;
}

interface Source {
  model: string;
  range?: [number, number];
  parameters?: Record<string, z.infer<typeof paramValue>>;
}
interface Slice {
  sources: Source[];
  parameters?: Record<string, z.infer<typeof paramValue>>;
}

/**
 * Validates a mergekit config and translates it. `output` (the merged model: a folder for shards
 * with model.safetensors.index.json, or one .safetensors file) comes from the caller (mergekit
 * takes it on its command line) or from the config's `output`.
 */
export function parseMergekitConfig(doc: unknown, opts: { output?: string; source?: string } = {}): MergekitPlan {
  const source = opts.source ?? 'mergekit config';
  const bad = (msg: string): never => {
    throw new ArgumentError(`${source} is invalid: ${msg}`);
  };
  if (isMergekitConfig(doc)) for (const [k, why] of Object.entries(UNSUPPORTED_KEYS)) if (k in doc) bad(`${k}: not supported (${why})`);
  const r = MergekitSchema.safeParse(doc);
  if (!r.success) bad(r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; '));
  const c = r.data!;
  if (MERGEKIT_ONLY.includes(c.merge_method)) bad(`merge_method: ${c.merge_method} is a mergekit method tangent-edit does not implement (supported: ${MERGE_METHODS.join(', ')})`);
  if (!(MERGE_METHODS as readonly string[]).includes(c.merge_method)) bad(`merge_method: unknown method ${JSON.stringify(c.merge_method)} (supported: ${MERGE_METHODS.join(', ')})`);
  const method = c.merge_method as MergeMethod;
  const def = METHODS[method];
  if (!c.models === !c.slices) bad(c.models ? 'give models or slices, not both' : 'models or slices is required');
  const output = opts.output ?? c.output;
  if (!output) bad('output: where to write the merge is missing (tangent merge --config mergekit.yml --output merged/, or output: in the config)');
  if (c.tokenizer_source !== undefined && c.tokenizer_source !== 'base' && !(c.models ?? []).some((m) => m.model === c.tokenizer_source) && !(c.slices ?? []).some((s) => s.sources.some((x) => x.model === c.tokenizer_source)))
    bad(`tokenizer_source: ${JSON.stringify(c.tokenizer_source)} is not supported (base, or the path of one of the models: their tokenizer files are copied; union needs a merged vocabulary)`);
  if (c.tokenizer_source === 'base' && !c.base_model) bad('tokenizer_source: base needs base_model');
  for (const k of Object.keys(c.parameters ?? {})) if (k === 'filter_wise' && c.parameters![k] === true) bad('parameters.filter_wise: model_stock per output row is not supported');

  // The slices, as mergekit's normalize_config makes them from `models:` (the base appended when
  // not listed); layer ranges filled in from the layouts at plan time.
  const base = c.base_model;
  const slices: Slice[] = c.slices
    ? c.slices.map((s) => ({ sources: s.sources.map((x) => ({ model: x.model, range: x.layer_range, parameters: x.parameters })), parameters: s.parameters }))
    : [{ sources: [...c.models!.map((m) => ({ model: m.model, parameters: m.parameters })), ...(base && !c.models!.some((m) => m.model === base) ? [{ model: base }] : [])] }];
  // The files: the base (for the methods that take one) and every other model referenced, once.
  const usesBase = def.base !== 'none' && base !== undefined;
  const others: string[] = [];
  for (const s of slices) for (const x of s.sources) if (!(usesBase && x.model === base) && !others.includes(x.model)) others.push(x.model);
  if (def.base === 'required' && !base) bad(`base_model: ${method} needs one`);
  const dtype = c.dtype ? DTYPE[c.dtype]! : undefined;
  const outDtype = c.out_dtype ? DTYPE[c.out_dtype]! : dtype;
  const config = parseMergeConfig(
    {
      ...(usesBase ? { base_model: base } : {}),
      models: others.map((m) => ({ model: m })),
      method,
      dtype: dtype === 'float64' ? 'float64' : 'float32',
      ...(outDtype ? { out_dtype: outDtype } : {}),
      output,
      ...(c.shard_size !== undefined ? { shard_size: c.shard_size } : {}),
    },
    source,
    { perTensor: true },
  );
  const readerOf = (model: string) => (usesBase ? (model === base ? 0 : 1 + others.indexOf(model)) : others.indexOf(model));

  const optionsFor = (sl: Slice, sources: Source[], tensorOf: (s: Source) => string, outName: string, t: number): { options: MergeOptions; base: boolean; order: Source[] } => {
    // mergekit's cascade: the source's parameters, the slice's, the top level's.
    const lookup = (k: string, s?: Source) => {
      for (const p of [s?.parameters, sl.parameters, c.parameters]) if (p && p[k] !== undefined) return valueAt(p[k]!, s ? tensorOf(s) : outName, t, `${source}: ${k}`);
      return undefined;
    };
    const baseSource = usesBase ? sources.find((s) => s.model === base) : undefined;
    if (def.base === 'required' && !baseSource) bad(`tensor ${quote(outName)}: ${method} needs base_model among the slice's sources`);
    const modelsIn = sources.filter((s) => s !== baseSource);
    const o: Record<string, unknown> = { method, compute: config.dtype, ...(outDtype ? { outDtype } : {}) };
    const globals = new Set(Object.keys(def.global));
    const known = new Set([...globals, ...Object.keys(def.perModel), ...(def.weights ? ['weight'] : []), ...NO_EFFECT]);
    for (const p of [c.parameters, sl.parameters, ...sources.map((s) => s.parameters)])
      for (const k of Object.keys(p ?? {}))
        if (!known.has(k)) bad(`parameters.${k}: ${method} takes no parameter ${k}${k === 'weight' ? ` (${def.noWeights})` : ''} (it takes ${[...known].filter((x) => !NO_EFFECT.has(x)).join(', ') || 'none'})`);
    const OPT: Record<string, string> = { select_topk: 'selectTopk', max_iter: 'maxIter', normalize_weights: 'normalizeWeights', nuslerp_flatten: 'flatten', nuslerp_row_wise: 'rowWise' };
    const defaults = MERGEKIT_DEFAULTS[method] ?? {};
    for (const k of globals) {
      const v = lookup(k) ?? defaults[k];
      if (v !== undefined) o[OPT[k] ?? k] = v;
    }
    // passthrough's scale is per model in mergekit (one model here).
    if (method === 'passthrough') {
      const v = lookup('scale', modelsIn[0]);
      if (v !== undefined) o.scale = v;
    }
    for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
    if (def.weights) {
      o.weights = modelsIn.map((s) => {
        const w = lookup('weight', s);
        if (w === undefined) bad(`weight: ${method} needs a weight for ${s.model} (tensor ${quote(tensorOf(s))})`);
        return w;
      });
    }
    for (const k of Object.keys(def.perModel) as Array<'density' | 'gamma' | 'epsilon'>) {
      const vals = modelsIn.map((s) => lookup(k, s) ?? defaults[k]);
      if (vals.some((v) => v !== undefined)) o[k] = vals.map((v) => v ?? def.perModel[k]);
    }
    return { options: o as MergeOptions, base: baseSource !== undefined, order: baseSource ? [baseSource, ...modelsIn] : modelsIn };
  };

  const plan = (layouts: Array<Map<string, TensorLayout>>): MergePlanItem[] => {
    const layoutOfModel = (m: string) => layouts[readerOf(m)]!;
    const layers = (m: string) => {
      let n = 0;
      for (const name of layoutOfModel(m).keys()) {
        const l = layerOf(name);
        if (l) n = Math.max(n, l.index + 1);
      }
      return n;
    };
    const items: MergePlanItem[] = [];
    const item = (sl: Slice, sources: Source[], tensorOf: (s: Source) => string, outName: string, t: number) => {
      const { options, base: hasBase, order } = optionsFor(sl, sources, tensorOf, outName, t);
      items.push({ name: outName, inputs: order.map((s) => ({ reader: readerOf(s.model), tensor: tensorOf(s) })), base: hasBase, options });
    };
    // Layer ranges: given per source, or the whole model.
    const sl = slices.map((s) => ({ ...s, sources: s.sources.map((x) => ({ ...x, range: x.range ?? ([0, layers(x.model)] as [number, number]) })) }));
    for (const [i, s] of sl.entries()) {
      const lens = s.sources.map((x) => x.range[1] - x.range[0]);
      if (lens.some((n) => n !== lens[0])) bad(`slices.${i}: every source must span the same number of layers, got ${lens.join(', ')}`);
      for (const [j, x] of s.sources.entries()) {
        const n = layers(x.model);
        // A model without numbered layers (`models:` over a checkpoint that is not a layer stack): every tensor is merged by name.
        if (n === 0 && slices[i]!.sources[j]!.range === undefined) continue;
        if (x.range[0] >= x.range[1] || x.range[1] > n) bad(`slices.${i}: layer_range [${x.range.join(', ')}] of ${x.model} is outside its ${n} layers`);
      }
    }
    // Tensors outside the layers: embeddings before them (from the first slice's sources, t = 0),
    // the rest after them (the last slice's, t = 1), as mergekit's pre- and post-weights.
    const refModel = sl[0]!.sources[0]!.model;
    const outer = [...layoutOfModel(refModel).keys()].filter((n) => !layerOf(n));
    const isPre = (n: string) => /embed|wte|wpe/.test(n);
    for (const n of outer.filter(isPre)) item(sl[0]!, sl[0]!.sources, () => n, n, 0);
    let out = 0;
    const prefix = [...layoutOfModel(refModel).keys()].map(layerOf).find((l) => l)?.prefix;
    for (const s of sl) {
      const count = s.sources[0]!.range[1] - s.sources[0]!.range[0];
      for (let j = 0; j < count; j++, out++) {
        const t = count > 1 ? j / (count - 1) : 1;
        const first = s.sources[0]!;
        const src = first.range[0] + j;
        const names = [...layoutOfModel(first.model).keys()].filter((n) => layerOf(n)?.index === src);
        for (const n of names) {
          const l = layerOf(n)!;
          item(s, s.sources, (x) => `${l.prefix}.${x.range![0] + j}.${l.rest}`, `${prefix ?? l.prefix}.${out}.${l.rest}`, t);
        }
      }
    }
    const last = sl[sl.length - 1]!;
    for (const n of outer.filter((n) => !isPre(n))) item(last, last.sources, () => n, n, 1);
    return items;
  };

  const tokenizerModel = c.tokenizer_source === undefined ? undefined : c.tokenizer_source === 'base' ? base : c.tokenizer_source;
  return { config, plan, tokenizerFrom: tokenizerModel, configFrom: base ?? others[0]!, outDtype };
}

/** The tokenizer files a Hugging Face model folder may hold. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'vocab.json', 'merges.txt', 'added_tokens.json', 'generation_config.json'];

/** The config.json keys that hold a model's layer count (Llama/Mistral/Qwen, GPT-2, T5-style). */
const LAYER_COUNT_KEYS = ['num_hidden_layers', 'n_layer', 'num_layers'];

/**
 * Runs a mergekit config: the merge (file to file, sharded when the output is a folder), then, for
 * a folder output, the base's (else the first model's) config.json — its layer count set to the
 * merge's where slices change it (a frankenmerge) and its torch dtype to out_dtype/dtype, as
 * mergekit does — and, with tokenizer_source,
 * the tokenizer files copied beside the shards.
 */
export async function runMergekit(p: MergekitPlan, opts: Omit<MergeCheckpointOptions, 'plan'> = {}): Promise<MergeReport & { copied: string[] }> {
  let planned: MergePlanItem[] = [];
  const report = await mergeCheckpoints(p.config, { ...opts, plan: (layouts) => (planned = p.plan(layouts)) });
  const layers = planned.reduce((n, it) => Math.max(n, (layerOf(it.name)?.index ?? -1) + 1), 0);
  const copied: string[] = [];
  if (report.index) {
    const outDir = path.dirname(report.index);
    // A model's folder: the model path itself, or the folder of a single-file model.
    const folder = (m: string) => {
      const p = opts.configDir !== undefined && !path.isAbsolute(m) ? path.join(opts.configDir, m) : path.resolve(m);
      return fs.existsSync(p) && fs.statSync(p).isDirectory() ? p : path.dirname(p);
    };
    const copy = (model: string, f: string) => {
      const from = path.join(folder(model), f);
      if (!fs.existsSync(from) || !fs.statSync(from).isFile()) return;
      const to = path.join(outDir, f);
      const tmp = `${to}.tmp-${process.pid}`;
      let text: string | null = null;
      if (f === 'config.json') {
        // As mergekit's output config: the merge's layer count, and its dtype (transformers reads
        // `torch_dtype`, or `dtype` since v5, to pick the dtype it loads the weights in).
        try {
          const cfg = JSON.parse(fs.readFileSync(from, 'utf8')) as Record<string, unknown>;
          let changed = false;
          if (layers > 0)
            for (const k of LAYER_COUNT_KEYS)
              if (typeof cfg[k] === 'number' && cfg[k] !== layers) (cfg[k] = layers), (changed = true);
          if (p.outDtype !== undefined) {
            const keys = ['torch_dtype', 'dtype'].filter((k) => k in cfg);
            for (const k of keys.length ? keys : ['torch_dtype']) if (cfg[k] !== p.outDtype) (cfg[k] = p.outDtype), (changed = true);
          }
          if (changed) text = `${JSON.stringify(cfg, null, 2)}\n`;
        } catch {
          /* not JSON: copied as it is */
        }
      }
      if (text === null) fs.copyFileSync(from, tmp);
      else fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, to);
      copied.push(f);
    };
    if (p.configFrom) copy(p.configFrom, 'config.json');
    if (p.tokenizerFrom) for (const f of TOKENIZER_FILES) copy(p.tokenizerFrom, f);
  }
  return { ...report, copied };
}

/** Reads a mergekit YAML file and translates it (paths relative to its folder at run time). */
export async function loadMergekitConfig(file: string, opts: { output?: string } = {}): Promise<MergekitPlan> {
  const { readMergeDocument } = await import('./merge');
  return parseMergekitConfig(await readMergeDocument(file), { output: opts.output, source: file });
}

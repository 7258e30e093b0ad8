/**
 * torch.export programs (`torch.export.save(ep, "model.pt2")`), read as data.
 *
 * A .pt2 is a zip archive (PyTorch 2.x, schema 8):
 *
 *     <root>/archive_format                       "pt2"
 *     <root>/models/model.json                    the program: graph, signature, range constraints
 *     <root>/data/weights/model_weights_config.json   fqn -> {path_name, use_pickle, tensor_meta}
 *     <root>/data/weights/<path_name>             raw little-endian bytes of each parameter/buffer
 *     <root>/data/constants/model_constants_config.json   the same for non-persistent buffers
 *                                                 and lifted tensor constants
 *     <root>/data/sample_inputs/model.pt          a pickle: never read here
 *
 * model.json's `guards_code` (Python source) and the sample-inputs pickle are never read or run.
 * What is read is checked as hostile input: sizes before reading (the JSON at most
 * `maxJsonBytes`, each tensor record exactly the bytes its metadata declares), JSON nesting and
 * duplicate keys, every name printable, every value defined before it is read, every target an
 * aten/prims operator or one of export's symbolic-int builtins. The result is what
 * native/models/exported.cpp runs node by node through libtorch's dispatcher, which checks each
 * node against its operator's schema.
 */
import { DTYPE_BYTES, numel, shapeProblem, type DType, type RawTensor } from './dtype';
import { CheckpointError, openForReading } from './errors';
import { escapeControl, quote } from './escape';
import { jsonDepthExceeded, MAX_JSON_DEPTH, scanJsonKeys } from './json-scan';
import { VIEW_SLACK_BYTES } from './torch-pickle';
import { DEFAULT_MAX_DEFLATE_RATIO, ZipReader, type ZipEntry } from './zip';
import { UnsupportedError, ArgumentError } from '../errors';
import * as fs from 'node:fs';

/** The torch.export serialization schema this reader implements (torch 2.x: 8.x). */
export const EXPORT_SCHEMA_MAJOR = 8;
export const DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024;

export interface Pt2ReadOptions {
  /** Largest model.json / weights config accepted, in bytes. Default 64 MiB. */
  maxJsonBytes?: number;
  /** Which user output is the model's output: an index into a tuple/list result, or a dict key. */
  output?: number | string;
}

/** One argument of a node, in the form binding/model.cpp parses. */
export type ProgramArg =
  | { name: string; kind: 'none' }
  | { name: string; kind: 'int' | 'enum'; value: number | bigint }
  | { name: string; kind: 'float'; value: number }
  | { name: string; kind: 'bool'; value: boolean }
  | { name: string; kind: 'string' | 'device'; value: string }
  | { name: string; kind: 'ints'; value: Array<number | bigint> }
  | { name: string; kind: 'floats'; value: number[] }
  | { name: string; kind: 'bools'; value: boolean[] }
  | { name: string; kind: 'strings'; value: string[] }
  | { name: string; kind: 'value'; ref: number }
  | { name: string; kind: 'tensors' | 'optTensors'; refs: number[] }
  | { name: string; kind: 'symInts'; refs: number[]; literals: Array<number | bigint> };

export interface ProgramNode {
  name: string;
  /** `aten::linear.default`, or `_operator.mul`. */
  target: string;
  args: ProgramArg[];
  outputs: number[][];
  listOutput: boolean[];
}

export interface ProgramInput {
  name: string;
  value: number;
  dtype: DType;
  sizes: number[];
  symbols: string[];
  min: number[];
  max: number[];
}

export interface ProgramState {
  kind: 'parameter' | 'buffer' | 'constant';
  name: string;
  value: number;
  tensor: RawTensor;
}

/** A checked program: what `native().loadExported` takes (tensors still raw). */
export interface ExportedProgramData {
  path: string;
  numValues: number;
  output: number;
  state: ProgramState[];
  inputs: ProgramInput[];
  constantInputs: never[];
  nodes: ProgramNode[];
  /** The user outputs, as `output` may name them (for messages). */
  outputNames: string[];
  torchVersion: string;
}

// ---------------------------------------------------------------------------
// Archive

interface Archive {
  zip: ZipReader;
  root: string;
  close(): void;
}

function openArchive(file: string): Archive {
  const fd = openForReading(file);
  try {
    const zip = new ZipReader(file, fd);
    const model = zip.order.find((n) => /^[^/]+\/models\/model\.json$/.test(n));
    const root = model?.slice(0, model.indexOf('/')) ?? '';
    return { zip, root, close: () => fs.closeSync(fd) };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Whether `file` is a torch.export archive (`<root>/models/model.json`). Throws only on I/O errors. */
export function isExportArchive(file: string): boolean {
  const a = openArchive(file);
  try {
    return a.root !== '';
  } finally {
    a.close();
  }
}

function entry(a: Archive, name: string, file: string): ZipEntry {
  const e = a.zip.entries.get(`${a.root}/${name}`);
  if (e === undefined) throw new CheckpointError('ERR_SCHEMA', `torch.export archive lacks ${quote(`${a.root}/${name}`)}`, { file });
  return e;
}

function readJson(a: Archive, name: string, file: string, limit: number): unknown {
  const e = entry(a, name, file);
  const bytes = a.zip.read(e, limit, `${quote(`${a.root}/${name}`)}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CheckpointError('ERR_JSON', `${a.root}/${name} is not UTF-8`, { file });
  }
  const depth = jsonDepthExceeded(text, MAX_JSON_DEPTH);
  if (depth > 0) throw new CheckpointError('ERR_LIMIT', `${a.root}/${name} nests deeper than ${MAX_JSON_DEPTH} levels`, { file });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError('ERR_JSON', `${a.root}/${name} is not valid JSON (${(err as Error).message})`, { file });
  }
  const dup = scanJsonKeys(text).duplicate;
  if (dup) throw new CheckpointError('ERR_DUPLICATE_KEY', `${a.root}/${name}: key ${quote(dup.key)} appears twice in one object${dup.path.length ? ` (under ${dup.path.map(quote).join(' > ')})` : ''}`, { file });
  return json;
}

// ---------------------------------------------------------------------------
// Small checked accessors over untrusted JSON

type Obj = Record<string, unknown>;

class Reader {
  constructor(readonly file: string) {}

  fail(detail: string): never {
    throw new CheckpointError('ERR_SCHEMA', detail, { file: this.file });
  }
  unsupported(detail: string): never {
    throw new UnsupportedError(`${this.file}: ${detail}`);
  }
  obj(v: unknown, what: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(`${what} must be an object`);
    return v as Obj;
  }
  arr(v: unknown, what: string): unknown[] {
    if (!Array.isArray(v)) this.fail(`${what} must be an array`);
    return v;
  }
  str(v: unknown, what: string): string {
    if (typeof v !== 'string') this.fail(`${what} must be a string`);
    return v;
  }
  /** A name shown in messages and passed to C++: printable, 1..1024 characters. */
  name(v: unknown, what: string): string {
    const s = this.str(v, what);
    if (s.length === 0 || s.length > 1024 || escapeControl(s) !== s) this.fail(`${what} ${quote(s)} is not a printable name`);
    return s;
  }
  bool(v: unknown, what: string): boolean {
    if (typeof v !== 'boolean') this.fail(`${what} must be a boolean`);
    return v;
  }
  /** An int64 as JSON gives it: a safe integer, or (INT64_MAX/MIN, which JSON.parse rounds) a BigInt. */
  int(v: unknown, what: string): number | bigint {
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(`${what} must be an integer, got ${JSON.stringify(v)}`);
    if (Number.isSafeInteger(v)) return v;
    if (v >= 2 ** 63 - 1024) return 9223372036854775807n; // sys.maxsize: slice ends
    if (v <= -(2 ** 63)) return -9223372036854775808n;
    this.fail(`${what} ${v} is not exactly representable (export writes only small integers and ±sys.maxsize)`);
  }
  size(v: unknown, what: string): number {
    const i = this.int(v, what);
    if (typeof i !== 'number' || i < 0) this.fail(`${what} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return i;
  }
  float(v: unknown, what: string): number {
    if (v === 'Infinity') return Infinity;
    if (v === '-Infinity') return -Infinity;
    if (v === 'NaN') return NaN;
    if (typeof v !== 'number') this.fail(`${what} must be a number, got ${JSON.stringify(v)}`);
    return v;
  }
  /** The one key of a serde union object (`{"as_tensor": …}`). */
  union(v: unknown, what: string): [string, unknown] {
    const o = this.obj(v, what);
    const keys = Object.keys(o);
    if (keys.length !== 1) this.fail(`${what} must have exactly one key, has ${keys.length} (${keys.slice(0, 4).map(quote).join(', ')})`);
    return [keys[0]!, o[keys[0]!]];
  }
}

// torch/_export/serde/schema.py ScalarType -> ours, and -> c10::ScalarType codes.
const SCALAR_DTYPE: Record<number, DType> = { 1: 'uint8', 2: 'int8', 3: 'int16', 4: 'int32', 5: 'int64', 6: 'float16', 7: 'float32', 8: 'float64', 12: 'bool', 13: 'bfloat16' };
const SCALAR_C10: Record<number, number> = { 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 11, 13: 15 };
const LAYOUT_C10: Record<number, number> = { 7: 0 }; // Strided only
const MEMORY_FORMAT_C10: Record<number, number> = { 1: 0, 4: 1, 2: 2, 3: 3 }; // Contiguous, Preserve, ChannelsLast, ChannelsLast3d

const BUILTINS = new Set(['add', 'sub', 'mul', 'floordiv', 'mod', 'neg', 'eq', 'ne', 'lt', 'le', 'gt', 'ge'].map((o) => `_operator.${o}`));

interface TensorMeta {
  dtype: DType;
  sizes: Array<number | string>; // string: a symbolic size's expression
}

// ---------------------------------------------------------------------------
// The program

class ProgramBuilder {
  readonly r: Reader;
  private readonly ids = new Map<string, number>();
  constructor(readonly file: string) {
    this.r = new Reader(file);
  }
  get count(): number {
    return this.ids.size;
  }
  /** A fresh value for `name` (written once). */
  define(name: string, what: string): number {
    if (this.ids.has(name)) this.r.fail(`${what}: value ${quote(name)} is written twice`);
    const id = this.ids.size;
    this.ids.set(name, id);
    return id;
  }
  /** The value `name`, which must be defined already. */
  ref(name: unknown, what: string): number {
    const n = this.r.name(name, what);
    const id = this.ids.get(n);
    if (id === undefined) this.r.fail(`${what} reads ${quote(n)}, which no input or earlier node defines`);
    return id;
  }
  tensorMeta(v: unknown, what: string): TensorMeta {
    const r = this.r;
    const o = r.obj(v, what);
    const code = r.int(o.dtype, `${what}.dtype`);
    const dtype = SCALAR_DTYPE[Number(code)];
    if (dtype === undefined) throw new CheckpointError('ERR_DTYPE', `${what} has dtype code ${code}, which tangent-edit does not read (float32/64/16, bfloat16, int8..64, uint8, bool)`, { file: this.file });
    const layout = o.layout === undefined ? 7 : r.int(o.layout, `${what}.layout`);
    if (layout !== 7) r.fail(`${what} is not a strided (dense) tensor (layout code ${layout}); tangent-edit reads dense tensors only`);
    const sizes = r.arr(o.sizes, `${what}.sizes`).map((s, i): number | string => {
      const [k, val] = r.union(s, `${what}.sizes[${i}]`);
      if (k === 'as_int') return r.size(val, `${what}.sizes[${i}]`);
      if (k === 'as_expr') return r.str(r.obj(val, `${what}.sizes[${i}]`).expr_str, `${what}.sizes[${i}].expr_str`);
      return r.fail(`${what}.sizes[${i}] is ${quote(k)}, expected as_int or as_expr`);
    });
    return { dtype, sizes };
  }
}

/** `Symbol('s17', positive=True, integer=True)` -> `s17`; other expressions stay as written. */
function symbolOf(expr: string): string | null {
  const m = /^Symbol\('([A-Za-z_][A-Za-z0-9_]*)'(?:, [a-z_]+=(?:True|False))*\)$/.exec(expr);
  return m ? m[1]! : null;
}

interface TreeSpec {
  type: string | null;
  context: unknown;
  children: TreeSpec[];
}

function parseTreeSpec(r: Reader, text: string, what: string): TreeSpec {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return r.fail(`${what} is not JSON`);
  }
  const top = r.arr(j, what);
  const walk = (v: unknown, depth: number): TreeSpec => {
    if (depth > MAX_JSON_DEPTH) r.fail(`${what} nests deeper than ${MAX_JSON_DEPTH}`);
    const o = r.obj(v, what);
    const type = o.type === null ? null : r.str(o.type, `${what}.type`);
    let context: unknown = o.context;
    if (typeof context === 'string') {
      try {
        context = JSON.parse(context);
      } catch {
        /* a class name (namedtuple) */
      }
    }
    return { type, context, children: r.arr(o.children_spec, `${what}.children_spec`).map((c) => walk(c, depth + 1)) };
  };
  return walk(top[1], 0);
}

function leaves(t: TreeSpec): number {
  return t.type === null ? 1 : t.children.reduce((a, c) => a + leaves(c), 0);
}

/**
 * Which user output `output` names, by the program's output tree: an index into a tuple/list
 * result, a key of a dict result; nothing for a single tensor.
 */
function selectOutput(r: Reader, tree: TreeSpec | null, count: number, output: number | string | undefined): { index: number; names: string[] } {
  const names: string[] = [];
  let children: TreeSpec[] = [];
  let keys: string[] | null = null;
  if (tree !== null && tree.type !== null) {
    children = tree.children;
    // A dict, or a registered container with keys (a Hugging Face ModelOutput): keys in context.
    const ctx = tree.context;
    if (Array.isArray(ctx) && ctx.length === children.length && ctx.every((k) => typeof k === 'string' || typeof k === 'number')) {
      keys = ctx.map(String);
      names.push(...keys.map((k) => JSON.stringify(k)));
    } else names.push(...children.map((_, i) => String(i)));
  }
  if (tree === null || tree.type === null) {
    if (count !== 1) r.fail(`the program has ${count} user outputs but its output tree is a single value`);
    if (output !== undefined && output !== 0) throw new ArgumentError(`${r.file}: output ${JSON.stringify(output)}: the program returns one tensor; leave output out`);
    return { index: 0, names: ['0'] };
  }
  if (output === undefined) {
    if (children.length === 1 && leaves(children[0]!) === 1) return { index: 0, names };
    throw new ArgumentError(`${r.file}: the program returns a ${escapeControl(tree.type.replace('builtins.', ''))} of ${children.length} (${names.join(', ')}); choose the model's output with output (an index${keys ? ' or a key' : ''})`);
  }
  let pos: number;
  if (typeof output === 'number') pos = output;
  else if (keys !== null) pos = keys.indexOf(output);
  else throw new ArgumentError(`${r.file}: output ${JSON.stringify(output)}: the program returns a ${escapeControl(tree.type.replace('builtins.', ''))} without keys, choose by index 0..${children.length - 1}`);
  if (pos < 0 || pos >= children.length) throw new ArgumentError(`${r.file}: output ${JSON.stringify(output)} is not one of the program's outputs (${names.join(', ')})`);
  if (leaves(children[pos]!) !== 1) r.unsupported(`output ${JSON.stringify(output)} is itself a container; tangent-edit needs one tensor`);
  let index = 0;
  for (let i = 0; i < pos; i++) index += leaves(children[i]!);
  return { index, names };
}

/**
 * Reads and checks a .pt2 program and its tensors (as raw bytes). Nothing in the archive is run.
 *
 * @throws CheckpointError (malformed archive: ERR_SCHEMA, ERR_JSON, ERR_LIMIT, ERR_DUPLICATE_KEY,
 *   ERR_SIZE_MISMATCH, ERR_TRUNCATED…), UnsupportedError (a well-formed program using what
 *   tangent-edit does not run: another schema major version, a non-aten operator, a control-flow
 *   graph, a pickled weight, a mutated buffer), ArgumentError (`output` does not name an output).
 */
export function readExportedProgram(file: string, opts: Pt2ReadOptions = {}): ExportedProgramData {
  return readProgram(file, opts, false);
}

function readProgram(file: string, opts: Pt2ReadOptions, tensorsOnly: boolean): ExportedProgramData {
  const limit = opts.maxJsonBytes ?? DEFAULT_MAX_JSON_BYTES;
  const a = openArchive(file);
  try {
    if (a.root === '') throw new CheckpointError('ERR_SCHEMA', 'not a torch.export archive (no <root>/models/model.json)', { file });
    const fmt = a.zip.entries.get(`${a.root}/archive_format`);
    if (fmt !== undefined) {
      const text = Buffer.from(a.zip.read(fmt, 64)).toString('latin1').trim();
      if (text !== 'pt2') throw new CheckpointError('ERR_SCHEMA', `archive_format is ${quote(text)}, expected "pt2"`, { file });
    }
    const bo = a.zip.entries.get(`${a.root}/byteorder`);
    if (bo !== undefined) {
      const text = Buffer.from(a.zip.read(bo, 64)).toString('latin1').trim();
      if (text !== 'little') throw new CheckpointError('ERR_SCHEMA', `byteorder is ${quote(text)}; tangent-edit reads little-endian archives only`, { file });
    }
    const b = new ProgramBuilder(file);
    const r = b.r;
    const model = r.obj(readJson(a, 'models/model.json', file, limit), 'models/model.json');
    const sv = r.obj(model.schema_version, 'schema_version');
    const major = r.int(sv.major, 'schema_version.major');
    const minor = r.int(sv.minor, 'schema_version.minor');
    if (major !== EXPORT_SCHEMA_MAJOR && tensorsOnly)
      r.fail(`torch.export schema version ${major}.${minor}; tangent-edit reads version ${EXPORT_SCHEMA_MAJOR}.x (PyTorch 2.x's torch.export.save)`);
    if (major !== EXPORT_SCHEMA_MAJOR)
      r.unsupported(`torch.export schema version ${major}.${minor}; tangent-edit reads version ${EXPORT_SCHEMA_MAJOR}.x (PyTorch 2.x's torch.export.save)`);
    const torchVersion = typeof model.torch_version === 'string' ? escapeControl(model.torch_version) : '?';
    const gm = r.obj(model.graph_module, 'graph_module');
    const graph = r.obj(gm.graph, 'graph_module.graph');
    const sig = r.obj(gm.signature, 'graph_module.signature');
    const tensorValues = r.obj(graph.tensor_values ?? {}, 'graph.tensor_values');
    const ranges = r.obj(model.range_constraints ?? {}, 'range_constraints');

    // Tensor records: weights, then constants (non-persistent buffers, lifted constants).
    const weightsCfg = r.obj(r.obj(readJson(a, 'data/weights/model_weights_config.json', file, limit), 'model_weights_config.json').config, 'model_weights_config.json config');
    const constEntry = a.zip.entries.get(`${a.root}/data/constants/model_constants_config.json`);
    const constCfg = constEntry === undefined ? {} : r.obj(r.obj(readJson(a, 'data/constants/model_constants_config.json', file, limit), 'model_constants_config.json').config, 'model_constants_config.json config');
    let recordBytes = 0;
    let copied = 0;
    const readRecord = (fqn: string, where: 'weights' | 'constants', expect: TensorMeta): RawTensor => {
      const cfg = where === 'weights' ? weightsCfg : constCfg;
      if (!Object.prototype.hasOwnProperty.call(cfg, fqn)) r.fail(`${quote(fqn)} has no entry in data/${where}/model_${where}_config.json`);
      const c = r.obj(cfg[fqn], `${where} config of ${quote(fqn)}`);
      if (c.use_pickle !== false && c.use_pickle !== undefined) r.fail(`tensor ${quote(fqn)} is stored as a pickle (use_pickle), which tangent-edit never unpickles; save it as a plain tensor`);
      const pathName = r.name(c.path_name, `path_name of ${quote(fqn)}`);
      if (pathName.includes('/') || pathName === '..') r.fail(`path_name ${quote(pathName)} of ${quote(fqn)} leaves data/${where}/`);
      const meta = b.tensorMeta(c.tensor_meta, `tensor_meta of ${quote(fqn)}`);
      const tm = r.obj(c.tensor_meta, 'tensor_meta');
      const shape = meta.sizes.map((s) => (typeof s === 'number' ? s : r.fail(`tensor ${quote(fqn)} has a symbolic size`)));
      if (meta.dtype !== expect.dtype || shape.length !== expect.sizes.length || shape.some((s, i) => s !== expect.sizes[i]))
        r.fail(`tensor ${quote(fqn)} is ${meta.dtype}[${shape}] in data/${where}/ but ${expect.dtype}[${expect.sizes}] in the graph`);
      const strides = r.arr(tm.strides, `strides of ${quote(fqn)}`).map((s, i) => {
        const [k, v] = r.union(s, `strides[${i}] of ${quote(fqn)}`);
        return k === 'as_int' ? r.size(v, `strides[${i}] of ${quote(fqn)}`) : r.fail(`stride ${i} of ${quote(fqn)} is symbolic`);
      });
      if (strides.length !== shape.length) r.fail(`tensor ${quote(fqn)} has ${strides.length} strides for ${shape.length} dimensions`);
      const offset = tm.storage_offset === undefined ? 0 : (() => {
        const [k, v] = r.union(tm.storage_offset, `storage_offset of ${quote(fqn)}`);
        return k === 'as_int' ? r.size(v, `storage_offset of ${quote(fqn)}`) : r.fail(`storage_offset of ${quote(fqn)} is symbolic`);
      })();
      const esize = DTYPE_BYTES[meta.dtype];
      const big = shapeProblem(shape, esize);
      if (big) throw new CheckpointError('ERR_LIMIT', `tensor ${big}`, { file, tensor: fqn });
      const n = numel(shape);
      // Elements of storage the view reaches (0 for an empty tensor).
      const span = n === 0 ? 0 : offset + 1 + shape.reduce((acc, s, i) => acc + (s - 1) * strides[i]!, 0);
      const rec = entry(a, `data/${where}/${pathName}`, file);
      if (rec.size < span * esize)
        throw new CheckpointError('ERR_SIZE_MISMATCH', `data/${where}/${pathName} holds ${rec.size} bytes; ${meta.dtype}[${shape}] (strides [${strides}], offset ${offset}) reaches ${span * esize}`, { file, tensor: fqn });
      const bytes = a.zip.read(rec, rec.size, `data/${where}/${pathName}`, DEFAULT_MAX_DEFLATE_RATIO);
      recordBytes += rec.size;
      let contiguous = offset === 0;
      for (let i = shape.length - 1, want = 1; i >= 0 && contiguous; i--) {
        if (shape[i]! > 1 && strides[i] !== want) contiguous = false;
        want *= shape[i]!;
      }
      if (contiguous) return { dtype: meta.dtype, shape, data: bytes.subarray(0, n * esize) };
      // A strided view of its storage, gathered into a dense copy. Copies that repeat elements
      // (stride 0, overlapping strides) may not exceed the record bytes read plus VIEW_SLACK_BYTES
      // over the whole program: a 4-byte record expanded to 2^28 elements is refused before allocating.
      copied += n * esize;
      if (copied > recordBytes + VIEW_SLACK_BYTES)
        throw new CheckpointError('ERR_LIMIT', `${meta.dtype}[${shape}] with strides [${strides}] would copy ${n * esize} bytes out of a ${rec.size}-byte record, past the ${VIEW_SLACK_BYTES}-byte allowance for views that repeat elements`, { file, tensor: fqn });
      const out = new Uint8Array(n * esize);
      const idx = new Array<number>(shape.length).fill(0);
      for (let k = 0; k < n; k++) {
        let src = offset;
        for (let d = 0; d < shape.length; d++) src += idx[d]! * strides[d]!;
        out.set(bytes.subarray(src * esize, (src + 1) * esize), k * esize);
        for (let d = shape.length - 1; d >= 0; d--) {
          if (++idx[d]! < shape[d]!) break;
          idx[d] = 0;
        }
      }
      return { dtype: meta.dtype, shape, data: out };
    };
    const metaOf = (name: string, what: string): TensorMeta => {
      if (!Object.prototype.hasOwnProperty.call(tensorValues, name)) r.fail(`${what} ${quote(name)} has no entry in graph.tensor_values`);
      return b.tensorMeta(tensorValues[name], `tensor_values[${quote(name)}]`);
    };

    // Inputs, by the signature.
    const graphInputs = r.arr(graph.inputs, 'graph.inputs');
    const specs = r.arr(sig.input_specs, 'signature.input_specs');
    if (specs.length !== graphInputs.length) r.fail(`the signature has ${specs.length} input specs for ${graphInputs.length} graph inputs`);
    const params: ProgramState[] = [];
    const buffers: ProgramState[] = [];
    const constants: ProgramState[] = [];
    const inputs: ProgramInput[] = [];
    specs.forEach((s, i) => {
      const [kind, body] = r.union(s, `input_specs[${i}]`);
      const o = r.obj(body, `input_specs[${i}].${kind}`);
      if (kind === 'parameter' || kind === 'buffer' || kind === 'tensor_constant') {
        const argName = r.name(r.obj(o.arg, `input_specs[${i}].arg`).name, `input_specs[${i}].arg.name`);
        const fqn = r.name(kind === 'parameter' ? o.parameter_name : kind === 'buffer' ? o.buffer_name : o.tensor_constant_name, `input_specs[${i}] target`);
        const meta = metaOf(argName, kind);
        const persistent = kind === 'parameter' || (kind === 'buffer' && o.persistent !== false);
        const tensor = readRecord(fqn, persistent ? 'weights' : 'constants', meta);
        const st: ProgramState = { kind: kind === 'tensor_constant' ? 'constant' : kind, name: fqn, value: b.define(argName, `input ${quote(fqn)}`), tensor };
        (kind === 'parameter' ? params : kind === 'buffer' ? buffers : constants).push(st);
      } else if (tensorsOnly) {
        // only the state is wanted
      } else if (kind === 'user_input') {
        const [ak, av] = r.union(o.arg, `input_specs[${i}].arg`);
        if (ak === 'as_tensor') {
          const name = r.name(r.obj(av, 'user input').name, 'user input name');
          const meta = metaOf(name, 'user input');
          const sizes: number[] = [];
          const symbols: string[] = [];
          const min: number[] = [];
          const max: number[] = [];
          for (const sz of meta.sizes) {
            if (typeof sz === 'number') {
              sizes.push(sz);
              symbols.push('');
              min.push(-1);
              max.push(-1);
              continue;
            }
            const sym = symbolOf(sz);
            sizes.push(-1);
            symbols.push(sym ?? `(${sz})`);
            let lo = -1;
            let hi = -1;
            if (sym !== null && Object.prototype.hasOwnProperty.call(ranges, sym)) {
              const rc = r.obj(ranges[sym], `range_constraints[${quote(sym)}]`);
              // Bounds are integers; ±Infinity / ±int_oo (written as huge numbers) mean none.
              const bound = (v: unknown, what: string): number | null => {
                if (v === null || v === undefined) return null;
                const x = r.float(v, what);
                if (Number.isNaN(x) || (Number.isFinite(x) && !Number.isInteger(x))) r.fail(`range_constraints[${quote(sym)}].${what} is ${JSON.stringify(v)}, not an integer`);
                return Number.isSafeInteger(x) ? x : null;
              };
              const mn = bound(rc.min_val, 'min_val');
              const mx = bound(rc.max_val, 'max_val');
              lo = mn !== null && mn > 0 ? mn : -1;
              hi = mx !== null && mx >= 0 ? mx : -1;
              if (lo >= 0 && hi >= 0 && hi < lo) r.fail(`range_constraints[${quote(sym)}] is empty ([${lo}, ${hi}])`);
            }
            min.push(lo);
            max.push(hi);
          }
          inputs.push({ name, value: b.define(name, 'user input'), dtype: meta.dtype, sizes, symbols, min, max });
        } else if (ak === 'as_sym_int' || ak === 'as_sym_float' || ak === 'as_sym_bool') {
          r.unsupported(`user input ${i} is a symbolic ${ak.slice(7)} (a Python number exported as dynamic); tangent-edit's models take tensors: export it as a constant or pass it as a tensor`);
        } else {
          r.unsupported(`user input ${i} is ${quote(ak)}; tangent-edit's models take tensors`);
        }
      } else if (kind === 'constant_input') {
        // A Python constant the program was specialized to: nodes carry its value inline.
        const [gk] = r.union(graphInputs[i], `graph.inputs[${i}]`);
        if (gk === 'as_tensor' || gk === 'as_sym_int') r.fail(`constant input ${i} is a graph value`);
      } else {
        r.unsupported(`input ${i} is a ${quote(kind)} (${kind === 'custom_obj' ? 'a TorchBind object' : kind === 'token' ? 'an effect token' : 'unknown kind'}), which tangent-edit does not run`);
      }
    });
    const state = [...params, ...buffers, ...constants];
    if (tensorsOnly) return { path: file, numValues: b.count, output: -1, state, inputs, constantInputs: [], nodes: [], outputNames: [], torchVersion };
    if (inputs.length === 0) r.unsupported('the program takes no tensor input');

    // Nodes.
    const nodes: ProgramNode[] = [];
    const rawNodes = r.arr(graph.nodes, 'graph.nodes');
    rawNodes.forEach((rn, ni) => {
      const n = r.obj(rn, `graph.nodes[${ni}]`);
      const name = n.name === undefined || n.name === null ? `node${ni}` : r.name(n.name, `graph.nodes[${ni}].name`);
      const rawTarget = r.str(n.target, `node ${quote(name)} target`);
      const at = `node ${quote(name)} (${quote(rawTarget)})`;
      let target = '';
      const m = /^torch\.ops\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)$/.exec(rawTarget);
      if (m && (m[1] === 'aten' || m[1] === 'prims')) target = `${m[1]}::${m[2]}.${m[3]}`;
      else if (BUILTINS.has(rawTarget)) target = rawTarget;
      else if (m)
        r.unsupported(`${at} calls an operator of namespace ${quote(m[1]!)}; tangent-edit runs only aten and prims operators (a custom op's kernel is Python or a library it cannot load)`);
      else if (/higher_order|cond|while_loop|wrap_with|map_impl|invoke_subgraph/.test(rawTarget))
        r.unsupported(`${at} is a higher-order operator (control flow or a wrapped subgraph), which tangent-edit does not run; export without torch.cond / torch.no_grad regions`);
      else r.unsupported(`${at} is not an aten/prims operator nor a symbolic-int builtin`);
      const args: ProgramArg[] = [];
      r.arr(n.inputs, `${at} inputs`).forEach((ri, k) => {
        const na = r.obj(ri, `${at} input ${k}`);
        args.push(parseArg(b, r.name(na.name, `${at} input ${k} name`), na.arg, at));
      });
      const outputs: number[][] = [];
      const listOutput: boolean[] = [];
      r.arr(n.outputs, `${at} outputs`).forEach((ro, k) => {
        const [ok, ov] = r.union(ro, `${at} output ${k}`);
        const def = (v: unknown, w: string): number => b.define(r.name(v, w), at);
        if (ok === 'as_tensor') outputs.push([def(r.obj(ov, 'output').name, `${at} output ${k}`)]);
        else if (ok === 'as_sym_int' || ok === 'as_sym_bool') {
          const [sk, sv2] = r.union(ov, `${at} output ${k}`);
          if (sk !== 'as_name') r.fail(`${at} output ${k} is a literal`);
          outputs.push([def(sv2, `${at} output ${k}`)]);
        } else if (ok === 'as_tensors') {
          outputs.push(r.arr(ov, `${at} output ${k}`).map((t, j) => def(r.obj(t, 'output').name, `${at} output ${k}[${j}]`)));
          listOutput[k] = true;
        } else if (ok === 'as_none') outputs.push([-1]);
        else if (ok === 'as_optional_tensors') {
          outputs.push(r.arr(ov, `${at} output ${k}`).map((t, j) => {
            const [tk, tv] = r.union(t, `${at} output ${k}[${j}]`);
            return tk === 'as_tensor' ? def(r.obj(tv, 'output').name, `${at} output ${k}[${j}]`) : -1;
          }));
          listOutput[k] = true;
        } else r.unsupported(`${at} returns ${quote(ok)}, which tangent-edit does not run`);
        listOutput[k] = listOutput[k] ?? false;
      });
      nodes.push({ name, target, args, outputs, listOutput });
    });

    // Outputs.
    const outSpecs = r.arr(sig.output_specs, 'signature.output_specs');
    const userOutputs: Array<{ kind: string; ref: number; name: string }> = [];
    outSpecs.forEach((s, i) => {
      const [kind, body] = r.union(s, `output_specs[${i}]`);
      const o = r.obj(body, `output_specs[${i}].${kind}`);
      if (kind === 'user_output') {
        const [ak, av] = r.union(o.arg, `output_specs[${i}].arg`);
        if (ak === 'as_tensor') {
          const name = r.name(r.obj(av, 'output').name, 'output name');
          userOutputs.push({ kind: ak, ref: b.ref(name, `user output ${i}`), name });
        } else userOutputs.push({ kind: ak, ref: -1, name: ak });
      } else if (kind === 'buffer_mutation' || kind === 'parameter_mutation' || kind === 'user_input_mutation') {
        const target = typeof o.buffer_name === 'string' ? o.buffer_name : typeof o.parameter_name === 'string' ? o.parameter_name : typeof o.user_input_name === 'string' ? o.user_input_name : '?';
        r.unsupported(`the program updates ${kind === 'buffer_mutation' ? 'buffer' : kind === 'parameter_mutation' ? 'parameter' : 'user input'} ${quote(target)} (${kind}); a functional forward cannot change the model's state. A BatchNorm exported in training mode updates its running statistics: export model.eval()`);
      } else if (kind === 'loss_output' || kind.startsWith('gradient_to')) {
        r.unsupported(`the program is a joint forward-backward graph (${kind}); export the forward only (torch.export.export of the module in eval mode)`);
      } else r.unsupported(`output ${i} is a ${quote(kind)}, which tangent-edit does not run`);
    });
    const mcg = r.arr(gm.module_call_graph ?? [], 'module_call_graph');
    let tree: TreeSpec | null = null;
    for (const e of mcg) {
      const eo = r.obj(e, 'module_call_graph entry');
      if (eo.fqn === '' && eo.signature && typeof r.obj(eo.signature, 'signature').out_spec === 'string')
        tree = parseTreeSpec(r, r.obj(eo.signature, 'signature').out_spec as string, 'module_call_graph out_spec');
    }
    if (tree !== null && leaves(tree) !== userOutputs.length) r.fail(`the output tree has ${leaves(tree)} leaves for ${userOutputs.length} user outputs`);
    const sel = selectOutput(r, tree, userOutputs.length, opts.output);
    const chosen = userOutputs[sel.index]!;
    if (chosen.ref < 0) r.unsupported(`the chosen output is ${quote(chosen.kind)}, not a tensor`);

    return {
      path: file,
      numValues: b.count,
      output: chosen.ref,
      state,
      inputs,
      constantInputs: [],
      nodes,
      outputNames: sel.names,
      torchVersion,
    };
  } finally {
    a.close();
  }
}

function parseArg(b: ProgramBuilder, name: string, raw: unknown, at: string): ProgramArg {
  const r = b.r;
  const [k, v] = r.union(raw, `${at} argument ${quote(name)}`);
  const what = `${at} argument ${quote(name)}`;
  const list = (): unknown[] => r.arr(v, what);
  switch (k) {
    case 'as_none':
      return { name, kind: 'none' };
    case 'as_tensor':
      return { name, kind: 'value', ref: b.ref(r.obj(v, what).name, what) };
    case 'as_optional_tensor': {
      const [ok, ov] = r.union(v, what);
      return ok === 'as_tensor' ? { name, kind: 'value', ref: b.ref(r.obj(ov, what).name, what) } : { name, kind: 'none' };
    }
    case 'as_tensors':
      return { name, kind: 'tensors', refs: list().map((t) => b.ref(r.obj(t, what).name, what)) };
    case 'as_optional_tensors':
      return {
        name,
        kind: 'optTensors',
        refs: list().map((t) => {
          const [ok, ov] = r.union(t, what);
          return ok === 'as_tensor' ? b.ref(r.obj(ov, what).name, what) : -1;
        }),
      };
    case 'as_int':
      return { name, kind: 'int', value: r.int(v, what) };
    case 'as_ints':
      return { name, kind: 'ints', value: list().map((x) => r.int(x, what)) };
    case 'as_float':
      return { name, kind: 'float', value: r.float(v, what) };
    case 'as_floats':
      return { name, kind: 'floats', value: list().map((x) => r.float(x, what)) };
    case 'as_bool':
      return { name, kind: 'bool', value: r.bool(v, what) };
    case 'as_bools':
      return { name, kind: 'bools', value: list().map((x) => r.bool(x, what)) };
    case 'as_string':
      return { name, kind: 'string', value: r.name(v, what) };
    case 'as_strings':
      return { name, kind: 'strings', value: list().map((x) => r.name(x, what)) };
    case 'as_sym_int':
    case 'as_sym_bool':
    case 'as_sym_float': {
      const [sk, sv] = r.union(v, what);
      if (sk === 'as_name') return { name, kind: 'value', ref: b.ref(sv, what) };
      if (sk === 'as_int') return { name, kind: 'int', value: r.int(sv, what) };
      if (sk === 'as_bool') return { name, kind: 'bool', value: r.bool(sv, what) };
      if (sk === 'as_float') return { name, kind: 'float', value: r.float(sv, what) };
      return r.fail(`${what}: unknown ${k} form ${quote(sk)}`);
    }
    case 'as_sym_ints': {
      const refs: number[] = [];
      const literals: Array<number | bigint> = [];
      for (const x of list()) {
        const [sk, sv] = r.union(x, what);
        if (sk === 'as_name') {
          refs.push(b.ref(sv, what));
          literals.push(0);
        } else if (sk === 'as_int') {
          refs.push(-1);
          literals.push(r.int(sv, what));
        } else r.fail(`${what}: unknown SymInt form ${quote(sk)}`);
      }
      return { name, kind: 'symInts', refs, literals };
    }
    case 'as_scalar_type': {
      const c = SCALAR_C10[Number(r.int(v, what))];
      if (c === undefined) r.unsupported(`${what} is scalar type code ${JSON.stringify(v)}, which tangent-edit does not know`);
      return { name, kind: 'enum', value: c };
    }
    case 'as_layout': {
      const c = LAYOUT_C10[Number(r.int(v, what))];
      if (c === undefined) r.unsupported(`${what} asks for layout code ${JSON.stringify(v)}; only strided tensors are run`);
      return { name, kind: 'enum', value: c };
    }
    case 'as_memory_format': {
      const c = MEMORY_FORMAT_C10[Number(r.int(v, what))];
      if (c === undefined) r.unsupported(`${what} is memory format code ${JSON.stringify(v)}, which tangent-edit does not know`);
      return { name, kind: 'enum', value: c };
    }
    case 'as_device': {
      const d = r.obj(v, what);
      const type = r.str(d.type, `${what}.type`);
      if (type !== 'cpu' && type !== 'cuda' && type !== 'meta') r.unsupported(`${what} is device ${quote(type)}`);
      // Every device the program names becomes the model's (exported.cpp's coerce), so a program
      // exported on a GPU loads on a CPU-only machine and the other way round.
      return { name, kind: 'device', value: 'cpu' };
    }
    default:
      return r.unsupported(`${what} is ${quote(k)} (${k === 'as_graph' ? 'a subgraph' : k === 'as_custom_obj' ? 'a TorchBind object' : k === 'as_operator' ? 'an operator value' : 'a kind'}), which tangent-edit does not run`);
  }
}

/**
 * The parameters, then buffers, of a .pt2 under their module names, read as data (the graph's
 * nodes are not looked at, so a program tangent-edit cannot run still gives its weights).
 */
export function readExportTensors(file: string, opts: Pt2ReadOptions = {}): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  for (const s of readProgram(file, opts, true).state) if (s.kind !== 'constant') out.set(s.name, s.tensor);
  return out;
}

// Issue 9, deliverable 7: seeded mutations of valid safetensors files, torch.save zips (stored
// and deflated), bare pickles, TorchScript archives and torch.export programs (whose mutants also
// go through Model.load: the program parser and the native schema checks), all read by loadStateDict (and the lazy
// safetensors reader) in one child process under a hard memory cap (RLIMIT_DATA via prlimit).
// Every input must end in a typed CheckpointError or a consistent result; the child must exit
// normally (no signal), below the cap. Bounded: a fixed seed, a fixed count, a time limit.
// Run: npx tap test/fuzz.test.ts       (FUZZ_SEED / FUZZ_COUNT override the defaults)
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { evilTorchScriptParts, f32, mutate, prng, stateDictPickle, stored, torchSaveZip, torchScriptZip, zip, type ViewSpec } from './fixtures/security/craft';
import { ZipReader } from '../lib/checkpoint/zip';
import { runChild } from './fixtures/security/run-child';

const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
const PER_SEED_FILE = Number(process.env.FUZZ_COUNT ?? 120);
const CAP_MIB = 1536; // RLIMIT_DATA of the child (Node + libtorch need ~600 MiB of it)
const RSS_CAP_MIB = 1024;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fuzz-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function safetensorsFile(): Buffer {
  const header = JSON.stringify({
    __metadata__: { format: 'pt' },
    a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
    b: { dtype: 'I64', shape: [2], data_offsets: [24, 40] },
    c: { dtype: 'BF16', shape: [4], data_offsets: [40, 48] },
  });
  const h = Buffer.from(header.padEnd(Math.ceil(header.length / 8) * 8, ' '));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, f32([1, 2, 3, 4, 5, 6]), Buffer.from(new BigInt64Array([7n, -8n]).buffer), Buffer.alloc(8, 0x3f)]);
}

const views: ViewSpec[] = [
  { name: 'w', key: '0', numel: 6, size: [2, 3], stride: [3, 1], requiresGrad: true },
  { name: 'wt', key: '0', numel: 6, size: [3, 2], stride: [1, 3] },
  { name: 'row', key: '0', numel: 6, offset: 3, size: [3], stride: [1] },
  { name: 'pos', key: '1', numel: 3, size: [2, 3], stride: [0, 1] },
];
const storages: Array<[string, Buffer]> = [['0', f32([1, 2, 3, 4, 5, 6])], ['1', f32([0, 1, 2])]];

const pkl = stateDictPickle(views);
const ts = evilTorchScriptParts('pass');

// A torch.export program (test/fixtures/mlp.pt2, written by make_export_fixtures.py): mutated as
// bytes, as the bytes of its model.json / weights config re-zipped with valid CRCs, and as JSON
// (values replaced by other types, huge or negative numbers, other subtrees; keys deleted).
const PT2 = path.join(__dirname, 'fixtures', 'mlp.pt2');
const pt2Entries = (() => {
  const fd = fs.openSync(PT2, 'r');
  try {
    const z = new ZipReader(PT2, fd);
    return z.order.map((n) => [n, Buffer.from(z.read(z.entries.get(n)!, 1 << 24))] as [string, Buffer]);
  } finally {
    fs.closeSync(fd);
  }
})();
const pt2With = (name: string, data: Buffer): Buffer => zip(pt2Entries.map(([n, d]) => stored(n, n.endsWith(name) ? data : d)));
const entryOf = (name: string): Buffer => pt2Entries.find(([n]) => n.endsWith(name))![1];

function mutateJson(text: string, rnd: () => number): Buffer {
  const root = JSON.parse(text) as unknown;
  const spots: Array<[Record<string, unknown> | unknown[], string | number]> = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach((c, i) => { spots.push([v, i]); walk(c); });
    else if (v !== null && typeof v === 'object') for (const [k, c] of Object.entries(v)) { spots.push([v as Record<string, unknown>, k]); walk(c); }
  };
  walk(root);
  const values = [null, -1, 0, 1, 2 ** 31, 2 ** 53, 9223372036854775807, -9223372036854775808, 1e308, 'x', '', [], {}, true, 'Infinity'];
  for (let n = 1 + Math.floor(rnd() * 3); n > 0; n--) {
    const [obj, key] = spots[Math.floor(rnd() * spots.length)]!;
    const r = rnd();
    if (r < 0.15 && !Array.isArray(obj)) delete (obj as Record<string, unknown>)[key as string];
    else if (r < 0.3) (obj as Record<string | number, unknown>)[key] = structuredClone(spots[Math.floor(rnd() * spots.length)]![0]);
    else (obj as Record<string | number, unknown>)[key] = values[Math.floor(rnd() * values.length)];
  }
  return Buffer.from(JSON.stringify(root));
}

/** A node argument of model.json replaced by another well-formed argument (a different kind, value or tensor). */
function mutateArgs(text: string, rnd: () => number): Buffer {
  const j = JSON.parse(text) as { graph_module: { graph: { nodes: Array<{ inputs: Array<{ arg: unknown }> }>; tensor_values: Record<string, unknown> } } };
  const nodes = j.graph_module.graph.nodes;
  const names = Object.keys(j.graph_module.graph.tensor_values);
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)]!;
  const args = [
    () => ({ as_int: pick([-1, 0, 1, 3, 2 ** 31, 2 ** 40, 9223372036854775807]) }),
    () => ({ as_float: pick([0.5, -1, 'NaN', 'Infinity', 1e308]) }),
    () => ({ as_ints: [pick([-1, 0, 4, 2 ** 31]), pick([1, -2, 8])] }),
    () => ({ as_tensor: { name: pick(names) } }),
    () => ({ as_tensors: [{ name: pick(names) }, { name: pick(names) }] }),
    () => ({ as_none: true }),
    () => ({ as_bool: rnd() < 0.5 }),
    () => ({ as_sym_ints: [{ as_int: pick([-5, 0, 2 ** 40]) }, { as_int: 4 }] }),
    () => ({ as_string: pick(['none', 'tanh', 'x']) }),
    () => ({ as_scalar_type: pick([1, 5, 7, 8, 12, 99]) }),
    () => ({ as_memory_format: pick([1, 2, 7]) }),
    () => ({ as_device: { type: pick(['cpu', 'cuda', 'meta']), index: 0 } }),
  ];
  for (let n = 1 + Math.floor(rnd() * 2); n > 0; n--) {
    const node = pick(nodes);
    if (node.inputs.length > 0) pick(node.inputs).arg = pick(args)();
  }
  return Buffer.from(JSON.stringify(j));
}

/** Inputs: a valid file, and how one mutant of it is made (the whole file, or only its pickle, re-zipped with a valid CRC). */
const seeds: Array<[string, Buffer, (rnd: () => number) => Buffer]> = [
  ['safetensors.safetensors', safetensorsFile(), (rnd) => mutate(safetensorsFile(), rnd)],
  ['stored.pt', torchSaveZip(pkl, storages), (rnd) => mutate(torchSaveZip(pkl, storages), rnd)],
  ['deflated.pt', torchSaveZip(pkl, storages, 'archive', true), (rnd) => mutate(torchSaveZip(pkl, storages, 'archive', true), rnd)],
  ['pickle.pt', torchSaveZip(pkl, storages), (rnd) => torchSaveZip(mutate(pkl, rnd), storages)],
  ['torchscript.pt', torchScriptZip(ts), (rnd) => mutate(torchScriptZip(ts), rnd)],
  ['torchscript-deflated.pt', torchScriptZip(ts, { compress: true }), (rnd) => mutate(torchScriptZip(ts, { compress: true }), rnd)],
  ['torchscript-pickle.pt', torchScriptZip(ts), (rnd) => torchScriptZip({ ...ts, pkl: mutate(ts.pkl, rnd) })],
  ['export.pt2', fs.readFileSync(PT2), (rnd) => mutate(fs.readFileSync(PT2), rnd)],
  ['export-json.pt2', fs.readFileSync(PT2), (rnd) => pt2With('models/model.json', mutate(entryOf('models/model.json'), rnd))],
  ['export-graph.pt2', fs.readFileSync(PT2), (rnd) => pt2With('models/model.json', mutateJson(entryOf('models/model.json').toString('utf8'), rnd))],
  ['export-args.pt2', fs.readFileSync(PT2), (rnd) => pt2With('models/model.json', mutateArgs(entryOf('models/model.json').toString('utf8'), rnd))],
  ['export-weights.pt2', fs.readFileSync(PT2), (rnd) => pt2With('model_weights_config.json', mutateJson(entryOf('model_weights_config.json').toString('utf8'), rnd))],
];

t.test('seeded mutations: typed errors or consistent results, never a signal, never above the cap', async (t) => {
  const dir = path.join(tmp, 'inputs');
  fs.mkdirSync(dir);
  const rnd = prng(SEED);
  let n = 0;
  for (const [name, bytes, mutant] of seeds) {
    fs.writeFileSync(path.join(dir, `seed-${name}`), bytes);
    for (let i = 0; i < PER_SEED_FILE; i++) {
      fs.writeFileSync(path.join(dir, `m${String(i).padStart(3, '0')}-${name}`), mutant(rnd));
      n++;
    }
  }
  const t0 = Date.now();
  const r = runChild('fuzz', [dir], { timeout: 60_000, dataCapMiB: CAP_MIB, heapMiB: 512, env: { OMP_NUM_THREADS: '1' } }); // one thread: the cap counts thread stacks
  t.comment(`${n} mutants + ${seeds.length} seeds (seed ${SEED}) in ${((Date.now() - t0) / 1000).toFixed(1)} s, peak RSS ${Math.round((r.maxRSS ?? 0) / 1024)} MiB`);
  t.equal(r.timedOut, false, 'within the time limit');
  t.equal(r.signal, null, 'no signal');
  t.equal(r.status, 0, r.stderr.slice(-3000));
  t.ok(r.maxRSS !== undefined && r.maxRSS < RSS_CAP_MIB * 1024, `peak RSS ${Math.round((r.maxRSS ?? 0) / 1024)} MiB < ${RSS_CAP_MIB} MiB`);
  const outcomes = r.lines.filter((l) => typeof l.file === 'string');
  t.ok(outcomes.length >= n + seeds.length, `an outcome for every input (${outcomes.length})`);
  // loadStateDict: a CheckpointError or a consistent result. Model.load of a .pt2 (`model`): any
  // typed tangent-edit error (an UnsupportedError for a program it will not run, an
  // ArgumentError for one the operator schemas refuse) or a model.
  const typed = (o: Record<string, unknown>) => o.model === true
    ? typeof o.code === 'string' && /^ERR_/.test(o.code) && /Error$/.test(String(o.name)) && o.name !== 'Error' && o.name !== 'TypeError'
    : o.name === 'CheckpointError' && typeof o.code === 'string';
  const bad = outcomes.filter((o) => (o.ok === true ? o.consistent !== true : !typed(o)));
  t.same(bad, [], 'every outcome is a typed CheckpointError or a consistent result');
  const seedOk = outcomes.filter((o) => String(o.file).includes(`${path.sep}seed-`) && o.lazy !== true && o.model !== true);
  t.equal(seedOk.length, seeds.length);
  for (const o of seedOk) t.equal(o.ok, true, `the unmutated ${path.basename(String(o.file))} reads: ${String(o.message ?? '')}`);
  const codes = new Map<string, number>();
  for (const o of outcomes) if (o.ok !== true) codes.set(String(o.code), (codes.get(String(o.code)) ?? 0) + 1);
  t.comment(`outcomes: ${outcomes.filter((o) => o.ok === true).length} read, errors ${JSON.stringify(Object.fromEntries(codes))}`);
});

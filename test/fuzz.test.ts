// Issue 9, deliverable 7: seeded mutations of valid safetensors files, torch.save zips (stored
// and deflated), bare pickles and TorchScript archives, all read by loadStateDict (and the lazy
// safetensors reader) in one child process under a hard memory cap (RLIMIT_DATA via prlimit).
// Every input must end in a typed CheckpointError or a consistent result; the child must exit
// normally (no signal), below the cap. Bounded: a fixed seed, a fixed count, a time limit.
// Run: npx tap test/fuzz.test.ts       (FUZZ_SEED / FUZZ_COUNT override the defaults)
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { evilTorchScriptParts, f32, mutate, prng, stateDictPickle, torchSaveZip, torchScriptZip, type ViewSpec } from './fixtures/security/craft';
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

/** Inputs: a valid file, and how one mutant of it is made (the whole file, or only its pickle, re-zipped with a valid CRC). */
const seeds: Array<[string, Buffer, (rnd: () => number) => Buffer]> = [
  ['safetensors.safetensors', safetensorsFile(), (rnd) => mutate(safetensorsFile(), rnd)],
  ['stored.pt', torchSaveZip(pkl, storages), (rnd) => mutate(torchSaveZip(pkl, storages), rnd)],
  ['deflated.pt', torchSaveZip(pkl, storages, 'archive', true), (rnd) => mutate(torchSaveZip(pkl, storages, 'archive', true), rnd)],
  ['pickle.pt', torchSaveZip(pkl, storages), (rnd) => torchSaveZip(mutate(pkl, rnd), storages)],
  ['torchscript.pt', torchScriptZip(ts), (rnd) => mutate(torchScriptZip(ts), rnd)],
  ['torchscript-deflated.pt', torchScriptZip(ts, { compress: true }), (rnd) => mutate(torchScriptZip(ts, { compress: true }), rnd)],
  ['torchscript-pickle.pt', torchScriptZip(ts), (rnd) => torchScriptZip({ ...ts, pkl: mutate(ts.pkl, rnd) })],
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
  const bad = outcomes.filter((o) => (o.ok === true ? o.consistent !== true : o.name !== 'CheckpointError' || typeof o.code !== 'string'));
  t.same(bad, [], 'every outcome is a typed CheckpointError or a consistent result');
  const seedOk = outcomes.filter((o) => String(o.file).includes(`${path.sep}seed-`) && o.lazy !== true);
  t.equal(seedOk.length, seeds.length);
  for (const o of seedOk) t.equal(o.ok, true, `the unmutated ${path.basename(String(o.file))} reads: ${String(o.message ?? '')}`);
  const codes = new Map<string, number>();
  for (const o of outcomes) if (o.ok !== true) codes.set(String(o.code), (codes.get(String(o.code)) ?? 0) + 1);
  t.comment(`outcomes: ${outcomes.filter((o) => o.ok === true).length} read, errors ${JSON.stringify(Object.fromEntries(codes))}`);
});

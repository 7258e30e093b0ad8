// Issue 9, Why 2: memory bombs. Each crafted torch.save zip is read by loadStateDict in a child
// process; the child must end with a typed CheckpointError naming the file (and tensor or record)
// and a peak RSS far below what the file would make an unbounded reader allocate (>= 1 GiB here).
// Run: npx tap test/security-memory.test.ts
import t, { type Test as Tap } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { crc32, deflated, f32, stateDictPickle, stored, torchSaveZip, zip, type LocalRecord, type ViewSpec } from './fixtures/security/craft';
import { runChild } from './fixtures/security/run-child';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sec-mem-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const MiB = 1024 * 1024;
// Node + libtorch start at ~200 MiB RSS; an unbounded reader needs >= 1 GiB for every file below.
const RSS_CAP_MIB = 600;

function expectRefused(t: Tap, file: string, code: string, message: RegExp, tensor?: string): void {
  const r = runChild('load', [file], { timeout: 120_000 });
  t.equal(r.signal, null, 'no signal');
  t.equal(r.status, 0, r.stderr.slice(-2000));
  const o = r.lines[0] ?? {};
  t.match(o, { ok: false, name: 'CheckpointError', code }, `typed error ${code}`);
  t.match(String(o.message), message);
  t.match(String(o.message), file, 'the message names the file');
  if (tensor !== undefined) t.match(String(o.message), `tensor ${JSON.stringify(tensor)}`, 'the message names the tensor');
  t.ok(r.maxRSS !== undefined && r.maxRSS < RSS_CAP_MIB * 1024, `peak RSS ${Math.round((r.maxRSS ?? 0) / 1024)} MiB < ${RSS_CAP_MIB} MiB`);
}

t.test('stride-0 views of a 4-byte storage are not blown up', async (t) => {
  // 4 tensors of 2^26 float32 (256 MiB each) viewing one element.
  const views: ViewSpec[] = [0, 1, 2, 3].map((i) => ({ name: `bomb.${i}`, key: '0', numel: 1, size: [1 << 26], stride: [0] }));
  const file = path.join(tmp, 'stride0.pt');
  fs.writeFileSync(file, torchSaveZip(stateDictPickle(views), [['0', f32([1.5])]]));
  t.ok(fs.statSync(file).size < 2000, 'the file is tiny');
  expectRefused(t, file, 'ERR_LIMIT', /would materialize 268435456 bytes.*4-byte storage/, 'bomb.0');
});

t.test('a small stride-0 view (an expanded position-ids buffer) still reads, as values', async (t) => {
  const file = path.join(tmp, 'expand-small.pt');
  fs.writeFileSync(file, torchSaveZip(stateDictPickle([{ name: 'pos', key: '0', numel: 3, size: [2, 3], stride: [0, 1] }]), [['0', f32([0, 1, 2])]]));
  const r = runChild('load', [file], { timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  t.same(r.lines[0], { file, ok: true, tensors: [['pos', 'float32', [2, 3], [0, 1, 2, 0, 1, 2]]], consistent: true });
});

// 128 MiB of zeros, deflated once (~128 KiB).
const zeros = Buffer.alloc(128 * MiB);
const zerosDeflated = zlib.deflateRawSync(zeros, { level: 9 });
const zerosCrc = crc32(zeros);
const bombRecord = (name: string): LocalRecord => ({ name, body: zerosDeflated, method: 8, size: zeros.length, crc: zerosCrc });

t.test('DEFLATE records larger than the storages the pickle declares are refused before inflating', async (t) => {
  // 8 one-element storages whose records inflate to 128 MiB each (1 GiB in all).
  const views: ViewSpec[] = [...Array(8).keys()].map((i) => ({ name: `t${i}`, key: String(i), numel: 1, size: [1], stride: [1] }));
  const file = path.join(tmp, 'deflate-bomb.pt');
  fs.writeFileSync(file, zip([stored('archive/data.pkl', stateDictPickle(views)), ...views.map((v) => bombRecord(`archive/data/${v.key}`))]));
  t.ok(fs.statSync(file).size < 2 * MiB, `the file is ${fs.statSync(file).size} bytes`);
  expectRefused(t, file, 'ERR_SIZE_MISMATCH', /record archive\/data\/0 holds 134217728 bytes but 1 float32 elements need 4/, 't0');
});

t.test('eight central-directory entries sharing one compressed stream are refused', async (t) => {
  // The pickle declares 8 storages of 128 MiB; the 8 entries all point at one local record.
  const views: ViewSpec[] = [...Array(8).keys()].map((i) => ({ name: `t${i}`, key: String(i), numel: 32 * MiB, size: [32 * MiB], stride: [1] }));
  const file = path.join(tmp, 'shared-stream.pt');
  fs.writeFileSync(file, zip(
    [stored('archive/data.pkl', stateDictPickle(views)), bombRecord('archive/data/0'), stored('archive/version', Buffer.from('3\n'))],
    [{ local: 0 }, ...views.map((v) => ({ local: 1, name: `archive/data/${v.key}` })), { local: 2 }],
  ));
  t.ok(fs.statSync(file).size < MiB, `the file is ${fs.statSync(file).size} bytes`);
  expectRefused(t, file, 'ERR_OVERLAP', /zip entries "archive\/data\/0" and "archive\/data\/1" overlap/);
});

t.test('partially overlapping zip entries are refused', async (t) => {
  const a = f32([1, 2, 3, 4]);
  const pkl = stateDictPickle([{ name: 'a', key: '0', numel: 4, size: [4], stride: [1] }]);
  const recs = [stored('archive/data.pkl', pkl), stored('archive/data/0', a)];
  const good = zip(recs);
  // A second central entry whose "record" starts inside archive/data/0's bytes.
  const off0 = good.indexOf(Buffer.from('archive/data/0')) - 30;
  const file = path.join(tmp, 'overlap.pt');
  const z = zip(recs, [{ local: 0 }, { local: 1 }, { local: 1, name: 'archive/extra' }]);
  // Point the third entry 8 bytes into the second record.
  const cd = z.lastIndexOf(Buffer.from('archive/extra')) - 46;
  z.writeUInt32LE(off0 + 8, cd + 42);
  fs.writeFileSync(file, z);
  expectRefused(t, file, 'ERR_OVERLAP', /overlap/);
});

t.test('a local header naming another entry than the central directory is refused', async (t) => {
  const pkl = stateDictPickle([{ name: 'a', key: '0', numel: 1, size: [1], stride: [1] }]);
  const file = path.join(tmp, 'name-mismatch.pt');
  fs.writeFileSync(file, zip([stored('archive/data.pkl', pkl), stored('archive/data/9', f32([7]))], [{ local: 0 }, { local: 1, name: 'archive/data/0' }]));
  expectRefused(t, file, 'ERR_IO', /local header of zip entry "archive\/data\/0" names "archive\/data\/9"/);
});

t.test('a DEFLATE data.pkl larger than the pickle limit is refused before inflating', async (t) => {
  const file = path.join(tmp, 'pkl-bomb.pt');
  fs.writeFileSync(file, zip([bombRecord('archive/data.pkl'), stored('archive/version', Buffer.from('3\n'))]));
  expectRefused(t, file, 'ERR_LIMIT', /archive\/data\.pkl.*134217728 bytes.*limit/);
});

t.test('a DEFLATE storage inflating past maxDeflateRatio (default 100:1) is refused before inflating, and read when allowed', async (t) => {
  // Consistent with its pickle (32 Mi float32 = 128 MiB of zeros), but 1000:1.
  const file = path.join(tmp, 'ratio.pt');
  const pkl = stateDictPickle([{ name: 'zeros', key: '0', numel: 32 * MiB, size: [32 * MiB], stride: [1] }]);
  fs.writeFileSync(file, zip([stored('archive/data.pkl', pkl), bombRecord('archive/data/0')]));
  expectRefused(t, file, 'ERR_LIMIT', /storage record "archive\/data\/0" would inflate \d+ bytes to 134217728 \(more than 100:1/, 'zeros');
  const { readTorchCheckpoint } = await import('../lib/checkpoint/torch-pickle');
  const r = readTorchCheckpoint(file, { maxDeflateRatio: Infinity });
  t.equal(r.tensors.get('zeros')!.data.byteLength, 128 * MiB, 'read with maxDeflateRatio: Infinity');
});

t.test('a compressed torch.save archive within its declared sizes still reads', async (t) => {
  const file = path.join(tmp, 'deflated-ok.pt');
  const pkl = stateDictPickle([{ name: 'a', key: '0', numel: 4, size: [2, 2], stride: [2, 1] }]);
  fs.writeFileSync(file, zip([deflated('archive/data.pkl', pkl), deflated('archive/data/0', f32([1, 2, 3, 4]))]));
  const r = runChild('load', [file], { timeout: 60_000 });
  t.same(r.lines[0], { file, ok: true, tensors: [['a', 'float32', [2, 2], [1, 2, 3, 4]]], consistent: true });
});

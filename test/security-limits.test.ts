// Issue 25, items 1 and 5: dataset archives bounded like checkpoints (the zip limits of
// lib/checkpoint/zip.ts, shared), and sizes from configs, metadata and file headers checked before
// anything is allocated. Every input is crafted here; the bombs are read in a child whose peak RSS
// is measured.
// Run: npx tap test/security-limits.test.ts
import t, { type Test as Tap } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { crc32, deflated, f32, npy, npyHeader, Pickle, stored, torchSaveZip, zip, type LocalRecord } from './fixtures/security/craft';
import { runChild } from './fixtures/security/run-child';
import { loadNpyDataset, readNpz, withNpz, parseNpy } from '../lib/data/files';
import { maybeGunzip } from '../lib/data/idx';
import { ZipReader } from '../lib/checkpoint/zip';
import { readTorchCheckpoint } from '../lib/checkpoint/torch-pickle';
import { readSafetensors } from '../lib/checkpoint/safetensors';
import { CheckpointError, openForReading } from '../lib/checkpoint/errors';
import { Model } from '../lib/model';
import { Tensor } from '../lib/tensor';
import { ArgumentError, ShapeError } from '../lib/errors';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sec-limits-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const MiB = 1024 * 1024;
// Node + libtorch start at ~200-300 MiB RSS; an unbounded reader needs >= 1 GiB for the bombs.
const RSS_CAP_MIB = 700;

const int64 = (vals: number[]): Buffer => Buffer.from(new BigInt64Array(vals.map(BigInt)).buffer);

/**
 * A deflated .npy member whose header declares `shape` (uint8) but whose stream holds the header
 * and only `bodyBytes` zeros; the zip directory declares the full size. Inflating it all would
 * take header + ∏shape bytes; the stream is tiny.
 */
function lyingMember(name: string, shape: number[], bodyBytes = 1024): LocalRecord {
  const header = npyHeader('|u1', shape);
  const full = header.length + shape.reduce((a, b) => a * b, 1);
  const body = zlib.deflateRawSync(Buffer.concat([header, Buffer.alloc(bodyBytes)]));
  return { name, body, method: 8, size: full, crc: 0 };
}

function expectChildRefused(t: Tap, spec: string, message: RegExp): void {
  const r = runChild('dataset', [spec], { timeout: 120_000 });
  t.equal(r.signal, null, 'no signal');
  t.equal(r.status, 0, r.stderr.slice(-2000));
  const o = r.lines[0] ?? {};
  t.match(o, { ok: false, name: 'DatasetFileError', code: 'ERR_TANGENT_ARGUMENT' }, 'a typed DatasetFileError');
  t.match(String(o.message), message);
  t.ok(String(o.message).startsWith(spec), 'the message starts with the file');
  t.ok(r.maxRSS !== undefined && r.maxRSS < RSS_CAP_MIB * 1024, `peak RSS ${Math.round((r.maxRSS ?? 0) / 1024)} MiB < ${RSS_CAP_MIB} MiB`);
}

t.test('.npz: the issue’s bomb (1 GiB of images declared, 40 labels) is refused from the headers, before inflating', async (t) => {
  const file = path.join(tmp, 'bomb.npz');
  fs.writeFileSync(file, zip([lyingMember('images.npy', [16777216, 8, 8]), stored('labels.npy', npy('<i8', [40], int64(Array(40).fill(0))))]));
  t.ok(fs.statSync(file).size < 10_000, `the file is ${fs.statSync(file).size} bytes`);
  expectChildRefused(t, file, /labels must be \[16777216\] \(one per image\), got \[40\]/);
});

t.test('.npz: a member compressed more than 100:1 is refused before inflating; maxDeflateRatio lets it read', async (t) => {
  // 64 MiB of zero images and their labels, honestly deflated (~64 KiB): 1000:1.
  const N = 1 << 16;
  const images = npy('|u1', [N, 32, 32], new Uint8Array(N * 1024));
  const labels = npy('<i8', [N], int64(Array(N).fill(0)));
  const file = path.join(tmp, 'zeros.npz');
  fs.writeFileSync(file, zip([deflated('images.npy', images), deflated('labels.npy', labels)]));
  t.ok(fs.statSync(file).size < 200_000, `the file is ${fs.statSync(file).size} bytes`);
  expectChildRefused(t, file, /member 'images\.npy' would inflate \d+ bytes to 67108992 \(more than 100:1, the limit for compressed records; pass a larger maxDeflateRatio to read it\)/);
  const d = loadNpyDataset(file, 'zeros', { maxDeflateRatio: Infinity });
  t.equal(d.count, N, 'read with the limit raised');
  t.same(d.shape, [1, 32, 32]);
});

t.test('.npz: a member whose header declares another size than the zip directory is refused unread', async (t) => {
  const file = path.join(tmp, 'mismatch.npz');
  const rec = deflated('x.npy', npy('<f4', [2], f32([1, 2])));
  // The directory says 1 GiB more than the header's shape needs.
  fs.writeFileSync(file, zip([rec], [{ local: 0, size: rec.size + 1024 * MiB }]));
  t.throws(() => readNpz(file), {
    name: 'DatasetFileError',
    message: `${file}:x.npy: the header declares shape [2] of float32 (${rec.size} bytes with the header) but the member holds ${rec.size + 1024 * MiB} bytes`,
  });
});

t.test('.npz: a stream that inflates past its declared size says so (not "Cannot create a Buffer larger than …")', async (t) => {
  const file = path.join(tmp, 'long-stream.npz');
  const honest = npy('<f4', [2], f32([1, 2]));
  const body = zlib.deflateRawSync(Buffer.concat([honest, Buffer.alloc(4096)]));
  fs.writeFileSync(file, zip([{ name: 'x.npy', body, method: 8, size: honest.length, crc: crc32(honest) }]));
  t.throws(() => readNpz(file), {
    name: 'DatasetFileError',
    message: `${file}: not a readable .npz: member 'x.npy' inflates to more than the ${honest.length} bytes the zip directory declares for it: the archive is corrupt or crafted`,
  });
  // The same record in a checkpoint reader: the zip layer's message.
  const fd = openForReading(file);
  try {
    const z = new ZipReader(file, fd);
    t.throws(() => z.read(z.entries.get('x.npy')!, 1 << 20), { name: 'CheckpointError', code: 'ERR_IO', message: new RegExp(`inflates to more than the ${honest.length} bytes the zip directory declares`) });
  } finally {
    fs.closeSync(fd);
  }
});

t.test('.npz: a .npy header longer than 64 KiB is refused', async (t) => {
  const b = Buffer.alloc(12);
  b[0] = 0x93;
  b.write('NUMPY', 1, 'latin1');
  b[6] = 2;
  b.writeUInt32LE(1 << 30, 8);
  t.throws(() => parseNpy(b, 'h.npy'), { name: 'DatasetFileError', message: 'h.npy: .npy header of 1073741824 bytes is longer than the 65536-byte limit' });
});

t.test('.npz: honest members read as before, lazily: the headers first', async (t) => {
  const file = path.join(tmp, 'ok.npz');
  const images = npy('|u1', [3, 2, 2], Uint8Array.from({ length: 12 }, (_, i) => i * 20));
  fs.writeFileSync(file, zip([deflated('images.npy', images), stored('labels.npy', npy('<i8', [3], int64([0, 1, 1])))]));
  t.same(withNpz(file, (z) => [...z.headers].map(([k, h]) => [k, h.dtype, h.shape])), [['images', 'uint8', [3, 2, 2]], ['labels', 'int64', [3]]]);
  const d = loadNpyDataset(file);
  t.equal(d.count, 3);
  t.equal(d.classes, 2);
  t.equal(d.images[11], Math.fround((11 * 20) / 255));
});

t.test('.npz through the CLI: `tangent eval --data bomb.npz` ends with the error, bounded', async (t) => {
  const { runTs, CLI } = await import('./fixtures/security/run-child');
  const file = path.join(tmp, 'bomb.npz');
  const r = runTs(CLI, ['finetune', '--mode', 'standard', '--model', '{"arch":"mlp","inputDim":64,"hidden":[],"outputDim":2}', '--data', file, '--out', path.join(tmp, 'never.safetensors')], { timeout: 120_000, dataCapMiB: 1024 });
  t.equal(r.signal, null, 'no signal');
  t.not(r.status, 0, 'a failure exit status');
  t.match(r.stderr, `${file}: labels must be [16777216] (one per image), got [40]`);
});

t.test('IDX (gzip): inflation is bounded by the trailer, which DEFLATE bounds by the file', async (t) => {
  const real = Buffer.concat([Buffer.from([0, 0, 8, 1, 0, 0, 0, 4]), Buffer.from([1, 2, 3, 4])]);
  const gz = zlib.gzipSync(real);
  t.same([...maybeGunzip(gz, 'ok.gz')], [...real], 'an honest file inflates');
  const lie = zlib.gzipSync(Buffer.alloc(MiB));
  lie.writeUInt32LE(4, lie.length - 4); // declares 4 bytes, holds 1 MiB
  t.throws(() => maybeGunzip(lie, 'lie.gz'), { name: 'IdxFormatError', message: 'lie.gz: corrupt or truncated gzip stream: it inflates to more than the 4 bytes its trailer declares' });
  const big = Buffer.from(gz);
  big.writeUInt32LE(0xffffffff, big.length - 4);
  t.throws(() => maybeGunzip(big, 'big.gz'), { name: 'IdxFormatError', message: /^big\.gz: corrupt or truncated gzip stream: its trailer declares 4294967295 bytes from \d+, beyond DEFLATE's maximum ratio$/ });
});

t.test('image folders: a PNG declaring 10^10 pixels is refused by the decoder’s pixel limit, naming the file', async (t) => {
  try {
    require.resolve('sharp');
  } catch {
    t.pass('sharp is not installed: image folders are not read at all');
    return;
  }
  const { loadImageFolder } = await import('../lib/data/files');
  const dir = path.join(tmp, 'pngbomb');
  fs.mkdirSync(path.join(dir, 'a'), { recursive: true });
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(100000, 0);
  ihdr.writeUInt32BE(100000, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(Buffer.alloc(1000))), chunk('IEND', Buffer.alloc(0))]);
  const f = path.join(dir, 'a', 'bomb.png');
  fs.writeFileSync(f, png);
  await t.rejects(loadImageFolder(dir, { size: [8, 8], channels: 1 }), { message: new RegExp(`${f.replace(/[.]/g, '\\.')}.*pixel limit`) });
});

t.test('model configs: sizes are checked before allocation, naming the fields and the bytes', async (t) => {
  const mem = os.totalmem();
  t.throws(() => Model.create({ arch: 'mlp', inputDim: 4, hidden: [2 ** 40], outputDim: 2 }), {
    name: 'ArgumentError',
    message: new RegExp(`^mlp config: its parameters sized by mlp\\.inputDim × mlp\\.hidden\\[0\\] would need ${5 * 2 ** 40 * 4} bytes \\(20480\\.0 GiB\\), more than this machine's memory \\(${(mem / 2 ** 30).toFixed(1)} GiB\\)$`),
  });
  t.throws(() => Model.create({ arch: 'vit', imageSize: 32, patchSize: 4, inChannels: 3, dim: 64, depth: 2 ** 30, heads: 4, mlpDim: 128, numClasses: 10 }), {
    name: 'ArgumentError',
    message: /^vit config: its parameters sized by vit\.depth × vit\.dim × vit\.mlpDim would need \d+ bytes/,
  });
  t.throws(() => Model.create({ arch: 'clip-text', width: 64, layers: 1, heads: 4, embedDim: 32, contextLength: 8, vocabSize: 2 ** 45 }), {
    name: 'ArgumentError',
    message: /^clip-text config: its parameters sized by clip-text\.vocabSize × clip-text\.width would need \d+ bytes/,
  });
  // Each field fits, the sum does not: the total is checked too.
  const half = Math.floor(mem / 4 / 2 / 3) ; // three layers of ~mem/2 bytes each in float32
  t.throws(() => Model.create({ arch: 'mlp', inputDim: 1, hidden: [half, 1, half, 1], outputDim: half }), {
    name: 'ArgumentError',
    message: /^mlp config: its parameters would need \d+ bytes .*more than this machine's memory/,
  });
  const m = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 2 });
  t.equal(m.numel, 4 * 8 + 8 + 8 * 2 + 2, 'a small config is unchanged');
  m.dispose();
});

t.test('a checkpoint whose metadata names an absurd model is refused by the CLI with the field', async (t) => {
  const { runTs, CLI } = await import('./fixtures/security/run-child');
  const r = runTs(CLI, ['finetune', '--mode', 'standard', '--out', path.join(tmp, 'never.safetensors'), '--model', `{"arch":"mlp","inputDim":4,"hidden":[${2 ** 40}],"outputDim":2}`, '--data', 'builtin:mnist'], { timeout: 120_000 });
  t.equal(r.signal, null, 'no signal');
  t.not(r.status, 0);
  t.match(r.stderr, /mlp config: its parameters sized by mlp\.inputDim × mlp\.hidden\[0\] would need 21990232555520 bytes/);
  t.notMatch(r.stderr, /alloc_cpu|enforce fail/, 'not the allocator');
});

t.test('torch.save and safetensors: shapes whose strides overflow are refused naming the tensor', async (t) => {
  // [0, 2^31-1, 2^31-1, 2^31-1]: no elements, but contiguous strides of ~2^62 elements.
  const big = 2 ** 31 - 1;
  const p = new Pickle();
  p.global('collections', 'OrderedDict').emptyTuple().reduce();
  p.mark().str('w');
  p.global('torch._utils', '_rebuild_tensor_v2').mark();
  p.mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(0).tuple().op(0x51);
  p.int(0).mark().int(0).int(big).int(big).int(big).tuple().mark().int(0).int(1).int(1).int(1).tuple().bool(false);
  p.global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
  p.setitems();
  const file = path.join(tmp, 'overflow.pt');
  fs.writeFileSync(file, torchSaveZip(p.stop(), [['0', new Uint8Array(0)]]));
  let err: unknown;
  try {
    readTorchCheckpoint(file);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof CheckpointError, `a CheckpointError: ${String(err)}`);
  const c = err as CheckpointError;
  t.equal(c.code, 'ERR_LIMIT');
  t.equal(c.tensor, 'w');
  t.match(c.message, `tensor shape [0,${big},${big},${big}] is too large: its dimensions multiply to more than 9007199254740991 bytes`);
  t.match(c.message, file);
  // The same shape in a safetensors header.
  const header = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [0, big, big, big], data_offsets: [0, 0] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const st = path.join(tmp, 'overflow.safetensors');
  fs.writeFileSync(st, Buffer.concat([len, header]));
  t.throws(() => readSafetensors(st), { name: 'CheckpointError', code: 'ERR_SHAPE', message: /shape \[0,2147483647,2147483647,2147483647\] is too large/ });
});

t.test('torch.save: BUILD with a state that is not a dict of attributes is refused, not an empty state dict', async (t) => {
  const p = new Pickle();
  p.emptyDict().int(7).op(0x62); // {} then BUILD with an int as its state
  const file = path.join(tmp, 'junk-build.pt');
  fs.writeFileSync(file, torchSaveZip(p.stop(), []));
  t.throws(() => readTorchCheckpoint(file), { name: 'CheckpointError', code: 'ERR_SCHEMA', message: /BUILD on dict with a int\/float 7 as its state \(torch\.save writes a dict of attributes there\)/ });
  // OrderedDict._metadata as torch.save writes it still reads.
  const q = new Pickle();
  q.global('collections', 'OrderedDict').emptyTuple().reduce();
  q.emptyDict().mark().str('_metadata').global('collections', 'OrderedDict').emptyTuple().reduce().setitems().op(0x62);
  const ok = path.join(tmp, 'metadata-build.pt');
  fs.writeFileSync(ok, torchSaveZip(q.stop(), []));
  t.equal(readTorchCheckpoint(ok).tensors.size, 0);
});

t.test('an empty batch is a ShapeError that says so', async (t) => {
  const m = Model.create({ arch: 'mlp', inputDim: 4, hidden: [3], outputDim: 2 });
  const x = Tensor.from(new Float32Array(0), [0, 4]);
  await t.rejects(m.forward(x), { name: 'ShapeError', message: 'mlp model got an empty batch (input [0, 4]): the batch must hold at least one sample' });
  await t.rejects(m.jvp(x, m.parameters()), ShapeError);
  x.dispose();
  m.dispose();
  t.ok(ArgumentError);
});

// Tests for lib/checkpoint/torch-pickle.ts: pure-TypeScript torch.save (zip) reader/writer.
// Run: npx tap test/torch-pickle.test.ts
import t, { Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';

import { readTorchCheckpoint, writeTorchCheckpoint } from '../lib/checkpoint/torch-pickle';
import { CheckpointError } from '../lib/checkpoint/errors';
import { DTYPES, DType, RawTensor, bfloat16BitsToFloat32, float16BitsToFloat32, numel, typedView } from '../lib/checkpoint/dtype';
import { needsTorch } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures');
const PY = process.env['TANGENT_TEST_PYTHON'] ?? '/usr/bin/python3';
const noTorch = needsTorch(); // false (run) when python3-torch is there, and always under CI=true

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-pickle-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Element values as numbers (float16/bfloat16 decoded, int64 via Number). */
function values(x: RawTensor): number[] {
  switch (x.dtype) {
    case 'float16': return Array.from(typedView(x as RawTensor & { dtype: 'float16' }), float16BitsToFloat32);
    case 'bfloat16': return Array.from(typedView(x as RawTensor & { dtype: 'bfloat16' }), bfloat16BitsToFloat32);
    default: return Array.from(typedView(x) as ArrayLike<number | bigint>, Number);
  }
}

interface Expected { dtype: string; shape: number[]; data: number[] }

function checkAgainst(tt: Tap, got: Map<string, RawTensor>, expected: Record<string, Expected>, what: string): void {
  tt.same([...got.keys()], Object.keys(expected), `${what}: keys in order`);
  for (const [name, e] of Object.entries(expected)) {
    const g = got.get(name);
    if (g === undefined) { tt.fail(`${what}: missing ${name}`); continue; }
    tt.equal(g.dtype, e.dtype, `${what}: ${name} dtype`);
    tt.same(g.shape, e.shape, `${what}: ${name} shape`);
    tt.equal(g.data.byteLength, numel(e.shape) * ({ float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 } as Record<string, number>)[e.dtype]!, `${what}: ${name} byte length`);
    tt.same(values(g), e.data, `${what}: ${name} values`);
  }
}
type Tap = Test;

function expectCode(tt: Tap, fn: () => unknown, code: string, pattern: RegExp, msg: string): void {
  try {
    fn();
    tt.fail(`${msg}: no error thrown`);
  } catch (e) {
    tt.ok(e instanceof CheckpointError, `${msg}: is a CheckpointError (${String(e)})`);
    tt.equal((e as CheckpointError).code, code, `${msg}: code`);
    tt.match((e as Error).message, pattern, `${msg}: message`);
  }
}

/** Minimal STORED zip builder (no alignment) for crafting bad archives. */
function makeZip(entries: Array<[string, Uint8Array]>): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name);
    const crc = zlib.crc32(data) >>> 0;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0); lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14); lh.writeUInt32LE(data.length, 18); lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(n.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0); ch.writeUInt16LE(20, 4); ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16); ch.writeUInt32LE(data.length, 20); ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(n.length, 28); ch.writeUInt32LE(offset, 42);
    locals.push(lh, n, Buffer.from(data));
    central.push(ch, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8); eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12); eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

// Pickle building blocks (protocol 2).
const P = {
  proto: Buffer.from([0x80, 2]),
  global: (m: string, n: string) => Buffer.from(`c${m}\n${n}\n`),
  str: (s: string) => { const b = Buffer.from(s); const h = Buffer.alloc(5); h[0] = 0x58; h.writeUInt32LE(b.length, 1); return Buffer.concat([h, b]); },
  int1: (v: number) => Buffer.from([0x4b, v]),
  op: (...b: number[]) => Buffer.from(b),
};
const MARK = 0x28, STOP = 0x2e, REDUCE = 0x52, TUPLE = 0x74, EMPTY_TUPLE = 0x29, EMPTY_DICT = 0x7d, SETITEM = 0x73, SETITEMS = 0x75,
  BINPERSID = 0x51, TUPLE1 = 0x85, NEWFALSE = 0x89;

/** A pickle of one float32 tensor [n] from storage key `key` (protocol 2, as torch writes). */
function tensorPickle(key: string, n: number): Buffer {
  return Buffer.concat([
    P.global('torch._utils', '_rebuild_tensor_v2'), P.op(MARK),
    P.op(MARK), P.str('storage'), P.global('torch', 'FloatStorage'), P.str(key), P.str('cpu'), P.int1(n), P.op(TUPLE, BINPERSID),
    P.int1(0), P.int1(n), P.op(TUPLE1), P.int1(1), P.op(TUPLE1), P.op(NEWFALSE),
    P.global('collections', 'OrderedDict'), P.op(EMPTY_TUPLE, REDUCE), P.op(TUPLE, REDUCE),
  ]);
}

function craft(name: string, pickle: Buffer, records: Array<[string, Uint8Array]> = []): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, makeZip([['archive/data.pkl', pickle], ...records.map(([k, v]): [string, Uint8Array] => [`archive/data/${k}`, v])]));
  return f;
}

const F32x2 = new Uint8Array(new Float32Array([1.5, -2]).buffer);

/** [name, offset of the record's data] for each zip entry, from the central directory (zip64 aware). */
function recordOffsets(file: string): Array<[string, number]> {
  const b = fs.readFileSync(file);
  const eocd = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  let count = b.readUInt16LE(eocd + 10);
  let p = b.readUInt32LE(eocd + 16);
  if (p === 0xffffffff) {
    const z = Number(b.readBigUInt64LE(eocd - 20 + 8));
    count = Number(b.readBigUInt64LE(z + 32));
    p = Number(b.readBigUInt64LE(z + 48));
  }
  const out: Array<[string, number]> = [];
  for (let i = 0; i < count; i++) {
    const nameLen = b.readUInt16LE(p + 28);
    const extraLen = b.readUInt16LE(p + 30);
    const name = b.toString('utf8', p + 46, p + 46 + nameLen);
    let local = b.readUInt32LE(p + 42);
    if (local === 0xffffffff) {
      // zip64 extra: [usize, csize,] offset — the offset is the last 8 bytes.
      local = Number(b.readBigUInt64LE(p + 46 + nameLen + 4 + b.readUInt16LE(p + 46 + nameLen + 2) - 8));
    }
    out.push([name, local + 30 + b.readUInt16LE(local + 26) + b.readUInt16LE(local + 28)]);
    p += 46 + nameLen + extraLen + b.readUInt16LE(p + 32);
  }
  return out;
}

function sampleTensors(): Map<string, RawTensor> {
  const m = new Map<string, RawTensor>();
  const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const mk: Record<DType, () => RawTensor> = {
    float32: () => ({ dtype: 'float32', shape: [2, 3], data: bytes(new Float32Array([0, 0.25, -1.5, 3e38, -0, 1e-40])) }),
    float64: () => ({ dtype: 'float64', shape: [3], data: bytes(new Float64Array([Math.PI, -1e300, 5e-324])) }),
    float16: () => ({ dtype: 'float16', shape: [2, 2], data: bytes(new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7bff])) }),
    bfloat16: () => ({ dtype: 'bfloat16', shape: [2], data: bytes(new Uint16Array([0x3f80, 0x4040])) }),
    int64: () => ({ dtype: 'int64', shape: [3], data: bytes(new BigInt64Array([7n, -8n, 2n ** 40n])) }),
    int32: () => ({ dtype: 'int32', shape: [1, 3], data: bytes(new Int32Array([1, -2, 2147483647])) }),
    int16: () => ({ dtype: 'int16', shape: [2], data: bytes(new Int16Array([-32768, 32767])) }),
    int8: () => ({ dtype: 'int8', shape: [3], data: bytes(new Int8Array([-128, 0, 127])) }),
    uint8: () => ({ dtype: 'uint8', shape: [2], data: new Uint8Array([0, 255]) }),
    bool: () => ({ dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) }),
  };
  for (const d of DTYPES) m.set(`t.${d}`, mk[d]());
  m.set('scalar', { dtype: 'float32', shape: [], data: bytes(new Float32Array([42])) });
  m.set('empty', { dtype: 'float32', shape: [0, 3], data: new Uint8Array(0) });
  m.set('unicode.ключ', { dtype: 'float64', shape: [1, 1, 1], data: bytes(new Float64Array([-0.5])) });
  return m;
}

function sameTensors(tt: Tap, got: Map<string, RawTensor>, want: Map<string, RawTensor>, what: string): void {
  tt.same([...got.keys()], [...want.keys()], `${what}: keys in order`);
  for (const [k, w] of want) {
    const g = got.get(k)!;
    tt.equal(g?.dtype, w.dtype, `${what}: ${k} dtype`);
    tt.same(g?.shape, w.shape, `${what}: ${k} shape`);
    tt.ok(g !== undefined && Buffer.from(g.data).equals(Buffer.from(w.data)), `${what}: ${k} bytes`);
  }
}

/** Python: torch.load each file and print {file: {name: {dtype, shape, data}}} as JSON. */
function pyLoad(files: string[]): Record<string, Record<string, Expected>> {
  const script = `
import json, sys, torch
out = {}
for f in sys.argv[1:]:
    sd = torch.load(f)
    out[f] = {"__type__": type(sd).__name__, **{k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "data": v.double().flatten().tolist()} for k, v in sd.items()}}
print(json.dumps(out))
`;
  const r = spawnSync(PY, ['-c', script, ...files], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, Record<string, Expected>>;
}

// ---------------------------------------------------------------------------

t.test('reads the committed torch.save fixture (every dtype, a view)', async (tt) => {
  const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'torch_state_dict.json'), 'utf8')) as Record<string, Expected>;
  const { tensors, archiveName } = readTorchCheckpoint(path.join(FIXTURES, 'torch_state_dict.pt'));
  tt.equal(archiveName, 'torch_state_dict');
  checkAgainst(tt, tensors, expected, 'fixture');
  // The view arange(10)[2:5] is materialized: exactly its 3 elements.
  tt.equal(tensors.get('view')!.data.byteLength, 12);
  // Our alignment check agrees with what torch writes.
  for (const [n, o] of recordOffsets(path.join(FIXTURES, 'torch_state_dict.pt'))) tt.equal(o % 64, 0, `torch aligns ${n}`);
});

t.test('writes every dtype and reads it back', async (tt) => {
  const want = sampleTensors();
  const f = path.join(tmp, 'all.pt');
  writeTorchCheckpoint(f, want);
  const { tensors, archiveName } = readTorchCheckpoint(f);
  tt.equal(archiveName, 'archive');
  sameTensors(tt, tensors, want, 'roundtrip');

  const offs = recordOffsets(f);
  tt.same(offs.map(([n]) => n), [
    'archive/data.pkl', ...[...want.keys()].map((_, i) => `archive/data/${i}`), 'archive/version', 'archive/byteorder',
  ], 'record names and order');
  for (const [n, o] of offs) tt.equal(o % 64, 0, `${n} data is 64-byte aligned`);
  tt.same(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-')), [], 'no temporary files left');

  // Iterable input, a single entry (SETITEM), no entries, > 1000 entries (several SETITEMS batches), zip64.
  const one = path.join(tmp, 'one.pt');
  writeTorchCheckpoint(one, [['only', want.get('t.float32')!]]);
  sameTensors(tt, readTorchCheckpoint(one).tensors, new Map([['only', want.get('t.float32')!]]), 'single entry');
  const none = path.join(tmp, 'none.pt');
  writeTorchCheckpoint(none, new Map());
  tt.equal(readTorchCheckpoint(none).tensors.size, 0, 'empty state dict');
  const many = new Map<string, RawTensor>();
  for (let i = 0; i < 2100; i++) many.set(`layer${i}.w`, { dtype: 'int32', shape: [1], data: new Uint8Array(new Int32Array([i * 100003]).buffer) });
  const manyF = path.join(tmp, 'many.pt');
  writeTorchCheckpoint(manyF, many);
  const manyBack = readTorchCheckpoint(manyF).tensors;
  tt.same([...manyBack.keys()], [...many.keys()], '2100 entries: keys in order');
  tt.ok([...many].every(([k, v]) => Buffer.from(manyBack.get(k)!.data).equals(Buffer.from(v.data)) && manyBack.get(k)!.dtype === 'int32'), '2100 entries: values');
  const z64 = path.join(tmp, 'zip64.pt');
  writeTorchCheckpoint(z64, want, { forceZip64: true });
  sameTensors(tt, readTorchCheckpoint(z64).tensors, want, 'zip64');
  for (const [n, o] of recordOffsets(z64)) tt.equal(o % 64, 0, `zip64 ${n} data is 64-byte aligned`);

  if (noTorch) tt.pass('torch.load reads the files we write', { skip: noTorch });
  else {
    const py = pyLoad([f, one, none, manyF, z64]);
    const asExpected = (m: Map<string, RawTensor>): Record<string, Expected> =>
      Object.fromEntries([...m].map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape, data: values(v) }]));
    for (const [file, m] of [[f, want], [one, new Map([['only', want.get('t.float32')!]])], [none, new Map()], [manyF, many], [z64, want]] as const) {
      const { __type__: type, ...rest } = py[file]! as Record<string, unknown>;
      tt.equal(type, 'OrderedDict', `${path.basename(file)}: torch.load gives an OrderedDict`);
      tt.same(rest, asExpected(m), `${path.basename(file)}: torch.load sees the same values (${m.size} tensors)`);
    }
  }
});

t.test('writer: atomic replace, validation', async (tt) => {
  const f = path.join(tmp, 'replace.pt');
  writeTorchCheckpoint(f, [['a', { dtype: 'uint8', shape: [1], data: new Uint8Array([1]) }]]);
  writeTorchCheckpoint(f, [['b', { dtype: 'uint8', shape: [1], data: new Uint8Array([2]) }]]);
  tt.same([...readTorchCheckpoint(f).tensors.keys()], ['b'], 'overwrites the previous file');

  const bad = path.join(tmp, 'bad-write.pt');
  expectCode(tt, () => writeTorchCheckpoint(bad, [['x', { dtype: 'float32', shape: [2], data: new Uint8Array(4) }]]), 'ERR_SIZE_MISMATCH', /"x"/, 'size mismatch');
  expectCode(tt, () => writeTorchCheckpoint(bad, [['x', { dtype: 'uint8', shape: [1], data: new Uint8Array(1) }], ['x', { dtype: 'uint8', shape: [1], data: new Uint8Array(1) }]]), 'ERR_DUPLICATE_KEY', /"x"/, 'duplicate name');
  expectCode(tt, () => writeTorchCheckpoint(bad, [['x', { dtype: 'complex64' as DType, shape: [1], data: new Uint8Array(8) }]]), 'ERR_DTYPE', /complex64/, 'bad dtype');
  expectCode(tt, () => writeTorchCheckpoint(bad, [['x', { dtype: 'uint8', shape: [-1], data: new Uint8Array(0) }]]), 'ERR_SHAPE', /shape/, 'bad shape');
  expectCode(tt, () => writeTorchCheckpoint(path.join(tmp, 'no-such-dir', 'x.pt'), [['x', { dtype: 'uint8', shape: [1], data: new Uint8Array(1) }]]), 'ERR_IO', /no-such-dir/, 'unwritable');
  tt.notOk(fs.existsSync(bad), 'nothing written on error');
  tt.same(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-')), [], 'no temporary files left');
});

t.test('reads Python-written variants', { skip: noTorch }, async (tt) => {
  const dir = path.join(tmp, 'py');
  fs.mkdirSync(dir);
  const script = `
import collections, json, os, sys, zipfile, torch
d = sys.argv[1]
torch.manual_seed(0)
out = {}
def save(name, obj, sd, **kw):
    torch.save(obj, os.path.join(d, name), **kw)
    out[name] = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "data": v.double().flatten().tolist()} for k, v in sd.items()}
m = torch.arange(12, dtype=torch.float32).reshape(3, 4)
cube = torch.arange(24, dtype=torch.int16).reshape(2, 3, 4)
sd = collections.OrderedDict([
    ("contig", m.t().contiguous()),
    ("transposed", m.t()),
    ("permuted", cube.permute(2, 0, 1)[1:3]),
    ("strided", torch.arange(20, dtype=torch.float64)[1:19:3]),
    ("expanded", torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16).expand(2, 3)),
    ("col", m[:, 2]),
    ("scalar", torch.tensor(5, dtype=torch.int8)),
    ("empty", torch.zeros(0, 4, dtype=torch.float16)),
])
save("views.pt", sd, sd)
lin = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
lsd = lin.state_dict()
assert hasattr(lsd, "_metadata")
save("linear.pt", lsd, lsd)
one = {"w": torch.tensor([1.5, -2.0])}
save("one.pt", one, one)
save("wrapped.pt", {"epoch": 3, "state_dict": lsd, "note": "x"}, lsd)
save("model.pt", {"model": one, "step": 10}, one)
params = collections.OrderedDict(p=torch.nn.Parameter(torch.tensor([[1.0, 2.0]])))
save("params.pt", params, params)
save("proto4.pt", sd, sd, pickle_protocol=4)
save("plain_dict.pt", dict(one), one)
with zipfile.ZipFile(os.path.join(d, "views.pt")) as src, zipfile.ZipFile(os.path.join(d, "deflated.pt"), "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
out["deflated.pt"] = out["views.pt"]
torch.save({"w": torch.ones(2), "epoch": 3}, os.path.join(d, "nontensor.pt"))
torch.save(one, os.path.join(d, "legacy.pt"), _use_new_zipfile_serialization=False)
print(json.dumps(out))
`;
  const r = spawnSync(PY, ['-c', script, dir], { encoding: 'utf8', timeout: 60_000 });
  tt.equal(r.status, 0, `python ran: ${r.stderr}`);
  if (r.status !== 0) return;
  const expected = JSON.parse(r.stdout) as Record<string, Record<string, Expected>>;
  for (const [name, exp] of Object.entries(expected)) {
    const { tensors } = readTorchCheckpoint(path.join(dir, name));
    checkAgainst(tt, tensors, exp, name);
  }
  tt.equal(readTorchCheckpoint(path.join(dir, 'views.pt')).archiveName, 'views', 'archive name is the file stem (torch 1.x) or "archive"');
  expectCode(tt, () => readTorchCheckpoint(path.join(dir, 'nontensor.pt')), 'ERR_SCHEMA', /"epoch".*not a tensor/, 'non-tensor value');
  expectCode(tt, () => readTorchCheckpoint(path.join(dir, 'legacy.pt')), 'ERR_IO', /legacy/, 'legacy format');
});

t.test('rejects bad inputs', async (tt) => {
  const notZip = path.join(tmp, 'not-zip.pt');
  fs.writeFileSync(notZip, 'hello, this is not a zip file at all\n');
  expectCode(tt, () => readTorchCheckpoint(notZip), 'ERR_IO', /not-zip\.pt: .*not a torch\.save zip/, 'not a zip');
  const empty = path.join(tmp, 'empty.pt');
  fs.writeFileSync(empty, '');
  expectCode(tt, () => readTorchCheckpoint(empty), 'ERR_IO', /empty\.pt/, 'empty file');
  expectCode(tt, () => readTorchCheckpoint(path.join(tmp, 'missing.pt')), 'ERR_IO', /missing\.pt.*cannot open/, 'missing file');

  const fixture = fs.readFileSync(path.join(FIXTURES, 'torch_state_dict.pt'));
  const truncated = path.join(tmp, 'truncated.pt');
  for (const len of [fixture.length - 1, Math.floor(fixture.length / 2), 100]) {
    fs.writeFileSync(truncated, fixture.subarray(0, len));
    expectCode(tt, () => readTorchCheckpoint(truncated), 'ERR_TRUNCATED', /truncated\.pt: /, `truncated to ${len} bytes`);
  }
  // A flipped byte in a tensor record: CRC mismatch.
  const corrupt = Buffer.from(fixture);
  const rec0 = recordOffsets(path.join(FIXTURES, 'torch_state_dict.pt')).find(([n]) => n.endsWith('/data/0'))!;
  corrupt[rec0[1] + 5] ^= 0xff; // inside torch_state_dict/data/0
  const corruptF = path.join(tmp, 'corrupt.pt');
  fs.writeFileSync(corruptF, corrupt);
  expectCode(tt, () => readTorchCheckpoint(corruptF), 'ERR_IO', /CRC/, 'corrupt record');

  // Unknown GLOBAL: os.system must be refused, never run.
  const marker = path.join(tmp, 'pwned');
  const evil = craft('evil.pt', Buffer.concat([P.proto, P.global('os', 'system'), P.str(`touch ${marker}`), P.op(TUPLE1, REDUCE, STOP)]));
  expectCode(tt, () => readTorchCheckpoint(evil), 'ERR_SCHEMA', /refusing to load global "os\.system".*GLOBAL at offset 2/, 'os.system global');
  tt.notOk(fs.existsSync(marker), 'nothing was executed');
  // The same via STACK_GLOBAL (protocol 4), and builtins.eval.
  const evil4 = craft('evil4.pt', Buffer.concat([Buffer.from([0x80, 4]), Buffer.from([0x8c, 8]), Buffer.from('builtins'), Buffer.from([0x8c, 4]), Buffer.from('eval'), P.op(0x93), P.str('1'), P.op(TUPLE1, REDUCE, STOP)]));
  expectCode(tt, () => readTorchCheckpoint(evil4), 'ERR_SCHEMA', /"builtins\.eval".*STACK_GLOBAL at offset 18/, 'builtins.eval via STACK_GLOBAL');
  // A torch global that is not on the allow-list.
  const torchLoad = craft('torchload.pt', Buffer.concat([P.proto, P.global('torch', 'load'), P.op(STOP)]));
  expectCode(tt, () => readTorchCheckpoint(torchLoad), 'ERR_SCHEMA', /"torch\.load"/, 'torch.load global');

  // Unsupported opcode (INST) named with its offset.
  const inst = craft('inst.pt', Buffer.concat([P.proto, P.op(MARK), Buffer.from('ios\nsystem\n'), P.op(STOP)]));
  expectCode(tt, () => readTorchCheckpoint(inst), 'ERR_SCHEMA', /unsupported pickle opcode INST.*offset 3/, 'INST opcode');

  // Non-tensor value, non-string key, duplicate key, missing record, unsupported storage dtype.
  const nonTensor = craft('nontensor-crafted.pt', Buffer.concat([
    P.proto, P.op(EMPTY_DICT, MARK), P.str('a'), tensorPickle('0', 2), P.str('lr'), P.int1(3), P.op(SETITEMS, STOP),
  ]), [['0', F32x2]]);
  expectCode(tt, () => readTorchCheckpoint(nonTensor), 'ERR_SCHEMA', /tensor "lr": value is a int\/float 3, not a tensor/, 'non-tensor value');
  const intKey = craft('intkey.pt', Buffer.concat([P.proto, P.op(EMPTY_DICT), P.int1(7), tensorPickle('0', 2), P.op(SETITEM, STOP)]), [['0', F32x2]]);
  expectCode(tt, () => readTorchCheckpoint(intKey), 'ERR_SCHEMA', /key .*7.* is not a string/, 'non-string key');
  const dup = craft('dup.pt', Buffer.concat([P.proto, P.op(EMPTY_DICT, MARK), P.str('a'), tensorPickle('0', 2), P.str('a'), tensorPickle('0', 2), P.op(SETITEMS, STOP)]), [['0', F32x2]]);
  expectCode(tt, () => readTorchCheckpoint(dup), 'ERR_DUPLICATE_KEY', /"a"/, 'duplicate key');
  const missing = craft('missing-record.pt', Buffer.concat([P.proto, P.op(EMPTY_DICT), P.str('a'), tensorPickle('9', 2), P.op(SETITEM, STOP)]), [['0', F32x2]]);
  expectCode(tt, () => readTorchCheckpoint(missing), 'ERR_SCHEMA', /archive\/data\/9.*missing/, 'missing storage record');
  const short = craft('short-record.pt', Buffer.concat([P.proto, P.op(EMPTY_DICT), P.str('a'), tensorPickle('0', 2), P.op(SETITEM, STOP)]), [['0', F32x2.subarray(0, 4)]]);
  expectCode(tt, () => readTorchCheckpoint(short), 'ERR_SIZE_MISMATCH', /data\/0 holds 4 bytes/, 'storage record too short');
  const cplx = craft('complex.pt', Buffer.concat([P.proto, P.global('torch', 'ComplexFloatStorage'), P.op(STOP)]));
  expectCode(tt, () => readTorchCheckpoint(cplx), 'ERR_DTYPE', /ComplexFloatStorage/, 'complex storage');
  const noStop = craft('nostop.pt', Buffer.concat([P.proto, P.op(EMPTY_DICT)]));
  expectCode(tt, () => readTorchCheckpoint(noStop), 'ERR_TRUNCATED', /no STOP/, 'pickle without STOP');
  const list = craft('list.pt', Buffer.concat([P.proto, P.op(0x5d, STOP)]));
  expectCode(tt, () => readTorchCheckpoint(list), 'ERR_SCHEMA', /list of 0, not a dict/, 'top-level list');
  // A crafted checkpoint whose tensor is a well-formed 1-entry dict reads fine (sanity check of the crafting).
  const good = craft('good.pt', Buffer.concat([P.proto, P.op(EMPTY_DICT), P.str('a'), tensorPickle('0', 2), P.op(SETITEM, STOP)]), [['0', F32x2]]);
  tt.same(values(readTorchCheckpoint(good).tensors.get('a')!), [1.5, -2], 'crafted good file');

  // No data.pkl; a TorchScript archive.
  const noPkl = path.join(tmp, 'nopkl.pt');
  fs.writeFileSync(noPkl, makeZip([['archive/version', Buffer.from('3\n')]]));
  expectCode(tt, () => readTorchCheckpoint(noPkl), 'ERR_SCHEMA', /no <archive>\/data\.pkl/, 'zip without data.pkl');
  expectCode(tt, () => readTorchCheckpoint(path.join(FIXTURES, 'tiny32.pt')), 'ERR_SCHEMA', /TorchScript/, 'TorchScript archive');
});

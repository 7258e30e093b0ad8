// Tests for lib/checkpoint/safetensors.ts: pure-TypeScript safetensors I/O.
// Run: npx tap test/safetensors.test.ts
import t, { Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

import {
  assertSameLayout,
  bfloat16BitsToFloat32,
  bfloat16ToFloat32Array,
  CheckpointError,
  CheckpointErrorCode,
  compareStateDicts,
  DType,
  DTYPES,
  dtypeSize,
  float16BitsToFloat32,
  float16ToFloat32Array,
  float32ArrayToBFloat16,
  float32ArrayToFloat16,
  float32Bits,
  float32ToBFloat16Bits,
  float32ToFloat16Bits,
  findNonFinite,
  fromFloat32Array,
  LazyTensor,
  openSafetensors,
  openSharded,
  parseSafetensors,
  RawTensor,
  readSafetensors,
  readSafetensorsAsync,
  readSharded,
  readShardedIndex,
  toFloat32Array,
  typedView,
  writeSafetensors,
  writeSafetensorsAsync,
  writeSharded,
  writeShardedAsync,
} from '../lib/checkpoint/safetensors';

const PYTHON = process.env['TANGENT_TEST_PYTHON'] ?? '/usr/bin/python3';
const HAVE_PYTHON = fs.existsSync(PYTHON);
const NO_PYTHON = HAVE_PYTHON ? false : `${PYTHON} not found: Python interop not checked`;
const FIXTURES = path.join(__dirname, 'fixtures');

// ---------------------------------------------------------------------------
// helpers

type T = Test;

/** A fresh temporary directory, removed when the test ends. */
function tmpDir(tt: T): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'safetensors-test-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function bytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function tensor(dtype: DType, shape: number[], a: ArrayBufferView): RawTensor {
  return { dtype, shape, data: bytes(a) };
}

/** A tensor of every dtype, with awkward values. */
function everyDtype(): Array<[string, RawTensor]> {
  return [
    ['u8_odd', tensor('uint8', [3], new Uint8Array([0, 255, 7]))], // odd length: later tensors unaligned
    ['f32', tensor('float32', [2, 3], new Float32Array([0, -0, 1.5, -3.25, 3.4028234663852886e38, 1.401298464324817e-45]))],
    ['f64', tensor('float64', [2], new Float64Array([Math.PI, -5e-324]))],
    ['f16', tensor('float16', [4], new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001]))],
    ['bf16', tensor('bfloat16', [3], new Uint16Array([0x3f80, 0xc000, 0x4049]))],
    ['i64', tensor('int64', [3], new BigInt64Array([-1n, 2n ** 53n + 1n, 2n ** 63n - 1n]))],
    ['i32', tensor('int32', [2, 2], new Int32Array([-2147483648, 2147483647, 0, 7]))],
    ['i16', tensor('int16', [2], new Int16Array([-32768, 32767]))],
    ['i8', tensor('int8', [3], new Int8Array([-128, 127, 0]))],
    ['bool', tensor('bool', [4], new Uint8Array([1, 0, 0, 1]))],
    ['scalar', tensor('float32', [], new Float32Array([42.5]))],
    ['empty', tensor('float32', [0, 3], new Float32Array(0))],
    ['10', tensor('int8', [1], new Int8Array([10]))], // integer-like names: JS objects would reorder them
    ['2', tensor('int8', [1], new Int8Array([2]))],
  ];
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

/** Builds a file by hand: [u64 length][header][data]. */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), headerLen?: number): Buffer {
  const json = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLen ?? json.length));
  return Buffer.concat([len, json, data]);
}

interface ExpectedError {
  code: CheckpointErrorCode;
  file?: string;
  tensor?: string;
  match?: RegExp;
}

function checkError(tt: T, e: unknown, exp: ExpectedError, label: string): void {
  if (!(e instanceof CheckpointError)) {
    tt.fail(`${label}: expected CheckpointError ${exp.code}, got ${String(e)}`);
    return;
  }
  tt.equal(e.code, exp.code, `${label}: code`);
  if (exp.file !== undefined) {
    tt.equal(e.file, exp.file, `${label}: .file`);
    tt.ok(e.message.includes(exp.file), `${label}: message names the file`);
  }
  if (exp.tensor !== undefined) {
    tt.equal(e.tensor, exp.tensor, `${label}: .tensor`);
    tt.ok(e.message.includes(JSON.stringify(exp.tensor)), `${label}: message names the tensor`);
  }
  if (exp.match !== undefined) tt.match(e.message, exp.match, `${label}: message`);
}

function expectThrow(tt: T, fn: () => unknown, exp: ExpectedError, label = 'throws'): void {
  try {
    fn();
  } catch (e) {
    checkError(tt, e, exp, label);
    return;
  }
  tt.fail(`${label}: expected CheckpointError ${exp.code}, nothing thrown`);
}

async function expectReject(tt: T, fn: () => Promise<unknown>, exp: ExpectedError, label = 'rejects'): Promise<void> {
  try {
    await fn();
  } catch (e) {
    checkError(tt, e, exp, label);
    return;
  }
  tt.fail(`${label}: expected CheckpointError ${exp.code}, nothing thrown`);
}

/** Writes `content` and checks that readSafetensors, readSafetensorsAsync and openSafetensors all reject it. */
async function expectBadFile(tt: T, content: Uint8Array, exp: Omit<ExpectedError, 'file'>, opts: Parameters<typeof readSafetensors>[1] = {}): Promise<void> {
  const file = path.join(tmpDir(tt), 'bad.safetensors');
  fs.writeFileSync(file, content);
  const full = { ...exp, file };
  expectThrow(tt, () => readSafetensors(file, opts), full, 'readSafetensors');
  await expectReject(tt, () => readSafetensorsAsync(file, opts), full, 'readSafetensorsAsync');
  if (exp.code !== 'ERR_NON_FINITE') expectThrow(tt, () => openSafetensors(file, opts), full, 'openSafetensors');
}

const F32x2 = bytes(new Float32Array([1, 2]));

// ---------------------------------------------------------------------------
// round trips

t.test('round trip of every dtype (sync and async), order, metadata, layout', async (tt) => {
  const dir = tmpDir(tt);
  const file = path.join(dir, 'all.safetensors');
  const input = everyDtype();
  const metadata = { format: 'pt', note: 'héllo ✓', empty: '' };
  writeSafetensors(file, input, metadata);

  const raw = fs.readFileSync(file);
  const n = Number(raw.readBigUInt64LE(0));
  tt.equal((8 + n) % 8, 0, 'data section starts at a multiple of 8');
  tt.equal(String.fromCharCode(raw[8]!), '{', 'header starts with {');
  tt.match(raw.subarray(8, 8 + n).toString('utf8'), /^\{.*\} *$/s, 'header padded with spaces only');
  tt.equal(fs.readdirSync(dir).length, 1, 'no temp file left');

  for (const [label, got] of [['sync', readSafetensors(file)], ['async', await readSafetensorsAsync(file)]] as const) {
    tt.same([...got.tensors.keys()], input.map(([k]) => k), `${label}: file order = write order`);
    tt.same(got.metadata, metadata, `${label}: metadata`);
    for (const [name, want] of input) {
      const have = got.tensors.get(name)!;
      tt.equal(have.dtype, want.dtype, `${label} ${name} dtype`);
      tt.same(have.shape, want.shape, `${label} ${name} shape`);
      tt.ok(sameBytes(have.data, want.data), `${label} ${name} bytes`);
    }
  }

  // zero-copy: all tensors are views into one buffer
  const { tensors } = readSafetensors(file);
  const buffers = new Set([...tensors.values()].map((x) => x.data.buffer));
  tt.equal(buffers.size, 1, 'tensors share one buffer (zero-copy views)');
  const f32 = tensors.get('f32')!;
  tt.equal(f32.data.byteOffset % 4, 3, 'f32 after a 3-byte tensor is unaligned in the file');
  tt.same([...typedView(f32 as RawTensor & { dtype: 'float32' })], [...new Float32Array([0, -0, 1.5, -3.25, 3.4028234663852886e38, 1.401298464324817e-45])], 'typedView copes with unaligned data');
  tt.same([...typedView(tensors.get('i64')! as RawTensor & { dtype: 'int64' })], [-1n, 2n ** 53n + 1n, 2n ** 63n - 1n], 'int64 exact');
  tt.ok(Object.is(toFloat32Array(f32)[1], -0), '-0 preserved');
});

t.test('writer accepts a Map, empty input, and writes no __metadata__ when none', async (tt) => {
  const dir = tmpDir(tt);
  const file = path.join(dir, 'm.safetensors');
  writeSafetensors(file, new Map([['a', tensor('float32', [2], F32x2)]]));
  const raw = fs.readFileSync(file);
  tt.notMatch(raw.toString('latin1'), /__metadata__/, 'no __metadata__ key');
  tt.same(readSafetensors(file).metadata, {});
  const empty = path.join(dir, 'empty.safetensors');
  await writeSafetensorsAsync(empty, []);
  tt.equal(readSafetensors(empty).tensors.size, 0, 'empty checkpoint round trips');
  tt.equal(fs.statSync(empty).size, 16, '{} padded to 8 bytes');
});

t.test('parseSafetensors works on an in-memory buffer', async (tt) => {
  const file = path.join(tmpDir(tt), 'x.safetensors');
  writeSafetensors(file, [['w', tensor('float32', [2], F32x2)]]);
  const got = parseSafetensors(fs.readFileSync(file));
  tt.same([...typedView(got.tensors.get('w')! as RawTensor & { dtype: 'float32' })], [1, 2]);
  expectThrow(tt, () => parseSafetensors(new Uint8Array(3)), { code: 'ERR_TRUNCATED', file: '<buffer>' });
});

// ---------------------------------------------------------------------------
// Python interop

t.test('reads a file written by Python (standard-library writer mimicking the reference)', async (tt) => {
  const file = path.join(FIXTURES, 'py_written.safetensors');
  const { tensors, metadata } = readSafetensors(file);
  tt.same(metadata, { format: 'pt', source: 'gen_safetensors.py', note: 'héllo ✓' });
  tt.same([...tensors.keys()], ['layer.f64', 'layer.i64', 'empty', 'layer.f32', 'layer.i32', 'scalar', 'layer.bf16', 'layer.f16', 'layer.i16', 'layer.bool', 'layer.u8', 'ünïcode.i8'], 'file order');
  const v = <D extends DType>(name: string, _d: D) => typedView(tensors.get(name)! as RawTensor & { dtype: D });
  tt.same([...v('layer.f32', 'float32')], [0, 1, -1.5, 3.25, Math.fround(1e-3), 65504]);
  tt.same(tensors.get('layer.f32')!.shape, [2, 3]);
  tt.same([...v('layer.f64', 'float64')], [3.141592653589793, -2.5e-300]);
  tt.same([...v('layer.f16', 'float16')], [0x3c00, 0xc000, 0x7bff, 0x0001]);
  tt.same([...toFloat32Array(tensors.get('layer.f16')!)], [1, -2, 65504, 2 ** -24]);
  tt.same([...v('layer.bf16', 'bfloat16')], [0x3f80, 0xc000, 0x4049]);
  tt.same([...toFloat32Array(tensors.get('layer.bf16')!)], [1, -2, 3.140625]);
  tt.same([...v('layer.i64', 'int64')], [-1n, 2n ** 53n + 1n, 2n ** 63n - 1n]);
  tt.same([...v('layer.i32', 'int32')], [-2147483648, 2147483647, 0, 7]);
  tt.same([...v('layer.i16', 'int16')], [-32768, 32767]);
  tt.same([...v('ünïcode.i8', 'int8')], [-128, 127, 0]);
  tt.same([...v('layer.u8', 'uint8')], [0, 255, 7]);
  tt.same([...v('layer.bool', 'bool')], [1, 0, 0, 1]);
  tt.same(tensors.get('scalar')!.shape, []);
  tt.same([...v('scalar', 'float32')], [42.5]);
  tt.same(tensors.get('empty')!.shape, [0, 3]);
  tt.equal(tensors.get('empty')!.data.byteLength, 0);
});

t.test('the committed Python fixture is what gen_safetensors.py produces', { skip: NO_PYTHON }, async (tt) => {
  const out = path.join(tmpDir(tt), 'regen.safetensors');
  const r = spawnSync(PYTHON, [path.join(FIXTURES, 'gen_safetensors.py'), out], { encoding: 'utf8' });
  tt.equal(r.status, 0, r.stderr);
  tt.ok(sameBytes(fs.readFileSync(out), fs.readFileSync(path.join(FIXTURES, 'py_written.safetensors'))), 'byte-identical');
});

t.test('Python (struct + json) reads files we write', { skip: NO_PYTHON }, async (tt) => {
  const file = path.join(tmpDir(tt), 'ours.safetensors');
  const input = everyDtype();
  input.push(['nonfinite', tensor('float32', [3], new Float32Array([NaN, Infinity, -Infinity]))]);
  input.push(['f16_special', tensor('float16', [3], new Uint16Array([0x7c00, 0xfc00, 0x8000]))]);
  writeSafetensors(file, input, { format: 'pt', note: 'héllo ✓' });
  const r = spawnSync(PYTHON, [path.join(FIXTURES, 'read_safetensors.py'), file], { encoding: 'utf8' });
  tt.equal(r.status, 0, `reader exit status (stderr: ${r.stderr})`);
  const py = JSON.parse(r.stdout) as {
    data_start: number;
    metadata: Record<string, string>;
    order: string[];
    tensors: Record<string, { dtype: string; shape: number[]; values: Array<number | string>; bits?: number[] }>;
  };
  tt.equal(py.data_start % 8, 0, 'aligned data section');
  tt.same(py.metadata, { format: 'pt', note: 'héllo ✓' });
  tt.same(py.order, input.map(([k]) => k), 'header key order');
  const num = (x: number | string): number => (typeof x === 'number' ? x : Number(x)); // "NaN"/"Infinity" strings
  const py_ = (k: string) => py.tensors[k]!;
  tt.same(py_('u8_odd').values, [0, 255, 7]);
  tt.same(py_('f32').values.map(num), [...new Float32Array([0, -0, 1.5, -3.25, 3.4028234663852886e38, 1.401298464324817e-45])]);
  tt.ok(Object.is(py_('f32').values[1], -0), '-0 survives');
  tt.same(py_('f64').values, [Math.PI, -5e-324]);
  tt.same(py_('f16').bits, [0x3c00, 0xc000, 0x7bff, 0x0001]);
  tt.same(py_('f16').values, [1, -2, 65504, 2 ** -24]);
  tt.same(py_('bf16').bits, [0x3f80, 0xc000, 0x4049]);
  tt.same(py_('bf16').values, [1, -2, 3.140625]);
  tt.same(py_('i64').values, ['-1', String(2n ** 53n + 1n), String(2n ** 63n - 1n)]);
  tt.same(py_('i32').values, [-2147483648, 2147483647, 0, 7]);
  tt.same(py_('i16').values, [-32768, 32767]);
  tt.same(py_('i8').values, [-128, 127, 0]);
  tt.same(py_('bool').values, [1, 0, 0, 1]);
  tt.same(py_('scalar').shape, []);
  tt.same(py_('scalar').values, [42.5]);
  tt.same(py_('empty').shape, [0, 3]);
  tt.same(py_('empty').values, []);
  tt.same(py_('nonfinite').values, ['NaN', 'Infinity', '-Infinity']);
  tt.same(py_('f16_special').values, ['Infinity', '-Infinity', -0]);
  for (const [name, tsr] of input) {
    tt.same(py_(name).shape, tsr.shape, `${name} shape`);
  }
});

// ---------------------------------------------------------------------------
// validation: one test per bad input

t.test('bad input: file shorter than 8 bytes', (tt) => expectBadFile(tt, new Uint8Array([1, 2, 3, 4, 5]), { code: 'ERR_TRUNCATED', match: /shorter than the 8-byte/ }));

t.test('bad input: empty file', (tt) => expectBadFile(tt, new Uint8Array(0), { code: 'ERR_TRUNCATED' }));

t.test('bad input: header length past the end of the file', (tt) =>
  expectBadFile(tt, craft({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, F32x2, 1000), { code: 'ERR_HEADER_BOUNDS', match: /1000/ }));

t.test('bad input: header larger than the limit (default 100 MB, configurable)', async (tt) => {
  await expectBadFile(tt, craft('{}', new Uint8Array(0), 100_000_001), { code: 'ERR_HEADER_TOO_LARGE', match: /100000000/ });
  const ok = craft({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, F32x2);
  await expectBadFile(tt, ok, { code: 'ERR_HEADER_TOO_LARGE', match: /maximum of 16 bytes/ }, { maxHeaderBytes: 16 });
});

t.test('bad input: header not valid JSON', (tt) => expectBadFile(tt, craft('{"w": {"dtype": "F32",'), { code: 'ERR_JSON', match: /not valid JSON/ }));

t.test('bad input: header JSON not an object', async (tt) => {
  await expectBadFile(tt, craft('[1, 2]'), { code: 'ERR_JSON', match: /must be a JSON object, got an array/ });
  await expectBadFile(tt, craft('null'), { code: 'ERR_JSON', match: /got null/ });
});

t.test('bad input: header not valid UTF-8', async (tt) => {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(4n);
  await expectBadFile(tt, Buffer.concat([len, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]), { code: 'ERR_JSON', match: /UTF-8/ });
});

t.test('bad input: duplicate tensor key (JSON.parse would keep the last)', async (tt) => {
  const header = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  await expectBadFile(tt, craft(header, F32x2), { code: 'ERR_DUPLICATE_KEY', tensor: 'w', match: /duplicate key "w"/ });
  // same key spelled with an escape
  const escaped = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"\\u0077":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  await expectBadFile(tt, craft(escaped, F32x2), { code: 'ERR_DUPLICATE_KEY', tensor: 'w' });
});

t.test('bad input: duplicate key inside a tensor entry or __metadata__', async (tt) => {
  const header = '{"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}';
  await expectBadFile(tt, craft(header, F32x2), { code: 'ERR_DUPLICATE_KEY', tensor: 'w', match: /duplicate key "dtype" in "w"/ });
  const meta = '{"__metadata__":{"a":"1","a":"2"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  await expectBadFile(tt, craft(meta, F32x2), { code: 'ERR_DUPLICATE_KEY', match: /duplicate key "a" in "__metadata__"/ });
});

t.test('no false duplicate: same key in different objects, quotes and braces inside strings', async (tt) => {
  const header = '{"__metadata__":{"dtype":"x\\"}{,\\\\","shape":"[\\"w\\"]"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
  const file = path.join(tmpDir(tt), 'ok.safetensors');
  fs.writeFileSync(file, craft(header, F32x2));
  const got = readSafetensors(file);
  tt.same([...got.tensors.keys()], ['a', 'w']);
  tt.same(got.metadata, { dtype: 'x"}{,\\', shape: '["w"]' });
});

t.test('bad input: unknown dtype', async (tt) => {
  await expectBadFile(tt, craft({ w: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)), { code: 'ERR_DTYPE', tensor: 'w', match: /"F8_E4M3"/ });
  await expectBadFile(tt, craft({ w: { dtype: 7, shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)), { code: 'ERR_DTYPE', tensor: 'w' });
});

t.test('bad input: shape not an array of non-negative integers', async (tt) => {
  for (const shape of [[-1], [1.5], '2', [2, null], { 0: 2 }]) {
    await expectBadFile(tt, craft({ w: { dtype: 'F32', shape, data_offsets: [0, 8] } }, F32x2), { code: 'ERR_SHAPE', tensor: 'w' });
  }
});

t.test('bad input: data_offsets not two integers with begin <= end', async (tt) => {
  for (const offs of [[8, 0], [0], [0, 8, 8], [0, '8'], [-1, 7], [0.5, 8], null]) {
    await expectBadFile(tt, craft({ w: { dtype: 'F32', shape: [2], data_offsets: offs } }, F32x2), { code: 'ERR_OFFSETS', tensor: 'w' });
  }
});

t.test('bad input: tensor end past the data section (truncated file)', (tt) =>
  expectBadFile(tt, craft({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, F32x2), { code: 'ERR_TRUNCATED', tensor: 'w', match: /past the end of the data section \(8 bytes\)/ }));

t.test('bad input: byte count != product(shape) x dtype size', (tt) =>
  expectBadFile(tt, craft({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, F32x2), { code: 'ERR_SIZE_MISMATCH', tensor: 'w', match: /hold 8 bytes but float32\[3\] needs 12/ }));

t.test('bad input: overlapping tensor ranges', async (tt) => {
  const data = new Uint8Array(12);
  await expectBadFile(tt, craft({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, data), { code: 'ERR_OVERLAP', tensor: 'b', match: /overlap tensor "a" \[0,8\)/ });
  // identical ranges (aliasing) also overlap
  await expectBadFile(tt, craft({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'I32', shape: [2], data_offsets: [0, 8] },
  }, F32x2), { code: 'ERR_OVERLAP' });
  // overlaps are rejected even when holes are allowed
  await expectBadFile(tt, craft({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, data), { code: 'ERR_OVERLAP', tensor: 'b' }, { allowHoles: true });
});

t.test('holes: rejected by default (spec), accepted with allowHoles', async (tt) => {
  const gap = craft({
    a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
    b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
  }, new Uint8Array(12));
  await expectBadFile(tt, gap, { code: 'ERR_GAP', tensor: 'b', match: /hole: bytes \[4,8\)/ });
  const leading = craft({ b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8));
  await expectBadFile(tt, leading, { code: 'ERR_GAP', tensor: 'b' });
  const trailing = craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(9));
  await expectBadFile(tt, trailing, { code: 'ERR_GAP', match: /5 trailing bytes/ });
  const file = path.join(tmpDir(tt), 'holes.safetensors');
  fs.writeFileSync(file, gap);
  tt.same([...readSafetensors(file, { allowHoles: true }).tensors.keys()], ['a', 'b'], 'allowHoles reads it');
  fs.writeFileSync(file, trailing);
  tt.equal(openSafetensors(file, { allowHoles: true }).keys().length, 1, 'allowHoles: trailing bytes ok');
});

t.test('bad input: __metadata__ not a string -> string map', async (tt) => {
  const w = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  await expectBadFile(tt, craft({ __metadata__: { epoch: 3 }, w }, F32x2), { code: 'ERR_METADATA', match: /__metadata__\["epoch"\] must be a string/ });
  await expectBadFile(tt, craft({ __metadata__: ['a'], w }, F32x2), { code: 'ERR_METADATA' });
  await expectBadFile(tt, craft({ __metadata__: 'x', w }, F32x2), { code: 'ERR_METADATA' });
  const file = path.join(tmpDir(tt), 'nullmeta.safetensors');
  fs.writeFileSync(file, craft({ __metadata__: null, w }, F32x2));
  tt.same(readSafetensors(file).metadata, {}, '__metadata__: null accepted as none');
});

t.test('bad input: tensor entry not an object / missing field', async (tt) => {
  await expectBadFile(tt, craft({ w: [1, 2] }), { code: 'ERR_SCHEMA', tensor: 'w' });
  await expectBadFile(tt, craft({ w: { dtype: 'F32', shape: [2] } }, F32x2), { code: 'ERR_SCHEMA', tensor: 'w', match: /data_offsets/ });
});

t.test('non-finite check: allow / warn / error, with float16 and bfloat16 bit decoding', async (tt) => {
  const dir = tmpDir(tt);
  const cases: Array<[string, RawTensor, number]> = [
    ['f32', tensor('float32', [4], new Float32Array([1, NaN, 2, -Infinity])), 1],
    ['f64', tensor('float64', [3], new Float64Array([1, 2, Infinity])), 2],
    ['f16', tensor('float16', [4], new Uint16Array([0x3c00, 0x7bff, 0xfc00, 0x7e00])), 2], // 65504 is finite
    ['bf16', tensor('bfloat16', [3], new Uint16Array([0x7f7f, 0x7fc0, 0x7f80])), 1], // 0x7f7f is the largest finite
  ];
  for (const [name, tsr, first] of cases) {
    const file = path.join(dir, `${name}.safetensors`);
    writeSafetensors(file, [['ok', tensor('float32', [1], new Float32Array([0]))], [name, tsr]]);
    tt.equal(readSafetensors(file).tensors.size, 2, `${name}: allowed by default`);
    await expectBadFile(tt, fs.readFileSync(file), { code: 'ERR_NON_FINITE', tensor: name, match: new RegExp(`first at flat index ${first}`) }, { nonFinite: 'error' });
    const warnings: string[] = [];
    readSafetensors(file, { nonFinite: 'warn', onWarning: (m) => warnings.push(m) });
    tt.equal(warnings.length, 1, `${name}: one warning`);
    tt.ok(warnings[0]!.includes(file) && warnings[0]!.includes(JSON.stringify(name)), `${name}: warning names file and tensor`);
    const r = openSafetensors(file, { nonFinite: 'error' });
    tt.equal(r.read('ok').data.byteLength, 4, 'lazy reader: finite tensor ok');
    expectThrow(tt, () => r.read(name), { code: 'ERR_NON_FINITE', file, tensor: name }, 'lazy read');
    r.close();
  }
  tt.same(findNonFinite(tensor('int32', [1], new Int32Array([-1]))), { count: 0, first: -1 }, 'ints are never non-finite');
  tt.same(findNonFinite(tensor('float16', [2], new Uint16Array([0x7c00, 0x7c01]))), { count: 2, first: 0 });
});

// ---------------------------------------------------------------------------
// writer validation and atomicity

t.test('writer rejects bad input before creating any file', async (tt) => {
  const dir = tmpDir(tt);
  const file = path.join(dir, 'out.safetensors');
  const good = tensor('float32', [2], F32x2);
  expectThrow(tt, () => writeSafetensors(file, [['w', tensor('float32', [3], F32x2)]]), { code: 'ERR_SIZE_MISMATCH', file, tensor: 'w', match: /8 bytes but float32\[3\] needs 12/ });
  expectThrow(tt, () => writeSafetensors(file, [['w', good], ['w', good]]), { code: 'ERR_DUPLICATE_KEY', file, tensor: 'w' });
  expectThrow(tt, () => writeSafetensors(file, [['__metadata__', good]]), { code: 'ERR_INVALID_ARGUMENT', file, tensor: '__metadata__' });
  expectThrow(tt, () => writeSafetensors(file, [['w', { ...good, dtype: 'complex64' as DType }]]), { code: 'ERR_DTYPE', file, tensor: 'w' });
  expectThrow(tt, () => writeSafetensors(file, [['w', { ...good, shape: [-2] }]]), { code: 'ERR_SHAPE', file, tensor: 'w' });
  expectThrow(tt, () => writeSafetensors(file, [['w', { dtype: 'float32', shape: [2], data: new Float32Array(2) as unknown as Uint8Array }]]), { code: 'ERR_INVALID_ARGUMENT', file, tensor: 'w' });
  expectThrow(tt, () => writeSafetensors(file, [['w', good]], { n: 3 } as unknown as Record<string, string>), { code: 'ERR_METADATA', file });
  tt.same(fs.readdirSync(dir), [], 'nothing written');
});

t.test('atomic write: failure mid-write leaves neither output nor temp file; previous output intact', async (tt) => {
  const dir = tmpDir(tt);
  const file = path.join(dir, 'out.safetensors');
  let loaded = 0;
  const bad: LazyTensor = { dtype: 'float32', shape: [4], load: () => { loaded++; return new Uint8Array(12); } }; // 12 != 16
  const big = tensor('float32', [1 << 16], new Float32Array(1 << 16)); // written before the failure
  expectThrow(tt, () => writeSafetensors(file, [['big', big], ['bad', bad]]), { code: 'ERR_SIZE_MISMATCH', file, tensor: 'bad', match: /12 bytes but float32\[4\] needs 16/ });
  tt.equal(loaded, 1, 'failure happened while writing (after the first tensor)');
  tt.same(fs.readdirSync(dir), [], 'no output, no temp file');

  // a previous good file survives a failed overwrite untouched
  writeSafetensors(file, [['w', tensor('float32', [2], F32x2)]]);
  const before = fs.readFileSync(file);
  expectThrow(tt, () => writeSafetensors(file, [['big', big], ['bad', bad]]), { code: 'ERR_SIZE_MISMATCH', tensor: 'bad' });
  tt.same(fs.readdirSync(dir), ['out.safetensors'], 'no temp file');
  tt.ok(sameBytes(fs.readFileSync(file), before), 'previous output intact');

  // a throwing loader, async writer
  const boom: LazyTensor = { dtype: 'float32', shape: [1], load: () => { throw new Error('loader exploded'); } };
  await expectReject(tt, () => writeSafetensorsAsync(file, [['big', big], ['boom', boom]]), { code: 'ERR_IO', file, match: /loader exploded/ });
  tt.same(fs.readdirSync(dir), ['out.safetensors'], 'async: no temp file');
  tt.ok(sameBytes(fs.readFileSync(file), before), 'async: previous output intact');
  const asyncBad = { dtype: 'float32' as const, shape: [4], load: async () => new Uint8Array(3) };
  await expectReject(tt, () => writeSafetensorsAsync(path.join(dir, 'new.safetensors'), [['x', asyncBad]]), { code: 'ERR_SIZE_MISMATCH', tensor: 'x' });
  tt.same(fs.readdirSync(dir), ['out.safetensors'], 'async lazy size mismatch: nothing left');
});

t.test('writing into a missing directory fails cleanly with ERR_IO', async (tt) => {
  const file = path.join(tmpDir(tt), 'no', 'such', 'dir.safetensors');
  expectThrow(tt, () => writeSafetensors(file, [['w', tensor('float32', [2], F32x2)]]), { code: 'ERR_IO', file });
});

// ---------------------------------------------------------------------------
// lazy reader

t.test('openSafetensors: header only, tensors on demand, streaming copy', async (tt) => {
  const dir = tmpDir(tt);
  const file = path.join(dir, 'src.safetensors');
  const input = everyDtype();
  writeSafetensors(file, input, { k: 'v' });
  const full = readSafetensors(file);
  const r = openSafetensors(file);
  tt.same(r.keys(), input.map(([k]) => k), 'keys in file order');
  tt.same(r.metadata, { k: 'v' });
  tt.ok(r.has('f32') && !r.has('nope'));
  const info = r.info('f32');
  tt.equal(info.byteLength, 24);
  tt.equal(info.file, file);
  tt.same(fs.readFileSync(file).subarray(info.offset, info.offset + 24), Buffer.from(full.tensors.get('f32')!.data), 'info.offset is absolute');
  for (const [name] of input) {
    const a = r.read(name);
    const b = await r.readAsync(name);
    tt.ok(sameBytes(a.data, full.tensors.get(name)!.data) && sameBytes(b.data, a.data), `${name} bytes`);
    tt.equal(a.data.byteOffset, 0, `${name}: own aligned buffer`);
  }
  tt.same([...r.layout()].map(([k, l]) => [k, l.dtype, l.shape]), input.map(([k, x]) => [k, x.dtype, x.shape]));
  expectThrow(tt, () => r.read('nope'), { code: 'ERR_NOT_FOUND', file, tensor: 'nope' });

  // stream a copy tensor by tensor through lazy tensors
  const copy = path.join(dir, 'copy.safetensors');
  writeSafetensors(copy, r.keys().map((k) => [k, r.lazy(k)] as const), r.metadata);
  tt.ok(sameBytes(fs.readFileSync(copy), fs.readFileSync(file)), 'streamed copy is byte-identical');
  r.close();
  r.close(); // idempotent
  expectThrow(tt, () => r.read('f32'), { code: 'ERR_IO', file, tensor: 'f32', match: /closed/ });
});

t.test('openSafetensors reads only the header', async (tt) => {
  const file = path.join(tmpDir(tt), 'big.safetensors');
  writeSafetensors(file, [['w', tensor('float32', [1 << 20], new Float32Array(1 << 20))]]);
  // Count the bytes read through fs.readSync (patched on the real module object,
  // which the library's namespace import reads through).
  const realFs = require('node:fs') as { readSync: typeof fs.readSync };
  const orig = realFs.readSync;
  let total = 0;
  realFs.readSync = ((...args: unknown[]) => {
    const n = (orig as (...a: unknown[]) => number)(...args);
    total += n;
    return n;
  }) as typeof fs.readSync;
  let r;
  try {
    r = openSafetensors(file);
    tt.ok(total > 0 && total < 200, `read ${total} bytes to open a 4 MB file`);
    r.read('w');
    tt.equal(total, fs.statSync(file).size, 'then exactly the tensor bytes on demand');
  } finally {
    realFs.readSync = orig;
    r?.close();
  }
});

// ---------------------------------------------------------------------------
// sharded checkpoints

function shardInput(): Array<[string, RawTensor]> {
  const out: Array<[string, RawTensor]> = [];
  for (let i = 0; i < 5; i++) {
    const v = new Float32Array(100).map((_, j) => i * 1000 + j);
    out.push([`layers.${i}.weight`, tensor('float32', [10, 10], v)]); // 400 bytes
    out.push([`layers.${i}.bias`, tensor('bfloat16', [10], float32ArrayToBFloat16(new Float32Array(10).fill(i)))]); // 20 bytes
  }
  out.push(['head.weight', tensor('float32', [1000], new Float32Array(1000).fill(0.5))]); // 4000 bytes > max
  out.push(['head.bias', tensor('float32', [1], new Float32Array([7]))]);
  return out;
}

t.test('sharded: write, index, read back (sync, async, lazy)', async (tt) => {
  const dir = path.join(tmpDir(tt), 'ckpt');
  const input = shardInput();
  const res = writeSharded(dir, input, { maxShardBytes: 1000, metadata: { format: 'pt' }, indexMetadata: { note: 'x' } });
  // greedy: [w0,b0 (420), w1,b1 (840)], [w2,b2,w3,b3], [w4,b4], [head.weight] alone, [head.bias]
  tt.same(res.shards.map((s) => path.basename(s)), [1, 2, 3, 4, 5].map((i) => `model-0000${i}-of-00005.safetensors`));
  tt.same(fs.readdirSync(dir).sort(), [...res.shards.map((s) => path.basename(s)), 'model.safetensors.index.json'].sort(), 'no temp files');
  tt.equal(res.totalSize, 5 * 420 + 4004);
  const indexJson = JSON.parse(fs.readFileSync(res.indexFile, 'utf8')) as { metadata: Record<string, unknown>; weight_map: Record<string, string> };
  tt.same(indexJson.metadata, { note: 'x', total_size: 5 * 420 + 4004 });
  tt.equal(indexJson.weight_map['layers.1.bias'], 'model-00001-of-00005.safetensors');
  tt.equal(indexJson.weight_map['head.weight'], 'model-00004-of-00005.safetensors', 'oversized tensor gets its own shard');
  tt.equal(indexJson.weight_map['head.bias'], 'model-00005-of-00005.safetensors');

  for (const where of [dir, res.indexFile]) {
    const idx = readShardedIndex(where);
    tt.equal(idx.indexFile, res.indexFile);
    tt.same([...idx.weightMap.keys()], input.map(([k]) => k), 'weight_map in tensor order');
    tt.same(idx.shards, res.shards.map((s) => path.basename(s)));
    tt.same(idx.metadata, { note: 'x', total_size: 5 * 420 + 4004 });
  }
  const all = readSharded(dir);
  tt.same([...all.tensors.keys()], input.map(([k]) => k));
  const r = openSharded(dir);
  tt.same(r.keys(), input.map(([k]) => k));
  tt.same([...r.shardMetadata().values()], Array(5).fill({ format: 'pt' }));
  for (const [name, want] of input) {
    tt.ok(sameBytes(all.tensors.get(name)!.data, want.data), `readSharded ${name}`);
    tt.ok(sameBytes(r.read(name).data, want.data), `openSharded ${name}`);
    tt.ok(sameBytes((await r.readAsync(name)).data, want.data), `openSharded async ${name}`);
  }
  tt.same(compareStateDicts(r, input).same, true, 'layout equal');
  expectThrow(tt, () => r.read('nope'), { code: 'ERR_NOT_FOUND', file: res.indexFile, tensor: 'nope' });
  r.close();

  const dir2 = path.join(tmpDir(tt), 'ckpt2');
  const res2 = await writeShardedAsync(dir2, input.map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape, load: async () => v.data }] as const), { maxShardBytes: 1e9, prefix: 'pytorch_model' });
  tt.same(res2.shards.map((s) => path.basename(s)), ['pytorch_model-00001-of-00001.safetensors']);
  tt.equal(path.basename(res2.indexFile), 'pytorch_model.safetensors.index.json');
  tt.equal(readShardedIndex(dir2).weightMap.size, input.length, 'finds the only *.safetensors.index.json');
});

t.test('sharded: failure while writing leaves no files', async (tt) => {
  const dir = path.join(tmpDir(tt), 'ckpt');
  const input: Array<[string, RawTensor | LazyTensor]> = shardInput();
  input.push(['late.bad', { dtype: 'float32', shape: [2], load: () => new Uint8Array(4) }]);
  expectThrow(tt, () => writeSharded(dir, input, { maxShardBytes: 1000 }), { code: 'ERR_SIZE_MISMATCH', tensor: 'late.bad' });
  tt.same(fs.readdirSync(dir), [], 'no shards, no index, no temp files');
  await expectReject(tt, () => writeShardedAsync(dir, input, { maxShardBytes: 1000 }), { code: 'ERR_SIZE_MISMATCH', tensor: 'late.bad' });
  tt.same(fs.readdirSync(dir), [], 'async: nothing left');
});

t.test('sharded index validation', async (tt) => {
  const base = tmpDir(tt);
  let n = 0;
  const fresh = (): { dir: string; index: string; json: { metadata: object; weight_map: Record<string, string> } } => {
    const dir = path.join(base, `c${n++}`);
    const res = writeSharded(dir, shardInput(), { maxShardBytes: 1000 });
    return { dir, index: res.indexFile, json: JSON.parse(fs.readFileSync(res.indexFile, 'utf8')) };
  };

  // missing shard
  let c = fresh();
  fs.unlinkSync(path.join(c.dir, 'model-00003-of-00005.safetensors'));
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_SHARD', file: path.join(c.dir, 'model-00003-of-00005.safetensors'), tensor: 'layers.4.weight', match: /missing/ }, 'missing shard');
  tt.equal(readShardedIndex(c.dir, { validateShards: false }).shards.length, 5, 'validateShards: false checks only the JSON');

  // tensor the index puts in the wrong shard
  c = fresh();
  c.json.weight_map['layers.0.weight'] = 'model-00002-of-00005.safetensors';
  fs.writeFileSync(c.index, JSON.stringify(c.json));
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_SHARD', tensor: 'layers.0.weight' }, 'wrong shard');
  expectThrow(tt, () => openSharded(c.dir), { code: 'ERR_SHARD', tensor: 'layers.0.weight' }, 'wrong shard (openSharded)');

  // tensor in a shard but not in the index
  c = fresh();
  delete c.json.weight_map['layers.1.bias'];
  fs.writeFileSync(c.index, JSON.stringify(c.json));
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_SHARD', file: path.join(c.dir, 'model-00001-of-00005.safetensors'), tensor: 'layers.1.bias', match: /not listed/ }, 'unlisted tensor');

  // duplicate tensor in weight_map
  c = fresh();
  fs.writeFileSync(c.index, fs.readFileSync(c.index, 'utf8').replace('"weight_map": {', '"weight_map": {\n    "head.bias": "model-00001-of-00005.safetensors",'));
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_DUPLICATE_KEY', file: c.index, tensor: 'head.bias' }, 'duplicate weight_map key');

  // path traversal and bad types
  c = fresh();
  c.json.weight_map['head.bias'] = '../elsewhere.safetensors';
  fs.writeFileSync(c.index, JSON.stringify(c.json));
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_SHARD', file: c.index, tensor: 'head.bias', match: /relative/ }, 'path traversal');
  fs.writeFileSync(c.index, JSON.stringify({ weight_map: { a: 3 } }));
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_SHARD', tensor: 'a' }, 'non-string shard');
  fs.writeFileSync(c.index, JSON.stringify({ metadata: {} }));
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_SHARD', match: /weight_map/ }, 'no weight_map');
  fs.writeFileSync(c.index, '{"weight_map": ');
  expectThrow(tt, () => readShardedIndex(c.index), { code: 'ERR_JSON', file: c.index }, 'invalid JSON');

  // a corrupt shard is reported with the shard's name
  c = fresh();
  const shard1 = path.join(c.dir, 'model-00001-of-00005.safetensors');
  fs.truncateSync(shard1, fs.statSync(shard1).size - 1);
  expectThrow(tt, () => readShardedIndex(c.dir), { code: 'ERR_TRUNCATED', file: shard1, tensor: 'layers.1.bias' }, 'truncated shard');

  expectThrow(tt, () => readShardedIndex(path.join(base, 'nope')), { code: 'ERR_IO' }, 'missing index');
  fs.mkdirSync(path.join(base, 'emptydir'));
  expectThrow(tt, () => readShardedIndex(path.join(base, 'emptydir')), { code: 'ERR_SHARD', match: /no model\.safetensors\.index\.json/ }, 'dir without index');
});

// ---------------------------------------------------------------------------
// layout comparison

t.test('compareStateDicts and assertSameLayout', async (tt) => {
  const L = (dtype: DType, ...shape: number[]) => ({ dtype, shape });
  const a = new Map([['x', L('float32', 2, 3)], ['y', L('float32', 4)], ['onlyA', L('int8', 1)], ['z', L('float16', 2)]]);
  const b: Array<[string, { dtype: DType; shape: number[] }]> = [['x', L('float32', 3, 2)], ['y', L('float32', 4)], ['z', L('bfloat16', 2)], ['onlyB', L('int8', 1)]];
  const d = compareStateDicts(a, b);
  tt.same(d, {
    onlyInA: ['onlyA'],
    onlyInB: ['onlyB'],
    shapeMismatches: [{ key: 'x', shapeA: [2, 3], shapeB: [3, 2] }],
    dtypeMismatches: [{ key: 'z', dtypeA: 'float16', dtypeB: 'bfloat16' }],
    same: false,
  });
  tt.equal(compareStateDicts(a, a).same, true);
  tt.equal(compareStateDicts({ tensors: a }, a).same, true, 'accepts {tensors}');
  try {
    assertSameLayout(a, b, { nameA: 'base.safetensors', nameB: 'finetuned.safetensors' });
    tt.fail('should throw');
  } catch (e) {
    checkError(tt, e, { code: 'ERR_KEY_MISMATCH', tensor: 'onlyA' }, 'assertSameLayout');
    const m = (e as Error).message;
    tt.match(m, /1 tensor\(s\) only in base\.safetensors: onlyA/);
    tt.match(m, /1 tensor\(s\) only in finetuned\.safetensors: onlyB/);
    tt.match(m, /x \[2,3\] vs \[3,2\]/);
    tt.match(m, /z float16 vs bfloat16/);
  }
  // dtype-only difference can be ignored
  const c = new Map([...a].map(([k, v]) => [k, k === 'z' ? L('bfloat16', 2) : v]));
  tt.equal(assertSameLayout(a, c, { ignoreDtype: true }).dtypeMismatches.length, 1);
  // truncation of long lists
  const many = new Map(Array.from({ length: 25 }, (_, i) => [`k${i}`, L('float32', 1)] as const));
  try {
    assertSameLayout(many, new Map(), { maxListed: 3 });
    tt.fail('should throw');
  } catch (e) {
    checkError(tt, e, { code: 'ERR_KEY_MISMATCH', tensor: 'k0', match: /25 tensor\(s\) only in a: k0, k1, k2, \.\.\. and 22 more/ }, 'truncated');
    tt.notMatch((e as Error).message, /k3/);
  }
});

// ---------------------------------------------------------------------------
// dtype helpers and float16 / bfloat16 conversion

t.test('dtype sizes', async (tt) => {
  tt.same(Object.fromEntries(DTYPES.map((d) => [d, dtypeSize(d)])), {
    float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
  });
});

t.test('float16 <-> float32 against known bit patterns', async (tt) => {
  const cases: Array<[number, number]> = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff],
    [0.1, 0x2e66], [1 / 3, 0x3555], [Math.PI, 0x4248],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal -> even (0)
    [1.5 * 2 ** -25, 0x0001], // above the tie -> rounds up
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units -> even (2)
    [1 + 2 ** -11, 0x3c00], // tie -> even
    [1 + 3 * 2 ** -11, 0x3c02], // tie -> even (up)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
    [65519, 0x7bff], // below the overflow threshold
    [65520, 0x7c00], // tie at the top rounds to Inf
    [1e6, 0x7c00], [Infinity, 0x7c00], [-Infinity, 0xfc00], [1e-10, 0x0000], [-1e-10, 0x8000],
  ];
  for (const [x, bits] of cases) {
    tt.equal(float32ToFloat16Bits(x), bits, `f16(${x}) = 0x${bits.toString(16)}`);
  }
  tt.equal(float32ToFloat16Bits(NaN) & 0x7e00, 0x7e00, 'NaN -> quiet NaN');
  tt.equal(float32ToFloat16Bits(-NaN) & 0x7c00, 0x7c00);
  tt.equal(float16BitsToFloat32(0x3c00), 1);
  tt.equal(float16BitsToFloat32(0x0001), 2 ** -24);
  tt.equal(float16BitsToFloat32(0x03ff), 1023 * 2 ** -24);
  tt.equal(float16BitsToFloat32(0x7bff), 65504);
  tt.equal(float16BitsToFloat32(0xfc00), -Infinity);
  tt.ok(Object.is(float16BitsToFloat32(0x8000), -0));
  tt.ok(Number.isNaN(float16BitsToFloat32(0x7e00)) && Number.isNaN(float16BitsToFloat32(0xfc01)));
  // every finite bit pattern survives decode -> encode; array versions agree with the scalar ones
  const all = new Uint16Array(65536).map((_, i) => i);
  const decoded = float16ToFloat32Array(all);
  const reencoded = float32ArrayToFloat16(decoded);
  let bad = 0;
  for (let h = 0; h < 65536; h++) {
    const isNaN16 = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN16 ? !Number.isNaN(decoded[h]) : reencoded[h] !== h || decoded[h] !== float16BitsToFloat32(h)) bad++;
  }
  tt.equal(bad, 0, 'all 65536 float16 patterns round trip');
});

/** Reference rounding (exact arithmetic in doubles) of a float32 value to a format with `mantBits` and min exponent. */
function refRound(x: number, mantBits: number, minExp: number, maxFinite: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const bits = float32Bits(x);
  const expField = (bits >>> 23) & 0xff;
  const e = Math.max(expField === 0 ? -126 : expField - 127, minExp);
  const ulp = 2 ** (e - mantBits);
  const q = Math.abs(x) / ulp; // exact
  const fl = Math.floor(q);
  const r = q - fl > 0.5 || (q - fl === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
  const v = r * ulp;
  const limit = maxFinite + 2 ** (Math.floor(Math.log2(maxFinite)) - mantBits - 1); // halfway to the next power
  return Math.sign(x) * (Math.abs(x) >= limit ? Infinity : v);
}

t.test('float32 -> float16 / bfloat16 rounding agrees with a reference on random float32 values', async (tt) => {
  let seed = 12345;
  const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0), seed);
  let badF16 = 0;
  let badBF16 = 0;
  const u32 = new Uint32Array(1);
  const f32 = new Float32Array(u32.buffer);
  for (let i = 0; i < 200000; i++) {
    // bias exponents towards the float16 range (incl. subnormals and overflow) half of the time
    u32[0] = i % 2 === 0 ? rand() : (rand() & 0x807fffff) | (((rand() % 50) + 95) << 23);
    const x = f32[0]!;
    if (Number.isNaN(x)) continue;
    const want16 = refRound(x, 10, -14, 65504);
    const got16 = float16BitsToFloat32(float32ToFloat16Bits(x));
    if (!Object.is(got16, want16) && !(want16 === 0 && got16 === 0)) badF16++;
    const wantBF = refRound(x, 7, -126, 3.3895313892515355e38);
    const gotBF = bfloat16BitsToFloat32(float32ToBFloat16Bits(x));
    if (!(gotBF === wantBF || (Number.isNaN(gotBF) && Number.isNaN(wantBF)))) badBF16++;
  }
  tt.equal(badF16, 0, 'float16 round-to-nearest-even');
  tt.equal(badBF16, 0, 'bfloat16 round-to-nearest-even');
});

t.test('bfloat16 <-> float32 against known bit patterns', async (tt) => {
  const cases: Array<[number, number]> = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3f80], [-2, 0xc000], [Math.PI, 0x4049], [0.1, 0x3dcd],
    [1 + 2 ** -8, 0x3f80], // tie -> even
    [1 + 3 * 2 ** -8, 0x3f82], // tie -> even (up)
    [1 + 2 ** -8 + 2 ** -20, 0x3f81], // above the tie
    [3.4028234663852886e38, 0x7f80], // FLT_MAX rounds up to Inf
    [3.3895313892515355e38, 0x7f7f], // largest finite bfloat16
    [Infinity, 0x7f80], [-Infinity, 0xff80],
    [1e-40, 0x0001], // float32 subnormal -> bfloat16 subnormal
    [2 ** -126, 0x0080], // smallest normal
  ];
  for (const [x, bits] of cases) tt.equal(float32ToBFloat16Bits(x), bits, `bf16(${x}) = 0x${bits.toString(16)}`);
  tt.equal(float32ToBFloat16Bits(NaN), 0x7fc0, 'NaN stays quiet NaN');
  tt.equal(float32ToBFloat16Bits(float32FromBitsLocal(0xff800001)) & 0xffc0, 0xffc0, 'signalling NaN -> quiet NaN, sign kept');
  tt.equal(bfloat16BitsToFloat32(0x4049), 3.140625);
  tt.equal(bfloat16BitsToFloat32(0x0001), 2 ** -133);
  tt.ok(Object.is(bfloat16BitsToFloat32(0x8000), -0));
  const all = new Uint16Array(65536).map((_, i) => i);
  const dec = bfloat16ToFloat32Array(all);
  const enc = float32ArrayToBFloat16(dec);
  let bad = 0;
  for (let h = 0; h < 65536; h++) {
    const isNaN16 = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
    if (isNaN16 ? !Number.isNaN(dec[h]) : enc[h] !== h || dec[h] !== bfloat16BitsToFloat32(h) || float32ToBFloat16Bits(dec[h]!) !== h) bad++;
  }
  tt.equal(bad, 0, 'all 65536 bfloat16 patterns round trip');
});

function float32FromBitsLocal(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0]!;
}

t.test('fromFloat32Array / toFloat32Array', async (tt) => {
  const vals = [1, -2, 0.1, 65504, 1e-8];
  const f16 = fromFloat32Array(vals, [5], 'float16');
  tt.equal(f16.data.byteLength, 10);
  // Expected values from PyTorch (torch.tensor(vals, dtype=float32).half() / .bfloat16()), not from
  // the converters under test.
  tt.same([...toFloat32Array(f16)], [1, -2, 0.0999755859375, 65504, 0]);
  const bf = fromFloat32Array(vals, [5], 'bfloat16');
  tt.same([...toFloat32Array(bf)], [1, -2, 0.10009765625, 65536, 1.0011717677116394e-8]);
  tt.same([...toFloat32Array(fromFloat32Array(vals, [5, 1], 'float64'))], [1, -2, 0.10000000149011612, 65504, 9.99999993922529e-9]);
  tt.throws(() => fromFloat32Array(vals, [2, 2]), RangeError);
});

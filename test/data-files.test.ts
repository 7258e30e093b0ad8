/** Datasets from the user's files: .npy / .npz / safetensors arrays, image folders (sharp), specs, splits, cache dir. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { deflated, npy, stored, zip as zipRecords } from './fixtures/security/craft';
import { writeSafetensors } from '../lib/checkpoint/safetensors';
import { defaultCacheDir } from '../lib/data/cache';
import { loadImageFolder, loadNpyDataset, loadSafetensorsDataset, readNpz, parseNpy } from '../lib/data/files';
import { parseDataSpec, prepareData } from '../lib/data/spec';
import { batchTensors } from '../lib/data/splits';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-data-files-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A zip archive of the members, stored or deflated (np.savez / np.savez_compressed). */
const zip = (members: Array<[string, Buffer]>, deflate: boolean): Buffer => zipRecords(members.map(([n, b]) => (deflate ? deflated(n, b) : stored(n, b))));

t.test('.npy images (uint8 [N, H, W]) with int64 labels beside them', async (t) => {
  const px = Uint8Array.from({ length: 3 * 2 * 2 }, (_, i) => i * 20);
  fs.writeFileSync(path.join(tmp, 'digits.npy'), npy('|u1', [3, 2, 2], px));
  fs.writeFileSync(path.join(tmp, 'digits.labels.npy'), npy('<i8', [3], BigInt64Array.from([2n, 0n, 1n])));
  const s = loadNpyDataset(path.join(tmp, 'digits.npy'));
  t.same(s.shape, [1, 2, 2]);
  t.equal(s.count, 3);
  t.equal(s.classes, 3, 'classes = max label + 1');
  t.same([...s.labels], [2, 0, 1]);
  t.equal(s.images[5], Math.fround(100 / 255), 'uint8 pixels / 255');
  // int64 labels end to end: a batch carries them as an int64 tensor.
  const b = batchTensors(s, [0, 2]);
  t.equal(b.y.dtype, 'int64');
  t.same([...(b.y.data() as BigInt64Array)], [2n, 1n]);
  b.x.dispose();
  b.y.dispose();
});

t.test('.npy: NHWC float32 with three channels is transposed to CHW', async (t) => {
  // [1, 2, 2, 3]: pixel (y, x) has channels (10y + x, 100 + 10y + x, 200 + 10y + x).
  const v = new Float32Array(12);
  for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) for (let c = 0; c < 3; c++) v[(y * 2 + x) * 3 + c] = 100 * c + 10 * y + x;
  fs.writeFileSync(path.join(tmp, 'rgb.npy'), npy('<f4', [1, 2, 2, 3], v));
  fs.writeFileSync(path.join(tmp, 'rgb_labels.npy'), npy('<i4', [1], Int32Array.from([0])));
  const s = loadNpyDataset(path.join(tmp, 'rgb.npy'));
  t.same(s.shape, [3, 2, 2]);
  t.same([...s.images], [0, 1, 10, 11, 100, 101, 110, 111, 200, 201, 210, 211]);
});

t.test('.npy errors name the file and the problem', async (t) => {
  const f = path.join(tmp, 'bad.npy');
  fs.writeFileSync(f, npy('<f4', [2, 2], new Float32Array(4), true));
  t.throws(() => parseNpy(fs.readFileSync(f), f), { name: 'DatasetFileError', message: `${f}: Fortran-order arrays are not supported (save with np.ascontiguousarray)` });
  fs.writeFileSync(f, npy('>f4', [2, 2], new Float32Array(4)));
  t.throws(() => parseNpy(fs.readFileSync(f), f), { message: /^.*bad\.npy: unsupported \.npy dtype '>f4'/ });
  fs.writeFileSync(f, npy('<f4', [2, 2], new Float32Array(3)));
  t.throws(() => parseNpy(fs.readFileSync(f), f), { message: `${f}: truncated: 4 values of 4 bytes need 16 bytes, the file has 12` });
  const lone = path.join(tmp, 'lone', 'x.npy');
  fs.mkdirSync(path.dirname(lone));
  fs.writeFileSync(lone, npy('|u1', [1, 2, 2], new Uint8Array(4)));
  t.throws(() => parseDataSpec(lone), { name: 'DatasetFileError', message: `${lone}: no labels file beside it (looked for x.labels.npy, x_labels.npy, labels.npy)` });
});

t.test('.npz, stored and deflated, with images/labels or x/y', async (t) => {
  const imgs = npy('|u1', [4, 1, 2, 2], Uint8Array.from({ length: 16 }, (_, i) => i));
  const labs = npy('<i8', [4], BigInt64Array.from([0n, 1n, 1n, 0n]));
  for (const deflate of [false, true]) {
    const f = path.join(tmp, `set-${deflate}.npz`);
    fs.writeFileSync(f, zip([['x.npy', imgs], ['y.npy', labs]], deflate));
    t.same([...readNpz(f).keys()], ['x', 'y']);
    const s = loadNpyDataset(f);
    t.same(s.shape, [1, 2, 2], deflate ? 'deflated' : 'stored');
    t.same([...s.labels], [0, 1, 1, 0]);
    t.equal(s.images[15], Math.fround(15 / 255));
  }
  const f = path.join(tmp, 'nolabels.npz');
  fs.writeFileSync(f, zip([['images.npy', imgs]], false));
  t.throws(() => loadNpyDataset(f), { message: `${f}: no labels array (looked for 'labels', 'y', 'Y'; has 'images')` });
});

t.test('.npz from a stranger: read through the hardened zip reader', async (t) => {
  const imgs = npy('|u1', [4, 1, 2, 2], Uint8Array.from({ length: 16 }, (_, i) => i));
  const labs = npy('<i8', [4], BigInt64Array.from([0n, 1n, 1n, 0n]));
  // The local header names another member than the central directory.
  const renamed = zip([['x.npy', imgs], ['y.npy', labs]], false);
  renamed.write('z', 30, 'latin1'); // first local header's name: x.npy -> z.npy
  const f1 = path.join(tmp, 'renamed.npz');
  fs.writeFileSync(f1, renamed);
  t.throws(() => readNpz(f1), { name: 'DatasetFileError', message: `${f1}: not a readable .npz: local header of zip entry "x.npy" names "z.npy": the archive is inconsistent` });
  // A member that inflates far beyond the size its record declares (a DEFLATE bomb): refused at the
  // declared size, never inflated in full.
  const big = Buffer.alloc(64 * 2 ** 20);
  const bomb = zip([['x.npy', imgs], ['y.npy', big]], true);
  const cd = bomb.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])); // the second central record
  bomb.writeUInt32LE(100, cd + 24); // declares 100 bytes
  const f2 = path.join(tmp, 'bomb.npz');
  fs.writeFileSync(f2, bomb);
  // (Only a prefix is inflated, for the .npy header, which these zeros are not.)
  t.throws(() => readNpz(f2), { name: 'DatasetFileError', message: /bomb\.npz:y\.npy: not a \.npy file \(no \\x93NUMPY magic\)/ });
});

t.test('safetensors datasets: images + labels', async (t) => {
  const f = path.join(tmp, 'set.safetensors');
  const images = { dtype: 'uint8' as const, shape: [3, 1, 2, 2], data: Uint8Array.from({ length: 12 }, (_, i) => 10 * i) };
  const labels = { dtype: 'int64' as const, shape: [3], data: new Uint8Array(BigInt64Array.from([1n, 0n, 4n]).buffer) };
  writeSafetensors(f, [['images', images], ['labels', labels]]);
  const s = loadSafetensorsDataset(f);
  t.equal(s.name, 'set');
  t.same(s.shape, [1, 2, 2]);
  t.same([...s.labels], [1, 0, 4]);
  t.equal(s.classes, 5);
  t.equal(s.images[11], Math.fround(110 / 255));
  const bad = path.join(tmp, 'badlab.safetensors');
  writeSafetensors(bad, [['images', images], ['labels', { dtype: 'float32', shape: [3], data: new Uint8Array(12) }]]);
  t.throws(() => loadSafetensorsDataset(bad), { message: `${bad}: labels must have an integer dtype, got float32` });
});

t.test('image folders: PNG decoded, resized and converted by sharp', async (t) => {
  const sharp = require('sharp') as (input: Buffer, o: object) => { toColourspace(s: string): { png(): { toFile(f: string): Promise<unknown> } } };
  const dir = path.join(tmp, 'shapes');
  for (const [c, v] of [['circle', 40], ['square', 200]] as const) {
    fs.mkdirSync(path.join(dir, c), { recursive: true });
    for (let i = 0; i < 3; i++) await sharp(Buffer.alloc(16, v + i), { raw: { width: 4, height: 4, channels: 1 } }).toColourspace('b-w').png().toFile(path.join(dir, c, `${i}.png`));
  }
  fs.writeFileSync(path.join(dir, 'square', 'notes.txt'), 'ignored');
  const s = await loadImageFolder(dir);
  t.same(s.shape, [1, 4, 4], 'grey PNGs → one channel, their own size');
  t.same(s.classNames, ['circle', 'square']);
  t.same([...s.labels], [0, 0, 0, 1, 1, 1]);
  t.equal(s.images[0], Math.fround(40 / 255));
  t.equal(s.images[5 * 16], Math.fround(202 / 255));
  const rgb = await loadImageFolder(dir, { size: [2, 2], channels: 3 });
  t.same(rgb.shape, [3, 2, 2]);
  t.equal(rgb.images[12 * 3 + 4], Math.fround(200 / 255), 'grey → RGB keeps the value in every channel');
  fs.mkdirSync(path.join(dir, 'empty'));
  t.throws(() => parseDataSpec(dir), { name: 'DatasetFileError', message: `${path.join(dir, 'empty')}: class folder 'empty' holds no .png, .jpg, .jpeg or .webp images` });
});

t.test('--data specs are validated without reading the data', async (t) => {
  t.throws(() => parseDataSpec('builtin:cifar'), {
    name: 'ArgumentError',
    message: "--data: unknown built-in dataset 'cifar' (built-in: mnist, fashion, letters, greek, typed-digits, scripts; or give a path to an image folder, .npy, .npz or .safetensors)",
  });
  t.throws(() => parseDataSpec('./no/such/pngs'), { message: '--data: ./no/such/pngs: no such file or folder' });
  const csv = path.join(tmp, 'x.csv');
  fs.writeFileSync(csv, '1,2');
  t.throws(() => parseDataSpec(csv), { message: `--data: ${csv}: not a dataset (expected a folder of class folders of images, .npy, .npz, .safetensors or builtin:NAME)` });
  t.same(parseDataSpec('builtin:mnist'), { kind: 'builtin', name: 'mnist', spec: 'builtin:mnist' });
  t.same(parseDataSpec('letters'), { kind: 'builtin', name: 'letters', spec: 'builtin:letters' }, 'a bare built-in name');
});

t.test('file datasets: seeded train/val/test splits', async (t) => {
  const n = 50;
  fs.writeFileSync(path.join(tmp, 'fifty.npy'), npy('|u1', [n, 1, 1], Uint8Array.from({ length: n }, (_, i) => i)));
  fs.writeFileSync(path.join(tmp, 'fifty.labels.npy'), npy('<i8', [n], BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 5))));
  const a = await prepareData(path.join(tmp, 'fifty.npy'));
  t.same([a.train.count, a.val.count, a.test.count], [36, 4, 10], 'test 20%, then validation 10% of the rest');
  const ids = (s: { images: Float32Array }) => [...s.images].map((v) => Math.round(v * 255));
  const all = [...ids(a.train), ...ids(a.val), ...ids(a.test)].sort((x, y) => x - y);
  t.same(all, Array.from({ length: n }, (_, i) => i), 'disjoint and complete');
  const b = await prepareData(path.join(tmp, 'fifty.npy'));
  t.same(ids(b.test), ids(a.test), 'same seed, same split');
  const c = await prepareData(path.join(tmp, 'fifty.npy'), { splitSeed: 1 });
  t.not(ids(c.test).join(), ids(a.test).join(), 'another seed, another split');
  t.equal(a.classes, 5);
});

t.test('the dataset cache lives in the user cache directory (XDG), overridable', async (t) => {
  const saved = { c: process.env.TANGENT_CACHE, x: process.env.XDG_CACHE_HOME };
  t.teardown(() => {
    for (const [k, v] of [['TANGENT_CACHE', saved.c], ['XDG_CACHE_HOME', saved.x]] as const) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  });
  delete process.env.TANGENT_CACHE;
  process.env.XDG_CACHE_HOME = '/var/tmp/xdg';
  t.equal(defaultCacheDir(), '/var/tmp/xdg/tangent-edit');
  delete process.env.XDG_CACHE_HOME;
  t.equal(defaultCacheDir(), path.join(os.homedir(), '.cache', 'tangent-edit'));
  process.env.TANGENT_CACHE = '/srv/cache';
  t.equal(defaultCacheDir(), '/srv/cache');
});

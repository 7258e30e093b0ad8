// Issue 9, Why 5 and 6: non-regular files, deep JSON, escaping, detection, messages, the thread
// bound, merge weights, save formats, EROFS and stale temporary files.
// Run: npx tap test/security-files.test.ts
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { f32, stateDictPickle, torchSaveZip } from './fixtures/security/craft';
import { CLI, runChild, runTs, TS_NODE } from './fixtures/security/run-child';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sec-files-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const LIB = path.join(__dirname, '..', 'lib');

/** A safetensors file from a header object (and zeroed data). */
function safetensors(header: string, dataBytes: number): Buffer {
  const h = Buffer.from(header, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, Buffer.alloc(dataBytes)]);
}

t.test('Why 5: a FIFO is refused at once, never opened for a blocking read', async (t) => {
  for (const name of ['pipe.safetensors', 'pipe.pt', 'pipe']) {
    const fifo = path.join(tmp, name);
    t.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
    const r = runChild('load', [fifo], { timeout: 20_000 });
    t.equal(r.timedOut, false, `${name}: no hang`);
    t.match(r.lines[0], { ok: false, name: 'CheckpointError', code: 'ERR_IO' }, `${name}: typed error`);
    t.match(String(r.lines[0]?.message), /FIFO \(named pipe\): only regular files are read/);
  }
});

t.test('Why 6: a 100,000-deep JSON array in a header is a typed error', async (t) => {
  const { readSafetensors } = await import('../lib/checkpoint/safetensors');
  const deep = `{"t":{"dtype":"F32","shape":${'['.repeat(100_000)}${']'.repeat(100_000)},"data_offsets":[0,4]}}`;
  const file = path.join(tmp, 'deep.safetensors');
  fs.writeFileSync(file, safetensors(deep, 4));
  t.throws(() => readSafetensors(file), { name: 'CheckpointError', code: 'ERR_JSON', message: /header nests arrays\/objects deeper than 64 levels/ });
});

t.test('Why 6: names are printed with control and bidi characters escaped', async (t) => {
  const { escapeControl, quote } = await import('../lib/checkpoint/escape');
  t.equal(escapeControl('a\u001b[2Jb\u202ec\u0085d\\e\n'), 'a\\x1b[2Jb\\u202ec\\x85d\\\\e\\n');
  t.equal(escapeControl('blocks.0.attn.weight Ω 注意'), 'blocks.0.attn.weight Ω 注意', 'printable text of any script is kept');
  t.equal(quote('x"y'), '"x\\"y"');
  const evil = 'w\u001b]0;pwned\u0007\u202etxt.exe';
  const file = path.join(tmp, 'names.safetensors');
  fs.writeFileSync(file, safetensors(JSON.stringify({ [evil]: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }), 4));
  const r = runTs(CLI, ['inspect', file], { timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  t.notMatch(r.stdout, /[\u001b\u0007\u202e]/, 'no raw control or bidi character on the terminal');
  t.match(r.stdout, 'w\\x1b]0;pwned\\x07\\u202etxt.exe', 'the name, escaped');
  // Error messages name tensors the same way.
  const { CheckpointError } = await import('../lib/checkpoint/errors');
  t.equal(new CheckpointError('ERR_SCHEMA', 'bad', { file: 'f', tensor: evil }).message, 'f: tensor "w\\x1b]0;pwned\\x07\\u202etxt.exe": bad');
});

t.test('Why 6: a torch.save whose tensor names contain /code/ is a torch.save, not TorchScript', async (t) => {
  const { detectFormat, loadStateDict } = await import('../lib/checkpoint/io');
  const file = path.join(tmp, 'code-names.pt');
  fs.writeFileSync(file, torchSaveZip(stateDictPickle([{ name: 'model/code/weight', key: '0', numel: 2, size: [2], stride: [1] }]), [['0', f32([1, 2])]]));
  t.equal(detectFormat(file), 'torch');
  const { tensors, format } = await loadStateDict(file);
  t.equal(format, 'torch');
  t.same(tensors.get('model/code/weight')!.toArray(), [1, 2]);
});

t.test('Why 6: a legacy (non-zip) torch.save gets its own message', async (t) => {
  const { loadStateDict } = await import('../lib/checkpoint/io');
  const file = path.join(tmp, 'legacy.pt');
  // What torch.save(..., _use_new_zipfile_serialization=False) starts with: the pickled magic number.
  fs.writeFileSync(file, Buffer.from('80028a0a6cfc9c46f9206aa850192e', 'hex'));
  await t.rejects(loadStateDict(file), { name: 'CheckpointError', code: 'ERR_IO', message: /legacy \(non-zip\) torch\.save file.*re-save it with torch\.save from torch >= 1\.6/ });
});

t.test('Why 6: setNumThreads(2000) is refused', async (t) => {
  // In a child: before the bound it was accepted and hung.
  const f = path.join(tmp, 'threads.ts');
  fs.writeFileSync(f, `import { setNumThreads, getNumThreads, MAX_THREADS } from ${JSON.stringify(path.join(LIB, 'runtime'))};
try { setNumThreads(2000); console.log(JSON.stringify({ accepted: true })); } catch (e) { const x = e as Error; console.log(JSON.stringify({ name: x.name, message: x.message, max: MAX_THREADS, now: getNumThreads() })); }\n`);
  const r = runTs(f, [], { timeout: 60_000 });
  t.equal(r.timedOut, false);
  const o = r.lines[0] as { name: string; message: string; max: number } | undefined;
  t.equal(o?.name, 'ArgumentError');
  t.equal(o?.max, Math.max(4, 4 * os.availableParallelism()));
  t.equal(o?.message, `threads must be an integer from 1 to ${o?.max} (4 per CPU), got 2000`);
});

t.test('Why 6: mergeTensor refuses NaN and infinite weights', async (t) => {
  const { mergeTensor } = await import('../lib/merge');
  const { Tensor } = await import('../lib/tensor');
  const base = Tensor.from(new Float32Array([1, 2]), [2]);
  const ft = Tensor.from(new Float32Array([2, 4]), [2]);
  await t.rejects(mergeTensor('w', base, [ft], { weights: [NaN] }), { name: 'ArgumentError', message: 'weights[0] must be a finite number, got NaN' });
  await t.rejects(mergeTensor('w', base, [ft, ft], { weights: [1, Infinity] }), { name: 'ArgumentError', message: 'weights[1] must be a finite number, got Infinity' });
  t.same((await mergeTensor('w', base, [ft], { weights: [0.5] })).toArray(), [1.5, 3], 'finite weights still merge');
});

t.test('Why 6: saveStateDict refuses unknown formats and extensions instead of writing a sharded directory', async (t) => {
  const { saveStateDict } = await import('../lib/checkpoint/io');
  const { Tensor } = await import('../lib/tensor');
  const sd = new Map([['w', Tensor.from(new Float32Array([1, 2]), [2])]]);
  const bogus = path.join(tmp, 'out.safetensors');
  await t.rejects(saveStateDict(bogus, sd, { format: 'bogus' as never }), { name: 'CheckpointError', code: 'ERR_INVALID_ARGUMENT', message: /unknown format "bogus" \(expected safetensors, sharded, torch\)/ });
  t.notOk(fs.existsSync(bogus));
  for (const name of ['model.ckpt', 'model.safetensor']) {
    const f = path.join(tmp, name);
    await t.rejects(saveStateDict(f, sd), { name: 'CheckpointError', code: 'ERR_INVALID_ARGUMENT', message: new RegExp(`cannot tell the format from the extension "${path.extname(name).replace('.', '\\.')}"`) });
    t.notOk(fs.existsSync(f), `${name}: nothing written`);
  }
  await saveStateDict(path.join(tmp, 'model.ckpt'), sd, { format: 'torch' });
  t.ok(fs.statSync(path.join(tmp, 'model.ckpt')).isFile(), 'an explicit format writes any name');
  await saveStateDict(path.join(tmp, 'sharded-out'), sd);
  t.ok(fs.existsSync(path.join(tmp, 'sharded-out', 'model.safetensors.index.json')), 'a path without extension is a sharded directory');
});

const canUnshare = spawnSync('unshare', ['-rm', 'true']).status === 0;
t.test('Why 6: a read-only file system is reported as EROFS, not ENOENT', { skip: canUnshare ? false : 'unshare -rm (user namespaces) not available' }, async (t) => {
  const f = path.join(tmp, 'erofs.ts');
  fs.writeFileSync(f, `import { writeShardedAsync, writeSafetensors } from ${JSON.stringify(path.join(LIB, 'checkpoint', 'safetensors'))};
const t: [string, { dtype: 'float32'; shape: number[]; data: Uint8Array }][] = [['a', { dtype: 'float32', shape: [1], data: new Uint8Array(4) }]];
const out: unknown[] = [];
const tryit = async (f: () => unknown) => { try { await f(); out.push('ok'); } catch (e) { const x = e as { code: string; cause?: { code?: string } }; out.push([x.code, x.cause?.code]); } };
(async () => {
  await tryit(() => writeShardedAsync(process.argv[2] + '/a/b', t));
  await tryit(() => writeSafetensors(process.argv[2] + '/x.safetensors', t));
  console.log(JSON.stringify(out));
})();\n`);
  const ro = path.join(tmp, 'ro');
  fs.mkdirSync(ro);
  const boot = `require(${JSON.stringify(TS_NODE)}); require(${JSON.stringify(f)})`;
  const r = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o ro tmpfs "$1" && exec "$2" -e "$3" x "$1"`, 'sh', ro, process.execPath, boot],
    { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } });
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout.trim().split('\n').pop()!), [['ERR_IO', 'EROFS'], ['ERR_IO', 'EROFS']]);
});

t.test('Why 6: a killed write leaves a temporary file that the next write removes', async (t) => {
  const dir = path.join(tmp, 'killed');
  fs.mkdirSync(dir);
  const target = path.join(dir, 'big.safetensors');
  // A writer that streams 400 MB slowly, killed once its temporary file exists.
  const writer = path.join(tmp, 'writer.ts');
  fs.writeFileSync(writer, `import { writeSafetensorsAsync } from ${JSON.stringify(path.join(LIB, 'checkpoint', 'safetensors'))};
const chunk = new Uint8Array(4 << 20);
const entries = Array.from({ length: 100 }, (_, i) => [\`t\${i}\`, { dtype: 'uint8' as const, shape: [4 << 20], load: async () => { await new Promise((r) => setTimeout(r, 200)); return chunk; } }] as [string, { dtype: 'uint8'; shape: number[]; load: () => Promise<Uint8Array> }]);
writeSafetensorsAsync(process.argv[2]!, entries);\n`);
  const child = spawn(process.execPath, ['-e', `require(${JSON.stringify(TS_NODE)}); require(process.argv[1])`, writer, target], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: 'ignore' });
  const temps = (): string[] => fs.readdirSync(dir).filter((n) => n.startsWith('.big.safetensors.'));
  const deadline = Date.now() + 60_000;
  while (temps().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 600));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const left = temps();
  t.equal(left.length, 1, `the killed writer left ${left.join(', ')}`);
  t.ok(fs.statSync(path.join(dir, left[0]!)).size > 0, 'with data in it');
  t.match(left[0]!, new RegExp(`^\\.big\\.safetensors\\.tangent-${child.pid}-[0-9a-f]{12}\\.tmp$`), 'named after the writer\'s pid');

  // An unrelated file and the temporary file of a live process are left alone.
  const live = `.big.safetensors.tangent-${process.pid}-0123456789ab.tmp`;
  fs.writeFileSync(path.join(dir, live), 'x');
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'x');
  const { saveStateDict, cleanStaleTempFiles } = await import('../lib/checkpoint/io');
  const { Tensor } = await import('../lib/tensor');
  await saveStateDict(target, new Map([['w', Tensor.from(new Float32Array([1]), [1])]]));
  t.same(fs.readdirSync(dir).sort(), [live, 'big.safetensors', 'notes.txt'].sort(), 'the next write removed the stale temporary file');

  // cleanStaleTempFiles (for `tangent clean`): other targets too.
  const stale = path.join(dir, `.other.pt.tangent-${child.pid}-aaaaaaaaaaaa.tmp`);
  fs.writeFileSync(stale, 'x');
  t.same(cleanStaleTempFiles(dir), [stale]);
  fs.unlinkSync(path.join(dir, live));
});

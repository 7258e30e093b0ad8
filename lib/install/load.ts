/**
 * Loading tangent.node with a diagnosis. Every place the binary may be is tried and every error
 * kept; a failure is then matched against the texts the dynamic loader and Node produce, and each
 * known one gets its own sentence and command (the approach of sharp's lib/sharp.js):
 *
 * - `libtorch_cpu.so: cannot open shared object file`: the libtorch it was built against moved or
 *   was removed (the record names which one);
 * - `undefined symbol`: another libtorch version is loaded than the one it was built against (or,
 *   with a `cxx11` symbol, a pre-cxx11-ABI libtorch);
 * - `GLIBCXX_…`/`CXXABI_… not found`: the C++ runtime loaded is older than the one needed;
 * - `NODE_MODULE_VERSION`, `did not self-register`: built for another Node.js;
 * - no binary at all: the installer's own instructions (no libtorch, no compiler), or rebuild.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chooseOpenblasCoreType } from './blas';
import { REBUILD_COMMAND } from './libtorch';
import { buildPaths, describeRecord, readInstallStatus, readLibtorchRecord, type LibtorchRecord } from './record';

export interface LoadAttempt {
  path: string;
  error: string;
}

export class AddonLoadFailure extends Error {
  constructor(
    message: string,
    readonly attempts: LoadAttempt[],
  ) {
    super(message);
    this.name = 'AddonLoadFailure';
  }
}

/** The places tangent.node may be: TANGENT_ADDON, this package's build, a prebuild (node-gyp-build). */
export function addonCandidates(root: string, env: NodeJS.ProcessEnv = process.env): { paths: string[]; notes: LoadAttempt[] } {
  const paths: string[] = [];
  const notes: LoadAttempt[] = [];
  if (env.TANGENT_ADDON) paths.push(path.resolve(env.TANGENT_ADDON));
  for (const p of [buildPaths(root).addon, path.join(root, 'build', 'Debug', 'tangent.node')]) if (fs.existsSync(p)) paths.push(p);
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gyp = require('node-gyp-build') as { resolve(dir: string): string };
    const p = gyp.resolve(root);
    if (!paths.includes(p)) paths.push(p);
  } catch (e) {
    notes.push({ path: path.join(root, 'prebuilds'), error: e instanceof Error ? e.message.split('\n')[0]! : String(e) });
  }
  return { paths, notes };
}

function wanted(rec: LibtorchRecord | null): string {
  return rec ? `It was built against ${describeRecord(rec)}.` : 'It has no record of the libtorch it was built against.';
}

/** The remedy for one load error of the binary at `file` (null: no known cause). */
export function diagnose(error: string, file: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const rec = readLibtorchRecord(file);
  const ldPath = env.LD_LIBRARY_PATH ? ` LD_LIBRARY_PATH is ${env.LD_LIBRARY_PATH}.` : '';
  const missingLib = /(lib(?:torch|torch_cpu|torch_cuda|c10|c10_cuda|torch_global_deps)[\w.-]*\.so[\w.]*): cannot open shared object file/.exec(error);
  if (missingLib) {
    const where = rec
      ? fs.existsSync(rec.libDir)
        ? `${rec.libDir} exists but no longer holds ${missingLib[1]}`
        : `${rec.libDir} is gone`
      : 'the directory it was built against is not known';
    return (
      `libtorch moved or was removed: ${missingLib[1]} cannot be found (${where}). ${wanted(rec)} ` +
      `Reinstall that libtorch, or rebuild against the one you have now: ${REBUILD_COMMAND}.`
    );
  }
  if (/undefined symbol/.test(error)) {
    if (/cxx11|B5cxx11/.test(error))
      return (
        `C++ ABI mismatch: a symbol of the cxx11 std::string ABI is missing, so a pre-cxx11 ABI libtorch ` +
        `(libtorch's "Pre-cxx11 ABI" download, or an older PyTorch wheel) is loaded against a build for the cxx11 ABI, ` +
        `or the reverse. ${wanted(rec)} Use the libtorch it was built against, or rebuild against the one you have: ${REBUILD_COMMAND}.`
      );
    return (
      `another libtorch version is loaded than the one the addon was built against. ${wanted(rec)} ` +
      `An LD_LIBRARY_PATH or LD_PRELOAD entry may put another libtorch first, or that libtorch was upgraded in place.${ldPath} ` +
      `Rebuild against the libtorch you have now: ${REBUILD_COMMAND}.`
    );
  }
  const cxx = /((?:GLIBCXX|CXXABI)_[\d.]+)' not found(?: \(required by ([^)]+)\))?/.exec(error);
  if (cxx)
    return (
      `C++ runtime too old: ${cxx[2] ?? 'a library'} needs ${cxx[1]}, which the libstdc++ loaded does not have. ` +
      `Typical causes: a conda/venv libstdc++ earlier on LD_LIBRARY_PATH than the system's, or a libtorch built on a newer ` +
      `system than this one. Use the system libstdc++ (drop that LD_LIBRARY_PATH entry) or a libtorch built for this ` +
      `system; libtorch's "Pre-cxx11 ABI" downloads do not mix with cxx11-ABI code either (pick the cxx11 ABI one). ` +
      `Then: ${REBUILD_COMMAND}.${ldPath}`
    );
  if (/NODE_MODULE_VERSION|compiled against a different Node\.js version|did not self-register|Module version mismatch/.test(error))
    return (
      `the addon was built for another Node.js${rec?.nodeRuntimeVersion ? ` (${rec.nodeRuntimeVersion})` : ''}; this is ${process.version}. ` +
      `Rebuild it with this Node: npm rebuild tangent-edit (or: npx tangent rebuild).`
    );
  if (/ERR_DLOPEN_DISABLED|--no-addons/.test(error))
    return 'Node.js runs with --no-addons (or NODE_OPTIONS has it): tangent-edit needs its native addon; run Node without that flag.';
  if (/wrong ELF class|invalid ELF header|cannot open shared object file: No such file or directory/.test(error) && error.includes(file))
    return `the binary ${file} is unusable on this machine (another architecture, or damaged): ${REBUILD_COMMAND}.`;
  return null;
}

/** The message when there is no binary at all: the installer's instructions when it left some. */
function notBuiltMessage(root: string, attempts: LoadAttempt[]): string {
  const status = readInstallStatus(root);
  if (status && status.outcome !== 'built' && status.outcome !== 'reused') return status.message;
  const lines = [`tangent-edit: the native addon is not built (looked for ${buildPaths(root).addon} and prebuilds/).`];
  for (const a of attempts) lines.push(`  - ${a.path}: ${a.error}`);
  if (fs.existsSync(path.join(root, '.git')))
    lines.push('In a clone of the repository, build it with: npm run setup');
  else
    lines.push(
      `The install script did not run (npm install --ignore-scripts?) or did not finish. Build it: ${REBUILD_COMMAND}.`,
    );
  return lines.join('\n');
}

/** The directories of the libtorch_cpu libraries mapped into this process (Linux; [] elsewhere). */
export function loadedLibtorchDirs(maps = '/proc/self/maps'): string[] {
  let text: string;
  try {
    text = fs.readFileSync(maps, 'utf8');
  } catch {
    return [];
  }
  const dirs = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /\s(\/\S*\/libtorch_cpu\.(?:so|dylib)[\w.]*)$/.exec(line);
    if (m) dirs.add(realDir(path.dirname(m[1]!)));
  }
  return [...dirs];
}

function realDir(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * Why a binary that loaded runs on another libtorch than the one it records (null: it does not).
 * The dynamic loader may resolve libtorch elsewhere than the build's rpath: an LD_LIBRARY_PATH
 * entry, or another addon or library that loaded a libtorch into this process first.
 */
export function libtorchMismatch(file: string, loadedDirs: string[], env: NodeJS.ProcessEnv = process.env): string | null {
  const rec = readLibtorchRecord(file);
  if (!rec?.libDir || loadedDirs.length === 0) return null;
  const want = realDir(rec.libDir);
  if (loadedDirs.length === 1 && loadedDirs[0] === want) return null;
  const others = loadedDirs.filter((d) => d !== want);
  if (others.length === 0) return null;
  const ldPath = env.LD_LIBRARY_PATH ? ` LD_LIBRARY_PATH is ${env.LD_LIBRARY_PATH}.` : '';
  return (
    `tangent-edit: the native addon ${file} was built against ${describeRecord(rec)}, but this process runs ` +
    `libtorch_cpu from ${others.join(' and ')}${loadedDirs.includes(want) ? ' as well' : ''}: two libtorches in one process crash or compute wrong results, so it is refused.` +
    `${ldPath} Drop the LD_LIBRARY_PATH/LD_PRELOAD entry or the other module that loads a libtorch, or rebuild against the libtorch you mean to use: ${REBUILD_COMMAND}.`
  );
}

/**
 * Loads the addon of the package at `root`: the first candidate that loads. Throws
 * AddonLoadFailure with every attempt and the remedy for the first known failure.
 */
export function loadAddon(root: string, env: NodeJS.ProcessEnv = process.env): unknown {
  chooseOpenblasCoreType(); // before OpenBLAS loads with libtorch (lib/install/blas.ts)
  const { paths, notes } = addonCandidates(root, env);
  const attempts: LoadAttempt[] = [];
  for (const p of paths) {
    let addon: unknown;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      addon = require(p) as unknown;
    } catch (e) {
      attempts.push({ path: p, error: e instanceof Error ? e.message : String(e) });
      continue;
    }
    const mismatch = libtorchMismatch(p, loadedLibtorchDirs(), env);
    if (mismatch) throw new AddonLoadFailure(mismatch, [...attempts, { path: p, error: 'loaded another libtorch than its record' }]);
    return addon;
  }
  if (attempts.length === 0) throw new AddonLoadFailure(notBuiltMessage(root, notes), notes);
  const lines = [`tangent-edit: cannot load the native addon.`];
  let remedy: string | null = null;
  for (const a of attempts) {
    lines.push(`  - ${a.path}: ${a.error.split('\n')[0]}`);
    remedy ??= diagnose(a.error, a.path, env);
  }
  lines.push(
    remedy ??
      `Rebuild it against the libtorch you have: ${REBUILD_COMMAND}; the build log is ${buildPaths(root).log}.`,
  );
  throw new AddonLoadFailure(lines.join('\n'), attempts);
}

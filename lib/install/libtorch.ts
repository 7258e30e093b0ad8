/**
 * Finding a libtorch to build against, in a fixed order, each candidate reported:
 *
 * 1. what the user named: `TANGENT_LIBTORCH` (a libtorch directory, or its share/cmake/Torch),
 *    `Torch_DIR` (the directory of TorchConfig.cmake), `CMAKE_PREFIX_PATH` (prefixes to search);
 * 2. a Python with PyTorch (`torch.utils.cmake_prefix_path`): `TANGENT_PYTHON`, then every
 *    `python3` on PATH, then /usr/bin/python3 — `pip install torch` (CUDA or CPU) needs no setting;
 * 3. Debian/Ubuntu's `libtorch-dev` (/usr/lib/<multiarch>/cmake/Torch).
 *
 * A candidate without a CMake config (Debian ships python3-torch without it) is passed over with a
 * note. One that the user named explicitly (TANGENT_LIBTORCH, Torch_DIR) and that is not a libtorch
 * stops the search: building against another libtorch than the one asked for would be a surprise.
 * `TANGENT_LIBTORCH_SEARCH` (comma list of env, python, debian; default all) narrows the search.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type CandidateSource = 'TANGENT_LIBTORCH' | 'Torch_DIR' | 'CMAKE_PREFIX_PATH' | 'python' | 'debian';
export type SearchGroup = 'env' | 'python' | 'debian';
export const SEARCH_GROUPS: readonly SearchGroup[] = ['env', 'python', 'debian'];

export interface Candidate {
  source: CandidateSource;
  /** What was looked at, as printed: `Torch_DIR=/opt/libtorch/share/cmake/Torch`, `/usr/bin/python3`. */
  label: string;
  /** The directory holding TorchConfig.cmake, when this candidate is usable. */
  torchDir?: string;
  /** One line: what it is, or why it is passed over. */
  note: string;
  /** The user named it (TANGENT_LIBTORCH, Torch_DIR): a bad one stops the search. */
  explicit: boolean;
  version?: string;
  variant?: 'cuda' | 'cpu';
  cudaVersion?: string;
  /** The Python executable whose PyTorch this is (source python). */
  python?: string;
}

export interface Discovery {
  /** The libtorch to build against. */
  found?: Candidate;
  /** An explicit setting that is not a libtorch (the search stopped there). */
  rejected?: Candidate;
  /** Every candidate looked at, in order (found/rejected last). */
  tried: Candidate[];
}

export interface DiscoverOptions {
  env?: NodeJS.ProcessEnv;
  /** Called with each candidate as it is decided (the installer prints them). */
  onCandidate?: (c: Candidate) => void;
  /** Directories that may hold Debian's Torch config (default: /usr/lib/<multiarch>/cmake/Torch). */
  debianDirs?: string[];
  /** Seconds one `python -c 'import torch'` may take (default 120: a CUDA torch imports slowly). */
  pythonTimeoutS?: number;
}

const CONFIG = 'TorchConfig.cmake';

/** The Torch config directory under `p`: p itself, p/Torch, p/share/cmake/Torch or p/lib/cmake/Torch. */
export function torchConfigDir(p: string): string | undefined {
  for (const dir of [p, path.join(p, 'Torch'), path.join(p, 'share', 'cmake', 'Torch'), path.join(p, 'lib', 'cmake', 'Torch')])
    if (fs.existsSync(path.join(dir, CONFIG))) return path.resolve(dir);
  return undefined;
}

/** Version (TorchConfigVersion.cmake) and CPU/CUDA (libtorch_cuda beside libtorch_cpu) of a config dir. */
export function describeTorchDir(torchDir: string): { version?: string; variant?: 'cuda' | 'cpu'; libDir?: string } {
  let version: string | undefined;
  try {
    version = /set\(PACKAGE_VERSION "([^"]+)"\)/.exec(fs.readFileSync(path.join(torchDir, 'TorchConfigVersion.cmake'), 'utf8'))?.[1];
  } catch {
    /* no version file */
  }
  // libtorch and pip: <root>/share/cmake/Torch → <root>/lib; Debian: /usr/lib/<triple>/cmake/Torch → /usr/lib/<triple>.
  for (const libDir of [path.resolve(torchDir, '..', '..', '..', 'lib'), path.resolve(torchDir, '..', '..')]) {
    const has = (name: string) => fs.existsSync(path.join(libDir, name));
    if (has('libtorch_cpu.so') || has('libtorch_cpu.dylib') || has('libtorch.so'))
      return { version, libDir, variant: has('libtorch_cuda.so') || has('libc10_cuda.so') ? 'cuda' : 'cpu' };
  }
  return { version };
}

function fromDir(source: CandidateSource, label: string, dir: string, explicit: boolean): Candidate {
  const torchDir = torchConfigDir(dir);
  if (!torchDir) {
    const what = fs.existsSync(dir) ? `has no ${CONFIG} (looked in it, Torch/, share/cmake/Torch/, lib/cmake/Torch/)` : 'does not exist';
    return { source, label, explicit, note: `${dir} ${what}` };
  }
  const d = describeTorchDir(torchDir);
  return { source, label, explicit, torchDir, version: d.version, variant: d.variant, note: `libtorch ${d.version ?? '(version unknown)'}${d.variant ? ` ${d.variant.toUpperCase()}` : ''} at ${torchDir}` };
}

const PY_PROBE = [
  'import json, torch, torch.utils',
  'print(json.dumps({"version": torch.__version__, "prefix": torch.utils.cmake_prefix_path,',
  '  "cuda": torch.version.cuda, "cxx11": bool(torch._C._GLIBCXX_USE_CXX11_ABI)}))',
].join('\n');

/** The python3 executables to try: TANGENT_PYTHON, each python3 on PATH, /usr/bin/python3 (deduplicated). */
export function pythonCandidates(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  const add = (exe: string) => {
    let key = exe;
    try {
      key = fs.realpathSync(exe);
    } catch {
      /* reported when run */
    }
    if (!seen.has(key)) {
      seen.add(key);
      out.push(exe);
    }
  };
  if (env.TANGENT_PYTHON) add(env.TANGENT_PYTHON);
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const exe = path.join(dir, 'python3');
    try {
      fs.accessSync(exe, fs.constants.X_OK);
      add(exe);
    } catch {
      /* not here */
    }
  }
  if (fs.existsSync('/usr/bin/python3')) add('/usr/bin/python3');
  return out;
}

function fromPython(exe: string, env: NodeJS.ProcessEnv, timeoutS: number): Candidate {
  const label = env.TANGENT_PYTHON === exe ? `TANGENT_PYTHON=${exe}` : exe;
  const r = spawnSync(exe, ['-c', PY_PROBE], { encoding: 'utf8', timeout: timeoutS * 1000, env: { ...env, PYTHONWARNINGS: 'ignore' } });
  const base = { source: 'python' as const, label, explicit: false };
  if (r.error) return { ...base, note: `cannot run it (${r.error.message})` };
  if (r.status !== 0) {
    const err = (r.stderr || '').trim().split('\n').pop() ?? '';
    return { ...base, note: /No module named '?torch/.test(err) ? 'no PyTorch (import torch fails)' : `import torch fails: ${err}` };
  }
  let info: { version: string; prefix: string; cuda: string | null; cxx11: boolean };
  try {
    info = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as typeof info;
  } catch {
    return { ...base, note: `unexpected output of import torch: ${r.stdout.trim().slice(0, 200)}` };
  }
  const torchDir = torchConfigDir(info.prefix);
  const what = `PyTorch ${info.version} (${info.cuda ? `CUDA ${info.cuda}` : 'CPU'})`;
  if (!torchDir)
    return {
      ...base,
      version: info.version,
      note: `${what} but no CMake config at ${info.prefix} (Debian's python3-torch leaves it to libtorch-dev)`,
    };
  const d = describeTorchDir(torchDir);
  return {
    ...base,
    torchDir,
    python: exe,
    version: d.version ?? info.version,
    variant: info.cuda ? 'cuda' : 'cpu',
    cudaVersion: info.cuda ?? undefined,
    note: `${what} at ${torchDir}${info.cxx11 ? '' : ' (pre-cxx11 ABI: the build follows it)'}`,
  };
}

function debianDirs(): string[] {
  const out: string[] = [];
  try {
    for (const e of fs.readdirSync('/usr/lib')) if (/-linux-gnu/.test(e)) out.push(path.join('/usr/lib', e, 'cmake', 'Torch'));
  } catch {
    /* not Linux */
  }
  return out;
}

/** Parses TANGENT_LIBTORCH_SEARCH; throws on an unknown group (names the valid ones). */
export function searchGroups(env: NodeJS.ProcessEnv): SearchGroup[] {
  const raw = env.TANGENT_LIBTORCH_SEARCH;
  if (!raw) return [...SEARCH_GROUPS];
  const groups = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const g of groups)
    if (!(SEARCH_GROUPS as readonly string[]).includes(g))
      throw new Error(`TANGENT_LIBTORCH_SEARCH: unknown source '${g}' (expected a comma list of ${SEARCH_GROUPS.join(', ')})`);
  return groups as SearchGroup[];
}

/** Looks for a libtorch in the documented order; stops at the first usable one. */
export function findLibtorch(opts: DiscoverOptions = {}): Discovery {
  const env = opts.env ?? process.env;
  const groups = searchGroups(env);
  const tried: Candidate[] = [];
  const report = (c: Candidate) => {
    tried.push(c);
    opts.onCandidate?.(c);
    return c;
  };
  if (groups.includes('env')) {
    for (const name of ['TANGENT_LIBTORCH', 'Torch_DIR'] as const) {
      const v = env[name];
      if (!v) continue;
      const c = report(fromDir(name, `${name}=${v}`, v, true));
      if (c.torchDir) return { found: c, tried };
      return { rejected: c, tried };
    }
    const prefixes = (env.CMAKE_PREFIX_PATH ?? '').split(path.delimiter).filter(Boolean);
    for (const p of prefixes) {
      const c = report(fromDir('CMAKE_PREFIX_PATH', `CMAKE_PREFIX_PATH entry ${p}`, p, false));
      if (c.torchDir) return { found: c, tried };
    }
  }
  if (groups.includes('python')) {
    for (const exe of pythonCandidates(env)) {
      const c = report(fromPython(exe, env, opts.pythonTimeoutS ?? 120));
      if (c.torchDir) return { found: c, tried };
    }
  }
  if (groups.includes('debian')) {
    const dirs = opts.debianDirs ?? debianDirs();
    let any = false;
    for (const dir of dirs) {
      if (!fs.existsSync(path.join(dir, CONFIG))) continue;
      any = true;
      const c = report({ ...fromDir('debian', `Debian libtorch-dev (${dir})`, dir, false) });
      if (c.torchDir) return { found: c, tried };
    }
    if (!any)
      report({ source: 'debian', label: "Debian's libtorch-dev", explicit: false, note: `not installed (no ${dirs.length ? dirs.map((d) => path.join(d, CONFIG)).join(', ') : `/usr/lib/<triple>/cmake/Torch/${CONFIG}`})` });
  }
  return { tried };
}

/** How a candidate prints in the installer's output and in the errors: `  - label: note`. */
export function candidateLine(c: Candidate): string {
  return `  - ${c.label}: ${c.note}`;
}

export const REBUILD_COMMAND = 'npx tangent rebuild (or: npm rebuild tangent-edit)';

/**
 * The instructions when no libtorch is usable. The installer prints them, stores them with the
 * install status, and the first native call throws NativeLoadError with the same text.
 */
export function noLibtorchMessage(d: Discovery): string {
  const lines: string[] = [];
  if (d.rejected) {
    lines.push(`tangent-edit: ${d.rejected.label} is not a libtorch: ${d.rejected.note}.`);
    lines.push(`Point ${d.rejected.source} at a libtorch (the directory holding ${CONFIG}, or a libtorch root), or unset it to let tangent-edit search.`);
  } else {
    lines.push('tangent-edit: no libtorch found, so the native addon was not built. Looked at:');
    lines.push(...(d.tried.length ? d.tried.map(candidateLine) : ['  - nothing (TANGENT_LIBTORCH_SEARCH excludes every source)']));
    lines.push('Install one of:');
    lines.push('  - PyTorch for a python3 on PATH: pip install torch (CPU-only: --index-url https://download.pytorch.org/whl/cpu),');
    lines.push('    or set TANGENT_PYTHON=/path/to/python3 of the environment that has it;');
    lines.push('  - a libtorch from https://pytorch.org/get-started/locally/ (C++, cxx11 ABI), then TANGENT_LIBTORCH=/path/to/libtorch;');
    lines.push('  - on Debian/Ubuntu: sudo apt-get install libtorch-dev libopenblas0-pthread');
  }
  lines.push(`Then build the addon: ${REBUILD_COMMAND}`);
  return lines.join('\n');
}

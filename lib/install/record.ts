/**
 * Where the package keeps its native build, and the two small records beside it:
 *
 * - `build/Release/tangent.libtorch.json`, written by CMakeLists.txt and copied next to the addon
 *   when it links: the libtorch that binary was built against (path, version, CPU/CUDA, how found);
 * - `build/install-status.json`, written by the installer: whether the last install built, and the
 *   exact instructions it printed when it could not (the loader repeats them verbatim).
 *
 * Both live in this package's own directory (node_modules/tangent-edit/build), never in a path
 * shared by every build on the machine; so does the build log.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The package root (this file runs from lib/install in development and dist/lib/install when built). */
export function packageRoot(from: string = __dirname): string {
  let dir = from;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    try {
      if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'tangent-edit') return dir;
    } catch {
      /* no or unreadable package.json: go up */
    }
    const up = path.dirname(dir);
    if (up === dir) return path.resolve(from, '..', '..');
    dir = up;
  }
}

export interface BuildPaths {
  root: string;
  buildDir: string;
  addon: string;
  record: string;
  status: string;
  log: string;
}

export function buildPaths(root: string = packageRoot()): BuildPaths {
  const buildDir = path.join(root, 'build');
  return {
    root,
    buildDir,
    addon: path.join(buildDir, 'Release', 'tangent.node'),
    record: path.join(buildDir, 'Release', 'tangent.libtorch.json'),
    status: path.join(buildDir, 'install-status.json'),
    log: path.join(buildDir, 'install.log'),
  };
}

/** The libtorch a build used (CMakeLists.txt writes it). */
export interface LibtorchRecord {
  /** The directory of TorchConfig.cmake. */
  torchDir: string;
  /** Where libtorch's shared libraries are (the addon's rpath). */
  libDir: string;
  /** The libraries' version (pip: torch/version.py, Debian: the soname), e.g. 2.13.0+cpu. */
  version: string;
  /** The headers' version (torch/version.h), e.g. 2.13.0. */
  headerVersion?: string;
  variant: 'cuda' | 'cpu';
  cudaVersion: string;
  /** Compile flags libtorch requires (e.g. -D_GLIBCXX_USE_CXX11_ABI=1). */
  cxxFlags: string;
  /** How the installer found it (TANGENT_LIBTORCH, Torch_DIR, python:/usr/bin/python3, debian, ...), or cmake. */
  source: string;
  /** The Node.js the addon was compiled with. */
  nodeRuntimeVersion: string;
  /** The C++ standard it was compiled as (17; 20 for libtorch 2.14's headers). */
  cxxStandard?: number;
  /** Whether it has the Gloo process group. */
  gloo?: boolean;
  /** The Python whose PyTorch this libtorch is (a pip install), when known. */
  python?: string;
  /** The torch/c10 libraries the binary resolved when it was linked (ldd), absolute paths. */
  linked?: string[];
}

/** The record of the libtorch beside `addon` (default: this package's build), or null. */
export function readLibtorchRecord(addonOrRoot: string = packageRoot()): LibtorchRecord | null {
  const file = addonOrRoot.endsWith('.node')
    ? path.join(path.dirname(addonOrRoot), 'tangent.libtorch.json')
    : buildPaths(addonOrRoot).record;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as LibtorchRecord;
  } catch {
    return null;
  }
}

export type InstallOutcome = 'built' | 'reused' | 'no-libtorch' | 'no-toolchain' | 'build-failed';

export interface InstallStatus {
  outcome: InstallOutcome;
  /** What the installer printed as its conclusion (for the failures: the instructions). */
  message: string;
  log?: string;
  at: string;
}

export function readInstallStatus(root: string = packageRoot()): InstallStatus | null {
  try {
    return JSON.parse(fs.readFileSync(buildPaths(root).status, 'utf8')) as InstallStatus;
  } catch {
    return null;
  }
}

/** One line: `libtorch 1.13.1 CPU from /usr/lib/x86_64-linux-gnu (found: debian)`. */
export function describeRecord(r: LibtorchRecord): string {
  const kind = r.variant === 'cuda' ? `CUDA${r.cudaVersion ? ` ${r.cudaVersion}` : ''}` : 'CPU';
  return `libtorch ${r.version || '(version unknown)'} ${kind} from ${r.libDir} (found: ${r.source}; Torch_DIR ${r.torchDir})`;
}

/**
 * libtorch discovery (lib/install/libtorch.ts), the installer's outcomes without a libtorch, and
 * the loader's diagnosis (lib/install/load.ts). The real build from a packed tarball is
 * test/install.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { candidateLine, findLibtorch, noLibtorchMessage, torchConfigDir } from '../lib/install/libtorch';
import { install } from '../lib/install/build';
import { AddonLoadFailure, diagnose, loadAddon } from '../lib/install/load';

const DEBIAN = fs.existsSync('/usr/lib') ? fs.readdirSync('/usr/lib').map((e) => path.join('/usr/lib', e, 'cmake', 'Torch')).find((d) => fs.existsSync(path.join(d, 'TorchConfig.cmake'))) : undefined;

/** A directory that looks like a libtorch install: <root>/share/cmake/Torch + <root>/lib. */
function fakeLibtorch(version: string, cuda = false): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-fake-libtorch-'));
  const cfg = path.join(root, 'share', 'cmake', 'Torch');
  fs.mkdirSync(cfg, { recursive: true });
  fs.mkdirSync(path.join(root, 'lib'));
  fs.writeFileSync(path.join(cfg, 'TorchConfig.cmake'), '# fake\n');
  fs.writeFileSync(path.join(cfg, 'TorchConfigVersion.cmake'), `set(PACKAGE_VERSION "${version}")\n`);
  fs.writeFileSync(path.join(root, 'lib', 'libtorch_cpu.so'), '');
  if (cuda) fs.writeFileSync(path.join(root, 'lib', 'libtorch_cuda.so'), '');
  return root;
}

const noPython = { PATH: '/nonexistent' };

t.test('Torch_DIR, when set, is used (before Python and Debian), with its version and variant', async (t) => {
  const root = fakeLibtorch('2.3.1', true);
  const seen: string[] = [];
  const d = findLibtorch({ env: { PATH: process.env.PATH, Torch_DIR: path.join(root, 'share', 'cmake', 'Torch') }, onCandidate: (c) => seen.push(c.label) });
  t.equal(d.found?.source, 'Torch_DIR');
  t.equal(d.found?.torchDir, path.join(root, 'share', 'cmake', 'Torch'));
  t.equal(d.found?.version, '2.3.1');
  t.equal(d.found?.variant, 'cuda');
  t.same(seen, [`Torch_DIR=${path.join(root, 'share', 'cmake', 'Torch')}`], 'reported, and the search stops there');
  // TANGENT_LIBTORCH takes a libtorch root and wins over Torch_DIR.
  const other = fakeLibtorch('2.5.0');
  const d2 = findLibtorch({ env: { ...noPython, TANGENT_LIBTORCH: other, Torch_DIR: path.join(root, 'share', 'cmake', 'Torch') } });
  t.equal(d2.found?.source, 'TANGENT_LIBTORCH');
  t.equal(d2.found?.torchDir, path.join(other, 'share', 'cmake', 'Torch'));
  t.equal(d2.found?.variant, 'cpu');
  // CMAKE_PREFIX_PATH: entries without Torch are passed over with a note.
  const d3 = findLibtorch({ env: { ...noPython, CMAKE_PREFIX_PATH: `/nonexistent/prefix:${other}` }, debianDirs: [] });
  t.equal(d3.found?.label, `CMAKE_PREFIX_PATH entry ${other}`);
  t.equal(d3.tried[0]?.note, '/nonexistent/prefix does not exist');
});

/**
 * A python3 whose `import torch` is a stand-in for a pip-installed PyTorch (CUDA 12.1 wheel): a
 * torch package reporting a version, torch.version.cuda and torch.utils.cmake_prefix_path, the
 * latter pointing at a libtorch layout with TorchConfig.cmake (as the real wheels have).
 */
function fakePipTorch(cuda: string | null): { bin: string; prefix: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-fake-pip-'));
  const site = path.join(dir, 'site', 'torch');
  fs.mkdirSync(path.join(site, '_C'), { recursive: true });
  const prefix = path.join(site, 'share', 'cmake');
  fs.mkdirSync(path.join(prefix, 'Torch'), { recursive: true });
  fs.mkdirSync(path.join(site, 'lib'));
  fs.writeFileSync(path.join(prefix, 'Torch', 'TorchConfig.cmake'), '# fake\n');
  fs.writeFileSync(path.join(prefix, 'Torch', 'TorchConfigVersion.cmake'), 'set(PACKAGE_VERSION "2.4.1")\n');
  fs.writeFileSync(path.join(site, 'lib', 'libtorch_cpu.so'), '');
  fs.writeFileSync(path.join(site, '__init__.py'), `__version__ = "2.4.1${cuda ? '+cu121' : '+cpu'}"\nfrom . import utils, version, _C\n`);
  fs.writeFileSync(path.join(site, 'utils.py'), `cmake_prefix_path = ${JSON.stringify(prefix)}\n`);
  fs.writeFileSync(path.join(site, 'version.py'), `cuda = ${cuda ? JSON.stringify(cuda) : 'None'}\n`);
  fs.writeFileSync(path.join(site, '_C', '__init__.py'), '_GLIBCXX_USE_CXX11_ABI = False\n');
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'python3'), `#!/bin/sh\nPYTHONPATH=${JSON.stringify(path.join(dir, 'site'))} exec /usr/bin/python3 "$@"\n`, { mode: 0o755 });
  return { bin: path.join(bin, 'python3'), prefix };
}

t.test('a python3 with PyTorch (pip): TANGENT_PYTHON, then python3 on PATH, before Debian', { skip: fs.existsSync('/usr/bin/python3') ? false : 'no /usr/bin/python3' }, async (t) => {
  const cuda = fakePipTorch('12.1');
  const d = findLibtorch({ env: { PATH: '/nonexistent', TANGENT_PYTHON: cuda.bin } });
  t.equal(d.found?.source, 'python');
  t.equal(d.found?.label, `TANGENT_PYTHON=${cuda.bin}`);
  t.equal(d.found?.torchDir, path.join(cuda.prefix, 'Torch'));
  t.equal(d.found?.variant, 'cuda', 'CUDA from torch.version.cuda');
  t.equal(d.found?.cudaVersion, '12.1');
  t.equal(d.found?.version, '2.4.1');
  t.equal(d.found?.note, `PyTorch 2.4.1+cu121 (CUDA 12.1) at ${path.join(cuda.prefix, 'Torch')} (pre-cxx11 ABI: the build follows it)`);
  // On PATH, ahead of /usr/bin/python3 and Debian's libtorch-dev.
  const cpu = fakePipTorch(null);
  const d2 = findLibtorch({ env: { PATH: `${path.dirname(cpu.bin)}:/usr/bin` } });
  t.equal(d2.found?.label, cpu.bin);
  t.equal(d2.found?.variant, 'cpu');
  t.equal(d2.tried.length, 1, 'the first python3 on PATH with PyTorch ends the search');
});

t.test("with nothing set it finds Debian's libtorch-dev (Python candidates without a CMake config noted)", { skip: DEBIAN ? false : "Debian's libtorch-dev is not installed" }, async (t) => {
  const d = findLibtorch({ env: { PATH: process.env.PATH } });
  // A pip-installed PyTorch on PATH would come first: that is the documented order.
  const pythonFirst = d.found?.source === 'python';
  if (pythonFirst) t.comment(`a python3 with PyTorch and its CMake config is on PATH: ${d.found?.label}`);
  else {
    t.equal(d.found?.source, 'debian');
    t.equal(d.found?.torchDir, DEBIAN);
    t.match(d.found?.version, /^\d+\.\d+/);
  }
  // Debian's python3-torch has no CMake config: noted and passed over.
  if (fs.existsSync('/usr/lib/python3/dist-packages/torch/__init__.py') && !pythonFirst) {
    const py = d.tried.find((c) => c.label === '/usr/bin/python3');
    t.match(py?.note, /^PyTorch \S+ \(CPU\) but no CMake config at \/usr\/lib\/python3\/dist-packages\/torch\/share\/cmake \(Debian's python3-torch leaves it to libtorch-dev\)$/);
  }
});

t.test('a bogus Torch_DIR stops the search and the message names it', async (t) => {
  const d = findLibtorch({ env: { PATH: process.env.PATH, Torch_DIR: '/nonexistent/torch' } });
  t.equal(d.found, undefined, 'not silently replaced by another libtorch');
  t.equal(d.rejected?.label, 'Torch_DIR=/nonexistent/torch');
  t.equal(
    noLibtorchMessage(d),
    [
      'tangent-edit: Torch_DIR=/nonexistent/torch is not a libtorch: /nonexistent/torch does not exist.',
      'Point Torch_DIR at a libtorch (the directory holding TorchConfig.cmake, or a libtorch root), or unset it to let tangent-edit search.',
      'Then build the addon: npx tangent rebuild (or: npm rebuild tangent-edit)',
    ].join('\n'),
  );
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-empty-'));
  const d2 = findLibtorch({ env: { ...noPython, TANGENT_LIBTORCH: empty } });
  t.match(d2.rejected?.note, `${empty} has no TorchConfig.cmake`);
  t.equal(torchConfigDir(empty), undefined);
});

t.test('TANGENT_LIBTORCH_SEARCH narrows the search; an unknown source is named', async (t) => {
  t.throws(() => findLibtorch({ env: { TANGENT_LIBTORCH_SEARCH: 'env,conda' } }), {
    message: "TANGENT_LIBTORCH_SEARCH: unknown source 'conda' (expected a comma list of env, python, debian)",
  });
  const d = findLibtorch({ env: { ...noPython, TANGENT_LIBTORCH_SEARCH: 'env' } });
  t.same(d, { tried: [] });
});

t.test('no libtorch at all: the install succeeds, and the first use throws the same instructions', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-nolibtorch-'));
  fs.writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'tangent-edit', version: '0.0.0' }));
  const printed: string[] = [];
  const env = { PATH: '/nonexistent', TANGENT_LIBTORCH_SEARCH: 'env,python' };
  const r = await install({ root, env, print: (l) => printed.push(l) });
  t.equal(r.outcome, 'no-libtorch');
  t.equal(r.code, 0, 'npm install does not fail');
  // /usr/bin/python3 is always tried; on Debian with python3-torch it has PyTorch without CMake config.
  const tried = r.discovery!.tried;
  t.ok(tried.every((c) => c.source === 'python' && c.torchDir === undefined), 'only Python candidates, none usable');
  const expected = [
    'tangent-edit: no libtorch found, so the native addon was not built. Looked at:',
    ...(tried.length ? tried.map(candidateLine) : ['  - nothing (TANGENT_LIBTORCH_SEARCH excludes every source)']),
    'Install one of:',
    '  - PyTorch for a python3 on PATH: pip install torch (CPU-only: --index-url https://download.pytorch.org/whl/cpu),',
    '    or set TANGENT_PYTHON=/path/to/python3 of the environment that has it;',
    '  - a libtorch from https://pytorch.org/get-started/locally/ (C++, cxx11 ABI), then TANGENT_LIBTORCH=/path/to/libtorch;',
    '  - on Debian/Ubuntu: sudo apt-get install libtorch-dev libopenblas0-pthread',
    'Then build the addon: npx tangent rebuild (or: npm rebuild tangent-edit)',
  ].join('\n');
  t.equal(r.message, expected);
  t.ok(printed.includes(expected), 'printed by the installer');
  const status = JSON.parse(fs.readFileSync(path.join(root, 'build', 'install-status.json'), 'utf8')) as { outcome: string; message: string };
  t.equal(status.outcome, 'no-libtorch');
  t.throws(() => loadAddon(root, {}), { name: 'AddonLoadFailure', message: expected }, 'the loader repeats the instructions verbatim');
});

t.test('the loader maps known failure texts to a remedy naming the libtorch it wanted', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-diag-'));
  const addon = path.join(dir, 'tangent.node');
  const record = {
    torchDir: '/opt/libtorch/share/cmake/Torch',
    libDir: '/opt/libtorch/lib',
    version: '2.3.1',
    variant: 'cuda',
    cudaVersion: '12.1',
    cxxFlags: '-D_GLIBCXX_USE_CXX11_ABI=1',
    source: 'TANGENT_LIBTORCH',
    nodeRuntimeVersion: '18.20.0',
  };
  fs.writeFileSync(path.join(dir, 'tangent.libtorch.json'), JSON.stringify(record));
  const wanted = 'It was built against libtorch 2.3.1 CUDA 12.1 from /opt/libtorch/lib (found: TANGENT_LIBTORCH; Torch_DIR /opt/libtorch/share/cmake/Torch).';
  t.equal(
    diagnose(`libtorch_cpu.so: cannot open shared object file: No such file or directory`, addon, {}),
    `libtorch moved or was removed: libtorch_cpu.so cannot be found (/opt/libtorch/lib is gone). ${wanted} ` +
      'Reinstall that libtorch, or rebuild against the one you have now: npx tangent rebuild (or: npm rebuild tangent-edit).',
  );
  t.match(
    diagnose(`${addon}: undefined symbol: _ZN2at4_ops5zeros4callEN3c108ArrayRefINS2_6SymIntEEE`, addon, { LD_LIBRARY_PATH: '/other/libtorch/lib' }),
    /^another libtorch version is loaded than the one the addon was built against\. It was built against libtorch 2\.3\.1 .* LD_LIBRARY_PATH is \/other\/libtorch\/lib\. Rebuild against the libtorch you have now: npx tangent rebuild/,
  );
  t.match(
    diagnose(`${addon}: undefined symbol: _ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE`, addon, {}),
    /^C\+\+ ABI mismatch: .*pre-cxx11 ABI libtorch/,
  );
  t.match(
    diagnose("/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found (required by /opt/libtorch/lib/libtorch_cpu.so)", addon, {}),
    /^C\+\+ runtime too old: \/opt\/libtorch\/lib\/libtorch_cpu\.so needs GLIBCXX_3\.4\.32, /,
  );
  t.match(
    diagnose(`The module '${addon}'\nwas compiled against a different Node.js version using\nNODE_MODULE_VERSION 108. This version of Node.js requires\nNODE_MODULE_VERSION 115.`, addon, {}),
    `the addon was built for another Node.js (18.20.0); this is ${process.version}. Rebuild it with this Node: npm rebuild tangent-edit (or: npx tangent rebuild).`,
  );
  t.equal(diagnose('something else entirely', addon, {}), null);
});

t.test('a binary that does not load: every attempt listed, then the remedy', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-badbin-'));
  fs.writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'tangent-edit', version: '0.0.0' }));
  fs.mkdirSync(path.join(root, 'build', 'Release'), { recursive: true });
  const addon = path.join(root, 'build', 'Release', 'tangent.node');
  fs.writeFileSync(addon, 'not an ELF file');
  const err = t.throws(() => loadAddon(root, {})) as AddonLoadFailure;
  t.equal(err.attempts[0]?.path, addon);
  t.match(err.message, new RegExp(`^tangent-edit: cannot load the native addon\\.\\n  - ${addon.replace(/[.]/g, '\\.')}: .*(invalid ELF header|file too short)`));
  t.match(err.message, /npx tangent rebuild \(or: npm rebuild tangent-edit\)/);
  // Nothing built and no installer status: say so, and how to build.
  const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-bare-'));
  fs.writeFileSync(path.join(bare, 'package.json'), JSON.stringify({ name: 'tangent-edit', version: '0.0.0' }));
  const e2 = t.throws(() => loadAddon(bare, {})) as AddonLoadFailure;
  t.match(e2.message, /^tangent-edit: the native addon is not built \(looked for .*build\/Release\/tangent\.node and prebuilds\/\)\./);
  t.match(e2.message, /The install script did not run \(npm install --ignore-scripts\?\) or did not finish\. Build it: npx tangent rebuild/);
});

/**
 * One libtorch per build (issue 21): the build's record is what the binary links (ldd), CMake
 * refuses a configuration that mixes two libtorches and names both, and the loader refuses a binary
 * that runs on another libtorch than its record (an LD_LIBRARY_PATH entry, say) with the remedy.
 * The builds against each libtorch (pip 2.x beside Debian's 1.13) are test/install.test.ts's.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { libtorchMismatch, loadedLibtorchDirs } from '../lib/install/load';
import { readLibtorchRecord, type LibtorchRecord } from '../lib/install/record';

const REPO = path.resolve(__dirname, '..');
const ADDON = path.join(REPO, 'build', 'Release', 'tangent.node');
const record = readLibtorchRecord(ADDON);
const DEBIAN_CAFFE2 = '/usr/lib/x86_64-linux-gnu/cmake/Caffe2';

/** The torch/c10 libraries `file` resolves, by the dynamic loader (ldd), as real paths. */
function lddTorch(file: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const r = spawnSync('ldd', [file], { encoding: 'utf8', env });
  const out: string[] = [];
  for (const m of r.stdout.matchAll(/^\s*(lib(?:torch|c10)\S*) => (\S+)/gm)) out.push(m[2] === 'not' ? `${m[1]} not found` : fs.realpathSync(m[2]!));
  return out;
}

t.test('the record beside the addon is what it links: every torch/c10 library in the recorded directory', async (t) => {
  if (!record) return t.fail(`no record beside ${ADDON} (run scripts/setup.sh)`);
  const libs = lddTorch(ADDON);
  t.ok(libs.some((l) => /libtorch_cpu\.so/.test(l)), `ldd lists libtorch_cpu: ${libs.join(', ')}`);
  const dir = fs.realpathSync(record.libDir);
  t.same(libs.filter((l) => path.dirname(l) !== dir), [], `every torch/c10 library is in ${dir}`);
  t.same([...(record.linked ?? [])].sort(), [...libs].sort(), 'the record lists exactly what ldd resolves');
  // The headers' and the libraries' versions agree (2.13.0 and 2.13.0+cpu; 1.13.1 and 1.13).
  t.ok(record.headerVersion && (record.version.startsWith(record.headerVersion) || record.headerVersion.startsWith(record.version)), `headers ${record.headerVersion}, libraries ${record.version}`);
  // The PyTorch cross-checks run on the PyTorch of this libtorch (scripts/test.sh).
  if (record.python && process.env['TANGENT_TEST_PYTHON']) t.equal(process.env['TANGENT_TEST_PYTHON'], record.python);
});

t.test('tangent info tells which libtorch the process runs, beside the record', async (t) => {
  if (!record) return t.fail('no record');
  const r = spawnSync(process.execPath, [path.join(REPO, 'dist', 'lib', 'cli.js'), 'info'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { torchVersion: string; libtorch: LibtorchRecord; libtorchLoaded: string[] };
  t.same(info.libtorchLoaded, [fs.realpathSync(record.libDir)], 'libtorchLoaded is the recorded directory');
  t.same(info.libtorch, record);
  t.equal(info.torchVersion.split('+')[0], record.headerVersion ?? record.version.split('+')[0]);
});

t.test('the loader refuses a binary that runs on another libtorch than its record, naming both', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-mismatch-'));
  const addon = path.join(dir, 'tangent.node');
  const want = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-want-'));
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-other-'));
  fs.writeFileSync(path.join(dir, 'tangent.libtorch.json'), JSON.stringify({ torchDir: `${want}/share/cmake/Torch`, libDir: want, version: '2.13.0+cpu', variant: 'cpu', cudaVersion: '', cxxFlags: '', source: 'venv', nodeRuntimeVersion: '20' }));
  t.equal(libtorchMismatch(addon, [fs.realpathSync(want)], {}), null, 'the recorded libtorch: accepted');
  t.equal(libtorchMismatch(addon, [], {}), null, 'nothing mapped (not Linux): no verdict');
  const msg = libtorchMismatch(addon, [fs.realpathSync(other)], { LD_LIBRARY_PATH: other });
  t.match(msg, `tangent-edit: the native addon ${addon} was built against libtorch 2.13.0+cpu CPU from ${want}`);
  t.match(msg, `but this process runs libtorch_cpu from ${fs.realpathSync(other)}`);
  t.match(msg, `LD_LIBRARY_PATH is ${other}`);
  t.match(msg, 'npx tangent rebuild');
  t.match(libtorchMismatch(addon, [fs.realpathSync(want), fs.realpathSync(other)], {}), /as well: two libtorches in one process/);
  // /proc/self/maps parsing.
  const maps = path.join(dir, 'maps');
  fs.writeFileSync(maps, `7f00-7f01 r-xp 00000000 fd:00 1 ${want}/libtorch_cpu.so\n7f01-7f02 r--p 00000000 fd:00 1 ${want}/libtorch_cpu.so\n7f02-7f03 r-xp 0 fd:00 2 /usr/lib/x86_64-linux-gnu/libc10.so.1.13\n`);
  t.same(loadedLibtorchDirs(maps), [fs.realpathSync(want)]);
});

t.test('for real: LD_LIBRARY_PATH putting another libtorch first is refused at load, with the remedy', { skip: fs.existsSync(ADDON) && record ? false : 'addon not built' }, async (t) => {
  // A directory that shadows the recorded libtorch: the other libtorch on this machine when there
  // is one (Debian's beside a pip build, or the reverse), else a copy of the recorded one.
  const rec = record!;
  const debianLib = '/usr/lib/x86_64-linux-gnu';
  const recorded = fs.realpathSync(rec.libDir);
  let shadow: string;
  if (recorded !== debianLib && fs.existsSync(path.join(debianLib, 'libtorch_cpu.so.1.13'))) {
    // Debian's sonames differ (libtorch_cpu.so.1.13), so point plain names at them.
    shadow = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-shadow-'));
    for (const n of ['libtorch_cpu.so', 'libtorch.so', 'libc10.so']) fs.symlinkSync(fs.realpathSync(path.join(debianLib, `${n}.1.13`)), path.join(shadow, n));
  } else {
    shadow = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-shadow-'));
    for (const n of fs.readdirSync(recorded)) if (/^lib(torch|c10|gomp|shm)/.test(n)) fs.copyFileSync(path.join(recorded, n), path.join(shadow, n));
  }
  const env = { ...process.env, LD_LIBRARY_PATH: shadow };
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(REPO, 'dist', 'lib', 'binding.js'))}).native().info()`], { encoding: 'utf8', env, timeout: 120_000 });
  t.not(r.status, 0, 'it does not run');
  t.notOk(r.signal, `no crash (signal ${r.signal})`);
  t.match(r.stderr, /AddonLoadFailure|cannot load the native addon|was built against/, 'a typed load failure');
  t.match(r.stderr, /npx tangent rebuild/, 'with the remedy');
  t.comment(r.stderr.split('\n').find((l) => /tangent-edit:/.test(l)) ?? r.stderr.slice(0, 400));
});

t.test('CMake refuses a configuration that mixes two installations (a pip config, Debian\'s Caffe2 config) and names both', { skip: fs.existsSync(DEBIAN_CAFFE2) && record && !record.libDir.startsWith('/usr/lib') ? false : 'only for a pip or archive build beside the Debian packages (this build is Debian 1.13, or they are absent)' }, async (t) => {
  const rec = record!;
  const b = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-mix-'));
  // The bug this guards against: the pip config with Debian's Caffe2 config (what CMake's search
  // order gave before) compiles against one libtorch's headers and links the other's libraries.
  const r = spawnSync('cmake', ['-S', REPO, '-B', b, `-DTorch_DIR=${rec.torchDir}`, `-DCaffe2_DIR=${DEBIAN_CAFFE2}`, '-DTANGENT_CCACHE=OFF'], { encoding: 'utf8', timeout: 300_000 });
  const out = `${r.stdout}\n${r.stderr}`.replace(/\n\s+/g, ' ');
  t.not(r.status, 0, 'configuring fails');
  t.match(out, /tangent-edit: (two libtorches in one build|the libtorch headers are version)/, out.slice(-1500));
  t.match(out, /x86_64-linux-gnu\/(libc10|libtorch)/, "names Debian's libraries");
  t.match(out, rec.headerVersion ?? '', 'names the headers\' version');
  fs.rmSync(b, { recursive: true, force: true });
});

// Issue 9, Why 1: reading a checkpoint never executes code. A crafted TorchScript archive whose
// __setstate__ prints a marker (or loops forever) is read by loadStateDict / merge / inspect as
// data; only Model.load runs it, and only with { trustCode: true } (documented in docs/security.md).
// Run: npx tap test/security-code.test.ts
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Pickle, evilTorchScript, stored, zip } from './fixtures/security/craft';
import { CLI, runChild, runTs } from './fixtures/security/run-child';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sec-code-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const MARKER = 'TANGENT-PWNED-7f3a';
const printing = path.join(tmp, 'printing.pt');
fs.writeFileSync(printing, evilTorchScript(`print("${MARKER}")`));
const looping = path.join(tmp, 'looping.pt');
fs.writeFileSync(looping, evilTorchScript('i = 0\nwhile True:\n  i = i + 1'));

t.test('Model.load with trustCode runs the archive\'s code (the crafted file really is hostile; test/security-trust.test.ts: not without it)', async (t) => {
  const script = path.join(tmp, 'model-load.ts');
  fs.writeFileSync(script, `import { Model } from ${JSON.stringify(path.join(__dirname, '..', 'lib', 'model'))};
Model.load(process.argv[2]!, { trustCode: true }).then((m) => { console.log(JSON.stringify({ params: [...m.parameters().keys()] })); });\n`);
  const r = runTs(script, [printing], { timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, MARKER, 'torch::jit::load ran __setstate__');
});

t.test('loadStateDict reads a TorchScript archive as data, without running it', async (t) => {
  const r = runChild('load', [printing, looping], { timeout: 30_000 });
  t.equal(r.timedOut, false, 'no hang (the looping __setstate__ is not run)');
  t.equal(r.signal, null);
  t.equal(r.status, 0, r.stderr);
  t.notMatch(r.stdout, MARKER, 'no code ran');
  for (const [i, f] of [printing, looping].entries()) {
    const o = r.lines[i]!;
    t.equal(o.file, f);
    t.equal(o.ok, true, JSON.stringify(o));
    t.same(o.tensors, [['w', 'float32', [3], [1, 2, 3]], ['b', 'float32', [1], [4]]], 'parameters, then buffers, with their values');
  }
});

t.test('merge reads a TorchScript archive as data, without running it', async (t) => {
  const out = path.join(tmp, 'merged.safetensors');
  const r = runChild('merge', [printing, printing, out], { timeout: 30_000 });
  t.equal(r.timedOut, false);
  t.equal(r.status, 0, r.stderr);
  t.notMatch(r.stdout, MARKER, 'no code ran');
  t.same(r.lines[0], { file: printing, ok: true, tensors: 2 });
});

t.test('tangent inspect reads a TorchScript archive as data, without running it', async (t) => {
  const r = runTs(CLI, ['inspect', looping], { timeout: 30_000 });
  t.equal(r.timedOut, false, 'no hang');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^w\s+float32\s+\[3\]/m);
  t.match(r.stdout, /^b\s+float32\s+\[1\]/m);
});

t.test('a module whose state only its own code can read (a tuple for __setstate__) is refused, pointing to Model.load', async (t) => {
  const tuple = path.join(tmp, 'tuple.pt');
  fs.writeFileSync(tuple, evilTorchScript(`print("${MARKER}")`, { state: 'tuple' }));
  const r = runChild('load', [tuple], { timeout: 30_000 });
  t.equal(r.status, 0, r.stderr);
  t.notMatch(r.stdout, MARKER, 'no code ran');
  t.match(r.lines[0], { ok: false, name: 'CheckpointError', code: 'ERR_SCHEMA' });
  t.match(String(r.lines[0]?.message), /object of class __torch__\.Evil has a tuple of 3 as its state.*only Model\.load can restore it, and Model\.load runs the archive's TorchScript code/);
});

t.test('a TorchScript archive calling anything outside the allow-list is refused, pointing to Model.load', async (t) => {
  const { readTorchScriptTensors } = await import('../lib/checkpoint/torch-pickle');
  const pkl = new Pickle().global('builtins', 'eval').mark().str('1+1').tuple().reduce().stop();
  const bad = path.join(tmp, 'bad.pt');
  fs.writeFileSync(bad, zip([stored('a/data.pkl', pkl), stored('a/code/__torch__.py', Buffer.from('')), stored('a/constants.pkl', new Pickle().emptyTuple().stop())]));
  t.throws(() => readTorchScriptTensors(bad), { name: 'CheckpointError', code: 'ERR_SCHEMA', message: /refusing to load global "builtins\.eval".*Model\.load/ });
});

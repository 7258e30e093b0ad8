// Issue 25, item 3: TorchScript runs only with consent. A crafted TorchScript archive whose
// __setstate__ writes a marker file has no effect through Model.load / the CLI without
// { trustCode: true } / --trust-code (UntrustedCodeError, naming the file and the safe formats),
// and does write it with consent (the archive really is hostile). A .pt2 needs no consent; a
// torch.save file or a safetensors file through Model.load points to loadStateDict; a TorchScript
// archive libtorch cannot compile is an error naming the file, libtorch's first non-empty line
// first; a θ0 built from an inline config is built again from its config and seed.
// Everything that reaches libtorch runs in a child with a timeout.
// Run: npx tap test/security-trust.test.ts
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ArgumentError, Model, saveStateDict, Tensor, TangentError, UntrustedCodeError } from '../lib';
import { writeSafetensors } from '../lib/checkpoint/safetensors';
import { encodeEditMeta, FINETUNED_FORMAT } from '../lib/meta';
import { loadTensors, saveTensors, sha256File } from '../lib/util/state';
import { run, skipWithoutDist } from './cli-fixtures';
import { evilTorchScript, evilTorchScriptParts, mutate, prng, torchScriptZip } from './fixtures/security/craft';
import { runTs } from './fixtures/security/run-child';
import { FIXTURES } from './helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sec-trust-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const f = (name: string) => path.join(tmp, name);

// Loading writes the marker: torch.save in TorchScript is aten::save, run by __setstate__.
const MARKER = f('pwned.pt');
const EVIL = f('evil.pt');
fs.writeFileSync(EVIL, evilTorchScript(`torch.save(state["b"], ${JSON.stringify(MARKER)})`));

/** Model.load of each file in a child (optionally with trustCode): one JSON line per file. */
const LOADER = f('load-models.ts');
fs.writeFileSync(
  LOADER,
  `import { Model } from ${JSON.stringify(path.join(__dirname, '..', 'lib', 'model'))};
(async () => {
  const [trust, ...files] = process.argv.slice(2);
  for (const file of files) {
    try {
      const m = await Model.load(file!, trust === 'trust' ? { trustCode: true } : {});
      console.log(JSON.stringify({ file, ok: true, params: [...m.parameters().keys()] }));
      m.dispose();
    } catch (e) {
      const err = e as { name?: string; code?: string; message?: string; cause?: { name?: string; message?: string } };
      console.log(JSON.stringify({ file, ok: false, name: err.name, code: err.code, message: err.message, cause: err.cause ? { name: err.cause.name, message: err.cause.message } : null }));
    }
  }
})();\n`,
);
const loadInChild = (trust: boolean, files: string[]) => runTs(LOADER, [trust ? 'trust' : 'no', ...files], { timeout: 120_000 });

const UNTRUSTED = (file: string) =>
  new RegExp(
    `^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is a TorchScript archive, and TorchScript runs its own code when it is loaded .*` +
      String.raw`Model\.load\(file, \{ trustCode: true \}\) \(in tangent: --trust-code\)\. A torch\.export program \(\.pt2, written by torch\.export\.save\) carries no code that runs and loads without consent; loadStateDict\(file\)`,
    's',
  );

t.test('Model.load of TorchScript without consent: UntrustedCodeError naming the file and .pt2, and no code runs', async (t) => {
  const r = loadInChild(false, [EVIL]);
  t.equal(r.timedOut, false);
  t.equal(r.signal, null);
  t.equal(r.status, 0, r.stderr);
  t.match(r.lines[0], { file: EVIL, ok: false, name: 'UntrustedCodeError', code: 'ERR_TANGENT_UNTRUSTED_CODE' });
  t.match(String(r.lines[0]?.message), UNTRUSTED(EVIL));
  t.notOk(fs.existsSync(MARKER), "the archive's __setstate__ did not run");
  // In this process too, with trustCode false given explicitly: the same, before libtorch.
  for (const opts of [{}, { trustCode: false }]) {
    const e = await Model.load(EVIL, opts).then(() => null, (err: unknown) => err);
    t.ok(e instanceof UntrustedCodeError && e instanceof TangentError, `${JSON.stringify(opts)}: an UntrustedCodeError (a TangentError)`);
    t.match(e, { code: 'ERR_TANGENT_UNTRUSTED_CODE', message: UNTRUSTED(EVIL) });
  }
  t.notOk(fs.existsSync(MARKER));
});

t.test('with trustCode: true the archive loads and its code runs (it really is hostile)', async (t) => {
  const r = loadInChild(true, [EVIL]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.lines[0], { file: EVIL, ok: true, params: ['w'] });
  t.ok(fs.existsSync(MARKER), '__setstate__ wrote the marker while loading');
  fs.rmSync(MARKER, { force: true });
});

t.test('trustCode must be a boolean', async (t) => {
  await t.rejects(Model.load(EVIL, { trustCode: 'yes' as never }), { name: 'ArgumentError', code: 'ERR_TANGENT_ARGUMENT', message: 'trustCode must be a boolean, got "yes"' });
  await t.rejects(Model.load(EVIL, { trustCode: 1 as never }), { name: 'ArgumentError', message: 'trustCode must be a boolean, got 1' });
  t.notOk(fs.existsSync(MARKER));
});

t.test('a torch.export .pt2 loads without consent', async (t) => {
  const m = await Model.load(path.join(FIXTURES, 'mlp.pt2'));
  t.equal(m.config.arch, 'exported');
  t.ok(m.spec.size > 0, 'its parameters');
  m.dispose();
});

t.test('weights-only checkpoints through Model.load point to loadStateDict, with or without trustCode', async (t) => {
  const pt = path.join(FIXTURES, 'torch_state_dict.pt');
  const st = f('weights.safetensors');
  await saveStateDict(st, new Map([['w', Tensor.from(new Float32Array([1, 2]), [2])]]));
  for (const trustCode of [false, true]) {
    await t.rejects(Model.load(pt, { trustCode }), {
      name: 'ArgumentError',
      message: `${pt} is a torch.save checkpoint: weights, not a model (it holds no program to run). Read it with loadStateDict(file) (in tangent: --pretrained, beside a --model that has the program); Model.load takes a torch.export program (.pt2) or a TorchScript archive`,
    });
    await t.rejects(Model.load(st, { trustCode }), { name: 'ArgumentError', message: new RegExp(`^${st.replace(/[.]/g, '\\.')} is a safetensors checkpoint: weights, not a model .*loadStateDict\\(file\\)`) });
  }
  const e = await Model.load(pt).then(() => null, (err: unknown) => err);
  t.ok(e instanceof ArgumentError);
  t.notMatch(String((e as Error).message), /PytorchStreamReader|constants\.pkl/, "not libtorch's message");
});

t.test("a TorchScript archive libtorch cannot compile: the error names the file, libtorch's first non-empty line first", async (t) => {
  const parts = evilTorchScriptParts('pass');
  const broken = f('broken.pt');
  fs.writeFileSync(broken, torchScriptZip({ ...parts, code: parts.code.replace('return torch.mul(x, self.b)', 'return torch.mul(x, self.b) $ ?') }));
  // Seeded mutants of the code/ record (valid zip, valid CRCs): what the TorchScript compiler says about each.
  const rnd = prng(25);
  const mutants: string[] = [];
  for (let i = 0; i < 40; i++) {
    const file = f(`mutant-${i}.pt`);
    fs.writeFileSync(file, torchScriptZip({ ...parts, code: mutate(Buffer.from(parts.code), rnd).toString('latin1') }));
    mutants.push(file);
  }
  const r = loadInChild(true, [broken, ...mutants]);
  t.equal(r.timedOut, false, 'no hang');
  t.equal(r.signal, null, 'no crash');
  t.equal(r.status, 0, r.stderr);
  const [b, ...rest] = r.lines;
  t.match(b, { file: broken, ok: false, name: 'CheckpointError', code: 'ERR_IO', cause: { name: 'TorchError' } });
  const first = String(b?.message).split('\n')[0]!;
  t.match(first, new RegExp(`^${broken.replace(/[.]/g, '\\.')}: cannot load TorchScript module: \\S`), `first line: ${first}`);
  t.match(String(b?.message), /\$/, "the rest of libtorch's message (the source excerpt) follows");
  let failed = 0;
  for (const o of rest.filter((x) => typeof x.file === 'string')) {
    if (o.ok) continue;
    failed++;
    const line = String(o.message).split('\n')[0]!;
    t.ok(String(o.message).includes(String(o.file)), `${path.basename(String(o.file))}: ${o.name} names the file (${line.slice(0, 120)})`);
    t.ok(line.replace(String(o.file), '').replace(/^[:\s]*(cannot load TorchScript module:)?/, '').trim() !== '', 'and its first line says why');
    // eslint-disable-next-line no-control-regex
    t.notMatch(String(o.message), /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/, 'no raw control characters from the archive');
  }
  t.ok(failed > 0, `${failed} of ${mutants.length} mutants fail to load`);
});

t.test('the CLI: --trust-code on the verbs that load a model, also for the model a checkpoint names', { skip: skipWithoutDist }, async (t) => {
  const n = 16;
  const x = new Float32Array(n * 64).map((_, i) => (i % 7) / 7);
  const y = BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 4));
  const data = f('data.safetensors');
  await saveStateDict(data, new Map([['images', Tensor.from(x, [n, 1, 8, 8])], ['labels', Tensor.from(y, [n], 'int64')]]));
  const ft = (...extra: string[]) => run('finetune', '--data', data, '--model', EVIL, '--mode', 'standard', '--out', f('ft.safetensors'), '--steps', '1', '--batch-size', '4', '--progress', 'none', ...extra);

  const no = ft();
  t.equal(no.status, 2);
  t.match(no.stderr.split('\n')[0], new RegExp(`^tangent finetune: UntrustedCodeError: ${UNTRUSTED(EVIL).source.slice(1)}`, 's'));
  t.notMatch(no.stderr, /^\s+at /m, 'no stack trace');
  t.notOk(fs.existsSync(MARKER), 'no code ran');

  const yes = ft('--trust-code');
  t.notMatch(yes.stderr, /UntrustedCodeError/, 'consent given');
  t.ok(fs.existsSync(MARKER), 'with --trust-code the model was loaded (its __setstate__ ran)');
  fs.rmSync(MARKER, { force: true });

  // A checkpoint whose metadata names the TorchScript model: eval and apply need --trust-code too.
  const ref = { arch: 'torchscript' as const, path: EVIL, sha256: sha256File(EVIL) };
  const meta = encodeEditMeta({ format: FINETUNED_FORMAT, mode: 'standard', theta0: { path: EVIL, sha256: '0'.repeat(64) }, model: ref, heads: null, tasks: { data: data } }, { task: 'data' });
  const ck = f('ck.safetensors');
  writeSafetensors(ck, [['w', { dtype: 'float32', shape: [3], data: new Uint8Array(12) }]], meta);
  for (const [verb, args] of [['eval', ['--checkpoints', ck, '--progress', 'none']], ['apply', ['--checkpoints', ck, '--alpha', '1', '--out', f('applied.safetensors')]]] as const) {
    const r = run(verb, ...args);
    t.equal(r.status, 2, `${verb}: exit 2`);
    t.match(r.stderr.split('\n')[0], new RegExp(`^tangent ${verb}: UntrustedCodeError: the model of ${ck.replace(/[.]/g, '\\.')} \\(named in its metadata\\): ${UNTRUSTED(EVIL).source.slice(1)}`, 's'));
    t.notOk(fs.existsSync(MARKER), `${verb}: no code ran`);
  }
  const ev = run('eval', '--checkpoints', ck, '--progress', 'none', '--trust-code');
  t.ok(fs.existsSync(MARKER), 'eval --trust-code loads the model the metadata names');
  t.match(ev.stderr, /fine-tuned from a different θ0/, '(then finds θ0 is not the one recorded)');
  fs.rmSync(MARKER, { force: true });

  // The model file changed since the checkpoint was written: refused before it is loaded.
  const moved = encodeEditMeta({ format: FINETUNED_FORMAT, mode: 'standard', theta0: { path: EVIL, sha256: '0'.repeat(64) }, model: { ...ref, sha256: 'f'.repeat(64) }, heads: null, tasks: { data } }, { task: 'data' });
  writeSafetensors(f('ck2.safetensors'), [['w', { dtype: 'float32', shape: [3], data: new Uint8Array(12) }]], moved);
  const ch = run('eval', '--checkpoints', f('ck2.safetensors'), '--progress', 'none', '--trust-code');
  t.equal(ch.status, 2);
  t.match(ch.stderr.split('\n')[0], `tangent eval: ArgumentError: ${f('ck2.safetensors')} was fine-tuned from the model ${EVIL} (sha256 ffffffffffff…), which has changed since`);
  t.notOk(fs.existsSync(MARKER), 'not loaded');
});

t.test('a θ0 built from an inline config is built again from the config and seed (not "does not exist any more")', { skip: skipWithoutDist }, async (t) => {
  const n = 32;
  const x = new Float32Array(n * 64).map((_, i) => ((i * 13) % 17) / 17);
  const y = BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 4));
  const data = f('cfg-data.safetensors');
  await saveStateDict(data, new Map([['images', Tensor.from(x, [n, 1, 8, 8])], ['labels', Tensor.from(y, [n], 'int64')]]));
  const cfg = JSON.stringify({ arch: 'cnn', inChannels: 1, imageSize: 8, channels: [4], outputDim: 4 });
  const ck = f('cfg.safetensors');
  const ft = run('finetune', '--data', data, '--model', cfg, '--seed', '3', '--mode', 'standard', '--out', ck, '--steps', '2', '--batch-size', '8', '--progress', 'none', '--json');
  t.equal(ft.status, 0, ft.stderr);
  const ev = run('eval', '--checkpoints', ck, '--progress', 'none', '--json');
  t.equal(ev.status, 0, ev.stderr);
  t.equal(JSON.parse(ev.stdout).checkpoints.length, 1, 'evaluated from the metadata alone');
  const { tensors, metadata } = loadTensors(ck);
  t.equal(metadata.theta0Path, 'the inline config (seed 3)', 'θ0 recorded as a config and seed, not a file');
  // The same θ0 hash recorded with another seed: built again it is a different θ0, said so.
  saveTensors(f('cfg-seed4.safetensors'), tensors, { ...metadata, theta0Path: 'the inline config (seed 4)' });
  const other = run('eval', '--checkpoints', f('cfg-seed4.safetensors'), '--progress', 'none');
  t.equal(other.status, 2);
  t.match(
    other.stderr.split('\n')[0],
    /^tangent eval: ArgumentError: .*cfg-seed4\.safetensors was fine-tuned from θ0 = the inline config \(seed 4\) \(sha256 [0-9a-f]{12}…\), a model built from a config and seed, not a file; built again from the config in its metadata with seed 4 it has sha256 [0-9a-f]{12}…: give θ0 with --pretrained$/,
  );
});

t.test('consent cannot come from a config file (configs travel with models)', { skip: skipWithoutDist }, async (t) => {
  const cfg = f('shared.yaml');
  fs.writeFileSync(cfg, `model: ${EVIL}\ntrust_code: true\nmode: standard\n`);
  const r = run('finetune', '--config', cfg, '--data', f('data.safetensors'), '--out', f('ft2.safetensors'), '--progress', 'none');
  t.equal(r.status, 2);
  t.equal(r.stderr.split('\n')[0], `tangent finetune: ArgumentError: ${cfg}: trust_code cannot be set in a config file (configs are shared with models); consent to run a TorchScript model's code is given on the command line with --trust-code`);
  t.notOk(fs.existsSync(MARKER), 'no code ran');
});

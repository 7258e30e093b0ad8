/**
 * The CLI's errors: every option and name validated before any work, one line (plus the verb's
 * usage for option errors), exit code 2, never a stack trace — one test per problem of issue 11.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { Model, train, type VitConfig } from '../lib';
import { writeSafetensors } from '../lib/checkpoint/safetensors';
import { run, skipWithoutDist, TS } from './cli-fixtures';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-cli-errors-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const f = (name: string) => path.join(dir, name);
const BUILTINS = 'built-in: mnist, fashion, letters, greek, typed-digits, scripts; or give a path to an image folder, .npy, .npz or .safetensors';

/** Exit 2, the first stderr line exactly `line`, no stack trace; returns stderr's lines. */
function fails(t: tap.Test, r: ReturnType<typeof run>, line: string, usage?: string): string[] {
  const lines = r.stderr.trimEnd().split('\n');
  t.equal(r.status, 2, `exit 2 (${line.slice(0, 40)}…)`);
  t.equal(lines[0], line);
  t.notMatch(r.stderr, /^\s+at /m, 'no stack trace');
  t.notMatch(r.stderr, /^Options:/m, 'not the whole help');
  if (usage !== undefined) t.equal(lines[1], usage, 'the verb’s usage');
  return lines;
}

t.test('conventions: --version, one-line option errors with the verb usage, required options named', { skip: skipWithoutDist }, async (t) => {
  const v = run('--version');
  t.equal(v.status, 0);
  t.equal(v.stdout, `${(JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version}\n`);
  const usage = 'usage: tangent finetune --data PATH|builtin:NAME --mode standard|linear (--model FILE|CONFIG | --pretrained t0.safetensors) [--heads heads.safetensors] --out FILE [options]';
  fails(t, run('finetune', '--mode', 'sideways'), "tangent: option '--mode <mode>' argument 'sideways' is invalid. --mode must be one of standard, linear, got 'sideways'", usage);
  fails(t, run('finetune', '--steps', 'many'), "tangent: option '--steps <n>' argument 'many' is invalid. --steps must be an integer >= 1, got 'many'", usage);
  fails(t, run('finetune', '--mode', 'linear'), 'tangent finetune: ArgumentError: --data: required; --out: required', usage);
  fails(t, run('finetune', '--bogus'), "tangent: unknown option '--bogus'", usage);
  fails(t, run('ntk', '--output', '3'), "tangent: unknown option '--output'");
  const add = fails(t, run('add', '--checkpoints', 'a.safetensors'), "tangent add: ArgumentError: 'tangent add' is gone: the evaluation sweep is 'tangent addition-sweep', the edited checkpoint is written by 'tangent apply --checkpoints A B --alpha X --out FILE'");
  t.equal(add.length, 1, 'one line');
  fails(t, run('negate'), "tangent negate: ArgumentError: 'tangent negate' is gone: the evaluation sweep is 'tangent negation-sweep', the edited checkpoint is written by 'tangent apply --checkpoints A --alpha -X --out FILE'");
});

t.test('task and dataset names are validated before any work', { skip: skipWithoutDist }, async (t) => {
  const t0 = Date.now();
  fails(t, run('disentangle', '--demo', '--data', 'builtin:cifar', 'builtin:mnist'), `tangent disentangle: ArgumentError: --data: unknown built-in dataset 'cifar' (${BUILTINS})`);
  fails(t, run('ntk', '--data', f('pngs')), `tangent ntk: ArgumentError: --data: ${f('pngs')}: no such file or folder`);
  fails(t, run('finetune', '--data', 'builtin:cifar', '--mode', 'linear', '--model', TS, '--out', f('x.safetensors')), `tangent finetune: ArgumentError: --data: unknown built-in dataset 'cifar' (${BUILTINS})`);
  fails(t, run('protocol', '--tasks', 'mnist,cifar'), "tangent protocol: ArgumentError: --tasks: unknown built-in task 'cifar' (built-in: mnist, fashion, letters, greek, typed-digits, scripts)");
  fails(t, run('finetune', '--data', 'builtin:mnist', '--mode', 'linear', '--model', f('nope.pt'), '--out', f('x.safetensors')), `tangent finetune: ArgumentError: --model: ${f('nope.pt')}: no such file (expected a torch.export .pt2 or TorchScript file, a JSON model config, inline JSON or builtin:small-vit / builtin:vit)`);
  t.ok(Date.now() - t0 < 20000, 'no work was started');
  t.notOk(fs.existsSync(f('x.safetensors')));
});

t.test('checkpoints the CLI did not write are named as such; θ files are not task vectors', { skip: skipWithoutDist }, async (t) => {
  const w = { dtype: 'float32' as const, shape: [2], data: new Uint8Array(8) };
  writeSafetensors(f('merged.safetensors'), [['w', w]], { format: 'pt' });
  fails(
    t,
    run('eval', '--checkpoints', f('merged.safetensors')),
    `tangent eval: CheckpointError: ${f('merged.safetensors')}: not a checkpoint written by tangent finetune, merge or apply (metadata format "pt"), so its mode, θ0 and tasks are unknown`,
  );
  writeSafetensors(f('theta-a.safetensors'), [['w', w]], { format: 'tangent-edit/finetuned@1', mode: 'standard', task: 'mnist' });
  writeSafetensors(f('theta-b.safetensors'), [['w', w]], { format: 'tangent-edit/finetuned@1', mode: 'standard', task: 'letters' });
  fails(
    t,
    run('disentangle', '--model', TS, '--tau1', f('theta-a.safetensors'), '--tau2', f('theta-b.safetensors'), '--data', 'builtin:mnist', 'builtin:letters'),
    `tangent disentangle: ArgumentError: --tau1: ${f('theta-a.safetensors')} is a fine-tuned checkpoint θ (format tangent-edit/finetuned@1), not a task vector τ = θ − θ0; give fine-tuned checkpoints with --checkpoints`,
  );
  fails(
    t,
    run('apply', '--task-vectors', f('theta-a.safetensors'), '--alpha', '1', '--model', TS, '--out', f('y.safetensors')),
    `tangent apply: ArgumentError: --task-vectors: ${f('theta-a.safetensors')} is a checkpoint θ (format tangent-edit/finetuned@1), not a task vector τ = θ − θ0; give it with --checkpoints`,
  );
  fails(t, run('apply', '--checkpoints', f('theta-a.safetensors'), '--out', f('y.safetensors')), 'tangent apply: ArgumentError: give either --alpha (one α for all) or --alphas (one per input)');
});

t.test("disentangle reads θ0's model from its metadata and refuses a feature model without heads", { skip: skipWithoutDist }, async (t) => {
  const cfg: VitConfig = { arch: 'vit', imageSize: 28, patchSize: 7, inChannels: 1, dim: 16, depth: 1, heads: 2, mlpDim: 32, numClasses: 0 };
  const model = Model.create(cfg, { seed: 3 });
  train.saveBackbone(f('t0.safetensors'), { model, config: cfg, theta0: model.parameters() });
  train.saveTensors(f('tau1.safetensors'), model.parameters());
  train.saveTensors(f('tau2.safetensors'), model.parameters());
  // No --model: the config comes from θ0's metadata (the built-in default would be a ShapeError).
  fails(
    t,
    run('disentangle', '--pretrained', f('t0.safetensors'), '--tau1', f('tau1.safetensors'), '--tau2', f('tau2.safetensors'), '--data', 'builtin:mnist', 'builtin:letters'),
    "tangent disentangle: ArgumentError: the model outputs 16 features, not logits: give --heads (from tangent pretrain) with a head for task 'mnist'",
  );
  fails(
    t,
    run('finetune', '--data', 'builtin:mnist', '--mode', 'standard', '--pretrained', f('t0.safetensors'), '--out', f('z.safetensors')),
    "tangent finetune: ArgumentError: the model outputs 16 features, not logits: give --heads (from tangent pretrain) with a head for task 'mnist'",
  );
  model.dispose();
});

t.test('issue 25: usage of the retired verbs, positive sizes, an output that would replace an input', { skip: skipWithoutDist }, async (t) => {
  for (const [old, sweep] of [['add', 'addition-sweep'], ['negate', 'negation-sweep']] as const) {
    const h = run('help', old);
    t.equal(h.status, 0, `help ${old}: exit 0`);
    t.match(h.stdout.split('\n')[0], new RegExp(`^Usage: tangent ${old} \\(retired\\) use: tangent ${sweep} --checkpoints FILE… \\[options\\], or tangent apply --checkpoints A`), `help ${old}: a usage line`);
  }
  fails(t, run('ntk', '--max-memory', '0'), "tangent: option '--max-memory <size>' argument '0' is invalid. --max-memory must be a positive size like 2GiB, 512MiB or 1e9, got '0'");
  const t0 = f('t0-issue25.safetensors');
  writeSafetensors(t0, [['w', { dtype: 'float32', shape: [1], data: new Uint8Array(4) }]]);
  const before = fs.readFileSync(t0);
  fails(
    t,
    run('finetune', '--data', 'builtin:mnist', '--mode', 'standard', '--pretrained', t0, '--out', t0),
    `tangent finetune: ArgumentError: --out ${t0} is the same file as --pretrained ${t0}: the output would replace an input of the same command; write it to another path`,
  );
  t.same(fs.readFileSync(t0), before, 'θ0 untouched');
});

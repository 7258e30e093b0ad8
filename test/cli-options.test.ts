/** The CLI's shared option handling (lib/cli/options.ts): YAML configs under flags, zod errors naming the flag or the field. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { FinetuneConfig } from '../lib/cli/train';
import { intArg, numListArg, resolveConfig } from '../lib/cli/options';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-cli-options-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

t.test('flags are validated with zod before any file is read; errors name the flag', async (t) => {
  await t.rejects(resolveConfig(FinetuneConfig, { data: 'builtin:mnist', mode: 'linear', pretrained: '/missing/t0.safetensors', out: 'x.safetensors', batchSize: 0 }, 'finetune'), {
    name: 'ArgumentError',
    message: '--batch-size: Number must be greater than 0',
  });
  await t.rejects(resolveConfig(FinetuneConfig, { mode: 'linear' }, 'finetune'), { message: '--data: required; --out: required' });
});

t.test('a YAML config: problems name the file and the field, flags win, paths are relative to the file', async (t) => {
  const cfg = path.join(tmp, 'ft.yaml');
  fs.writeFileSync(cfg, 'data: ./pngs\nmode: sideways\nmodel: net.pt\nout: o.safetensors\nsteps: many\n');
  await t.rejects(resolveConfig(FinetuneConfig, { config: cfg }, 'finetune'), {
    message: `${cfg} is invalid: mode: Invalid enum value. Expected 'standard' | 'linear', received 'sideways'; steps: Expected number, received string`,
  });
  fs.writeFileSync(cfg, 'data: ./pngs\nmode: linear\nmodel: net.pt\nout: o.safetensors\nbogus: 1\n');
  await t.rejects(resolveConfig(FinetuneConfig, { config: cfg }, 'finetune'), { message: `${cfg} is invalid: (root): Unrecognized key(s) in object: 'bogus'` }, 'unknown keys rejected');
  fs.writeFileSync(cfg, 'data: ./pngs\nmode: linear\nmodel: net.pt\nheads: builtin:none\nout: o.safetensors\nsteps: 10\n');
  const o = await resolveConfig(FinetuneConfig, { config: cfg, steps: 20 }, 'finetune');
  t.equal(o.steps, 20, 'flags override the file');
  t.equal(o.data, path.join(tmp, 'pngs'), 'paths in the file are relative to it');
  t.equal(o.model, path.join(tmp, 'net.pt'));
  t.equal(o.heads, 'builtin:none', 'builtin: specs are not paths');
  t.equal(o.batch_size, 128, 'defaults filled');
  t.equal(o.test_fraction, 0.2);
});

t.test('option parsers: one message style', async (t) => {
  t.throws(() => intArg('--steps')('1.5'), { message: "--steps must be an integer >= 1, got '1.5'" });
  t.equal(intArg('--seed', 0)('0'), 0);
  t.same(numListArg('--alphas')('0, -1,0.5'), [0, -1, 0.5]);
  t.throws(() => numListArg('--alphas')('0,x'), { message: "--alphas must be a comma-separated list of numbers, got '0,x'" });
});

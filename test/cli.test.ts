import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { loadStateDict, saveStateDict, Tensor } from '../lib';

// The compiled CLI (npm test builds dist/ first, through scripts/setup.sh).
const CLI = path.resolve(__dirname, '..', 'dist', 'lib', 'cli.js');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

t.test('tangent merge and inspect, end to end', { skip: fs.existsSync(CLI) ? false : 'dist/ not built (run npm run build:ts)' }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-cli-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const w = (v: number[]) => new Map([['w', Tensor.from(Float32Array.from(v), [2, 2])], ['n', Tensor.from(new BigInt64Array([4n]), [1])]]);
  await saveStateDict(path.join(dir, 'base.safetensors'), w([1, 1, 1, 1]));
  await saveStateDict(path.join(dir, 'a.safetensors'), w([2, 1, 1, 1]));
  await saveStateDict(path.join(dir, 'b.pt'), w([1, 1, 1, 3]));
  fs.writeFileSync(
    path.join(dir, 'merge.yaml'),
    ['base_model: base.safetensors', 'models:', '  - model: a.safetensors', '    weight: 1', '  - model: b.pt', '    weight: 0.5', 'method: task_arithmetic', 'parameters: { lambda: 2 }', 'output: out.safetensors', ''].join('\n'),
  );
  const r = run('merge', '--config', path.join(dir, 'merge.yaml'));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /merged 2 tensors .* with task_arithmetic/);
  const out = await loadStateDict(path.join(dir, 'out.safetensors'));
  t.same(Array.from(out.tensors.get('w')!.data() as Float32Array), [3, 1, 1, 3], 'θ0 + 2(τ_a + 0.5 τ_b)');

  const i = run('inspect', path.join(dir, 'out.safetensors'));
  t.equal(i.status, 0, i.stderr);
  t.match(i.stdout, /w\s+float32\s+\[2, 2\]\s+16 B/);
  t.match(i.stdout, /total: 2 tensors, 5 values \(float32: 4, int64: 1\)/);
  const j = JSON.parse(run('inspect', '--json', path.join(dir, 'b.pt')).stdout) as { format: string; totals: { bytes: number } };
  t.equal(j.format, 'torch');
  t.equal(j.totals.bytes, 24);

  // Invalid config: exit code 2, the field named, nothing read or written.
  fs.writeFileSync(path.join(dir, 'bad.yaml'), 'base_model: nowhere.safetensors\nmodels:\n  - model: a.safetensors\n    weight: heavy\noutput: x.safetensors\n');
  const bad = run('merge', '--config', path.join(dir, 'bad.yaml'));
  t.equal(bad.status, 2);
  t.match(bad.stderr, /ArgumentError: .*bad\.yaml is invalid:\s+models\.0\.weight: Expected number, received string/s);
  t.notOk(fs.existsSync(path.join(dir, 'x.safetensors')));
  const missing = run('inspect', path.join(dir, 'nope.safetensors'));
  t.equal(missing.status, 2);
  t.match(missing.stderr, /CheckpointError: .*nope\.safetensors: no such file/);
});

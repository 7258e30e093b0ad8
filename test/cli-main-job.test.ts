/**
 * The main job as a user runs it: `tangent demo --quick` and `tangent protocol --quick`, end to end
 * through the CLI (the library protocol is smoke-tested at a tinier size in protocol.test.ts). Checks
 * what they write and the invariants that hold whatever the numbers are.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { tmpDir } from './helpers';

const CLI = path.resolve(__dirname, '..', 'dist', 'lib', 'cli.js');
const run = (args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 15 * 60_000, env: { ...process.env, NO_COLOR: '1' } });
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

interface Addition { regime: string; chosenAlpha: number; alphas: Array<{ alpha: number; val: Record<string, number> }>; test: { meanNorm: number } }

t.test('tangent demo --quick writes its tables, figures, JSON and README', async (t) => {
  t.ok(fs.existsSync(CLI), 'dist/ is built (npm test runs the set-up first)');
  const out = path.join(tmpDir(t, 'tangent-demo-test-'), 'results');
  const r = run(['demo', '--quick', '--threads', '2', '--out', out]);
  t.equal(r.status, 0, `exit status 0 (stderr tail: ${r.stderr.slice(-600)})`);
  for (const f of ['README.md', 'protocol.json', 'protocol.md', 'demo.json', 'disentanglement.png', 'disentanglement.svg', 'ntk.png', 'ntk.svg'])
    t.ok(fs.existsSync(path.join(out, f)), `${f} written`);
  for (const f of ['disentanglement.png', 'ntk.png'])
    t.same(fs.readFileSync(path.join(out, f)).subarray(0, 8), PNG, `${f} is a PNG`);
  const readme = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
  t.match(readme, /^# tangent-edit demo results/, 'results/README.md has its title');
  t.match(readme, /!\[[^\]]*\]\(disentanglement\.png\)/, 'the ξ figure is embedded');
  t.match(readme, /!\[[^\]]*\]\(ntk\.png\)/, 'the NTK figure is embedded');
  const report = JSON.parse(fs.readFileSync(path.join(out, 'protocol.json'), 'utf8')) as { addition: Addition[]; settings: { quick: boolean; threads: number } };
  t.equal(report.settings.quick, true);
  t.equal(report.settings.threads, 2, 'the thread count is recorded');
  t.same(report.addition.map((a) => a.regime), ['nonlinear', 'posthoc', 'linear']);
  const at0 = (regime: string) => report.addition.find((a) => a.regime === regime)!.alphas.find((row) => row.alpha === 0)?.val;
  t.same(at0('posthoc'), at0('nonlinear'), 'α = 0: f_lin(θ0) = f(θ0) in the report');
  for (const a of report.addition) t.ok(a.alphas.some((row) => row.alpha === a.chosenAlpha), `${a.regime}: chosen α ${a.chosenAlpha} is on the grid`);
  t.match(r.stdout, /What this run showed:/, 'the plain-language summary is printed');
  t.match(r.stdout, /--quick run/, 'and it says what the quick run cannot show');
});

t.test('tangent protocol --quick on two tasks writes the JSON report and the markdown tables', async (t) => {
  const dir = tmpDir(t, 'tangent-protocol-cli-');
  const r = run(['protocol', '--quick', '--tasks', 'mnist,typed-digits', '--out', path.join(dir, 'r.json'), '--markdown', path.join(dir, 't.md'), '--progress', 'none']);
  t.equal(r.status, 0, `exit status 0 (stderr tail: ${r.stderr.slice(-600)})`);
  const report = JSON.parse(fs.readFileSync(path.join(dir, 'r.json'), 'utf8')) as { settings: { tasks: string[] }; addition: Addition[]; negation: unknown[] };
  t.same(report.settings.tasks, ['mnist', 'typed-digits']);
  t.equal(report.addition.length, 3, 'addition in three regimes');
  t.equal(report.negation.length, 3, 'negation in three regimes');
  const md = fs.readFileSync(path.join(dir, 't.md'), 'utf8');
  t.match(md, /\| Linear FT \|/);
  t.match(md, /\| Non-linear FT \|/);
});

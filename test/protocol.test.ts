/**
 * A smoke run of the main job (the paper's protocol, lib/eval/protocol.ts) at a tiny size: the
 * report's structure, and the invariants that hold whatever the numbers are.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { evaluation, runPaperProtocol, setNumThreads } from '../lib';
import { tmpDir } from './helpers';

setNumThreads(2);
const ALPHAS = [0, 0.5, 1];
const TASKS = ['mnist', 'typed-digits'] as const;

t.test('runPaperProtocol, tiny: structure and invariants', async (t) => {
  const dir = tmpDir(t, 'tangent-protocol-test-');
  const lines: string[] = [];
  const r = await runPaperProtocol({
    quick: true,
    tasks: [...TASKS],
    sourceLimit: 600,
    pretrainSteps: 15,
    trainLimit: 256,
    valLimit: 60,
    testLimit: 60,
    finetune: { steps: 6, batchSize: 32 },
    alphas: ALPHAS,
    workDir: dir,
    progress: { mode: 'none' },
    log: (l) => lines.push(l),
  });
  // Structure.
  t.same(r.settings['tasks'], TASKS, 'settings name the tasks');
  t.same(r.settings['alphas'], ALPHAS);
  t.equal(r.settings['threads'], 2, 'settings state the thread count');
  t.same(r.addition.map((a) => a.regime), evaluation.REGIMES, 'addition in the three regimes');
  t.same(r.negation.map((a) => a.regime), evaluation.REGIMES, 'negation in the three regimes');
  t.same(r.singleTask.map((s) => s.task), TASKS, 'a single-task row per task');
  for (const k of ['data', 'pretrain', 'heads', 'finetune_standard', 'finetune_linear', 'eval_addition', 'eval_negation', 'total'])
    t.ok(typeof r.timings[k] === 'number' && r.timings[k]! >= 0, `timing ${k}`);
  const theta0 = path.join(dir, 'theta0.safetensors');
  t.equal(r.pretrained.sha256, crypto.createHash('sha256').update(fs.readFileSync(theta0)).digest('hex'), 'θ0 hash is the file written');
  for (const task of TASKS)
    for (const mode of ['standard', 'linear'] as const) {
      const f = r.finetuning[task]![mode];
      t.ok(fs.existsSync(f.checkpoint) && f.checkpoint.startsWith(dir), `${task}/${mode}: checkpoint written in the work dir`);
      t.ok(Number.isFinite(f.firstLoss) && Number.isFinite(f.lastLoss) && f.msPerStep > 0, `${task}/${mode}: losses and step time recorded`);
    }
  t.match(r.markdown, /\| Non-linear FT \|/);
  t.match(r.markdown, /\| Linear FT \|/);
  t.ok(lines.some((l) => l.includes('2 threads')), 'the log states the thread count');

  // Invariants.
  const byRegime = Object.fromEntries(r.addition.map((a) => [a.regime, a]));
  const at0 = (regime: string) => byRegime[regime]!.alphas.find((row) => row.alpha === 0)!.val;
  t.same(at0('posthoc'), at0('nonlinear'), 'α = 0: f_lin(θ0) = f(θ0), so post-hoc equals non-linear exactly');
  t.same(at0('linear'), at0('nonlinear'), 'α = 0: linear FT regime equals non-linear exactly');
  const singleKey = { nonlinear: 'standard', posthoc: 'posthoc', linear: 'linear' } as const;
  for (const a of r.addition) {
    t.ok(ALPHAS.includes(a.chosenAlpha), `${a.regime}: chosen α ${a.chosenAlpha} is on the grid`);
    const best = Math.max(...a.alphas.map((row) => row.valMeanNorm));
    t.equal(a.chosenAlpha, a.alphas.find((row) => row.valMeanNorm === best)!.alpha, `${a.regime}: chosen α has the best mean normalized validation accuracy`);
    for (const task of TASKS) {
      const ftAcc = r.singleTask.find((s) => s.task === task)![singleKey[a.regime]]!;
      t.equal(a.finetuned.test[task], ftAcc, `${a.regime}/${task}: the denominator is the same regime's single-task test accuracy (${ftAcc})`);
      t.ok(Math.abs(a.test.normalized[task]! - a.test.acc[task]! / ftAcc) < 1e-12, `${a.regime}/${task}: normalized = acc / fine-tuned acc`);
    }
  }
  for (const n of r.negation) {
    t.ok(Math.abs(n.threshold - 0.95 * n.pretrainedControl.val) < 1e-12, `${n.regime}: threshold = 0.95 × pre-trained control accuracy`);
    for (const [task, row] of Object.entries(n.tasks)) {
      t.ok(ALPHAS.includes(row.chosen.alpha), `${n.regime}/${task}: α on the grid`);
      const c = row.alphas.find((x) => x.alpha === row.chosen.alpha)!;
      t.ok(c.alpha === 0 || c.control >= n.threshold, `${n.regime}/${task}: control ${c.control} ≥ ${n.threshold} at α ${c.alpha}`);
    }
  }
});

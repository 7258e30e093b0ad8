/**
 * A smoke run of the main job (the paper's protocol, lib/eval/protocol.ts) at a tiny size: the
 * report's structure, and the invariants that hold whatever the numbers are.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { evaluation, runPaperProtocol, setNumThreads } from '../lib';
import { headlineOf as evaluationHeadline } from '../lib/protocol';
import { tmpDir } from './helpers';
import type { TaskName } from '../lib/data';

setNumThreads(2);
// A grid of small α so that the choice often sits on its edge (0.1), exercising the extension.
const ALPHAS = [0, 0.05, 0.1];
const EXT = [0, 0.05, 0.1, 0.5, 1];
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
    lrGrid: { standard: [1e-3, 3e-3], linear: [1e-3, 1e-2] },
    seeds: 2,
    alphas: ALPHAS,
    alphaExtension: EXT,
    theta0Cache: path.join(dir, 'cache'),
    workDir: dir,
    progress: { mode: 'none' },
    log: (l) => lines.push(l),
  });
  // Structure.
  t.same(r.settings['tasks'], TASKS, 'settings name the tasks');
  t.same(r.settings['alphas'], ALPHAS);
  t.equal(r.settings['seeds'], 2);
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
    t.ok(a.alphas.some((row) => row.alpha === a.chosenAlpha), `${a.regime}: chosen α ${a.chosenAlpha} is on the grid`);
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
      t.ok(row.alphas.some((x) => x.alpha === row.chosen.alpha), `${n.regime}/${task}: α on the grid`);
      const c = row.alphas.find((x) => x.alpha === row.chosen.alpha)!;
      t.ok(c.alpha === 0 || c.control >= n.threshold, `${n.regime}/${task}: control ${c.control} ≥ ${n.threshold} at α ${c.alpha}`);
    }
  }

  // Learning rate per mode: on its grid, the best mean validation accuracy, and the seed-0 models.
  t.same(r.lrSelection.map((l) => l.mode), ['standard', 'linear']);
  for (const l of r.lrSelection) {
    t.ok(l.grid.includes(l.chosen), `${l.mode}: chosen lr ${l.chosen} is on its grid`);
    t.equal(l.valMeanAcc.length, l.grid.length);
    const best = Math.max(...l.valMeanAcc);
    t.equal(l.chosen, l.grid[l.valMeanAcc.findIndex((v) => v >= best - 1e-12)], `${l.mode}: chosen lr has the best mean validation accuracy`);
    for (const task of TASKS) t.equal(r.finetuning[task]![l.mode].lr, l.chosen, `${task}/${l.mode}: seed-0 model used the chosen lr`);
    t.equal((r.settings['finetune'] as Record<string, { lr: number }>)[l.mode]!.lr, l.chosen, 'settings state the chosen lr');
    // Edge extension: the grid grows by one lr (the last ratio) exactly while the best is its largest, at most twice.
    const first = l.mode === 'standard' ? [1e-3, 3e-3] : [1e-3, 1e-2];
    t.same(l.grid, [...first, ...l.extendedWith], `${l.mode}: grid = first grid + extension`);
    t.ok(l.extendedWith.length <= 2, `${l.mode}: at most 2 extensions`);
    for (let i = 0; i <= l.extendedWith.length; i++) {
      const n = first.length + i;
      const scores = l.valMeanAcc.slice(0, n);
      const bestIdx = scores.findIndex((v) => v >= Math.max(...scores) - 1e-12);
      if (i < l.extendedWith.length) {
        t.equal(bestIdx, n - 1, `${l.mode}: extended after ${n} lrs because the best was the largest`);
        t.ok(Math.abs(l.grid[n]! / l.grid[n - 1]! - first[1]! / first[0]!) < 1e-6, `${l.mode}: the extension keeps the grid's ratio`);
      } else if (l.extendedWith.length < 2) t.not(bestIdx, n - 1, `${l.mode}: not extended: the best is inside the grid`);
    }
    t.equal(l.stillOnEdge, l.chosen === l.grid[l.grid.length - 1], `${l.mode}: stillOnEdge iff the largest lr tried was chosen`);
  }
  // Seeds: per-seed results, seed ≥ 1 uses the chosen lr, headline = mean/std of per-seed values.
  t.same(r.seeds.map((s) => s.seed), [0, 1]);
  t.equal(r.seeds[0]!.addition, r.addition, 'top-level tables are seed 0');
  for (const task of TASKS)
    for (const l of r.lrSelection) t.equal(r.seeds[1]!.finetuning[task]![l.mode].lr, l.chosen, `seed 1 ${task}/${l.mode}: chosen lr`);
  const per = r.seeds.map((s) => evaluationHeadline(s));
  for (const k of ['addition.linear.meanNorm', 'addition.nonlinear.meanAbs', 'negation.linear.target', 'singleTask.gapStandardMinusLinear']) {
    const v = per.map((h) => h[k]!);
    const m = (v[0]! + v[1]!) / 2;
    t.ok(Math.abs(r.headline[k]!.mean - m) < 1e-12, `${k}: mean of the seeds`);
    t.ok(Math.abs(r.headline[k]!.std - Math.abs(v[0]! - v[1]!) / Math.SQRT2) < 1e-12, `${k}: sample std of the seeds`);
    t.same(r.headline[k]!.values, v);
  }
  t.match(r.markdown, /Headline numbers over 2 seeds/);
  t.comment(`α extended in ${r.alphaEdges.filter((e) => e.extended).length} of ${r.alphaEdges.length} sweeps`);
  // α edges: one record per sweep; extended exactly when the first choice sat on the edge.
  t.equal(r.alphaEdges.length, 2 * 2 * 3, 'seeds × {addition, negation} × regimes');
  for (const e of r.alphaEdges) {
    t.equal(e.extended, e.firstChoice.includes(0.1), `${e.kind}/${e.regime}/seed ${e.seed}: extended iff α = 0.1 (the edge) was chosen (${e.firstChoice})`);
    t.equal(e.gridMax, 0.1);
    const res = e.kind === 'addition' ? r.seeds[e.seed]!.addition.find((a) => a.regime === e.regime)!.alphas.map((x) => x.alpha) : Object.values(r.seeds[e.seed]!.negation.find((a) => a.regime === e.regime)!.tasks)[0]!.alphas.map((x) => x.alpha);
    t.same(res, e.extended ? EXT : ALPHAS, 'the reported sweep ran on the grid the record names');
  }
  // θ0 cache: written, keyed, and reused by a second run; pre-training accuracy reported.
  t.equal(r.pretrained.cached, false);
  t.ok(r.pretrained.cacheFile && fs.existsSync(r.pretrained.cacheFile) && r.pretrained.cacheFile.includes(r.pretrained.key!), 'θ0 written to the cache under its key');
  t.ok(r.pretrained.controlTest > 0 && r.pretrained.controlTest <= 1, 'pre-training accuracy reported');
  const r2 = await runPaperProtocol({
    quick: true, tasks: ['mnist'], sourceLimit: 600, pretrainSteps: 15, trainLimit: 128, valLimit: 60, testLimit: 60,
    finetune: { steps: 2, batchSize: 32, lr: 1e-3 }, alphas: ALPHAS, alphaExtension: false, regimes: ['linear'],
    theta0Cache: path.join(dir, 'cache'), workDir: path.join(dir, 'second'), progress: { mode: 'none' }, log: () => {},
  });
  t.equal(r2.pretrained.cached, true, 'the second run reused θ0 from the cache');
  t.equal(r2.pretrained.key, r.pretrained.key);
  t.equal(r2.pretrained.controlVal, r.pretrained.controlVal, 'the same θ0');
  t.same(r2.lrSelection.map((l) => l.grid), [[1e-3], [1e-3]], 'an explicit lr is a one-point grid');
  t.ok(r2.alphaEdges.every((e) => !e.extended), 'alphaExtension false: never extended');
  // θ0 is pre-trained on the control task + the scripts glyphs, one label space each.
  t.same(r.settings['pretrainSources'], ['fashion', 'scripts'], 'the pre-training sources are stated');
  t.ok(lines.some((l) => /pre-trained on fashion \+ scripts \(1200 images, 98 classes, 15 steps\)/.test(l)), 'the log names the sources, images and classes');
});

t.test('runPaperProtocol: an edited task or the control cannot be an extra pre-training source', async (t) => {
  const base = { tasks: ['mnist', 'letters'] as TaskName[], progress: { mode: 'none' as const }, log: () => {} };
  await t.rejects(runPaperProtocol({ ...base, pretrainExtra: ['letters'] }), { name: 'ArgumentError', message: "pretrainExtra: 'letters' is an edited task (its data must stay out of pre-training)" });
  await t.rejects(runPaperProtocol({ ...base, pretrainExtra: ['fashion'] }), { name: 'ArgumentError', message: "pretrainExtra: 'fashion' is the control task" });
  await t.rejects(runPaperProtocol({ ...base, pretrainExtra: ['scripts', 'scripts'] }), { name: 'ArgumentError', message: "pretrainExtra: 'scripts' is listed twice" });
});

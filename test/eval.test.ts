import t from 'tap';
import { ArgumentError, Model, evaluation, setNumThreads, train, type StateDict, type VitConfig } from '../lib';
import { rng } from './helpers';

setNumThreads(2);

t.test('α grid: 21 points 0.00, 0.05, …, 1.00', async (t) => {
  const g = evaluation.alphaGrid();
  t.equal(g.length, 21);
  t.equal(g[0], 0);
  t.equal(g[1], 0.05);
  t.equal(g[3], 0.15);
  t.equal(g[20], 1);
});

t.test('argmax with ties goes to the smallest α', async (t) => {
  const a = [0, 0.25, 0.5, 0.75, 1];
  t.equal(evaluation.argmaxSmallestAlpha(a, [0.1, 0.9, 0.3, 0.9, 0.9]), 1);
  t.equal(evaluation.argmaxSmallestAlpha(a, [0.5, 0.5, 0.5, 0.5, 0.5]), 0, 'all tied → α = 0');
  t.equal(evaluation.argmaxSmallestAlpha(a, [0.1, 0.2, 0.3, 0.4, 0.5]), 4);
  t.equal(evaluation.argmaxSmallestAlpha(a, [NaN, 0.2, NaN, 0.2 + 1e-15, 0.1]), 1, 'float noise below the tolerance is a tie; NaN never wins');
  t.throws(() => evaluation.argmaxSmallestAlpha([0, 0.5, 0.5], [1, 2, 3]), ArgumentError, 'α must increase');
  t.throws(() => evaluation.argmaxSmallestAlpha([0, 1], [1]), ArgumentError);
});

t.test('normalized accuracy arithmetic', async (t) => {
  t.equal(evaluation.normalizedAccuracy(0.45, 0.9), 0.5);
  t.throws(() => evaluation.normalizedAccuracy(0.5, 0), ArgumentError);
  const s = evaluation.additionScores({ a: 0.6, b: 0.3 }, { a: 0.8, b: 0.6 });
  t.ok(Math.abs(s.meanAbs - 0.45) < 1e-15);
  t.ok(Math.abs(s.normalized.a! - 0.75) < 1e-15 && Math.abs(s.normalized.b! - 0.5) < 1e-15);
  t.ok(Math.abs(s.meanNorm - 0.625) < 1e-15);
  t.throws(() => evaluation.additionScores({ a: 0.5, c: 0.5 }, { a: 1 }), ArgumentError, 'a task without its fine-tuned accuracy');
});

t.test('addition picks the α of best mean NORMALIZED accuracy (not absolute), ties → smallest α', async (t) => {
  const ft = { easy: 1.0, hard: 0.4 };
  // α 0.5: abs mean 0.6 (norm 0.55+… ) ; α 1.0: abs mean 0.55 but normalized better.
  const rows = [
    { alpha: 0, acc: { easy: 0.5, hard: 0.1 } }, // norm (0.5 + 0.25) / 2 = 0.375
    { alpha: 0.5, acc: { easy: 0.9, hard: 0.2 } }, // abs 0.55, norm (0.9 + 0.5) / 2 = 0.7
    { alpha: 1, acc: { easy: 0.7, hard: 0.32 } }, // abs 0.51, norm (0.7 + 0.8) / 2 = 0.75
  ];
  const c = evaluation.selectAdditionAlpha(rows, ft);
  t.equal(c.alpha, 1);
  t.ok(Math.abs(c.score - 0.75) < 1e-12);
  const tie = [
    { alpha: 0, acc: { easy: 0.1, hard: 0.1 } },
    { alpha: 0.05, acc: { easy: 0.8, hard: 0.2 } }, // norm 0.65
    { alpha: 0.1, acc: { easy: 0.6, hard: 0.28 } }, // norm 0.65 (tie)
  ];
  t.equal(evaluation.selectAdditionAlpha(tie, ft).alpha, 0.05, 'tie → smaller α');
});

t.test('negation: minimal target subject to the control constraint; α = 0 always allowed; ties → smallest', async (t) => {
  const pre = 0.8; // threshold 0.76
  const rows = [
    { alpha: 0, target: 0.9, control: 0.8 },
    { alpha: 0.25, target: 0.5, control: 0.78 },
    { alpha: 0.5, target: 0.3, control: 0.76 }, // exactly at the threshold: allowed
    { alpha: 0.75, target: 0.3, control: 0.77 }, // ties with 0.5
    { alpha: 1, target: 0.05, control: 0.5 }, // best target but breaks the control
  ];
  const c = evaluation.selectNegationAlpha(rows, pre);
  t.equal(c.alpha, 0.5);
  t.ok(Math.abs(c.threshold - 0.76) < 1e-15);
  const none = [
    { alpha: 0, target: 0.9, control: 0.6 }, // even α = 0 under the threshold (noisy val): still allowed
    { alpha: 0.5, target: 0.1, control: 0.7 },
  ];
  t.equal(evaluation.selectNegationAlpha(none, pre).alpha, 0, 'nothing admissible → α = 0');
  t.equal(evaluation.selectNegationAlpha(rows, pre, 0).alpha, 1, 'ratio 0: no constraint');
  t.throws(() => evaluation.selectNegationAlpha([{ alpha: 0.5, target: 0, control: 0 }], pre), ArgumentError, 'no α = 0 and nothing admissible');
  // Property: on random cases the choice never breaks the threshold (unless α = 0) and is optimal.
  const r = rng(7);
  for (let k = 0; k < 300; k++) {
    const g = evaluation.alphaGrid();
    const rs = g.map((alpha) => ({ alpha, target: Math.round(r() * 20) / 20, control: r() }));
    const p = r();
    const ch = evaluation.selectNegationAlpha(rs, p, 0.95);
    const ok = (x: (typeof rs)[number]) => x.alpha === 0 || x.control >= 0.95 * p;
    if (!ok(rs[ch.index]!)) t.fail(`case ${k}: control broken`);
    for (const [i, x] of rs.entries())
      if (ok(x) && (x.target < ch.target || (x.target === ch.target && i < ch.index))) t.fail(`case ${k}: α ${x.alpha} was better`);
  }
  t.pass('300 random cases: constraint kept, optimum found, ties to the smallest α');
});

t.test('sweeps on real data: three regimes, α = 0 is θ0, post-hoc = non-linear at α = 0, negation keeps the control', async (t) => {
  const cfg: VitConfig = { arch: 'vit', imageSize: 28, patchSize: 7, inChannels: 1, dim: 32, depth: 1, heads: 2, mlpDim: 64, numClasses: 0 };
  const model = Model.create(cfg, { seed: 5 });
  const theta0 = new Map(model.parameters());
  const bb = { model, config: cfg, theta0 };
  const names = ['mnist', 'typed-digits', 'fashion'] as const;
  const tasks = [];
  for (const n of names) {
    const d = await train.prepareTask(n, { trainLimit: 512, valLimit: 150, testLimit: 150 });
    const head = await train.fitHead(bb, d.train, { steps: 100 });
    tasks.push({ name: n, d, head, val: train.evalData(d.val), test: train.evalData(d.test) });
  }
  const ev = new evaluation.Evaluator(model, theta0, tasks);
  const tuned = { standard: new Map<string, StateDict>(), linear: new Map<string, StateDict>() };
  for (const mode of ['standard', 'linear'] as const)
    for (const tk of tasks.slice(0, 2)) {
      const r = await train.finetune({ mode, model, theta0, head: tk.head, train: tk.d.train, steps: 25, batchSize: 64, lr: 3e-3, warmupSteps: 3, progress: { mode: 'none' } });
      tuned[mode].set(tk.name, r.params);
    }
  const alphas = [0, 0.5, 1];
  // One JVP for every α in f_lin equals evaluating each α separately.
  const tau = await evaluation.taskVector(tuned.linear.get('mnist')!, theta0);
  const curve = await ev.linearizedCurve('mnist', 'val', tau, [-1, 0, 0.5, 1.5]);
  const { combineStates } = await import('../lib');
  for (const [i, a] of [-1, 0, 0.5, 1.5].entries()) {
    const direct = await ev.accuracy('mnist', 'val', await combineStates(theta0, [tau], [a]), true);
    t.ok(Math.abs(direct - curve[i]!) <= 1 / 150 + 1e-12, `f_lin curve at α ${a}: ${curve[i]} vs separate evaluation ${direct}`);
  }
  const pre = await ev.accuracies(['mnist', 'typed-digits'], 'val', undefined, false);
  for (const regime of evaluation.REGIMES) {
    const a = await evaluation.additionSweep(ev, regime, tuned[evaluation.sourceMode(regime)], { alphas, progress: { mode: 'none' } });
    t.equal(a.alphas.length, 3);
    t.same(a.alphas[0]!.val, pre, `${regime}: at α = 0 the edited model is θ0 (f_lin(θ0) = f(θ0))`);
    const best = Math.max(...a.alphas.map((r) => r.valMeanNorm));
    const first = a.alphas.find((r) => r.valMeanNorm === best)!.alpha;
    t.equal(a.chosenAlpha, first, `${regime}: chosen α ${a.chosenAlpha} is the grid's best mean normalized validation accuracy (ties: smallest α)`);
    // Test numbers recomputed independently: θ0 + α Σ τ at the chosen α, evaluated in the regime's function.
    const lin = regime !== 'nonlinear';
    const ft = tuned[evaluation.sourceMode(regime)];
    const sumTau = await combineStates(null, [...ft.values(), theta0], [...[...ft.keys()].map(() => 1), -ft.size], { compute: 'float64' });
    const edited = await combineStates(theta0, [sumTau], [a.chosenAlpha]);
    const names = [...ft.keys()];
    for (const name of names) {
      const acc = await ev.accuracy(name, 'test', edited, lin);
      const ftAcc = await ev.accuracy(name, 'test', ft.get(name)!, lin);
      t.ok(Math.abs(a.test.acc[name]! - acc) <= 1e-12, `${regime}/${name}: test accuracy ${a.test.acc[name]} at α ${a.chosenAlpha} (recomputed ${acc})`);
      t.ok(Math.abs(a.test.normalized[name]! - acc / ftAcc) <= 1e-12, `${regime}/${name}: normalized = acc / fine-tuned acc (${acc} / ${ftAcc})`);
    }
    const meanNorm = names.reduce((s, n) => s + a.test.normalized[n]!, 0) / names.length;
    t.ok(Math.abs(a.test.meanNorm - meanNorm) <= 1e-12, `${regime}: mean normalized accuracy ${a.test.meanNorm} is the mean of the tasks'`);
    const n = await evaluation.negationSweep(ev, regime, tuned[evaluation.sourceMode(regime)], { alphas, control: 'fashion', progress: { mode: 'none' } });
    for (const [task, r] of Object.entries(n.tasks)) {
      const row = r.alphas.find((x) => x.alpha === r.chosen.alpha)!;
      t.ok(row.alpha === 0 || row.control >= 0.95 * n.pretrainedControl.val, `${regime}/${task}: control ${row.control.toFixed(3)} ≥ ${n.threshold.toFixed(3)} at α ${row.alpha}`);
    }
    const md = evaluation.additionTable([a]) + evaluation.negationTable([n]);
    t.match(md, /\| (Non-linear FT|Post-hoc linearization|Linear FT) \|/);
  }
  await t.rejects(evaluation.negationSweep(ev, 'linear', tuned.linear, { control: 'mnist' }), ArgumentError, 'control cannot be a negated task');
  const rows = await evaluation.singleTaskAccuracies(ev, ['mnist'], tuned.standard, tuned.linear);
  t.ok(rows[0]!.standard! > rows[0]!.pretrained, `standard FT beats θ0 on mnist (${rows[0]!.pretrained} → ${rows[0]!.standard})`);
  t.ok(rows[0]!.linear! > rows[0]!.pretrained, `linear FT beats θ0 on mnist (→ ${rows[0]!.linear})`);
  t.match(evaluation.singleTaskTable(rows), /\| mnist \|/);
});

/**
 * `tangent demo` (`npm run demo`): the main job end to end, printing what it measured —
 * 1. the native core: a JVP by forward-mode AD against central finite differences and the
 *    double-backward JVP;
 * 2. the paper's protocol at small scale (lib/protocol.ts): pre-trained θ0, frozen heads,
 *    standard and linear fine-tuning of four real-data tasks, task addition and negation in the
 *    three regimes (non-linear, post-hoc linearization, linear FT);
 * 3. weight-disentanglement heatmaps ξ(α1, α2) for two tasks, non-linear beside linear;
 * 4. NTK eigenfunction localization at θ0.
 * Tables, JSON and PNG/SVG figures go to --out (default ./results).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { linspace, ntkLocalization, renderDisentanglement, renderNtk, weightDisentanglement, writeDisentanglementJson, writeFigure, writeNtkJson } from './analysis';
import { taskInputs } from './analysis/inputs';
import { runPaperProtocol } from './protocol';
import { Model, type StateDict } from './model';
import { TaskVector } from './taskvector';
import { seededNormal } from './util/random';
import { loadFinetuned, writeFileAtomic } from './train/checkpoints';
import { loadBackbone, loadHeads } from './train/pretrain';
import { combineStates } from './ops';
import { demoSummary, resultsReadme } from './demo-story';
import { getNumThreads, runtimeInfo, setNumThreads } from './runtime';
import { Tensor } from './tensor';

export interface DemoOptions {
  quick?: boolean;
  threads?: number;
  json?: boolean;
  /** Output directory for tables, JSON and figures (default ./results). */
  out?: string;
  log?: (line: string) => void;
}


function f64(t: Tensor): Float64Array {
  return Float64Array.from(t.data() as ArrayLike<number>);
}


export async function runDemo(opts: DemoOptions = {}): Promise<Record<string, unknown>> {
  const started = performance.now();
  const log = opts.log ?? ((s: string) => console.log(s));
  const threads = opts.threads ?? 2;
  setNumThreads(threads);
  const info = runtimeInfo();
  const report: Record<string, unknown> = { libtorch: info.torchVersion, threads: getNumThreads(), quick: !!opts.quick };
  log(`tangent-edit demo — libtorch ${info.torchVersion}, ${getNumThreads()} threads, CUDA ${info.cudaAvailable ? 'yes' : 'no'}`);

  // 1. JVP by forward-mode AD against central finite differences, in float64, on a small ViT.
  const small = Model.create(
    { arch: 'vit', imageSize: 28, patchSize: 7, inChannels: 1, dim: 32, depth: 2, heads: 4, mlpDim: 64, numClasses: 10 },
    { seed: 1, dtype: 'float64' },
  );
  const xs = Tensor.from(Float64Array.from(seededNormal(4 * 784, 2)), [4, 1, 28, 28]);
  const v: StateDict = new Map();
  let s = 100;
  for (const [name, spec] of small.spec) v.set(name, Tensor.from(Float64Array.from(seededNormal(spec.shape.reduce((a, b) => a * b, 1), s++)), spec.shape));
  const jvp = await small.jvp(xs, v);
  const h = 1e-6;
  const theta0 = small.parameters();
  const [plus, minus] = await Promise.all([combineStates(theta0, [v], [h], { compute: 'float64' }), combineStates(theta0, [v], [-h], { compute: 'float64' })]);
  const fp = f64(await small.forward(xs, plus));
  const fm = f64(await small.forward(xs, minus));
  const jv = f64(jvp.tangent);
  let num = 0;
  let den = 0;
  for (let i = 0; i < jv.length; i++) {
    const fd = (fp[i]! - fm[i]!) / (2 * h);
    num += (jv[i]! - fd) ** 2;
    den += fd ** 2;
  }
  const fdErr = Math.sqrt(num / den);
  const db = f64(await small.jvpDoubleBackward(xs, v));
  let dbErr = 0;
  for (let i = 0; i < jv.length; i++) dbErr = Math.max(dbErr, Math.abs(db[i]! - jv[i]!));
  log(`JVP vs central finite differences (float64 ViT, ${small.numel} params): relative error ${fdErr.toExponential(2)}`);
  log(`JVP vs double-backward JVP: max |Δ| ${dbErr.toExponential(2)}`);
  report.jvpFiniteDifferenceRelErr = fdErr;
  report.jvpDoubleBackwardMaxAbsDiff = dbErr;

  // 2. The paper's protocol at small scale: θ0, heads, standard and linear fine-tuning of every
  //    task, task addition and negation in three regimes (lib/protocol.ts states the sizes).
  const out = path.resolve(opts.out ?? 'results');
  const workDir = path.join(out, 'work');
  fs.mkdirSync(workDir, { recursive: true });
  const protocol = await runPaperProtocol({ quick: opts.quick, threads, workDir, log });
  log('');
  log('Accuracies (%) on the test split at the α chosen on validation; "non-linear" = standard fine-tuning applied in f, "post-hoc" = the same task vectors in the linearized f_lin, "linear" = fine-tuning inside f_lin:');
  log(protocol.markdown);
  log('');
  writeFileAtomic(path.join(out, 'protocol.json'), JSON.stringify(protocol, null, 2));
  writeFileAtomic(path.join(out, 'protocol.md'), `${protocol.markdown}\n`);
  report.protocol = { settings: protocol.settings, timings: protocol.timings, addition: protocol.addition.map((r) => ({ regime: r.regime, alpha: r.chosenAlpha, meanAbs: r.test.meanAbs, meanNorm: r.test.meanNorm })), negation: protocol.negation.map((r) => ({ regime: r.regime, meanTargetTest: r.meanTargetTest, meanControlTest: r.meanControlTest })) };

  // 3. Weight disentanglement of the first two tasks' task vectors, non-linear vs linear FT.
  const bb = loadBackbone(path.join(workDir, 'theta0.safetensors'));
  const heads = loadHeads(path.join(workDir, 'heads.safetensors'), { theta0: bb.theta0 });
  const tasks = Object.keys(protocol.finetuning);
  const [t1, t2] = [tasks[0]!, tasks[1]!];
  const tau = async (task: string, mode: 'standard' | 'linear') => TaskVector.from(bb.theta0, loadFinetuned(protocol.finetuning[task]![mode].checkpoint, bb).params);
  const n = opts.quick ? 64 : 200;
  const [x1, x2] = await Promise.all([taskInputs(t1, n, 1), taskInputs(t2, n, 2)]);
  const alphas = linspace(-3, 3, opts.quick ? 13 : 25);
  const xi = [];
  for (const mode of ['standard', 'linear'] as const) {
    const [a, b] = [await tau(t1, mode), await tau(t2, mode)];
    xi.push(
      await weightDisentanglement(bb.model, {
        mode: mode === 'standard' ? 'nonlinear' : 'linear',
        tau1: a.tensors,
        tau2: b.tensors,
        x1: x1.x,
        x2: x2.x,
        head: [heads.get(t1)!, heads.get(t2)!],
        params0: bb.theta0,
        alphas,
      }),
    );
  }
  writeDisentanglementJson(xi, path.join(out, 'disentanglement.json'), { tasks: [t1, t2], samplesPerTask: n });
  const heat = writeFigure(await renderDisentanglement(xi, { taskNames: [t1, t2], labels: ['Non-linear FT', 'Linear FT'] }), path.join(out, 'disentanglement'));
  const mean = (g: number[][]) => g.flat().reduce((s2, v) => s2 + v, 0) / g.flat().length;
  log(`weight disentanglement ξ(α1, α2) on ${t1} + ${t2}, ${alphas.length}×${alphas.length} grid on [−3, 3]², ${n} test images per task:`);
  for (const r of xi) log(`  ${r.mode.padEnd(9)} mean ξ ${mean(r.grid).toFixed(3)}, ξ ≤ 0.1 on ${(100 * r.lowErrorFraction).toFixed(1)}% of the grid (${(r.timing.totalMs / 1000).toFixed(1)} s, ${r.method})`);
  log(`  → ${path.relative(process.cwd(), heat.png)}, ${path.relative(process.cwd(), heat.svg)}`);
  report.disentanglement = xi.map((r) => ({ mode: r.mode, meanXi: mean(r.grid), lowErrorFraction: r.lowErrorFraction }));

  // 4. NTK eigenfunction localization at θ0 on inputs pooled from the tasks.
  const per = opts.quick ? 24 : 60;
  const pooled = await Promise.all(tasks.map(async (name, i) => ({ name, x: (await taskInputs(name, per, 10 + i)).x })));
  const ntk = await ntkLocalization(bb.model, pooled, { topK: 20 });
  writeNtkJson(ntk, path.join(out, 'ntk.json'));
  const ntkFig = writeFigure(await renderNtk(ntk), path.join(out, 'ntk'));
  log(`NTK at θ0 (trace over the feature outputs) on ${ntk.n} inputs (${tasks.map((tk) => `${tk} ${per}`).join(', ')}): top-20 eigenfunctions hold on average ${(100 * ntk.meanMaxEnergy).toFixed(0)}% of their energy on one task (${(100 / tasks.length).toFixed(0)}% = spread evenly); ${(ntk.timing.totalMs / 1000).toFixed(1)} s`);
  log(`  → ${path.relative(process.cwd(), ntkFig.png)}, ${path.relative(process.cwd(), ntkFig.svg)}`);
  report.ntk = { n: ntk.n, meanMaxEnergy: ntk.meanMaxEnergy, topEigenvalues: ntk.eigenvalues.slice(0, 5), dominant: ntk.dominant.slice(0, 10) };
  // 5. What was shown, in plain language, and results/README.md.
  const summary = demoSummary({
    quick: !!opts.quick,
    addition: protocol.addition,
    negation: protocol.negation,
    xi: xi.map((r) => ({ mode: r.mode, meanXi: mean(r.grid), lowErrorFraction: r.lowErrorFraction })),
    ntk: { meanMaxEnergy: ntk.meanMaxEnergy, tasks: tasks.length, topK: ntk.topK },
    tasks,
    fineTuneSteps: Number((protocol.settings as { finetune?: { standard?: { steps?: number } } }).finetune?.standard?.steps ?? (opts.quick ? 60 : 300)),
  });
  report.summary = summary;
  log('');
  log('What this run showed:');
  for (const p of summary) log(`- ${p}`);
  writeFileAtomic(
    path.join(out, 'README.md'),
    resultsReadme({ quick: !!opts.quick, summary, markdown: protocol.markdown, settings: protocol.settings, seed: 0, libtorch: info.torchVersion, threads: getNumThreads(), seconds: (performance.now() - started) / 1000, date: new Date().toISOString().slice(0, 10) }),
  );
  writeFileAtomic(path.join(out, 'demo.json'), JSON.stringify(report, null, 2));
  log(`results in ${path.relative(process.cwd(), out) || '.'}/ (README.md, protocol.md, protocol.json, disentanglement.png/svg/json, ntk.png/svg/json, demo.json)`);
  if (opts.json) console.log(JSON.stringify(report, null, 2));
  return report;
}

/**
 * `tangent demo` (`npm run demo`): the main job end to end, printing what it measured —
 * 1. the native core: the ViT's JVP (hand-written; forward-mode AD with setJvpMethod) against
 *    central finite differences and the double-backward JVP;
 * 2. the paper's protocol at small scale (lib/protocol.ts): pre-trained θ0, frozen heads,
 *    standard and linear fine-tuning of four real-data tasks, task addition and negation in the
 *    three regimes (non-linear, post-hoc linearization, linear FT);
 * 3. weight-disentanglement heatmaps ξ(α1, α2) for two tasks, non-linear beside linear;
 * 4. NTK eigenfunction localization at θ0 and, side by side, at a random initialisation of the
 *    same architecture (seed 0: the initialisation θ0 was pre-trained from).
 * The full run repeats fine-tuning and evaluation (and ξ) for 3 seeds with θ0 shared and reports
 * mean ± std; --quick runs one seed.
 * Tables, JSON and PNG/SVG figures go to --out (default ./results).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { linspace, ntkLocalization, renderDisentanglement, renderNtk, weightDisentanglement, writeDisentanglementJson, writeFigure, writeNtkJson } from './analysis';
import { taskInputs } from './analysis/inputs';
import { aggregateHeadlines, fmtMeanStd, runPaperProtocol, type MeanStd } from './protocol';
import { Model, type StateDict } from './model';
import { TaskVector } from './taskvector';
import { seededNormal } from './util/random';
import { loadFinetuned, writeFileAtomic } from './train/checkpoints';
import { loadBackbone, loadHeads } from './train/pretrain';
import { combineStates } from './ops';
import { demoSummary, NTK_TOP_K, resultsReadme, storyInput } from './demo-story';
import { getNumThreads, runtimeInfo, setNumThreads } from './runtime';
import { Tensor } from './tensor';

export interface DemoOptions {
  quick?: boolean;
  /** Fine-tuning + evaluation seeds (default 3; --quick: 1). */
  seeds?: number;
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

  // 1. The JVP (the ViT's hand-written one) against central finite differences, in float64.
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
  const nSeeds = opts.seeds ?? (opts.quick ? 1 : 3);
  const protocol = await runPaperProtocol({ quick: opts.quick, seeds: nSeeds, threads, workDir, log });
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
  const n = opts.quick ? 64 : 200;
  const [x1, x2] = await Promise.all([taskInputs(t1, n, 1), taskInputs(t2, n, 2)]);
  const alphas = linspace(-3, 3, opts.quick ? 13 : 25);
  const XI_THRESHOLDS = [0.1, 0.25, 0.5];
  const mean = (g: number[][]) => g.flat().reduce((s2, v) => s2 + v, 0) / g.flat().length;
  const below = (g: number[][], th: number) => g.flat().filter((v) => v <= th).length / g.flat().length;
  const xiSeeds: Array<Array<{ mode: 'nonlinear' | 'linear'; meanXi: number; lowErrorFraction: number; below: Record<string, number> }>> = [];
  let xi: Awaited<ReturnType<typeof weightDisentanglement>>[] = [];
  for (const sr of protocol.seeds) {
    const tau = async (task: string, mode: 'standard' | 'linear') => TaskVector.from(bb.theta0, loadFinetuned(sr.finetuning[task]![mode].checkpoint, bb).params);
    const rs = [];
    for (const mode of ['standard', 'linear'] as const) {
      const [a, b] = [await tau(t1, mode), await tau(t2, mode)];
      rs.push(
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
    xiSeeds.push(rs.map((r) => ({ mode: r.mode, meanXi: mean(r.grid), lowErrorFraction: r.lowErrorFraction, below: Object.fromEntries(XI_THRESHOLDS.map((th) => [String(th), below(r.grid, th)])) })));
    if (sr.seed === 0) xi = rs;
  }
  writeDisentanglementJson(xi, path.join(out, 'disentanglement.json'), { tasks: [t1, t2], samplesPerTask: n });
  const heat = writeFigure(await renderDisentanglement(xi, { taskNames: [t1, t2], labels: ['Non-linear FT', 'Linear FT'] }), path.join(out, 'disentanglement'));
  const xiHeadline: Record<string, MeanStd> = aggregateHeadlines(
    xiSeeds.map((rs) => Object.fromEntries(rs.flatMap((r) => [[`xi.${r.mode}.mean`, r.meanXi], ...XI_THRESHOLDS.map((th) => [`xi.${r.mode}.below${th}`, r.below[String(th)]!] as [string, number])]))),
  );
  log(`weight disentanglement ξ(α1, α2) on ${t1} + ${t2}, ${alphas.length}×${alphas.length} grid on [−3, 3]², ${n} test images per task, ${protocol.seeds.length} seed${protocol.seeds.length === 1 ? '' : 's'} (mean ± std):`);
  for (const mode of ['nonlinear', 'linear'] as const)
    log(`  ${mode.padEnd(9)} mean ξ ${fmtMeanStd(xiHeadline[`xi.${mode}.mean`]!, false)}; fraction of the grid with ξ ≤ ${XI_THRESHOLDS.map((th) => `${th}: ${fmtMeanStd(xiHeadline[`xi.${mode}.below${th}`]!)}%`).join(', ')}`);
  log(`  → ${path.relative(process.cwd(), heat.png)}, ${path.relative(process.cwd(), heat.svg)}`);
  report.disentanglement = { seed0: xiSeeds[0], perSeed: xiSeeds, thresholds: XI_THRESHOLDS, headline: xiHeadline };

  // 4. NTK eigenfunction localization at θ0 on inputs pooled from the tasks.
  const per = opts.quick ? 24 : 60;
  const pooled = await Promise.all(tasks.map(async (name, i) => ({ name, x: (await taskInputs(name, per, 10 + i)).x })));
  // bb.model holds its initial parameters: θ0 must be passed explicitly (without it this was the
  // NTK at initialisation).
  const ntk = await ntkLocalization(bb.model, pooled, { topK: NTK_TOP_K, params: bb.theta0 });
  writeNtkJson(ntk, path.join(out, 'ntk.json'));
  const ntkFig = writeFigure(await renderNtk(ntk), path.join(out, 'ntk'));
  log(`NTK at θ0 (trace over the feature outputs) on ${ntk.n} inputs (${tasks.map((tk) => `${tk} ${per}`).join(', ')}): top-20 eigenfunctions hold on average ${(100 * ntk.meanMaxEnergy).toFixed(0)}% of their energy on one task (${(100 / tasks.length).toFixed(0)}% = spread evenly); ${(ntk.timing.totalMs / 1000).toFixed(1)} s`);
  log(`  → ${path.relative(process.cwd(), ntkFig.png)}, ${path.relative(process.cwd(), ntkFig.svg)}`);
  // The same analysis at a random initialisation of the same architecture (seed 0, the init θ0
  // was pre-trained from): the paper attributes localization to pre-training.
  const init = Model.create(bb.config, { seed: 0 });
  const ntkInit = await ntkLocalization(init, pooled, { topK: NTK_TOP_K });
  writeNtkJson(ntkInit, path.join(out, 'ntk-init.json'));
  const ntkInitFig = writeFigure(await renderNtk(ntkInit), path.join(out, 'ntk-init'));
  log(`NTK at a random initialisation (same architecture, seed 0), same inputs: ${(100 * ntkInit.meanMaxEnergy).toFixed(0)}% on one task (θ0: ${(100 * ntk.meanMaxEnergy).toFixed(0)}%); → ${path.relative(process.cwd(), ntkInitFig.png)}`);
  report.ntk = { n: ntk.n, meanMaxEnergy: ntk.meanMaxEnergy, topEigenvalues: ntk.eigenvalues.slice(0, 5), dominant: ntk.dominant.slice(0, 10), init: { meanMaxEnergy: ntkInit.meanMaxEnergy, topEigenvalues: ntkInit.eigenvalues.slice(0, 5), dominant: ntkInit.dominant.slice(0, 10) } };
  const headline = { ...protocol.headline, ...xiHeadline };
  report.headline = headline;
  report.lrSelection = protocol.lrSelection;
  report.alphaEdges = protocol.alphaEdges;
  report.pretrained = protocol.pretrained;
  // 5. What was shown, in plain language, and results/README.md.
  const summary = demoSummary(
    storyInput(
      { quick: !!opts.quick, disentanglement: { seed0: xiSeeds[0]! }, ntk: { meanMaxEnergy: ntk.meanMaxEnergy, init: { meanMaxEnergy: ntkInit.meanMaxEnergy } }, headline, lrSelection: protocol.lrSelection, alphaEdges: protocol.alphaEdges, pretrained: protocol.pretrained },
      protocol,
    ),
  );
  report.summary = summary;
  log('');
  log('What this run showed:');
  for (const p of summary) log(`- ${p}`);
  writeFileAtomic(
    path.join(out, 'README.md'),
    resultsReadme({ quick: !!opts.quick, summary, markdown: protocol.markdown, settings: protocol.settings, seed: 0, seeds: protocol.seeds.length, libtorch: info.torchVersion, threads: getNumThreads(), seconds: (performance.now() - started) / 1000, date: new Date().toISOString().slice(0, 10) }),
  );
  writeFileAtomic(path.join(out, 'demo.json'), JSON.stringify(report, null, 2));
  log(`results in ${path.relative(process.cwd(), out) || '.'}/ (README.md, protocol.md, protocol.json, disentanglement.png/svg/json, ntk.png/svg/json, ntk-init.png/svg/json, demo.json)`);
  if (opts.json) console.log(JSON.stringify(report, null, 2));
  return report;
}

/**
 * `tangent disentangle` and `tangent ntk`: the paper's analyses from the command line, writing
 * JSON + PNG + SVG (each to a temporary name, then renamed). Models, θ0, heads and data resolve as
 * in every verb (./inputs): from flags, else from the checkpoints' metadata. Every option and
 * dataset is validated before any work; the ξ grid and the NTK Gram show progress on stderr.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { ArgumentError } from '../errors';
import type { DataSpec } from '../data/spec';
import { bytesArg, choiceArg, intArg, numArg, setThreads } from './options';
import { TRUST_CODE_HELP } from './train';

interface CommonAnalysisOpts {
  model?: string;
  trustCode?: boolean;
  pretrained?: string;
  heads?: string;
  data?: string[];
  /** Default 0 (with checkpoints: the seed their metadata records for a θ0 built from a config). */
  seed?: number;
  out: string;
  threads: number;
  progress?: 'auto' | 'bar' | 'lines' | 'none';
  json?: boolean;
}

interface DisentangleOpts extends CommonAnalysisOpts {
  demo?: boolean;
  checkpoints?: string[];
  tau1?: string;
  tau2?: string;
  tau1Linear?: string;
  tau2Linear?: string;
  samples: number;
  mode: 'nonlinear' | 'linear' | 'both';
  grid: number;
  range: number;
  steps: number;
  lr: number;
}

interface NtkOpts extends CommonAnalysisOpts {
  demo?: boolean;
  perTask: number;
  logit: string;
  topK: number;
  maxMemory: number;
  dtype: 'float32' | 'float64';
}

const FT_LABEL = { nonlinear: 'Non-linear FT', linear: 'Linear FT', posthoc: 'Post-hoc linearization' };

async function validateTaskVectorFile(option: string, file: string | undefined): Promise<void> {
  if (file === undefined) return;
  const { requireFile, stateDictFormat } = await import('./inputs');
  const { EDIT_FORMATS } = await import('../meta');
  requireFile(option, file);
  const fmt = await stateDictFormat(file);
  if ((EDIT_FORMATS as readonly (string | undefined)[]).includes(fmt))
    throw new ArgumentError(`${option}: ${file} is a fine-tuned checkpoint θ (format ${fmt}), not a task vector τ = θ − θ0; give fine-tuned checkpoints with --checkpoints`);
}

async function runDisentangle(o: DisentangleOpts): Promise<void> {
  const log = (s: string): void => void (o.json ? process.stderr.write(`${s}\n`) : console.log(s));
  const { parseDataSpecs, readEditMeta, parseModelSpec, requireFile } = await import('./inputs');
  // --- validation, before any work ---
  const nTau = [o.tau1, o.tau2].filter(Boolean).length;
  const nTauLin = [o.tau1Linear, o.tau2Linear].filter(Boolean).length;
  if (nTau === 1 || nTauLin === 1) throw new ArgumentError('task vectors come in pairs: give both --tau1 and --tau2 (and both --tau1-linear and --tau2-linear)');
  const sources = [o.demo ? '--demo' : null, o.checkpoints?.length ? '--checkpoints' : null, nTau + nTauLin > 0 ? '--tau1/--tau2' : null].filter(Boolean);
  if (sources.length === 0) throw new ArgumentError('give two fine-tuned checkpoints (--checkpoints A B), task vectors (--tau1 and --tau2), or --demo for built-in demo inputs');
  if (sources.length > 1) throw new ArgumentError(`give only one of ${sources.join(', ')}`);
  for (const [opt, f] of [['--tau1', o.tau1], ['--tau2', o.tau2], ['--tau1-linear', o.tau1Linear], ['--tau2-linear', o.tau2Linear]] as const) await validateTaskVectorFile(opt, f);
  const metas = (o.checkpoints ?? []).map((f) => readEditMeta(f));
  let specs: DataSpec[];
  if (o.data) {
    if (o.data.length !== 2) throw new ArgumentError(`--data takes the datasets of the two tasks, got ${o.data.length}`);
    specs = parseDataSpecs(o.data);
  } else if (o.demo) specs = parseDataSpecs(['builtin:mnist', 'builtin:letters']);
  else if (metas.length) {
    const byTask = new Map<string, string>();
    for (const m of metas) for (const [t, s] of Object.entries(m.tasks)) if (!byTask.has(t)) byTask.set(t, s);
    if (byTask.size !== 2) throw new ArgumentError(`--checkpoints must cover exactly two tasks, got ${byTask.size} (${[...byTask.keys()].join(', ')})`);
    try {
      specs = parseDataSpecs([...byTask.values()]);
    } catch (e) {
      throw e instanceof ArgumentError ? new ArgumentError(`${e.message.replace(/^--data: /, '')} (recorded in the checkpoints' metadata; give the data with --data)`) : e;
    }
    specs.forEach((s, k) => (s.name = [...byTask.keys()][k]!));
  } else throw new ArgumentError('--data: give the datasets of the two tasks (two specs)');
  if (o.demo) for (const s of specs) if (s.kind !== 'builtin') throw new ArgumentError(`--demo fine-tunes on built-in tasks only; --data ${s.spec} is a file dataset (give --checkpoints for your own)`);
  const names = specs.map((s) => s.name) as [string, string];
  if (metas.length) {
    const modes = new Set(metas.map((m) => m.mode));
    for (const m of modes) {
      const tasks = metas.filter((x) => x.mode === m).flatMap((x) => Object.keys(x.tasks));
      if (tasks.length !== 2 || !names.every((t) => tasks.includes(t)))
        throw new ArgumentError(`--checkpoints: the ${m} checkpoints must be one per task (${names.join(', ')}), got ${tasks.join(', ') || 'none'}`);
    }
    if (o.mode === 'nonlinear' && !modes.has('standard')) throw new ArgumentError('--mode nonlinear needs standard fine-tuned checkpoints');
  }
  if (o.model) parseModelSpec(o.model);
  requireFile('--pretrained', o.pretrained);
  requireFile('--heads', o.heads);
  if (!o.demo && !metas.length && !o.model && !o.pretrained) throw new ArgumentError('with --tau1/--tau2, give the model: --model and/or --pretrained');

  // --- work ---
  await setThreads(o.threads);
  const { imagesTensor, demoTaskVectors } = await import('../analysis/inputs');
  const { weightDisentanglement, writeDisentanglementJson, linspace } = await import('../analysis/disentanglement');
  const { renderDisentanglement, writeFigure } = await import('../analysis/plot');
  const { subset } = await import('../data/dataset');
  const { progress } = await import('../util/progress');
  type StateDict = import('../model').StateDict;
  type Pair = [StateDict, StateDict];
  const modes = o.mode === 'both' ? (['nonlinear', 'linear'] as const) : ([o.mode] as const);
  let model: import('../model').Model;
  let heads: readonly [import('../model').Head | undefined, import('../model').Head | undefined];
  let params0: StateDict | undefined;
  let inputs: [import('../tensor').Tensor, import('../tensor').Tensor];
  const taus: { nonlinear?: Pair; linear?: Pair } = {};
  let linearLabel = FT_LABEL.linear;
  const extra: Record<string, unknown> = { tasks: names, data: specs.map((s) => s.spec) };
  if (o.demo) {
    log(`demo: θ0 = the small ViT pre-trained on fashion, frozen ridge heads, ${o.steps} AdamW steps of standard and linear fine-tuning per task`);
    const seed = o.seed ?? 0;
    const d = await demoTaskVectors(names, { steps: o.steps, lr: o.lr, seed, log });
    model = d.model;
    heads = d.heads;
    params0 = undefined;
    taus.nonlinear = d.nonlinear;
    taus.linear = d.linear;
    extra.demo = { steps: o.steps, lr: o.lr, seed, accuracy: d.accuracy, fineTuneMs: d.ms };
    const { taskInputs } = await import('../analysis/inputs');
    inputs = [(await taskInputs(names[0], o.samples, 1000)).x, (await taskInputs(names[1], o.samples, 1001)).x];
  } else {
    const { loadBase, headFor, loadData, loadEditCheckpoint } = await import('./inputs');
    const { loadStateFile } = await import('../analysis/inputs');
    const { taskVector } = await import('../eval/evaluate');
    const base = await loadBase({ ...o, trust_code: o.trustCode === true }, metas[0], o.checkpoints?.[0]);
    model = base.model;
    params0 = base.theta0;
    extra.theta0 = base.theta0Ref;
    heads = [headFor(base, names[0]), headFor(base, names[1])];
    const byTask = async (mode: 'standard' | 'linear'): Promise<Pair | undefined> => {
      const files = (o.checkpoints ?? []).filter((_, i) => metas[i]!.mode === mode);
      if (files.length === 0) return undefined;
      const out: StateDict[] = [];
      for (const t of names) {
        const f = files.find((_, i) => t in metas[(o.checkpoints ?? []).indexOf(files[i]!)]!.tasks)!;
        const ck = await loadEditCheckpoint(f, base);
        out.push(await taskVector(ck.params, base.theta0));
      }
      return out as Pair;
    };
    if (metas.length) {
      taus.nonlinear = await byTask('standard');
      taus.linear = await byTask('linear');
    } else {
      if (o.tau1) taus.nonlinear = [await loadStateFile(o.tau1, model, '--tau1'), await loadStateFile(o.tau2!, model, '--tau2')];
      if (o.tau1Linear) taus.linear = [await loadStateFile(o.tau1Linear, model, '--tau1-linear'), await loadStateFile(o.tau2Linear!, model, '--tau2-linear')];
    }
    if (!taus.linear && taus.nonlinear) {
      taus.linear = taus.nonlinear; // the paper's post-hoc linearization
      linearLabel = FT_LABEL.posthoc;
    }
    const sets = [];
    for (const [k, s] of specs.entries()) {
      const d = await loadData(s, base, { testLimit: undefined }, heads[k], false);
      sets.push(subset(d.test, Math.min(o.samples, d.test.count), 1000 + k));
    }
    const dtype = [...model.spec.values()][0]!.dtype === 'float64' ? 'float64' : 'float32';
    inputs = [imagesTensor(sets[0]!, dtype), imagesTensor(sets[1]!, dtype)];
  }
  const alphas = linspace(-o.range, o.range, o.grid);
  const results = [];
  for (const mode of modes) {
    const pair = taus[mode];
    if (!pair) {
      log(`no ${mode} task vectors: skipping the ${mode} grid`);
      continue;
    }
    log(`ξ grid ${o.grid}×${o.grid} on [−${o.range}, ${o.range}]², ${mode}, ${inputs[0].shape[0]} + ${inputs[1].shape[0]} inputs (${names.join(', ')})…`);
    const total = 2 * o.grid + o.grid * o.grid;
    const bar = progress(`ξ grid (${mode})`, total, 'point', { mode: o.progress ?? 'auto' });
    const r = await weightDisentanglement(model, {
      mode,
      tau1: pair[0],
      tau2: pair[1],
      x1: inputs[0],
      x2: inputs[1],
      head: heads,
      alphas,
      params0,
      onProgress: (done, of) => bar.update(Math.round((done / of) * total)),
    });
    bar.stop(`${(r.timing.totalMs / 1000).toFixed(1)} s`);
    const mean = r.grid.flat().reduce((a, b) => a + b, 0) / r.grid.flat().length;
    log(`  ${r.method}: ${(r.timing.totalMs / 1000).toFixed(1)} s (${r.timing.modelCalls} model calls); ξ ≤ 0.1 on ${(100 * r.lowErrorFraction).toFixed(1)}% of the grid, mean ξ ${mean.toFixed(3)}, max ξ ${Math.max(...r.grid.flat()).toFixed(3)}`);
    results.push(r);
  }
  if (results.length === 0) throw new ArgumentError(`no task vectors for --mode ${o.mode}`);
  const labels = results.map((r) => (r.mode === 'linear' ? linearLabel : FT_LABEL.nonlinear));
  const base = path.join(o.out, 'disentanglement');
  writeDisentanglementJson(results, `${base}.json`, { ...extra, labels });
  const fig = await renderDisentanglement(results, { taskNames: names, labels });
  const files = writeFigure(fig, base);
  log(`wrote ${base}.json, ${files.png} (${fig.width}×${fig.height}), ${files.svg}`);
  if (o.json)
    console.log(
      JSON.stringify(
        {
          tasks: names,
          json: `${base}.json`,
          png: files.png,
          svg: files.svg,
          results: results.map((r, i) => ({ label: labels[i], mode: r.mode, method: r.method, lowErrorFraction: r.lowErrorFraction, meanXi: r.grid.flat().reduce((a, b) => a + b, 0) / r.grid.flat().length, seconds: r.timing.totalMs / 1000 })),
        },
        null,
        2,
      ),
    );
}

async function runNtk(o: NtkOpts): Promise<void> {
  const log = (s: string): void => void (o.json ? process.stderr.write(`${s}\n`) : console.log(s));
  const { parseDataSpecs, parseModelSpec, requireFile } = await import('./inputs');
  const specs = parseDataSpecs(o.data ?? ['builtin:mnist', 'builtin:fashion', 'builtin:letters']);
  const output = o.logit === 'trace' ? 'trace' : Number(o.logit);
  if (output !== 'trace' && !(o.logit.trim() !== '' && Number.isSafeInteger(output) && output >= 0)) throw new ArgumentError(`--logit must be 'trace' or an output index >= 0, got '${o.logit}'`);
  if (o.model) parseModelSpec(o.model);
  requireFile('--pretrained', o.pretrained);
  if (o.demo && (o.model || o.pretrained)) throw new ArgumentError('--demo uses the built-in ViT from --seed; drop --model / --pretrained');

  await setThreads(o.threads);
  const { ntkLocalization, empiricalNtk, writeNtkJson } = await import('../analysis/ntk');
  const { renderNtk, writeFigure } = await import('../analysis/plot');
  const { imagesTensor } = await import('../analysis/inputs');
  const { subset } = await import('../data/dataset');
  const { loadBase, loadData } = await import('./inputs');
  const { progress } = await import('../util/progress');
  const base = await loadBase({ model: o.model ?? (o.pretrained ? undefined : 'builtin:vit'), pretrained: o.pretrained, seed: o.seed, trust_code: o.trustCode === true });
  const model = base.model;
  const tasks = [];
  for (const [k, s] of specs.entries()) {
    const d = await loadData(s, base, { testLimit: undefined }, undefined, false);
    tasks.push({ name: s.name, x: imagesTensor(subset(d.test, Math.min(o.perTask, d.test.count), 2000 + k)) });
  }
  const n = tasks.reduce((a, t) => a + t.x.shape[0]!, 0);
  log(`empirical NTK at θ0 (${base.theta0Ref.path}, ${model.numel} parameters) on ${n} inputs (${specs.map((s) => s.name).join(', ')}), ${output === 'trace' ? 'trace over outputs' : `output ${output}`}…`);
  // The Gram is one native call: its ETA is estimated from a timed Gram on a few inputs (the cost
  // is dominated by per-input Jacobian rows, linear in N; the N² Gram products come on top).
  const k = Math.min(8, tasks[0]!.x.shape[0]!);
  const probeX = imagesTensor(subset({ name: 'probe', images: tasks[0]!.x.data() as Float32Array, labels: new Int32Array(tasks[0]!.x.shape[0]!), count: tasks[0]!.x.shape[0]!, shape: tasks[0]!.x.shape.slice(1) as [number, number, number], classes: 1 }, k, 0));
  const t0 = performance.now();
  const probe = await empiricalNtk(model, probeX, { output, dtype: o.dtype, maxMemoryBytes: o.maxMemory, params: base.theta0 });
  probe.gram.dispose();
  probeX.dispose();
  const estimate = Math.max(1, Math.round(((performance.now() - t0) / 1000) * (n / k)));
  const bar = progress('NTK Gram (ETA estimated)', estimate, 'second', { mode: o.progress ?? 'auto' });
  const started = performance.now();
  const tick = setInterval(() => bar.update(Math.min(estimate, Math.round((performance.now() - started) / 1000))), 500);
  let r: import('../analysis/ntk').NtkLocalization;
  try {
    r = await ntkLocalization(model, tasks, { output, topK: Math.min(o.topK, n), maxMemoryBytes: o.maxMemory, dtype: o.dtype, params: base.theta0 });
  } finally {
    clearInterval(tick);
  }
  bar.update(estimate);
  bar.stop(`${((performance.now() - started) / 1000).toFixed(1)} s`);
  log(`  Gram ${r.n}×${r.n} in ${(r.timing.gramMs / 1000).toFixed(1)} s (${r.stats.strategy}, ${r.stats.backwardPasses} backward passes), eigh ${r.timing.eighMs.toFixed(0)} ms`);
  log(`  top ${r.topK} eigenfunctions: mean largest per-task energy ${r.meanMaxEnergy.toFixed(3)} (1/T = ${(1 / tasks.length).toFixed(3)})`);
  for (let j = 0; j < Math.min(5, r.topK); j++) log(`    λ${j + 1} = ${r.eigenvalues[j]!.toPrecision(4)}: ${r.tasks.map((t, i) => `${t} ${r.energies[j]![i]!.toFixed(2)}`).join(', ')}`);
  const out = path.join(o.out, 'ntk');
  writeNtkJson(r, `${out}.json`);
  const fig = await renderNtk(r);
  const files = writeFigure(fig, out);
  log(`wrote ${out}.json, ${files.png} (${fig.width}×${fig.height}), ${files.svg}`);
  if (o.json) console.log(JSON.stringify({ tasks: r.tasks, n: r.n, topK: r.topK, meanMaxEnergy: r.meanMaxEnergy, eigenvalues: r.eigenvalues.slice(0, r.topK), json: `${out}.json`, png: files.png, svg: files.svg, seconds: r.timing.totalMs / 1000 }, null, 2));
}

function analysisOptions(c: Command): Command {
  return c
    .option('--model <spec>', 'torch.export .pt2 or TorchScript file, JSON model config (file or inline), builtin:small-vit / builtin:vit, or clip:ViT-B-32 (B-16, L-14, -quickgelu; with --pretrained open_clip or transformers weights)')
    .option('--trust-code', TRUST_CODE_HELP)
    .option('--pretrained <file>', 'θ0: a state dict for --model, or a tangent pretrain file (names its model)')
    .option('--seed <n>', "seed of a built-in model's θ0 when no --pretrained is given (default 0; with --checkpoints, the seed their metadata records)", intArg('--seed', 0))
    .option('--out <dir>', 'output directory (default analysis-out)', 'analysis-out')
    .option('--threads <n>', 'libtorch intra-op threads (default 2)', intArg('--threads'), 2)
    .option('--progress <mode>', 'auto | bar | lines | none (default auto)', choiceArg('--progress', ['auto', 'bar', 'lines', 'none'] as const))
    .option('--json', 'print a summary as JSON on stdout (logs go to stderr)');
}

/** Adds `disentangle` and `ntk` to the `tangent` CLI. */
export function registerAnalysisCommands(program: Command): void {
  analysisOptions(
    program
      .command('disentangle')
      .description('weight-disentanglement error ξ(α1, α2) of two tasks, non-linear beside linear: JSON + PNG + SVG heatmaps')
      .usage('(--checkpoints A B | --tau1 F --tau2 F [--data A B] | --demo) [--grid N] [--range R] [--out DIR] [options]')
      .option('--checkpoints <files...>', 'fine-tuned checkpoints, one per task and mode (tangent finetune); τ = θ − θ0, mode, heads and data from their metadata')
      .option('--tau1 <file>', 'task vector τ = θ − θ0 of task 1 (a state dict), from standard fine-tuning')
      .option('--tau2 <file>', 'task vector of task 2')
      .option('--tau1-linear <file>', 'task vector of task 1 from linear fine-tuning (default: --tau1, i.e. post-hoc linearization)')
      .option('--tau2-linear <file>', 'task vector of task 2 from linear fine-tuning')
      .option('--heads <file>', 'frozen heads (tangent pretrain), when the model outputs features')
      .option('--data <specs...>', "the two tasks' datasets (default: the checkpoints' tasks; --demo: builtin:mnist builtin:letters)")
      .option('--demo', 'built-in demo inputs: θ0 pre-trained on fashion, frozen heads, task vectors from standard and linear fine-tuning')
      .option('--samples <n>', 'test inputs per task (default 128)', intArg('--samples'), 128)
      .option('--mode <mode>', 'nonlinear, linear or both (default both)', choiceArg('--mode', ['nonlinear', 'linear', 'both'] as const), 'both')
      .option('--grid <n>', 'grid points per axis (default 25)', intArg('--grid', 2), 25)
      .option('--range <r>', 'α1, α2 in [−r, r] (default 3)', numArg('--range', 0, true), 3)
      .option('--steps <n>', '--demo: AdamW steps of fine-tuning per task and mode (default 60)', intArg('--steps'), 60)
      .option('--lr <x>', '--demo: AdamW learning rate (default 1e-3)', numArg('--lr', 0, true), 1e-3),
  ).action(async (o: DisentangleOpts) => runDisentangle(o));

  analysisOptions(
    program
      .command('ntk')
      .description('empirical NTK at θ0 on inputs pooled from several datasets, its eigenfunctions and their local energy per dataset: JSON + PNG + SVG')
      .usage('[--data SPEC…] [--model M | --pretrained t0] [--per-task N] [--logit trace|N] [--out DIR] [options]')
      .option('--data <specs...>', 'datasets to pool (default builtin:mnist builtin:fashion builtin:letters)')
      .option('--demo', 'the built-in ViT from --seed (the default when neither --model nor --pretrained is given)')
      .option('--per-task <n>', 'inputs per dataset (default 100)', intArg('--per-task'), 100)
      .option('--logit <c>', "'trace' (summed over outputs, default) or one output index", 'trace')
      .option('--top-k <k>', 'eigenfunctions to report and plot (default 20)', intArg('--top-k'), 20)
      .option('--max-memory <size>', 'memory bound for Jacobian rows + Gram (default 2GiB)', bytesArg('--max-memory'), 2 * 2 ** 30)
      .option('--dtype <dtype>', 'Jacobian row dtype: float32 or float64 (default float32)', choiceArg('--dtype', ['float32', 'float64'] as const), 'float32'),
  ).action(async (o: NtkOpts) => runNtk(o));
}

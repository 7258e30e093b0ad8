/**
 * `tangent disentangle` and `tangent ntk`: the paper's analyses from the command line, writing
 * JSON + PNG + SVG (each to a temporary name, then renamed). Registered from lib/cli.ts by
 * `registerAnalysisCommands(program)`; the heavy modules load only when a command runs.
 */
import * as path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';

function intArg(name: string, min = 1) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got '${value}'`);
    return n;
  };
}

function numArg(name: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= min) throw new InvalidArgumentError(`${name} must be a number > ${min}, got '${value}'`);
    return n;
  };
}

/** "2GiB", "512MiB", "1e9" → bytes. */
function bytesArg(value: string): number {
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`--max-memory must be a size like 2GiB, 512MiB or 1e9, got '${value}'`);
  const units: Record<string, number> = { b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, kb: 1e3, mb: 1e6, gb: 1e9 };
  return Math.floor(Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]!);
}

interface DisentangleOpts {
  demo?: boolean;
  model?: string;
  seed: number;
  theta0?: string;
  tau1?: string;
  tau2?: string;
  tau1Linear?: string;
  tau2Linear?: string;
  head1?: string;
  head2?: string;
  normalizeHead: boolean;
  task1: string;
  task2: string;
  samples: number;
  mode: 'nonlinear' | 'linear' | 'both';
  grid: number;
  range: number;
  steps: number;
  lr: number;
  out: string;
  threads: number;
}

interface NtkOpts {
  demo?: boolean;
  model?: string;
  seed: number;
  theta0?: string;
  tasks: string;
  perTask: number;
  output: string;
  topK: number;
  maxMemory: number;
  dtype: 'float32' | 'float64';
  out: string;
  threads: number;
}

async function runDisentangle(o: DisentangleOpts): Promise<void> {
  const { setNumThreads } = await import('../runtime');
  const { loadModel, loadStateFile, loadHeadFile, taskInputs, demoTaskVectors } = await import('./inputs');
  const { weightDisentanglement, writeDisentanglementJson, linspace } = await import('./disentanglement');
  const { renderDisentanglement, writeFigure } = await import('./plot');
  const { ArgumentError } = await import('../errors');
  type Model = import('../model').Model;
  type Head = import('../model').Head;
  type StateDict = import('../model').StateDict;
  setNumThreads(o.threads);
  const log = (s: string): void => console.log(s);
  const tasks: [string, string] = [o.task1, o.task2];
  const modes = o.mode === 'both' ? (['nonlinear', 'linear'] as const) : ([o.mode] as const);
  type Pair = [StateDict, StateDict];
  let model: Model;
  let heads: readonly [Head | undefined, Head | undefined];
  let params0: StateDict | undefined;
  const taus: { nonlinear?: Pair; linear?: Pair } = {};
  let linearLabel = 'Linear FT';
  const extra: Record<string, unknown> = { tasks };
  if (o.demo) {
    log(`demo: θ0 = the small ViT pre-trained on fashion, frozen ridge heads, ${o.steps} AdamW steps of standard and linear fine-tuning per task`);
    const d = await demoTaskVectors(tasks, { steps: o.steps, lr: o.lr, seed: o.seed, log });
    model = d.model;
    heads = d.heads;
    taus.nonlinear = d.nonlinear;
    taus.linear = d.linear;
    extra.demo = { steps: o.steps, lr: o.lr, seed: o.seed, accuracy: d.accuracy, fineTuneMs: d.ms };
  } else {
    const haveNl = !!(o.tau1 && o.tau2);
    const haveLin = !!(o.tau1Linear && o.tau2Linear);
    if (!haveNl && !haveLin)
      throw new ArgumentError('give task vectors (--tau1 and --tau2, and/or --tau1-linear and --tau2-linear), or --demo for built-in demo inputs');
    model = await loadModel(o.model, o.seed);
    const dtype = [...model.spec.values()][0]!.dtype;
    params0 = o.theta0 ? await loadStateFile(o.theta0, model, 'theta0') : undefined;
    extra.theta0 = o.theta0 ?? (o.model?.endsWith('.pt') ? o.model : `seed ${o.seed}`);
    heads = [o.head1 ? await loadHeadFile(o.head1, o.normalizeHead, dtype) : undefined, o.head2 ? await loadHeadFile(o.head2, o.normalizeHead, dtype) : undefined];
    if (haveNl) taus.nonlinear = [await loadStateFile(o.tau1!, model, 'tau1'), await loadStateFile(o.tau2!, model, 'tau2')];
    if (haveLin) taus.linear = [await loadStateFile(o.tau1Linear!, model, 'tau1-linear'), await loadStateFile(o.tau2Linear!, model, 'tau2-linear')];
    else if (taus.nonlinear) {
      taus.linear = taus.nonlinear; // the paper's post-hoc linearization
      linearLabel = 'Post-hoc linearization';
    }
    if (!taus.nonlinear && o.mode === 'nonlinear') throw new ArgumentError('--mode nonlinear needs --tau1 and --tau2');
  }
  const inputs = await Promise.all(tasks.map((t, k) => taskInputs(t, o.samples, 1000 + k)));
  const alphas = linspace(-o.range, o.range, o.grid);
  const results = [];
  for (const mode of modes) {
    const pair = taus[mode];
    if (!pair) continue;
    log(`ξ grid ${o.grid}×${o.grid} on [−${o.range}, ${o.range}]², ${mode}, ${o.samples} inputs per task (${tasks.join(', ')})…`);
    const r = await weightDisentanglement(model, { mode, tau1: pair[0], tau2: pair[1], x1: inputs[0]!.x, x2: inputs[1]!.x, head: heads, alphas, params0 });
    log(`  ${r.method}: ${(r.timing.totalMs / 1000).toFixed(1)} s (${r.timing.modelCalls} model calls); ξ ≤ 0.1 on ${(100 * r.lowErrorFraction).toFixed(1)}% of the grid, mean ξ ${(r.grid.flat().reduce((a, b) => a + b, 0) / r.grid.flat().length).toFixed(3)}, max ξ ${Math.max(...r.grid.flat()).toFixed(3)}`);
    results.push(r);
  }
  const base = path.join(o.out, 'disentanglement');
  writeDisentanglementJson(results, `${base}.json`, { ...extra, labels: results.map((r) => (r.mode === 'linear' ? linearLabel : 'Non-linear FT')) });
  const fig = await renderDisentanglement(results, { taskNames: tasks, labels: results.map((r) => (r.mode === 'linear' ? linearLabel : 'Non-linear FT')) });
  const files = writeFigure(fig, base);
  log(`wrote ${base}.json, ${files.png} (${fig.width}×${fig.height}), ${files.svg}`);
}

async function runNtk(o: NtkOpts): Promise<void> {
  const { setNumThreads } = await import('../runtime');
  const { loadModel, loadStateFile, taskInputs } = await import('./inputs');
  const { ntkLocalization, writeNtkJson } = await import('./ntk');
  const { renderNtk, writeFigure } = await import('./plot');
  const { ArgumentError } = await import('../errors');
  setNumThreads(o.threads);
  const log = (s: string): void => console.log(s);
  const tasks = o.tasks.split(',').map((s) => s.trim()).filter(Boolean);
  if (tasks.length < 1) throw new ArgumentError('--tasks needs at least one task name');
  const output = o.output === 'trace' ? 'trace' : Number(o.output);
  if (output !== 'trace' && !(Number.isSafeInteger(output) && output >= 0)) throw new ArgumentError(`--output must be 'trace' or an output index, got '${o.output}'`);
  const model = await loadModel(o.demo ? undefined : o.model, o.seed);
  const params = o.theta0 ? await loadStateFile(o.theta0, model, 'theta0') : undefined;
  const inputs = await Promise.all(tasks.map((t, k) => taskInputs(t, o.perTask, 2000 + k)));
  log(`empirical NTK at θ0 (${o.theta0 ?? `${model.kind} from seed ${o.seed}`}, ${model.numel} parameters) on ${o.perTask * tasks.length} inputs (${tasks.join(', ')}), ${output === 'trace' ? 'trace over outputs' : `output ${output}`}…`);
  const r = await ntkLocalization(
    model,
    tasks.map((name, k) => ({ name, x: inputs[k]!.x })),
    { output, topK: o.topK, maxMemoryBytes: o.maxMemory, dtype: o.dtype, params },
  );
  log(`  Gram ${r.n}×${r.n} in ${(r.timing.gramMs / 1000).toFixed(1)} s (${r.stats.strategy}, ${r.stats.backwardPasses} backward passes), eigh ${r.timing.eighMs.toFixed(0)} ms`);
  log(`  top ${r.topK} eigenfunctions: mean largest per-task energy ${r.meanMaxEnergy.toFixed(3)} (1/T = ${(1 / tasks.length).toFixed(3)})`);
  for (let j = 0; j < Math.min(5, r.topK); j++)
    log(`    λ${j + 1} = ${r.eigenvalues[j]!.toPrecision(4)}: ${r.tasks.map((t, i) => `${t} ${r.energies[j]![i]!.toFixed(2)}`).join(', ')}`);
  const base = path.join(o.out, 'ntk');
  writeNtkJson(r, `${base}.json`);
  const fig = await renderNtk(r);
  const files = writeFigure(fig, base);
  log(`wrote ${base}.json, ${files.png} (${fig.width}×${fig.height}), ${files.svg}`);
}

/** Adds `disentangle` and `ntk` to the `tangent` CLI. */
export function registerAnalysisCommands(program: Command): void {
  program
    .command('disentangle')
    .description('weight-disentanglement error ξ(α1, α2) of two task vectors, non-linear beside linear: JSON + PNG + SVG heatmaps')
    .option('--demo', 'built-in demo inputs: θ0 pre-trained on fashion, frozen heads, task vectors from standard and linear fine-tuning (lib/train)')
    .option('--model <spec>', 'TorchScript .pt file, or a built-in model config as a JSON file or inline JSON (default: the built-in ViT)')
    .option('--seed <n>', "seed of a built-in model's θ0", intArg('--seed', 0), 0)
    .option('--theta0 <file>', 'θ0 from a safetensors state dict (default: the model as created or loaded)')
    .option('--tau1 <file>', 'task vector of task 1 (safetensors), from non-linear fine-tuning')
    .option('--tau2 <file>', 'task vector of task 2 (safetensors), from non-linear fine-tuning')
    .option('--tau1-linear <file>', 'task vector of task 1 from linear fine-tuning (default: --tau1, i.e. post-hoc linearization)')
    .option('--tau2-linear <file>', 'task vector of task 2 from linear fine-tuning (default: --tau2)')
    .option('--head1 <file>', 'frozen head of task 1: safetensors with weight [classes, features] and optional bias')
    .option('--head2 <file>', 'frozen head of task 2')
    .option('--no-normalize-head', 'do not L2-normalize features before the heads')
    .option('--task1 <name>', 'task 1 data (mnist, fashion, letters, greek, typed-digits)', 'mnist')
    .option('--task2 <name>', 'task 2 data', 'fashion')
    .option('--samples <n>', 'test inputs per task', intArg('--samples'), 128)
    .option('--mode <mode>', 'nonlinear, linear or both', (v: string) => {
      if (!['nonlinear', 'linear', 'both'].includes(v)) throw new InvalidArgumentError(`--mode must be nonlinear, linear or both, got '${v}'`);
      return v;
    }, 'both')
    .option('--grid <n>', 'grid points per axis', intArg('--grid', 2), 25)
    .option('--range <r>', 'α1, α2 in [−r, r]', numArg('--range'), 3)
    .option('--steps <n>', '--demo: AdamW steps of fine-tuning per task and mode', intArg('--steps'), 60)
    .option('--lr <x>', '--demo: AdamW learning rate', numArg('--lr'), 1e-3)
    .option('--out <dir>', 'output directory', 'analysis-out')
    .option('--threads <n>', 'libtorch intra-op threads', intArg('--threads'), 2)
    .action(async (o: DisentangleOpts) => runDisentangle(o));

  program
    .command('ntk')
    .description('empirical NTK at θ0 on inputs pooled from several tasks, its eigenfunctions and their local energy per task: JSON + PNG + SVG')
    .option('--demo', 'built-in demo inputs: the built-in ViT from --seed (ignores --model)')
    .option('--model <spec>', 'TorchScript .pt file, or a built-in model config as a JSON file or inline JSON (default: the built-in ViT)')
    .option('--seed <n>', "seed of a built-in model's θ0", intArg('--seed', 0), 0)
    .option('--theta0 <file>', 'θ0 from a safetensors state dict')
    .option('--tasks <names>', 'comma-separated tasks to pool', 'mnist,fashion,letters')
    .option('--per-task <n>', 'inputs per task', intArg('--per-task'), 100)
    .option('--output <c>', "'trace' (summed over outputs) or one output index", 'trace')
    .option('--top-k <k>', 'eigenfunctions to report and plot', intArg('--top-k'), 20)
    .option('--max-memory <size>', 'memory bound for Jacobian rows + Gram (e.g. 2GiB)', bytesArg, 2 * 2 ** 30)
    .option('--dtype <dtype>', 'Jacobian row dtype: float32 or float64', (v: string) => {
      if (v !== 'float32' && v !== 'float64') throw new InvalidArgumentError(`--dtype must be float32 or float64, got '${v}'`);
      return v;
    }, 'float32')
    .option('--out <dir>', 'output directory', 'analysis-out')
    .option('--threads <n>', 'libtorch intra-op threads', intArg('--threads'), 2)
    .action(async (o: NtkOpts) => runNtk(o));
}

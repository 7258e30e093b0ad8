/**
 * The paper's protocol end to end at small scale (`runPaperProtocol`): pre-train (or load) θ0,
 * build frozen heads, fine-tune every task in both modes, evaluate single-task accuracies and the
 * three regimes (non-linear, post-hoc linearization, linear FT) for task addition and negation,
 * and return the figures with markdown tables.
 *
 * Small-scale choices (stated in the report's `settings`):
 * - θ0: SMALL_VIT (28×28, 7×7 patches, dim 64, depth 3, 4 heads, MLP 128; ≈105k parameters),
 *   pre-trained for 3000 steps (quick: 300) on one classifier over the union of two label spaces:
 *   Fashion-MNIST (a 20,000-image subset; quick: 6,000) and the `scripts` glyphs (Cyrillic capitals,
 *   Hebrew and Georgian letters, symbols; 88 classes, at most as many images as Fashion-MNIST) —
 *   printed strokes, but no Latin letter, Greek letter or digit, so no edited task's data or
 *   classes (`pretrainExtra: []` pre-trains on Fashion-MNIST alone). Cached in the user cache
 *   (`<cache>/pretrained/theta0-<hash>.safetensors`, keyed by a hash of the config, steps, source
 *   names and source images/labels); its pre-training accuracy (the control head on θ0,
 *   validation and test) is reported.
 * - Edited tasks: mnist, letters, greek, typed-digits. Control task for negation: fashion (the
 *   pre-training source, like ImageNet for CLIP); threshold 0.95 × pre-trained control accuracy.
 * - Heads: linear probes on L2-normalized θ0 features, closed-form ridge (λ = 0.01·N, unpenalized
 *   bias) + a fitted logit scale, on ≤5000 training images (quick: ≤2000), frozen.
 * - Fine-tuning (both modes): AdamW, wd 0.1, batch 128, cosine with 10% warm-up, clip 1, 300
 *   steps per task (quick: 60) — the same step budget for both modes. The learning rate is chosen
 *   per mode on VALIDATION data from a small grid (standard {1e-3, 3e-3}, linear {1e-3, 3e-3,
 *   1e-2}) by the mean single-task validation accuracy over the tasks (f for standard, f_lin for
 *   linear; ties → the smaller lr), using seed 0's runs; the chosen lr's seed-0 models are kept.
 *   When the best lr is the grid's largest, the next lr up (the grid's last ratio) is tried too,
 *   at most `lrExtension` (2) times per mode; `lrSelection` records the extension and whether the
 *   choice still sits on the edge.
 * - Seeds (`seeds`, default 1): fine-tuning (batch order) and evaluation are repeated for seeds
 *   0..seeds−1 with θ0 and the heads shared; `headline` gives mean ± sample std (n − 1) of every
 *   headline number over seeds. The top-level singleTask/addition/negation are seed 0's.
 * - Splits: validation = 10% of train (≤5000, seed 0), subsampled to 500 (quick: 250); test
 *   subsampled to 1000 (quick: 500). α grid 0.00..1.00, 21 points; when the α chosen on
 *   validation sits on the grid's upper edge (addition, or any task in negation) the sweep is
 *   re-run on the extended grid 0.00..2.00 (41 points) and `alphaEdges` records it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { concatSets, loadTask, subset, type ImageSet, type TaskName } from './data';
import { ArgumentError } from './errors';
import type { Head, VitConfig } from './model';
import { getNumThreads, runtimeInfo, setNumThreads } from './runtime';
import { disposeEvalData, evalData, prepareTask, type TaskSplits } from './data/splits';
import { finetune, type FinetuneHyper } from './train/finetune';
import { disposeState, hashTensors, sha256File } from './util/state';
import * as crypto from 'node:crypto';
import { defaultCacheDir } from './data/cache';
import type { Params } from './model';
import { fitHead, loadBackbone, pretrain, saveBackbone, saveHeads, SMALL_VIT, type Backbone } from './train/pretrain';
import type { ProgressOptions } from './util/progress';
import { additionSweep, Evaluator, negationSweep, REGIMES, singleTaskAccuracies, sourceMode, type AdditionResult, type NegationResult, type Regime, type SingleTaskRow } from './eval/evaluate';
import { additionTable, negationTable, singleTaskTable } from './eval/report';
import { alphaGrid } from './eval/select';

export interface ProtocolOptions {
  /** A smaller, faster run (≲ 2 minutes on 2 cores). */
  quick?: boolean;
  /** Tasks to fine-tune and edit. */
  tasks?: TaskName[];
  /** Pre-training source and negation control task (default 'fashion'). */
  control?: TaskName;
  /** Load θ0 from this file (saved by saveBackbone / `tangent pretrain`) instead of pre-training. */
  pretrained?: string;
  config?: VitConfig;
  pretrainSteps?: number;
  /** At most this many pre-training images from the control task (and from each extra source). */
  sourceLimit?: number;
  /**
   * Further pre-training sources, each with its own classes beside the control task's (default
   * ['scripts']; [] for the control task alone). None may be an edited task or the control.
   */
  pretrainExtra?: TaskName[];
  /** Fine-tuning hyper-parameters for both modes, then per-mode overrides. */
  finetune?: Partial<FinetuneHyper>;
  standard?: Partial<FinetuneHyper>;
  linear?: Partial<FinetuneHyper>;
  trainLimit?: number;
  valLimit?: number;
  testLimit?: number;
  alphas?: number[];
  /**
   * When the α chosen on validation is the largest of `alphas`, the sweep is re-run on this grid
   * (default 0..2 in 41 points); false: never.
   */
  alphaExtension?: number[] | false;
  /** Learning-rate grids per mode, chosen on validation (ignored for a mode whose lr is set explicitly). */
  lrGrid?: { standard?: number[]; linear?: number[] };
  /**
   * When the best lr is the largest tried, try the next one up (the grid's last ratio, ×√10 for a
   * one-point grid) at most this many times per mode (default 2; 0: never).
   */
  lrExtension?: number;
  /** Fine-tuning + evaluation seeds 0..seeds−1 (θ0 and heads shared). Default 1. */
  seeds?: number;
  /** Directory caching pre-trained θ0 by a hash of its config and data (default `<user cache>/pretrained`); false: no cache. */
  theta0Cache?: string | false;
  /** Negation control ratio (default 0.95). */
  ratio?: number;
  regimes?: Regime[];
  /** θ0, heads and fine-tuned checkpoints are written here (default: a fresh temp dir). */
  workDir?: string;
  threads?: number;
  progress?: ProgressOptions;
  log?: (line: string) => void;
}

export interface MeanStd {
  mean: number;
  /** Sample standard deviation (n − 1); 0 for a single value. */
  std: number;
  values: number[];
}

/** Mean and sample standard deviation (n − 1; 0 when n = 1) of per-seed values. */
export function meanStd(values: readonly number[]): MeanStd {
  if (values.length === 0) throw new RangeError('meanStd of nothing');
  const m = values.reduce((a, b) => a + b, 0) / values.length;
  const v = values.length > 1 ? values.reduce((a, b) => a + (b - m) ** 2, 0) / (values.length - 1) : 0;
  return { mean: m, std: Math.sqrt(v), values: [...values] };
}

export interface LrSelection {
  mode: 'standard' | 'linear';
  grid: number[];
  /** Mean single-task VALIDATION accuracy over the tasks per lr (seed 0), aligned with grid. */
  valMeanAcc: number[];
  chosen: number;
  /** The lrs added above the first grid because the best sat on its upper edge (empty: none). */
  extendedWith: number[];
  /** Whether the chosen lr is still the largest tried (the extension limit was reached). */
  stillOnEdge: boolean;
}

export interface AlphaEdge {
  seed: number;
  kind: 'addition' | 'negation';
  regime: Regime;
  /** Largest α of the first grid. */
  gridMax: number;
  /** α chosen on the first grid (addition: one; negation: one per task). */
  firstChoice: number[];
  extended: boolean;
  /** α chosen on the extended grid (equal to firstChoice when not extended). */
  finalChoice: number[];
  /** Whether the final choice still sits on the upper edge of the grid it was chosen on. */
  stillOnEdge: boolean;
}

export interface SeedResult {
  seed: number;
  finetuning: ProtocolReport['finetuning'];
  singleTask: SingleTaskRow[];
  addition: AdditionResult[];
  negation: NegationResult[];
}

export interface ProtocolReport {
  settings: Record<string, unknown>;
  timings: Record<string, number>;
  pretrained: { controlVal: number; controlTest: number; sha256?: string; cached?: boolean; cacheFile?: string; key?: string };
  lrSelection: LrSelection[];
  alphaEdges: AlphaEdge[];
  seeds: SeedResult[];
  /** Headline numbers, mean ± std over seeds (keys like 'addition.linear.meanNorm'). */
  headline: Record<string, MeanStd>;
  heads: Record<string, { trainAcc: number }>;
  finetuning: Record<string, Record<'standard' | 'linear', { msPerStep: number; firstLoss: number; lastLoss: number; checkpoint: string; lr: number; seed: number }>>;
  singleTask: SingleTaskRow[];
  addition: AdditionResult[];
  negation: NegationResult[];
  markdown: string;
  workDir: string;
}

export const PAPER_TASKS: readonly TaskName[] = ['mnist', 'letters', 'greek', 'typed-digits'];

export const LR_GRID = { standard: [1e-3, 3e-3], linear: [1e-3, 3e-3, 1e-2] } as const;

/** The headline numbers of one seed (keys as in ProtocolReport.headline). */
export function headlineOf(r: Pick<SeedResult, 'singleTask' | 'addition' | 'negation'>): Record<string, number> {
  const h: Record<string, number> = {};
  for (const col of ['pretrained', 'standard', 'posthoc', 'linear'] as const) {
    const v = r.singleTask.map((row) => row[col]).filter((x): x is number => x !== undefined);
    if (v.length === r.singleTask.length && v.length > 0) h[`singleTask.${col}`] = v.reduce((a, b) => a + b, 0) / v.length;
  }
  if (h['singleTask.standard'] !== undefined && h['singleTask.linear'] !== undefined) h['singleTask.gapStandardMinusLinear'] = h['singleTask.standard'] - h['singleTask.linear'];
  for (const a of r.addition) {
    h[`addition.${a.regime}.meanAbs`] = a.test.meanAbs;
    h[`addition.${a.regime}.meanNorm`] = a.test.meanNorm;
    h[`addition.${a.regime}.alpha`] = a.chosenAlpha;
  }
  for (const n of r.negation) {
    h[`negation.${n.regime}.target`] = n.meanTargetTest;
    h[`negation.${n.regime}.control`] = n.meanControlTest;
  }
  return h;
}

/** Aggregates per-seed headline records: mean ± std of every key present in all of them. */
export function aggregateHeadlines(perSeed: ReadonlyArray<Record<string, number>>): Record<string, MeanStd> {
  const out: Record<string, MeanStd> = {};
  if (perSeed.length === 0) return out;
  for (const k of Object.keys(perSeed[0]!)) if (perSeed.every((h) => typeof h[k] === 'number')) out[k] = meanStd(perSeed.map((h) => h[k]!));
  return out;
}

/** `12.3 ± 0.4` in percent (or plain with pct false). */
export function fmtMeanStd(m: MeanStd, pct = true): string {
  const f = pct ? 100 : 1;
  const d = pct ? 1 : 2;
  return `${(f * m.mean).toFixed(d)} ± ${(f * m.std).toFixed(d)}`;
}

/** Markdown table of the headline numbers over seeds. */
export function headlineTable(h: Record<string, MeanStd>, seeds: number): string {
  const rows = Object.entries(h).map(([k, m]) => {
    const pct = !k.endsWith('.alpha');
    return `| ${k} | ${fmtMeanStd(m, pct)} | ${m.values.map((v) => (pct ? (100 * v).toFixed(1) : v.toFixed(2))).join(', ')} |`;
  });
  return [`Headline numbers over ${seeds} seed${seeds === 1 ? '' : 's'} (mean ± sample std; % except α):`, '', '| Metric | Mean ± std | Per seed |', '|---|---|---|', ...rows].join('\n');
}

function lrTable(sel: LrSelection[], steps: number): string {
  return [
    `Learning rate per mode, chosen on validation (mean single-task validation accuracy, seed 0, ${steps} steps each):`,
    '',
    '| Mode | lr grid | Val acc (%) per lr | Chosen |',
    '|---|---|---|---|',
    ...sel.map(
      (s) =>
        `| ${s.mode} | ${s.grid.join(', ')}${s.extendedWith.length ? ` (extended: ${s.extendedWith.join(', ')})` : ''} | ${s.valMeanAcc.map((v) => (100 * v).toFixed(1)).join(', ')} | ${s.chosen}${s.stillOnEdge ? ' (upper edge)' : ''} |`,
    ),
  ].join('\n');
}

function theta0Key(config: VitConfig, steps: number, control: string, extra: readonly string[], src: ImageSet): string {
  const h = crypto.createHash('sha256');
  const sources = extra.length ? { control, extra } : { control };
  h.update(JSON.stringify({ format: 'tangent-edit/theta0-cache@1', config, steps, ...sources, count: src.count, shape: src.shape, classes: src.classes }));
  h.update(Buffer.from(src.images.buffer, src.images.byteOffset, src.images.byteLength));
  h.update(Buffer.from(src.labels.buffer, src.labels.byteOffset, src.labels.byteLength));
  return h.digest('hex').slice(0, 16);
}

export async function runPaperProtocol(o: ProtocolOptions = {}): Promise<ProtocolReport> {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  if (o.threads !== undefined) setNumThreads(o.threads);
  const quick = !!o.quick;
  const tasks = [...(o.tasks ?? PAPER_TASKS)];
  const control = o.control ?? 'fashion';
  const regimes = o.regimes ?? [...REGIMES];
  const extra = [...(o.pretrainExtra ?? ['scripts'])];
  for (const x of extra)
    if (x === control || tasks.includes(x) || extra.indexOf(x) !== extra.lastIndexOf(x))
      throw new ArgumentError(`pretrainExtra: '${x}' is ${x === control ? 'the control task' : tasks.includes(x) ? 'an edited task (its data must stay out of pre-training)' : 'listed twice'}`);
  const nSeeds = o.seeds ?? 1;
  if (!Number.isSafeInteger(nSeeds) || nSeeds < 1) throw new RangeError(`seeds must be a positive integer, got ${nSeeds}`);
  const ft: Partial<FinetuneHyper> = { steps: quick ? 60 : 300, batchSize: 128, weightDecay: 0.1, maxGradNorm: 1, seed: 0, ...o.finetune };
  ft.warmupSteps ??= Math.max(1, Math.round(0.1 * ft.steps!));
  const hyper = { standard: { ...ft, ...o.standard }, linear: { ...ft, ...o.linear } };
  const lrGrids = {
    standard: hyper.standard.lr !== undefined ? [hyper.standard.lr] : [...(o.lrGrid?.standard ?? LR_GRID.standard)],
    linear: hyper.linear.lr !== undefined ? [hyper.linear.lr] : [...(o.lrGrid?.linear ?? LR_GRID.linear)],
  };
  const lrExt = o.lrExtension ?? 2;
  if (!Number.isSafeInteger(lrExt) || lrExt < 0) throw new RangeError(`lrExtension must be a non-negative integer, got ${lrExt}`);
  const sizes = {
    sourceLimit: o.sourceLimit ?? (quick ? 6000 : 20000),
    trainLimit: o.trainLimit,
    valLimit: o.valLimit ?? (quick ? 250 : 500),
    testLimit: o.testLimit ?? (quick ? 500 : 1000),
    pretrainSteps: o.pretrainSteps ?? (quick ? 300 : 3000),
    headSamples: quick ? 2000 : 5000,
  };
  const alphas = o.alphas ?? alphaGrid();
  const alphaExt = o.alphaExtension === undefined ? alphaGrid(41, 2) : o.alphaExtension;
  const workDir = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-protocol-'));
  fs.mkdirSync(workDir, { recursive: true });
  const timings: Record<string, number> = {};
  const T0 = performance.now();
  const lap = (k: string, t: number) => (timings[k] = (performance.now() - t) / 1000);
  log(`tangent-edit paper protocol (${quick ? 'quick' : 'full'}): tasks ${tasks.join(', ')}; control ${control}; ${nSeeds} seed${nSeeds === 1 ? '' : 's'}; ${getNumThreads()} threads; work dir ${workDir}`);

  // Data.
  let t = performance.now();
  const data = new Map<string, TaskSplits>();
  for (const name of [control, ...tasks] as TaskName[])
    data.set(name, await prepareTask(name, { trainLimit: name === control ? sizes.sourceLimit : sizes.trainLimit, valLimit: sizes.valLimit, testLimit: sizes.testLimit }));
  lap('data', t);

  // θ0: loaded, or from the cache keyed by its config + data, or pre-trained (then cached).
  t = performance.now();
  let bb: Backbone;
  const theta0File = path.join(workDir, 'theta0.safetensors');
  let cached = false;
  let cacheFile: string | undefined;
  let key: string | undefined;
  if (o.pretrained) {
    bb = loadBackbone(o.pretrained);
    fs.copyFileSync(o.pretrained, theta0File);
    log(`θ0 loaded from ${path.resolve(o.pretrained)}`);
  } else {
    const parts = [data.get(control)!.train];
    for (const x of extra) {
      const { train } = await loadTask(x);
      parts.push(train.count > sizes.sourceLimit ? subset(train, sizes.sourceLimit, 0) : train);
    }
    const source = parts.length === 1 ? parts[0]! : concatSets(parts, [control, ...extra].join('+'));
    const srcName = [control, ...extra].join(' + ');
    const config = o.config ?? SMALL_VIT;
    key = theta0Key(config, sizes.pretrainSteps, control, extra, source);
    const cacheDir = o.theta0Cache === false ? null : (o.theta0Cache ?? path.join(defaultCacheDir(), 'pretrained'));
    cacheFile = cacheDir ? path.join(cacheDir, `theta0-${key}.safetensors`) : undefined;
    if (cacheFile && fs.existsSync(cacheFile)) {
      bb = loadBackbone(cacheFile);
      cached = true;
      log(`θ0 reused from the cache ${cacheFile} (key ${key}: ${srcName}, ${source.count} images, ${sizes.pretrainSteps} steps)`);
    } else {
      const r = await pretrain({ source, config, steps: sizes.pretrainSteps, progress: o.progress });
      bb = r;
      log(`θ0: pre-trained on ${srcName} (${source.count} images, ${source.classes} classes, ${sizes.pretrainSteps} steps) in ${(r.ms / 1000).toFixed(1)} s, final loss ${r.finalLoss.toFixed(3)}`);
    }
    saveBackbone(theta0File, bb, { source: srcName, steps: String(sizes.pretrainSteps), key });
    if (cacheFile && !cached) {
      fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      fs.copyFileSync(theta0File, tmp);
      fs.renameSync(tmp, cacheFile);
    }
  }
  const theta0Sha = hashTensors(bb.theta0); // content hash, as every tangent checkpoint records it
  lap('pretrain', t);

  // Heads.
  t = performance.now();
  const heads = new Map<string, Head>();
  const headInfo: ProtocolReport['heads'] = {};
  for (const name of [control, ...tasks]) {
    const h = await fitHead(bb, data.get(name)!.train, { maxSamples: sizes.headSamples });
    heads.set(name, h);
    headInfo[name] = { trainAcc: h.trainAcc };
  }
  const headsFile = path.join(workDir, 'heads.safetensors');
  saveHeads(headsFile, heads, bb.theta0);
  lap('heads', t);
  log(`heads: linear probes on normalized θ0 features (${[...heads.keys()].map((k) => `${k} ${(100 * headInfo[k]!.trainAcc).toFixed(1)}%`).join(', ')} train acc)`);

  const ev = new Evaluator(
    bb.model,
    bb.theta0,
    [control, ...tasks].map((name) => ({ name, head: heads.get(name)!, val: evalData(data.get(name)!.val), test: evalData(data.get(name)!.test) })),
  );
  const pre = { controlVal: await ev.accuracy(control, 'val', undefined, false), controlTest: await ev.accuracy(control, 'test', undefined, false), sha256: sha256File(theta0File), cached, cacheFile, key };
  log(`θ0 pre-training accuracy (${control} head on θ0): validation ${(100 * pre.controlVal).toFixed(1)}%, test ${(100 * pre.controlTest).toFixed(1)}%`);

  const finetuneOne = async (mode: 'standard' | 'linear', name: string, lr: number, seed: number, file: string) => {
    const r = await finetune({
      ...hyper[mode],
      lr,
      seed,
      mode,
      model: bb.model,
      theta0: bb.theta0,
      head: heads.get(name)!,
      train: data.get(name)!.train,
      checkpoint: { file, metadata: { task: name, theta0Path: theta0File, theta0Sha256: theta0Sha, headSha256: hashTensors({ w: heads.get(name)!.weight }), config: JSON.stringify(bb.config), lr: String(lr), seed: String(seed) } },
      progress: { label: `finetune ${name} (${mode}, lr ${lr}, seed ${seed})`, ...o.progress },
    });
    const first = r.history.slice(0, 10);
    const last = r.history.slice(-10);
    return {
      params: r.params,
      info: { msPerStep: r.msPerStep, firstLoss: first.reduce((a, h) => a + h.loss, 0) / first.length, lastLoss: last.reduce((a, h) => a + h.loss, 0) / last.length, checkpoint: file, lr, seed },
    };
  };

  // α sweeps, re-run on the extended grid when the choice sits on the first grid's upper edge.
  const alphaEdges: AlphaEdge[] = [];
  const withEdge = async <R>(seed: number, kind: AlphaEdge['kind'], regime: Regime, run: (a: number[]) => Promise<R>, choice: (r: R) => number[]): Promise<R> => {
    const gridMax = alphas[alphas.length - 1]!;
    const first = await run(alphas);
    const firstChoice = choice(first);
    const onEdge = firstChoice.some((a) => a === gridMax);
    if (!onEdge || alphaExt === false || !(alphaExt[alphaExt.length - 1]! > gridMax)) {
      alphaEdges.push({ seed, kind, regime, gridMax, firstChoice, extended: false, finalChoice: firstChoice, stillOnEdge: onEdge });
      return first;
    }
    const second = await run(alphaExt);
    const finalChoice = choice(second);
    const extMax = alphaExt[alphaExt.length - 1]!;
    alphaEdges.push({ seed, kind, regime, gridMax, firstChoice, extended: true, finalChoice, stillOnEdge: finalChoice.some((a) => a === extMax) });
    log(`  α on the edge (${kind}, ${regime}, seed ${seed}: ${firstChoice.join(', ')} = ${gridMax}) → re-swept on 0..${extMax}: ${finalChoice.join(', ')}`);
    return second;
  };

  const lrSelection: LrSelection[] = [];
  const seeds: SeedResult[] = [];
  for (let seed = 0; seed < nSeeds; seed++) {
    const tuned = { standard: new Map<string, Params>(), linear: new Map<string, Params>() };
    const finetuning: ProtocolReport['finetuning'] = {};
    for (const mode of ['standard', 'linear'] as const) {
      t = performance.now();
      if (seed === 0) {
        // Learning rate on validation: every lr of the grid, seed 0, same steps; keep the best.
        const grid = [...lrGrids[mode]];
        const runs: Array<{ models: Map<string, Params>; info: Record<string, ProtocolReport['finetuning'][string]['standard']> }> = [];
        const scores: number[] = [];
        const extendedWith: number[] = [];
        const explicit = hyper[mode].lr !== undefined;
        const bestOf = () => {
          let b = 0;
          for (let i = 1; i < scores.length; i++) if (scores[i]! > scores[b]! + 1e-12) b = i;
          return b;
        };
        for (let gi = 0; gi < grid.length; gi++) {
          const lr = grid[gi]!;
          const models = new Map<string, Params>();
          const info: Record<string, ProtocolReport['finetuning'][string]['standard']> = {};
          for (const name of tasks) {
            const file = path.join(workDir, grid.length > 1 ? `${name}-${mode}-lr${lr}.safetensors` : `${name}-${mode}.safetensors`);
            const r = await finetuneOne(mode, name, lr, 0, file);
            models.set(name, r.params);
            info[name] = r.info;
          }
          let acc = 0;
          for (const [name, p] of models) acc += await ev.accuracy(name, 'val', p, mode === 'linear');
          scores.push(acc / tasks.length);
          runs.push({ models, info });
          log(`  ${mode} lr ${lr}: mean single-task validation accuracy ${((100 * acc) / tasks.length).toFixed(1)}%`);
          // The best lr is the largest tried: the grid did not bracket it, so go one step up.
          if (gi === grid.length - 1 && !explicit && bestOf() === gi && extendedWith.length < lrExt) {
            const ratio = grid.length > 1 ? grid[gi]! / grid[gi - 1]! : Math.sqrt(10);
            const up = Number((lr * ratio).toPrecision(3));
            extendedWith.push(up);
            grid.push(up);
            log(`  ${mode}: lr ${lr} is the best and the grid's upper edge → also trying ${up}`);
          }
        }
        const best = bestOf();
        const stillOnEdge = grid.length > 1 && best === grid.length - 1;
        lrSelection.push({ mode, grid: [...grid], valMeanAcc: scores, chosen: grid[best]!, extendedWith, stillOnEdge });
        tuned[mode] = runs[best]!.models;
        for (const name of tasks) (finetuning[name] ??= {} as never)[mode] = runs[best]!.info[name]!;
        for (const [i, r] of runs.entries()) if (i !== best) for (const p of r.models.values()) if (p instanceof Map) disposeState(p);
        log(`${mode}: lr ${grid[best]} chosen on validation from {${grid.join(', ')}}`);
      } else {
        const lr = lrSelection.find((l) => l.mode === mode)!.chosen;
        for (const name of tasks) {
          const r = await finetuneOne(mode, name, lr, seed, path.join(workDir, `${name}-${mode}-s${seed}.safetensors`));
          tuned[mode].set(name, r.params);
          (finetuning[name] ??= {} as never)[mode] = r.info;
        }
      }
      lap(`finetune_${mode}${seed ? `_s${seed}` : ''}`, t);
      log(`${mode} fine-tuning (seed ${seed}): ${tasks.length} tasks × ${hyper[mode].steps} steps in ${timings[`finetune_${mode}${seed ? `_s${seed}` : ''}`]!.toFixed(1)} s`);
    }

    // Evaluation.
    t = performance.now();
    const singleTask = await singleTaskAccuracies(ev, tasks, tuned.standard, tuned.linear);
    lap(`eval_single${seed ? `_s${seed}` : ''}`, t);
    t = performance.now();
    const addition: AdditionResult[] = [];
    for (const r of regimes)
      addition.push(await withEdge(seed, 'addition', r, (a) => additionSweep(ev, r, tuned[sourceMode(r)], { alphas: a, progress: o.progress }), (x) => [x.chosenAlpha]));
    lap(`eval_addition${seed ? `_s${seed}` : ''}`, t);
    t = performance.now();
    const negation: NegationResult[] = [];
    for (const r of regimes)
      negation.push(
        await withEdge(seed, 'negation', r, (a) => negationSweep(ev, r, tuned[sourceMode(r)], { alphas: a, control, ratio: o.ratio, progress: o.progress }), (x) => Object.values(x.tasks).map((v) => v.chosen.alpha)),
      );
    lap(`eval_negation${seed ? `_s${seed}` : ''}`, t);
    seeds.push({ seed, finetuning, singleTask, addition, negation });
    for (const m of [tuned.standard, tuned.linear]) for (const p of m.values()) if (p instanceof Map) disposeState(p);
    const h = headlineOf(seeds[seeds.length - 1]!);
    log(`seed ${seed}: addition norm/abs linear ${(100 * h['addition.linear.meanNorm']!).toFixed(1)}/${(100 * h['addition.linear.meanAbs']!).toFixed(1)}%, non-linear ${(100 * (h['addition.nonlinear.meanNorm'] ?? NaN)).toFixed(1)}/${(100 * (h['addition.nonlinear.meanAbs'] ?? NaN)).toFixed(1)}%`);
  }
  timings.total = (performance.now() - T0) / 1000;

  const headline = aggregateHeadlines(seeds.map(headlineOf));
  const s0 = seeds[0]!;
  const markdown = [
    lrTable(lrSelection, hyper.standard.steps!),
    headlineTable(headline, nSeeds),
    `Seed 0 in detail:`,
    singleTaskTable(s0.singleTask),
    additionTable(s0.addition),
    negationTable(s0.negation),
  ].join('\n\n');
  for (const d of ev.tasks.values()) {
    disposeEvalData(d.val);
    disposeEvalData(d.test);
  }
  const info = runtimeInfo();
  const chosenLr = Object.fromEntries(lrSelection.map((l) => [l.mode, l.chosen]));
  return {
    settings: {
      quick,
      tasks,
      control,
      pretrainSources: o.pretrained ? null : [control, ...extra],
      regimes,
      seeds: nSeeds,
      model: bb.config,
      modelParameters: bb.model.numel,
      sizes: { ...sizes, trainCounts: Object.fromEntries(tasks.map((n) => [n, data.get(n)!.train.count])) },
      finetune: { standard: { ...hyper.standard, lr: chosenLr['standard'] }, linear: { ...hyper.linear, lr: chosenLr['linear'] } },
      lrGrid: lrGrids,
      lrSelection: 'per mode, max mean single-task validation accuracy over the tasks (seed 0; ties → smaller lr)',
      alphas,
      alphaExtension: alphaExt,
      ratio: o.ratio ?? 0.95,
      heads: { kind: 'ridge linear probe on L2-normalized θ0 features + fitted logit scale', lambda: '0.01 N', maxSamples: sizes.headSamples },
      threads: getNumThreads(),
      libtorch: info.torchVersion,
    },
    timings,
    pretrained: pre,
    lrSelection,
    alphaEdges,
    seeds,
    headline,
    heads: headInfo,
    finetuning: s0.finetuning,
    singleTask: s0.singleTask,
    addition: s0.addition,
    negation: s0.negation,
    markdown,
    workDir,
  };
}

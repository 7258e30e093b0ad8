/**
 * The paper's protocol end to end at small scale (`runPaperProtocol`): pre-train (or load) θ0,
 * build frozen heads, fine-tune every task in both modes, evaluate single-task accuracies and the
 * three regimes (non-linear, post-hoc linearization, linear FT) for task addition and negation,
 * and return the figures with markdown tables.
 *
 * Small-scale choices (stated in the report's `settings`):
 * - θ0: SMALL_VIT (28×28, 7×7 patches, dim 64, depth 3, 4 heads, MLP 128; ≈105k parameters),
 *   pre-trained on Fashion-MNIST (a 20,000-image subset; quick: 6,000) for 500 steps (quick: 150).
 * - Edited tasks: mnist, letters, greek, typed-digits. Control task for negation: fashion (the
 *   pre-training source, like ImageNet for CLIP); threshold 0.95 × pre-trained control accuracy.
 * - Heads: linear probes on L2-normalized θ0 features, closed-form ridge (λ = 0.01·N, unpenalized
 *   bias) + a fitted logit scale, on ≤5000 training images (quick: ≤2000), frozen.
 * - Fine-tuning (both modes): AdamW lr 1e-3, wd 0.1, batch 128, cosine with 10% warm-up,
 *   clip 1, 300 steps per task (quick: 60); linear mode the same recipe.
 * - Splits: validation = 10% of train (≤5000, seed 0), subsampled to 500 (quick: 250); test
 *   subsampled to 1000 (quick: 500). α grid 0.00..1.00, 21 points.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TaskName } from './data';
import type { Head, StateDict, VitConfig } from './model';
import { getNumThreads, runtimeInfo, setNumThreads } from './runtime';
import { disposeEvalData, evalData, prepareTask, type TaskSplits } from './data/splits';
import { finetune, type FinetuneHyper } from './train/finetune';
import { hashTensors, sha256File } from './util/state';
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
  sourceLimit?: number;
  /** Fine-tuning hyper-parameters for both modes, then per-mode overrides. */
  finetune?: Partial<FinetuneHyper>;
  standard?: Partial<FinetuneHyper>;
  linear?: Partial<FinetuneHyper>;
  trainLimit?: number;
  valLimit?: number;
  testLimit?: number;
  alphas?: number[];
  /** Negation control ratio (default 0.95). */
  ratio?: number;
  regimes?: Regime[];
  /** θ0, heads and fine-tuned checkpoints are written here (default: a fresh temp dir). */
  workDir?: string;
  threads?: number;
  progress?: ProgressOptions;
  log?: (line: string) => void;
}

export interface ProtocolReport {
  settings: Record<string, unknown>;
  timings: Record<string, number>;
  pretrained: { controlVal: number; controlTest: number; sha256?: string };
  heads: Record<string, { trainAcc: number }>;
  finetuning: Record<string, Record<'standard' | 'linear', { msPerStep: number; firstLoss: number; lastLoss: number; checkpoint: string }>>;
  singleTask: SingleTaskRow[];
  addition: AdditionResult[];
  negation: NegationResult[];
  markdown: string;
  workDir: string;
}

export const PAPER_TASKS: readonly TaskName[] = ['mnist', 'letters', 'greek', 'typed-digits'];

export async function runPaperProtocol(o: ProtocolOptions = {}): Promise<ProtocolReport> {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  if (o.threads !== undefined) setNumThreads(o.threads);
  const quick = !!o.quick;
  const tasks = [...(o.tasks ?? PAPER_TASKS)];
  const control = o.control ?? 'fashion';
  const regimes = o.regimes ?? [...REGIMES];
  const ft: Partial<FinetuneHyper> = { steps: quick ? 60 : 300, batchSize: 128, lr: 1e-3, weightDecay: 0.1, maxGradNorm: 1, seed: 0, ...o.finetune };
  ft.warmupSteps ??= Math.max(1, Math.round(0.1 * ft.steps!));
  const hyper = { standard: { ...ft, ...o.standard }, linear: { ...ft, ...o.linear } };
  const sizes = {
    sourceLimit: o.sourceLimit ?? (quick ? 6000 : 20000),
    trainLimit: o.trainLimit,
    valLimit: o.valLimit ?? (quick ? 250 : 500),
    testLimit: o.testLimit ?? (quick ? 500 : 1000),
    pretrainSteps: o.pretrainSteps ?? (quick ? 150 : 500),
        headSamples: quick ? 2000 : 5000,
  };
  const alphas = o.alphas ?? alphaGrid();
  const workDir = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-protocol-'));
  fs.mkdirSync(workDir, { recursive: true });
  const timings: Record<string, number> = {};
  const T0 = performance.now();
  const lap = (k: string, t: number) => (timings[k] = (performance.now() - t) / 1000);
  log(`tangent-edit paper protocol (${quick ? 'quick' : 'full'}): tasks ${tasks.join(', ')}; control ${control}; ${getNumThreads()} threads; work dir ${workDir}`);

  // Data.
  let t = performance.now();
  const data = new Map<string, TaskSplits>();
  for (const name of [control, ...tasks] as TaskName[])
    data.set(name, await prepareTask(name, { trainLimit: name === control ? sizes.sourceLimit : sizes.trainLimit, valLimit: sizes.valLimit, testLimit: sizes.testLimit }));
  lap('data', t);

  // θ0.
  t = performance.now();
  let bb: Backbone;
  let theta0File: string;
  if (o.pretrained) {
    bb = loadBackbone(o.pretrained);
    theta0File = path.resolve(o.pretrained);
    log(`θ0 loaded from ${theta0File}`);
  } else {
    const src = data.get(control)!;
    const r = await pretrain({ source: src.train, config: o.config ?? SMALL_VIT, steps: sizes.pretrainSteps, progress: o.progress });
    bb = r;
    theta0File = path.join(workDir, 'theta0.safetensors');
    saveBackbone(theta0File, bb, { source: control, steps: String(sizes.pretrainSteps) });
    log(`θ0: pre-trained on ${control} (${src.train.count} images, ${sizes.pretrainSteps} steps) in ${(r.ms / 1000).toFixed(1)} s, final loss ${r.finalLoss.toFixed(3)}`);
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

  // Fine-tuning.
  const tuned = { standard: new Map<string, StateDict>(), linear: new Map<string, StateDict>() };
  const finetuning: ProtocolReport['finetuning'] = {};
  for (const mode of ['standard', 'linear'] as const) {
    t = performance.now();
    for (const name of tasks) {
      const file = path.join(workDir, `${name}-${mode}.safetensors`);
      const r = await finetune({
        ...hyper[mode],
        mode,
        model: bb.model,
        theta0: bb.theta0,
        head: heads.get(name)!,
        train: data.get(name)!.train,
        checkpoint: { file, metadata: { task: name, theta0Path: theta0File, theta0Sha256: theta0Sha, headSha256: hashTensors({ w: heads.get(name)!.weight }), config: JSON.stringify(bb.config) } },
        progress: { label: `finetune ${name} (${mode})`, ...o.progress },
      });
      tuned[mode].set(name, r.params);
      const first = r.history.slice(0, 10);
      const last = r.history.slice(-10);
      (finetuning[name] ??= {} as never)[mode] = {
        msPerStep: r.msPerStep,
        firstLoss: first.reduce((a, h) => a + h.loss, 0) / first.length,
        lastLoss: last.reduce((a, h) => a + h.loss, 0) / last.length,
        checkpoint: file,
      };
    }
    lap(`finetune_${mode}`, t);
    log(`${mode} fine-tuning: ${tasks.length} tasks × ${hyper[mode].steps} steps in ${timings[`finetune_${mode}`]!.toFixed(1)} s`);
  }

  // Evaluation.
  t = performance.now();
  const singleTask = await singleTaskAccuracies(ev, tasks, tuned.standard, tuned.linear);
  const pre = { controlVal: await ev.accuracy(control, 'val', undefined, false), controlTest: await ev.accuracy(control, 'test', undefined, false), sha256: sha256File(theta0File) };
  lap('eval_single', t);
  t = performance.now();
  const addition: AdditionResult[] = [];
  for (const r of regimes) addition.push(await additionSweep(ev, r, tuned[sourceMode(r)], { alphas, progress: o.progress }));
  lap('eval_addition', t);
  t = performance.now();
  const negation: NegationResult[] = [];
  for (const r of regimes) negation.push(await negationSweep(ev, r, tuned[sourceMode(r)], { alphas, control, ratio: o.ratio, progress: o.progress }));
  lap('eval_negation', t);
  timings.total = (performance.now() - T0) / 1000;

  const markdown = [singleTaskTable(singleTask), additionTable(addition), negationTable(negation)].join('\n\n');
  for (const d of ev.tasks.values()) {
    disposeEvalData(d.val);
    disposeEvalData(d.test);
  }
  const info = runtimeInfo();
  return {
    settings: {
      quick,
      tasks,
      control,
      regimes,
      model: bb.config,
      modelParameters: bb.model.numel,
      sizes: { ...sizes, trainCounts: Object.fromEntries(tasks.map((n) => [n, data.get(n)!.train.count])) },
      finetune: hyper,
      alphas,
      ratio: o.ratio ?? 0.95,
      heads: { kind: 'ridge linear probe on L2-normalized θ0 features + fitted logit scale', lambda: '0.01 N', maxSamples: sizes.headSamples },
      threads: getNumThreads(),
      libtorch: info.torchVersion,
    },
    timings,
    pretrained: pre,
    heads: headInfo,
    finetuning,
    singleTask,
    addition,
    negation,
    markdown,
    workDir,
  };
}

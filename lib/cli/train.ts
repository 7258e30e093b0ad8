/**
 * `tangent pretrain | finetune | eval | add | negate | protocol`: every verb takes flags or a
 * `--config file.yaml` (snake_case keys, as `tangent merge`), flags overriding the file; the
 * merged settings are validated with zod before any file is read (errors name the field).
 * Every output file is written under a temporary name and renamed into place.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { z } from 'zod';
import { ArgumentError } from '../errors';
import type { TaskName } from '../data';

const TASK = z.enum(['mnist', 'fashion', 'letters', 'greek', 'typed-digits']);
const REGIME = z.enum(['nonlinear', 'posthoc', 'linear']);
const file = z.string().min(1);
const pint = z.number().int().positive();
const progress = z.enum(['auto', 'bar', 'lines', 'none']).default('auto');

const common = {
  threads: pint.default(2),
  json: z.boolean().default(false),
  progress,
};
const dataLimits = {
  train_limit: pint.optional(),
  val_limit: pint.default(500),
  test_limit: pint.default(1000),
};
const hyper = {
  steps: pint.default(300),
  batch_size: pint.default(128),
  lr: z.number().finite().nonnegative().default(1e-3),
  weight_decay: z.number().finite().nonnegative().default(0.1),
  warmup_steps: z.number().int().nonnegative().optional(),
  max_grad_norm: z.number().finite().nonnegative().default(1),
  seed: z.number().int().nonnegative().default(0),
};

export const PretrainConfig = z
  .object({
    out: file,
    heads_out: file.optional(),
    source: TASK.default('fashion'),
    tasks: z.array(TASK).default(['mnist', 'letters', 'greek', 'typed-digits']),
    steps: pint.default(500),
    source_limit: pint.default(20000),
    seed: z.number().int().nonnegative().default(0),
    ...common,
  })
  .strict();

export const FinetuneConfig = z
  .object({
    task: TASK,
    mode: z.enum(['standard', 'linear']),
    pretrained: file,
    heads: file,
    out: file,
    checkpoint_every: pint.optional(),
    resume: z.boolean().default(false),
    ...hyper,
    ...dataLimits,
    ...common,
  })
  .strict();

const editBase = {
  pretrained: file,
  heads: file,
  checkpoints: z.array(file).min(1),
  alphas: z.union([z.number().int().min(2), z.array(z.number().finite()).min(1)]).default(21),
  regimes: z.array(REGIME).min(1).default(['nonlinear', 'posthoc', 'linear']),
  out: file.optional(),
  markdown: file.optional(),
  ...dataLimits,
  ...common,
};

export const EvalConfig = z
  .object({ pretrained: file, heads: file, checkpoints: z.array(file).default([]), tasks: z.array(TASK).optional(), split: z.enum(['val', 'test']).default('test'), out: file.optional(), markdown: file.optional(), ...dataLimits, ...common })
  .strict();
export const AddConfig = z.object({ ...editBase, save: file.optional() }).strict();
export const NegateConfig = z.object({ ...editBase, control: TASK.default('fashion'), ratio: z.number().min(0).max(1).default(0.95) }).strict();
export const ProtocolConfig = z
  .object({ quick: z.boolean().default(false), tasks: z.array(TASK).optional(), control: TASK.default('fashion'), pretrained: file.optional(), work_dir: file.optional(), out: file.optional(), markdown: file.optional(), ...common })
  .strict();

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * Reads the optional YAML config, overlays the flags given explicitly, validates with `schema`.
 * Nothing else is read before this returns.
 */
export async function resolveConfig<S extends z.ZodTypeAny>(schema: S, flags: Record<string, unknown>, verb: string): Promise<z.output<S>> {
  let doc: Record<string, unknown> = {};
  const cfgFile = flags.config as string | undefined;
  if (cfgFile !== undefined) {
    const YAML = await import('yaml');
    let text: string;
    try {
      text = fs.readFileSync(cfgFile, 'utf8');
    } catch (e) {
      throw new ArgumentError(`cannot read ${verb} config ${cfgFile}: ${(e as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = YAML.parse(text);
    } catch (e) {
      throw new ArgumentError(`${cfgFile}: not valid YAML: ${(e as Error).message}`);
    }
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) throw new ArgumentError(`${cfgFile}: a ${verb} config must be a mapping`);
    doc = (parsed ?? {}) as Record<string, unknown>;
  }
  const merged: Record<string, unknown> = { ...doc };
  for (const [k, v] of Object.entries(flags)) if (k !== 'config' && v !== undefined) merged[snake(k)] = v;
  const r = schema.safeParse(merged);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
    throw new ArgumentError(`${cfgFile ?? `${verb} options`} ${cfgFile ? 'is' : 'are'} invalid:\n${lines.join('\n')}`);
  }
  // Relative paths in a config file are relative to the file.
  const out = r.data as Record<string, unknown>;
  if (cfgFile) {
    const dir = path.dirname(path.resolve(cfgFile));
    for (const k of ['out', 'heads_out', 'pretrained', 'heads', 'markdown', 'save', 'work_dir'])
      if (typeof out[k] === 'string' && k in doc && !(snakeFlag(k, flags))) out[k] = path.resolve(dir, out[k] as string);
    if (Array.isArray(out.checkpoints) && 'checkpoints' in doc && flags.checkpoints === undefined)
      out.checkpoints = (out.checkpoints as string[]).map((c) => path.resolve(dir, c));
  }
  return out as z.output<S>;
}

function snakeFlag(k: string, flags: Record<string, unknown>): boolean {
  return Object.keys(flags).some((f) => snake(f) === k && flags[f] !== undefined);
}

const num = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got '${v}'`);
  return n;
};
const list = (v: string): string[] => v.split(',').map((s) => s.trim()).filter(Boolean);
const alphasOpt = (v: string): number | number[] => (v.includes(',') ? v.split(',').map(Number) : Number(v));

function commonOptions(c: Command): Command {
  return c
    .option('--config <file>', 'YAML config (snake_case keys); flags override it')
    .option('--threads <n>', 'libtorch intra-op threads (default 2)', num('--threads'))
    .option('--progress <mode>', 'auto | bar | lines | none (default auto: a bar on a TTY)')
    .option('--json', 'print the result as JSON on stdout');
}
function dataOptions(c: Command): Command {
  return c
    .option('--train-limit <n>', 'use a seeded subset of the training part', num('--train-limit'))
    .option('--val-limit <n>', 'validation samples per task (default 500)', num('--val-limit'))
    .option('--test-limit <n>', 'test samples per task (default 1000)', num('--test-limit'));
}
function editOptions(c: Command): Command {
  return dataOptions(
    commonOptions(
      c
        .option('--pretrained <file>', 'θ0 (from `tangent pretrain`)')
        .option('--heads <file>', 'frozen heads (from `tangent pretrain`)')
        .option('--checkpoints <files...>', 'fine-tuned checkpoints (standard and/or linear)')
        .option('--alphas <n|list>', 'α grid: a number of points on [0, 1] (default 21) or a comma list', alphasOpt)
        .option('--regimes <list>', 'nonlinear,posthoc,linear (default all)', list)
        .option('--out <file>', 'write the full results (every α) as JSON')
        .option('--markdown <file>', 'write the markdown table'),
    ),
  );
}

function emit(o: { json: boolean; out?: string; markdown?: string }, result: unknown, markdown: string): void {
  const { writeFileAtomic } = require('./checkpoints') as typeof import('./checkpoints');
  if (o.out) writeFileAtomic(o.out, `${JSON.stringify(result, null, 2)}\n`);
  if (o.markdown) writeFileAtomic(o.markdown, `${markdown}\n`);
  if (o.json) console.log(JSON.stringify(result, null, 2));
  else console.log(markdown);
}

async function setup(threads: number): Promise<void> {
  const { setNumThreads } = await import('../runtime');
  setNumThreads(threads);
}

/** Loads θ0, heads and the given checkpoints, then the data of their tasks (after all checks). */
async function loadEditing(o: { pretrained: string; heads: string; checkpoints: string[]; val_limit: number; test_limit: number; progress: string }, extraTasks: string[] = []) {
  const { loadBackbone, loadHeads } = await import('./pretrain');
  const { loadFinetuned } = await import('./checkpoints');
  const { prepareTask, evalData } = await import('./data');
  const { Evaluator } = await import('../eval/evaluate');
  const bb = loadBackbone(o.pretrained);
  const heads = loadHeads(o.heads, { theta0: bb.theta0, features: bb.config.dim });
  const cks = o.checkpoints.map((c) => loadFinetuned(c, bb));
  const tasks = [...new Set([...cks.map((c) => c.task), ...extraTasks])];
  for (const t of tasks) if (!heads.has(t)) throw new ArgumentError(`${o.heads} has no head for task '${t}' (has ${[...heads.keys()].join(', ')})`);
  const evalTasks = [];
  for (const t of tasks) {
    const d = await prepareTask(t as TaskName, { valLimit: o.val_limit, testLimit: o.test_limit });
    evalTasks.push({ name: t, head: heads.get(t)!, val: evalData(d.val), test: evalData(d.test) });
  }
  const ev = new Evaluator(bb.model, bb.theta0, evalTasks);
  return { bb, heads, cks, ev, tasks };
}

function byMode(cks: Array<{ task: string; mode: string; params: Map<string, import('../tensor').Tensor>; file: string }>, mode: 'standard' | 'linear') {
  const m = new Map<string, Map<string, import('../tensor').Tensor>>();
  for (const c of cks)
    if (c.mode === mode) {
      if (m.has(c.task)) throw new ArgumentError(`two ${mode} checkpoints for task '${c.task}' (${c.file})`);
      m.set(c.task, c.params);
    }
  return m;
}

export function registerTrainCommands(program: Command): void {
  commonOptions(
    program
      .command('pretrain')
      .description('pre-train the small ViT θ0 on a source task and fit frozen linear-probe heads for the tasks')
      .option('--out <file>', 'θ0 safetensors')
      .option('--heads-out <file>', 'heads safetensors (source + tasks)')
      .option('--source <task>', 'pre-training task (default fashion)')
      .option('--tasks <list>', 'tasks to build heads for', list)
      .option('--steps <n>', 'pre-training steps (default 500)', num('--steps'))
      .option('--source-limit <n>', 'source images used (default 20000)', num('--source-limit'))
      .option('--seed <n>', 'seed', num('--seed')),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(PretrainConfig, flags, 'pretrain');
    await setup(o.threads);
    const { prepareTask } = await import('./data');
    const { pretrain, saveBackbone, fitHead, saveHeads } = await import('./pretrain');
    const src = await prepareTask(o.source, { trainLimit: o.source_limit });
    const bb = await pretrain({ source: src.train, steps: o.steps, seed: o.seed, initSeed: o.seed, progress: { mode: o.progress } });
    saveBackbone(o.out, bb, { source: o.source, steps: String(o.steps) });
    const heads = new Map<string, import('../model').Head>();
    const acc: Record<string, number> = {};
    if (o.heads_out) {
      for (const t of [o.source, ...o.tasks.filter((t) => t !== o.source)]) {
        const d = t === o.source ? src : await prepareTask(t);
        const h = await fitHead(bb, d.train, { maxSamples: 5000, seed: o.seed });
        heads.set(t, h);
        acc[t] = h.trainAcc;
      }
      saveHeads(o.heads_out, heads, bb.theta0);
    }
    const r = { out: o.out, headsOut: o.heads_out ?? null, source: o.source, finalLoss: bb.finalLoss, seconds: bb.ms / 1000, headTrainAccuracy: acc };
    if (o.json) console.log(JSON.stringify(r, null, 2));
    else console.log(`θ0 → ${o.out} (loss ${bb.finalLoss.toFixed(3)}, ${(bb.ms / 1000).toFixed(1)} s)${o.heads_out ? `; heads → ${o.heads_out} (${Object.entries(acc).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ')})` : ''}`);
  });

  dataOptions(
    commonOptions(
      program
        .command('finetune')
        .description('fine-tune θ0 on one task, standard or linear (in the tangent space), with frozen heads')
        .option('--task <task>', 'mnist | letters | greek | typed-digits | fashion')
        .option('--mode <mode>', 'standard | linear')
        .option('--pretrained <file>', 'θ0 (from `tangent pretrain`)')
        .option('--heads <file>', 'heads (from `tangent pretrain`)')
        .option('--out <file>', 'checkpoint (θ; optimizer state beside it in .optim.safetensors)')
        .option('--steps <n>', 'steps (default 300)', num('--steps'))
        .option('--batch-size <n>', 'batch size (default 128)', num('--batch-size'))
        .option('--lr <x>', 'peak learning rate (default 1e-3)', num('--lr'))
        .option('--weight-decay <x>', 'AdamW decoupled weight decay (default 0.1)', num('--weight-decay'))
        .option('--warmup-steps <n>', 'linear warm-up steps (default 10% of steps)', num('--warmup-steps'))
        .option('--max-grad-norm <x>', 'clip the global gradient norm (default 1; 0 = off)', num('--max-grad-norm'))
        .option('--seed <n>', 'batch-order seed (default 0)', num('--seed'))
        .option('--checkpoint-every <n>', 'also checkpoint every n steps', num('--checkpoint-every'))
        .option('--resume', 'continue from --out and its optimizer state'),
    ),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(FinetuneConfig, flags, 'finetune');
    await setup(o.threads);
    const { loadBackbone, loadHeads } = await import('./pretrain');
    const { finetune, loadTrainingState } = await import('./finetune');
    const { prepareTask, evalData } = await import('./data');
    const { hashTensors } = await import('./io');
    const { Evaluator } = await import('../eval/evaluate');
    const bb = loadBackbone(o.pretrained);
    const heads = loadHeads(o.heads, { theta0: bb.theta0, features: bb.config.dim });
    const head = heads.get(o.task);
    if (!head) throw new ArgumentError(`${o.heads} has no head for task '${o.task}' (has ${[...heads.keys()].join(', ')})`);
    const resume = o.resume ? loadTrainingState(o.out, bb.model) : undefined;
    if (resume && resume.metadata.theta0Sha256 !== bb.sha256) throw new ArgumentError(`cannot resume ${o.out}: it was trained from a different θ0`);
    const d = await prepareTask(o.task, { trainLimit: o.train_limit, valLimit: o.val_limit, testLimit: o.test_limit });
    const r = await finetune({
      mode: o.mode,
      model: bb.model,
      theta0: bb.theta0,
      head,
      train: d.train,
      steps: o.steps,
      batchSize: o.batch_size,
      lr: o.lr,
      weightDecay: o.weight_decay,
      warmupSteps: o.warmup_steps ?? Math.max(1, Math.round(0.1 * o.steps)),
      maxGradNorm: o.max_grad_norm,
      seed: o.seed,
      resume,
      checkpoint: {
        file: o.out,
        every: o.checkpoint_every,
        metadata: { task: o.task, theta0Path: path.resolve(o.pretrained), theta0Sha256: bb.sha256, headSha256: hashTensors({ w: head.weight }), config: JSON.stringify(bb.config) },
      },
      progress: { mode: o.progress, label: `finetune ${o.task} (${o.mode})` },
    });
    const ev = new Evaluator(bb.model, bb.theta0, [{ name: o.task, head, val: evalData(d.val), test: evalData(d.test) }]);
    const lin = o.mode === 'linear';
    const res = {
      task: o.task,
      mode: o.mode,
      checkpoint: o.out,
      steps: r.step,
      seconds: r.ms / 1000,
      msPerStep: r.msPerStep,
      pretrained: { val: await ev.accuracy(o.task, 'val', undefined, false) },
      finetuned: { val: await ev.accuracy(o.task, 'val', r.params, lin), test: await ev.accuracy(o.task, 'test', r.params, lin) },
      lossFirst: r.history[0]?.loss ?? null,
      lossLast: r.history.at(-1)?.loss ?? null,
    };
    if (o.json) console.log(JSON.stringify(res, null, 2));
    else
      console.log(
        `${o.task} (${o.mode}): ${r.step} steps, ${r.msPerStep.toFixed(1)} ms/step; validation accuracy ${(100 * res.pretrained.val).toFixed(1)}% → ${(100 * res.finetuned.val).toFixed(1)}%, test ${(100 * res.finetuned.test).toFixed(1)}%; checkpoint ${o.out}`,
      );
  });

  dataOptions(
    commonOptions(
      program
        .command('eval')
        .description('accuracy per task: pre-trained, fine-tuned (standard, linear) and post-hoc linearized')
        .option('--pretrained <file>', 'θ0')
        .option('--heads <file>', 'heads')
        .option('--checkpoints <files...>', 'fine-tuned checkpoints')
        .option('--tasks <list>', 'tasks (default: the checkpoints\')', list)
        .option('--split <split>', 'val | test (default test)')
        .option('--out <file>', 'JSON results')
        .option('--markdown <file>', 'markdown table'),
    ),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(EvalConfig, flags, 'eval');
    await setup(o.threads);
    const { singleTaskAccuracies } = await import('../eval/evaluate');
    const { singleTaskTable } = await import('../eval/report');
    const { cks, ev, tasks } = await loadEditing({ ...o, checkpoints: o.checkpoints }, o.tasks ?? []);
    const rows = await singleTaskAccuracies(ev, o.tasks ?? tasks, byMode(cks, 'standard'), byMode(cks, 'linear'), o.split);
    emit(o, { split: o.split, rows }, singleTaskTable(rows, o.split));
  });

  editOptions(program.command('add').description('task addition θ0 + α Σ τ_t: α chosen on validation per regime, test figures').option('--save <file>', 'also save the edited θ of the first regime at its α')).action(
    async (flags: Record<string, unknown>) => {
      const o = await resolveConfig(AddConfig, flags, 'add');
      await setup(o.threads);
      const { additionSweep, sourceMode } = await import('../eval/evaluate');
      const { additionTable } = await import('../eval/report');
      const { alphaGrid } = await import('../eval/select');
      const { cks, ev, bb } = await loadEditing(o);
      const alphas = Array.isArray(o.alphas) ? o.alphas : alphaGrid(o.alphas);
      const results = [];
      for (const regime of o.regimes) {
        const m = byMode(cks, sourceMode(regime));
        if (m.size === 0) throw new ArgumentError(`regime ${regime} needs ${sourceMode(regime)} checkpoints; none given`);
        results.push(await additionSweep(ev, regime, m, { alphas, progress: { mode: o.progress } }));
      }
      if (o.save) {
        const { combineStates } = await import('../ops');
        const { saveTensors } = await import('./io');
        const first = results[0]!;
        const m = byMode(cks, sourceMode(first.regime));
        const edited = await combineStates(bb.theta0, [...m.values(), bb.theta0], [...[...m.keys()].map(() => first.chosenAlpha), -m.size * first.chosenAlpha], { compute: 'float64', outDtype: 'float32' });
        saveTensors(o.save, edited, { format: 'tangent-edit/edited@1', regime: first.regime, alpha: String(first.chosenAlpha), tasks: JSON.stringify(first.tasks), theta0Sha256: bb.sha256, linearized: String(first.regime !== 'nonlinear') });
      }
      emit(o, { addition: results }, additionTable(results));
    },
  );

  editOptions(
    program
      .command('negate')
      .description('task negation θ0 − α τ_t: α minimizing target accuracy with control ≥ ratio × pre-trained')
      .option('--control <task>', 'control task (default fashion)')
      .option('--ratio <x>', 'control threshold as a fraction of pre-trained accuracy (default 0.95)', num('--ratio')),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(NegateConfig, flags, 'negate');
    await setup(o.threads);
    const { negationSweep, sourceMode } = await import('../eval/evaluate');
    const { negationTable } = await import('../eval/report');
    const { alphaGrid } = await import('../eval/select');
    const { cks, ev } = await loadEditing(o, [o.control]);
    const alphas = Array.isArray(o.alphas) ? o.alphas : alphaGrid(o.alphas);
    const results = [];
    for (const regime of o.regimes) {
      const m = byMode(cks, sourceMode(regime));
      if (m.size === 0) throw new ArgumentError(`regime ${regime} needs ${sourceMode(regime)} checkpoints; none given`);
      results.push(await negationSweep(ev, regime, m, { alphas, control: o.control, ratio: o.ratio, progress: { mode: o.progress } }));
    }
    emit(o, { negation: results }, negationTable(results));
  });

  commonOptions(
    program
      .command('protocol')
      .description("the paper's protocol end to end: θ0, heads, standard + linear fine-tuning, addition and negation in three regimes")
      .option('--quick', 'smaller, faster run (≲ 2 min)')
      .option('--tasks <list>', 'tasks (default mnist,letters,greek,typed-digits)', list)
      .option('--control <task>', 'pre-training source and negation control (default fashion)')
      .option('--pretrained <file>', 'load θ0 instead of pre-training')
      .option('--work-dir <dir>', 'where θ0, heads and checkpoints go (default a temp dir)')
      .option('--out <file>', 'JSON report')
      .option('--markdown <file>', 'markdown tables'),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(ProtocolConfig, flags, 'protocol');
    await setup(o.threads);
    const { runPaperProtocol } = await import('../eval/protocol');
    const r = await runPaperProtocol({ quick: o.quick, tasks: o.tasks, control: o.control, pretrained: o.pretrained, workDir: o.work_dir, progress: { mode: o.progress } });
    emit(o, r, `${r.markdown}\n\ntimings (s): ${Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  });
}

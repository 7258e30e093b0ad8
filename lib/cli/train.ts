/**
 * `tangent pretrain` and `tangent finetune`. Flags or `--config file.yaml` (snake_case keys,
 * flags win); everything is validated — options, `--data` specs, files — before any work starts.
 * Fine-tuned checkpoints carry the metadata of lib/meta.ts (mode, θ0 hash, model, heads, task →
 * data), so merge, apply, eval and the analyses read them without further flags.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { ArgumentError } from '../errors';
import { choiceArg, commonOptions, intArg, listArg, numArg, resolveConfig, setThreads, zcommon, zfile, zpint } from './options';

/** `--trust-code`, on every verb that loads a model. */
export const TRUST_CODE_HELP =
  "consent to run a TorchScript model's code (--model, or the model a checkpoint's metadata names): loading TorchScript runs the archive's code (docs/security.md); a torch.export .pt2 needs none";

const hyper = {
  steps: zpint.default(300),
  batch_size: zpint.default(128),
  lr: z.number().finite().nonnegative().default(1e-3),
  weight_decay: z.number().finite().nonnegative().default(0.1),
  warmup_steps: z.number().int().nonnegative().optional(),
  max_grad_norm: z.number().finite().nonnegative().default(1),
  seed: z.number().int().nonnegative().default(0),
};

/** How a `--data` spec is decoded and split (shared by every verb that reads data). */
export const dataSettings = {
  train_limit: zpint.optional(),
  val_limit: zpint.default(500),
  test_limit: zpint.default(1000),
  val_fraction: z.number().gt(0).lt(1).default(0.1),
  test_fraction: z.number().gt(0).lt(1).default(0.2),
  split_seed: z.number().int().nonnegative().default(0),
  image_size: zpint.optional(),
  channels: z.union([z.literal(1), z.literal(3)]).optional(),
  normalize: z.boolean().default(false),
};
export type DataSettings = z.output<z.ZodObject<typeof dataSettings>>;

export function dataOptionsOf(o: DataSettings): import('../data/spec').DataOptions {
  return {
    trainLimit: o.train_limit,
    valLimit: o.val_limit,
    testLimit: o.test_limit,
    valFraction: o.val_fraction,
    testFraction: o.test_fraction,
    splitSeed: o.split_seed,
    normalize: o.normalize,
    ...(o.image_size ? { size: [o.image_size, o.image_size] as [number, number] } : {}),
    ...(o.channels ? { channels: o.channels } : {}),
  };
}

/** The flags of `dataSettings`. */
export function dataOptions(c: Command): Command {
  return c
    .option('--train-limit <n>', 'use a seeded subset of the training part', intArg('--train-limit'))
    .option('--val-limit <n>', 'validation samples per task (default 500)', intArg('--val-limit'))
    .option('--test-limit <n>', 'test samples per task (default 1000)', intArg('--test-limit'))
    .option('--val-fraction <x>', 'fraction of train held out for validation (default 0.1)', numArg('--val-fraction', 0, true))
    .option('--test-fraction <x>', 'file datasets without train/ and test/ folders: fraction held out for test (default 0.2)', numArg('--test-fraction', 0, true))
    .option('--split-seed <n>', 'seed of the splits (default 0)', intArg('--split-seed', 0))
    .option('--image-size <n>', 'image folders: resize to n×n (default: the model input, else the first image)', intArg('--image-size'))
    .option('--channels <c>', 'image folders: 1 (grey) or 3 (RGB) (default: the model input, else the first image)', (v: string) => Number(choiceArg('--channels', ['1', '3'] as const)(v)) as 1 | 3)
    .option('--normalize', "file datasets: standardise pixels with the train part's per-channel mean and std");
}

export const PretrainConfig = z
  .object({
    out: zfile,
    heads_out: zfile.optional(),
    data: zfile.default('builtin:fashion'),
    heads_data: z.array(zfile).default(['builtin:mnist', 'builtin:letters', 'builtin:greek', 'builtin:typed-digits']),
    steps: zpint.default(500),
    source_limit: zpint.default(20000),
    seed: z.number().int().nonnegative().default(0),
    ...zcommon,
  })
  .strict();

export const FinetuneConfig = z
  .object({
    data: zfile,
    task: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - only').optional(),
    mode: z.enum(['standard', 'linear']),
    model: zfile.optional(),
    trust_code: z.boolean().default(false),
    pretrained: zfile.optional(),
    heads: zfile.optional(),
    out: zfile,
    checkpoint_every: zpint.optional(),
    resume: z.boolean().default(false),
    ...hyper,
    ...dataSettings,
    ...zcommon,
  })
  .strict();

export function registerTrainCommands(program: Command): void {
  commonOptions(
    program
      .command('pretrain')
      .description('pre-train the small ViT θ0 on a source dataset and fit frozen linear-probe heads for the tasks')
      .usage('--out t0.safetensors [--heads-out heads.safetensors] [--data SPEC] [--heads-data SPEC,…] [options]')
      .option('--config <file>', 'YAML config (snake_case keys); flags override it')
      .option('--out <file>', 'θ0 safetensors (required)')
      .option('--heads-out <file>', 'heads safetensors (the source and every --heads-data dataset)')
      .option('--data <spec>', 'pre-training data: builtin:NAME or a path (default builtin:fashion); 28×28 grey')
      .option('--heads-data <specs>', 'comma-separated datasets to fit heads for (default builtin:mnist,letters,greek,typed-digits)', listArg)
      .option('--steps <n>', 'pre-training steps (default 500)', intArg('--steps'))
      .option('--source-limit <n>', 'source images used (default 20000)', intArg('--source-limit'))
      .option('--seed <n>', 'seed (default 0)', intArg('--seed', 0)),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(PretrainConfig, flags, 'pretrain');
    const { parseDataSpec, prepareData } = await import('../data/spec');
    const src = parseDataSpec(o.data);
    const headSpecs = o.heads_data.map((s) => parseDataSpec(s, '--heads-data'));
    await setThreads(o.threads);
    const { pretrain, saveBackbone, fitHead, saveHeads, SMALL_VIT } = await import('../train/pretrain');
    const decode = { size: [SMALL_VIT.imageSize, SMALL_VIT.imageSize] as [number, number], channels: 1 as const };
    const source = await prepareData(src, { ...decode, trainLimit: o.source_limit });
    const bb = await pretrain({ source: source.train, steps: o.steps, seed: o.seed, initSeed: o.seed, progress: { mode: o.progress } });
    saveBackbone(o.out, bb, { source: src.spec, steps: String(o.steps) });
    const acc: Record<string, number> = {};
    if (o.heads_out) {
      const heads = new Map<string, import('../model').Head>();
      for (const d of [src, ...headSpecs.filter((h) => h.name !== src.name)]) {
        const data = d === src ? source : await prepareData(d, decode);
        const h = await fitHead(bb, data.train, { maxSamples: 5000, seed: o.seed });
        heads.set(d.name, h);
        acc[d.name] = h.trainAcc;
      }
      saveHeads(o.heads_out, heads, bb.theta0, { data: JSON.stringify(Object.fromEntries([src, ...headSpecs].map((d) => [d.name, d.spec]))) });
    }
    const r = { out: o.out, headsOut: o.heads_out ?? null, data: src.spec, finalLoss: bb.finalLoss, seconds: bb.ms / 1000, headTrainAccuracy: acc };
    if (o.json) console.log(JSON.stringify(r, null, 2));
    else
      console.log(
        `θ0 → ${o.out} (loss ${bb.finalLoss.toFixed(3)}, ${(bb.ms / 1000).toFixed(1)} s)${o.heads_out ? `; heads → ${o.heads_out} (train accuracy ${Object.entries(acc).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ')})` : ''}`,
      );
  });

  dataOptions(
    commonOptions(
      program
        .command('finetune')
        .description('fine-tune θ0 on one dataset, standard (f) or linear (f_lin, in the tangent space)')
        .usage('--data PATH|builtin:NAME --mode standard|linear (--model FILE|CONFIG | --pretrained t0.safetensors) [--heads heads.safetensors] --out FILE [options]')
        .option('--config <file>', 'YAML config (snake_case keys); flags override it')
        .option('--data <spec>', 'training data (required): builtin:NAME, a folder of class folders of images, .npy, .npz or .safetensors')
        .option('--task <name>', "task name recorded in the checkpoint and used to pick the head (default: the dataset's name)")
        .option('--mode <mode>', 'standard | linear (required)', choiceArg('--mode', ['standard', 'linear'] as const))
        .option('--model <spec>', 'torch.export .pt2 or TorchScript file, JSON model config (file or inline), builtin:small-vit / builtin:vit, or clip:ViT-B-32 (B-16, L-14, -quickgelu; with --pretrained open_clip or transformers weights)')
        .option('--trust-code', TRUST_CODE_HELP)
        .option('--pretrained <file>', 'θ0: a state dict (any format) for --model, or a tangent pretrain file (names its model)')
        .option('--heads <file>', 'frozen heads (tangent pretrain --heads-out, or tangent heads for CLIP); not needed when the model outputs logits')
        .option('--out <file>', 'checkpoint θ (required); the optimizer state goes beside it in .optim.safetensors')
        .option('--steps <n>', 'steps (default 300)', intArg('--steps'))
        .option('--batch-size <n>', 'batch size (default 128)', intArg('--batch-size'))
        .option('--lr <x>', 'peak learning rate (default 1e-3)', numArg('--lr', 0))
        .option('--weight-decay <x>', 'AdamW decoupled weight decay (default 0.1)', numArg('--weight-decay', 0))
        .option('--warmup-steps <n>', 'linear warm-up steps (default 10% of steps)', intArg('--warmup-steps', 0))
        .option('--max-grad-norm <x>', 'clip the global gradient norm (default 1; 0 = off)', numArg('--max-grad-norm', 0))
        .option('--seed <n>', 'batch-order seed (default 0)', intArg('--seed', 0))
        .option('--checkpoint-every <n>', 'also checkpoint every n steps', intArg('--checkpoint-every'))
        .option('--resume', 'continue from --out and its optimizer state'),
    ),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(FinetuneConfig, flags, 'finetune');
    // Validation of everything named, before any work.
    const { parseDataSpec } = await import('../data/spec');
    const { parseModelSpec, requireFile } = await import('./inputs');
    const spec = parseDataSpec(o.data);
    if (o.model) parseModelSpec(o.model);
    requireFile('--pretrained', o.pretrained);
    requireFile('--heads', o.heads);
    if (o.resume) requireFile('--out (the checkpoint to resume)', o.out);
    if (!o.model && !o.pretrained) throw new ArgumentError('give --model (a torch.export .pt2 or TorchScript file, or a built-in config) or --pretrained (θ0 from tangent pretrain)');
    await setThreads(o.threads);
    const { loadBase, headFor, loadData } = await import('./inputs');
    const { finetune, loadTrainingState } = await import('../train/finetune');
    const { evalData } = await import('../data/splits');
    const { Evaluator } = await import('../eval/evaluate');
    const { encodeEditMeta, FINETUNED_FORMAT } = await import('../meta');
    const base = await loadBase(o);
    const task = o.task ?? spec.name;
    const head = headFor(base, task);
    const resume = o.resume ? loadTrainingState(o.out, base.model) : undefined;
    if (resume && resume.metadata.theta0Sha256 !== base.theta0Hash) throw new ArgumentError(`cannot resume ${o.out}: it was trained from a different θ0`);
    const d = await loadData(spec, base, dataOptionsOf(o), head);
    const metadata = encodeEditMeta({ format: FINETUNED_FORMAT, mode: o.mode, theta0: base.theta0Ref, model: base.modelRef, heads: base.headsRef, tasks: { [task]: d.spec } }, { task });
    const r = await finetune({
      mode: o.mode,
      model: base.model,
      theta0: base.theta0,
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
      checkpoint: { file: o.out, every: o.checkpoint_every, metadata },
      progress: { mode: o.progress, label: `finetune ${task} (${o.mode})` },
    });
    const ev = new Evaluator(base.model, base.theta0, [{ name: task, head, val: evalData(d.val), test: evalData(d.test) }]);
    const lin = o.mode === 'linear';
    const res = {
      task,
      data: d.spec,
      mode: o.mode,
      evaluatedWith: lin ? 'f_lin' : 'f',
      checkpoint: path.resolve(o.out),
      steps: r.step,
      seconds: r.ms / 1000,
      msPerStep: r.msPerStep,
      pretrained: { val: await ev.accuracy(task, 'val', undefined, false) },
      finetuned: { val: await ev.accuracy(task, 'val', r.params, lin), test: await ev.accuracy(task, 'test', r.params, lin) },
      lossFirst: r.history[0]?.loss ?? null,
      lossLast: r.history.at(-1)?.loss ?? null,
    };
    if (o.json) console.log(JSON.stringify(res, null, 2));
    else
      console.log(
        `${task} (${o.mode}, evaluated with ${res.evaluatedWith}): ${r.step} steps, ${r.msPerStep.toFixed(1)} ms/step; validation accuracy ${(100 * res.pretrained.val).toFixed(1)}% → ${(100 * res.finetuned.val).toFixed(1)}%, test ${(100 * res.finetuned.test).toFixed(1)}%; checkpoint ${o.out}`,
      );
  });
}

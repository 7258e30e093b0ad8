/**
 * Checkpoint verbs: `tangent inspect` (any checkpoint; tangent-edit metadata summarised),
 * `tangent merge` (streaming merges; merges of tangent checkpoints keep their metadata and refuse
 * to mix linear with standard unless told) and `tangent apply` (θ0 + Σ α_i τ_i from fine-tuned
 * checkpoints or task-vector files; negation by a negative α).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { ArgumentError } from '../errors';
import { CheckpointError } from '../checkpoint/errors';
import { assertOutputsNotInputs } from '../util/fs';
import { choiceArg, commonOptions, intArg, numArg, numListArg, resolveConfig, setThreads, zcommon, zfile } from './options';
import { assertDevice, type Device } from '../tensor';
import { detectFormat, loadStateDict } from '../checkpoint/io';
import { DTYPE_BYTES, numel } from '../checkpoint/dtype';
import { escapeControl } from '../checkpoint/escape';
import { openSafetensors, openSharded, type TensorLayout } from '../checkpoint/safetensors';

export function human(bytes: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let b = bytes;
  while (b >= 1024 && i < u.length - 1) {
    b /= 1024;
    i++;
  }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export async function inspectCheckpoint(file: string): Promise<{ format: string; metadata: Record<string, string>; tensors: Array<{ name: string; dtype: string; shape: number[]; bytes: number }>; totals: { tensors: number; params: number; bytes: number; byDtype: Record<string, number> } }> {
  const format = detectFormat(file);
  let layout: Map<string, TensorLayout>;
  let metadata: Record<string, string> = {};
  if (format === 'safetensors') {
    const f = openSafetensors(file.endsWith('.safetensors') ? file : path.join(file, 'model.safetensors'));
    layout = f.layout();
    metadata = { ...f.metadata };
    f.close();
  } else if (format === 'sharded') {
    const f = openSharded(file);
    layout = f.layout();
    f.close();
  } else {
    const c = await loadStateDict(file);
    layout = new Map([...c.tensors].map(([n, t]) => [n, { dtype: t.dtype, shape: t.shape }]));
  }
  const tensors = [...layout].map(([name, l]) => ({ name, dtype: l.dtype, shape: [...l.shape], bytes: numel(l.shape) * DTYPE_BYTES[l.dtype] }));
  const byDtype: Record<string, number> = {};
  for (const t of tensors) byDtype[t.dtype] = (byDtype[t.dtype] ?? 0) + numel(t.shape);
  return {
    format,
    metadata,
    tensors,
    totals: { tensors: tensors.length, params: tensors.reduce((a, t) => a + numel(t.shape), 0), bytes: tensors.reduce((a, t) => a + t.bytes, 0), byDtype },
  };
}


/**
 * What the metadata's mode can be checked against. A linear θ and a standard θ are the same kind
 * of tensors (the model's parameters, same names, shapes and dtypes), so no tensor tells them
 * apart; but f_lin is defined at one θ0 only, so a linear checkpoint always records θ0's content
 * hash (`theta0Sha256`, written by finetune, merge and apply alike). One that does not was not
 * written by tangent-edit as linear: refused, naming the file and the field.
 */
export function checkModeMetadata(meta: import('../meta').EditMeta, file: string): void {
  if (meta.mode === 'linear' && !meta.theta0)
    throw new CheckpointError(
      'ERR_METADATA',
      'metadata "mode" is linear but "theta0Sha256" is missing: a linear checkpoint is evaluated as f_lin at its θ0 and always records the content hash of that θ0 (tangent finetune, merge and apply write it)',
      { file },
    );
}

/** The tangent-edit metadata of a merge of tangent checkpoints; null for a merge of plain files. */
async function mergeMetadata(cfg: import('../merge').MergeConfig, paths: import('../merge').MergePaths, mode: 'standard' | 'linear' | undefined): Promise<{ metadata: Record<string, string>; base?: string } | null> {
  const { stateDictFormat, readEditMeta } = await import('./inputs');
  const { EDIT_FORMATS, EDITED_FORMAT, encodeEditMeta } = await import('../meta');
  const files = paths.models;
  const formats = await Promise.all(files.map((f) => (fs.existsSync(f) ? stateDictFormat(f) : Promise.resolve(undefined))));
  const isTangent = formats.map((f) => (EDIT_FORMATS as readonly (string | undefined)[]).includes(f));
  if (!isTangent.some(Boolean)) return null;
  const plain = files.find((_, i) => !isTangent[i]);
  if (plain) throw new ArgumentError(`${plain} is not a checkpoint written by tangent finetune, merge or apply, while ${files[isTangent.indexOf(true)]} is: merge tangent checkpoints with each other only`);
  const metas = files.map((f) => readEditMeta(f));
  metas.forEach((m, i) => checkModeMetadata(m, files[i]!));
  const modes = [...new Set(metas.map((m) => m.mode))];
  if (modes.length > 1 && mode === undefined) {
    const lin = files[metas.findIndex((m) => m.mode === 'linear')];
    const std = files[metas.findIndex((m) => m.mode === 'standard')];
    throw new ArgumentError(
      `refusing to merge linear with standard checkpoints (${path.basename(lin!)} is linear, ${path.basename(std!)} is standard): a linear checkpoint means f_lin(x; θ), a standard one f(x; θ). Pass --mode linear to evaluate the merge with f_lin (post-hoc linearization of the standard ones) or --mode standard`,
    );
  }
  const ref = metas[0]!;
  metas.forEach((m, i) => {
    if (m.theta0?.sha256 !== ref.theta0?.sha256) throw new ArgumentError(`${files[i]} and ${files[0]} were fine-tuned from different θ0s`);
    if ((m.heads?.sha256 ?? null) !== (ref.heads?.sha256 ?? null)) throw new ArgumentError(`${files[i]} and ${files[0]} use different heads files`);
  });
  // base_model must be that θ0 (compared on the checkpoints' tensor names; a TorchScript θ0 also holds buffers).
  const { loadStateDict } = await import('../checkpoint/io');
  const { openSafetensors } = await import('../checkpoint/safetensors');
  const { hashTensors, saveTensors } = await import('../util/state');
  const names = (() => {
    const f = openSafetensors(files[0]!);
    try {
      return [...f.layout().keys()];
    } finally {
      f.close();
    }
  })();
  const baseFile = paths.base;
  if (baseFile === undefined)
    throw new ArgumentError(`${cfg.method} takes no base_model, but a merge of tangent checkpoints is checked against their θ0 (base_model): merge them with a method that takes one (task_arithmetic with normalize: true is their weighted mean)`);
  const { tensors } = await loadStateDict(baseFile);
  const missing = names.filter((n) => !tensors.has(n));
  if (missing.length) throw new ArgumentError(`base_model ${cfg.base_model} lacks ${missing.slice(0, 3).join(', ')}: it is not the θ0 of ${path.basename(files[0]!)}`);
  const theta0 = new Map(names.map((n) => [n, tensors.get(n)!]));
  if (ref.theta0 && hashTensors(theta0) !== ref.theta0.sha256)
    throw new ArgumentError(`base_model ${cfg.base_model} is not the θ0 the checkpoints were fine-tuned from (${ref.theta0.path}, sha256 ${ref.theta0.sha256.slice(0, 12)}…)`);
  let base: string | undefined;
  if (tensors.size !== names.length) {
    // Buffers or extra entries (a TorchScript θ0): merge against θ0's parameters only.
    // Named like a temporary (../checkpoint/tempfiles), so a killed merge's copy is found and removed.
    const { scratchPathFor } = await import('../checkpoint/tempfiles');
    base = scratchPathFor(paths.output, 'theta0', '.safetensors');
    saveTensors(base, theta0);
  }
  const tasks: Record<string, string> = {};
  for (const m of metas) Object.assign(tasks, m.tasks);
  const metadata = encodeEditMeta(
    { format: EDITED_FORMAT, mode: mode ?? modes[0]!, theta0: ref.theta0, model: ref.model, heads: ref.heads, tasks },
    { operation: 'merge', sources: JSON.stringify(files.map((f, i) => ({ file: f, mode: metas[i]!.mode, weight: cfg.models[i]!.weight }))) },
  );
  return { metadata, base };
}

export const ApplyConfig = z
  .object({
    checkpoints: z.array(zfile).default([]),
    task_vectors: z.array(zfile).default([]),
    alpha: z.number().finite().optional(),
    alphas: z.array(z.number().finite()).optional(),
    mode: z.enum(['standard', 'linear']).optional(),
    out: zfile,
    model: zfile.optional(),
    trust_code: z.boolean().default(false),
    pretrained: zfile.optional(),
    heads: zfile.optional(),
    ...zcommon,
  })
  .strict();

export function registerCheckpointCommands(program: Command): void {
  program
    .command('inspect <file>')
    .description('names, shapes, dtypes and bytes of a checkpoint (safetensors, sharded, .pt, TorchScript, .pt2), and its tangent-edit metadata')
    .usage('FILE [--json]')
    .option('--json', 'print as JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const r = await inspectCheckpoint(file);
      let tangent: import('../meta').EditMeta | null = null;
      try {
        const { decodeEditMeta } = await import('../meta');
        tangent = decodeEditMeta(r.metadata, file);
      } catch {
        tangent = null;
      }
      if (o.json) {
        console.log(JSON.stringify({ ...r, tangent }, null, 2));
        return;
      }
      // Names and metadata come from the file: printed with control and bidi characters escaped.
      const w = Math.min(60, Math.max(4, ...r.tensors.map((t) => escapeControl(t.name).length)));
      console.log(`${file} (${r.format})`);
      if (tangent)
        console.log(escapeControl(
          `tangent-edit ${tangent.format.includes('finetuned') ? 'fine-tuned' : 'edited'} checkpoint: mode ${tangent.mode} (evaluated with ${tangent.mode === 'linear' ? 'f_lin' : 'f'}), tasks ${Object.keys(tangent.tasks).join(', ') || '–'}, θ0 ${tangent.theta0 ? `${tangent.theta0.path} (sha256 ${tangent.theta0.sha256.slice(0, 12)}…)` : '?'}`,
        ));
      console.log(`${'name'.padEnd(w)}  ${'dtype'.padEnd(8)}  ${'shape'.padEnd(20)}  bytes`);
      for (const t of r.tensors) console.log(`${escapeControl(t.name).padEnd(w)}  ${t.dtype.padEnd(8)}  ${`[${t.shape.join(', ')}]`.padEnd(20)}  ${human(t.bytes)}`);
      const dt = Object.entries(r.totals.byDtype).map(([d, n]) => `${d}: ${n.toLocaleString('en-US')}`).join(', ');
      console.log(`total: ${r.totals.tensors} tensors, ${r.totals.params.toLocaleString('en-US')} values (${dt}), ${human(r.totals.bytes)}`);
    });

  program
    .command('merge')
    .description('merge checkpoints (task arithmetic, TIES, DARE, breadcrumbs, DELLA, SLERP, NuSLERP, Karcher, Model Stock, SCE, RAM, linear, passthrough …; docs/merging.md), streaming tensor by tensor; tangent checkpoints keep their metadata')
    .usage('--config merge.yaml [--output PATH] [--mode standard|linear] [--device cpu|cuda] [--json]')
    .option('--config <file>', 'merge.yaml: tangent-edit\'s schema or a mergekit config as-is (required; see docs/merging.md)')
    .option('--output <path>', 'where to write the merge (a folder: shards + model.safetensors.index.json; or a .safetensors file); overrides the config\'s output, needed for a mergekit config without one')
    .option('--mode <mode>', 'mode of the merged checkpoint when merging linear with standard ones: standard | linear', choiceArg('--mode', ['standard', 'linear'] as const))
    .option('--progress <mode>', 'auto | bar | lines | none (default auto)', choiceArg('--progress', ['auto', 'bar', 'lines', 'none'] as const))
    .option('--threads <n>', 'libtorch intra-op threads (default 2)', intArg('--threads'))
    .option('--device <device>', 'where to merge: cpu (default; streams in fixed chunks) | cuda | cuda:N (each tensor whole on the GPU; needs a CUDA build and a GPU)')
    .option('--json', 'print the report as JSON')
    .action(async (o: { config?: string; output?: string; mode?: 'standard' | 'linear'; json?: boolean; progress?: 'auto' | 'bar' | 'lines' | 'none'; threads?: number; device?: string }) => {
      if (!o.config) throw new ArgumentError('--config: required');
      const { readMergeDocument, parseMergeConfig, mergeCheckpoints, resolveMergePaths } = await import('../merge');
      const { isMergekitConfig, parseMergekitConfig, runMergekit } = await import('../mergekit');
      const doc = await readMergeDocument(o.config);
      await setThreads(o.threads);
      if (o.device !== undefined) assertDevice(o.device, '--device');
      const device = o.device as Device | undefined;
      const configDir = path.dirname(path.resolve(o.config));
      const { progress } = await import('../util/progress');
      // The bar counts MiB written (rate: MiB/s, ETA from bytes), the status the tensor last merged.
      let bar: import('../util/progress').Progress | null = null;
      let current = '';
      const MiB = 2 ** 20;
      const callbacks = {
        onTensor: (name: string) => void (current = escapeControl(name).slice(0, 40)),
        onBytes: (done: number, total: number) => {
          bar ??= progress('merge', Math.round((total / MiB) * 100) / 100, 'MiB', { mode: o.progress ?? 'auto', plural: 'MiB' });
          bar.update(Math.round((done / MiB) * 100) / 100, current);
        },
      };
      const summary = (report: import('../merge').MergeReport, method: string, extra = '') =>
        `merged ${report.tensors} tensors (${human(report.bytesWritten)}) with ${method} into ${report.output}${report.shards ? ` (${report.shards.length} shard${report.shards.length === 1 ? '' : 's'} + ${path.basename(report.index!)})` : ''} in ${(report.ms / 1000).toFixed(2)} s${extra}`;
      if (isMergekitConfig(doc)) {
        const p = parseMergekitConfig(doc, { output: o.output, source: o.config });
        if (o.mode) throw new ArgumentError('--mode applies to merges of tangent checkpoints (tangent-edit\'s own schema), not to a mergekit config');
        resolveMergePaths(p.config, { configDir, configFile: o.config });
        const report = await runMergekit(p, { configDir, configFile: o.config, device, ...callbacks });
        (bar as import('../util/progress').Progress | null)?.stop();
        if (o.json) console.log(JSON.stringify({ ...report, format: 'mergekit' }, null, 2));
        else console.log(summary(report, p.config.method, report.copied.length ? `; copied ${report.copied.join(', ')}` : ''));
        return;
      }
      const cfg = parseMergeConfig(o.output ? { ...(doc as object), output: o.output } : doc, o.config);
      // Paths confined to the config's folder, the output format and output ≠ inputs: before any file is read.
      const paths = resolveMergePaths(cfg, { configDir, configFile: o.config });
      const tangent = await mergeMetadata(cfg, paths, o.mode);
      try {
        const report = await mergeCheckpoints(tangent?.base ? { ...cfg, base_model: tangent.base } : cfg, {
          configDir,
          configFile: o.config,
          device,
          metadata: tangent?.metadata,
          ...callbacks,
        });
        (bar as import('../util/progress').Progress | null)?.stop();
        const out = { ...report, mode: tangent ? tangent.metadata.mode : null, tasks: tangent ? JSON.parse(tangent.metadata.tasks!) : null };
        if (o.json) console.log(JSON.stringify(out, null, 2));
        else console.log(summary(report, cfg.method, tangent ? ` (mode ${tangent.metadata.mode}, tasks ${Object.keys(out.tasks).join(', ')})` : ''));
      } finally {
        if (tangent?.base) fs.rmSync(tangent.base, { force: true });
      }
    });

  commonOptions(
    program
      .command('apply')
      .description('write θ0 + Σ α_i τ_i, τ_i from fine-tuned checkpoints (θ_i − θ0) or task-vector files; negation by a negative α')
      .usage('(--checkpoints FILE… | --task-vectors FILE…) (--alpha X | --alphas LIST) --out FILE [--mode standard|linear] [options]')
      .option('--config <file>', 'YAML config (snake_case keys); flags override it')
      .option('--checkpoints <files...>', 'checkpoints from tangent finetune / merge / apply: τ = θ − θ0')
      .option('--task-vectors <files...>', 'task vectors τ (state dicts with the model parameter names)')
      .option('--alpha <x>', 'one α for every τ (negative: negation)', numArg('--alpha'))
      .option('--alphas <list>', 'one α per τ, checkpoints first, comma-separated', numListArg('--alphas'))
      .option('--mode <mode>', "standard | linear (default: the checkpoints' common mode; linear keeps f_lin semantics)", choiceArg('--mode', ['standard', 'linear'] as const))
      .option('--out <file>', 'the edited checkpoint (required), with tangent metadata')
      .option('--model <spec>', "the model (default: the checkpoints' metadata)")
      .option('--trust-code', "consent to run a TorchScript model's code (--model, or the model the checkpoints' metadata names): loading TorchScript runs the archive's code (docs/security.md); a torch.export .pt2 needs none")
      .option('--pretrained <file>', "θ0 (default: the checkpoints' metadata)")
      .option('--heads <file>', "frozen heads recorded in the output (default: the checkpoints' metadata)"),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(ApplyConfig, flags, 'apply');
    const { readEditMeta, stateDictFormat, parseModelSpec, requireFile } = await import('./inputs');
    const { EDIT_FORMATS, EDITED_FORMAT, encodeEditMeta } = await import('../meta');
    const n = o.checkpoints.length + o.task_vectors.length;
    if (n === 0) throw new ArgumentError('give --checkpoints and/or --task-vectors');
    if ((o.alpha === undefined) === (o.alphas === undefined)) throw new ArgumentError('give either --alpha (one α for all) or --alphas (one per input)');
    const alphas = o.alphas ?? new Array<number>(n).fill(o.alpha!);
    if (alphas.length !== n) throw new ArgumentError(`--alphas has ${alphas.length} values for ${n} inputs (checkpoints first, then task vectors)`);
    if (!o.out.endsWith('.safetensors')) throw new ArgumentError(`--out: ${o.out}: apply writes a safetensors checkpoint with tangent metadata; name it .safetensors`);
    const metas = o.checkpoints.map((f) => readEditMeta(f));
    metas.forEach((m, i) => checkModeMetadata(m, o.checkpoints[i]!));
    // The θ0, model and heads the checkpoints name are inputs too (used unless a flag replaces them).
    assertOutputsNotInputs(
      [{ key: '--out', path: o.out }],
      metas.flatMap((m, i) => [
        ...(m.theta0?.path ? [{ key: `the θ0 of ${o.checkpoints[i]}`, path: m.theta0.path }] : []),
        ...(m.heads?.path ? [{ key: `the heads of ${o.checkpoints[i]}`, path: m.heads.path }] : []),
        ...(m.model && 'path' in m.model && typeof m.model.path === 'string' ? [{ key: `the model of ${o.checkpoints[i]}`, path: m.model.path }] : []),
      ]),
    );
    for (const f of o.task_vectors) {
      requireFile('--task-vectors', f);
      const fmt = await stateDictFormat(f);
      if ((EDIT_FORMATS as readonly (string | undefined)[]).includes(fmt)) throw new ArgumentError(`--task-vectors: ${f} is a checkpoint θ (format ${fmt}), not a task vector τ = θ − θ0; give it with --checkpoints`);
    }
    if (o.model) parseModelSpec(o.model);
    requireFile('--pretrained', o.pretrained);
    requireFile('--heads', o.heads);
    const modes = [...new Set(metas.map((m) => m.mode))];
    if (modes.length > 1 && o.mode === undefined)
      throw new ArgumentError(
        `refusing to combine linear with standard checkpoints (${o.checkpoints[metas.findIndex((m) => m.mode === 'linear')]} is linear, ${o.checkpoints[metas.findIndex((m) => m.mode === 'standard')]} is standard); pass --mode linear (evaluate with f_lin) or --mode standard`,
      );
    if (metas.length === 0 && !o.model && !o.pretrained) throw new ArgumentError('with task vectors only, give θ0 with --pretrained and/or --model');
    const mode = o.mode ?? modes[0] ?? 'standard';
    await setThreads(o.threads);
    const { loadBase, loadEditCheckpoint } = await import('./inputs');
    const { loadStateFile } = await import('../analysis/inputs');
    const { combineStates } = await import('../ops');
    const { saveTensors } = await import('../util/state');
    const base = await loadBase(o, metas[0], o.checkpoints[0]);
    const items = [];
    for (const f of o.checkpoints) items.push((await loadEditCheckpoint(f, base)).params);
    for (const f of o.task_vectors) items.push(await loadStateFile(f, base.model, f));
    const nc = o.checkpoints.length;
    const sumCk = alphas.slice(0, nc).reduce((a, b) => a + b, 0);
    const dtype = [...base.model.spec.values()][0]!.dtype;
    // θ0 + Σ α_i (θ_i − θ0) + Σ α_j τ_j, accumulated in float64.
    const edited = await combineStates(base.theta0, [...items, base.theta0], [...alphas, -sumCk], { compute: 'float64', outDtype: dtype });
    const tasks: Record<string, string> = {};
    for (const m of metas) Object.assign(tasks, m.tasks);
    const sources = [...o.checkpoints.map((f, i) => ({ file: path.resolve(f), kind: 'checkpoint', mode: metas[i]!.mode, alpha: alphas[i]! })), ...o.task_vectors.map((f, j) => ({ file: path.resolve(f), kind: 'task-vector', alpha: alphas[nc + j]! }))];
    saveTensors(
      o.out,
      edited,
      encodeEditMeta({ format: EDITED_FORMAT, mode, theta0: base.theta0Ref, model: base.modelRef, heads: base.headsRef ?? metas[0]?.heads ?? null, tasks }, { operation: 'apply', sources: JSON.stringify(sources) }),
    );
    const r = { out: path.resolve(o.out), mode, evaluatedWith: mode === 'linear' ? 'f_lin' : 'f', tasks: Object.keys(tasks), sources };
    if (o.json) console.log(JSON.stringify(r, null, 2));
    else console.log(`θ0 + ${sources.map((s) => `${s.alpha} τ(${path.basename(s.file)})`).join(' + ')} → ${o.out} (mode ${mode}, evaluated with ${r.evaluatedWith})`);
  });
}

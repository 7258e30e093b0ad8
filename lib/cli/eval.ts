/**
 * `tangent eval` (accuracy of any checkpoint tangent wrote, through f or f_lin as its metadata
 * says), the evaluation sweeps `tangent addition-sweep` / `tangent negation-sweep` (α chosen on
 * validation in the paper's three regimes) and `tangent protocol` (the paper's protocol end to end).
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { ArgumentError } from '../errors';
import type { EditMeta } from '../meta';
import type { Params } from '../model';
import { commonOptions, emit, intArg, listArg, NO_USAGE, numArg, numListArg, resolveConfig, setThreads, zcommon, zfile } from './options';
import { dataOptions, dataOptionsOf, dataSettings, TRUST_CODE_HELP, type DataSettings } from './train';

const REGIME = z.enum(['nonlinear', 'posthoc', 'linear']);
const baseFlags = { model: zfile.optional(), trust_code: z.boolean().default(false), pretrained: zfile.optional(), heads: zfile.optional() };

export const EvalConfig = z
  .object({ checkpoints: z.array(zfile).default([]), data: z.array(zfile).optional(), split: z.enum(['val', 'test']).default('test'), out: zfile.optional(), markdown: zfile.optional(), ...baseFlags, ...dataSettings, ...zcommon })
  .strict();
const sweepBase = {
  checkpoints: z.array(zfile).min(1),
  data: z.array(zfile).optional(),
  alphas: z.union([z.number().int().min(2), z.array(z.number().finite()).min(1)]).default(21),
  regimes: z.array(REGIME).min(1).default(['nonlinear', 'posthoc', 'linear']),
  out: zfile.optional(),
  markdown: zfile.optional(),
  ...baseFlags,
  ...dataSettings,
  ...zcommon,
};
export const AdditionSweepConfig = z.object(sweepBase).strict();
export const NegationSweepConfig = z.object({ ...sweepBase, control: zfile.default('builtin:fashion'), ratio: z.number().min(0).max(1).default(0.95) }).strict();
export const ProtocolConfig = z
  .object({ quick: z.boolean().default(false), tasks: z.array(z.string()).optional(), control: z.string().default('fashion'), pretrained: zfile.optional(), work_dir: zfile.optional(), out: zfile.optional(), markdown: zfile.optional(), ...zcommon })
  .strict();

function baseOptions(c: Command): Command {
  return c
    .option('--config <file>', 'YAML config (snake_case keys); flags override it')
    .option('--model <spec>', "the model (default: the checkpoints' metadata): .pt2 or TorchScript file, JSON config or builtin:NAME")
    .option('--trust-code', TRUST_CODE_HELP)
    .option('--pretrained <file>', "θ0 (default: the checkpoints' metadata)")
    .option('--heads <file>', "frozen heads (default: the checkpoints' metadata)");
}

interface Setup {
  base: import('./inputs').Base;
  cks: import('./inputs').EditCheckpoint[];
  ev: import('../eval/evaluate').Evaluator;
  tasks: string[];
}

/**
 * Validates checkpoints (metadata), data specs and files, then loads θ0, the checkpoints and the
 * data of their tasks (plus `extra`) into an Evaluator.
 */
async function loadSetup(o: { checkpoints: string[]; data?: string[]; model?: string; trust_code: boolean; pretrained?: string; heads?: string; progress: string; threads: number } & DataSettings, extra: string[] = []): Promise<Setup> {
  const { readEditMeta, parseDataSpecs, parseModelSpec, requireFile, loadBase, loadEditCheckpoint, headFor, loadData } = await import('./inputs');
  const metas: EditMeta[] = o.checkpoints.map((f) => readEditMeta(f));
  const first = metas[0];
  metas.forEach((m, i) => {
    if (m.theta0 && first?.theta0 && m.theta0.sha256 !== first.theta0.sha256)
      throw new ArgumentError(`${o.checkpoints[i]} and ${o.checkpoints[0]} were fine-tuned from different θ0s`);
  });
  if (o.model) parseModelSpec(o.model);
  requireFile('--pretrained', o.pretrained);
  requireFile('--heads', o.heads);
  const specs = new Map<string, string>();
  if (o.data) for (const d of parseDataSpecs(o.data)) specs.set(d.name, d.spec);
  else for (const m of metas) for (const [t, s] of Object.entries(m.tasks)) if (!specs.has(t)) specs.set(t, s);
  for (const e of parseDataSpecs(extra, '--control')) if (!specs.has(e.name)) specs.set(e.name, e.spec);
  if (specs.size === 0) throw new ArgumentError('nothing to evaluate: give --checkpoints and/or --data');
  let parsed: ReturnType<typeof parseDataSpecs>;
  try {
    parsed = parseDataSpecs([...specs.values()]);
  } catch (e) {
    if (o.data || !(e instanceof ArgumentError)) throw e;
    throw new ArgumentError(`${(e as Error).message.replace(/^--data: /, '')} (recorded in the checkpoints' metadata; give the data with --data)`);
  }
  if (!first && !o.model && !o.pretrained) throw new ArgumentError('give --model or --pretrained (there is no checkpoint whose metadata names them)');
  // Everything named is valid: now the work (and the native library).
  await setThreads(o.threads);
  const base = await loadBase(o, first, o.checkpoints[0]);
  const names = parsed.map((d) => [...specs.entries()].find(([, s]) => s === d.spec)![0]);
  const heads = names.map((t) => headFor(base, t));
  const cks = [];
  for (const f of o.checkpoints) cks.push(await loadEditCheckpoint(f, base));
  const { evalData } = await import('../data/splits');
  const { Evaluator } = await import('../eval/evaluate');
  const tasks = [];
  for (const [k, d] of parsed.entries()) {
    const data = await loadData(d, base, dataOptionsOf(o), heads[k]);
    tasks.push({ name: names[k]!, head: heads[k], val: evalData(data.val), test: evalData(data.test) });
  }
  return { base, cks, ev: new Evaluator(base.model, base.theta0, tasks), tasks: names };
}

/** Fine-tuned single-task checkpoints of one mode, by task. */
function byMode(cks: Setup['cks'], mode: 'standard' | 'linear'): Map<string, Params> {
  const m = new Map<string, Params>();
  for (const c of cks)
    if (c.meta.mode === mode) {
      const tasks = Object.keys(c.meta.tasks);
      if (tasks.length !== 1) throw new ArgumentError(`${c.file} holds ${tasks.length} tasks (${tasks.join(', ')}); the sweeps take single-task fine-tuned checkpoints`);
      if (m.has(tasks[0]!)) throw new ArgumentError(`two ${mode} checkpoints for task '${tasks[0]}' (${c.file})`);
      m.set(tasks[0]!, c.params);
    }
  return m;
}

/** Each regime needs checkpoints of its fine-tuning mode (checked on the metadata, before any work). */
async function checkRegimes(files: string[], regimes: readonly ('nonlinear' | 'posthoc' | 'linear')[]): Promise<void> {
  const { readEditMeta } = await import('./inputs');
  const modes = new Set(files.map((f) => readEditMeta(f).mode));
  for (const r of regimes) {
    const need = r === 'linear' ? 'linear' : 'standard';
    if (!modes.has(need)) throw new ArgumentError(`regime ${r} needs ${need} checkpoints; none given (--regimes picks the regimes)`);
  }
}

function sweepOptions(c: Command): Command {
  return dataOptions(
    commonOptions(
      baseOptions(c)
        .option('--checkpoints <files...>', 'fine-tuned checkpoints, standard and/or linear (required)')
        .option('--data <specs...>', "the tasks' datasets, named as the checkpoints' tasks (default: the specs recorded in the checkpoints)")
        .option('--alphas <n|list>', 'α grid: a number of points on [0, 1] (default 21) or a comma list', (v: string) => (v.includes(',') ? numListArg('--alphas')(v) : intArg('--alphas', 2)(v)))
        .option('--regimes <list>', 'nonlinear,posthoc,linear (default all)', listArg)
        .option('--out <file>', 'write the full results (every α) as JSON')
        .option('--markdown <file>', 'write the markdown table'),
    ),
  );
}

export function registerEvalCommands(program: Command): void {
  dataOptions(
    commonOptions(
      baseOptions(
        program
          .command('eval')
          .description('accuracy of checkpoints written by finetune, merge or apply — linear ones through f_lin — and of θ0, per task')
          .usage('--checkpoints FILE… [--data SPEC…] [--split val|test] [--json] [options]'),
      )
        .option('--checkpoints <files...>', 'checkpoints from tangent finetune, merge or apply')
        .option('--data <specs...>', "datasets to evaluate on (default: the checkpoints' tasks): builtin:NAME or paths")
        .option('--split <split>', 'val | test (default test)')
        .option('--out <file>', 'JSON results')
        .option('--markdown <file>', 'markdown table'),
    ),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(EvalConfig, flags, 'eval');
    const { cks, ev, tasks } = await loadSetup(o);
    const { progress } = await import('../util/progress');
    const bar = progress('eval', (1 + cks.length) * tasks.length, 'evaluation', { mode: o.progress });
    let done = 0;
    const pretrained: Record<string, number> = {};
    for (const t of tasks) {
      pretrained[t] = await ev.accuracy(t, o.split, undefined, false);
      bar.update(++done, `θ0 ${t}`);
    }
    const rows = [];
    for (const c of cks) {
      const lin = c.meta.mode === 'linear';
      const accuracy: Record<string, number> = {};
      for (const t of tasks) {
        accuracy[t] = await ev.accuracy(t, o.split, c.params, lin);
        bar.update(++done, `${path.basename(c.file)} ${t}`);
      }
      rows.push({ checkpoint: path.resolve(c.file), format: c.meta.format, mode: c.meta.mode, evaluatedWith: lin ? 'f_lin' : 'f', tasks: Object.keys(c.meta.tasks), accuracy });
    }
    bar.stop();
    const pct = (x: number): string => (100 * x).toFixed(1);
    const md = [
      `accuracy (%) on the ${o.split} split; linear checkpoints are evaluated with f_lin(x; θ) = f(x; θ0) + J(θ − θ0)`,
      '',
      `| checkpoint | mode | evaluated with | ${tasks.join(' | ')} |`,
      `| --- | --- | --- | ${tasks.map(() => '---:').join(' | ')} |`,
      `| θ0 (pre-trained) | – | f | ${tasks.map((t) => pct(pretrained[t]!)).join(' | ')} |`,
      ...rows.map((r) => `| ${path.basename(r.checkpoint)} | ${r.mode} | ${r.evaluatedWith} | ${tasks.map((t) => pct(r.accuracy[t]!)).join(' | ')} |`),
    ].join('\n');
    emit(o, { split: o.split, tasks, pretrained, checkpoints: rows }, md);
  });

  sweepOptions(
    program
      .command('addition-sweep')
      .description('evaluation sweep of task addition θ0 + α Σ τ_t: α chosen on validation per regime, test figures (writes no checkpoint; see tangent apply)')
      .usage('--checkpoints FILE… [--alphas N|LIST] [--regimes LIST] [options]'),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(AdditionSweepConfig, flags, 'addition-sweep');
    const { additionSweep, sourceMode } = await import('../eval/evaluate');
    const { additionTable } = await import('../eval/report');
    const { alphaGrid } = await import('../eval/select');
    await checkRegimes(o.checkpoints, o.regimes);
    const { cks, ev } = await loadSetup(o);
    const alphas = Array.isArray(o.alphas) ? o.alphas : alphaGrid(o.alphas);
    const results = [];
    for (const regime of o.regimes) results.push(await additionSweep(ev, regime, byMode(cks, sourceMode(regime)), { alphas, progress: { mode: o.progress } }));
    emit(o, { addition: results }, additionTable(results));
  });

  sweepOptions(
    program
      .command('negation-sweep')
      .description('evaluation sweep of task negation θ0 − α τ_t: α minimizing target accuracy with control ≥ ratio × pre-trained (writes no checkpoint; see tangent apply)')
      .usage('--checkpoints FILE… [--control SPEC] [--ratio X] [options]')
      .option('--control <spec>', 'control dataset (default builtin:fashion); needs a head when the model outputs features')
      .option('--ratio <x>', 'control threshold as a fraction of pre-trained accuracy (default 0.95)', numArg('--ratio', 0)),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(NegationSweepConfig, flags, 'negation-sweep');
    const { parseDataSpec } = await import('../data/spec');
    const control = parseDataSpec(o.control, '--control');
    const { negationSweep, sourceMode } = await import('../eval/evaluate');
    const { negationTable } = await import('../eval/report');
    const { alphaGrid } = await import('../eval/select');
    await checkRegimes(o.checkpoints, o.regimes);
    const { cks, ev } = await loadSetup(o, [control.spec]);
    const alphas = Array.isArray(o.alphas) ? o.alphas : alphaGrid(o.alphas);
    const results = [];
    for (const regime of o.regimes) results.push(await negationSweep(ev, regime, byMode(cks, sourceMode(regime)), { alphas, control: control.name, ratio: o.ratio, progress: { mode: o.progress } }));
    emit(o, { negation: results }, negationTable(results));
  });

  // The old names promised checkpoint operations; say where each half went.
  for (const [old, sweep, apply] of [
    ['add', 'addition-sweep', 'tangent apply --checkpoints A B --alpha X --out FILE'],
    ['negate', 'negation-sweep', 'tangent apply --checkpoints A --alpha -X --out FILE'],
  ] as const) {
    NO_USAGE.add(old);
    program
      .command(old, { hidden: true })
      .description(`retired: the evaluation sweep is 'tangent ${sweep}', the edited checkpoint is written by 'tangent apply'`)
      .usage(`(retired) use: tangent ${sweep} --checkpoints FILE… [options], or ${apply}`)
      .allowUnknownOption()
      .allowExcessArguments()
      .action(() => {
        throw new ArgumentError(`'tangent ${old}' is gone: the evaluation sweep is 'tangent ${sweep}', the edited checkpoint is written by '${apply}'`);
      });
  }

  commonOptions(
    program
      .command('protocol')
      .description("the paper's protocol end to end on the built-in tasks: θ0, heads, standard + linear fine-tuning, addition and negation in three regimes")
      .usage('[--quick] [--tasks LIST] [--out r.json --markdown t.md] [options]')
      .option('--config <file>', 'YAML config (snake_case keys); flags override it')
      .option('--quick', 'smaller, faster run (≲ 2 min)')
      .option('--tasks <list>', 'built-in tasks (default mnist,letters,greek,typed-digits)', listArg)
      .option('--control <task>', 'built-in pre-training source and negation control (default fashion)')
      .option('--pretrained <file>', 'load θ0 instead of pre-training')
      .option('--work-dir <dir>', 'where θ0, heads and checkpoints go (default a temp dir)')
      .option('--out <file>', 'JSON report')
      .option('--markdown <file>', 'markdown tables'),
  ).action(async (flags: Record<string, unknown>) => {
    const o = await resolveConfig(ProtocolConfig, flags, 'protocol');
    const { TASK_NAMES } = await import('../data/tasks');
    for (const t of [...(o.tasks ?? []), o.control])
      if (!(TASK_NAMES as readonly string[]).includes(t)) throw new ArgumentError(`${t === o.control ? '--control' : '--tasks'}: unknown built-in task '${t}' (built-in: ${TASK_NAMES.join(', ')})`);
    await setThreads(o.threads);
    const { runPaperProtocol } = await import('../protocol');
    const r = await runPaperProtocol({ quick: o.quick, tasks: o.tasks as import('../data').TaskName[] | undefined, control: o.control as import('../data').TaskName, pretrained: o.pretrained, workDir: o.work_dir, progress: { mode: o.progress } });
    emit(o, r, `${r.markdown}\n\ntimings (s): ${Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  });
}

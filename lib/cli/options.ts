/**
 * What every verb shares: option parsers with one message style ("--name must be …, got 'v'"),
 * `--config file.yaml` merged under the flags and validated with zod before anything else is read
 * (one line per problem, naming the flag), `--json` / `--out` / `--markdown` output, and the
 * usage line printed after an option error.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { z } from 'zod';
import { ArgumentError } from '../errors';
import { assertOutputsNotInputs, confinedPath, writeFileAtomic } from '../util/fs';

/** "usage: tangent finetune --data … (tangent finetune --help lists every option)". */
export function usageLine(c: Command): string {
  const parent = c.parent?.name();
  const full = parent ? `${parent} ${c.name()}` : c.name();
  return `usage: ${full} ${c.usage()}\n(${full} --help lists every option)`;
}

const fmt = (v: string): string => `'${v}'`;

export function intArg(name: string, min = 1) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${fmt(value)}`);
    return n;
  };
}

/** A finite number; `min` exclusive with `open`. */
export function numArg(name: string, min = -Infinity, open = false) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || (open && n === min))
      throw new InvalidArgumentError(`${name} must be a number${min > -Infinity ? ` ${open ? '>' : '>='} ${min}` : ''}, got ${fmt(value)}`);
    return n;
  };
}

export function choiceArg<T extends string>(name: string, choices: readonly T[]) {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`${name} must be one of ${choices.join(', ')}, got ${fmt(value)}`);
    return value as T;
  };
}

/** Comma-separated list (empty entries dropped). */
export const listArg = (value: string): string[] =>
  value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/** Comma-separated numbers. */
export function numListArg(name: string) {
  return (value: string): number[] => {
    const parts = listArg(value);
    const out = parts.map(Number);
    if (parts.length === 0 || out.some((n) => !Number.isFinite(n))) throw new InvalidArgumentError(`${name} must be a comma-separated list of numbers, got ${fmt(value)}`);
    return out;
  };
}

/** "2GiB", "512MiB", "1e9" → bytes. */
export function bytesArg(name: string) {
  return (value: string): number => {
    const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i.exec(value.trim());
    const units: Record<string, number> = { b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, kb: 1e3, mb: 1e6, gb: 1e9 };
    const n = m ? Math.floor(Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]!) : 0;
    if (!(n >= 1) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`${name} must be a positive size like 2GiB, 512MiB or 1e9, got ${fmt(value)}`);
    return n;
  };
}

/** `--threads`, `--progress`, `--json`: on every verb that computes. */
export function commonOptions(c: Command): Command {
  return c
    .option('--threads <n>', 'libtorch intra-op threads (default 2)', intArg('--threads'))
    .option('--progress <mode>', 'auto | bar | lines | none (default auto: a bar on a terminal, lines otherwise; on stderr)', choiceArg('--progress', ['auto', 'bar', 'lines', 'none'] as const))
    .option('--json', 'print the result as JSON on stdout');
}

export const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
export const flagOf = (key: string): string => `--${key.replace(/_/g, '-')}`;

/** One line per zod issue, naming the flag (`--heads-out: Required`). */
export function zodProblems(e: z.ZodError, where: 'flags' | string): string {
  return e.issues
    .map((i) => {
      const key = i.path.length ? String(i.path[0]) : '';
      const rest = i.path.slice(1).map(String).join('.');
      const name = where === 'flags' ? (key ? flagOf(key) : 'options') : `${where}: ${i.path.join('.') || '(root)'}`;
      const msg = i.message === 'Required' ? 'required' : i.message;
      return where === 'flags' ? `${name}${rest ? `[${rest}]` : ''}: ${msg}` : `${name}: ${msg}`;
    })
    .join('; ');
}

/**
 * Reads the optional YAML config, overlays the flags given explicitly, validates with `schema`;
 * nothing else is read before this returns. Paths in a config file are relative to that file
 * (`pathKeys`, `pathListKeys`) and must stay inside its folder unless absolute; an output
 * (`out`, `heads_out`, `markdown`) may not be the same file as an input of the verb.
 */
export async function resolveConfig<S extends z.ZodTypeAny>(
  schema: S,
  flags: Record<string, unknown>,
  verb: string,
  pathKeys: readonly string[] = ['out', 'heads_out', 'pretrained', 'heads', 'markdown', 'save', 'work_dir', 'model', 'data'],
  pathListKeys: readonly string[] = ['checkpoints', 'task_vectors', 'data'],
): Promise<z.output<S>> {
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
      throw new ArgumentError(`${cfgFile}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
    }
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) throw new ArgumentError(`${cfgFile}: a ${verb} config must be a mapping`);
    doc = (parsed ?? {}) as Record<string, unknown>;
    // Consent to run code is the user's, on the command line: a config file travels with models.
    if ('trust_code' in doc)
      throw new ArgumentError(`${cfgFile}: trust_code cannot be set in a config file (configs are shared with models); consent to run a TorchScript model's code is given on the command line with --trust-code`);
  }
  const merged: Record<string, unknown> = { ...doc };
  const given = new Set<string>();
  for (const [k, v] of Object.entries(flags))
    if (k !== 'config' && v !== undefined) {
      merged[snake(k)] = v;
      given.add(snake(k));
    }
  const r = schema.safeParse(merged);
  if (!r.success) {
    // A problem with a key the config file set names the file; one given as a flag names the flag.
    const first = r.error.issues[0];
    const keys = first === undefined ? [] : first.code === 'unrecognized_keys' ? first.keys : first.path.length ? [String(first.path[0])] : [];
    const fromFile = cfgFile !== undefined && keys.length > 0 && keys.every((k) => !given.has(k) && k in doc);
    throw new ArgumentError(fromFile ? `${cfgFile} is invalid: ${zodProblems(r.error, 'config').replace(/config: /g, '')}` : zodProblems(r.error, 'flags'));
  }
  const out = r.data as Record<string, unknown>;
  const isSpecial = (v: string): boolean => v.startsWith('builtin:') || v.startsWith('clip:') || v.trim().startsWith('{');
  if (cfgFile) {
    const dir = path.dirname(path.resolve(cfgFile));
    for (const k of pathKeys)
      if (typeof out[k] === 'string' && k in doc && !given.has(k) && !isSpecial(out[k] as string)) out[k] = confinedPath(dir, out[k] as string, k, cfgFile);
    for (const k of pathListKeys)
      if (Array.isArray(out[k]) && k in doc && !given.has(k)) out[k] = (out[k] as unknown[]).map((c, i) => (typeof c === 'string' && !isSpecial(c) ? confinedPath(dir, c, `${k}.${i}`, cfgFile) : c));
  }
  const nameOf = (k: string): string => (cfgFile !== undefined && k in doc && !given.has(k) ? `${k} (${cfgFile})` : flagOf(k));
  const paths = (keys: readonly string[]) =>
    keys.flatMap((k) => (Array.isArray(out[k]) ? (out[k] as unknown[]) : [out[k]]).filter((v): v is string => typeof v === 'string' && !isSpecial(v)).map((v) => ({ key: nameOf(k), path: v })));
  assertOutputsNotInputs(paths(OUTPUT_KEYS), [...paths(INPUT_KEYS), ...(cfgFile !== undefined ? [{ key: '--config', path: cfgFile }] : [])]);
  return out as z.output<S>;
}

/** The keys of the files a verb writes, and of those it reads (checked against each other by resolveConfig). */
const OUTPUT_KEYS = ['out', 'heads_out', 'markdown'] as const;
const INPUT_KEYS = ['pretrained', 'heads', 'model', 'data', 'checkpoints', 'task_vectors', 'tokenizer', 'templates', 'control'] as const;

/** Prints `result` as JSON (`--json`) or `text`; also writes `--out` JSON / `--markdown` atomically. */
export function emit(o: { json?: boolean; out?: string; markdown?: string }, result: unknown, text: string, markdown = text): void {
  if (o.out) writeFileAtomic(o.out, `${JSON.stringify(result, null, 2)}\n`);
  if (o.markdown) writeFileAtomic(o.markdown, `${markdown}\n`);
  if (o.json) console.log(JSON.stringify(result, null, 2));
  else console.log(text);
}

/** Verbs whose errors print no usage line (the retired names). */
export const NO_USAGE = new Set<string>();

let working = false;
/** Whether a verb has finished validating and started its work (errors after that print no usage). */
export function workStarted(): boolean {
  return working;
}

/** Marks the end of validation (every verb calls this first thing when work starts) and sets threads. */
export async function setThreads(n: number | undefined): Promise<void> {
  working = true;
  const { setNumThreads } = await import('../runtime');
  setNumThreads(n ?? 2);
}

/** zod pieces shared by the verbs' schemas. */
export const zfile = z.string().min(1);
export const zpint = z.number().int().positive();
export const zprogress = z.enum(['auto', 'bar', 'lines', 'none']).default('auto');
export const zcommon = { threads: zpint.default(2), json: z.boolean().default(false), progress: zprogress };

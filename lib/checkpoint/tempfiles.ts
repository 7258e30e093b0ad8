/**
 * Temporary files of the atomic writers. Every checkpoint is written to a hidden temporary file
 * next to its destination and renamed into place; a writer killed half-way leaves that file
 * behind (hundreds of MB for a model). The name records the writing process:
 *
 *     .<name>.tangent-<pid>-<12 hex>.tmp
 *
 * (scratch files that must keep an extension to be read, e.g. the θ0 a tangent merge writes
 * beside its output, add it: `.<name>.tangent-<pid>-<12 hex>.tmp.safetensors`), so that later
 * writes — or `tangent clean`, through {@link cleanStaleTempFiles} — remove those whose process is
 * gone. Every writer asks {@link tempPathFor} for its temporary; the first time a process does so
 * for a folder, it also sweeps that folder, and (once per process) the cache folders
 * ({@link cacheFolders}): a bounded set of single folders, never a walk of a tree.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const TEMP = /^\.(.+)\.tangent-(\d+)-[0-9a-f]{12}\.tmp(?:\.safetensors)?$/;
/** The naming of earlier versions (`.<name>.<pid>.<12 hex>.tmp`, `.<name>.tmp-<pid>-<8 chars>`). */
const LEGACY = [/^\.(.+)\.(\d+)\.[0-9a-f]{12}\.tmp$/, /^\.(.+)\.tmp-(\d+)-[0-9a-z]{1,8}$/];

/**
 * A fresh temporary path next to `file`. The first call of this process for that folder removes
 * the stale temporaries in it (every name, not only `file`'s), and the first call of the process
 * those in the cache folders — so a killed write is cleaned up by the next write anywhere near it.
 */
export function tempPathFor(file: string): string {
  sweepOnce(path.dirname(path.resolve(file)));
  return path.join(path.dirname(file), `.${path.basename(file)}.tangent-${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * A scratch file beside `file` that readers must recognise by its extension (`ext`, e.g.
 * `.safetensors`): named like a temporary, so a killed process's scratch is found and removed
 * like one. The caller removes it when done.
 */
export function scratchPathFor(file: string, tag: string, ext: '.safetensors'): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${tag}.tangent-${process.pid}-${randomBytes(6).toString('hex')}.tmp${ext}`);
}

/**
 * The folders the CLI and the library write caches into: the dataset cache
 * (`$TANGENT_CACHE`, else `$XDG_CACHE_HOME/tangent-edit`, else `~/.cache/tangent-edit`) and its
 * `pretrained/` folder (the protocol's θ0 cache).
 */
export function cacheFolders(): string[] {
  // Required lazily: ../data/cache writes through ../util/fs, which takes its temporaries here.
  const { defaultCacheDir } = require('../data/cache') as typeof import('../data/cache');
  const root = defaultCacheDir();
  return [root, path.join(root, 'pretrained')];
}

const swept = new Set<string>();
let sweptCaches = false;

/** Removes stale temporaries in `dir` (and, the first time, in the cache folders), once per process each. */
function sweepOnce(dir: string): void {
  const dirs = [dir];
  if (!sweptCaches) {
    sweptCaches = true;
    try {
      dirs.push(...cacheFolders());
    } catch {
      /* no home directory: nothing to sweep there */
    }
  }
  for (const d of dirs) {
    if (swept.has(d)) continue;
    swept.add(d);
    cleanStaleTempFiles(d);
  }
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, another user's
  }
}

/**
 * The destination name a temporary file of ours belongs to and its writer's pid, or undefined.
 * With `legacy`, also the names of earlier versions (only safe when the target is known: a
 * `.<name>.<digits>.<hex>.tmp` may be another writer's temporary of a name ending in digits).
 */
export function parseTempName(name: string, legacy = false): { target: string; pid: number } | undefined {
  for (const re of legacy ? [TEMP, ...LEGACY] : [TEMP]) {
    const m = re.exec(name);
    if (m) return { target: m[1]!, pid: Number(m[2]) };
  }
  return undefined;
}

/** A temporary file left by a writer that no longer runs. */
export interface StaleTempFile {
  path: string;
  /** The pid recorded in its name (no such process runs now). */
  pid: number;
  /** The destination name it was written for. */
  target: string;
  bytes: number;
}

/**
 * The temporary files in `dir` (not below it) whose writer no longer runs; regular files only
 * (no links, folders or devices). With `target`, only the temporaries of that destination name,
 * including the names earlier versions used. Never throws for a missing or unreadable directory.
 */
export function findStaleTempFiles(dir: string, target?: string): StaleTempFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const out: StaleTempFile[] = [];
  for (const n of names) {
    const t = parseTempName(n, target !== undefined);
    if (t === undefined || (target !== undefined && t.target !== target) || processAlive(t.pid)) continue;
    const p = path.join(dir, n);
    try {
      const st = fs.lstatSync(p);
      if (st.isFile()) out.push({ path: p, pid: t.pid, target: t.target, bytes: st.size });
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/**
 * Removes the temporary files in `dir` left by writers that no longer run (their pid is gone);
 * those of running processes, and every other file, are left alone. With `target`, only the
 * temporaries of that destination name (including the names earlier versions used). Returns the
 * removed paths. Never throws for a missing or unreadable directory.
 */
export function cleanStaleTempFiles(dir: string, target?: string): string[] {
  const removed: string[] = [];
  for (const f of findStaleTempFiles(dir, target)) {
    try {
      // Checked again just before the unlink: still a regular file (not swapped for a link).
      if (!fs.lstatSync(f.path).isFile()) continue;
      fs.unlinkSync(f.path);
      removed.push(f.path);
    } catch {
      /* raced with another cleaner, or not ours to remove */
    }
  }
  return removed;
}

/**
 * `mkdir -p` that reports the real failure. Node's recursive mkdir turns e.g. EROFS on a missing
 * parent into ENOENT; here each missing level is created on its own, so the error thrown is the
 * one of the directory that could not be made.
 */
export function makeDirectory(dir: string): void {
  const missing: string[] = [];
  let d = path.resolve(dir);
  for (;;) {
    try {
      if (fs.statSync(d).isDirectory()) break;
      fs.mkdirSync(d); // exists but is not a directory: let mkdir say EEXIST / ENOTDIR
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    missing.push(d);
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  for (const m of missing.reverse()) {
    try {
      fs.mkdirSync(m);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !fs.statSync(m).isDirectory()) throw e;
    }
  }
}

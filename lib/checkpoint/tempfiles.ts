/**
 * Temporary files of the atomic writers. Every checkpoint is written to a hidden temporary file
 * next to its destination and renamed into place; a writer killed half-way leaves that file
 * behind (hundreds of MB for a model). The name records the writing process:
 *
 *     .<name>.tangent-<pid>-<12 hex>.tmp
 *
 * so that the next write into the same directory — or `tangent clean`, through
 * {@link cleanStaleTempFiles} — removes those whose process is gone.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const TEMP = /^\.(.+)\.tangent-(\d+)-[0-9a-f]{12}\.tmp$/;
/** The naming of earlier versions (`.<name>.<pid>.<12 hex>.tmp`, `.<name>.tmp-<pid>-<8 chars>`). */
const LEGACY = [/^\.(.+)\.(\d+)\.[0-9a-f]{12}\.tmp$/, /^\.(.+)\.tmp-(\d+)-[0-9a-z]{1,8}$/];

/** A fresh temporary path next to `file`. */
export function tempPathFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tangent-${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
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

/**
 * Removes the temporary files in `dir` left by writers that no longer run (their pid is gone);
 * those of running processes, and every other file, are left alone. With `target`, only the
 * temporaries of that destination name (including the names earlier versions used). Returns the removed paths. Never throws for a missing or
 * unreadable directory.
 */
export function cleanStaleTempFiles(dir: string, target?: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    const t = parseTempName(n, target !== undefined);
    if (t === undefined || (target !== undefined && t.target !== target) || processAlive(t.pid)) continue;
    const p = path.join(dir, n);
    try {
      if (!fs.lstatSync(p).isFile()) continue;
      fs.unlinkSync(p);
      removed.push(p);
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

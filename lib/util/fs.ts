/**
 * Small file-system helpers shared across lib/ and bench/: atomic writes, and the two path rules
 * every command that writes follows (docs/security.md, "Writers and temporary files"): an output
 * never replaces an input of the same command ({@link assertOutputsNotInputs}), and a relative path
 * read from a config file stays inside the config's folder ({@link confinedPath}).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempPathFor } from '../checkpoint/tempfiles';
import { ArgumentError } from '../errors';

export interface WriteAtomicOptions {
  /**
   * The temporary file to write first. Default: a hidden name in the target's directory that
   * records this process (`.<name>.tangent-<pid>-<hex>.tmp`, ../checkpoint/tempfiles: found and
   * removed after a kill). It must be on the same file system as `file`.
   */
  tempPath?: string;
  /** Maps an error of the write or the rename (not of creating the directory) to the one thrown. */
  wrapError?: (e: unknown) => unknown;
}

/**
 * Writes a file atomically: the data to a temporary file in the same directory, then a rename
 * over `file`. Creates the directory. On failure the temporary file is removed and the error
 * (mapped by `wrapError` when given) is thrown; `file` is then untouched.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, opts: WriteAtomicOptions = {}): void {
  const dir = path.dirname(path.resolve(file));
  fs.mkdirSync(dir, { recursive: true });
  const tmp = opts.tempPath ?? tempPathFor(path.join(dir, path.basename(file)));
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      /* best effort */
    }
    throw opts.wrapError ? opts.wrapError(e) : e;
  }
}

/** `p` resolved, with every symbolic link of its longest existing prefix resolved (the rest kept as written). */
export function realPathLoose(p: string): string {
  let head = path.resolve(p);
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(head), ...tail);
    } catch {
      const up = path.dirname(head);
      if (up === head) return path.join(head, ...tail);
      tail.unshift(path.basename(head));
      head = up;
    }
  }
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && !rel.startsWith(`..${path.sep}`) && rel !== '..' && !path.isAbsolute(rel);
}

function statQuiet(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

/** One path a command reads or writes, and the option or config key that named it. */
export interface NamedPath {
  /** `--out`, `output`, `models.1.model`: printed in the error. */
  key: string;
  path: string;
  /**
   * The path is a folder of files (a sharded checkpoint written into it, or read from it); paths
   * inside it count as the same. Default: an existing directory, or a `….index.json` (whose
   * folder holds the shards).
   */
  folder?: boolean;
}

/**
 * Throws ArgumentError, naming both keys and both paths, when an output is the same file as an
 * input — by resolved real path (symbolic links and `a/../a` resolved) or, when both exist, by
 * device and inode — or when one lies inside the other's folder (a sharded output directory that
 * holds an input, an output written among the files of a sharded input). Run before any work.
 */
export function assertOutputsNotInputs(outputs: readonly NamedPath[], inputs: readonly NamedPath[]): void {
  const norm = (n: NamedPath) => {
    const st = statQuiet(n.path);
    const real = realPathLoose(n.path);
    const folder = n.folder ?? (st?.isDirectory() === true || n.path.endsWith('.index.json'));
    return { ...n, st, real, dir: folder ? (n.path.endsWith('.index.json') ? path.dirname(real) : real) : undefined };
  };
  const ins = inputs.map(norm);
  for (const o of outputs.map(norm)) {
    for (const i of ins) {
      const same = o.real === i.real || (o.st !== undefined && i.st !== undefined && o.st.dev === i.st.dev && o.st.ino === i.st.ino);
      const why = same
        ? 'is the same file as'
        : o.dir !== undefined && (i.real === o.dir || isInside(i.real, o.dir))
          ? 'is a folder that holds'
          : i.dir !== undefined && (o.real === i.dir || isInside(o.real, i.dir))
            ? 'lies inside the folder of'
            : undefined;
      if (why)
        throw new ArgumentError(
          `${o.key} ${o.path} ${why} ${i.key} ${i.path}${o.real !== path.resolve(o.path) || i.real !== path.resolve(i.path) ? ` (${o.real}, ${i.real})` : ''}: the output would replace an input of the same command; write it to another path`,
        );
    }
  }
}

/**
 * `p` (a path read from the config file `configFile`, under `key`) resolved against the config's
 * folder `dir`. A relative path must stay inside that folder (`../x` is refused: configs are shared
 * with models, and must not name files elsewhere on the reader's disk); an absolute path is taken
 * as written. Checked on the path as written, not on symbolic links inside the folder (model hub
 * caches link snapshots to blobs stored beside them).
 */
export function confinedPath(dir: string, p: string, key: string, configFile: string): string {
  const resolved = path.resolve(dir, p);
  if (path.isAbsolute(p)) return resolved;
  const base = path.resolve(dir);
  if (resolved !== base && !isInside(resolved, base))
    throw new ArgumentError(`${configFile}: ${key}: ${p} resolves to ${resolved}, outside the config's folder ${base}; a relative path in a config must stay inside its folder (give an absolute path to read or write elsewhere)`);
  return resolved;
}

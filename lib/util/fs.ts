/** Small file-system helpers shared across lib/ and bench/. */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface WriteAtomicOptions {
  /**
   * The temporary file to write first. Default: a hidden name with a random suffix in the target's
   * directory (`.<name>.<hex>.tmp`). It must be on the same file system as `file`.
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
  const tmp = opts.tempPath ?? path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
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

/**
 * `tangent clean [DIR…]`: removes the temporary files that killed writes left behind
 * (`.<name>.tangent-<pid>-<12 hex>.tmp`, hundreds of MB for a model) in the folders named — by
 * default the cache folders and the current directory — when the process named in them no longer
 * runs. Each folder is read on its own (not below it); files of running processes and every other
 * file are left alone (../checkpoint/tempfiles).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { ArgumentError } from '../errors';
import { cacheFolders, findStaleTempFiles, type StaleTempFile } from '../checkpoint/tempfiles';
import { human } from './checkpoints';

export interface CleanReport {
  dryRun: boolean;
  folders: string[];
  removed: StaleTempFile[];
  bytes: number;
}

/** Removes (or with `dryRun`, lists) the stale temporaries in each of `dirs`; default: the cache folders and the cwd. */
export function cleanFolders(dirs: readonly string[] | undefined, dryRun = false): CleanReport {
  let folders: string[];
  if (dirs && dirs.length > 0) {
    folders = dirs.map((d) => {
      let st: fs.Stats;
      try {
        st = fs.statSync(d);
      } catch {
        throw new ArgumentError(`${d}: no such folder`);
      }
      if (!st.isDirectory()) throw new ArgumentError(`${d}: not a folder (give the folder that holds the temporary files)`);
      return path.resolve(d);
    });
  } else folders = [...cacheFolders(), process.cwd()].filter((d) => fs.existsSync(d));
  folders = [...new Set(folders)];
  const removed: StaleTempFile[] = [];
  for (const d of folders)
    for (const f of findStaleTempFiles(d)) {
      if (!dryRun) {
        try {
          if (!fs.lstatSync(f.path).isFile()) continue;
          fs.unlinkSync(f.path);
        } catch {
          continue; // removed meanwhile, or not ours to remove
        }
      }
      removed.push(f);
    }
  return { dryRun, folders, removed, bytes: removed.reduce((a, f) => a + f.bytes, 0) };
}

export function registerCleanCommand(program: Command): void {
  program
    .command('clean')
    .description('remove the temporary files that killed writes left behind (their process no longer runs), in the cache folders and the current directory or in the folders given')
    .usage('[DIR…] [--dry-run] [--json]')
    .argument('[dirs...]', 'folders to clean, each on its own, not below it (default: the cache folders and the current directory)')
    .option('--dry-run', 'list what would be removed; remove nothing')
    .option('--json', 'print the report as JSON')
    .action((dirs: string[], o: { dryRun?: boolean; json?: boolean }) => {
      const r = cleanFolders(dirs, o.dryRun === true);
      if (o.json) {
        console.log(JSON.stringify(r, null, 2));
        return;
      }
      const verb = r.dryRun ? 'would remove' : 'removed';
      for (const f of r.removed) console.log(`${verb} ${f.path} (${human(f.bytes)}, written for ${f.target} by pid ${f.pid}, which no longer runs)`);
      console.log(`${verb} ${r.removed.length} stale temporary file${r.removed.length === 1 ? '' : 's'}, ${human(r.bytes)}, in ${r.folders.join(', ') || '(no folder)'}`);
    });
}

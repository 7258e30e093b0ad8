/** Shared by the CLI tests: the compiled CLI, tiny PNG folders written with sharp, the TorchScript fixture. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FIXTURES } from './helpers';

export const CLI = path.resolve(__dirname, '..', 'dist', 'lib', 'cli.js');
/** 8×8 grey input → 4 logits (test/fixtures/gen_torchscript.py). */
export const TS = path.join(FIXTURES, 'tiny32.pt');
export const skipWithoutDist = fs.existsSync(CLI) ? false : 'dist/ not built (npm run build:ts)';

export const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

/** stdout parsed as JSON; throws with stderr when the command failed. */
export function json(r: ReturnType<typeof run>): Record<string, any> {
  if (r.status !== 0) throw new Error(`exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, any>;
}

/**
 * `classes` × `perClass` grey `size`×`size` PNGs under `root/class<c>/`: class c lights the band
 * [2c, 2c+2) of columns (or of rows), plus a little deterministic texture.
 */
export async function writePngs(root: string, o: { rows?: boolean; classes?: number; perClass?: number; size?: number } = {}): Promise<string> {
  const sharp = require('sharp') as (b: Buffer, o: object) => { toColourspace(s: string): { png(): { toFile(p: string): Promise<unknown> } } };
  const classes = o.classes ?? 4;
  const n = o.size ?? 8;
  const band = Math.max(1, Math.floor(n / classes));
  for (let c = 0; c < classes; c++) {
    fs.mkdirSync(path.join(root, `class${c}`), { recursive: true });
    for (let i = 0; i < (o.perClass ?? 12); i++) {
      const px = Buffer.alloc(n * n);
      for (let k = 0; k < n * n; k++) {
        const at = o.rows ? Math.floor(k / n) : k % n;
        px[k] = (at >= band * c && at < band * (c + 1) ? 220 : 30) + ((i * 13 + k * 7) % 25);
      }
      await sharp(px, { raw: { width: n, height: n, channels: 1 } }).toColourspace('b-w').png().toFile(path.join(root, `class${c}`, `${i}.png`));
    }
  }
  return root;
}

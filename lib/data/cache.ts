/**
 * Decode-once cache for the built-in datasets.
 *
 * A decoded task (8-bit pixels + labels for its train and test splits) is written to
 * `<cacheDir>/<name>-<version>.bin`, where `version` changes whenever anything that determines the
 * decoded bytes changes (decoder version, source files, generator settings). File layout:
 *
 *   0   8 bytes   magic "TGDSET01"
 *   8   uint32 LE length J of the JSON header
 *   12  J bytes   UTF-8 JSON header (CacheHeader), space-padded so the payload starts 8-aligned
 *   P   payload   for each split in header order: count*C*H*W uint8 pixels, then count int32 LE labels
 *
 * The header records the payload length and its CRC-32, so a truncated, padded or bit-flipped file
 * is detected; `readCache` then reports the problem and the caller rebuilds the file. Writes go to a
 * temporary file in the same directory, which is renamed into place, so readers never see a
 * half-written cache (rename is atomic on POSIX file systems). After a write, other versions of the
 * same task in the directory are deleted (`pruneStaleCaches`).
 *
 * The default cache directory is `$TANGENT_CACHE` if set, else the user cache directory (XDG:
 * `$XDG_CACHE_HOME/tangent-edit`, else `~/.cache/tangent-edit`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { writeFileAtomic } from '../util/fs';

const MAGIC = 'TGDSET01';

/** One split of a decoded task, pixels as raw 8-bit values (0 = background, 255 = full ink). */
export interface RawSplit {
  count: number;
  pixels: Uint8Array;
  labels: Int32Array;
}

/** A decoded task as stored in the cache. */
export interface RawTask {
  name: string;
  version: string;
  shape: [number, number, number];
  classes: number;
  classNames: string[];
  train: RawSplit;
  test: RawSplit;
}

interface CacheHeader {
  format: 1;
  name: string;
  version: string;
  shape: [number, number, number];
  classes: number;
  classNames: string[];
  splits: { name: 'train' | 'test'; count: number }[];
  payloadBytes: number;
  crc32: number;
}

let rootMemo: string | undefined;

/** Nearest ancestor of this module's directory that holds a package.json (else the cwd). */
export function projectRoot(): string {
  if (rootMemo !== undefined) return rootMemo;
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return (rootMemo = dir);
    const up = path.dirname(dir);
    if (up === dir) return (rootMemo = process.cwd());
    dir = up;
  }
}

/**
 * `$TANGENT_CACHE`, else the user cache directory: `$XDG_CACHE_HOME/tangent-edit`, else
 * `~/.cache/tangent-edit` (never inside an installed package's node_modules folder).
 */
export function defaultCacheDir(): string {
  const env = process.env['TANGENT_CACHE'];
  if (env && env.trim() !== '') return path.resolve(env);
  const xdg = process.env['XDG_CACHE_HOME'];
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'tangent-edit');
  return path.join(os.homedir(), '.cache', 'tangent-edit');
}

/** Path of the cache file of a task version. */
export function cacheFile(cacheDir: string, name: string, version: string): string {
  return path.join(cacheDir, `${name}-${version}.bin`);
}

function splitBytes(shape: [number, number, number], count: number): number {
  return count * shape[0] * shape[1] * shape[2] + 4 * count;
}

/** Serialises a task into the cache format (exported for tests). */
export function encodeCache(task: RawTask): Buffer {
  const per = task.shape[0] * task.shape[1] * task.shape[2];
  const parts: Buffer[] = [];
  for (const s of [task.train, task.test]) {
    if (s.pixels.length !== s.count * per || s.labels.length !== s.count) {
      throw new RangeError(`cache: split of '${task.name}' has inconsistent lengths`);
    }
    parts.push(Buffer.from(s.pixels.buffer, s.pixels.byteOffset, s.pixels.byteLength));
    const lab = Buffer.alloc(4 * s.count);
    for (let i = 0; i < s.count; i++) lab.writeInt32LE(s.labels[i]!, 4 * i);
    parts.push(lab);
  }
  const payload = Buffer.concat(parts);
  const header: CacheHeader = {
    format: 1,
    name: task.name,
    version: task.version,
    shape: task.shape,
    classes: task.classes,
    classNames: task.classNames,
    splits: [
      { name: 'train', count: task.train.count },
      { name: 'test', count: task.test.count },
    ],
    payloadBytes: payload.length,
    crc32: zlib.crc32(payload),
  };
  let json = JSON.stringify(header);
  const pad = (8 - ((12 + Buffer.byteLength(json)) % 8)) % 8;
  json += ' '.repeat(pad);
  const head = Buffer.alloc(12 + Buffer.byteLength(json));
  head.write(MAGIC, 0, 'latin1');
  head.writeUInt32LE(Buffer.byteLength(json), 8);
  head.write(json, 12, 'utf8');
  return Buffer.concat([head, payload]);
}

/** Outcome of reading a cache file: the task, or why it could not be used. */
export type CacheRead = { ok: true; task: RawTask } | { ok: false; missing: boolean; problem: string };

/** Parses a cache buffer; `expect` guards against a file renamed to the wrong task/version. */
export function decodeCache(buf: Buffer, file: string, expect?: { name: string; version: string }): CacheRead {
  const bad = (problem: string): CacheRead => ({ ok: false, missing: false, problem: `${file}: ${problem}` });
  if (buf.length < 12 || buf.toString('latin1', 0, 8) !== MAGIC) return bad('bad magic (not a tangent-edit dataset cache)');
  const jl = buf.readUInt32LE(8);
  if (12 + jl > buf.length) return bad(`truncated header (${jl} bytes declared, ${buf.length - 12} present)`);
  let h: CacheHeader;
  try {
    h = JSON.parse(buf.toString('utf8', 12, 12 + jl)) as CacheHeader;
  } catch (e) {
    return bad(`unreadable header JSON (${(e as Error).message})`);
  }
  if (h.format !== 1 || !Array.isArray(h.shape) || h.shape.length !== 3 || !Array.isArray(h.splits) || h.splits.length !== 2) {
    return bad('unsupported header');
  }
  if (expect && (h.name !== expect.name || h.version !== expect.version)) {
    return bad(`holds ${h.name}-${h.version}, expected ${expect.name}-${expect.version}`);
  }
  const start = 12 + jl;
  const expectedPayload = h.splits.reduce((a, s) => a + splitBytes(h.shape, s.count), 0);
  if (h.payloadBytes !== expectedPayload) return bad('header payload size disagrees with its split sizes');
  if (buf.length !== start + expectedPayload) {
    return bad(`length ${buf.length} bytes, expected ${start + expectedPayload} (truncated or padded)`);
  }
  const payload = buf.subarray(start);
  if (zlib.crc32(payload) !== h.crc32) return bad('payload checksum mismatch (corrupt file)');
  const per = h.shape[0] * h.shape[1] * h.shape[2];
  let off = 0;
  const splits: RawSplit[] = [];
  for (const s of h.splits) {
    const pixels = new Uint8Array(s.count * per);
    pixels.set(payload.subarray(off, off + s.count * per));
    off += s.count * per;
    const labels = new Int32Array(s.count);
    for (let i = 0; i < s.count; i++) labels[i] = payload.readInt32LE(off + 4 * i);
    off += 4 * s.count;
    splits.push({ count: s.count, pixels, labels });
  }
  return {
    ok: true,
    task: { name: h.name, version: h.version, shape: h.shape, classes: h.classes, classNames: h.classNames, train: splits[0]!, test: splits[1]! },
  };
}

/** Reads `file` if it exists. Never throws for a missing or corrupt file: see `CacheRead`. */
export function readCache(file: string, expect?: { name: string; version: string }): CacheRead {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { ok: false, missing: code === 'ENOENT', problem: `${file}: ${(e as Error).message}` };
  }
  return decodeCache(buf, file, expect);
}

/**
 * Deletes other versions of task `name` in `cacheDir` (files `<name>-<v|g><n>-<id>.bin`), and
 * temp files of interrupted writes older than an hour. Best effort: errors are ignored.
 */
export function pruneStaleCaches(cacheDir: string, name: string, keep: string): void {
  const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const stale = new RegExp(`^${esc}-[vg]\\d+-[0-9a-z.]+\\.bin$`);
  const temp = new RegExp(`^${esc}-[vg]\\d+-[0-9a-z.]+\\.bin\\.tmp-`);
  let entries: string[];
  try {
    entries = fs.readdirSync(cacheDir);
  } catch {
    return;
  }
  for (const f of entries) {
    const full = path.join(cacheDir, f);
    if (full === keep) continue;
    try {
      if (stale.test(f) || (temp.test(f) && Date.now() - fs.statSync(full).mtimeMs > 3600_000)) fs.rmSync(full, { force: true });
    } catch {
      /* ignore */
    }
  }
}

/**
 * Atomically writes `task` to `file` (temp file in the same directory + rename). The temporary is
 * named like every writer's (`.<name>.tangent-<pid>-<hex>.tmp`, ../checkpoint/tempfiles), so the
 * next write or `tangent clean` removes it once its process is gone; pruneStaleCaches still removes
 * the `<file>.tmp-…` names of earlier versions.
 */
export function writeCache(file: string, task: RawTask): void {
  writeFileAtomic(file, encodeCache(task));
}

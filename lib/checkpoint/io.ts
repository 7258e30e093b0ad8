/**
 * State dicts on disk, whatever the format: safetensors (single or sharded with
 * `model.safetensors.index.json`), PyTorch `torch.save` archives (.pt/.pth/.bin, read and written
 * in TypeScript by ./torch-pickle), TorchScript modules and torch.export programs (.pt2, ./pt2)
 * (their parameters and buffers, read as data: no reader here ever runs an archive's code; `Model.load` is the API that does).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StateDict } from '../model';
import { Tensor } from '../tensor';
import { assertRegularFile, CheckpointError, ioError, openForReading } from './errors';
import { typedView, type RawTensor } from './dtype';
import { quote } from './escape';
import { isTorchScriptArchive, readTorchCheckpoint, readTorchScriptTensors, writeTorchCheckpoint, type TorchReadOptions } from './torch-pickle';
import { ZipReader } from './zip';
import { isExportArchive, readExportTensors, type Pt2ReadOptions } from './pt2';
import {
  DEFAULT_INDEX_NAME,
  openSafetensors,
  openSharded,
  readSafetensorsAsync,
  writeSafetensorsAsync,
  writeShardedAsync,
  type ReadOptions,
  type TensorReader,
} from './safetensors';

export type CheckpointFormat = 'safetensors' | 'sharded' | 'torch' | 'torchscript' | 'export';

/**
 * Which reader a path needs: a directory by its index / model.safetensors, a file by its name
 * (`.safetensors`, `.index.json`), else by its first bytes (a zip is a torch.export program when
 * it holds `<root>/models/model.json`, TorchScript when its central directory holds code/ or
 * constants.pkl, a torch.save archive otherwise; a legacy pickle or tar
 * torch.save goes to the torch reader, which explains it). Only regular files and directories are
 * accepted; nothing is opened before that is known, and nothing blocks.
 */
export function detectFormat(file: string): CheckpointFormat {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new CheckpointError('ERR_NOT_FOUND', 'no such file or directory', { file, cause: e });
    throw ioError(file, 'stat file', e);
  }
  if (st.isDirectory()) {
    if (fs.existsSync(path.join(file, DEFAULT_INDEX_NAME))) return 'sharded';
    if (fs.existsSync(path.join(file, 'model.safetensors'))) return 'safetensors';
    throw new CheckpointError('ERR_NOT_FOUND', `directory holds neither ${DEFAULT_INDEX_NAME} nor model.safetensors`, { file });
  }
  if (!st.isFile()) assertRegularFile(file); // throws: FIFO, socket, device
  if (file.endsWith('.index.json')) return 'sharded';
  if (file.endsWith('.safetensors')) return 'safetensors';
  const fd = openForReading(file);
  let head: Buffer;
  try {
    head = Buffer.alloc(Math.min(st.size, 262));
    fs.readSync(fd, head, 0, head.length, 0);
  } catch (e) {
    throw ioError(file, 'read file', e);
  } finally {
    fs.closeSync(fd);
  }
  if (ZipReader.isZip(head)) return isExportArchive(file) ? 'export' : isTorchScriptArchive(file) ? 'torchscript' : 'torch';
  if (head.length >= 2 && head[0] === 0x80 && head[1]! <= 5) return 'torch'; // legacy torch.save: its reader says so
  if (head.length >= 262 && head.toString('latin1', 257, 262) === 'ustar') return 'torch'; // tar torch.save: likewise
  throw new CheckpointError('ERR_IO', 'unknown checkpoint format (expected .safetensors, a sharded index, or a torch.save / TorchScript / torch.export .pt2 zip)', { file });
}

/** A Tensor over a raw tensor's bytes (zero-copy when aligned). */
export function rawToTensor(raw: RawTensor): Tensor {
  return Tensor.from(typedView(raw) as never, raw.shape, raw.dtype);
}

/** The little-endian bytes of a CPU tensor (a view, no copy, for contiguous tensors). */
export function tensorToRaw(t: Tensor): RawTensor {
  const d = t.data();
  return { dtype: t.dtype, shape: t.shape, data: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) };
}

export interface LoadedCheckpoint {
  tensors: StateDict;
  metadata: Record<string, string>;
  format: CheckpointFormat;
}

/** Reads a whole state dict into CPU tensors. */
export async function loadStateDict(file: string, opts: ReadOptions & TorchReadOptions & Pt2ReadOptions = {}): Promise<LoadedCheckpoint> {
  const format = detectFormat(file);
  const wrap = (m: Map<string, RawTensor>): StateDict => new Map([...m].map(([n, r]) => [n, rawToTensor(r)]));
  switch (format) {
    case 'safetensors': {
      const f = fs.statSync(file).isDirectory() ? path.join(file, 'model.safetensors') : file;
      const c = await readSafetensorsAsync(f, opts);
      return { tensors: wrap(c.tensors), metadata: c.metadata, format };
    }
    case 'sharded': {
      const r = openSharded(file, opts);
      try {
        const raws = new Map<string, RawTensor>();
        for (const n of r.keys()) raws.set(n, await r.readAsync(n));
        const meta = Object.fromEntries(Object.entries(r.index.metadata).map(([k, v]) => [k, String(v)]));
        return { tensors: wrap(raws), metadata: meta, format };
      } finally {
        r.close();
      }
    }
    case 'torch': {
      const { tensors } = readTorchCheckpoint(file, opts);
      return { tensors: wrap(tensors), metadata: {}, format };
    }
    case 'torchscript': {
      // Read as data (never torch::jit::load, which runs the archive's code): see docs/security.md.
      const { tensors } = readTorchScriptTensors(file, opts);
      return { tensors: wrap(tensors), metadata: {}, format };
    }
    case 'export':
      // The program's parameters then buffers, as data (lib/checkpoint/pt2.ts).
      return { tensors: wrap(readExportTensors(file, opts)), metadata: {}, format };
  }
}

/** A lazily-read checkpoint: safetensors (single or sharded) stream; others are loaded whole. */
export async function openCheckpoint(file: string, opts: ReadOptions & TorchReadOptions = {}): Promise<TensorReader | LoadedCheckpoint> {
  const format = detectFormat(file);
  if (format === 'safetensors') return openSafetensors(fs.statSync(file).isDirectory() ? path.join(file, 'model.safetensors') : file, opts);
  if (format === 'sharded') return openSharded(file, opts);
  return loadStateDict(file, opts);
}

export interface SaveOptions {
  /** Default: from the extension (.safetensors, .pt/.pth/.bin), or 'sharded' for a directory path (no extension, or an existing directory). */
  format?: 'safetensors' | 'sharded' | 'torch';
  metadata?: Record<string, string>;
  /** Sharded output: bytes per shard (default 2 GB). */
  maxShardBytes?: number;
}

const SAVE_FORMATS = ['safetensors', 'sharded', 'torch'] as const;

/** The format a save writes: the one given (validated), else the one the path names; never a guess. */
export function saveFormatFor(file: string, format?: unknown): 'safetensors' | 'sharded' | 'torch' {
  if (format !== undefined) {
    if (!(SAVE_FORMATS as readonly unknown[]).includes(format)) {
      throw new CheckpointError('ERR_INVALID_ARGUMENT', `unknown format ${quote(String(format))} (expected ${SAVE_FORMATS.join(', ')})`, { file });
    }
    return format as 'safetensors' | 'sharded' | 'torch';
  }
  if (/\.(pt|pth|bin)$/.test(file)) return 'torch';
  if (file.endsWith('.safetensors')) return 'safetensors';
  let isDir = false;
  try {
    isDir = fs.statSync(file).isDirectory();
  } catch {
    /* does not exist yet */
  }
  const ext = path.extname(file);
  if (isDir || ext === '' || /[\/\\]$/.test(file)) return 'sharded';
  throw new CheckpointError('ERR_INVALID_ARGUMENT',
    `cannot tell the format from the extension ${quote(ext)}: name the file .safetensors, .pt/.pth/.bin, or a directory (sharded), or pass { format }`, { file });
}

/**
 * Writes a state dict atomically (temporary name, then rename); temporaries that killed writers
 * left next to the output are removed. The format is validated before anything is written.
 */
export async function saveStateDict(file: string, tensors: StateDict, opts: SaveOptions = {}): Promise<void> {
  const format = saveFormatFor(file, opts.format);
  const cpu: Array<[string, Tensor]> = [];
  for (const [n, t] of tensors) cpu.push([n, t.device === 'cpu' ? t : await t.to('cpu')]);
  const entries = cpu.map(([n, t]) => [n, tensorToRaw(t)] as [string, RawTensor]);
  if (format === 'torch') return writeTorchCheckpoint(file, entries);
  if (format === 'safetensors') await writeSafetensorsAsync(file, entries, opts.metadata);
  else await writeShardedAsync(file, entries, { maxShardBytes: opts.maxShardBytes, metadata: opts.metadata });
}

export { cleanStaleTempFiles } from './tempfiles';

/**
 * State dicts on disk, whatever the format: safetensors (single or sharded with
 * `model.safetensors.index.json`), PyTorch `torch.save` archives (.pt/.pth/.bin, read and written
 * by libtorch's own pickler) and TorchScript modules (their parameters and buffers).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Model, type StateDict } from '../model';
import { Tensor } from '../tensor';
import { CheckpointError, openForReading } from './errors';
import { typedView, type RawTensor } from './dtype';
import { readTorchCheckpoint, writeTorchCheckpoint } from './torch-pickle';
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

export type CheckpointFormat = 'safetensors' | 'sharded' | 'torch' | 'torchscript';

/** Which reader a path needs (by name, then by the zip's contents for .pt files). */
export function detectFormat(file: string): CheckpointFormat {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new CheckpointError('ERR_NOT_FOUND', 'no such file or directory', { file });
  }
  if (st.isDirectory()) {
    if (fs.existsSync(path.join(file, DEFAULT_INDEX_NAME))) return 'sharded';
    if (fs.existsSync(path.join(file, 'model.safetensors'))) return 'safetensors';
    throw new CheckpointError('ERR_NOT_FOUND', `directory holds neither ${DEFAULT_INDEX_NAME} nor model.safetensors`, { file });
  }
  if (file.endsWith('.index.json')) return 'sharded';
  if (file.endsWith('.safetensors')) return 'safetensors';
  // A zip: TorchScript archives hold code/ and constants.pkl; torch.save archives do not.
  const fd = openForReading(file);
  try {
    const head = Buffer.alloc(4);
    fs.readSync(fd, head, 0, 4, 0);
    if (head[0] !== 0x50 || head[1] !== 0x4b)
      throw new CheckpointError('ERR_IO', 'unknown checkpoint format (expected .safetensors, a sharded index, or a torch.save / TorchScript zip)', { file });
    const tailLen = Math.min(st.size, 1 << 20);
    const tail = Buffer.alloc(tailLen);
    fs.readSync(fd, tail, 0, tailLen, st.size - tailLen);
    return tail.includes('constants.pkl') || tail.includes('/code/') ? 'torchscript' : 'torch';
  } finally {
    fs.closeSync(fd);
  }
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
export async function loadStateDict(file: string, opts: ReadOptions = {}): Promise<LoadedCheckpoint> {
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
      const { tensors } = readTorchCheckpoint(file);
      return { tensors: wrap(tensors), metadata: {}, format };
    }
    case 'torchscript': {
      const m = await Model.load(file);
      // The tensors keep their storage alive after the module is released: no copies needed.
      const tensors: StateDict = new Map([...m.parameters(), ...m.buffers()]);
      m.dispose();
      return { tensors, metadata: {}, format };
    }
  }
}

/** A lazily-read checkpoint: safetensors (single or sharded) stream; others are loaded whole. */
export async function openCheckpoint(file: string, opts: ReadOptions = {}): Promise<TensorReader | LoadedCheckpoint> {
  const format = detectFormat(file);
  if (format === 'safetensors') return openSafetensors(fs.statSync(file).isDirectory() ? path.join(file, 'model.safetensors') : file, opts);
  if (format === 'sharded') return openSharded(file, opts);
  return loadStateDict(file, opts);
}

export interface SaveOptions {
  /** Default: from the extension (.safetensors, .pt/.pth/.bin) or 'sharded' for a directory. */
  format?: 'safetensors' | 'sharded' | 'torch';
  metadata?: Record<string, string>;
  /** Sharded output: bytes per shard (default 2 GB). */
  maxShardBytes?: number;
}

/** Writes a state dict atomically (temporary name, then rename). */
export async function saveStateDict(file: string, tensors: StateDict, opts: SaveOptions = {}): Promise<void> {
  const format = opts.format ?? (/\.(pt|pth|bin)$/.test(file) ? 'torch' : file.endsWith('.safetensors') ? 'safetensors' : 'sharded');
  const cpu: Array<[string, Tensor]> = [];
  for (const [n, t] of tensors) cpu.push([n, t.device === 'cpu' ? t : await t.to('cpu')]);
  const entries = cpu.map(([n, t]) => [n, tensorToRaw(t)] as [string, RawTensor]);
  if (format === 'torch') return writeTorchCheckpoint(file, entries);
  if (format === 'safetensors') await writeSafetensorsAsync(file, entries, opts.metadata);
  else await writeShardedAsync(file, entries, { maxShardBytes: opts.maxShardBytes, metadata: opts.metadata });
}

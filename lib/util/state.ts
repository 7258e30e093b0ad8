/**
 * State dicts ⇄ safetensors: RawTensor ⇄ Tensor conversion, atomic saves, content hashes, and
 * checks of a checkpoint against a model's architecture.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { CheckpointError } from '../checkpoint/errors';
import { rawToTensor, tensorToRaw } from '../checkpoint/io';
import { readSafetensors, writeSafetensors } from '../checkpoint/safetensors';
import type { Model, Params, StateDict } from '../model';
import { shapeStr, type Tensor } from '../tensor';

// RawTensor ⇄ Tensor conversion is ../checkpoint/io's; `fromRaw` / `toRaw` are kept as the names
// the train API has always exported.
export { rawToTensor as fromRaw, tensorToRaw as toRaw };

function entriesOf(p: Params): Array<[string, Tensor]> {
  return p instanceof Map ? [...p.entries()] : Object.entries(p);
}

/** Writes named tensors (in the given order) to a safetensors file, atomically (temp + rename). */
export function saveTensors(file: string, tensors: Params, metadata: Record<string, string> = {}): void {
  writeSafetensors(file, entriesOf(tensors).map(([n, t]) => [n, tensorToRaw(t)] as const), metadata);
}

/** Reads a safetensors file into Tensors (file order) and its metadata. */
export function loadTensors(file: string): { tensors: StateDict; metadata: Record<string, string> } {
  if (!fs.existsSync(file)) throw new CheckpointError('ERR_IO', 'no such file', { file });
  const { tensors, metadata } = readSafetensors(file);
  const out: StateDict = new Map();
  for (const [n, r] of tensors) out.set(n, rawToTensor(r));
  return { tensors: out, metadata };
}

/** sha256 of a file's bytes, hex. */
export function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** sha256 over named tensors (names, dtypes, shapes and bytes, in name order), hex. */
export function hashTensors(tensors: Params): string {
  const h = createHash('sha256');
  for (const [n, t] of entriesOf(tensors).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const r = tensorToRaw(t);
    h.update(`${n}\0${r.dtype}\0${r.shape.join(',')}\0`);
    h.update(r.data);
  }
  return h.digest('hex');
}

/**
 * Checks that `state` holds exactly the model's parameters with the model's shapes and dtypes;
 * a CheckpointError (ERR_KEY_MISMATCH) naming the file and the first difference otherwise.
 */
export function assertMatchesModel(state: ReadonlyMap<string, Tensor>, model: Model, file: string): void {
  const missing = [...model.spec.keys()].filter((n) => !state.has(n));
  const extra = [...state.keys()].filter((n) => !model.spec.has(n));
  if (missing.length || extra.length) {
    const parts = [];
    if (missing.length) parts.push(`missing ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ` (+${missing.length - 4} more)` : ''}`);
    if (extra.length) parts.push(`unexpected ${extra.slice(0, 4).join(', ')}${extra.length > 4 ? ` (+${extra.length - 4} more)` : ''}`);
    throw new CheckpointError('ERR_KEY_MISMATCH', `checkpoint does not match the ${model.kind} architecture: ${parts.join('; ')}`, { file });
  }
  for (const [n, s] of model.spec) {
    const t = state.get(n)!;
    if (t.shape.length !== s.shape.length || t.shape.some((v, i) => v !== s.shape[i]))
      throw new CheckpointError('ERR_KEY_MISMATCH', `shape ${shapeStr(t.shape)} differs from the model's ${shapeStr(s.shape)} (a different architecture?)`, { file, tensor: n });
    if (t.dtype !== s.dtype)
      throw new CheckpointError('ERR_KEY_MISMATCH', `dtype ${t.dtype} differs from the model's ${s.dtype}`, { file, tensor: n });
  }
}

/** Disposes every tensor of a state dict. */
export function disposeState(s: Params | undefined | null): void {
  if (!s) return;
  for (const [, t] of entriesOf(s)) t.dispose();
}

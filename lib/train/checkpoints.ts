/** Loading fine-tuned checkpoints against a backbone, and atomic writes of report files. */
import { CheckpointError } from '../checkpoint/errors';
import type { StateDict } from '../model';
import { writeFileAtomic as writeFileAtomicFs } from '../util/fs';
import { CHECKPOINT_FORMAT } from './finetune';
import { assertMatchesModel, loadTensors } from '../util/state';
import type { Backbone } from './pretrain';

export interface FinetunedCheckpoint {
  file: string;
  task: string;
  mode: 'standard' | 'linear';
  params: StateDict;
  complete: boolean;
  metadata: Record<string, string>;
}

/**
 * Loads a fine-tuned checkpoint θ_t and checks it against θ0: same architecture (names, shapes,
 * dtypes) and, where the checkpoint names its θ0 by content hash (always for linear ones, whose
 * meaning depends on the linearization point), the same θ0 file.
 */
export function loadFinetuned(file: string, bb: Backbone & { sha256?: string; theta0Sha256?: string }): FinetunedCheckpoint {
  const { tensors, metadata } = loadTensors(file);
  if (metadata.format !== CHECKPOINT_FORMAT)
    throw new CheckpointError('ERR_METADATA', `not a tangent-edit fine-tuning checkpoint (format ${JSON.stringify(metadata.format)})`, { file });
  assertMatchesModel(tensors, bb.model, file);
  const mode = metadata.mode;
  if (mode !== 'standard' && mode !== 'linear') throw new CheckpointError('ERR_METADATA', `unknown mode ${JSON.stringify(mode)}`, { file });
  const ref = metadata.theta0Sha256;
  if (mode === 'linear' && !ref) throw new CheckpointError('ERR_METADATA', 'linear checkpoint without the content hash of its θ0 (theta0Sha256)', { file });
  // The content hash of θ0's tensors when the backbone knows it (loadBackbone), else the given sha256.
  const mine = bb.theta0Sha256 ?? bb.sha256;
  if (ref && mine && ref !== mine)
    throw new CheckpointError(
      'ERR_METADATA',
      `was fine-tuned from a different θ0 (sha256 ${ref.slice(0, 12)}…, recorded path ${metadata.theta0Path ?? '?'}) than the one given (sha256 ${mine.slice(0, 12)}…)`,
      { file },
    );
  if (!metadata.task) throw new CheckpointError('ERR_METADATA', 'checkpoint does not name its task', { file });
  const params: StateDict = new Map([...bb.model.spec.keys()].map((n) => [n, tensors.get(n)!]));
  return { file, task: metadata.task, mode, params, complete: metadata.complete === 'true', metadata };
}

/**
 * Writes a text file atomically (../util/fs: a temp name in the same directory, then rename); a
 * failed write or rename throws CheckpointError ERR_IO.
 */
export function writeFileAtomic(file: string, text: string): void {
  writeFileAtomicFs(file, text, {
    wrapError: (e) => new CheckpointError('ERR_IO', `cannot write: ${(e as Error).message}`, { file, cause: e }),
  });
}

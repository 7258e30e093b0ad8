/**
 * The metadata every checkpoint written by tangent-edit carries (fine-tuned, merged, applied), so
 * that outputs compose: what function evaluates it (`mode`: standard → f, linear → f_lin at θ0),
 * which θ0 it belongs to (`theta0Sha256`: the content hash of θ0's tensors, `theta0Path` where it
 * was read), the model (`model`: a built-in config, or a TorchScript / torch.export file and its sha256), the
 * frozen heads (`heads`: file and sha256, absent when the model outputs logits) and the tasks
 * (`tasks`: task name → the `--data` spec it was trained on). All values are strings in the
 * safetensors header (JSON where structured).
 */
import { CheckpointError } from './checkpoint/errors';
import type { ModelConfig } from './model';

export const FINETUNED_FORMAT = 'tangent-edit/finetuned@1';
export const EDITED_FORMAT = 'tangent-edit/edited@1';
export const TASK_VECTOR_FORMAT = 'tangent-edit/task-vector@1';
export const EDIT_FORMATS = [FINETUNED_FORMAT, EDITED_FORMAT] as const;

export type ModelRef = ModelConfig | { arch: 'torchscript' | 'exported'; path: string; sha256: string; output?: number | string };

/** Whether a model reference names a file (TorchScript or a torch.export program) rather than a built-in config. */
export function isFileModel(m: { arch: string } | null | undefined): m is { arch: 'torchscript' | 'exported'; path: string; sha256: string; output?: number | string } {
  return m?.arch === 'torchscript' || m?.arch === 'exported';
}
export interface FileRef {
  path: string;
  sha256: string;
}

export interface EditMeta {
  format: string;
  mode: 'standard' | 'linear';
  theta0: FileRef | null;
  model: ModelRef | null;
  heads: FileRef | null;
  tasks: Record<string, string>;
}

function json<T>(s: string | undefined, key: string, file: string): T | null {
  if (s === undefined || s === '') return null;
  try {
    return JSON.parse(s) as T;
  } catch {
    throw new CheckpointError('ERR_METADATA', `metadata "${key}" is not JSON`, { file });
  }
}

/** The flat safetensors metadata of an EditMeta (plus `extra`). */
export function encodeEditMeta(m: EditMeta, extra: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = { ...extra, format: m.format, mode: m.mode, tasks: JSON.stringify(m.tasks) };
  if (m.theta0) {
    out.theta0Sha256 = m.theta0.sha256;
    out.theta0Path = m.theta0.path;
  }
  if (m.model) {
    out.model = JSON.stringify(m.model);
    if (!isFileModel(m.model)) out.config = JSON.stringify(m.model);
  }
  if (m.heads) out.heads = JSON.stringify(m.heads);
  const names = Object.keys(m.tasks);
  if (names.length === 1 && extra.task === undefined) out.task = names[0]!;
  return out;
}

/**
 * Reads the EditMeta of a checkpoint's metadata, or throws CheckpointError ERR_METADATA naming
 * the file and what it is instead (a merge of plain files, a task vector, θ0, …).
 */
export function decodeEditMeta(md: Record<string, string>, file: string): EditMeta {
  const format = md.format;
  if (!(EDIT_FORMATS as readonly string[]).includes(format ?? '')) {
    const what =
      format === TASK_VECTOR_FORMAT
        ? 'a task vector (τ = θ − θ0), not a checkpoint θ; give it as a task vector (tangent apply --task-vectors)'
        : format === 'tangent-edit/pretrained@1'
          ? 'a pre-trained θ0 (tangent pretrain), not a fine-tuned or edited checkpoint; give it as --pretrained'
          : format === 'tangent-edit/heads@1'
            ? 'a heads file; give it as --heads'
            : `not a checkpoint written by tangent finetune, merge or apply (metadata format ${JSON.stringify(format ?? null)}), so its mode, θ0 and tasks are unknown`;
    throw new CheckpointError('ERR_METADATA', what, { file });
  }
  const mode = md.mode;
  if (mode !== 'standard' && mode !== 'linear') throw new CheckpointError('ERR_METADATA', `unknown mode ${JSON.stringify(mode ?? null)} (expected standard or linear)`, { file });
  let tasks = json<Record<string, string> | string[]>(md.tasks, 'tasks', file) ?? {};
  if (Array.isArray(tasks)) tasks = Object.fromEntries(tasks.map((t) => [t, `builtin:${t}`]));
  if (md.task && !(md.task in tasks)) tasks[md.task] = `builtin:${md.task}`;
  const model = json<ModelRef>(md.model, 'model', file) ?? json<ModelConfig>(md.config, 'config', file);
  return {
    format: format!,
    mode,
    theta0: md.theta0Sha256 ? { path: md.theta0Path ?? '', sha256: md.theta0Sha256 } : null,
    model,
    heads: json<FileRef>(md.heads, 'heads', file),
    tasks,
  };
}

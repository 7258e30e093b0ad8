/**
 * The process's default group, as torch.distributed has one: set by the CLI when a verb runs as
 * one rank of a job (`--world-size`/`--rank`/`--master`, or `tangent launch`), read by `finetune`
 * and `Evaluator` when their `processGroup` option is left out (`null` opts out).
 */
import type { ProcessGroup } from './group';

let current: ProcessGroup | undefined;

export function setDefaultProcessGroup(pg: ProcessGroup | undefined): void {
  current = pg;
}

export function defaultProcessGroup(): ProcessGroup | undefined {
  return current && !current.closed ? current : undefined;
}

/** An explicit group, else (undefined) the default one; null: none. */
export function groupFor(explicit: ProcessGroup | null | undefined): ProcessGroup | undefined {
  return explicit === null ? undefined : (explicit ?? defaultProcessGroup());
}

/**
 * Progress reporting for long loops: a cli-progress bar with rate and ETA when stderr is a TTY,
 * plain periodic lines otherwise (CI logs), or nothing. Everything goes to stderr, so stdout
 * stays clean for `--json` output.
 */
import * as cliProgress from 'cli-progress';

export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';

export interface ProgressOptions {
  /** 'auto' (default): a bar on a TTY, lines otherwise. */
  mode?: ProgressMode;
  /** Seconds between plain lines (default 10). */
  intervalSec?: number;
  /** Where lines go (default: process.stderr). */
  write?: (line: string) => void;
  /** The unit's plural (default: unit + "s"; "MiB" for a byte count in MiB). */
  plural?: string;
}

export interface Progress {
  /** Sets the absolute count and an optional short status ("loss 0.41"). */
  update(value: number, status?: string): void;
  /** Ends the loop (prints a final line in line mode). */
  stop(status?: string): void;
}

function fmtTime(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  if (sec < 60) return `${sec.toFixed(0)}s`;
  const m = Math.floor(sec / 60);
  return `${m}m${String(Math.round(sec - 60 * m)).padStart(2, '0')}s`;
}

function resolveMode(o: ProgressOptions): Exclude<ProgressMode, 'auto'> {
  const mode = o.mode ?? 'auto';
  if (mode !== 'auto') return mode;
  return process.stderr.isTTY ? 'bar' : 'lines';
}

/** A progress reporter for `total` units named `label` ("finetune mnist/linear", unit "step"). */
export function progress(label: string, total: number, unit: string, o: ProgressOptions = {}): Progress {
  const mode = resolveMode(o);
  const t0 = performance.now();
  const units = o.plural ?? `${unit}s`;
  if (mode === 'none') return { update() {}, stop() {} };
  if (mode === 'bar') {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} |{bar}| {value}/{total} ${units} | {rate} ${unit}/s | ETA {eta_formatted} | {status}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { rate: '0.0', status: '' });
    let last = 0;
    return {
      update(value, status) {
        last = value;
        const s = (performance.now() - t0) / 1000;
        bar.update(value, { rate: (value / Math.max(s, 1e-9)).toFixed(1), status: status ?? '' });
      },
      stop(status) {
        bar.update(last, { status: status ?? '' });
        bar.stop();
      },
    };
  }
  const write = o.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const every = (o.intervalSec ?? 10) * 1000;
  let lastAt = t0;
  let lastValue = 0;
  const line = (value: number, status?: string): string => {
    const s = (performance.now() - t0) / 1000;
    const rate = value / Math.max(s, 1e-9);
    const eta = value >= total ? 0 : rate > 0 ? (total - value) / rate : Infinity;
    return `${label}: ${value}/${total} ${units} (${(total > 0 ? (100 * value) / total : 100).toFixed(0)}%), ${rate.toFixed(1)} ${unit}/s, elapsed ${fmtTime(s)}, ETA ${fmtTime(eta)}${status ? `, ${status}` : ''}`;
  };
  return {
    update(value, status) {
      lastValue = value;
      const now = performance.now();
      if (now - lastAt >= every) {
        lastAt = now;
        write(line(value, status));
      }
    },
    stop(status) {
      write(`${line(lastValue, status)} — done`);
    },
  };
}

/**
 * Benchmark: readSafetensors (read + full validation + zero-copy views) versus
 * a plain fs.readFileSync of the same file. The target is a ratio <= 1.2x, i.e.
 * parsing/validation overhead is small next to the I/O itself.
 *
 * The file mimics a ViT-B/32 image encoder (CLIP layout, ~88M float32
 * parameters in ~150 tensors, ~350 MB), scaled to the requested size.
 *
 * Standalone: node dist/bench/safetensors-load.js [bytes]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

import { LazyTensor, readSafetensors, writeSafetensorsAsync } from '../lib/checkpoint/safetensors';
import { medianOf } from './stats';

export interface SafetensorsLoadBenchResult {
  /** Median milliseconds of readSafetensors over 5 runs. */
  loadMs: number;
  /** Median milliseconds of fs.readFileSync of the same file over 5 runs. */
  readBytesMs: number;
  /** loadMs / readBytesMs (target <= 1.2). */
  ratio: number;
  /** Size of the file read. */
  fileBytes: number;
  /** Number of tensors in it. */
  tensors: number;
}

/** Tensor names and shapes of a CLIP ViT-B/32 visual encoder (87.8M parameters). */
export function vitB32Shapes(): Array<[string, number[]]> {
  const d = 768;
  const mlp = 3072;
  const shapes: Array<[string, number[]]> = [
    ['conv1.weight', [d, 3, 32, 32]],
    ['class_embedding', [d]],
    ['positional_embedding', [50, d]],
    ['ln_pre.weight', [d]],
    ['ln_pre.bias', [d]],
  ];
  for (let i = 0; i < 12; i++) {
    const p = `transformer.resblocks.${i}.`;
    shapes.push(
      [`${p}ln_1.weight`, [d]], [`${p}ln_1.bias`, [d]],
      [`${p}attn.in_proj_weight`, [3 * d, d]], [`${p}attn.in_proj_bias`, [3 * d]],
      [`${p}attn.out_proj.weight`, [d, d]], [`${p}attn.out_proj.bias`, [d]],
      [`${p}ln_2.weight`, [d]], [`${p}ln_2.bias`, [d]],
      [`${p}mlp.c_fc.weight`, [mlp, d]], [`${p}mlp.c_fc.bias`, [mlp]],
      [`${p}mlp.c_proj.weight`, [d, mlp]], [`${p}mlp.c_proj.bias`, [d]],
    );
  }
  shapes.push(['ln_post.weight', [d]], ['ln_post.bias', [d]], ['proj', [d, 512]]);
  return shapes;
}

let gcFn: (() => void) | null | undefined;

/**
 * Full GC between runs, so that hundreds of MB of garbage from the previous run
 * do not land on the next one's timing. Uses `global.gc` (--expose-gc) when
 * present, else enables it at runtime (the usual v8/vm trick); no-op if neither works.
 */
function gc(): void {
  if (gcFn === undefined) {
    gcFn = (globalThis as { gc?: () => void }).gc ?? null;
    if (gcFn === null) {
      try {
        v8.setFlagsFromString('--expose-gc');
        gcFn = vm.runInNewContext('gc') as () => void;
      } catch {
        gcFn = null;
      }
    }
  }
  gcFn?.();
}

/**
 * Writes a ~`bytes`-byte safetensors file of float32 tensors (ViT-B/32 layout,
 * scaled), then times readSafetensors and fs.readFileSync on it, alternating,
 * 5 runs each after one warm-up of each (so both read from the page cache).
 */
export async function benchSafetensorsLoad(opts: { bytes: number }): Promise<SafetensorsLoadBenchResult> {
  const base = vitB32Shapes();
  const baseBytes = base.reduce((s, [, shape]) => s + 4 * shape.reduce((a, b) => a * b, 1), 0);
  const scale = opts.bytes / baseBytes;
  const exact = Math.abs(scale - 1) < 0.01;
  const tensors: Array<[string, LazyTensor]> = base.map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const dims = exact ? shape : [Math.max(1, Math.round(n * scale))];
    const count = dims.reduce((a, b) => a * b, 1);
    return [name, {
      dtype: 'float32',
      shape: dims,
      load: () => {
        const a = new Float32Array(count);
        for (let i = 0; i < count; i++) a[i] = (i % 2000) * 1e-3 - 1;
        return new Uint8Array(a.buffer);
      },
    }];
  });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-safetensors-'));
  const file = path.join(dir, 'vit-b32.safetensors');
  try {
    await writeSafetensorsAsync(file, tensors, { format: 'pt' }, { fsync: false });
    const fileBytes = fs.statSync(file).size;

    const timeLoad = (): number => {
      const t0 = process.hrtime.bigint();
      const { tensors: loaded } = readSafetensors(file);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (loaded.size !== tensors.length) throw new Error('bench: wrong tensor count');
      return ms;
    };
    const timeRead = (): number => {
      const t0 = process.hrtime.bigint();
      const buf = fs.readFileSync(file);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (buf.length !== fileBytes) throw new Error('bench: short read');
      return ms;
    };

    timeRead(); // warm the page cache
    gc();
    timeLoad();
    gc();
    const load: number[] = [];
    const read: number[] = [];
    for (let i = 0; i < 5; i++) {
      read.push(timeRead());
      gc();
      load.push(timeLoad());
      gc();
    }
    const loadMs = medianOf(load);
    const readBytesMs = medianOf(read);
    return { loadMs, readBytesMs, ratio: loadMs / readBytesMs, fileBytes, tensors: tensors.length };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  const bytes = Number(process.argv[2] ?? 352_000_000);
  benchSafetensorsLoad({ bytes }).then(
    (r) => console.log(JSON.stringify(r)),
    (e: unknown) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}

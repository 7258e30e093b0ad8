/** `tangent merge` and `tangent inspect`. */
import * as path from 'node:path';
import type { Command } from 'commander';
import { detectFormat, loadStateDict } from './checkpoint/io';
import { DTYPE_BYTES, numel } from './checkpoint/dtype';
import { openSafetensors, openSharded, type TensorLayout } from './checkpoint/safetensors';

function human(bytes: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let b = bytes;
  while (b >= 1024 && i < u.length - 1) {
    b /= 1024;
    i++;
  }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export async function inspectCheckpoint(file: string): Promise<{ format: string; tensors: Array<{ name: string; dtype: string; shape: number[]; bytes: number }>; totals: { tensors: number; params: number; bytes: number; byDtype: Record<string, number> } }> {
  const format = detectFormat(file);
  let layout: Map<string, TensorLayout>;
  if (format === 'safetensors') {
    const f = openSafetensors(file.endsWith('.safetensors') ? file : path.join(file, 'model.safetensors'));
    layout = f.layout();
    f.close();
  } else if (format === 'sharded') {
    const f = openSharded(file);
    layout = f.layout();
    f.close();
  } else {
    const c = await loadStateDict(file);
    layout = new Map([...c.tensors].map(([n, t]) => [n, { dtype: t.dtype, shape: t.shape }]));
  }
  const tensors = [...layout].map(([name, l]) => ({ name, dtype: l.dtype, shape: [...l.shape], bytes: numel(l.shape) * DTYPE_BYTES[l.dtype] }));
  const byDtype: Record<string, number> = {};
  for (const t of tensors) byDtype[t.dtype] = (byDtype[t.dtype] ?? 0) + numel(t.shape);
  return {
    format,
    tensors,
    totals: { tensors: tensors.length, params: tensors.reduce((a, t) => a + numel(t.shape), 0), bytes: tensors.reduce((a, t) => a + t.bytes, 0), byDtype },
  };
}

export function registerMergeCommands(program: Command): void {
  program
    .command('merge')
    .description('merge checkpoints (task arithmetic, TIES, DARE, breadcrumbs), streaming tensor by tensor')
    .requiredOption('--config <file>', 'merge.yaml (see docs/merging.md)')
    .option('--json', 'print the report as JSON')
    .action(async (o: { config: string; json?: boolean }) => {
      const { loadMergeConfig, mergeCheckpoints } = await import('./merge');
      const cfg = await loadMergeConfig(o.config);
      const tty = process.stderr.isTTY && !o.json;
      const report = await mergeCheckpoints(cfg, {
        configDir: path.dirname(path.resolve(o.config)),
        onTensor: tty ? (name, i, n) => process.stderr.write(`\r[${i + 1}/${n}] ${name.slice(0, 60).padEnd(60)}`) : undefined,
      });
      if (tty) process.stderr.write('\n');
      if (o.json) console.log(JSON.stringify(report, null, 2));
      else console.log(`merged ${report.tensors} tensors (${human(report.bytesWritten)}) with ${cfg.method} into ${report.output} in ${(report.ms / 1000).toFixed(2)} s`);
    });

  program
    .command('inspect <file>')
    .description('names, shapes, dtypes and bytes of a checkpoint (safetensors, sharded, .pt, TorchScript)')
    .option('--json', 'print as JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const r = await inspectCheckpoint(file);
      if (o.json) {
        console.log(JSON.stringify(r, null, 2));
        return;
      }
      const w = Math.min(60, Math.max(4, ...r.tensors.map((t) => t.name.length)));
      console.log(`${file} (${r.format})`);
      console.log(`${'name'.padEnd(w)}  ${'dtype'.padEnd(8)}  ${'shape'.padEnd(20)}  bytes`);
      for (const t of r.tensors) console.log(`${t.name.padEnd(w)}  ${t.dtype.padEnd(8)}  ${`[${t.shape.join(', ')}]`.padEnd(20)}  ${human(t.bytes)}`);
      const dt = Object.entries(r.totals.byDtype).map(([d, n]) => `${d}: ${n.toLocaleString('en-US')}`).join(', ');
      console.log(`total: ${r.totals.tensors} tensors, ${r.totals.params.toLocaleString('en-US')} values (${dt}), ${human(r.totals.bytes)}`);
    });
}

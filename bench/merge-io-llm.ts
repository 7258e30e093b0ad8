/**
 * The LLM case of `--only mergeio` (issue 26): base + 2 fine-tuned checkpoints in the Llama
 * layout, bf16, as Hugging Face sharded folders (model-0000i-of-0000N.safetensors +
 * model.safetensors.index.json + config.json; written by bench/make_llm_layout.py with the peer's
 * PyTorch), merged into a sharded bf16 folder with 1 GiB shards, for task arithmetic, TIES and
 * SLERP. `tangent merge --config mergekit.yml` (the CLI, a whole process) against a plain Python
 * per-tensor loop over memory-mapped shards (bench/merge_reference_llm.py, a whole process too:
 * its time includes `import torch`), alternated, page cache warm, each under GNU time for the
 * peak RSS; and the I/O floor (every input byte read, the output's size written and fsync'ed).
 * Targets: ours ≤ 0.8× the Python loop's time, ours' peak RSS ≤ 1 GiB. Both outputs are compared
 * over every tensor.
 *
 * Size: TANGENT_BENCH_LLM picks the layout, `0.48b` (default: vocab 32000, hidden 1024,
 * intermediate 2816, 32 layers = 476.6M parameters, 909 MiB per model) or `1.4b` (the
 * "several GiB" case: hidden 2048, intermediate 5632, 24 layers = 1.36B parameters, 2.5 GiB per
 * model: 7.6 GiB of inputs, about 20 GiB of disk with the outputs and floor file), or
 * `VOCAB,HIDDEN,INTERMEDIATE,LAYERS`; TANGENT_BENCH_LLM_SHARD the input shard size (default
 * 512MiB, so the 0.48 B inputs really are split across two shards; the output's 1 GiB shard then
 * holds all of it). E.g. `TANGENT_BENCH_LLM=1.4b npm run bench -- --only mergeio`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseByteSize } from '../lib/merge';
import type { BenchContext } from './run';
import { medianOf, peerPython } from './stats';

const PY = peerPython();
const BENCH = path.resolve(__dirname, '..', '..', 'bench');
const CLI = path.resolve(__dirname, '..', 'lib', 'cli.js'); // package.json "bin": tangent → dist/lib/cli.js
const GNU_TIME = '/usr/bin/time';
const OUTPUT_SHARD = 2 ** 30;
const STEP_TIMEOUT_MS = 600_000;

const LAYOUTS: Record<string, [number, number, number, number]> = {
  '0.48b': [32000, 1024, 2816, 32],
  '1.4b': [32000, 2048, 5632, 24],
};

const METHODS = {
  task_arithmetic: {
    models: 2,
    yaml: (m: string[]) => `merge_method: task_arithmetic\nbase_model: ${m[0]}\nmodels:\n${m.slice(1).map((x) => `  - model: ${x}\n    parameters: {weight: 1.0}\n`).join('')}parameters: {lambda: 0.5}\n`,
    peer: { lambda: 0.5, weights: [1, 1] },
    label: 'λ 0.5, weights 1',
  },
  ties: {
    models: 2,
    yaml: (m: string[]) => `merge_method: ties\nbase_model: ${m[0]}\nmodels:\n${m.slice(1).map((x) => `  - model: ${x}\n    parameters: {weight: 1.0, density: 0.5}\n`).join('')}`,
    peer: { lambda: 1, weights: [1, 1], density: [0.5, 0.5] },
    label: 'density 0.5, weights 1, λ 1',
  },
  slerp: {
    models: 1,
    yaml: (m: string[]) => `merge_method: slerp\nbase_model: ${m[0]}\nmodels:\n  - model: ${m[1]}\nparameters: {t: 0.5}\n`,
    peer: { t: 0.5 },
    label: 't 0.5, one model',
  },
} as const;
type Method = keyof typeof METHODS;

function layoutFromEnv(): { name: string; dims: [number, number, number, number] } {
  const v = process.env['TANGENT_BENCH_LLM'] ?? '0.48b';
  if (LAYOUTS[v]) return { name: v, dims: LAYOUTS[v]! };
  const d = v.split(',').map(Number);
  if (d.length !== 4 || d.some((x) => !Number.isSafeInteger(x) || x < 1)) throw new Error(`TANGENT_BENCH_LLM must be 0.48b, 1.4b or VOCAB,HIDDEN,INTERMEDIATE,LAYERS, got ${JSON.stringify(v)}`);
  return { name: v, dims: d as [number, number, number, number] };
}

/** Every shard file of a sharded folder (from its index). */
function shardFiles(dir: string): string[] {
  const idx = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  return [...new Set(Object.values(idx.weight_map))].map((s) => path.join(dir, s));
}

function readAll(files: string[], buf: Buffer): void {
  for (const f of files) {
    const fd = fs.openSync(f, 'r');
    while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
    fs.closeSync(fd);
  }
}

/** The I/O floor: reading every input byte, then writing + fsync'ing `bytes` (the output's size) in files of `shardBytes`. */
export function ioFloor(inputs: string[], outDir: string, bytes: number, shardBytes = OUTPUT_SHARD): number {
  const buf = Buffer.allocUnsafe(1 << 24);
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir);
  const s = performance.now();
  readAll(inputs, buf);
  for (let i = 0, left = bytes; left > 0; i++) {
    const fd = fs.openSync(path.join(outDir, `shard-${i}.bin`), 'w');
    for (let n = Math.min(left, shardBytes); n > 0; n -= buf.length) fs.writeSync(fd, buf, 0, Math.min(n, buf.length));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    left -= Math.min(left, shardBytes);
  }
  const ms = performance.now() - s;
  fs.rmSync(outDir, { recursive: true, force: true });
  return ms;
}

/** Runs a whole process under GNU time: wall ms (measured here) and peak RSS in KiB (null without GNU time). */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv, rssFile: string, gnuTime: boolean, what: string): { ms: number; rssKiB: number | null; stdout: string } {
  const s = performance.now();
  const p = gnuTime
    ? spawnSync(GNU_TIME, ['-f', '%M', '-o', rssFile, cmd, ...args], { encoding: 'utf8', env, timeout: STEP_TIMEOUT_MS, maxBuffer: 1 << 26 })
    : spawnSync(cmd, args, { encoding: 'utf8', env, timeout: STEP_TIMEOUT_MS, maxBuffer: 1 << 26 });
  const ms = performance.now() - s;
  if (p.status !== 0) throw new Error(`${what} failed (status ${p.status}${p.signal ? `, signal ${p.signal}` : ''}${p.error ? `, ${p.error.message}` : ''}):\n${p.stdout}${p.stderr}`);
  const rssKiB = gnuTime ? Number(fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop()) : null;
  return { ms, rssKiB: rssKiB !== null && Number.isFinite(rssKiB) ? rssKiB : null, stdout: p.stdout };
}

const sec = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const mib = (kib: number | null): string => (kib === null ? 'n/a' : kib >= 2 ** 20 ? `${(kib / 2 ** 20).toFixed(2)} GiB` : `${(kib / 1024).toFixed(0)} MiB`);

export async function benchMergeIoLlm(ctx: BenchContext, tmp: string): Promise<Record<string, unknown> | null> {
  if (spawnSync(PY, ['-c', 'import torch, safetensors'], { stdio: 'ignore' }).status !== 0) {
    ctx.log(`LLM layout case skipped: ${PY} lacks torch or safetensors (the inputs are written and the peer run with them)`);
    return null;
  }
  const { name: layoutName, dims } = layoutFromEnv();
  const [vocab, hidden, intermediate, layers] = dims;
  const shardEnv = process.env['TANGENT_BENCH_LLM_SHARD'] ?? '512MiB';
  const inputShard = parseByteSize(shardEnv);
  if (Number.isNaN(inputShard)) throw new Error(`TANGENT_BENCH_LLM_SHARD must be a size like 512MiB, got ${JSON.stringify(shardEnv)}`);
  const reps = ctx.quick ? 1 : 3;
  const gnuTime = spawnSync(GNU_TIME, ['-f', '%M', '-o', path.join(tmp, 'probe.rss'), 'true'], { stdio: 'ignore' }).status === 0;
  const root = path.join(tmp, 'llm');
  fs.mkdirSync(root);
  const threadsEnv = { TANGENT_BENCH_THREADS: String(ctx.threads) };

  const g0 = performance.now();
  const gen = spawnSync(PY, [path.join(BENCH, 'make_llm_layout.py'), root, '--vocab', String(vocab), '--hidden', String(hidden), '--intermediate', String(intermediate), '--layers', String(layers), '--models', '3', '--shard-bytes', String(inputShard)], {
    encoding: 'utf8',
    env: { ...process.env, ...threadsEnv },
    timeout: STEP_TIMEOUT_MS,
  });
  if (gen.status !== 0) throw new Error(`make_llm_layout.py failed: ${gen.stderr}`);
  const generateMs = performance.now() - g0;
  const info = JSON.parse(gen.stdout) as { params: number; bytesPerModel: number; shards: number; tensors: number };
  const models = ['m0', 'm1', 'm2'];
  const files = Object.fromEntries(models.map((m) => [m, shardFiles(path.join(root, m))])) as Record<string, string[]>;
  readAll(Object.values(files).flat(), Buffer.allocUnsafe(1 << 24)); // page cache warm

  ctx.log(
    `LLM layout (Llama: vocab ${vocab}, hidden ${hidden}, intermediate ${intermediate}, ${layers} layers${layoutName in LAYOUTS ? `, preset ${layoutName}` : ''}): ${(info.params / 1e9).toFixed(3)} B params, ${info.tensors} tensors, ` +
      `${(info.bytesPerModel / 2 ** 20).toFixed(0)} MiB bf16 per model in ${info.shards} shard${info.shards === 1 ? '' : 's'} of ≤ ${(inputShard / 2 ** 20).toFixed(0)} MiB + model.safetensors.index.json; ` +
      `base + 2 fine-tuned written in ${sec(generateMs)} (bench/make_llm_layout.py)`,
  );
  ctx.log(
    `  merged into a sharded bf16 folder (1 GiB shards), whole processes alternated, page cache warm, ${ctx.threads} threads ` +
      `(tangent merge --threads ${ctx.threads}; Python: torch.set_num_threads(${ctx.threads}), OMP_WAIT_POLICY=PASSIVE), median of ${reps}${gnuTime ? '' : ' (no GNU time at /usr/bin/time: peak RSS not measured)'}`,
  );

  const results: Record<string, unknown> = {};
  for (const method of Object.keys(METHODS) as Method[]) {
    const def = METHODS[method];
    const used = models.slice(0, 1 + def.models);
    const inputs = used.flatMap((m) => files[m]!);
    const yml = path.join(root, `${method}.yml`);
    fs.writeFileSync(yml, `${def.yaml(used)}dtype: bfloat16\nshard_size: 1GiB\n`);
    const oursOut = path.join(root, `ours-${method}`);
    const peerOut = path.join(root, `peer-${method}`);
    const runs = { ours: [] as number[], peer: [] as number[], peerInProcess: [] as number[], peerImport: [] as number[], floor: [] as number[] };
    const rss = { ours: [] as Array<number | null>, peer: [] as Array<number | null> };
    let oursShards: number | null = null;
    for (let r = 0; r < reps; r++) {
      fs.rmSync(oursOut, { recursive: true, force: true });
      const o = timed(
        process.execPath,
        [CLI, 'merge', '--config', yml, '--output', oursOut, '--progress', 'none', '--threads', String(ctx.threads), '--json'],
        process.env,
        path.join(root, 'ours.rss'),
        gnuTime,
        `tangent merge --config ${method}.yml`,
      );
      runs.ours.push(o.ms);
      rss.ours.push(o.rssKiB);
      try {
        oursShards = (JSON.parse(o.stdout) as { shards?: string[] }).shards?.length ?? null;
      } catch {
        oursShards = null;
      }
      fs.rmSync(peerOut, { recursive: true, force: true });
      const p = timed(
        PY,
        [path.join(BENCH, 'merge_reference_llm.py'), 'merge', method, peerOut, String(OUTPUT_SHARD), JSON.stringify(def.peer), ...used.map((m) => path.join(root, m))],
        { ...process.env, OMP_WAIT_POLICY: 'PASSIVE', ...threadsEnv },
        path.join(root, 'peer.rss'),
        gnuTime,
        `merge_reference_llm.py ${method}`,
      );
      const pj = JSON.parse(p.stdout) as { ms: number; importMs: number; maxRssKiB: number };
      runs.peer.push(p.ms);
      runs.peerInProcess.push(pj.ms);
      runs.peerImport.push(pj.importMs);
      rss.peer.push(p.rssKiB ?? pj.maxRssKiB);
      runs.floor.push(ioFloor(inputs, path.join(root, 'floor'), info.bytesPerModel));
    }
    const cmp = spawnSync(PY, [path.join(BENCH, 'merge_reference_llm.py'), 'compare', oursOut, peerOut], { encoding: 'utf8', env: { ...process.env, ...threadsEnv }, timeout: STEP_TIMEOUT_MS });
    if (cmp.status !== 0) throw new Error(`comparing the outputs failed: ${cmp.stderr}`);
    const diff = JSON.parse(cmp.stdout) as { maxAbsDiff: number; tensor: string; maxRelToTensorMax: number; differing: number; numel: number };
    fs.rmSync(oursOut, { recursive: true, force: true });
    fs.rmSync(peerOut, { recursive: true, force: true });

    const med = { ours: medianOf(runs.ours), peer: medianOf(runs.peer), floor: medianOf(runs.floor) };
    const peak = (xs: Array<number | null>) => (xs.some((x) => x === null) ? null : Math.max(...(xs as number[])));
    const peakKiB = { ours: peak(rss.ours), peer: peak(rss.peer) };
    const ratio = med.ours / med.peer;
    ctx.log(`  ${method} (${def.label})`);
    ctx.log(`    tangent merge --config (CLI process)                ${sec(med.ours)}  peak RSS ${mib(peakKiB.ours)} (target ≤ 1 GiB${peakKiB.ours === null ? '' : peakKiB.ours <= 2 ** 20 ? ': met' : ': missed'}); ${(med.ours / med.floor).toFixed(2)}× the I/O floor`);
    ctx.log(`    Python per-tensor loop over mmap'd shards (process) ${sec(med.peer)}  peak RSS ${mib(peakKiB.peer)} (import torch ${sec(medianOf(runs.peerImport))}, merge ${sec(medianOf(runs.peerInProcess))})`);
    ctx.log(`    → ours ${ratio.toFixed(2)}× its time (target ≤ 0.8×${ratio <= 0.8 ? ': met' : ': missed'})`);
    ctx.log(`    I/O floor: read ${used.length} inputs (${inputs.length} shards), write + fsync ${(info.bytesPerModel / 2 ** 20).toFixed(0)} MiB  ${sec(med.floor)}`);
    ctx.log(`    outputs (bf16) differ by at most ${diff.maxAbsDiff.toExponential(2)} (in ${diff.tensor}; ${diff.differing} of ${diff.numel} entries differ${method === 'ties' ? ': top-k ties in |τ| broken differently — ours by lower index, torch.topk unspecified' : ''})`);
    results[method] = {
      yaml: fs.readFileSync(yml, 'utf8'),
      peerParams: def.peer,
      reps,
      runsMs: runs,
      peakRssKiB: rss,
      medianMs: med,
      maxPeakRssBytes: { ours: peakKiB.ours === null ? null : peakKiB.ours * 1024, peer: peakKiB.peer === null ? null : peakKiB.peer * 1024 },
      oursOverPeer: ratio,
      oursOverFloor: med.ours / med.floor,
      targets: { oursOverPeer: 0.8, rssBytes: 2 ** 30, timeMet: ratio <= 0.8, rssMet: peakKiB.ours === null ? null : peakKiB.ours <= 2 ** 20 },
      outputShards: oursShards,
      diff,
    };
  }
  return {
    layout: { preset: layoutName in LAYOUTS ? layoutName : null, vocab, hidden, intermediate, layers },
    params: info.params,
    tensors: info.tensors,
    shards: info.shards,
    inputShardBytes: inputShard,
    outputShardBytes: OUTPUT_SHARD,
    bytesPerModel: info.bytesPerModel,
    dtype: 'bfloat16',
    generateMs,
    threads: ctx.threads,
    reps,
    peakRssFrom: gnuTime ? 'GNU time %M' : 'peer: getrusage(RUSAGE_SELF); ours: not measured',
    methods: results,
  };
}

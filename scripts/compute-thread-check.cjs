#!/usr/bin/env node
// The built-in ViT of bench/core.ts (batch 128, 2 threads): forward, standard and linearized train
// steps, with the compute thread (default) and without it (TANGENT_COMPUTE_THREAD=0: the work on
// libuv's pool threads), each in its own process, alternating, 3 rounds of 5 timed calls after a
// warm-up. The README's figures for the compute thread come from this script:
//   node scripts/compute-thread-check.cjs
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const child = `
const t = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'lib', 'index.js'))});
(async () => {
  t.setNumThreads(2);
  const m = t.Model.create({ arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 }, { seed: 0 });
  const x = t.Tensor.from(Float32Array.from({ length: 128 * 784 }, (_, i) => Math.sin(i)), [128, 1, 28, 28]);
  const y = t.Tensor.fromLabels(Array.from({ length: 128 }, (_, i) => i % 10));
  const lin = m.linearize();
  const out = {};
  for (const [name, f] of [['forward', () => m.forward(x)], ['standardStep', () => m.lossAndGrad(x, y)], ['linearizedStep', () => lin.lossAndGrad(x, y)]]) {
    await f();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 5; i++) await f();
    out[name] = Number(process.hrtime.bigint() - t0) / 5e6;
  }
  out.libtorch = t.runtimeInfo().libtorch?.version;
  console.log(JSON.stringify(out));
})();`;
const runs = { computeThread: [], pool: [] };
for (let round = 0; round < 3; round++)
  for (const [k, env] of [['computeThread', {}], ['pool', { TANGENT_COMPUTE_THREAD: '0' }]]) {
    const r = spawnSync(process.execPath, ['-e', child], { encoding: 'utf8', env: { ...process.env, ...env } });
    if (r.status !== 0) throw new Error(r.stderr);
    runs[k].push(JSON.parse(r.stdout.trim().split('\n').pop()));
  }
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`libtorch ${runs.computeThread[0].libtorch}, 2 threads, median of 3 rounds (ms): compute thread / libuv pool`);
for (const op of ['forward', 'standardStep', 'linearizedStep']) {
  const a = med(runs.computeThread.map((r) => r[op])), b = med(runs.pool.map((r) => r[op]));
  console.log(`  ${op.padEnd(15)} ${a.toFixed(1).padStart(8)} / ${b.toFixed(1).padStart(8)}  (${(b / a).toFixed(2)}x)`);
}

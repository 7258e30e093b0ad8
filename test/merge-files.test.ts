// mergeCheckpoints file to file (the native path: memory-mapped reads of the validated readers'
// descriptors, fused kernel, positioned writes): bit-identical to the in-memory merge over
// tensors of several chunks, odd lengths and every float dtype; a plain-TS float64 reference;
// progress per tensor; a read past the end of an input, or an input truncated while it is merged
// (SIGBUS under the mapping), is a CheckpointError naming the file, and the process lives on.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { CheckpointError, loadStateDict, mergeCheckpoints, mergeStateDicts, parseMergeConfig, saveStateDict, Tensor, type StateDict } from '../lib';
import { openSafetensors } from '../lib/checkpoint/safetensors';
import { native, type NativeMergeSpec } from '../lib/binding';
import { randn, tmpDir } from './helpers';

const SHAPES: Array<[string, number[]]> = [['big', [3, 70001]], ['odd', [65537]], ['small', [7]], ['empty', [0, 4]]];

const bytes = (x: Tensor) => {
  const d = x.data() as unknown as ArrayBufferView;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
};
const f64 = async (x: Tensor) => Array.from((await x.to('float64')).data() as Float64Array);

async function model(seed: number, dtype: 'float32' | 'float64' | 'float16' | 'bfloat16'): Promise<StateDict> {
  const sd: StateDict = new Map();
  for (const [i, [n, s]] of SHAPES.entries()) {
    const v = randn(s.reduce((a, b) => a * b, 1), seed * 10 + i);
    sd.set(n, await Tensor.from(Float64Array.from(v), s).to(dtype));
  }
  sd.set('steps', Tensor.from(BigInt64Array.from([BigInt(seed)]), [1]));
  return sd;
}

for (const [dtype, compute, outDtype] of [
  ['float32', 'float32', undefined],
  ['float32', 'float64', 'float16'],
  ['bfloat16', 'float32', 'float32'],
  ['float64', 'float64', undefined],
] as const) {
  t.test(`task arithmetic ${dtype} (compute ${compute}, out ${outDtype ?? 'same'}): file to file = in memory, bit for bit`, async (t) => {
    const dir = tmpDir(t);
    const sds = await Promise.all([0, 1, 2, 3].map((k) => model(k, dtype)));
    for (const [k, sd] of sds.entries()) await saveStateDict(path.join(dir, `m${k}.safetensors`), sd);
    const cfg = parseMergeConfig({
      base_model: 'm0.safetensors',
      models: [1, 2, 3].map((k) => ({ model: `m${k}.safetensors`, weight: [1, 0.5, -0.25][k - 1] })),
      parameters: { lambda: 0.7 },
      dtype: compute,
      out_dtype: outDtype,
      output: 'out.safetensors',
    });
    const seen: string[] = [];
    const r = await mergeCheckpoints(cfg, { configDir: dir, onTensor: (n) => seen.push(n) });
    t.same(seen, ['big', 'odd', 'small', 'empty', 'steps'], 'progress: every tensor once, in order');
    const got = (await loadStateDict(path.join(dir, 'out.safetensors'))).tensors;
    const want = await mergeStateDicts(sds[0]!, sds.slice(1), { weights: [1, 0.5, -0.25], lambda: 0.7, compute, outDtype });
    for (const [n, w] of want) {
      const g = got.get(n)!;
      t.equal(g.dtype, w.dtype, `${n}: dtype ${w.dtype}`);
      t.same(g.shape, w.shape, `${n}: shape`);
      t.ok(bytes(g).equals(bytes(w)), `${n}: bytes identical to the in-memory merge`);
    }
    t.equal(r.bytesWritten, [...want.values()].reduce((a, w) => a + w.nbytes, 0), 'bytesWritten');
    // Against plain float64 arithmetic, θ0 + λ Σ w_k (θ_k − θ0), at the output dtype's precision.
    const [b, x1, x2, x3] = await Promise.all(sds.map((sd) => f64(sd.get('odd')!)));
    const o = await f64(got.get('odd')!);
    let worst = 0;
    for (let i = 0; i < b!.length; i++) {
      const ref = b![i]! + 0.7 * (1 * (x1![i]! - b![i]!) + 0.5 * (x2![i]! - b![i]!) - 0.25 * (x3![i]! - b![i]!));
      worst = Math.max(worst, Math.abs(o[i]! - ref) / (1 + Math.abs(ref)));
    }
    const tol = { float32: 1e-6, float64: 1e-12, float16: 2e-3, bfloat16: 1e-2 }[outDtype ?? dtype];
    t.ok(worst < tol, `odd: within ${tol} of the float64 reference (${worst.toExponential(2)})`);
    t.same(Array.from(got.get('steps')!.data() as BigInt64Array), [0n], 'integer tensor: the base');
  });
}

t.test('a read past the end of an input is a CheckpointError naming the file and tensor', async (t) => {
  const dir = tmpDir(t);
  const f = path.join(dir, 'short.safetensors');
  await saveStateDict(f, new Map([['w', Tensor.from(new Float32Array(100), [100])]]));
  const r = openSafetensors(f);
  t.teardown(() => r.close());
  const loc = r.locate('w');
  const outPath = path.join(dir, 'out.bin');
  const fd = fs.openSync(outPath, 'w');
  t.teardown(() => fs.closeSync(fd));
  const item = { name: 'w', dtype: 'float32', out: 'float32', shape: [100], inputs: [[0, loc.offset + 8], [0, loc.offset + 8]] as Array<[number, number]>, outOffset: 0 };
  const spec: NativeMergeSpec = { method: 'task_arithmetic', weights: [1], lambda: 1, election: 'weighted', seed: 0, compute: 'float32', out: 'float32' };
  await t.rejects(native().mergeFiles([{ fd: loc.fd, path: f }], { fd, path: outPath }, [item], [spec], true), CheckpointError);
  await t.rejects(
    native().mergeFiles([{ fd: loc.fd, path: f }], { fd, path: outPath }, [item], [spec], true),
    { message: /short\.safetensors: tensor 'w': unexpected end of file at byte \d+/ },
  );
  const inMiddle = { ...item, shape: [100, 1], inputs: [[5, 0], [0, 0]] as Array<[number, number]> };
  await t.rejects(native().mergeFiles([{ fd: loc.fd, path: f }], { fd, path: outPath }, [inMiddle], [spec], true), { name: 'ArgumentError', message: /input file 5 of 1/ });
});

t.test('an input truncated while it is being merged is a CheckpointError, not a SIGBUS', async (t) => {
  const dir = tmpDir(t);
  const f = path.join(dir, 'shrinking.safetensors');
  const n = 32 * 2 ** 20; // 128 MiB of float32: the merge takes long enough to be cut short
  await saveStateDict(f, new Map([['w', Tensor.from(new Float32Array(n).fill(1), [n])]]));
  const outPath = path.join(dir, 'out.bin');
  const fd = fs.openSync(outPath, 'w');
  t.teardown(() => fs.closeSync(fd));
  const spec: NativeMergeSpec = { method: 'task_arithmetic', weights: [1], lambda: 0.5, election: 'weighted', seed: 0, compute: 'float32', out: 'float32' };
  const seen: string[] = [];
  for (let round = 0; round < 3; round++) {
    await saveStateDict(f, new Map([['w', Tensor.from(new Float32Array(n).fill(1), [n])]]));
    const r = openSafetensors(f);
    const loc = r.locate('w');
    const item = { name: 'w', dtype: 'float32', out: 'float32', shape: [n], inputs: [[0, loc.offset], [0, loc.offset]] as Array<[number, number]>, outOffset: 0 };
    const p = native().mergeFiles([{ fd: loc.fd, path: f }], { fd, path: outPath }, [item], [spec], true);
    setTimeout(() => fs.truncateSync(f, 4096), 3);
    const err = await p.then(() => null, (e: unknown) => e);
    r.close();
    if (err === null) {
      seen.push('finished before the truncation');
      continue;
    }
    t.type(err, CheckpointError, `round ${round}: a CheckpointError`);
    t.match((err as Error).message, /shrinking\.safetensors: tensor 'w': (could not read byte \d+ \(the file was truncated or replaced while it was being merged|unexpected end of file)/, `round ${round}: names the file and tensor`);
    seen.push((err as Error).message.includes('could not read') ? 'SIGBUS under the mapping, caught' : 'refused before reading');
  }
  t.comment(seen.join('; '));
  t.ok(seen.some((s) => s !== 'finished before the truncation'), 'at least one merge was cut short by the truncation');
  const again = await native().mergeFiles([], { fd, path: outPath }, [], [spec], true);
  t.same(again, [], 'the process and the addon still work afterwards');
});

t.test('--device: checked before any file is opened; cuda merges equal the CPU streamed merge where a GPU is there', async (t) => {
  const dir = tmpDir(t);
  const sds = await Promise.all([0, 1, 2].map((k) => model(k, 'bfloat16')));
  for (const [k, sd] of sds.entries()) await saveStateDict(path.join(dir, `d${k}.safetensors`), sd);
  const cfg = (method: string, out: string, parameters: Record<string, unknown> = {}) =>
    parseMergeConfig({ base_model: 'd0.safetensors', models: [{ model: 'd1.safetensors' }, { model: 'd2.safetensors' }], method, parameters, output: out });
  await t.rejects(mergeCheckpoints(cfg('ties', 'x.safetensors'), { configDir: dir, device: 'gpu' as never }), { name: 'ArgumentError', message: `merge device: expected 'cpu', 'cuda' or 'cuda:N', got "gpu"` });
  if (!native().info().cudaAvailable) {
    await t.rejects(mergeCheckpoints(cfg('ties', 'x.safetensors'), { configDir: dir, device: 'cuda' }), {
      name: 'ArgumentError',
      message: /^merge device "cuda": this addon's libtorch has no CUDA support or no GPU is visible/,
    });
    t.notOk(fs.existsSync(path.join(dir, 'x.safetensors')), 'nothing written');
    await mergeCheckpoints(cfg('ties', 'cpu.safetensors', { density: 0.5 }), { configDir: dir, device: 'cpu' });
    t.ok(fs.existsSync(path.join(dir, 'cpu.safetensors')), "device 'cpu' merges as without it");
    return;
  }
  for (const [method, parameters] of [['task_arithmetic', {}], ['ties', { density: 0.5 }], ['model_stock', {}]] as const) {
    await mergeCheckpoints(cfg(method, `${method}-cpu.safetensors`, parameters), { configDir: dir });
    await mergeCheckpoints(cfg(method, `${method}-cuda.safetensors`, parameters), { configDir: dir, device: 'cuda' });
    const a = (await loadStateDict(path.join(dir, `${method}-cpu.safetensors`))).tensors;
    const b = (await loadStateDict(path.join(dir, `${method}-cuda.safetensors`))).tensors;
    const x = await f64(a.get('odd')!), y = await f64(b.get('odd')!);
    const worst = x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!) / (1 + Math.abs(v))), 0);
    t.ok(worst < 1e-2, `${method} on cuda = on the CPU within bf16 rounding (${worst.toExponential(2)})`);
  }
});

t.test('float inputs of different dtypes (a float32 base, bf16 and fp16 models) are converted to the compute dtype, as mergekit casts them; integer mixes are refused', async (t) => {
  const dir = tmpDir(t);
  const [b, m1, m2] = await Promise.all([model(0, 'float32'), model(1, 'bfloat16'), model(2, 'float16')]);
  await saveStateDict(path.join(dir, 'b.safetensors'), b!);
  await saveStateDict(path.join(dir, 'm1.safetensors'), m1!);
  await saveStateDict(path.join(dir, 'm2.safetensors'), m2!);
  const as32 = async (sd: StateDict) => new Map(await Promise.all([...sd].map(async ([n, x]) => [n, x.dtype === 'int64' ? x : await x.to('float32')] as const)));
  const [b32, m132, m232] = await Promise.all([b!, m1!, m2!].map(as32));
  for (const [method, parameters, k] of [['task_arithmetic', { lambda: 0.8 }, 2], ['ties', { density: 0.5 }, 2], ['slerp', { t: 0.4 }, 1], ['della', { density: 0.5, epsilon: 0.2 }, 2], ['nuslerp', { nuslerp_flatten: false, nuslerp_row_wise: true }, 2]] as const) {
    const models = [m132!, m232!].slice(0, k);
    for (const out of [`${method}.safetensors`, `${method}.pt`]) {
      await mergeCheckpoints(parseMergeConfig({ base_model: 'b.safetensors', models: models.map((_, i) => ({ model: `m${i + 1}.safetensors` })), method, parameters, output: out }), { configDir: dir });
      const got = (await loadStateDict(path.join(dir, out))).tensors;
      const o: Record<string, unknown> = { method };
      for (const [key, v] of Object.entries(parameters)) o[{ nuslerp_flatten: 'flatten', nuslerp_row_wise: 'rowWise' }[key] ?? key] = v;
      const want = await mergeStateDicts(b32, models, o as never);
      for (const n of ['big', 'odd']) {
        t.equal(got.get(n)!.dtype, 'float32', `${method} → ${out}: ${n} in the base's dtype`);
        t.ok(bytes(got.get(n)!).equals(bytes(want.get(n)!)), `${method} → ${out}: ${n} = the merge of the inputs converted to float32, bit for bit`);
      }
    }
  }
  const ints = new Map(b!);
  ints.set('odd', Tensor.from(new BigInt64Array(65537), [65537]));
  await saveStateDict(path.join(dir, 'ints.safetensors'), ints);
  await t.rejects(mergeCheckpoints(parseMergeConfig({ base_model: 'b.safetensors', models: [{ model: 'ints.safetensors' }], output: 'x.safetensors' }), { configDir: dir }),
    { name: 'CheckpointError', message: /tensor "odd" is int64, while b\.safetensors has it as float32 \(only floating-point dtypes may differ between inputs\)/ });
});

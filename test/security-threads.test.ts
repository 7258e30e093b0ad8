// Issue 9, Why 3 and 4: worker_threads and zero-copy tensors. Each scenario runs in a child
// process, which must exit normally (no abort, no SIGSEGV) and print the values it expects.
// Run: npx tap test/security-threads.test.ts
import t, { type Test as Tap } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runTs, TS_NODE } from './fixtures/security/run-child';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sec-threads-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const TENSOR = JSON.stringify(path.join(__dirname, '..', 'lib', 'tensor'));
const MODEL = JSON.stringify(path.join(__dirname, '..', 'lib', 'model'));

function script(name: string, body: string): string {
  const f = path.join(tmp, `${name}.ts`);
  fs.writeFileSync(f, body);
  return f;
}

// ---------------------------------------------------------------------------
// Why 3: the addon in several threads

const workerFile = script('worker', `
import { parentPort, workerData } from 'node:worker_threads';
import { Model } from ${MODEL};
import { Tensor } from ${TENSOR};
(async () => {
  const m = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 2 }, { seed: workerData.seed });
  const x = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]), [2, 4]);
  let sum = 0;
  for (let i = 0; i < 20; i++) sum += (await m.forward(x)).toArray().reduce((a, b) => a + b, 0);
  m.dispose();
  parentPort!.postMessage({ seed: workerData.seed, sum });
})();
`);

t.test('models and tensors in worker threads and the main thread, at once and in turn', async (t) => {
  const main = script('threads-main', `
import { Worker } from 'node:worker_threads';
import { Model } from ${MODEL};
import { Tensor } from ${TENSOR};
const boot = 'require(' + JSON.stringify(${JSON.stringify(TS_NODE)}) + '); require(' + JSON.stringify(${JSON.stringify(workerFile)}) + ');';
function inWorker(seed: number): Promise<{ seed: number; sum: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(boot, { eval: true, workerData: { seed } });
    w.once('message', resolve);
    w.once('error', reject);
  });
}
async function here(seed: number): Promise<number> {
  const m = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 2 }, { seed });
  const x = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]), [2, 4]);
  let sum = 0;
  for (let i = 0; i < 20; i++) sum += (await m.forward(x)).toArray().reduce((a, b) => a + b, 0);
  return sum;
}
(async () => {
  const before = await here(1);                 // the main thread loads the addon ...
  const first = await inWorker(1);              // ... a worker loads its own instance ...
  const mainSum = await here(1);                // ... and the main thread again (a static handle: the worker's, gone)
  const all = await Promise.all([inWorker(2), inWorker(3), here(2), here(3)]); // all at once
  console.log(JSON.stringify({ before, first: first.sum, mainSum, w2: all[0].sum, w3: all[1].sum, m2: all[2], m3: all[3] }));
})();
`);
  const r = runTs(main, [], { timeout: 120_000 });
  t.equal(r.signal, null, 'no signal');
  t.equal(r.status, 0, r.stderr.slice(-3000));
  const o = r.lines[0] as Record<string, number> | undefined;
  t.ok(o !== undefined, 'printed its results');
  if (o) {
    t.ok(Number.isFinite(o.first), 'the worker computed');
    t.equal(o.first, o.mainSum, 'same seed, same result in a worker and in the main thread');
    t.equal(o.before, o.mainSum, 'the main thread still works after a worker loaded the addon');
    t.equal(o.w2, o.m2);
    t.equal(o.w3, o.m3);
  }
});

// ---------------------------------------------------------------------------
// Why 4: zero-copy tensors over JS memory that moves or shrinks

function runScenario(t: Tap, name: string, body: string): Record<string, unknown> | undefined {
  const f = script(name, `
import { Tensor } from ${TENSOR};
const gc = (globalThis as { gc?: () => void }).gc!;
const N = 1 << 20; // 4 MiB: malloc'ed with mmap, unmapped when freed
function churn(): void { for (let i = 0; i < 8; i++) new Float32Array(N).fill(-7); gc(); }
(async () => {
${body}
})().catch((e) => { console.log(JSON.stringify({ thrown: e.name, message: e.message })); });
`);
  const r = runTs(f, [], { timeout: 60_000 });
  t.equal(r.signal, null, `${name}: no signal`);
  t.equal(r.status, 0, r.stderr.slice(-2000));
  return r.lines[0];
}

for (const [kind, make] of [['a plain array (copied)', 'new Float32Array(N)'], ['addon-owned memory (shared)', "Tensor.allocArray('float32', N)"]] as const) {
  t.test(`${kind}: transferring its buffer with structuredClone does not leave the tensor dangling`, async (t) => {
    const o = runScenario(t, `structured-clone-${make.length}`, `
  const a = ${make}.fill(3);
  const x = Tensor.from(a, [N]);
  const shared = x.data() === a;
  let clone: ArrayBuffer | null = structuredClone(a.buffer, { transfer: [a.buffer] });
  const detached = a.length === 0;
  clone = null;
  churn();
  const v = x.toArray();
  console.log(JSON.stringify({ first: v[0], last: v[N - 1], sum: v.reduce((s, y) => s + y, 0), shared, detached, after: x.data() === a }));
`);
    t.match(o, { first: 3, last: 3, sum: 3 * (1 << 20) }, 'the tensor still reads its values');
    // A plain buffer is moved (detached here); Node clones an external (addon-owned) one instead.
    if (!make.startsWith('Tensor')) t.equal(o?.detached, true, 'the plain buffer was detached by the transfer');
    t.equal(o?.after, o?.shared === true && o?.detached === false, 'data() returns the source array only while it still views the memory');
    t.equal(o?.shared, make.startsWith('Tensor'), 'shared only when the addon owns the memory');
  });

  t.test(`${kind}: posting its buffer to a worker with a transfer list does not leave the tensor dangling`, async (t) => {
    const o = runScenario(t, `post-message-${make.length}`, `
  const { Worker } = await import('node:worker_threads');
  const a = ${make}.fill(5);
  const x = Tensor.from(a, [N]);
  const w = new Worker('const { parentPort } = require("node:worker_threads"); parentPort.once("message", (b) => { new Float32Array(b).fill(9); process.exit(0); })', { eval: true });
  w.postMessage(a.buffer, [a.buffer]);
  await new Promise((r) => w.once('exit', r));
  churn();
  const v = x.toArray();
  console.log(JSON.stringify({ first: v[0], last: v[N - 1], sum: v.reduce((s, y) => s + y, 0) }));
`);
    // Shared memory may have been written by the worker before it exited (9s); never freed memory.
    const want = make.startsWith('Tensor') ? [5, 9] : [5];
    t.ok(o !== undefined && want.includes(o.first as number) && o.first === o.last && o.sum === (o.first as number) * (1 << 20), JSON.stringify(o));
  });
}

t.test('shrinking a resizable ArrayBuffer does not leave the tensor dangling', async (t) => {
  const o = runScenario(t, 'resizable', `
  const buf = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void })(4 * N, { maxByteLength: 8 * N });
  const a = new Float32Array(buf, 0, N).fill(2);
  const x = Tensor.from(a, [N]);
  buf.resize(0);
  churn();
  const v = x.toArray();
  console.log(JSON.stringify({ first: v[0], last: v[N - 1], sum: v.reduce((s, y) => s + y, 0) }));
`);
  t.match(o, { first: 2, last: 2, sum: 2 * (1 << 20) });
});

t.test('a SharedArrayBuffer-backed array makes a tensor (a copy), and the rule is stated', async (t) => {
  const o = runScenario(t, 'shared', `
  const a = new Float32Array(new SharedArrayBuffer(16));
  a.set([1, 2, 3, 4]);
  const x = Tensor.from(a, [2, 2]);
  a[0] = 100; // a copy: not seen by the tensor
  console.log(JSON.stringify({ values: x.toArray(), same: x.data() === a }));
`);
  t.same(o, { values: [1, 2, 3, 4], same: false });
});

t.test('a detached buffer is refused with a typed error before any read', async (t) => {
  const o = runScenario(t, 'detached', `
  const a = new Float32Array(4);
  structuredClone(a.buffer, { transfer: [a.buffer] }); // detaches (not yet a tensor's)
  Tensor.from(a, [0]);
`);
  t.same(o, { thrown: 'ArgumentError', message: "Tensor.from: the array's ArrayBuffer is detached (transferred); nothing to read" });
});

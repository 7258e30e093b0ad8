import t from 'tap';
import { Model, Tensor } from '../lib';

const gc = (globalThis as { gc?: () => void }).gc;

t.test('10,000 tensor create/dispose cycles leave resident memory within 64 MiB', async (t) => {
  const cycle = async (i: number): Promise<void> => {
    const x = Tensor.from(new Float32Array(4096).fill(i), [64, 64]); // 16 KiB, zero-copy
    const y = await x.to('float64'); // 32 KiB owned natively
    const z = y.clone();
    x.dispose();
    y.dispose();
    z.dispose();
  };
  for (let i = 0; i < 500; i++) await cycle(i); // warm-up: allocator pools, JIT
  gc?.();
  const before = process.memoryUsage().rss;
  for (let i = 0; i < 10_000; i++) await cycle(i);
  gc?.();
  await new Promise((r) => setTimeout(r, 50)); // let queued releases run
  const grown = (process.memoryUsage().rss - before) / 2 ** 20;
  // 10,000 cycles allocate ~1.1 GiB in total; a leak of any one tensor per cycle would exceed the bound.
  t.ok(grown < 64, `RSS grew by ${grown.toFixed(1)} MiB over 10,000 cycles (bound 64 MiB)`);
});

t.test('tensors dropped without dispose() are reclaimed by the garbage collector', { skip: gc ? false : 'run node with --expose-gc' }, async (t) => {
  const m = Model.create({ arch: 'mlp', inputDim: 256, hidden: [256], outputDim: 256 }, { seed: 0 });
  const x = Tensor.from(new Float32Array(256 * 256), [256, 256]);
  for (let i = 0; i < 50; i++) await m.forward(x); // warm-up
  gc!();
  const before = process.memoryUsage().rss;
  for (let i = 0; i < 2000; i++) await m.forward(x); // 256 KiB results, never disposed
  gc!();
  await new Promise((r) => setTimeout(r, 50));
  gc!();
  const grown = (process.memoryUsage().rss - before) / 2 ** 20;
  t.ok(grown < 128, `RSS grew by ${grown.toFixed(1)} MiB after 2,000 undisposed 256 KiB results (500 MiB if leaked)`);
});

import t from 'tap';
import { ArgumentError, DeviceError, DisposedError, DTypeError, ShapeError, Tensor } from '../lib';

const gc = (globalThis as { gc?: () => void }).gc;

t.test('zero-copy: the tensor reads the array memory, and data() returns the same array', async (t) => {
  // Addon-owned memory is shared; any other array is copied (docs/security.md, test/security-threads).
  const a = Tensor.allocArray('float32', 6);
  a.set([1, 2, 3, 4, 5, 6]);
  const x = Tensor.from(a, [2, 3]);
  t.same(x.shape, [2, 3]);
  t.equal(x.dtype, 'float32');
  t.equal(x.device, 'cpu');
  t.equal(x.nbytes, 24);
  t.equal(x.data(), a, 'data() is the source array itself');
  a[4] = 42; // a write through the array is seen by native code
  const c = x.clone();
  t.not(c.data(), a, 'a clone owns its memory');
  t.same(Array.from(c.data() as Float32Array), [1, 2, 3, 4, 42, 6]);
  a[0] = -1;
  t.equal((c.data() as Float32Array)[0], 1, 'the clone does not follow later writes');
});

t.test('every dtype round-trips through its TypedArray', async (t) => {
  const cases: Array<[ArrayBufferView, string]> = [
    [new Float32Array([1.5, -2]), 'float32'],
    [new Float64Array([1e-300, 3]), 'float64'],
    [new Uint16Array([0x3c00, 0xc000]), 'float16'],
    [new Uint16Array([0x3f80, 0x4000]), 'bfloat16'],
    [new BigInt64Array([2n ** 62n, -5n]), 'int64'],
    [new Int32Array([7, -8]), 'int32'],
    [new Uint8Array([0, 255]), 'uint8'],
    [new Uint8Array([1, 0]), 'bool'],
  ];
  for (const [arr, dtype] of cases) {
    const x = Tensor.from(arr as never, [2], dtype as never);
    t.equal(x.dtype, dtype);
    const back = x.clone().data();
    t.equal(back.constructor, arr.constructor, `${dtype} reads back as ${arr.constructor.name}`);
    t.same(Array.from(back as never), Array.from(arr as never), `${dtype} values`);
  }
});

t.test('to(dtype) converts values; to(device) checks devices', async (t) => {
  const x = Tensor.from(new Float32Array([1, 2.5, -3]), [3]);
  const h = await x.to('float16');
  t.same(Array.from(h.data() as Uint16Array), [0x3c00, 0x4100, 0xc200], 'float16 bits');
  const b = await x.to('bfloat16');
  t.same(Array.from(b.data() as Uint16Array), [0x3f80, 0x4020, 0xc040], 'bfloat16 bits');
  const d = await h.to({ dtype: 'float64' });
  t.same(Array.from(d.data() as Float64Array), [1, 2.5, -3]);
  const same = await x.to('cpu');
  t.same(Array.from(same.data() as Float32Array), [1, 2.5, -3]);
  await t.rejects(x.to('tpu' as never), ArgumentError);
  await t.rejects(x.to('cuda:7'), DeviceError, 'no CUDA here (or not that many GPUs): DeviceError');
  await t.rejects(x.to('complex64' as never), ArgumentError);
});

t.test('bad construction arguments give typed errors naming the problem', async (t) => {
  t.throws(() => Tensor.from(new Float32Array(6), [4, 2]), ShapeError);
  t.throws(() => Tensor.from(new Float32Array(6), [4, 2]), /\[4, 2\] holds 8 elements, the Float32Array has 6/);
  t.throws(() => Tensor.from(new Float32Array(2) as never, [2], 'float64' as never), DTypeError);
  t.throws(() => Tensor.from(new Float32Array(2) as never, [2], 'float64' as never), /float64 needs a Float64Array, got a Float32Array/);
  t.throws(() => Tensor.from(new Uint16Array(2), [2]), /pass the dtype/);
  t.throws(() => Tensor.from(new Float32Array(2) as never, [2], 'complex64' as never), DTypeError);
  t.throws(() => Tensor.from(new Float32Array(2), [-2] as never), ShapeError);
  t.throws(() => Tensor.from([1, 2] as never, [2]), ArgumentError);
});

t.test('a disposed tensor throws DisposedError, never crashes', async (t) => {
  const x = Tensor.from(new Float32Array(4), [4]);
  x.dispose();
  x.dispose(); // idempotent
  t.ok(x.disposed);
  t.throws(() => x.shape, DisposedError);
  t.throws(() => x.data(), DisposedError);
  t.throws(() => x.clone(), DisposedError);
  await t.rejects(async () => x.to('float64'), DisposedError);
  {
    using y = Tensor.from(new Float32Array(2), [2]);
    t.equal(y.numel, 2);
  }
});

t.test('zero-copy memory stays valid while only native code holds it, across garbage collections', { skip: typeof gc === 'function' ? false : 'run node with --expose-gc' }, async (t) => {
  // A float32 -> float32 `to()` is libtorch's no-op: the result is a second native handle on the
  // same storage, i.e. on the array's memory. Drop every JS reference to the array and to the
  // first tensor, collect, churn the heap, and read through the second handle.
  const N = 16384; // 64 KiB: off the V8 heap, and a size the allocator reuses for the junk below
  const expected = Array.from({ length: N }, (_, i) => (i % 97) * 0.5);
  const make = async (): Promise<Tensor> => {
    const a = Tensor.allocArray('float32', N); // addon-owned memory: the one kind Tensor.from shares
    a.set(expected);
    const x = Tensor.from(a, [N]);
    const y = await x.to('float32');
    a[N - 1] = 6.5; // written through the array after the alias was made: seen by y if it shares memory
    const shared = (y.data() as Float32Array)[N - 1] === 6.5;
    t.ok(shared, 'to() of the same dtype shares the array memory (zero-copy path under test)');
    x.dispose();
    return y;
  };
  const y = await make();
  for (let i = 0; i < 3; i++) {
    gc!();
    const junk: Float32Array[] = [];
    for (let k = 0; k < 200; k++) junk.push(new Float32Array(N).fill(-7)); // reuse freed memory if any
    await new Promise((r) => setImmediate(r));
  }
  const got = y.data() as Float32Array;
  const bad = expected.filter((v, i) => got[i] !== (i === N - 1 ? 6.5 : v)).length;
  t.equal(bad, 0, 'values intact after the array and its tensor were collected');
  y.dispose();
});

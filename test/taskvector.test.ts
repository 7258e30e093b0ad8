import t from 'tap';
import { CheckpointError, ParameterError, TaskVector, Tensor, type StateDict } from '../lib';
import { toF64 } from './helpers';

const f32 = (v: number[], shape = [v.length]) => Tensor.from(Float32Array.from(v), shape);
const sd = (o: Record<string, Tensor>): StateDict => new Map(Object.entries(o));

const theta0 = () => sd({ w: f32([1, 2, 3, 4], [2, 2]), b: f32([0.5, -0.5]), steps: Tensor.from(new BigInt64Array([3n]), [1]) });
const thetaA = () => sd({ w: f32([2, 2, 1, 4], [2, 2]), b: f32([0.5, 0.5]), steps: Tensor.from(new BigInt64Array([9n]), [1]) });
const thetaB = () => sd({ w: f32([1, 0, 3, 8], [2, 2]), b: f32([1.5, -0.5]), steps: Tensor.from(new BigInt64Array([5n]), [1]) });

t.test('τ = θ_ft − θ0 by name; integer tensors left out', async (t) => {
  const a = await TaskVector.from(theta0(), thetaA());
  t.same(a.names, ['w', 'b'], 'the int64 counter is not part of the task vector');
  t.same(Array.from(toF64(a.tensors.get('w')!)), [1, 0, -2, 0]);
  t.same(Array.from(toF64(a.tensors.get('b')!)), [0, 1]);
  // Order of the maps does not matter: names are matched, never positions.
  const shuffled = sd({ b: thetaA().get('b')!, steps: thetaA().get('steps')!, w: thetaA().get('w')! });
  const a2 = await TaskVector.from(theta0(), shuffled);
  t.same(Array.from(toF64(a2.tensors.get('w')!)), [1, 0, -2, 0]);
});

t.test('algebra against hand-computed values', async (t) => {
  const a = await TaskVector.from(theta0(), thetaA()); // w [1,0,-2,0], b [0,1]
  const b = await TaskVector.from(theta0(), thetaB()); // w [0,-2,0,4], b [1,0]
  t.same(Array.from(toF64((await a.add(b)).tensors.get('w')!)), [1, -2, -2, 4]);
  t.same(Array.from(toF64((await a.sub(b)).tensors.get('b')!)), [-1, 1]);
  t.same(Array.from(toF64((await a.scale(0.5)).tensors.get('w')!)), [0.5, 0, -1, 0]);
  t.same(Array.from(toF64((await a.negate()).tensors.get('b')!)), [-0, -1]);
  t.same(Array.from(toF64((await TaskVector.sum([a, b], [2, -1])).tensors.get('w')!)), [2, 2, -4, -4]);
  t.equal(await a.dot(b), 1 * 0 + 0 * -2 + -2 * 0 + 0 * 4 + 0 * 1 + 1 * 0);
  t.equal(await a.norm(), Math.sqrt(1 + 4 + 1));
  t.equal(await b.norm(), Math.sqrt(4 + 16 + 1));
  const m = await TaskVector.cosineMatrix([a, b, a]);
  t.same(m.map((r) => r.map((v) => +v.toFixed(12))), [
    [1, 0, 1],
    [0, 1, 0],
    [1, 0, 1],
  ]);
});

t.test('applyTo: θ0 + α τ, integer buffers passed through', async (t) => {
  const a = await TaskVector.from(theta0(), thetaA());
  const b = await TaskVector.from(theta0(), thetaB());
  const edited = await (await a.add(b)).applyTo(theta0(), 0.5);
  t.same(Array.from(toF64(edited.get('w')!)), [1.5, 1, 2, 6]);
  t.same(Array.from(toF64(edited.get('b')!)), [1, 0]);
  t.same(Array.from(edited.get('steps')!.data() as BigInt64Array), [3n], 'θ0 integer tensors unchanged');
  const neg = await a.applyTo(theta0(), -1);
  t.same(Array.from(toF64(neg.get('w')!)), [0, 2, 5, 4], 'negation θ0 − τ');
  const back = await a.applyTo(theta0(), 1);
  t.same(Array.from(toF64(back.get('w')!)), Array.from(toF64(thetaA().get('w')!)), 'θ0 + τ = θ_ft');
});

t.test('mismatches are reported with the exact keys, shapes and dtypes', async (t) => {
  const bad = sd({ w: f32([1, 2, 3, 4, 5, 6], [2, 3]), b: Tensor.from(new Float64Array([0, 0]), [2]), extra: f32([1]) });
  await t.rejects(TaskVector.from(theta0(), bad), CheckpointError);
  const err = (await TaskVector.from(theta0(), bad).catch((e: Error) => e)) as Error;
  t.match(err.message, /extra/);
  t.match(err.message, /steps/);
  t.match(err.message, /w.*\[2, ?2\].*\[2, ?3\]/s);
  t.match(err.message, /b.*float32.*float64/s);
  const a = await TaskVector.from(theta0(), thetaA());
  const c = TaskVector.of(sd({ w: f32([0, 0, 0, 0], [2, 2]) }));
  await t.rejects(a.add(c), ParameterError);
  await t.rejects(a.dot(c), ParameterError);
  await t.rejects(c.castToLinearized().applyTo(theta0()), /'params.w' is not in θ0/);
});

t.test('casting between linearized and ordinary names is by name', async (t) => {
  const a = await TaskVector.from(theta0(), thetaA());
  const lin = a.castToLinearized();
  t.same(lin.names, ['params.w', 'params.b']);
  const back = lin.castFromLinearized();
  t.same(back.names, ['w', 'b']);
  t.same(Array.from(toF64(back.tensors.get('w')!)), [1, 0, -2, 0]);
  const odd = TaskVector.of(sd({ 'params.w': f32([1]), 'params0.w': f32([2]) }));
  t.throws(() => odd.castFromLinearized(), /'params0.w' has no 'params.' prefix/);
});

t.test('mixed dtypes: every tensor keeps its own dtype through the fused kernel', async (t) => {
  const pre = sd({ a: f32([1, 2]), h: Tensor.from(new Uint16Array([0x3c00, 0x4000]), [2], 'float16'), d: Tensor.from(new Float64Array([0.5]), [1]) });
  const ft = sd({ a: f32([2, 2]), h: Tensor.from(new Uint16Array([0x4000, 0x4000]), [2], 'float16'), d: Tensor.from(new Float64Array([1.5]), [1]) });
  const tau = await TaskVector.from(pre, ft);
  const edited = await tau.applyTo(pre, 2);
  t.same([...edited].map(([n, x]) => [n, x.dtype]), [['a', 'float32'], ['h', 'float16'], ['d', 'float64']]);
  t.same(Array.from(edited.get('h')!.data() as Uint16Array), [0x4200, 0x4000], 'float16: 1 + 2·(2 − 1) = 3, 2 + 0 = 2');
  t.same(Array.from(toF64(edited.get('d')!)), [2.5]);
});

import t from 'tap';
import { ArgumentError, DeviceError, DisposedError, DTypeError, Model, ParameterError, ShapeError, Tensor } from '../lib';
import { axpy, randomTangent, randTensor, toF64 } from './helpers';

const VIT = { arch: 'vit', imageSize: 8, patchSize: 4, inChannels: 1, dim: 16, depth: 1, heads: 2, mlpDim: 32, numClasses: 3 } as const;

t.test('built-in models: names, shapes, seeded init', async (t) => {
  const m = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 3 }, { seed: 1 });
  t.same([...m.spec.keys()], ['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']);
  t.same(m.spec.get('layers.0.weight')!.shape, [8, 4]);
  t.equal(m.numel, 8 * 4 + 8 + 3 * 8 + 3);
  const again = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 3 }, { seed: 1 });
  const other = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 3 }, { seed: 2 });
  const w = (mm: Model) => Array.from(toF64(mm.parameters().get('layers.0.weight')!));
  t.same(w(m), w(again), 'same seed, same weights');
  t.notSame(w(m), w(other), 'another seed, other weights');
  const f64 = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 3 }, { seed: 1, dtype: 'float64' });
  const a = w(m);
  const b = w(f64);
  t.ok(a.every((v, i) => Math.abs(v - b[i]!) < 1e-7), 'float32 init is the float64 init rounded');
  const vit = Model.create(VIT, { seed: 0 });
  t.ok(vit.spec.has('blocks.0.attn.qkv.weight') && vit.spec.has('cls_token') && vit.spec.has('pos_embed'));
  t.same(vit.spec.get('pos_embed')!.shape, [1, 5, 16]);
  const y = await vit.forward(randTensor([2, 1, 8, 8], 1, 'float32'));
  t.same(y.shape, [2, 3]);
  const feat = Model.create({ ...VIT, numClasses: 0 }, { seed: 0 });
  t.same((await feat.forward(randTensor([2, 1, 8, 8], 1, 'float32'))).shape, [2, 16], 'numClasses 0 gives features');
});

t.test('functional forward: any parameter set, the model unchanged', async (t) => {
  const m = Model.create(VIT, { seed: 5 });
  const x = randTensor([2, 1, 8, 8], 2, 'float32');
  const before = Array.from(toF64(await m.forward(x)));
  const other = axpy(m.parameters(), 0.1, randomTangent(m, 3));
  const withOther = Array.from(toF64(await m.forward(x, other)));
  t.notSame(withOther, before, 'another parameter set gives other outputs');
  t.same(Array.from(toF64(await m.forward(x))), before, 'the model itself is untouched');
  // Concurrent forwards with different parameter sets on one model.
  const [a, b] = await Promise.all([m.forward(x), m.forward(x, other)]);
  t.same(Array.from(toF64(a)), before);
  t.same(Array.from(toF64(b)), withOther);
});

t.test('bad parameters and inputs: typed errors naming the parameter, shape, dtype or device', async (t) => {
  const m = Model.create({ arch: 'mlp', inputDim: 4, hidden: [8], outputDim: 3 }, { seed: 1 });
  const p = new Map(m.parameters());
  const missing = new Map(p);
  missing.delete('layers.1.bias');
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float32'), missing), ParameterError);
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float32'), missing), /missing parameter 'layers.1.bias'/);
  const extra = new Map(p).set('layers.9.weight', randTensor([1], 1, 'float32'));
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float32'), extra), /unknown parameter 'layers.9.weight'/);
  const badShape = new Map(p).set('layers.0.weight', randTensor([4, 8], 1, 'float32'));
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float32'), badShape), ShapeError);
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float32'), badShape), /'layers.0.weight' has shape \[4, 8\], model expects \[8, 4\]/);
  const badType = new Map(p).set('layers.0.bias', randTensor([8], 1, 'float64'));
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float32'), badType), DTypeError);
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float32'), badType), /'layers.0.bias' has dtype float64, model expects float32/);
  // Input checks happen in C++ (the model knows its input layout) and still come back typed.
  await t.rejects(m.forward(randTensor([2, 5], 1, 'float32')), ShapeError);
  await t.rejects(m.forward(randTensor([2, 5], 1, 'float32')), /mlp expects input \[batch, 4\].*got \[2, 5\]/);
  await t.rejects(m.forward(randTensor([2, 4], 1, 'float64')), DTypeError);
  await t.rejects(m.forward('x' as never), ArgumentError);
  // Tangents: unknown names and wrong shapes.
  await t.rejects(m.jvp(randTensor([2, 4], 1, 'float32'), { nope: randTensor([1], 1, 'float32') }), ParameterError);
  // Labels out of range for the head / logits.
  await t.rejects(m.lossAndGrad(randTensor([2, 4], 1, 'float32'), Tensor.fromLabels([0, 7])), /labels must lie in \[0, 3\), got values in \[0, 7\]/);
  await t.rejects(m.lossAndGrad(randTensor([2, 4], 1, 'float32'), Tensor.fromLabels([0, 1, 2])), ShapeError);
  await t.rejects(m.lossAndGrad(randTensor([2, 4], 1, 'float32'), randTensor([2], 1, 'float32')), DTypeError);
  // Configs and devices.
  t.throws(() => Model.create({ ...VIT, patchSize: 3 }), /imageSize 8 is not a multiple of vit.patchSize 3/);
  t.throws(() => Model.create({ arch: 'mlp', inputDim: 0, outputDim: 2 }), /mlp.inputDim must be an integer >= 1, got 0/);
  t.throws(() => Model.create({ arch: 'rnn' } as never), ArgumentError);
  t.throws(() => Model.create({ arch: 'mlp', inputDim: 2, outputDim: 2 }, { device: 'cuda:3' }), DeviceError);
  await t.rejects(Model.load('/nonexistent.pt'), /not found: \/nonexistent.pt/);
});

t.test('a corrupt TorchScript file is a typed error, not a crash', async (t) => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const f = `${fs.mkdtempSync(`${os.tmpdir()}/te-`)}/bad.pt`;
  fs.writeFileSync(f, 'not a zip archive');
  // Neither a .pt2 nor a TorchScript zip: refused by the readers, with or without trustCode.
  for (const trustCode of [false, true])
    await t.rejects(Model.load(f, { trustCode }), { name: 'CheckpointError', code: 'ERR_IO', message: `${f}: not a model: Model.load reads a torch.export program (.pt2, torch.export.save) or a TorchScript archive (torch.jit.save), both zip files; this file is neither` });
});

t.test('a disposed model throws DisposedError', async (t) => {
  const m = Model.create({ arch: 'mlp', inputDim: 4, outputDim: 3 }, { seed: 1 });
  const x = randTensor([1, 4], 1, 'float32');
  m.dispose();
  t.throws(() => m.parameters(), DisposedError);
  await t.rejects(async () => m.forward(x), DisposedError);
});

import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { ArgumentError, getJvpMethod, Model, runtimeInfo, setJvpMethod, Tensor, type ModelConfig, type StateDict } from '../lib';
import { axpy, FIXTURES, randomTangent, randTensor, relErr, maxAbsDiff, toF64 } from './helpers';

const CASES: Array<[string, ModelConfig, number[]]> = [
  ['mlp', { arch: 'mlp', inputDim: 12, hidden: [16, 8], outputDim: 5, activation: 'tanh' }, [4, 12]],
  ['cnn', { arch: 'cnn', inChannels: 2, imageSize: 8, channels: [4, 6], outputDim: 5 }, [3, 2, 8, 8]],
  [
    'vit',
    { arch: 'vit', imageSize: 8, patchSize: 4, inChannels: 1, dim: 16, depth: 2, heads: 2, mlpDim: 24, numClasses: 5 },
    [3, 1, 8, 8],
  ],
];

async function checkJvp(t: Test, name: string, model: Model, x: Tensor): Promise<void> {
  const theta0 = model.parameters();
  const v = randomTangent(model, 11);
  const { primal, tangent } = await model.jvp(x, v);
  t.same(Array.from(toF64(primal)), Array.from(toF64(await model.forward(x))), `${name}: JVP primal is f(x; θ0)`);
  const h = 1e-6;
  const fp = toF64(await model.forward(x, axpy(theta0, h, v)));
  const fm = toF64(await model.forward(x, axpy(theta0, -h, v)));
  const fd = fp.map((p, i) => (p - fm[i]!) / (2 * h));
  const err = relErr(toF64(tangent), fd);
  t.ok(err <= 1e-6, `${name}: JVP equals central finite differences in float64 (rel err ${err.toExponential(2)})`);
  const db = toF64(await model.jvpDoubleBackward(x, v));
  const err2 = relErr(db, toF64(tangent));
  t.ok(err2 <= 1e-10, `${name}: JVP equals the double-backward JVP (rel err ${err2.toExponential(2)})`);
}

for (const [name, cfg, xshape] of CASES) {
  t.test(`${name}: JVP against finite differences and double backward`, async (t) => {
    const model = Model.create(cfg, { seed: 3, dtype: 'float64' });
    await checkJvp(t, name, model, randTensor(xshape, 5));
  });
}

t.test('torchscript: JVP against finite differences and double backward (float64 fixture)', async (t) => {
  const model = await Model.load(`${FIXTURES}/tiny64.pt`, { trustCode: true });
  t.equal(model.kind, 'torchscript');
  t.same([...model.bufferNames], ['scale']);
  await checkJvp(t, 'torchscript', model, randTensor([2, 1, 8, 8], 9));
});

t.test("torchscript: outputs and JVPs equal PyTorch's own forward-AD (python3-torch golden)", async (t) => {
  const g = JSON.parse(fs.readFileSync(`${FIXTURES}/tiny_golden.json`, 'utf8')) as {
    input: { shape: number[]; data: number[] };
    params: Record<string, { shape: number[]; data: number[] }>;
    tangents: Record<string, { shape: number[]; data: number[] }>;
    output: { data: number[] };
    scripted_output: number[];
    jvp: { data: number[] };
  };
  const model = await Model.load(`${FIXTURES}/tiny32.pt`, { trustCode: true });
  t.same([...model.spec.keys()], Object.keys(g.params), 'parameter names and order match PyTorch');
  for (const [n, p] of model.parameters()) t.ok(maxAbsDiff(toF64(p), g.params[n]!.data) === 0, `parameter ${n} loaded exactly`);
  const x = Tensor.fromArray(g.input.data, g.input.shape);
  const tangent: StateDict = new Map(
    Object.entries(g.tangents).map(([n, v]) => [n, Tensor.fromArray(v.data, v.shape)] as [string, Tensor]),
  );
  const out = toF64(await model.forward(x));
  t.ok(maxAbsDiff(out, g.scripted_output) <= 1e-5, `forward equals PyTorch (max |Δ| ${maxAbsDiff(out, g.scripted_output).toExponential(2)})`);
  const r = await model.jvp(x, tangent);
  const e1 = maxAbsDiff(toF64(r.primal), g.output.data);
  const e2 = relErr(toF64(r.tangent), g.jvp.data);
  t.ok(e1 <= 1e-5, `JVP primal equals PyTorch (max |Δ| ${e1.toExponential(2)})`);
  t.ok(e2 <= 1e-5, `JVP tangent equals torch.autograd.forward_ad (rel err ${e2.toExponential(2)})`);
});

t.test('linearized model: f_lin(θ0) = f(θ0) exactly, affine in θ, and gradients equal Jᵀg', async (t) => {
  const [, cfg, xshape] = CASES[2]!;
  const model = Model.create(cfg, { seed: 4, dtype: 'float64' });
  const x = randTensor(xshape, 6);
  const lin = model.linearize();
  const f0 = toF64(await lin.forward(x));
  t.same(Array.from(f0), Array.from(toF64(await model.forward(x))), 'f_lin(x; θ0) === f(x; θ0), bit for bit');
  const v = randomTangent(model, 21);
  const theta0 = model.parameters();
  const f1 = toF64(await lin.forward(x, axpy(theta0, 0.5, v)));
  const f2 = toF64(await lin.forward(x, axpy(theta0, 1.0, v)));
  const fm = toF64(await lin.forward(x, axpy(theta0, -1.5, v)));
  // Affine: f(θ0 + a v) = f0 + a (Jv) for every a.
  const jv = toF64((await model.jvp(x, v)).tangent);
  for (const [a, f] of [[0.5, f1], [1.0, f2], [-1.5, fm]] as const) {
    const expect = f0.map((b, i) => b + a * jv[i]!);
    t.ok(relErr(f, expect) <= 1e-12, `f_lin(θ0 + ${a} v) = f0 + ${a} Jv (rel err ${relErr(f, expect).toExponential(2)})`);
  }
  // Gradient of the linearized cross-entropy at θ = θ0 + 0.5 v equals Jᵀ g with
  // g = (softmax(f_lin) − onehot(y)) / B computed here in JS, and J by an independent VJP at θ0.
  const B = xshape[0]!;
  const labels = [0, 3, 1];
  const y = Tensor.fromLabels(labels);
  const theta = axpy(theta0, 0.5, v);
  const step = await lin.lossAndGrad(x, y, { params: theta });
  const C = f1.length / B;
  const g = new Float64Array(f1.length);
  let loss = 0;
  for (let b = 0; b < B; b++) {
    const row = f1.slice(b * C, (b + 1) * C);
    const m = Math.max(...row);
    const z = row.reduce((s, v2) => s + Math.exp(v2 - m), 0);
    loss += -(row[labels[b]!]! - m - Math.log(z)) / B;
    for (let c = 0; c < C; c++) g[b * C + c] = (Math.exp(row[c]! - m) / z - (c === labels[b] ? 1 : 0)) / B;
  }
  t.ok(Math.abs(step.loss - loss) <= 1e-12, `loss equals the JS cross-entropy (${step.loss} vs ${loss})`);
  const jtg = await model.vjp(x, Tensor.from(g, [B, C]));
  let worst = 0;
  for (const [n, gr] of step.grads) worst = Math.max(worst, relErr(toF64(gr), toF64(jtg.get(n)!)));
  t.ok(worst <= 1e-10, `every parameter's linearized gradient equals Jᵀg (worst rel err ${worst.toExponential(2)})`);
  t.equal(step.grads.size, model.spec.size, 'one gradient per parameter');
});

t.test('standard gradient equals Jᵀg at θ, with a frozen normalized head', async (t) => {
  const model = Model.create({ arch: 'mlp', inputDim: 6, hidden: [7], outputDim: 4 }, { seed: 2, dtype: 'float64' });
  const x = randTensor([5, 6], 8);
  const head = { weight: randTensor([3, 4], 9), bias: randTensor([3], 10), normalize: true };
  const y = Tensor.fromLabels([0, 1, 2, 1, 0]);
  const step = await model.lossAndGrad(x, y, { head });
  // Finite-difference directional derivative of the loss along a random direction.
  const v = randomTangent(model, 31);
  const h = 1e-6;
  const lp = (await model.evaluate(x, y, { head, params: axpy(model.parameters(), h, v) })).loss;
  const lm = (await model.evaluate(x, y, { head, params: axpy(model.parameters(), -h, v) })).loss;
  let dot = 0;
  for (const [n, g] of step.grads) {
    const a = toF64(g);
    const b = toF64(v.get(n)!);
    for (let i = 0; i < a.length; i++) dot += a[i]! * b[i]!;
  }
  const fd = (lp - lm) / (2 * h);
  t.ok(Math.abs(dot - fd) / Math.abs(fd) <= 1e-6, `⟨∇L, v⟩ = dL/dv by finite differences (${dot} vs ${fd})`);
  // The correct count, recomputed in JS from the plain forward: argmax of W·(f/‖f‖) + b.
  const f = toF64(await model.forward(x));
  const W = toF64(head.weight);
  const bias = toF64(head.bias);
  const labels = [0, 1, 2, 1, 0];
  let correct = 0;
  let ce = 0;
  for (let r = 0; r < 5; r++) {
    const row = Array.from(f.subarray(4 * r, 4 * r + 4));
    const norm = Math.max(Math.hypot(...row), 1e-12);
    const logits = [0, 1, 2].map((c) => bias[c]! + row.reduce((a, v, k) => a + (W[4 * c + k]! * v) / norm, 0));
    if (logits.indexOf(Math.max(...logits)) === labels[r]) correct++;
    const mx = Math.max(...logits);
    ce += mx + Math.log(logits.reduce((a, l) => a + Math.exp(l - mx), 0)) - logits[labels[r]!]!;
  }
  t.ok(Math.abs(step.loss - ce / 5) < 1e-12, `loss ${step.loss} is the mean cross-entropy recomputed in JS (${ce / 5})`);
  t.equal(step.correct, correct, `correct count ${step.correct} equals argmax of the head recomputed in JS`);
});

t.test("JVP method: the ViT's hand-written JVP equals forward-mode AD; 'forward-ad' is selectable and validated", async (t) => {
  const [, cfg, xshape] = CASES[2]!;
  const model = Model.create(cfg, { seed: 8, dtype: 'float64' });
  const x = randTensor(xshape, 9);
  const v = randomTangent(model, 31);
  const y = Tensor.fromLabels([0, 3, 4]);
  const theta = axpy(model.parameters(), 0.05, v);
  t.equal(getJvpMethod(), 'auto', "the default is 'auto'");
  const run = async () => {
    const j = await model.jvp(x, v);
    const g = await model.linearize().lossAndGrad(x, y, { params: theta });
    return { tangent: toF64(j.tangent), primal: toF64(j.primal), grads: new Map([...g.grads].map(([k, gv]) => [k, toF64(gv)])) };
  };
  const auto = await run();
  setJvpMethod('forward-ad');
  t.teardown(() => setJvpMethod('auto'));
  t.equal(getJvpMethod(), 'forward-ad');
  t.equal(runtimeInfo().jvpMethod, 'forward-ad', 'runtimeInfo reports the method');
  const ad = await run();
  setJvpMethod('auto');
  const e = relErr(auto.tangent, ad.tangent);
  t.ok(e <= 1e-12, `tangent: hand-written = forward-mode AD (rel err ${e.toExponential(2)})`);
  t.ok(relErr(auto.primal, ad.primal) <= 1e-14, 'primal: the same to rounding');
  let worst = 0;
  for (const [k, g] of auto.grads) worst = Math.max(worst, relErr(g, ad.grads.get(k)!));
  t.ok(worst <= 1e-11, `linearized gradients: the same through either (worst rel err ${worst.toExponential(2)})`);
  t.throws(() => setJvpMethod('reverse' as never), ArgumentError, 'an unknown method is an ArgumentError');
  t.throws(() => setJvpMethod('reverse' as never), /jvp method must be one of 'auto', 'forward-ad', got "reverse"/);
  t.equal(getJvpMethod(), 'auto', 'a refused method leaves the setting alone');
});

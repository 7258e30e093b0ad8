import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { ArgumentError, CheckpointError, Model, ShapeError, Tensor, evaluation, setNumThreads, train, type StateDict, type VitConfig } from '../lib';
import type { ImageSet } from '../lib/data';
import { randTensor, toF64 } from './helpers';

setNumThreads(2);
const TINY: VitConfig = { arch: 'vit', imageSize: 28, patchSize: 7, inChannels: 1, dim: 32, depth: 1, heads: 2, mlpDim: 64, numClasses: 0 };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-train-test-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

let shared: ReturnType<typeof makeTask> | undefined;
const setupTask = () => (shared ??= makeTask());
async function makeTask() {
  const d = await train.prepareTask('mnist', { trainLimit: 768, valLimit: 300, testLimit: 300 });
  const model = Model.create(TINY, { seed: 1 });
  const theta0 = new Map(model.parameters());
  const head = await train.fitHead({ model, config: TINY, theta0 }, d.train, { steps: 150 });
  return { d, model, theta0, head };
}

async function valAcc(model: Model, theta0: StateDict, params: StateDict, head: evaluation.EvalTask['head'], set: ImageSet, linear: boolean) {
  const ev = new evaluation.Evaluator(model, theta0, [{ name: 'x', head, val: train.evalData(set), test: train.evalData(set) }]);
  return ev.accuracy('x', 'val', params, linear);
}

const isSame = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

const HP = { steps: 40, batchSize: 64, lr: 3e-3, weightDecay: 0.1, warmupSteps: 4, maxGradNorm: 1, seed: 3 };

t.test('native AdamW equals a float64 reference (decoupled decay, bias correction, global-norm clipping)', async (t) => {
  const shapes = [[3, 4], [5]];
  const p: StateDict = new Map(shapes.map((s, i) => [`p${i}`, randTensor(s, 10 + i)]));
  const snapshot = (d: StateDict) => shapes.map((_, i) => Array.from(toF64(d.get(`p${i}`)!)));
  const original = snapshot(p);
  const opt = train.AdamW.create(p, { lr: 0.1, weightDecay: 0.2, maxGradNorm: 0.5, beta1: 0.8, beta2: 0.9, eps: 1e-6 });
  const ref = shapes.map((_, i) => ({ p: Array.from(toF64(p.get(`p${i}`)!)), m: new Array(toF64(p.get(`p${i}`)!).length).fill(0), v: new Array(toF64(p.get(`p${i}`)!).length).fill(0) }));
  for (let step = 1; step <= 3; step++) {
    const g: StateDict = new Map(shapes.map((s, i) => [`p${i}`, randTensor(s, 100 * step + i)]));
    const gs = shapes.map((_, i) => Array.from(toF64(g.get(`p${i}`)!)));
    const norm = Math.sqrt(gs.flat().reduce((a, x) => a + x * x, 0));
    const coef = Math.min(1, 0.5 / (norm + 1e-6));
    const lr = 0.1 / step;
    const info = await opt.update(g, lr);
    t.ok(Math.abs(info.gradNorm - norm) < 1e-12, `step ${step}: global grad norm ${info.gradNorm}`);
    t.ok(Math.abs(info.clipCoef - coef) < 1e-12, `step ${step}: clip coefficient ${info.clipCoef.toFixed(4)}`);
    for (const [i, r] of ref.entries())
      for (let k = 0; k < r.p.length; k++) {
        const gi = gs[i]![k]! * coef;
        r.p[k]! *= 1 - lr * 0.2;
        r.m[k] = 0.8 * r.m[k]! + 0.2 * gi;
        r.v[k] = 0.9 * r.v[k]! + 0.1 * gi * gi;
        const denom = Math.sqrt(r.v[k]!) / Math.sqrt(1 - 0.9 ** step) + 1e-6;
        r.p[k]! -= (lr / (1 - 0.8 ** step)) * (r.m[k]! / denom);
      }
  }
  let worst = 0;
  for (const [i, r] of ref.entries()) {
    const got = toF64(opt.params.get(`p${i}`)!);
    r.p.forEach((x, k) => (worst = Math.max(worst, Math.abs(x - got[k]!))));
  }
  t.ok(worst < 1e-12, `parameters match after 3 steps (max |Δ| ${worst.toExponential(2)})`);
  t.same(snapshot(p), original, 'the tensors given to create() are untouched (create clones them)');
  t.notSame(snapshot(opt.params), original, "while the optimizer's own parameters moved");
});

t.test('cosine schedule with warm-up', async (t) => {
  const o = { lr: 1, steps: 100, warmupSteps: 10 };
  t.equal(train.cosineLr(0, o), 0.1);
  t.equal(train.cosineLr(9, o), 1);
  t.equal(train.cosineLr(10, o), 1);
  t.ok(Math.abs(train.cosineLr(55, o) - 0.5) < 1e-12, 'half way through the decay: lr/2');
  t.ok(train.cosineLr(99, o) < 0.001, 'ends near 0');
});

t.test('fine-tuning on a real MNIST subset lowers the loss and raises accuracy, in both modes', async (t) => {
  const { d, model, theta0, head } = await setupTask();
  const before = await valAcc(model, theta0, theta0, head, d.val, false);
  const theta0Values = new Map([...theta0].map(([n, x]) => [n, Array.from(toF64(x))]));
  for (const mode of ['standard', 'linear'] as const) {
    const r = await train.finetune({ ...HP, mode, model, theta0, head, train: d.train, progress: { mode: 'none' } });
    const first = r.history.slice(0, 5).reduce((a, h) => a + h.loss, 0) / 5;
    const last = r.history.slice(-5).reduce((a, h) => a + h.loss, 0) / 5;
    const after = await valAcc(model, theta0, r.params, head, d.val, mode === 'linear');
    t.ok(last < first * 0.8, `${mode}: training loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
    t.ok(after > before + 0.05, `${mode}: validation accuracy ${(100 * before).toFixed(1)}% → ${(100 * after).toFixed(1)}%`);
    t.equal(r.step, HP.steps);
    t.ok(r.complete);
  }
  let changed = 0;
  for (const [n, x] of theta0) if (!isSame(Array.from(toF64(x)), theta0Values.get(n)!)) changed++;
  t.equal(changed, 0, `θ0 is never modified (all ${theta0.size} tensors equal their values before fine-tuning)`);
});

t.test("the loop's first gradients are the native core's (linear: backward through the JVP; standard)", async (t) => {
  const { d, model, theta0, head } = await setupTask();
  for (const mode of ['linear', 'standard'] as const) {
    let captured: StateDict | null = null;
    let loss = NaN;
    await train.finetune({
      ...HP,
      steps: 1,
      mode,
      model,
      theta0,
      head,
      train: d.train,
      progress: { mode: 'none' },
      onGradients: (step, g, l) => {
        if (step === 0) {
          captured = new Map([...g].map(([n, x]) => [n, x.clone()]));
          loss = l;
        }
      },
    });
    const sampler = new train.StepSampler(d.train.count, HP.batchSize, HP.seed);
    const { x, y } = train.batchTensors(d.train, sampler.indices(0));
    const direct = mode === 'linear' ? await model.linearize(theta0).lossAndGrad(x, y, { params: theta0, head }) : await model.lossAndGrad(x, y, { params: theta0, head });
    t.equal(loss, direct.loss, `${mode}: same loss`);
    let same = true;
    for (const [n, g] of direct.grads) same &&= toF64(g).every((v, i) => v === toF64(captured!.get(n)!)[i]);
    t.ok(same, `${mode}: every gradient identical bit for bit (${direct.grads.size} tensors)`);
  }
});

t.test('same seed → same numbers; resumed run == uninterrupted run (bit for bit)', async (t) => {
  const { d, model, theta0, head } = await setupTask();
  const base = { ...HP, steps: 12, warmupSteps: 3, model, theta0, head, train: d.train, progress: { mode: 'none' as const } };
  for (const mode of ['standard', 'linear'] as const) {
    const a = await train.finetune({ ...base, mode });
    const b = await train.finetune({ ...base, mode });
    t.equal(train.hashTensors(a.params), train.hashTensors(b.params), `${mode}: same seed, same θ`);
    t.same(a.history.map((h) => h.loss), b.history.map((h) => h.loss), `${mode}: same losses`);
    const c = await train.finetune({ ...base, mode, seed: 4 });
    t.not(train.hashTensors(a.params), train.hashTensors(c.params), `${mode}: another seed, another θ`);

    const file = path.join(tmp, `resume-${mode}.safetensors`);
    const part = await train.finetune({ ...base, mode, checkpoint: { file, every: 4, metadata: { task: 'mnist' } }, stopAtStep: 7 });
    t.equal(part.step, 7);
    t.notOk(part.complete);
    t.ok(fs.existsSync(train.optimStatePath(file)), 'optimizer state written beside the checkpoint');
    const state = train.loadTrainingState(file, model);
    t.equal(state.step, 7);
    t.equal(state.metadata.complete, 'false');
    const rest = await train.finetune({ ...base, mode, resume: state, checkpoint: { file, metadata: { task: 'mnist' } } });
    t.equal(rest.step, 12);
    t.equal(train.hashTensors(rest.params), train.hashTensors(a.params), `${mode}: resumed θ equals the uninterrupted θ bit for bit`);
    t.same(rest.history.map((h) => h.loss), a.history.slice(7).map((h) => h.loss), `${mode}: resumed losses equal`);
    const final = train.loadTensors(file);
    t.equal(final.metadata.complete, 'true');
    t.equal(train.hashTensors(final.tensors), train.hashTensors(a.params), `${mode}: the final checkpoint holds θ`);
    await t.rejects(train.finetune({ ...base, mode, lr: 1e-2, resume: train.loadTrainingState(file, model) }), ArgumentError, 'resuming with other hyper-parameters is refused');
  }
});

t.test('bad input is a clear typed error before any training step', async (t) => {
  const { d, model, theta0, head } = await setupTask();
  let steps = 0;
  const base = { ...HP, mode: 'standard' as const, model, theta0, head, progress: { mode: 'none' as const }, onGradients: () => void steps++ };
  const letters = await train.prepareTask('letters', { trainLimit: 200, valLimit: 10, testLimit: 10 });
  await t.rejects(train.finetune({ ...base, train: letters.train }), { name: 'ArgumentError', message: /26 classes .* head has only 10 outputs/ }, 'labels exceeding the head');
  const small: ImageSet = { ...d.train, count: 4, shape: [1, 14, 14], images: new Float32Array(4 * 196), labels: new Int32Array(4) };
  await t.rejects(train.finetune({ ...base, train: small }), ShapeError, 'images of the wrong shape');
  await t.rejects(train.finetune({ ...base, train: d.train, lr: -1 }), { name: 'ArgumentError', message: /lr/ }, 'bad hyper-parameter named');
  await t.rejects(train.finetune({ ...base, train: d.train, mode: 'tangent' as never }), ArgumentError, 'unknown mode');
  // A checkpoint of a different architecture.
  const other = Model.create({ ...TINY, dim: 16, mlpDim: 32 }, { seed: 2 });
  const file = path.join(tmp, 'other.safetensors');
  train.saveTensors(file, other.parameters(), { format: train.CHECKPOINT_FORMAT, mode: 'standard', step: '1', hyper: '{}' });
  t.throws(() => train.loadTrainingState(file, model), { name: 'CheckpointError', code: 'ERR_KEY_MISMATCH', message: /shape \[.*\] differs/ }, 'different architecture');
  t.throws(() => train.loadFinetuned(file, { model, config: TINY, theta0 }), CheckpointError);
  t.equal(steps, 0, 'no training step was taken');
  // A linear checkpoint records θ0 by content hash; another θ0 is refused.
  const lf = path.join(tmp, 'lin.safetensors');
  await train.finetune({ ...base, steps: 1, mode: 'linear', train: d.train, checkpoint: { file: lf, metadata: { task: 'mnist', theta0Sha256: 'a'.repeat(64), theta0Path: '/nowhere' } } });
  t.throws(() => train.loadFinetuned(lf, { model, config: TINY, theta0, sha256: 'b'.repeat(64) }), { name: 'CheckpointError', message: /different θ0/ });
  t.equal(train.loadFinetuned(lf, { model, config: TINY, theta0, sha256: 'a'.repeat(64) }).mode, 'linear');
});

t.test('checkpoint tensors round-trip through safetensors', async (t) => {
  const s: StateDict = new Map([['a', randTensor([2, 3], 1, 'float32')], ['b', Tensor.fromLabels([1, 2, 3])]]);
  const f = path.join(tmp, 'rt.safetensors');
  train.saveTensors(f, s, { k: 'v' });
  const r = train.loadTensors(f);
  t.equal(r.metadata.k, 'v');
  t.same(Array.from(toF64(r.tensors.get('a')!)), Array.from(toF64(s.get('a')!)));
  t.same(r.tensors.get('b')!.toArray(), [1, 2, 3]);
  t.equal(train.hashTensors(r.tensors), train.hashTensors(s));
});

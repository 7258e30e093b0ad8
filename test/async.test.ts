import { monitorEventLoopDelay } from 'node:perf_hooks';
import t from 'tap';
import { Model, Tensor } from '../lib';
import { randomTangent, randTensor } from './helpers';

const model = Model.create(
  { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 64, depth: 2, heads: 4, mlpDim: 128, numClasses: 10 },
  { seed: 0 },
);
const x = randTensor([384, 1, 28, 28], 1, 'float32');
const v = randomTangent(model, 2);

t.test('the event loop stays free while long JVPs run', async (t) => {
  // How long one JVP takes here: a JVP run on the JS thread would delay the loop by about that.
  const t0 = performance.now();
  await model.jvp(x, v);
  const one = performance.now() - t0;
  // The loop's delays while JVPs run back to back for at least a second (wall time only decides
  // how much work to do; the check is on the event-loop delay, with a generous bound).
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const start = performance.now();
  let jobs = 0;
  while (performance.now() - start < 1000 || jobs < 3) {
    await Promise.all([model.jvp(x, v), model.jvp(x, v)]);
    jobs += 2;
  }
  h.disable();
  const maxMs = h.max / 1e6;
  t.ok(maxMs < Math.max(one / 2, 100),
    `longest event-loop delay ${maxMs.toFixed(0)} ms over ${jobs} JVPs of ${one.toFixed(0)} ms each (bound: half of one JVP)`);
});

t.test('concurrent forward-AD calls give the results of sequential ones (the forward-AD lock)', async (t) => {
  // libtorch has one forward-AD level at a time: concurrent JVPs must be serialized, not mixed.
  const small = Model.create({ arch: 'mlp', inputDim: 6, hidden: [8], outputDim: 3 }, { seed: 4, dtype: 'float64' });
  const inputs = [0, 1, 2, 3, 4, 5].map((i) => randTensor([5, 6], 50 + i));
  const tangents = [0, 1, 2, 3, 4, 5].map((i) => randomTangent(small, 100 + 10 * i));
  const lin = small.linearize();
  const sequential: number[][] = [];
  for (const [i, xi] of inputs.entries()) {
    sequential.push(Array.from((await small.jvp(xi, tangents[i]!)).tangent.data() as Float64Array));
    sequential.push(Array.from((await lin.forward(xi, tangents[i]!)).data() as Float64Array));
  }
  const concurrent = await Promise.all(
    inputs.flatMap((xi, i) => [
      small.jvp(xi, tangents[i]!).then((r) => Array.from(r.tangent.data() as Float64Array)),
      lin.forward(xi, tangents[i]!).then((r: Tensor) => Array.from(r.data() as Float64Array)),
    ]),
  );
  t.same(concurrent, sequential, `${concurrent.length} concurrent JVPs / linearized forwards equal the sequential results exactly`);
});

import t from 'tap';
import { Model } from '../lib';
import { randomTangent, randTensor } from './helpers';

t.test('the event loop stays free while a long JVP runs', async (t) => {
  const model = Model.create(
    { arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 64, depth: 2, heads: 4, mlpDim: 128, numClasses: 10 },
    { seed: 0 },
  );
  const x = randTensor([256, 1, 28, 28], 1, 'float32');
  const v = randomTangent(model, 2);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const start = performance.now();
  let ticksAtEnd = 0;
  const jobs = [];
  for (let i = 0; i < 3; i++) jobs.push(model.jvp(x, v));
  await Promise.all(jobs);
  ticksAtEnd = ticks;
  clearInterval(timer);
  const ms = performance.now() - start;
  t.ok(ms > 50, `the JVPs took long enough to matter (${ms.toFixed(0)} ms)`);
  // A blocked loop would fire the interval at most once after the work; a free loop fires
  // it throughout (timers are coarse on a loaded machine, so ask for a quarter of the ideal).
  t.ok(ticksAtEnd >= Math.floor(ms / 5 / 4), `the 5 ms timer fired ${ticksAtEnd} times during ${ms.toFixed(0)} ms`);
});

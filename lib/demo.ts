/**
 * `tangent demo`: real work end to end on the native core — a JVP checked against finite
 * differences and the double-backward JVP, the linearized model's identities, and a few steps
 * of linear fine-tuning — printing what it measured.
 */
import { Model, type StateDict } from './model';
import { combineStates } from './ops';
import { getNumThreads, runtimeInfo, setNumThreads } from './runtime';
import { Tensor } from './tensor';

export interface DemoOptions {
  quick?: boolean;
  threads?: number;
  json?: boolean;
  log?: (line: string) => void;
}

function seededNormal(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const u = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

function f64(t: Tensor): Float64Array {
  return Float64Array.from(t.data() as ArrayLike<number>);
}

async function timeMs(fn: () => Promise<unknown>, reps: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export async function runDemo(opts: DemoOptions = {}): Promise<Record<string, unknown>> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const threads = opts.threads ?? 2;
  setNumThreads(threads);
  const info = runtimeInfo();
  const report: Record<string, unknown> = { libtorch: info.torchVersion, threads: getNumThreads(), quick: !!opts.quick };
  log(`tangent-edit demo — libtorch ${info.torchVersion}, ${getNumThreads()} threads, CUDA ${info.cudaAvailable ? 'yes' : 'no'}`);

  // 1. JVP by forward-mode AD against central finite differences, in float64, on a small ViT.
  const small = Model.create(
    { arch: 'vit', imageSize: 28, patchSize: 7, inChannels: 1, dim: 32, depth: 2, heads: 4, mlpDim: 64, numClasses: 10 },
    { seed: 1, dtype: 'float64' },
  );
  const xs = Tensor.from(Float64Array.from(seededNormal(4 * 784, 2)), [4, 1, 28, 28]);
  const v: StateDict = new Map();
  let s = 100;
  for (const [name, spec] of small.spec) v.set(name, Tensor.from(Float64Array.from(seededNormal(spec.shape.reduce((a, b) => a * b, 1), s++)), spec.shape));
  const jvp = await small.jvp(xs, v);
  const h = 1e-6;
  const theta0 = small.parameters();
  const [plus, minus] = await Promise.all([combineStates(theta0, [v], [h], { compute: 'float64' }), combineStates(theta0, [v], [-h], { compute: 'float64' })]);
  const fp = f64(await small.forward(xs, plus));
  const fm = f64(await small.forward(xs, minus));
  const jv = f64(jvp.tangent);
  let num = 0;
  let den = 0;
  for (let i = 0; i < jv.length; i++) {
    const fd = (fp[i]! - fm[i]!) / (2 * h);
    num += (jv[i]! - fd) ** 2;
    den += fd ** 2;
  }
  const fdErr = Math.sqrt(num / den);
  const db = f64(await small.jvpDoubleBackward(xs, v));
  let dbErr = 0;
  for (let i = 0; i < jv.length; i++) dbErr = Math.max(dbErr, Math.abs(db[i]! - jv[i]!));
  log(`JVP vs central finite differences (float64 ViT, ${small.numel} params): relative error ${fdErr.toExponential(2)}`);
  log(`JVP vs double-backward JVP: max |Δ| ${dbErr.toExponential(2)}`);
  report.jvpFiniteDifferenceRelErr = fdErr;
  report.jvpDoubleBackwardMaxAbsDiff = dbErr;

  // 2. The linearized model on a float32 ViT: identities and cost.
  const cfg = opts.quick
    ? ({ arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 64, depth: 2, heads: 4, mlpDim: 128, numClasses: 10 } as const)
    : ({ arch: 'vit', imageSize: 28, patchSize: 4, inChannels: 1, dim: 128, depth: 4, heads: 4, mlpDim: 256, numClasses: 10 } as const);
  const batch = opts.quick ? 64 : 128;
  const model = Model.create(cfg, { seed: 7 });
  const teacher = Model.create(cfg, { seed: 8 });
  const x = Tensor.from(seededNormal(batch * 784, 9), [batch, 1, 28, 28]);
  const teacherOut = (await teacher.forward(x)).data() as Float32Array;
  const labels: number[] = [];
  for (let b = 0; b < batch; b++) {
    const row = teacherOut.subarray(b * 10, b * 10 + 10);
    labels.push(row.indexOf(Math.max(...row)));
  }
  const y = Tensor.fromLabels(labels);
  const lin = model.linearize();
  const f = f64(await model.forward(x));
  const fl = f64(await lin.forward(x));
  const identical = f.every((a, i) => a === fl[i]);
  log(`ViT dim ${cfg.dim}, depth ${cfg.depth} (${model.numel} params): f_lin(x; θ0) == f(x; θ0) bit for bit: ${identical}`);
  const reps = opts.quick ? 3 : 5;
  const tf = await timeMs(() => model.forward(x), reps);
  const tl = await timeMs(() => lin.forward(x), reps);
  log(`forward ${tf.toFixed(1)} ms, linearized forward ${tl.toFixed(1)} ms (${(tl / tf).toFixed(2)}×), batch ${batch}`);
  report.linearizedIdentityAtTheta0 = identical;
  report.forwardMs = tf;
  report.linearizedForwardMs = tl;

  // 3. A few steps of linear fine-tuning (SGD on θ inside f_lin) towards a teacher's labels.
  const steps = opts.quick ? 8 : 25;
  const lr = 0.05;
  let theta: StateDict = new Map(model.parameters());
  const losses: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const r = await lin.lossAndGrad(x, y, { params: theta });
    losses.push(r.loss);
    const names = [...theta.keys()];
    theta = await combineStates(theta, [r.grads], [-lr]);
    for (const n of names) r.grads.get(n)!.dispose();
  }
  const stepMs = (performance.now() - t0) / steps;
  const final = await lin.evaluate(x, y, { params: theta });
  log(`linear fine-tuning, ${steps} SGD steps (lr ${lr}): loss ${losses[0]!.toFixed(4)} → ${final.loss.toFixed(4)}, batch accuracy ${(final.correct / batch).toFixed(3)}, ${stepMs.toFixed(1)} ms/step`);
  report.linearTrainLossStart = losses[0];
  report.linearTrainLossEnd = final.loss;
  report.linearTrainAccuracy = final.correct / batch;
  report.linearTrainStepMs = stepMs;
  if (opts.json) console.log(JSON.stringify(report, null, 2));
  return report;
}

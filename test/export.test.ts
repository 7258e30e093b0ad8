// torch.export programs (.pt2), exported at test time by the PyTorch the addon is built against
// (test/fixtures/make_export_fixtures.py, each with a dynamic batch dimension): forward, JVP and
// linearized gradient against PyTorch's eager module; dynamic shapes and their ranges; output
// selection; the weights as data (loadStateDict); and programs that must be refused — by PyTorch
// (training-mode BatchNorm, torch.cond, a custom op) and crafted from a real one (another schema
// version, an unknown operator, an undefined value, a duplicate key, a short weight record, a
// pickled weight, an unknown argument, a missing one).
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ArgumentError, CheckpointError, DTypeError, loadStateDict, Model, ShapeError, Tensor, UnsupportedError } from '../lib';
import { empiricalNtk } from '../lib/analysis/ntk';
import { ZipReader } from '../lib/checkpoint/zip';
import { prepareData } from '../lib/data/spec';
import { json, run, skipWithoutDist, writePngs } from './cli-fixtures';
import { stored, zip } from './fixtures/security/craft';
import { crossCheck, generate, manifest, needPython, readBin, relMax, values } from './torchscript-fixtures';

const GENERATOR = path.join(__dirname, 'fixtures', 'make_export_fixtures.py');
// float32; the same kernels as PyTorch's eager forward, node by node.
const TOL = { forward: 1e-5, jvp: 1e-5, grad: 1e-4 };
const MODULES = ['torch', 'torch.export'];

t.test('small torch.export programs against PyTorch', async (t) => {
  if (!needPython(t, MODULES)) return;
  const dir = generate(t, ['small'], GENERATOR);
  for (const name of ['features', 'plain_values', 'twoheads', 'twoheads_bias', 'extras', 'tiny']) {
    const m = manifest(dir, name);
    await crossCheck(t, dir, m, m.modules.exported!, `${name} (.pt2)`, TOL);
  }

  t.test('the empirical NTK of a .pt2 equals the Gram of its VJP rows', async (t) => {
    const model = await Model.load(path.join(dir, 'tiny.pt2'));
    const [x] = readAll(dir, 'tiny') as [Tensor];
    const n = x.shape[0]!;
    const { gram } = await empiricalNtk(model, x, { output: 'trace' });
    const k = values(gram);
    // Independent: one VJP per (sample, logit) with a one-hot cotangent; K[i][j] = Σ_c g_ic · g_jc.
    const rows: Float64Array[][] = [];
    for (let i = 0; i < n; i++) {
      rows.push([]);
      for (let c = 0; c < 4; c++) {
        const e = new Float32Array(n * 4);
        e[i * 4 + c] = 1;
        const g = await model.vjp(x, Tensor.from(e, [n, 4]));
        rows[i]!.push(Float64Array.from([...g.values()].flatMap((v) => Array.from(values(v)))));
      }
    }
    const want = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++)
        for (let c = 0; c < 4; c++) want[i * n + j] += rows[i]![c]!.reduce((a, v, q) => a + v * rows[j]![c]![q]!, 0);
    t.ok(relMax(k, want) < 1e-4, `NTK (trace over 4 logits, ${n}×${n}) equals the VJP Gram (${relMax(k, want).toExponential(2)})`);
    model.dispose();
  });

  t.test('the weights are read as data, parameters then buffers, with PyTorch\'s values', async (t) => {
    const file = path.join(dir, 'extras.pt2');
    const m = manifest(dir, 'extras') as ReturnType<typeof manifest> & { state: Record<string, { sum: number; shape: number[] }> };
    const { tensors, format } = await loadStateDict(file);
    t.equal(format, 'export');
    t.same([...tensors.keys()], [...m.params, ...m.buffers], 'names and order: named_parameters(), then named_buffers() (non-persistent ones too)');
    for (const [k, want] of Object.entries(m.state)) {
      const got = tensors.get(k)!;
      t.same(got.shape, want.shape, `${k}: shape`);
      const sum = Array.from(got.data() as ArrayLike<number | bigint>, Number).reduce((a, b) => a + b, 0);
      t.ok(Math.abs(sum - want.sum) <= 1e-5 * Math.max(1, Math.abs(want.sum)), `${k}: values (sum ${sum} vs ${want.sum})`);
    }
    const model = await Model.load(file);
    for (const [k, p] of model.parameters()) t.equal(relMax(values(p), values(tensors.get(k)!)), 0, `${k}: the model's θ0 is the file's`);
    model.dispose();
  });

  t.test('the batch dimension is dynamic, within the range it was exported for', async (t) => {
    const m = manifest(dir, 'features');
    const model = await Model.load(path.join(dir, 'features.pt2'), { output: 'logits' });
    const [x, mask] = m.inputs.map((s) => readBin(dir, s)) as [Tensor, Tensor];
    const ref = values(readBin(dir, m.output));
    const x1 = Tensor.from((x.data() as Float32Array).slice(0, 48), [1, 3, 4, 4]);
    const mask1 = Tensor.from((mask.data() as Uint8Array).slice(0, 16), [1, 16], 'bool');
    const out1 = await model.forward([x1, mask1]);
    t.same(out1.shape, [1, 5]);
    t.ok(relMax(values(out1), ref.subarray(0, 5)) < 1e-5, 'batch 1 gives row 0 of the batch-3 output');
    await t.rejects(model.forward([x, mask1]), { name: 'ShapeError', message: /input 'mask' dimension 0 \(s\d+\) is 1, but input 'x' has 3 for the same dimension/ });
    await t.rejects(model.forward([Tensor.from(new Float32Array(3 * 3 * 5 * 4), [3, 3, 5, 4]), mask]), { name: 'ShapeError', message: /input 'x' must have shape \[s\d+, 3, 4, 4\], got \[3, 3, 5, 4\]/ });
    await t.rejects(model.forward([Tensor.from(new Float64Array(144), [3, 3, 4, 4]), mask]), DTypeError);
    await t.rejects(model.forward(x), { name: 'ArgumentError', message: /takes 2 tensor input\(s\) \(x, mask\), got 1/ });
    const big = Tensor.from(new Float32Array(1025 * 48), [1025, 3, 4, 4]);
    const bigMask = Tensor.from(new Uint8Array(1025 * 16), [1025, 16], 'bool');
    await t.rejects(model.forward([big, bigMask]), { name: 'ShapeError', message: /is 1025, outside the range the program was exported for \[1, 1024\]/ });
    model.dispose();
  });

  t.test('output chooses among a dict or tuple result by key or index', async (t) => {
    const file = path.join(dir, 'features.pt2');
    await t.rejects(Model.load(file), { name: 'ArgumentError', message: /returns a dict of 2 \("logits", "features"\); choose the model's output with output/ });
    await t.rejects(Model.load(file, { output: 'nope' }), { name: 'ArgumentError', message: /output "nope" is not one of the program's outputs \("logits", "features"\)/ });
    const f = await Model.load(file, { output: 1 });
    t.same((await f.forward(readAll(dir, 'features'))).shape, [3, 16], 'index 1 is "features"');
    f.dispose();
    await t.rejects(Model.load(path.join(dir, 'twoheads.pt2'), { output: 'a' }), ArgumentError);
    await t.rejects(Model.load(path.join(dir, 'twoheads.pt2'), { output: 2 }), { message: /output 2 is not one of the program's outputs \(0, 1\)/ });
  });
});

t.test('the CLI on a .pt2: finetune (standard, linear) → eval by metadata, equal to the library\'s f_lin', { skip: skipWithoutDist }, async (t) => {
  if (!needPython(t, MODULES)) return;
  const dir = generate(t, ['small'], GENERATOR);
  const pt2 = path.join(dir, 'tiny.pt2');
  const data = await writePngs(path.join(dir, 'cols'));
  const out = path.join(dir, 'cols-lin.safetensors');
  const ft = json(run('finetune', '--data', data, '--model', pt2, '--mode', 'linear', '--out', out, '--steps', '6', '--batch-size', '16', '--lr', '0.5', '--progress', 'none', '--json'));
  t.equal(ft.evaluatedWith, 'f_lin');
  const std = json(run('finetune', '--data', data, '--model', pt2, '--mode', 'standard', '--out', path.join(dir, 'cols-std.safetensors'), '--steps', '6', '--batch-size', '16', '--lr', '0.01', '--progress', 'none', '--json'));
  t.equal(std.evaluatedWith, 'f', 'standard fine-tuning of a .pt2 too');
  const ins = json(run('inspect', '--json', out));
  t.equal(ins.tangent.model.arch, 'exported', 'the checkpoint names the .pt2 as its model');
  t.equal(ins.tangent.model.path, pt2);
  const ip = json(run('inspect', '--json', pt2));
  t.equal(ip.format, 'export');
  t.same(ip.tensors.map((x: { name: string }) => x.name), ['conv.weight', 'conv.bias', 'fc1.weight', 'fc1.bias', 'norm.weight', 'norm.bias', 'fc2.weight', 'fc2.bias', 'scale']);
  const ev = json(run('eval', '--checkpoints', out, '--progress', 'none', '--json'));
  t.equal(ev.checkpoints[0].evaluatedWith, 'f_lin');
  t.equal(ev.checkpoints[0].accuracy.cols, ft.finetuned.test, "eval's accuracy = finetune's own");
  const model = await Model.load(pt2);
  const d = await prepareData(data, { testLimit: 1000 });
  const x = Tensor.from(d.test.images, [d.test.count, ...d.test.shape]);
  const y = Tensor.from(BigInt64Array.from(d.test.labels, (l) => BigInt(l)), [d.test.count], 'int64');
  const lin = await model.linearize(model.parameters()).evaluate(x, y, { params: (await loadStateDict(out)).tensors });
  t.equal(ev.checkpoints[0].accuracy.cols, lin.correct / d.test.count, `CLI accuracy = library f_lin accuracy (${lin.correct}/${d.test.count})`);
  model.dispose();
});

function readAll(dir: string, name: string): Tensor[] {
  return manifest(dir, name).inputs.map((s) => readBin(dir, s));
}

t.test('programs tangent-edit refuses, each with a typed error naming why', async (t) => {
  if (!needPython(t, MODULES)) return;
  const dir = generate(t, ['hostile'], GENERATOR);
  const f = (n: string) => path.join(dir, n);
  await t.rejects(Model.load(f('train_bn.pt2')), { name: 'UnsupportedError', message: /writes in place to buffer 'bn\.\w+'.*export model\.eval\(\)/s }, 'BatchNorm in training mode');
  await t.rejects(Model.load(f('cond.pt2')), { name: 'UnsupportedError', message: /higher-order operator/ }, 'torch.cond');
  await t.rejects(Model.load(f('custom_op.pt2')), { name: 'UnsupportedError', message: /calls an operator of namespace "tangent_test"/ }, 'a custom op');
  await t.rejects(Model.load(f('inplace_input.pt2')), { name: 'UnsupportedError', message: /updates user input "x"|writes in place to user input 'x'/ }, 'a forward that writes to its input');
  await t.rejects(Model.load(f('no_grad.pt2')), { name: 'UnsupportedError', message: /"torch\.ops\.higher_order\.wrap_with_set_grad_enabled"\) is a higher-order operator/ }, 'a torch.no_grad() region');
  // An op without a forward-mode derivative: the forward runs, a JVP names the op and the node.
  const warp = await Model.load(f('no_forward_ad.pt2'));
  const q = Tensor.from(Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)), [2, 16]);
  t.same((await warp.forward(q)).shape, [2, 9], 'the plain forward runs');
  await t.rejects(warp.jvp(q, warp.parameters()), { name: 'UnsupportedError', message: /node 'grid_sampler\w*' \(aten::grid_sampler\S*\) reaches grid_sampler_2d, which has no forward-mode derivative/ });
  warp.dispose();
  const hs = await Model.load(f('hardsigmoid.pt2'));
  const z = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => Math.cos(i)), [3, 4]);
  const labels = Tensor.fromLabels([0, 1, 2]);
  await hs.jvp(z, hs.parameters());
  t.ok(Number.isFinite((await hs.lossAndGrad(z, labels)).loss), 'hardsigmoid: JVP and standard training run');
  await t.rejects(hs.linearize().lossAndGrad(z, labels, { params: hs.parameters() }), { name: 'UnsupportedError', message: /linearized training needs the derivative of aten::hardsigmoid_backward/ });
  hs.dispose();
  // Each still gives its weights as data.
  t.same([...(await loadStateDict(f('custom_op.pt2'))).tensors.keys()], ['fc.weight', 'fc.bias']);

  // Crafted from a real program: plain.pt2 is Linear(4, 3) + ReLU with batch in [2, 8].
  const plain = await Model.load(f('plain.pt2'));
  const x = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => i / 7 - 0.5), [3, 4]);
  const y = values(await plain.forward(x));
  t.equal(y.length, 9);
  await t.rejects(plain.forward(Tensor.from(new Float32Array(4), [1, 4])), { name: 'ShapeError', message: /outside the range the program was exported for \[2, 8\]/ });
  plain.dispose();

  const entries = readZip(f('plain.pt2'));
  const root = [...entries.keys()][0]!.split('/')[0]!;
  const modelJson = () => JSON.parse(Buffer.from(entries.get(`${root}/models/model.json`)!).toString('utf8')) as Record<string, any>;
  let n = 0;
  const craft = (change: (files: Map<string, Uint8Array>) => void): string => {
    const files = new Map([...entries].map(([k, v]) => [k, v.slice()]));
    change(files);
    const out = f(`crafted${n++}.pt2`);
    fs.writeFileSync(out, zip([...files].map(([k, v]) => stored(k, v))));
    return out;
  };
  const withModel = (edit: (j: Record<string, any>) => void) =>
    craft((files) => {
      const j = modelJson();
      edit(j);
      files.set(`${root}/models/model.json`, Buffer.from(JSON.stringify(j)));
    });
  const linear = (j: Record<string, any>) => (j.graph_module.graph.nodes as Array<Record<string, any>>).find((nd) => nd.target === 'torch.ops.aten.linear.default')!;

  await t.rejects(Model.load(withModel((j) => { j.schema_version.major = 9; })), { name: 'UnsupportedError', message: /schema version 9\.\d+; tangent-edit reads version 8\.x/ });
  await t.rejects(Model.load(withModel((j) => { linear(j).target = 'torch.ops.aten.no_such_op.default'; })), { name: 'UnsupportedError', message: /calls aten::no_such_op\.default, which this libtorch \(.*\) does not have/ });
  await t.rejects(Model.load(withModel((j) => { linear(j).target = 'os.system'; })), { name: 'UnsupportedError', message: /"os\.system"\) is not an aten\/prims operator/ });
  await t.rejects(Model.load(withModel((j) => { linear(j).inputs[0].arg = { as_tensor: { name: 'ghost' } }; })), { name: 'CheckpointError', code: 'ERR_SCHEMA', message: /reads "ghost", which no input or earlier node defines/ });
  await t.rejects(Model.load(withModel((j) => { linear(j).inputs.push({ name: 'alpha', arg: { as_float: 2 }, kind: 2 }); })), { name: 'ArgumentError', message: /gives argument 'alpha', which aten::linear\.default does not take/ });
  await t.rejects(Model.load(withModel((j) => { linear(j).inputs = linear(j).inputs.filter((a: { name: string }) => a.name !== 'weight'); })), { message: /lacks argument 'weight', which has no default/ });
  await t.rejects(Model.load(withModel((j) => { linear(j).inputs[0].arg = { as_graph: { name: 'g', graph: {} } }; })), { name: 'UnsupportedError', message: /"as_graph" \(a subgraph\)/ });
  await t.rejects(Model.load(withModel((j) => { linear(j).name = 'evil\u001b[2J'; })), { name: 'CheckpointError', message: /"evil\\x1b\[2J" is not a printable name/ });
  // Duplicate keys and deep nesting: JSON.parse would keep the last key / may overflow.
  await t.rejects(Model.load(craft((files) => {
    const text = Buffer.from(files.get(`${root}/models/model.json`)!).toString('utf8');
    files.set(`${root}/models/model.json`, Buffer.from(text.replace('{"graph_module": {', '{"graph_module": {"graph": {}, ')));
  })), { name: 'CheckpointError', code: 'ERR_DUPLICATE_KEY' });
  await t.rejects(Model.load(craft((files) => { files.set(`${root}/models/model.json`, Buffer.from('['.repeat(100000) + ']'.repeat(100000))); })), { name: 'CheckpointError', code: 'ERR_LIMIT' });
  // Weights: a record shorter than its metadata, a pickled weight, a path outside data/weights.
  const weightsCfg = `${root}/data/weights/model_weights_config.json`;
  const cfg = () => JSON.parse(Buffer.from(entries.get(weightsCfg)!).toString('utf8')) as { config: Record<string, Record<string, any>> };
  await t.rejects(Model.load(craft((files) => {
    const c = cfg().config['0.weight']!;
    files.set(`${root}/data/weights/${c.path_name}`, new Uint8Array(8));
  })), { name: 'CheckpointError', code: 'ERR_SIZE_MISMATCH', message: /tensor "0\.weight": .* holds 8 bytes; float32\[3,4\]/ });
  await t.rejects(Model.load(craft((files) => {
    const c = cfg();
    c.config['0.weight']!.use_pickle = true;
    files.set(weightsCfg, Buffer.from(JSON.stringify(c)));
  })), { name: 'CheckpointError', code: 'ERR_SCHEMA', message: /tensor "0\.weight" is stored as a pickle/ });
  await t.rejects(Model.load(craft((files) => {
    const c = cfg();
    c.config['0.weight']!.path_name = '../models/model.json';
    files.set(weightsCfg, Buffer.from(JSON.stringify(c)));
  })), { name: 'CheckpointError', message: /leaves data\/weights/ });
  await t.rejects(Model.load(craft((files) => {
    const c = cfg();
    c.config['0.weight']!.tensor_meta.sizes = [{ as_int: 4 }, { as_int: 3 }];
    files.set(weightsCfg, Buffer.from(JSON.stringify(c)));
  })), { name: 'CheckpointError', message: /tensor "0\.weight" is float32\[4,3\] in data\/weights\/ but float32\[3,4\] in the graph/ });
  // A strided weight (a transposed view of its record) is gathered; a stride-0 expansion past the
  // view allowance is refused before allocating.
  const transposed = craft((files) => {
    const c = cfg();
    c.config['0.weight']!.tensor_meta.strides = [{ as_int: 1 }, { as_int: 3 }];
    files.set(weightsCfg, Buffer.from(JSON.stringify(c)));
  });
  const w = (await loadStateDict(f('plain.pt2'))).tensors.get('0.weight')!.data() as Float32Array;
  const wt = (await loadStateDict(transposed)).tensors.get('0.weight')!.data() as Float32Array;
  t.same(Array.from(wt), Array.from({ length: 12 }, (_, k) => w[(k % 4) * 3 + Math.floor(k / 4)]), 'strides [1, 3] read the record column-major');
  await t.rejects(loadStateDict(craft((files) => {
    const c = cfg();
    c.config['0.weight']!.tensor_meta.sizes = [{ as_int: 4096 }, { as_int: 4096 }];
    c.config['0.weight']!.tensor_meta.strides = [{ as_int: 0 }, { as_int: 0 }];
    files.set(weightsCfg, Buffer.from(JSON.stringify(c)));
    const j = modelJson();
    const name = j.graph_module.signature.input_specs.find((sp: Record<string, any>) => sp.parameter?.parameter_name === '0.weight').parameter.arg.name;
    j.graph_module.graph.tensor_values[name].sizes = [{ as_int: 4096 }, { as_int: 4096 }];
    files.set(`${root}/models/model.json`, Buffer.from(JSON.stringify(j)));
  })), { name: 'CheckpointError', code: 'ERR_LIMIT', message: /tensor "0\.weight": float32\[4096,4096\] with strides \[0,0\] would copy 67108864 bytes/ });
  t.ok(UnsupportedError && CheckpointError && ShapeError, 'error classes exported');
});

function readZip(file: string): Map<string, Uint8Array> {
  const fd = fs.openSync(file, 'r');
  try {
    const z = new ZipReader(file, fd);
    return new Map(z.order.map((n) => [n, z.read(z.entries.get(n)!, 1 << 30)]));
  } finally {
    fs.closeSync(fd);
  }
}

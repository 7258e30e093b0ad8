// TorchScript coverage on small modules generated at test time by Debian's python3-torch: plain
// attributes, dropout, batch norm, multi-head attention with a mask input, optional inputs, tuple
// and dict results (cross-checked against PyTorch), and the typed errors of what stays unsupported.
import * as path from 'node:path';
import t from 'tap';
import { ArgumentError, Model, Tensor, UnsupportedError } from '../lib';
import { crossCheck, generate, manifest, needPython, readBin, relMax, values } from './torchscript-fixtures';

const TOL = { forward: 1e-5, jvp: 1e-5, grad: 1e-4 };

t.test('small TorchScript modules against PyTorch', async (t) => {
  if (!needPython(t, ['torch'])) return;
  const dir = generate(t, ['small']);

  t.test('scripted: int/float/bool/str/list attributes, Conv2d+BatchNorm2d+ReLU, MultiheadAttention with a mask input, Dropout, LayerNorm, GELU, a non-tensor argument with a default, a dict result', async (t) => {
    const m = manifest(dir, 'features');
    await crossCheck(t, dir, m, m.modules.scripted!, 'features (scripted)', TOL);
    const model = await Model.load(path.join(dir, m.modules.scripted!), { output: 'logits', trustCode: true });
    t.same([...model.bufferNames], ['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked'], 'BatchNorm running statistics are buffers');
    // The buffers are read at run time, not baked in: overriding running_var changes the output.
    const [x, mask] = m.inputs.map((s) => readBin(dir, s)) as [Tensor, Tensor];
    const params = new Map(model.parameters());
    const rv = model.buffers().get('bn.running_var')!;
    params.set('bn.running_var', Tensor.from(new Float32Array(rv.shape[0]!).fill(4), rv.shape));
    const a = values(await model.forward([x, mask]));
    const b = values(await model.forward([x, mask], params));
    t.ok(relMax(b, a) > 1e-3, 'a running_var override changes the forward');
    await t.rejects(model.forward(x), { name: 'ArgumentError', message: /forward takes 2 tensor input\(s\) \(x, mask\), got 1/ }, 'a missing mask is an ArgumentError naming the inputs');
    model.dispose();
  });

  t.test('scripted: List[str], Tuple[int, int], Optional[float] None, torch.device and List[float] attributes', async (t) => {
    const m = manifest(dir, 'plain_values');
    await crossCheck(t, dir, m, m.modules.scripted!, 'plain values (scripted)', TOL);
  });

  t.test('traced and scripted: a tuple result chosen by index', async (t) => {
    const m = manifest(dir, 'twoheads');
    await crossCheck(t, dir, m, m.modules.scripted!, 'twoheads (scripted, output 1)', TOL);
    await crossCheck(t, dir, m, m.modules.traced!, 'twoheads (traced, output 1)', TOL);
  });

  t.test('an Optional[Tensor] second input, given or left out', async (t) => {
    const m = manifest(dir, 'twoheads_bias');
    await crossCheck(t, dir, m, m.modules.scripted!, 'twoheads with bias input (scripted, output 0)', TOL);
    const model = await Model.load(path.join(dir, m.modules.scripted!), { output: 0, trustCode: true });
    const x = readBin(dir, m.inputs[0]!);
    const bias = readBin(dir, m.inputs[1]!);
    const withBias = values(await model.forward([x, bias]));
    const without = values(await model.forward(x));
    t.ok(relMax(withBias, values(readBin(dir, m.output))) <= TOL.forward, 'given: as PyTorch');
    t.ok(relMax(without, withBias) > 1e-3, 'left out: None, a different result');
    model.dispose();
  });

  t.test('what cannot be lowered fails at load with a typed error naming it and the remedy', async (t) => {
    const load = (name: string, opts = {}) => Model.load(path.join(dir, `${name}.scripted.pt`), { trustCode: true, ...opts });
    await t.rejects(load('TensorListAttr'), UnsupportedError);
    await t.rejects(load('TensorListAttr'), { code: 'ERR_TANGENT_UNSUPPORTED', message: /attribute 'tensors' of type List\[Tensor\].*torch\.jit\.trace/ });
    await t.rejects(load('Counter'), { name: 'UnsupportedError', message: /assigns attribute 'calls' \(prim::SetAttr\).*torch\.jit\.trace/ });
    await t.rejects(load('IntArgument'), { name: 'UnsupportedError', message: /forward argument 'times' has type int and no default/ });
    const two = manifest(dir, 'twoheads').modules.scripted!.replace('.scripted.pt', '');
    await t.rejects(load(two), { name: 'ArgumentError', message: /returns Tuple\[Tensor, Tensor\]; choose one tensor with the output option \(an index 0\.\.1\)/ });
    await t.rejects(load(two, { output: 2 }), { name: 'ArgumentError', message: /got 2/ });
    await t.rejects(load('features', { output: 'nope' }), { name: 'ArgumentError', message: /returns a dict with keys 'logits', 'features'; the output option 'nope' is none of them/ });
    await t.rejects(load('features', { output: -1 }), { name: 'ArgumentError', message: /output must be a non-negative integer index or a non-empty key/ });
    await t.rejects(load('TensorListAttr', { output: 0 }), UnsupportedError, 'unsupported attributes are reported before the output option');

    // Traced under torch.no_grad(): the fused attention kernel was recorded. It runs forward (as
    // PyTorch does), and a JVP names the op and the remedy instead of libtorch's bare message.
    const traced = await Model.load(path.join(dir, 'NoGradTrace.traced.pt'), { trustCode: true });
    const x = Tensor.from(new Float32Array(2 * 5 * 16).map((_, i) => Math.sin(i)), [2, 5, 16]);
    t.same((await traced.forward(x)).shape, [2, 5, 16], 'forward runs');
    const tau = new Map([...traced.parameters()].map(([n, p]) => [n, Tensor.from(new Float32Array(p.shape.reduce((a, b) => a * b, 1)).fill(0.1), p.shape)]));
    await t.rejects(traced.jvp(x, tau), { name: 'UnsupportedError', message: /aten::_native_multi_head_attention has no forward-mode derivative.*trace it with gradients enabled/ });
    traced.dispose();
  });
});

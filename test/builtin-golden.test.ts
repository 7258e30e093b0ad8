/**
 * The built-in MLP, CNN and ViT against an outside reference: PyTorch modules written with torch.nn
 * (test/fixtures/gen_builtin_goldens.py, run once with Debian's python3-torch; its output is committed
 * as builtin_golden.json). Same parameters, same input: the forward must equal PyTorch's, and the
 * JVP must equal torch.autograd.forward_ad's. If python3-torch is here, the generator is re-run and
 * must reproduce the committed file's numbers.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { Model, Tensor, type ModelConfig, type StateDict } from '../lib';
import { FIXTURES, maxAbsDiff, needsTorch, relErr, runPython, tmpDir, toF64 } from './helpers';

interface Flat { shape: number[]; data: number[] }
interface Case { config: ModelConfig; params: Record<string, Flat>; input: Flat; tangent: Record<string, Flat>; output: Flat; jvp: Flat }
const golden = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'builtin_golden.json'), 'utf8')) as { cases: Record<string, Case> };
const state = (r: Record<string, Flat>): StateDict => new Map(Object.entries(r).map(([n, f]) => [n, Tensor.fromArray(f.data, f.shape, 'float64')]));

for (const [name, c] of Object.entries(golden.cases)) {
  t.test(`${name}: forward and JVP equal PyTorch's (float64)`, async (t) => {
    const model = Model.create(c.config, { seed: 0, dtype: 'float64' });
    t.same([...model.spec.keys()], Object.keys(c.params), 'parameter names and order are PyTorch-compatible');
    for (const [n, s] of model.spec) t.same(s.shape, c.params[n]!.shape, `${n}: shape ${JSON.stringify(s.shape)}`);
    const params = state(c.params);
    const x = Tensor.fromArray(c.input.data, c.input.shape, 'float64');
    const y = await model.forward(x, params);
    t.same(y.shape, c.output.shape, 'output shape');
    const fwdErr = maxAbsDiff(toF64(y), c.output.data);
    t.ok(fwdErr <= 1e-12, `forward: max |Δ| vs PyTorch ${fwdErr.toExponential(2)}`);
    const { primal, tangent } = await model.jvp(x, state(c.tangent), { params0: params });
    t.ok(maxAbsDiff(toF64(primal), c.output.data) <= 1e-12, 'JVP primal equals the forward');
    const jvpErr = relErr(toF64(tangent), c.jvp.data);
    t.ok(jvpErr <= 1e-12, `JVP: relative error vs torch.autograd.forward_ad ${jvpErr.toExponential(2)}`);
  });
}

t.test('the generator reproduces the committed goldens', { skip: needsTorch() }, async (t) => {
  const out = path.join(tmpDir(t), 'golden.json');
  // As a file (it imports its sibling torch_compat.py), with the interpreter the helpers chose.
  const gen = path.join(FIXTURES, 'gen_builtin_goldens.py');
  runPython(`import runpy, sys; sys.argv = [${JSON.stringify(gen)}, ${JSON.stringify(out)}]; runpy.run_path(sys.argv[0], run_name='__main__')`);
  const fresh = JSON.parse(fs.readFileSync(out, 'utf8')) as { cases: Record<string, Case> };
  for (const [name, c] of Object.entries(golden.cases)) {
    const f = fresh.cases[name]!;
    t.ok(maxAbsDiff(f.output.data, c.output.data) <= 1e-12 && maxAbsDiff(f.jvp.data, c.jvp.data) <= 1e-12, `${name}: same outputs and JVP`);
  }
});

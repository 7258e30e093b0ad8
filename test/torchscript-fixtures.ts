import type { Test } from 'tap';
/**
 * Shared by test/torchscript*.test.ts: generates TorchScript modules and PyTorch reference values
 * at test time with Debian's python3-torch / python3-torchvision
 * (test/fixtures/make_torchscript_fixtures.py, into a temporary directory), and compares
 * tangent-edit's forward, JVP and linearized gradient with them.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Model, Tensor, type StateDict } from '../lib';

export const PYTHON = process.env.TANGENT_TEST_PYTHON ?? process.env.TANGENT_PYTHON ?? '/usr/bin/python3';
const GENERATOR = path.join(__dirname, 'fixtures', 'make_torchscript_fixtures.py');

/** Why PyTorch (and these Python modules) cannot be used here, or null when they can. */
export function pythonMissing(modules: string[]): string | null {
  const r = spawnSync(PYTHON, ['-c', `import ${modules.join(', ')}`], { encoding: 'utf8' });
  if (r.error) return `${PYTHON} not runnable (${r.error.message}); install python3-torch python3-torchvision`;
  if (r.status !== 0)
    return `${PYTHON} cannot import ${modules.join(', ')} (${r.stderr.trim().split('\n').pop()}); install ${modules.map((m) => `python3-${m}`).join(' ')} (apt-get) or run scripts/setup.sh as root`;
  return null;
}

/**
 * Skip the test (saying why) when the Python modules are missing, except under CI=true, where a
 * missing PyTorch is a failure: CI must run the cross-checks.
 */
export function needPython(t: Test, modules: string[]): boolean {
  const why = pythonMissing(modules);
  if (why === null) return true;
  if (process.env.CI === 'true') t.fail(`PyTorch cross-check cannot run under CI=true: ${why}`);
  else {
    t.comment(`skipped: ${why}`);
    t.skip(why, async () => {});
  }
  return false;
}

/** Run the generator (default: make_torchscript_fixtures.py) for `cases` into a fresh temporary directory, removed at the end of `t`. */
export function generate(t: Test, cases: string[], generator = GENERATOR): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-ts-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync(PYTHON, [generator, dir, ...cases], { encoding: 'utf8', env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' } });
  if (r.status !== 0) throw new Error(`fixture generator failed (${cases.join(' ')}):\n${r.stderr}`);
  return dir;
}

export interface BinSpec {
  file: string;
  shape: number[];
  dtype: 'float32' | 'float64' | 'bool' | 'int64';
}

export interface Manifest {
  modules: { scripted?: string; traced?: string; exported?: string };
  select: number | string | null;
  inputs: BinSpec[];
  labels: number[];
  output: BinSpec;
  jvp: BinSpec;
  params: string[];
  buffers: string[];
  loss: number;
  jvp_primal_max_diff: number;
  grads: Record<string, { head: number[]; sum: number; norm: number }>;
  /** What computed the JVP reference (default torch.autograd.forward_ad). */
  jvp_reference?: string;
}

export function manifest(dir: string, name: string): Manifest {
  return JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8')) as Manifest;
}

export function readBin(dir: string, spec: BinSpec): Tensor {
  const buf = fs.readFileSync(path.join(dir, spec.file));
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength).slice();
  switch (spec.dtype) {
    case 'float32':
      return Tensor.from(new Float32Array(bytes.buffer), spec.shape);
    case 'float64':
      return Tensor.from(new Float64Array(bytes.buffer), spec.shape);
    case 'int64':
      return Tensor.from(new BigInt64Array(bytes.buffer), spec.shape);
    case 'bool':
      return Tensor.from(bytes, spec.shape, 'bool');
  }
}

/** τ_k[i] = 0.01·sin(0.37·i + 1.3·k), as the generator builds it. */
export function tangentFor(model: Model, names: string[]): StateDict {
  const out = new Map<string, Tensor>();
  names.forEach((name, k) => {
    const spec = model.spec.get(name)!;
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const v = spec.dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = 0.01 * Math.sin(0.37 * i + 1.3 * k);
    out.set(name, Tensor.from(v, spec.shape));
  });
  return out;
}

/** θ0 + τ per parameter, in the parameters' dtype (as PyTorch adds them). */
export function shifted(model: Model, tangent: StateDict): StateDict {
  const out = new Map<string, Tensor>();
  for (const [name, p] of model.parameters()) {
    const a = p.data() as Float32Array | Float64Array;
    const b = tangent.get(name)!.data() as Float32Array | Float64Array;
    const c = a instanceof Float64Array ? new Float64Array(a.length) : new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) c[i] = a[i]! + b[i]!;
    out.set(name, Tensor.from(c, p.shape));
  }
  return out;
}

export function values(t: Tensor): Float64Array {
  return Float64Array.from(t.data() as ArrayLike<number>);
}

/** max |a − b| / max |b| (both flattened; same length required). */
export function relMax(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / Math.max(m, 1e-30);
}

export interface Tolerances {
  forward: number;
  jvp: number;
  grad: number;
}

/**
 * Load `file` and compare forward, JVP and the linearized gradient with the manifest's PyTorch
 * references. Returns the measured errors (also asserted against `tol`).
 */
export async function crossCheck(t: Test, dir: string, m: Manifest, file: string | Model, label: string, tol: Tolerances): Promise<void> {
  // The modules PyTorch just wrote for this test: TorchScript loads with consent, a .pt2 needs none.
  const opts = { ...(m.select === null ? {} : { output: m.select }), ...(typeof file === 'string' && !file.endsWith('.pt2') ? { trustCode: true } : {}) };
  const model = typeof file === 'string' ? await Model.load(path.join(dir, file), opts) : file;
  try {
    t.same([...model.spec.keys()], m.params, `${label}: parameter names and order are PyTorch's`);
    t.same([...model.bufferNames], m.buffers, `${label}: buffers are PyTorch's`);
    const inputs = m.inputs.map((s) => readBin(dir, s));
    const x = inputs.length === 1 ? inputs[0]! : inputs;
    const ref = values(readBin(dir, m.output));

    const out = await model.forward(x);
    t.same(out.shape, m.output.shape, `${label}: output shape`);
    const ef = relMax(values(out), ref);
    t.ok(ef <= tol.forward, `${label}: forward equals PyTorch's eval forward (max|Δ|/max|ref| ${ef.toExponential(2)} ≤ ${tol.forward})`);

    const tau = tangentFor(model, m.params);
    const r = await model.jvp(x, tau);
    const ej = relMax(values(r.tangent), values(readBin(dir, m.jvp)));
    t.ok(ej <= tol.jvp, `${label}: JVP equals ${m.jvp_reference ?? 'torch.autograd.forward_ad'} (max|Δ|/max|ref| ${ej.toExponential(2)} ≤ ${tol.jvp})`);
    const ep = relMax(values(r.primal), ref);
    t.ok(ep <= Math.max(tol.forward, 4 * m.jvp_primal_max_diff / Math.max(...ref.map(Math.abs))), `${label}: JVP primal equals the forward (${ep.toExponential(2)})`);

    const y = Tensor.from(BigInt64Array.from(m.labels.map(BigInt)), [m.labels.length]);
    const g = await model.linearize().lossAndGrad(x, y, { params: shifted(model, tau) });
    const el = Math.abs(g.loss - m.loss) / Math.abs(m.loss);
    t.ok(el <= tol.grad, `${label}: linearized loss equals PyTorch's (${g.loss} vs ${m.loss})`);
    let worst = 0;
    let worstName = '';
    for (const name of m.params) {
      const want = m.grads[name]!;
      const got = values(g.grads.get(name)!);
      let sum = 0;
      let sq = 0;
      for (const v of got) {
        sum += v;
        sq += v * v;
      }
      const scale = Math.max(want.norm, 1e-12);
      const e = Math.max(
        relMax(got.subarray(0, want.head.length), want.head) * Math.max(...want.head.map(Math.abs)) / scale,
        Math.abs(sum - want.sum) / (scale * Math.sqrt(got.length)),
        Math.abs(Math.sqrt(sq) - want.norm) / scale,
      );
      if (want.norm === 0) {
        if (sq !== 0 && e > worst) [worst, worstName] = [Infinity, name];
        continue;
      }
      if (e > worst) [worst, worstName] = [e, name];
    }
    t.ok(worst <= tol.grad, `${label}: linearized gradient equals PyTorch's reverse-over-forward for all ${m.params.length} parameters (worst ${worst.toExponential(2)} at ${worstName || '-'})`);
  } finally {
    model.dispose();
  }
}

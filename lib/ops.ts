/**
 * Fused weighted sums: out = base + Σ_k c_k · x_k in one pass through memory per tensor,
 * accumulated in float32 (default) or float64, written in any float dtype. The primitive under
 * task addition/negation, optimizer steps and merges.
 */
import { native } from './binding';
import { ArgumentError, DTypeError, ParameterError } from './errors';
import type { Params, StateDict } from './model';
import { assertDType, isFloatDType, Tensor, type DType } from './tensor';

export interface CombineOptions {
  /** Accumulation dtype (float32 or float64). Default float32. */
  compute?: 'float32' | 'float64';
  /** Output dtype; default: the inputs' dtype. */
  outDtype?: DType;
  /** @internal Use the one-ATen-op-at-a-time reference (benchmarks). */
  naive?: boolean;
}

function entriesOf(p: Params): Map<string, Tensor> {
  return p instanceof Map ? (p as Map<string, Tensor>) : new Map(Object.entries(p as Record<string, Tensor>));
}

function checkOpts(opts: CombineOptions): { compute: DType; out: DType | undefined } {
  const compute = opts.compute ?? 'float32';
  if (compute !== 'float32' && compute !== 'float64')
    throw new DTypeError(`compute dtype must be float32 or float64, got ${JSON.stringify(compute)}`);
  if (opts.outDtype !== undefined) {
    assertDType(opts.outDtype, 'outDtype');
    if (!isFloatDType(opts.outDtype)) throw new DTypeError(`outDtype must be a float dtype, got ${opts.outDtype}`);
  }
  return { compute, out: opts.outDtype };
}

function checkCoeffs(coeffs: readonly number[], n: number): void {
  if (coeffs.length !== n) throw new ArgumentError(`${n} inputs but ${coeffs.length} coefficients`);
  coeffs.forEach((c, i) => {
    if (typeof c !== 'number' || !Number.isFinite(c)) throw new ArgumentError(`coefficient ${i} must be a finite number, got ${c}`);
  });
}

/** base + Σ coeffs[k] · inputs[k] for single tensors (base may be null: zero). */
export async function combine(
  base: Tensor | null,
  inputs: readonly Tensor[],
  coeffs: readonly number[],
  opts: CombineOptions = {},
): Promise<Tensor> {
  checkCoeffs(coeffs, inputs.length);
  const { compute, out } = checkOpts(opts);
  const ref = base ?? inputs[0];
  if (ref === undefined) throw new ArgumentError('combine: nothing to combine');
  const [r] = await native().combine(
    [base?.native ?? null],
    [inputs.map((t) => t.native)],
    [...coeffs],
    compute,
    [out ?? ref.dtype],
    opts.naive ?? false,
  );
  return Tensor.wrap(r!);
}

/**
 * base + Σ coeffs[k] · states[k] over whole state dicts, by name, in one native call. Every
 * state must hold exactly the base's names (the error lists the differences).
 */
export async function combineStates(
  base: Params | null,
  states: readonly Params[],
  coeffs: readonly number[],
  opts: CombineOptions = {},
): Promise<StateDict> {
  checkCoeffs(coeffs, states.length);
  const { compute, out } = checkOpts(opts);
  const maps = states.map(entriesOf);
  const b = base === null ? null : entriesOf(base);
  const names = [...(b ?? maps[0] ?? new Map()).keys()];
  maps.forEach((m, k) => {
    const missing = names.filter((n) => !m.has(n));
    const extra = [...m.keys()].filter((n) => !(b ?? maps[0]!).has(n));
    if (missing.length || extra.length)
      throw new ParameterError(
        `state ${k} does not match the base: ${missing.length ? `missing ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` (+${missing.length - 5} more)` : ''}` : ''}${missing.length && extra.length ? '; ' : ''}${extra.length ? `extra ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ` (+${extra.length - 5} more)` : ''}` : ''}`,
      );
  });
  // Each tensor keeps its own dtype unless outDtype is given.
  const ref = b ?? maps[0]!;
  const res = await native().combine(
    names.map((n) => b?.get(n)!.native ?? null),
    names.map((n) => maps.map((m) => m.get(n)!.native)),
    [...coeffs],
    compute,
    names.map((n) => out ?? ref.get(n)!.dtype),
    opts.naive ?? false,
  );
  return new Map(names.map((n, i) => [n, Tensor.wrap(res[i]!)]));
}

/**
 * The merge methods' parameter table: which parameters each method takes, their defaults and
 * ranges, whether it uses weights and a base — beside the native registry
 * (native/merge/registry.cpp: one file per method; a test checks the two name the same methods
 * with the same base use and model counts). Exact semantics: docs/merging.md.
 */

export const MERGE_METHODS = [
  'task_arithmetic',
  'ties',
  'dare_linear',
  'dare_ties',
  'breadcrumbs',
  'breadcrumbs_ties',
  'della',
  'della_linear',
  'linear',
  'passthrough',
  'slerp',
  'nuslerp',
  'multislerp',
  'karcher',
  'nearswap',
  'model_stock',
  'sce',
  'ram',
  'ramplus_tl',
] as const;
export type MergeMethod = (typeof MERGE_METHODS)[number];

/** Global parameters (one value per merge), by their config key. */
export type GlobalParam =
  | 'lambda'
  | 'election'
  | 'seed'
  | 't'
  | 'normalize'
  | 'rescale'
  | 'select_topk'
  | 'scale'
  | 'max_iter'
  | 'tol'
  | 'eps'
  | 'normalize_weights'
  | 'nuslerp_flatten'
  | 'nuslerp_row_wise'
  | 'epsilon'
  | 'r'
  | 'alpha';
/** Per-model parameters (one value per model; a global value is every model's default). */
export type ModelParam = 'density' | 'gamma' | 'epsilon';

export interface MethodDef {
  /** How the base model is used: needed, not taken (every input is a model), or either. */
  base: 'required' | 'none' | 'optional';
  /** Models beside the base: at least, at most (0: any). */
  models: [number, number];
  /** Whether the per-model weights mean anything (others refuse a weight other than 1). */
  weights: boolean;
  /** What the weights must satisfy, when not any finite number. */
  weightRule?: 'nonnegative' | 'nonzero-sum';
  /** The global parameters it takes, with defaults (undefined: required). */
  global: Partial<Record<GlobalParam, number | boolean | string | undefined>>;
  /** The per-model parameters it takes, with defaults. */
  perModel: Partial<Record<ModelParam, number>>;
  /** Why weights are refused, for the message. */
  noWeights?: string;
}

const TV = { lambda: 1 } as const;
export const METHODS: Record<MergeMethod, MethodDef> = {
  task_arithmetic: { base: 'required', models: [1, 0], weights: true, global: { ...TV, normalize: false }, perModel: {} },
  ties: { base: 'required', models: [1, 0], weights: true, weightRule: 'nonnegative', global: { ...TV, election: 'weighted', normalize: true }, perModel: { density: 1 } },
  dare_linear: { base: 'required', models: [1, 0], weights: true, global: { ...TV, seed: 0, normalize: false }, perModel: { density: 1 } },
  dare_ties: { base: 'required', models: [1, 0], weights: true, weightRule: 'nonnegative', global: { ...TV, seed: 0, election: 'weighted', normalize: true }, perModel: { density: 1 } },
  breadcrumbs: { base: 'required', models: [1, 0], weights: true, global: { ...TV, normalize: false }, perModel: { density: 1, gamma: 0 } },
  breadcrumbs_ties: { base: 'required', models: [1, 0], weights: true, weightRule: 'nonnegative', global: { ...TV, election: 'weighted', normalize: false }, perModel: { density: 1, gamma: 0 } },
  della: { base: 'required', models: [1, 0], weights: true, weightRule: 'nonnegative', global: { ...TV, seed: 0, election: 'weighted', normalize: true, rescale: true }, perModel: { density: 1, epsilon: 0.15 } },
  della_linear: { base: 'required', models: [1, 0], weights: true, global: { ...TV, seed: 0, normalize: false, rescale: true }, perModel: { density: 1, epsilon: 0.15 } },
  linear: { base: 'none', models: [1, 0], weights: true, weightRule: 'nonzero-sum', global: { normalize: true }, perModel: {} },
  passthrough: { base: 'none', models: [1, 1], weights: false, noWeights: 'it copies one model', global: { scale: 1 }, perModel: {} },
  slerp: { base: 'required', models: [1, 1], weights: false, noWeights: 't says how far to go', global: { t: undefined }, perModel: {} },
  nuslerp: { base: 'optional', models: [2, 2], weights: true, global: { nuslerp_flatten: true, nuslerp_row_wise: false }, perModel: {} },
  multislerp: { base: 'optional', models: [1, 0], weights: true, weightRule: 'nonzero-sum', global: { normalize_weights: true, eps: 1e-8 }, perModel: {} },
  karcher: { base: 'none', models: [1, 0], weights: false, noWeights: 'the Karcher mean weighs every model equally', global: { max_iter: 10, tol: 1e-5 }, perModel: {} },
  nearswap: { base: 'required', models: [1, 1], weights: false, noWeights: 't says how far to go', global: { t: undefined }, perModel: {} },
  model_stock: { base: 'required', models: [2, 0], weights: false, noWeights: 'the models are averaged equally', global: {}, perModel: {} },
  sce: { base: 'required', models: [1, 0], weights: false, noWeights: 'sce computes each model\'s weight from its task vector', global: { select_topk: 1 }, perModel: {} },
  ram: { base: 'required', models: [1, 0], weights: false, noWeights: 'ram averages the models that change an entry', global: { epsilon: 1e-5 }, perModel: {} },
  ramplus_tl: { base: 'required', models: [1, 0], weights: false, noWeights: 'ram averages the models that change an entry', global: { epsilon: 1e-5, r: 0.1, alpha: 0.2 }, perModel: {} },
};

/** Whether `method` has a per-model `epsilon` (della) rather than a global one (ram). */
export const perModelEpsilon = (method: MergeMethod): boolean => 'epsilon' in METHODS[method].perModel;

/** Value checks per parameter: a message if `v` is out of range for `method`. */
export function paramProblem(method: MergeMethod, key: string, v: unknown): string | undefined {
  const num = (ok: (x: number) => boolean, want: string) => (typeof v === 'number' && Number.isFinite(v) && ok(v) ? undefined : `${key} must be ${want}, got ${JSON.stringify(v)}`);
  switch (key) {
    case 'lambda':
    case 'scale':
      return num(() => true, 'a finite number');
    case 'density':
      return num((x) => x > 0 && x <= 1, 'in (0, 1]');
    case 'gamma':
      return num((x) => x >= 0 && x < 1, 'in [0, 1)');
    case 'epsilon':
      return num((x) => x >= 0 && (perModelEpsilon(method) ? x < 1 : true), perModelEpsilon(method) ? 'in [0, 1)' : '>= 0');
    case 't':
      return method === 'slerp' ? num((x) => x >= 0 && x <= 1, 'in [0, 1] (0 = base_model, 1 = the model)') : num((x) => x > 0, '> 0 (the distance below which entries take the model\'s value)');
    case 'select_topk':
      return num((x) => x > 0 && x <= 1, 'in (0, 1]');
    case 'max_iter':
      return num((x) => Number.isInteger(x) && x >= 1 && x <= 10000, 'a whole number in [1, 10000]');
    case 'tol':
    case 'eps':
      return num((x) => x > 0 && x < 1, 'in (0, 1)');
    case 'r':
    case 'alpha':
      return num((x) => x >= 0, '>= 0');
    case 'seed':
      return num((x) => Number.isSafeInteger(x) && x >= 0, 'a whole number >= 0');
    case 'election':
      return v === 'weighted' || v === 'unweighted' ? undefined : `election must be weighted or unweighted, got ${JSON.stringify(v)}`;
    default:
      return typeof v === 'boolean' ? undefined : `${key} must be true or false, got ${JSON.stringify(v)}`;
  }
}

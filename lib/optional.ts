/**
 * Optional packages: the demo's datasets and the figure stack (vega, vega-lite, @resvg/resvg-js,
 * opentype.js, mnist) are optional peer dependencies, so a library install stays lean. They are
 * loaded on first use; a missing one raises OptionalDependencyError naming the package.
 */
import { TangentError } from './errors';

/** A feature needs an optional npm package that is not installed. */
export class OptionalDependencyError extends TangentError {
  override readonly code = 'ERR_TANGENT_OPTIONAL_DEPENDENCY';
  constructor(
    /** The npm package to install. */
    readonly pkg: string,
    /** What needed it ("figures", "task 'mnist'"). */
    readonly feature: string,
    cause?: unknown,
  ) {
    super(`${feature} needs the npm package '${pkg}', which is not installed: npm install ${pkg}`);
    if (cause !== undefined) Object.defineProperty(this, 'cause', { value: cause, enumerable: false });
  }
}

function isNotFound(e: unknown, pkg: string): boolean {
  const err = e as { code?: string; message?: string };
  return (err?.code === 'MODULE_NOT_FOUND' || err?.code === 'ERR_MODULE_NOT_FOUND') && String(err.message).includes(pkg);
}

/** `require(pkg)`, or OptionalDependencyError when it is not installed. */
export function requireOptional<T>(pkg: string, feature: string): T {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(pkg) as T;
  } catch (e) {
    if (isNotFound(e, pkg)) throw new OptionalDependencyError(pkg, feature, e);
    throw e;
  }
}

// A `Function`-built import() stays a real dynamic import after compilation to CommonJS (needed
// for ESM-only packages with top-level await, such as vega).
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const dynImport = new Function('s', 'return import(s)') as (s: string) => Promise<unknown>;

/** `import(pkg)`, or OptionalDependencyError when it is not installed. */
export async function importOptional<T>(pkg: string, feature: string): Promise<T> {
  try {
    return (await dynImport(pkg)) as T;
  } catch (e) {
    if (isNotFound(e, pkg)) throw new OptionalDependencyError(pkg, feature, e);
    throw e;
  }
}

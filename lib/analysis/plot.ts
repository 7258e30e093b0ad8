/**
 * Figures for the analyses: Vega-Lite specs compiled with `vega-lite`, rendered headless by
 * `vega` to SVG (`View.toSVG()`), and rasterised to PNG by `@resvg/resvg-js` with DejaVu fonts.
 *
 * vega and vega-lite are ESM-only packages (with top-level await), while this project compiles
 * to CommonJS: TypeScript turns a literal `await import('vega')` into `require('vega')`, which
 * fails on an ES module with top-level await (ERR_REQUIRE_ASYNC_MODULE). A `Function`-built
 * `import()` is not seen by the compiler, so it stays a real dynamic import, which Node resolves
 * as ESM from CommonJS code — under tap's TS loader and from the compiled dist/ alike.
 * All three are optional peer dependencies: a missing one raises OptionalDependencyError.
 */
import * as fs from 'node:fs';
import type { DisentanglementResult } from './disentanglement';
import type { NtkLocalization } from './ntk';
import { writeFileAtomic } from '../util/fs';
import { importOptional, requireOptional } from '../optional';

let modules: Promise<{ vega: any; vl: any }> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any

/** vega and vega-lite are optional peers: OptionalDependencyError names the missing one. */
function loadVega(): Promise<{ vega: any; vl: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  modules ??= importOptional<any>('vega', 'figures') // eslint-disable-line @typescript-eslint/no-explicit-any
    .then(async (vega) => ({ vega, vl: await importOptional<any>('vega-lite', 'figures') })) // eslint-disable-line @typescript-eslint/no-explicit-any
    .catch((e: unknown) => {
      modules = undefined;
      throw e;
    });
  return modules;
}

export const FONT_FAMILY = 'DejaVu Sans';
const FONT_DIRS = ['/usr/share/fonts/truetype/dejavu', '/usr/share/fonts/dejavu', '/usr/share/fonts/TTF'];

function fontFiles(): string[] {
  const out: string[] = [];
  for (const d of FONT_DIRS)
    for (const f of ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf'])
      if (fs.existsSync(`${d}/${f}`)) out.push(`${d}/${f}`);
  return out;
}

/** Shared look: DejaVu Sans everywhere, white background, no view border. */
const CONFIG = {
  font: FONT_FAMILY,
  background: 'white',
  padding: 12,
  view: { stroke: null },
  title: { fontSize: 16, subtitleFontSize: 12, subtitleColor: '#444', anchor: 'middle', offset: 10 },
  axis: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 'normal', grid: false, tickColor: '#333', domainColor: '#333' },
  legend: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 'normal' },
  header: { labelFontSize: 13, titleFontSize: 13 },
};

export interface RenderedFigure {
  svg: string;
  png: Buffer;
  /** Pixel size of the PNG. */
  width: number;
  height: number;
}

/** Vega-Lite spec → SVG (vega, headless) → PNG (resvg, `scale`× the SVG's size). */
export async function renderVegaLite(spec: Record<string, unknown>, opts: { scale?: number } = {}): Promise<RenderedFigure> {
  const { vega, vl } = await loadVega();
  const compiled = vl.compile({ config: CONFIG, ...spec }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg: string = await view.toSVG();
  view.finalize();
  const { Resvg } = requireOptional<typeof import('@resvg/resvg-js')>('@resvg/resvg-js', 'figures');
  const files = fontFiles();
  const resvg = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: opts.scale ?? 2 },
    font: { fontFiles: files, loadSystemFonts: files.length === 0, defaultFontFamily: FONT_FAMILY },
    background: 'white',
  });
  const img = resvg.render();
  return { svg, png: img.asPng(), width: img.width, height: img.height };
}

/** Width and height from a PNG's IHDR chunk (throws if `buf` is not a PNG). */
export function pngSize(buf: Uint8Array): { width: number; height: number } {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (buf.length < 24 || sig.some((b, i) => buf[i] !== b)) throw new Error('not a PNG');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (String.fromCharCode(...buf.subarray(12, 16)) !== 'IHDR') throw new Error('PNG without IHDR first');
  return { width: dv.getUint32(16), height: dv.getUint32(20) };
}

/** Write `<base>.svg` and `<base>.png`, each atomically. */
export function writeFigure(fig: RenderedFigure, base: string): { svg: string; png: string } {
  writeFileAtomic(`${base}.svg`, fig.svg);
  writeFileAtomic(`${base}.png`, fig.png);
  return { svg: `${base}.svg`, png: `${base}.png` };
}

const MODE_LABEL: Record<string, string> = { nonlinear: 'Non-linear FT', linear: 'Linear FT' };

/**
 * Heatmaps of ξ(α1, α2), one panel per result (e.g. non-linear beside linear), on one shared
 * colour scale with a colour bar; α1 on the x axis, α2 on the y axis.
 */
export function disentanglementSpec(
  results: readonly DisentanglementResult[],
  opts: { title?: string; subtitle?: string; labels?: string[]; taskNames?: [string, string]; size?: number } = {},
): Record<string, unknown> {
  const values: Array<Record<string, number | string>> = [];
  let max = 0;
  const labels = results.map((r, k) => opts.labels?.[k] ?? MODE_LABEL[r.mode] ?? r.mode);
  results.forEach((r, k) => {
    const a = r.alphas;
    const half = (i: number, dir: -1 | 1): number => {
      const nb = a[i + dir] ?? a[i - dir];
      return nb === undefined ? a[i]! + dir * 0.5 : a[i]! + (dir * Math.abs(nb - a[i]!)) / 2;
    };
    for (let i = 0; i < a.length; i++)
      for (let j = 0; j < a.length; j++) {
        const xi = r.grid[i]![j]!;
        max = Math.max(max, xi);
        // Cells overlap by a hair so that anti-aliasing leaves no seams between them.
        const e = 0.08 * Math.abs(half(i, 1) - half(i, -1));
        values.push({ panel: labels[k]!, a1: a[i]!, a2: a[j]!, a1lo: half(i, -1), a1hi: half(i, 1) + e, a2lo: half(j, -1), a2hi: half(j, 1) + e, xi });
      }
  });
  const alphas = results[0]?.alphas ?? [0];
  const lo = Math.min(...alphas);
  const hi = Math.max(...alphas);
  const step = alphas.length > 1 ? (hi - lo) / (alphas.length - 1) : 1;
  const domain = [lo - step / 2, hi + step / 2];
  const ticks: number[] = [];
  for (let v = Math.ceil(lo); v <= Math.floor(hi); v++) ticks.push(v);
  const cmax = Math.max(0.5, Math.ceil(max * 10) / 10);
  const t = opts.taskNames;
  const size = opts.size ?? 260;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: opts.title ?? 'Weight disentanglement error ξ(α₁, α₂)',
      subtitle: opts.subtitle ?? (t ? `τ₁: ${t[0]}, τ₂: ${t[1]} — prediction disagreement, summed over both tasks` : 'prediction disagreement, summed over both tasks'),
    },
    data: { values },
    facet: { column: { field: 'panel', type: 'nominal', sort: labels, title: null, header: { labelFontSize: 14, labelFontWeight: 'bold' } } },
    spec: {
      width: size,
      height: size,
      layer: [
        {
          mark: { type: 'rect', stroke: null, clip: true },
          encoding: {
            x: { field: 'a1lo', type: 'quantitative', scale: { domain, nice: false, zero: false }, axis: { values: ticks, title: `α₁${t ? ` (${t[0]})` : ''}` } },
            x2: { field: 'a1hi' },
            y: { field: 'a2lo', type: 'quantitative', scale: { domain, nice: false, zero: false }, axis: { values: ticks, title: `α₂${t ? ` (${t[1]})` : ''}` } },
            y2: { field: 'a2hi' },
            color: {
              field: 'xi',
              type: 'quantitative',
              title: 'ξ',
              scale: { scheme: 'viridis', domain: [0, cmax], clamp: true },
              legend: { gradientLength: size - 20, gradientThickness: 14, direction: 'vertical', tickCount: 5 },
            },
            tooltip: [{ field: 'a1' }, { field: 'a2' }, { field: 'xi', format: '.3f' }],
          },
        },
        {
          data: { values: [{ v: 0 }] },
          mark: { type: 'rule', color: 'white', strokeDash: [4, 3], strokeWidth: 1, opacity: 0.7 },
          encoding: { x: { field: 'v', type: 'quantitative' } },
        },
        {
          data: { values: [{ v: 0 }] },
          mark: { type: 'rule', color: 'white', strokeDash: [4, 3], strokeWidth: 1, opacity: 0.7 },
          encoding: { y: { field: 'v', type: 'quantitative' } },
        },
      ],
    },
    resolve: { scale: { color: 'shared' } },
  };
}

/** Render the ξ heatmaps (PNG + SVG). */
export async function renderDisentanglement(
  results: readonly DisentanglementResult[],
  opts: Parameters<typeof disentanglementSpec>[1] & { scale?: number } = {},
): Promise<RenderedFigure> {
  return renderVegaLite(disentanglementSpec(results, opts), { scale: opts.scale });
}

/**
 * The NTK's top-k eigenfunctions: eigenvalues (log scale) above, and below each eigenfunction's
 * local energy per task as stacked bars (a localized eigenfunction is one colour).
 */
export function ntkSpec(result: NtkLocalization, opts: { title?: string; width?: number } = {}): Record<string, unknown> {
  const k = result.topK;
  const energy: Array<Record<string, number | string>> = [];
  const eig: Array<Record<string, number>> = [];
  for (let j = 0; j < k; j++) {
    eig.push({ i: j + 1, lambda: result.eigenvalues[j]! });
    result.tasks.forEach((t, ti) => energy.push({ i: j + 1, task: t, order: ti, energy: result.energies[j]![ti]! }));
  }
  const width = opts.width ?? Math.max(520, Math.min(900, 24 * k));
  const x = { field: 'i', type: 'ordinal', title: 'eigenfunction (by decreasing eigenvalue)', axis: { labelAngle: 0 } };
  const output = result.output === 'trace' ? 'trace over outputs' : `output ${result.output}`;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: opts.title ?? 'NTK eigenfunction localization',
      subtitle: [
        `empirical NTK at θ₀ (${output}) on ${result.n} pooled inputs: ${result.tasks.map((t, i) => `${t} ${result.counts[i]}`).join(', ')}`,
        `top ${k} eigenfunctions; mean of the largest per-task energy ${result.meanMaxEnergy.toFixed(2)} (1 = fully localized, ${(1 / result.tasks.length).toFixed(2)} = spread evenly)`,
      ],
    },
    vconcat: [
      {
        width,
        height: 110,
        data: { values: eig },
        mark: { type: 'line', color: '#555', point: { filled: true, color: '#333', size: 36 } },
        encoding: {
          x: { ...x, axis: { labels: false, ticks: true, title: null } },
          y: { field: 'lambda', type: 'quantitative', scale: { type: 'log' }, title: 'eigenvalue', axis: { format: '.0e', tickCount: 4 } },
          tooltip: [{ field: 'i' }, { field: 'lambda', format: '.4g' }],
        },
      },
      {
        width,
        height: 220,
        data: { values: energy },
        mark: { type: 'bar' },
        encoding: {
          x,
          y: { field: 'energy', type: 'quantitative', title: 'local energy', scale: { domain: [0, 1] }, axis: { format: '.1f' } },
          color: { field: 'task', type: 'nominal', title: 'task', sort: result.tasks, scale: { scheme: 'tableau10' } },
          order: { field: 'order' },
          tooltip: [{ field: 'i' }, { field: 'task' }, { field: 'energy', format: '.3f' }],
        },
      },
    ],
  };
}

/** Render the NTK localization figure (PNG + SVG). */
export async function renderNtk(result: NtkLocalization, opts: Parameters<typeof ntkSpec>[1] & { scale?: number } = {}): Promise<RenderedFigure> {
  return renderVegaLite(ntkSpec(result, opts), { scale: opts.scale });
}

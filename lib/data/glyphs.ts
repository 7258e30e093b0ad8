/**
 * Font-rendered glyph datasets: 28×28 single-channel images of characters drawn from real
 * typefaces, so that the same small model that reads MNIST can learn tasks from other visual
 * domains (printed type rather than handwriting or photos of clothes).
 *
 * Tasks
 * - `letters`: the 26 Latin letters, case merged (each sample is the upper- or lower-case form with
 *   probability 1/2, like EMNIST "letters"), 26 classes.
 * - `greek`: the 24 lower-case Greek letters α…ω (final sigma ς left out), 24 classes. Lower case
 *   because many Greek capitals are Latin shapes (Α, Β, Ε, Ζ, Η, Ι, Κ, Μ, Ν, Ο, Ρ, Τ, Υ, Χ).
 * - `typed-digits`: the digits 0–9 in type, 10 classes: the same label space as MNIST in a
 *   different visual domain.
 *
 * Fonts, and why these
 * We want many genuinely different faces that are (a) free, (b) installable offline from Debian's
 * archive, (c) outline fonts covering Latin *and* Greek, and (d) not symbol fonts that map Latin code
 * points to pictures. Debian 12 offers:
 * - fonts-urw-base35: the 35 PostScript core faces (clones of Helvetica, Times, Courier, Palatino,
 *   Century Schoolbook, Bookman, Avant Garde, Zapf Chancery); 33 text faces with full Greek. We
 *   leave out D050000L (Dingbats) and StandardSymbolsPS (Symbol), which map A–Z to other shapes.
 * - fonts-dejavu-core + fonts-dejavu-extra: 21 faces of DejaVu Sans/Serif/Mono incl. condensed and
 *   extra-light (we leave out DejaVu Math TeX Gyre, a math font).
 * - fonts-freefont-ttf: 12 GNU FreeFont faces (Sans/Serif/Mono × regular/bold/italic).
 * - fonts-liberation2: 12 Liberation faces (Arial/Times/Courier-metric, different outlines).
 * That is 78 faces of roughly 20 designs (sans, serif, slab/typewriter mono, geometric, calligraphic),
 * ≈31 MB installed. Bigger collections (fonts-noto-core, 42 MB) add mostly scripts we do not use.
 * Every face is checked to map each character we draw (cmap lookup); a face lacking one is simply
 * not used for that character.
 *
 * Rendering
 * Outlines come from opentype.js (pure JS font parser); each glyph is placed by an affine map and
 * the outlines of up to 1,600 samples are drawn into one SVG "sprite sheet" of 28×28 cells that
 * resvg (the `@resvg/resvg-js` rasteriser, anti-aliased) renders in one call; the alpha channel of
 * each cell is the 8-bit image: white ink on black, like MNIST. Per sample, from a seeded PRNG:
 * face (uniform over the faces that have the character), glyph scaled so that its transformed
 * bounding box's longer side is 15–23 px, width ×0.85–1.15, shear ±0.2, rotation ±12°, a stroke of
 * 0–1.2 px on half the samples (emboldening), and an offset of up to ±2 px from the cell centre,
 * clamped to keep the glyph 1.5 px inside the cell.
 *
 * Determinism: the same seed, fonts (package versions) and library versions give the same bytes;
 * the cache version hashes the font files' names and sizes and both libraries' versions.
 * Train and test are drawn independently (different seed streams) from the same pool of faces.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RawSplit, RawTask } from './cache';
import { deriveSeed, mulberry32, randInt, type Rng } from './dataset';
import { MissingDependencyError, npmPackageDir } from './sources';

// ---------------------------------------------------------------------------------------------
// Minimal typings of the parts of opentype.js and @resvg/resvg-js that we use
// ---------------------------------------------------------------------------------------------

interface OtPathCommand {
  type: 'M' | 'L' | 'C' | 'Q' | 'Z';
  x?: number;
  y?: number;
  x1?: number;
  y1?: number;
  x2?: number;
  y2?: number;
}
interface OtPath {
  commands: OtPathCommand[];
  getBoundingBox(): { x1: number; y1: number; x2: number; y2: number };
}
interface OtGlyph {
  getPath(x: number, y: number, fontSize: number): OtPath;
}
interface OtFont {
  unitsPerEm: number;
  charToGlyphIndex(c: string): number;
  charToGlyph(c: string): OtGlyph;
}
interface OpentypeModule {
  parse(buffer: ArrayBuffer): OtFont;
}
interface ResvgModule {
  renderAsync(svg: string, options?: Record<string, unknown>): Promise<{ pixels: Buffer; width: number; height: number }>;
}

// ---------------------------------------------------------------------------------------------
// Fonts
// ---------------------------------------------------------------------------------------------

export interface FontPackage {
  /** Debian package that installs the files. */
  debian: string;
  dir: string;
  files: string[];
}

export const FONT_PACKAGES: readonly FontPackage[] = [
  {
    debian: 'fonts-dejavu-core',
    dir: '/usr/share/fonts/truetype/dejavu',
    files: ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSansMono.ttf', 'DejaVuSansMono-Bold.ttf', 'DejaVuSerif.ttf', 'DejaVuSerif-Bold.ttf'],
  },
  {
    debian: 'fonts-dejavu-extra',
    dir: '/usr/share/fonts/truetype/dejavu',
    files: [
      'DejaVuSans-BoldOblique.ttf', 'DejaVuSans-ExtraLight.ttf', 'DejaVuSans-Oblique.ttf',
      'DejaVuSansCondensed.ttf', 'DejaVuSansCondensed-Bold.ttf', 'DejaVuSansCondensed-BoldOblique.ttf', 'DejaVuSansCondensed-Oblique.ttf',
      'DejaVuSansMono-BoldOblique.ttf', 'DejaVuSansMono-Oblique.ttf',
      'DejaVuSerif-BoldItalic.ttf', 'DejaVuSerif-Italic.ttf',
      'DejaVuSerifCondensed.ttf', 'DejaVuSerifCondensed-Bold.ttf', 'DejaVuSerifCondensed-BoldItalic.ttf', 'DejaVuSerifCondensed-Italic.ttf',
    ],
  },
  {
    debian: 'fonts-freefont-ttf',
    dir: '/usr/share/fonts/truetype/freefont',
    files: [
      'FreeMono.ttf', 'FreeMonoBold.ttf', 'FreeMonoBoldOblique.ttf', 'FreeMonoOblique.ttf',
      'FreeSans.ttf', 'FreeSansBold.ttf', 'FreeSansBoldOblique.ttf', 'FreeSansOblique.ttf',
      'FreeSerif.ttf', 'FreeSerifBold.ttf', 'FreeSerifBoldItalic.ttf', 'FreeSerifItalic.ttf',
    ],
  },
  {
    debian: 'fonts-liberation2',
    dir: '/usr/share/fonts/truetype/liberation2',
    files: [
      'LiberationMono-Regular.ttf', 'LiberationMono-Bold.ttf', 'LiberationMono-Italic.ttf', 'LiberationMono-BoldItalic.ttf',
      'LiberationSans-Regular.ttf', 'LiberationSans-Bold.ttf', 'LiberationSans-Italic.ttf', 'LiberationSans-BoldItalic.ttf',
      'LiberationSerif-Regular.ttf', 'LiberationSerif-Bold.ttf', 'LiberationSerif-Italic.ttf', 'LiberationSerif-BoldItalic.ttf',
    ],
  },
  {
    debian: 'fonts-urw-base35',
    dir: '/usr/share/fonts/opentype/urw-base35',
    files: [
      'C059-Roman.otf', 'C059-Bold.otf', 'C059-Italic.otf', 'C059-BdIta.otf',
      'NimbusMonoPS-Regular.otf', 'NimbusMonoPS-Bold.otf', 'NimbusMonoPS-Italic.otf', 'NimbusMonoPS-BoldItalic.otf',
      'NimbusRoman-Regular.otf', 'NimbusRoman-Bold.otf', 'NimbusRoman-Italic.otf', 'NimbusRoman-BoldItalic.otf',
      'NimbusSans-Regular.otf', 'NimbusSans-Bold.otf', 'NimbusSans-Italic.otf', 'NimbusSans-BoldItalic.otf',
      'NimbusSansNarrow-Regular.otf', 'NimbusSansNarrow-Bold.otf', 'NimbusSansNarrow-Oblique.otf', 'NimbusSansNarrow-BoldOblique.otf',
      'P052-Roman.otf', 'P052-Bold.otf', 'P052-Italic.otf', 'P052-BoldItalic.otf',
      'URWBookman-Light.otf', 'URWBookman-Demi.otf', 'URWBookman-LightItalic.otf', 'URWBookman-DemiItalic.otf',
      'URWGothic-Book.otf', 'URWGothic-Demi.otf', 'URWGothic-BookOblique.otf', 'URWGothic-DemiOblique.otf',
      'Z003-MediumItalic.otf',
    ],
  },
];

/** Debian packages that the glyph tasks need. */
export const FONT_DEBIAN_PACKAGES: readonly string[] = FONT_PACKAGES.map((p) => p.debian);

/** All font files, in a fixed order; throws MissingDependencyError naming the package of a missing file. */
export function fontFiles(task: string): string[] {
  const out: string[] = [];
  for (const p of FONT_PACKAGES) {
    for (const f of p.files) {
      const file = path.join(p.dir, f);
      if (!fs.existsSync(file)) throw new MissingDependencyError(task, 'debian', p.debian, `missing ${file}`);
      out.push(file);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Task specifications
// ---------------------------------------------------------------------------------------------

export type GlyphTaskName = 'letters' | 'greek' | 'typed-digits' | 'scripts';

export interface GlyphTaskSpec {
  name: GlyphTaskName;
  /** Class k is drawn as one of `chars[k]` (chosen uniformly). */
  chars: string[][];
  classNames: string[];
  trainPerClass: number;
  testPerClass: number;
  seed: number;
}

const LATIN_UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const GREEK_LOWER = 'αβγδεζηθικλμνξοπρστυφχψω';
const GREEK_NAMES = [
  'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta', 'iota', 'kappa', 'lambda', 'mu',
  'nu', 'xi', 'omicron', 'pi', 'rho', 'sigma', 'tau', 'upsilon', 'phi', 'chi', 'psi', 'omega',
];

/**
 * The `scripts` set: a pre-training source of printed glyphs that are NOT in any edited task —
 * Cyrillic capitals, Hebrew letters, Georgian letters and symbols — so that θ0 learns what printed
 * strokes look like without seeing a Latin letter, a Greek letter or a digit. Characters that copy
 * the shape of one of those are left out: Cyrillic А В Е К М Н О Р С Т Х У (Latin), Б (6), З (3),
 * Л П Ф (Λ π φ), Ь (b); Hebrew ו (l), י ('), ס (o); Georgian ა (s), გ (8), ე, ვ (3), ი (o), ო (m),
 * ყ (y); the symbols ∑ (Σ) and ∂ (δ).
 */
const SCRIPTS_CHARS = [
  ...'ГДЖИЦЧШЩЪЫЭЮЯ', // Cyrillic capitals
  ...'אבגדהזחטכלמנעפצקרשת', // Hebrew
  ...'დზთკლმნპჟრსტუფქღშჩცძწჭხჯჰ', // Georgian
  ...'+×÷=%&@#$§¶?!*←→↑↓∞√∫♠♣♥♦♪∩≈≠≤≥', // symbols
];

export const GLYPH_TASKS: Readonly<Record<GlyphTaskName, GlyphTaskSpec>> = {
  letters: {
    name: 'letters',
    chars: [...LATIN_UPPER].map((c) => [c, c.toLowerCase()]),
    classNames: [...LATIN_UPPER],
    trainPerClass: 200,
    testPerClass: 40,
    seed: 0x1e77e25,
  },
  greek: {
    name: 'greek',
    chars: [...GREEK_LOWER].map((c) => [c]),
    classNames: GREEK_NAMES,
    trainPerClass: 200,
    testPerClass: 40,
    seed: 0x67ee4,
  },
  'typed-digits': {
    name: 'typed-digits',
    chars: [...'0123456789'].map((c) => [c]),
    classNames: [...'0123456789'],
    trainPerClass: 500,
    testPerClass: 100,
    seed: 0xd161,
  },
  scripts: {
    name: 'scripts',
    chars: SCRIPTS_CHARS.map((c) => [c]),
    classNames: SCRIPTS_CHARS.map((c) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`),
    trainPerClass: 250,
    testPerClass: 50,
    seed: 0x5c1275,
  },
};

/** Bump when the generator's output changes for the same inputs. */
const GENERATOR_VERSION = 2;

function loadLibs(task: string): { ot: OpentypeModule; resvg: ResvgModule; otVersion: string; resvgVersion: string } {
  const otDir = npmPackageDir(task, 'opentype.js');
  const rvDir = npmPackageDir(task, '@resvg/resvg-js');
  const ver = (dir: string) => (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  const ot = require('opentype.js') as OpentypeModule;
  const resvg = require('@resvg/resvg-js') as ResvgModule;
  return { ot, resvg, otVersion: ver(otDir), resvgVersion: ver(rvDir) };
}

/** Cache version of a glyph task: generator version + hash of spec, fonts and library versions. */
export function glyphVersion(name: GlyphTaskName): string {
  const spec = GLYPH_TASKS[name];
  const libs = loadLibs(name);
  let key = `${GENERATOR_VERSION}|${JSON.stringify(spec)}|ot${libs.otVersion}|resvg${libs.resvgVersion}`;
  for (const f of fontFiles(name)) key += `|${path.basename(f)}:${fs.statSync(f).size}`;
  return `g${GENERATOR_VERSION}-${fnv1a(key)}`;
}

function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

const SIZE = 28;
const SHEET_COLS = 40;
const SHEET_ROWS = 40;
/** Minimum distance (px) between a glyph's transformed bounding box and its cell's edge. */
const MARGIN = 1.5;

/** An outline in font units (y down), with its bounding box. */
interface Outline {
  commands: OtPathCommand[];
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

function uniform(rng: Rng, lo: number, hi: number): number {
  return lo + (hi - lo) * rng();
}

/** SVG path data of one sample, in sheet pixel coordinates. */
function placeGlyph(o: Outline, rng: Rng, cellX: number, cellY: number): { d: string; stroke: number } {
  const theta = (uniform(rng, -12, 12) * Math.PI) / 180;
  const shear = uniform(rng, -0.2, 0.2);
  const aspect = uniform(rng, 0.85, 1.15);
  const target = uniform(rng, 15, 23);
  const stroke = rng() < 0.5 ? 0 : uniform(rng, 0, 1.2);
  const offX = uniform(rng, -2, 2);
  const offY = uniform(rng, -2, 2);
  // Linear part M = R(theta) · Shear · diag(aspect, 1), applied to outline coordinates centred on the bbox.
  const c = Math.cos(theta);
  const s = Math.sin(theta);
  // Shear·diag: [[aspect, shear], [0, 1]]
  let a = c * aspect;
  let b = c * shear - s;
  let cc = s * aspect;
  let d = s * shear + c;
  const cx = (o.x1 + o.x2) / 2;
  const cy = (o.y1 + o.y2) / 2;
  const hw = (o.x2 - o.x1) / 2;
  const hh = (o.y2 - o.y1) / 2;
  // Half-extents of the transformed bbox (exact for the bbox's corners).
  const ex = Math.abs(a) * hw + Math.abs(b) * hh;
  const ey = Math.abs(cc) * hw + Math.abs(d) * hh;
  const k = target / Math.max(2 * ex, 2 * ey, 1e-6);
  a *= k;
  b *= k;
  cc *= k;
  d *= k;
  const rx = ex * k + stroke / 2;
  const ry = ey * k + stroke / 2;
  const clamp = (v: number, r: number) => Math.min(SIZE - MARGIN - r, Math.max(MARGIN + r, v));
  const tx = cellX + clamp(SIZE / 2 + offX, rx);
  const ty = cellY + clamp(SIZE / 2 + offY, ry);
  const X = (x: number, y: number) => (a * (x - cx) + b * (y - cy) + tx).toFixed(2);
  const Y = (x: number, y: number) => (cc * (x - cx) + d * (y - cy) + ty).toFixed(2);
  const parts: string[] = [];
  for (const cmd of o.commands) {
    switch (cmd.type) {
      case 'M':
      case 'L':
        parts.push(`${cmd.type}${X(cmd.x!, cmd.y!)} ${Y(cmd.x!, cmd.y!)}`);
        break;
      case 'Q':
        parts.push(`Q${X(cmd.x1!, cmd.y1!)} ${Y(cmd.x1!, cmd.y1!)} ${X(cmd.x!, cmd.y!)} ${Y(cmd.x!, cmd.y!)}`);
        break;
      case 'C':
        parts.push(
          `C${X(cmd.x1!, cmd.y1!)} ${Y(cmd.x1!, cmd.y1!)} ${X(cmd.x2!, cmd.y2!)} ${Y(cmd.x2!, cmd.y2!)} ${X(cmd.x!, cmd.y!)} ${Y(cmd.x!, cmd.y!)}`,
        );
        break;
      case 'Z':
        parts.push('Z');
        break;
    }
  }
  return { d: parts.join(''), stroke };
}

interface Face {
  file: string;
  font: OtFont;
  outlines: Map<string, Outline | null>;
}

function outlineOf(face: Face, ch: string): Outline | null {
  let o = face.outlines.get(ch);
  if (o !== undefined) return o;
  o = null;
  if (face.font.charToGlyphIndex(ch) > 0) {
    const p = face.font.charToGlyph(ch).getPath(0, 0, face.font.unitsPerEm);
    const bb = p.getBoundingBox();
    if (p.commands.length > 0 && [bb.x1, bb.y1, bb.x2, bb.y2].every(Number.isFinite) && bb.x2 > bb.x1 && bb.y2 > bb.y1) {
      o = { commands: p.commands, ...bb };
    }
  }
  face.outlines.set(ch, o);
  return o;
}

async function renderSplit(
  spec: GlyphTaskSpec,
  faces: Face[],
  resvg: ResvgModule,
  perClass: number,
  seed: number,
): Promise<RawSplit> {
  const nClasses = spec.chars.length;
  const count = nClasses * perClass;
  const rng = mulberry32(seed);
  // Balanced labels in a seeded random order.
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = i % nClasses;
  for (let i = count - 1; i > 0; i--) {
    const j = randInt(rng, i + 1);
    const t = labels[i]!;
    labels[i] = labels[j]!;
    labels[j] = t;
  }
  // Faces usable for each character.
  const facesFor = new Map<string, Face[]>();
  for (const chars of spec.chars) {
    for (const ch of chars) {
      const ok = faces.filter((f) => outlineOf(f, ch) !== null);
      if (ok.length === 0) throw new Error(`glyph task '${spec.name}': no installed font has the character '${ch}'`);
      facesFor.set(ch, ok);
    }
  }
  const perSheet = SHEET_COLS * SHEET_ROWS;
  const sheets: Promise<void>[] = [];
  const pixels = new Uint8Array(count * SIZE * SIZE);
  for (let start = 0; start < count; start += perSheet) {
    const n = Math.min(perSheet, count - start);
    const rows = Math.ceil(n / SHEET_COLS);
    const W = SHEET_COLS * SIZE;
    const H = rows * SIZE;
    const body: string[] = [];
    for (let k = 0; k < n; k++) {
      const chars = spec.chars[labels[start + k]!]!;
      const ch = chars[randInt(rng, chars.length)]!;
      const pool = facesFor.get(ch)!;
      const face = pool[randInt(rng, pool.length)]!;
      const { d, stroke } = placeGlyph(outlineOf(face, ch)!, rng, (k % SHEET_COLS) * SIZE, Math.floor(k / SHEET_COLS) * SIZE);
      body.push(
        stroke > 0.05
          ? `<path d="${d}" fill="#fff" stroke="#fff" stroke-width="${stroke.toFixed(2)}" stroke-linejoin="round"/>`
          : `<path d="${d}" fill="#fff"/>`,
      );
    }
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${body.join('')}</svg>`;
    sheets.push(
      resvg.renderAsync(svg, { font: { loadSystemFonts: false }, fitTo: { mode: 'original' }, shapeRendering: 2, logLevel: 'off' }).then((img) => {
        if (img.width !== W || img.height !== H) throw new Error(`resvg rendered ${img.width}x${img.height}, expected ${W}x${H}`);
        const px = img.pixels;
        for (let k = 0; k < n; k++) {
          const ox = (k % SHEET_COLS) * SIZE;
          const oy = Math.floor(k / SHEET_COLS) * SIZE;
          const base = (start + k) * SIZE * SIZE;
          for (let y = 0; y < SIZE; y++) {
            const row = ((oy + y) * W + ox) * 4 + 3;
            for (let x = 0; x < SIZE; x++) pixels[base + y * SIZE + x] = px[row + 4 * x]!;
          }
        }
      }),
    );
  }
  await Promise.all(sheets);
  return { count, pixels, labels };
}

/** Renders a glyph task from scratch (no cache). */
export async function renderGlyphTask(name: GlyphTaskName, version: string): Promise<RawTask> {
  const spec = GLYPH_TASKS[name];
  const { ot, resvg } = loadLibs(name);
  const faces: Face[] = fontFiles(name).map((file) => {
    const buf = fs.readFileSync(file);
    let font: OtFont;
    try {
      font = ot.parse(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer);
    } catch (e) {
      throw new Error(`${file}: cannot parse font (${(e as Error).message})`);
    }
    return { file, font, outlines: new Map() };
  });
  const train = await renderSplit(spec, faces, resvg, spec.trainPerClass, deriveSeed(spec.seed, 1));
  const test = await renderSplit(spec, faces, resvg, spec.testPerClass, deriveSeed(spec.seed, 2));
  return { name, version, shape: [1, SIZE, SIZE], classes: spec.chars.length, classNames: [...spec.classNames], train, test };
}

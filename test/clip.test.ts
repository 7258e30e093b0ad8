// CLIP's towers (native/models/clip.cpp) against open_clip's and transformers' own code on the
// same random weights (test/fixtures/make_clip_fixtures.py, generated at test time by the
// PyTorch of the test matrix): forward, JVP (torch.func.jvp), the linearized gradient (the
// paper's LinearizedModel), both weight layouts, the tokenizer against open_clip's, zero-shot
// heads and logits against build_zero_shot_classifier; the hand-written JVP against this
// project's forward-mode AD; weight-file errors.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Clip, ClipTokenizer, clipVisionConfig, loadTemplates, namedClipConfig, type ClipConfig } from '../lib/clip';
import { Model, setJvpMethod } from '../lib';
import { saveTensors } from '../lib/util/state';
import { ArgumentError, ParameterError, ShapeError } from '../lib/errors';
import { Tensor } from '../lib/tensor';
import type { Test } from 'tap';
import { json, run, skipWithoutDist, writePngs } from './cli-fixtures';
import { crossCheck, generate, needPython, pythonMissing, readBin, relMax, tangentFor, values, type Manifest } from './torchscript-fixtures';

const GENERATOR = path.join(__dirname, 'fixtures', 'make_clip_fixtures.py');
const TINY: ClipConfig = {
  arch: 'clip',
  embedDim: 32,
  vision: { imageSize: 32, patchSize: 8, width: 64, layers: 2, heads: 4 },
  text: { contextLength: 77, vocabSize: 49408, width: 48, heads: 4, layers: 2 },
};
const TOL = { forward: 2e-5, jvp: 2e-5, grad: 1e-4 };

interface TowerRef {
  input: Manifest['output'];
  labels: number[];
  output: Manifest['output'];
  jvp: Manifest['output'];
  params: string[];
  loss: number;
  jvp_primal_max_diff: number;
  grads: Manifest['grads'];
}
interface CaseRef {
  vision: TowerRef;
  text: TowerRef;
  heads: { classes: string[]; templates: string[]; weight: Manifest['output']; logits: Manifest['output']; logit_scale: number };
  tokens: { texts: string[]; ids: number[][] };
}

function asManifest(r: TowerRef): Manifest {
  return { ...r, inputs: [r.input], buffers: [], select: null, modules: {}, jvp_reference: 'torch.func.jvp' } as unknown as Manifest;
}

// One generator run for the file (removed at its end); each test skips (or fails under CI) without PyTorch.
const PY = ['torch', 'open_clip', 'transformers', 'safetensors'];
const FX = pythonMissing(PY) === null ? generate(t, ['tiny', 'tiny-quickgelu', 'hf-tiny', 'tokenizer', 'configs', 'b32'], GENERATOR) : null;
function fixtures(t: Test): string | null {
  return needPython(t, PY) ? FX : null;
}

for (const [name, quickGelu] of [['tiny', false], ['tiny-quickgelu', true]] as const) {
  t.test(`open_clip CLIP (${name}): towers, JVP and linearized gradient equal open_clip + torch.func`, async (t) => {
    const dir = fixtures(t);
    if (!dir) return;
    const ref = JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8')) as CaseRef;
    const clip = await Clip.load({ ...TINY, quickGelu }, path.join(dir, `${name}.safetensors`));
    t.equal(clip.layout, 'open_clip');
    t.equal(clip.logitScale, ref.heads.logit_scale, 'logit_scale read from the file');
    await crossCheck(t, dir, asManifest(ref.vision), clip.vision, `${name} image tower`, TOL);
    await crossCheck(t, dir, asManifest(ref.text), clip.text, `${name} text tower`, TOL);
  });
}

t.test("named configs equal open_clip's model_configs (ViT-B-32, B-16, L-14, each -quickgelu)", async (t) => {
  const dir = fixtures(t);
  if (!dir) return;
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'configs.json'), 'utf8')) as Record<string, ClipConfig & { vision: { mlpDim: number }; text: { mlpDim: number } }>;
  for (const [name, want] of Object.entries(ref)) {
    const c = namedClipConfig(name);
    t.same(
      { embedDim: c.embedDim, quickGelu: c.quickGelu, vision: { mlpDim: 4 * c.vision.width, ...c.vision }, text: { mlpDim: 4 * c.text.width, ...c.text } },
      want,
      name,
    );
  }
});

t.test('CLIP ViT-B-32 at full size (224 px, random init): both towers, JVP and linearized gradient equal open_clip + torch.func', async (t) => {
  const dir = fixtures(t);
  if (!dir) return;
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'b32.json'), 'utf8')) as CaseRef;
  const clip = await Clip.load('ViT-B-32', path.join(dir, 'b32.safetensors'));
  // float32 through 12 blocks of width 768: rounding accumulates.
  const tol = { forward: 1e-4, jvp: 1e-4, grad: 1e-3 };
  await crossCheck(t, dir, asManifest(ref.vision), clip.vision, 'ViT-B-32 image tower', tol);
  await crossCheck(t, dir, asManifest(ref.text), clip.text, 'ViT-B-32 text tower', tol);
});

t.test('the hand-written JVPs equal forward-mode AD (both towers, float64)', async (t) => {
  for (const arch of ['vision', 'text'] as const) {
    const cfg = { ...(arch === 'vision' ? clipVisionConfig(TINY) : { ...clipVisionConfig(TINY), arch: 'clip-text' as const, ...TINY.text, contextLength: 16, vocabSize: 50 }), quickGelu: arch === 'text' };
    const m = Model.create(cfg as never, { dtype: 'float64', seed: 3 });
    const x =
      arch === 'vision'
        ? Tensor.from(Float64Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.7)), [2, 3, 32, 32])
        : Tensor.from(BigInt64Array.from([1, 5, 9, 49, 3, 0, 2, 7, 49, 0, 0, 0].map(BigInt)), [2, 6]);
    const names = [...m.spec.keys()];
    const tau = new Map([...tangentFor(m, names)].map(([n, v]) => [n, Tensor.from(Float64Array.from(v.data() as Float32Array), v.shape)]));
    setJvpMethod('forward-ad');
    const ad = await m.jvp(x, tau);
    setJvpMethod('auto');
    const hand = await m.jvp(x, tau);
    const e = relMax(values(hand.tangent), values(ad.tangent));
    t.ok(e < 1e-12, `${arch}: hand-written JVP = forward-mode AD (${e.toExponential(2)})`);
    t.same(values(hand.primal), values(await m.forward(x)), `${arch}: the JVP's primal is the forward, bit for bit`);
    m.dispose();
  }
});

t.test('transformers CLIPModel weights: renamed, q/k/v fused, projections transposed; towers equal get_*_features', async (t) => {
  const dir = fixtures(t);
  if (!dir) return;
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'hf-tiny.json'), 'utf8')) as {
    config: { hidden_act: string };
    vision: { input: Manifest['output']; output: Manifest['output'] };
    text: { input: Manifest['output']; output: Manifest['output'] };
    logit_scale: number;
  };
  t.equal(ref.config.hidden_act, 'quick_gelu', "transformers' CLIP default activation");
  const clip = await Clip.load({ ...TINY, quickGelu: true }, path.join(dir, 'hf-tiny.safetensors'));
  t.equal(clip.layout, 'transformers');
  t.equal(clip.logitScale, ref.logit_scale);
  for (const tower of ['vision', 'text'] as const) {
    const m = tower === 'vision' ? clip.vision : clip.text;
    const y = await m.forward(readBin(dir, ref[tower].input));
    const e = relMax(values(y), values(readBin(dir, ref[tower].output)));
    t.ok(e < 2e-5, `${tower}: equals transformers (${e.toExponential(2)})`);
  }
  // The same weights in open_clip's names (what a checkpoint of this project holds) load equal.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-clip-'));
  const file = path.join(tmp, 'as-open-clip.safetensors');
  saveTensors(file, new Map([...clip.vision.parameters(), ...clip.text.parameters(), ['logit_scale', Tensor.from(new Float32Array([clip.logitScale]), [])]]));
  const again = await Clip.load({ ...TINY, quickGelu: true }, file);
  t.equal(again.layout, 'open_clip');
  const x = readBin(dir, ref.vision.input);
  t.same(values(await again.vision.forward(x)), values(await clip.vision.forward(x)), 'round trip through open_clip names is exact');
  again.dispose();
  clip.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

t.test('tokenizer (tokenizer.json through @huggingface/tokenizers) equals open_clip tokenize', async (t) => {
  const dir = fixtures(t);
  if (!dir) return;
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'tokens.json'), 'utf8')) as { texts: string[]; ids: number[][] };
  const tok = ClipTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const ids = tok.encode(ref.texts);
  t.same(ids.shape, [ref.texts.length, 77]);
  const got = Array.from(ids.data() as BigInt64Array, Number);
  t.same(got, ref.ids.flat(), `all ${ref.texts.length} texts (unicode, punctuation, a 300-character one truncated) tokenize as open_clip`);
  t.throws(() => ClipTokenizer.fromFile(path.join(dir, 'tiny.json')), ArgumentError, 'a JSON that is not a tokenizer is refused');
});

t.test("zero-shot heads and logits equal open_clip's build_zero_shot_classifier", async (t) => {
  const dir = fixtures(t);
  if (!dir) return;
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'tiny.json'), 'utf8')) as CaseRef;
  const clip = await Clip.load(TINY, path.join(dir, 'tiny.safetensors'));
  const tok = ClipTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const head = await clip.zeroShotHead(tok, ref.heads.classes, ref.heads.templates);
  const e = relMax(values(head.weight), values(readBin(dir, ref.heads.weight)));
  t.ok(e < 1e-5, `head weights = exp(logit_scale)·zeroshot_weightsᵀ (${e.toExponential(2)})`);
  const x = readBin(dir, ref.vision.input);
  const feats = await clip.vision.forward(x);
  // logits = weight · f/‖f‖, as the native head computes it in every train/eval step.
  const f = values(feats);
  const w = values(head.weight);
  const [C, E] = head.weight.shape as [number, number];
  const logits: number[] = [];
  for (let b = 0; b < 2; b++) {
    const row = f.subarray(b * E, (b + 1) * E);
    const n = Math.hypot(...row);
    for (let c = 0; c < C; c++) logits.push(row.reduce((a, v, k) => a + (v / n) * w[c * E + k]!, 0));
  }
  const el = relMax(logits, values(readBin(dir, ref.heads.logits)));
  t.ok(el < 1e-5, `zero-shot logits equal open_clip's (${el.toExponential(2)})`);
  const y = Tensor.from(BigInt64Array.from([0n, 1n]), [2]);
  const ev = await clip.vision.evaluate(x, y, { head });
  const best = [0, 1].map((b) => logits.slice(b * C, (b + 1) * C).reduce((bi, v, i, a) => (v > a[bi]! ? i : bi), 0));
  t.equal(ev.correct, best.filter((c, b) => c === b).length, 'the native head step scores as the reference logits');
  t.same(loadTemplates('builtin:openai-imagenet').length, 80);
  clip.dispose();
});

t.test('weight files: errors name the keys, the shapes, the layout', async (t) => {
  const dir = fixtures(t);
  if (!dir) return;
  const file = path.join(dir, 'tiny.safetensors');
  await t.rejects(Clip.load({ ...TINY, embedDim: 16 }, file), { name: 'ShapeError', message: /'visual\.proj' has shape \[64, 32\], the image tower of this config expects \[64, 16\]/ }, 'another CLIP size: a shape error naming the tensor');
  t.type(await Clip.load({ ...TINY, embedDim: 16 }, file).catch((e: unknown) => e), ShapeError);
  await t.rejects(Clip.load({ ...TINY, vision: { ...TINY.vision, layers: 3 } }, file), /missing visual\.transformer\.resblocks\.2\./, 'a missing block is named');
  await t.rejects(Clip.load({ ...TINY, text: { ...TINY.text, layers: 1 } }, file), /not in the model transformer\.resblocks\.1\./, 'an extra block is named');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-clip-'));
  const other = path.join(tmp, 'other.safetensors');
  saveTensors(other, new Map([['encoder.weight', Tensor.from(new Float32Array(4), [2, 2])]]));
  await t.rejects(Clip.load(TINY, other), ParameterError, 'a non-CLIP file is refused');
  await t.rejects(Clip.load(TINY, other), /not CLIP weights in open_clip's layout/);
  t.throws(() => namedClipConfig('ViT-H-99'), /unknown CLIP model 'ViT-H-99' \(known: ViT-B-32/);
  fs.rmSync(tmp, { recursive: true, force: true });
});

t.test('text tower inputs are checked', async (t) => {
  const m = Model.create({ ...clipVisionConfig(TINY), arch: 'clip-text', ...TINY.text, contextLength: 8, vocabSize: 20 } as never);
  await t.rejects(m.forward(Tensor.from(new Float32Array(4), [1, 4])), /token ids of dtype int64/);
  await t.rejects(m.forward(Tensor.from(BigInt64Array.from([1n, 25n]), [1, 2])), /token ids must be in \[0, 20\), got 25/);
  await t.rejects(m.forward(Tensor.from(new BigInt64Array(9), [1, 9])), /1 <= length <= 8/);
  m.dispose();
});

t.test('CLI walk-through: tangent heads (zero-shot, two image folders) → finetune linear → apply → eval', { skip: skipWithoutDist }, async (t) => {
  const dir = fixtures(t);
  if (!dir) return;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-clip-cli-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const cfg = path.join(tmp, 'clip.json');
  fs.writeFileSync(cfg, JSON.stringify(TINY));
  // 40×40 grey PNGs: CLIP's preprocessing resizes, crops, makes sRGB and normalises them.
  const bands = await writePngs(path.join(tmp, 'bands'), { classes: 3, perClass: 10, size: 40 });
  const rows = await writePngs(path.join(tmp, 'rows'), { rows: true, classes: 3, perClass: 10, size: 40 });
  const weights = path.join(dir, 'tiny.safetensors');
  const heads = path.join(tmp, 'heads.safetensors');
  const h = json(run('heads', '--model', cfg, '--pretrained', weights, '--tokenizer', path.join(dir, 'tokenizer.json'), '--classes', bands, '--classes', `rows=${rows}`, '--templates', 'builtin:simple', '--out', heads, '--json'));
  t.same(h.tasks, { bands: 3, rows: 3 }, 'one head per --classes (named by the folder, or NAME=), classes from the folders');
  t.equal(h.weights, 'open_clip');
  // The heads file equals the library's zero-shot head on the same weights and class names.
  const clip = await Clip.load(TINY, weights);
  const tok = ClipTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const want = await clip.zeroShotHead(tok, ['class0', 'class1', 'class2'], ['a photo of a {}.']);
  const { loadHeads } = await import('../lib/train/pretrain');
  const got = loadHeads(heads, { theta0: clip.vision.parameters(), features: 32 });
  t.same(values(got.get('bands')!.weight), values(want.weight), 'heads file = Clip.zeroShotHead');
  t.equal(got.get('bands')!.normalize, true);
  for (const [task, data] of [['bands', bands], ['rows', rows]] as const) {
    const r = json(run('finetune', '--model', cfg, '--pretrained', weights, '--heads', heads, '--data', data, '--task', task, '--mode', 'linear', '--steps', '6', '--batch-size', '8', '--lr', '1e-3', '--out', path.join(tmp, `${task}.safetensors`), '--progress', 'none', '--json'));
    t.equal(r.mode, 'linear');
  }
  const merged = path.join(tmp, 'sum.safetensors');
  json(run('apply', '--checkpoints', path.join(tmp, 'bands.safetensors'), path.join(tmp, 'rows.safetensors'), '--alpha', '0.5', '--out', merged, '--json'));
  const ev = json(run('eval', '--checkpoints', merged, '--data', bands, rows, '--split', 'test', '--json', '--progress', 'none'));
  t.ok(JSON.stringify(ev).includes('sum.safetensors'), 'eval reports the edited checkpoint');
  // θ0's zero-shot accuracy from the CLI equals the library's evaluate with the same head on the same images.
  const { prepareData } = await import('../lib/data/spec');
  const d = await prepareData(bands, { size: [32, 32], channels: 3, preprocess: 'clip' });
  const { imagesTensor } = await import('../lib/analysis/inputs');
  const x = imagesTensor(d.test);
  const y = Tensor.from(BigInt64Array.from(Array.from(d.test.labels, BigInt)), [d.test.count]);
  const lib = await clip.vision.evaluate(x, y, { head: got.get('bands')! });
  t.equal(ev.pretrained.bands, lib.correct / d.test.count, `θ0's zero-shot accuracy from the CLI = the library's (${lib.correct}/${d.test.count})`);
  const { loadTensors } = await import('../lib/util/state');
  const edited = loadTensors(merged).tensors;
  const lin = await clip.vision.linearize().evaluate(x, y, { params: edited, head: got.get('bands')! });
  t.equal(ev.checkpoints[0].accuracy.bands, lin.correct / d.test.count, `the edited checkpoint through f_lin: CLI = library (${lin.correct}/${d.test.count})`);
  clip.dispose();
});

/**
 * CLIP in Node: both towers as native models (native/models/clip.cpp, hand-written JVPs), weights
 * from open_clip's or transformers' safetensors (lib/clip/weights.ts), the tokenizer
 * (lib/clip/tokenizer.ts) and zero-shot classification heads as the paper's code builds them.
 *
 *   const clip = await Clip.load('ViT-B-32', 'open_clip_model.safetensors');
 *   const tok = ClipTokenizer.fromFile('tokenizer.json');
 *   const head = await clip.zeroShotHead(tok, ['cat', 'dog'], BUILTIN_TEMPLATES['openai-imagenet']);
 *   // clip.vision is a Model like any: forward, jvp, linearize, lossAndGrad, NTK, finetune with { head }.
 */
import * as path from 'node:path';
import { loadStateDict } from '../checkpoint/io';
import { ArgumentError, ParameterError, ShapeError } from '../errors';
import { Model, type Head, type ModelOptions, type StateDict } from '../model';
import { Tensor } from '../tensor';
import { clipTextConfig, clipVisionConfig, namedClipConfig, type ClipConfig } from './configs';
import type { ClipTokenizer } from './tokenizer';
import { toOpenClipNames, towerOf, type ClipLayout } from './weights';

export { CLIP_NAMES, clipTextConfig, clipVisionConfig, namedClipConfig, parseClipSpec, type ClipConfig } from './configs';
export { ClipTokenizer } from './tokenizer';
export { BUILTIN_TEMPLATES, loadTemplates } from './templates';
export { clipLayout, clipTowerState, toOpenClipNames, type ClipLayout } from './weights';

/** CLIP's initial temperature, ln(1 / 0.07): the logit scale of a randomly initialised CLIP. */
export const INITIAL_LOGIT_SCALE = Math.log(1 / 0.07);

/** A tower's tensors from a file's (open_clip names), checked against the model: names missing or extra, shapes. */
async function towerState(all: StateDict, model: Model, file: string): Promise<StateDict> {
  const tower = model.config.arch === 'clip-vision' ? 'vision' : 'text';
  const mine = [...all].filter(([n]) => towerOf(n) === tower);
  const extra = mine.filter(([n]) => !model.spec.has(n)).map(([n]) => n);
  const missing = [...model.spec.keys()].filter((n) => !all.has(n));
  const which = tower === 'vision' ? 'image' : 'text';
  if (missing.length || extra.length)
    throw new ParameterError(
      `${file}: its ${which} tower does not match the config (${[
        missing.length ? `missing ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ` (+${missing.length - 4} more)` : ''}` : '',
        extra.length ? `not in the model ${extra.slice(0, 4).join(', ')}${extra.length > 4 ? ` (+${extra.length - 4} more)` : ''}` : '',
      ].filter(Boolean).join('; ')}): is it another CLIP size?`,
    );
  const out: StateDict = new Map();
  for (const [name, spec] of model.spec) {
    let t = all.get(name)!;
    if (t.shape.length !== spec.shape.length || t.shape.some((v, i) => v !== spec.shape[i]))
      throw new ShapeError(`${file}: '${name}' has shape [${t.shape.join(', ')}], the ${which} tower of this config expects [${spec.shape.join(', ')}]: is it another CLIP size?`);
    if (t.dtype !== spec.dtype || t.device !== spec.device) t = await t.to({ dtype: spec.dtype, device: spec.device as never });
    out.set(name, t);
  }
  return out;
}

export class Clip implements Disposable {
  private constructor(
    readonly config: ClipConfig,
    /** The image tower: images [batch, 3, S, S] (CLIP-normalised) → embeddings [batch, embedDim]. */
    readonly vision: Model,
    /** The text tower: token ids [batch, ≤ contextLength] (int64) → embeddings [batch, embedDim]. */
    readonly text: Model,
    /** ln of the logit scale (CLIP's learned temperature); zero-shot logits are exp(logitScale)·cos. */
    readonly logitScale: number,
    /** Where the weights came from: a layout, or `random` (seeded initialisation). */
    readonly layout: ClipLayout | 'random',
  ) {}

  /**
   * A CLIP by open_clip config name (`ViT-B-32`, …, see CLIP_NAMES) or config, with weights from
   * `weights` (a safetensors/torch file in open_clip's or transformers' layout) or, without it,
   * seeded random initialisation.
   */
  static async load(config: ClipConfig | string, weights?: string, opts: ModelOptions = {}): Promise<Clip> {
    const cfg = typeof config === 'string' ? namedClipConfig(config) : config;
    const vision0 = Model.create(clipVisionConfig(cfg), opts);
    const text0 = Model.create(clipTextConfig(cfg), opts);
    if (weights === undefined) return new Clip(cfg, vision0, text0, INITIAL_LOGIT_SCALE, 'random');
    try {
      const file = path.resolve(weights);
      const { layout, tensors } = toOpenClipNames((await loadStateDict(file)).tensors, file);
      const ls = tensors.get('logit_scale');
      if (ls !== undefined && ls.shape.reduce((a, b) => a * b, 1) !== 1) throw new ShapeError(`${file}: logit_scale must hold one value, got shape [${ls.shape.join(', ')}]`);
      const logitScale = ls === undefined ? INITIAL_LOGIT_SCALE : Number((await ls.to('float64')).data()[0]);
      const vision = vision0.withParameters(await towerState(tensors, vision0, file));
      const text = text0.withParameters(await towerState(tensors, text0, file));
      return new Clip(cfg, vision, text, logitScale, layout);
    } finally {
      vision0.dispose();
      text0.dispose();
    }
  }

  /** Text embeddings [n, embedDim] of token ids [n, L], in batches (each cut to its longest text: the causal mask makes it exact). */
  async encodeTokens(ids: Tensor, eot: number, batch = 128): Promise<Tensor> {
    if (ids.dtype !== 'int64' || ids.shape.length !== 2) throw new ArgumentError(`token ids must be int64 [n, length], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    const [n, L] = ids.shape as [number, number];
    const all = ids.data() as BigInt64Array;
    const E = this.config.embedDim;
    const out = new Float32Array(n * E);
    for (let s = 0; s < n; s += batch) {
      const m = Math.min(batch, n - s);
      let len = 1;
      for (let i = 0; i < m; i++) {
        const row = all.subarray((s + i) * L, (s + i + 1) * L);
        const e = row.indexOf(BigInt(eot));
        len = Math.max(len, e < 0 ? L : e + 1);
      }
      const chunk = new BigInt64Array(m * len);
      for (let i = 0; i < m; i++) chunk.set(all.subarray((s + i) * L, (s + i) * L + len), i * len);
      const x = Tensor.from(chunk, [m, len]);
      const y = await this.text.forward(x);
      out.set(y.data() as Float32Array, s * E);
      x.dispose();
      y.dispose();
    }
    return Tensor.from(out, [n, E]);
  }

  /**
   * A zero-shot classification head, the paper's code's recipe (open_clip's
   * build_zero_shot_classifier): for each class, every template filled with its name, each text
   * embedding L2-normalised, their mean re-normalised; weight = exp(logitScale) · those rows
   * [classes, embedDim], `normalize: true` (logits = exp(logitScale) · cos(image, class)).
   */
  async zeroShotHead(tokenizer: ClipTokenizer, classes: readonly string[], templates: readonly string[]): Promise<Head> {
    if (classes.length === 0) throw new ArgumentError('zero-shot head: no class names');
    if (templates.length === 0) throw new ArgumentError('zero-shot head: no templates');
    const texts = classes.flatMap((c) => templates.map((t) => t.replace('{}', c)));
    const ids = tokenizer.encode(texts, this.config.text.contextLength);
    const emb = await this.encodeTokens(ids, tokenizer.eot);
    ids.dispose();
    const E = this.config.embedDim;
    const e = emb.data() as Float32Array;
    const w = new Float32Array(classes.length * E);
    const scale = Math.exp(this.logitScale);
    const acc = new Float64Array(E);
    for (let c = 0; c < classes.length; c++) {
      acc.fill(0);
      for (let t = 0; t < templates.length; t++) {
        const row = e.subarray((c * templates.length + t) * E, (c * templates.length + t + 1) * E);
        let nrm = 0;
        for (const v of row) nrm += v * v;
        nrm = Math.sqrt(nrm);
        for (let k = 0; k < E; k++) acc[k]! += row[k]! / nrm;
      }
      let nrm = 0;
      for (const v of acc) nrm += v * v;
      nrm = Math.sqrt(nrm);
      for (let k = 0; k < E; k++) w[c * E + k] = (scale * acc[k]!) / nrm;
    }
    emb.dispose();
    return { weight: Tensor.from(w, [classes.length, E]), normalize: true };
  }

  dispose(): void {
    this.vision.dispose();
    this.text.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

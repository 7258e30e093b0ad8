/**
 * CLIP weights in either public layout, mapped to the towers' parameter names (open_clip's):
 * - **open_clip** (`open_clip_model.safetensors`, or `model.state_dict()` saved by the user):
 *   `visual.*` is the image tower; `token_embedding.weight`, `positional_embedding`,
 *   `transformer.*`, `ln_final.*`, `text_projection` the text tower; `logit_scale`.
 * - **transformers** (`model.safetensors` of a `CLIPModel`, e.g. openai/clip-vit-base-patch32):
 *   `vision_model.*`, `text_model.*`, `visual_projection.weight`, `text_projection.weight`,
 *   `logit_scale`. Separate q/k/v projections are concatenated into open_clip's fused
 *   `in_proj_weight`/`in_proj_bias` (q, k, v order), and the bias-free projection layers
 *   (`[embed, width]` weights) transposed into open_clip's `[width, embed]` matrices.
 * A file that is neither, or lacks tensors a tower needs, is a ParameterError naming the keys.
 */
import { ParameterError } from '../errors';
import type { StateDict } from '../model';
import { Tensor } from '../tensor';

export type ClipLayout = 'open_clip' | 'transformers';
export type ClipTower = 'vision' | 'text';

/** Which layout a CLIP state dict is in, or null when it is neither. */
export function clipLayout(names: Iterable<string>): ClipLayout | null {
  let oc = false;
  let hf = false;
  for (const n of names) {
    if (n.startsWith('vision_model.') || n.startsWith('text_model.') || n === 'visual_projection.weight') hf = true;
    if (n.startsWith('visual.') || n === 'token_embedding.weight' || n.startsWith('transformer.resblocks.')) oc = true;
  }
  return hf && !oc ? 'transformers' : oc && !hf ? 'open_clip' : null;
}

/** Whether a parameter name belongs to a tower (open_clip names). */
export function towerOf(name: string): ClipTower | 'logit_scale' | null {
  if (name === 'logit_scale') return 'logit_scale';
  if (name.startsWith('visual.')) return 'vision';
  if (/^(token_embedding\.weight|positional_embedding|text_projection|ln_final\.(weight|bias)|transformer\.resblocks\.\d+\..+)$/.test(name)) return 'text';
  return null;
}

function concatRows(parts: Tensor[], name: string): Tensor {
  const first = parts[0]!;
  for (const p of parts)
    if (p.dtype !== first.dtype || p.shape.length !== first.shape.length || p.shape.slice(1).some((v, i) => v !== first.shape[i + 1]))
      throw new ParameterError(`transformers CLIP weights: the q/k/v projections of ${name} differ in shape or dtype`);
  const arrays = parts.map((p) => p.data());
  const Ctor = arrays[0]!.constructor as new (n: number) => typeof arrays[0];
  const out = new Ctor(arrays.reduce((a, b) => a + b.length, 0));
  let off = 0;
  for (const a of arrays) {
    (out as unknown as { set(a: ArrayLike<unknown>, o: number): void }).set(a as ArrayLike<unknown>, off);
    off += a.length;
  }
  return Tensor.from(out as never, [parts.reduce((a, p) => a + p.shape[0]!, 0), ...first.shape.slice(1)], first.dtype);
}

function transpose2d(t: Tensor, name: string): Tensor {
  if (t.shape.length !== 2) throw new ParameterError(`transformers CLIP weights: '${name}' must be a matrix, got shape [${t.shape.join(', ')}]`);
  const [r, c] = t.shape as [number, number];
  const a = t.data();
  const Ctor = a.constructor as new (n: number) => typeof a;
  const out = new Ctor(a.length) as unknown as Record<number, unknown>;
  const src = a as unknown as Record<number, unknown>;
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = src[i * c + j];
  return Tensor.from(out as never, [c, r], t.dtype);
}

/** transformers' CLIPModel names → open_clip's, over both towers. */
function fromTransformers(t: ReadonlyMap<string, Tensor>, file: string): StateDict {
  const out: StateDict = new Map();
  const used = new Set<string>();
  const take = (hf: string, oc: string, f?: (x: Tensor) => Tensor): void => {
    const x = t.get(hf);
    if (x === undefined) return;
    used.add(hf);
    out.set(oc, f ? f(x) : x);
  };
  const towers: Array<[string, string, string]> = [
    ['vision_model.', 'visual.', 'visual_projection.weight'],
    ['text_model.', '', 'text_projection.weight'],
  ];
  for (const [hf, oc, projection] of towers) {
    const vision = oc === 'visual.';
    if (vision) {
      take(`${hf}embeddings.class_embedding`, 'visual.class_embedding');
      take(`${hf}embeddings.patch_embedding.weight`, 'visual.conv1.weight');
      take(`${hf}embeddings.position_embedding.weight`, 'visual.positional_embedding');
      take(`${hf}pre_layrnorm.weight`, 'visual.ln_pre.weight');
      take(`${hf}pre_layrnorm.bias`, 'visual.ln_pre.bias');
      take(`${hf}post_layernorm.weight`, 'visual.ln_post.weight');
      take(`${hf}post_layernorm.bias`, 'visual.ln_post.bias');
      take(projection, 'visual.proj', (x) => transpose2d(x, projection));
    } else {
      take(`${hf}embeddings.token_embedding.weight`, 'token_embedding.weight');
      take(`${hf}embeddings.position_embedding.weight`, 'positional_embedding');
      take(`${hf}final_layer_norm.weight`, 'ln_final.weight');
      take(`${hf}final_layer_norm.bias`, 'ln_final.bias');
      take(projection, 'text_projection', (x) => transpose2d(x, projection));
    }
    // transformers keeps position_ids as a buffer in older files: an arange, not a weight.
    for (const b of [`${hf}embeddings.position_ids`]) if (t.has(b)) used.add(b);
    for (let i = 0; ; i++) {
      const src = `${hf}encoder.layers.${i}.`;
      if (![...t.keys()].some((k) => k.startsWith(src))) break;
      const dst = `${oc}transformer.resblocks.${i}.`;
      for (const kind of ['weight', 'bias']) {
        const qkv = ['q', 'k', 'v'].map((p) => `${src}self_attn.${p}_proj.${kind}`);
        const present = qkv.filter((k) => t.has(k));
        if (present.length === 3) {
          out.set(`${dst}attn.in_proj_${kind}`, concatRows(qkv.map((k) => t.get(k)!), `${src}self_attn`));
          qkv.forEach((k) => used.add(k));
        } else if (present.length > 0) {
          throw new ParameterError(`${file}: transformers CLIP weights have ${present.join(', ')} but not ${qkv.filter((k) => !t.has(k)).join(', ')}`);
        }
        take(`${src}self_attn.out_proj.${kind}`, `${dst}attn.out_proj.${kind}`);
        take(`${src}layer_norm1.${kind}`, `${dst}ln_1.${kind}`);
        take(`${src}layer_norm2.${kind}`, `${dst}ln_2.${kind}`);
        take(`${src}mlp.fc1.${kind}`, `${dst}mlp.c_fc.${kind}`);
        take(`${src}mlp.fc2.${kind}`, `${dst}mlp.c_proj.${kind}`);
      }
    }
  }
  take('logit_scale', 'logit_scale');
  const unknown = [...t.keys()].filter((k) => !used.has(k));
  if (unknown.length)
    throw new ParameterError(`${file}: transformers CLIP weights with names this mapping does not know: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ` (+${unknown.length - 5} more)` : ''}`);
  return out;
}

/**
 * Every tensor of a CLIP file under open_clip's names (the transformers layout renamed), with
 * the layout found. `tensors` already in open_clip names (a file this project wrote) pass as is.
 */
export function toOpenClipNames(tensors: ReadonlyMap<string, Tensor>, file: string): { layout: ClipLayout; tensors: StateDict } {
  const layout = clipLayout(tensors.keys());
  if (layout === null) {
    const sample = [...tensors.keys()].slice(0, 4).join(', ');
    throw new ParameterError(`${file}: not CLIP weights in open_clip's layout (visual.*, token_embedding.weight, transformer.resblocks.*) or transformers' (vision_model.*, text_model.*); it has ${sample || 'no tensors'}`);
  }
  if (layout === 'transformers') return { layout, tensors: fromTransformers(tensors, file) };
  const unknown = [...tensors.keys()].filter((k) => towerOf(k) === null);
  if (unknown.length)
    throw new ParameterError(`${file}: open_clip CLIP weights with names no tower has: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ` (+${unknown.length - 5} more)` : ''} (only ViT towers with open_clip's standard blocks are supported)`);
  return { layout, tensors: new Map(tensors) };
}

/** The tensors of one tower (open_clip names), from a file's tensors in either layout. */
export function clipTowerState(tensors: ReadonlyMap<string, Tensor>, tower: ClipTower, file: string): StateDict {
  const all = toOpenClipNames(tensors, file).tensors;
  return new Map([...all].filter(([n]) => towerOf(n) === tower));
}

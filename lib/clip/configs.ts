/**
 * CLIP architectures by open_clip's config names (open_clip/model_configs/*.json): `ViT-B-32`,
 * `ViT-B-16`, `ViT-L-14`, each also as `-quickgelu` (QuickGELU, as OpenAI's own weights were
 * trained: open_clip loads `pretrained='openai'` that way, and transformers' `openai/clip-vit-*`
 * configs say `hidden_act: quick_gelu`). A custom CLIP is the same object as JSON:
 * `{"arch": "clip", "embedDim": …, "vision": {…}, "text": {…}, "quickGelu"?: bool}`.
 */
import { ArgumentError } from '../errors';
import type { ClipTextConfig, ClipVisionConfig } from '../model';

export interface ClipConfig {
  arch: 'clip';
  name?: string;
  embedDim: number;
  quickGelu?: boolean;
  vision: Omit<ClipVisionConfig, 'arch' | 'embedDim' | 'quickGelu' | 'name'>;
  text: Omit<ClipTextConfig, 'arch' | 'embedDim' | 'quickGelu' | 'name'>;
}

const TEXT_512 = { contextLength: 77, vocabSize: 49408, width: 512, heads: 8, layers: 12 };

/** open_clip's configs (vision heads = width / 64, MLP 4 × width). */
const BASE: Record<string, Omit<ClipConfig, 'arch' | 'name'>> = {
  'ViT-B-32': { embedDim: 512, vision: { imageSize: 224, patchSize: 32, width: 768, layers: 12, heads: 12 }, text: TEXT_512 },
  'ViT-B-16': { embedDim: 512, vision: { imageSize: 224, patchSize: 16, width: 768, layers: 12, heads: 12 }, text: TEXT_512 },
  'ViT-L-14': { embedDim: 768, vision: { imageSize: 224, patchSize: 14, width: 1024, layers: 24, heads: 16 }, text: { ...TEXT_512, width: 768, heads: 12 } },
};

export const CLIP_NAMES: readonly string[] = Object.keys(BASE).flatMap((n) => [n, `${n}-quickgelu`]);

/** A named CLIP config; an ArgumentError listing the names for an unknown one. */
export function namedClipConfig(name: string): ClipConfig {
  const quick = name.endsWith('-quickgelu');
  const b = BASE[quick ? name.slice(0, -'-quickgelu'.length) : name];
  if (!b) throw new ArgumentError(`unknown CLIP model '${name}' (known: ${CLIP_NAMES.join(', ')}; or give a JSON config {"arch": "clip", "embedDim", "vision", "text"})`);
  return { arch: 'clip', name, embedDim: b.embedDim, quickGelu: quick, vision: { ...b.vision }, text: { ...b.text } };
}

/** The image tower's model config. */
export function clipVisionConfig(c: ClipConfig): ClipVisionConfig {
  checkClipConfig(c);
  return { arch: 'clip-vision', ...(c.name ? { name: c.name } : {}), embedDim: c.embedDim, quickGelu: c.quickGelu ?? false, ...c.vision };
}

/** The text tower's model config. */
export function clipTextConfig(c: ClipConfig): ClipTextConfig {
  checkClipConfig(c);
  return { arch: 'clip-text', ...(c.name ? { name: c.name } : {}), embedDim: c.embedDim, quickGelu: c.quickGelu ?? false, ...c.text };
}

function checkClipConfig(c: ClipConfig): void {
  if (typeof c !== 'object' || c === null || c.arch !== 'clip') throw new ArgumentError('a CLIP config is {"arch": "clip", "embedDim", "vision", "text"}');
  for (const k of ['vision', 'text'] as const)
    if (typeof c[k] !== 'object' || c[k] === null) throw new ArgumentError(`clip.${k} must be an object (the ${k === 'vision' ? 'image' : 'text'} tower's sizes)`);
  const known = new Set(['arch', 'name', 'embedDim', 'quickGelu', 'vision', 'text']);
  for (const k of Object.keys(c)) if (!known.has(k)) throw new ArgumentError(`clip config: unknown field '${k}' (fields: ${[...known].join(', ')})`);
}

/** `clip:NAME` → the config; other strings null. */
export function parseClipSpec(spec: string): ClipConfig | null {
  return spec.startsWith('clip:') ? namedClipConfig(spec.slice(5)) : null;
}

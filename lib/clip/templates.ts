/**
 * Prompt templates for zero-shot heads, `{}` standing for the class name (`--templates builtin:NAME`).
 * `simple`: one template. `openai-imagenet`: the 80 prompts of Radford et al. (2021) for ImageNet
 * (OpenAI's CLIP notebook; open_clip's OPENAI_IMAGENET_TEMPLATES). `mnist`, `svhn`, `gtsrb`,
 * `eurosat`, `dtd`, `cars`, `sun397`, `resisc45`: those the paper's code (after Ilharco et al.'s
 * task-vectors code) uses for its 8 tasks.
 */
import * as fs from 'node:fs';
import { ArgumentError } from '../errors';

const IMAGENET = [
  'a bad photo of a {}.', 'a photo of many {}.', 'a sculpture of a {}.', 'a photo of the hard to see {}.', 'a low resolution photo of the {}.',
  'a rendering of a {}.', 'graffiti of a {}.', 'a bad photo of the {}.', 'a cropped photo of the {}.', 'a tattoo of a {}.',
  'the embroidered {}.', 'a photo of a hard to see {}.', 'a bright photo of a {}.', 'a photo of a clean {}.', 'a photo of a dirty {}.',
  'a dark photo of the {}.', 'a drawing of a {}.', 'a photo of my {}.', 'the plastic {}.', 'a photo of the cool {}.',
  'a close-up photo of a {}.', 'a black and white photo of the {}.', 'a painting of the {}.', 'a painting of a {}.', 'a pixelated photo of the {}.',
  'a sculpture of the {}.', 'a bright photo of the {}.', 'a cropped photo of a {}.', 'a plastic {}.', 'a photo of the dirty {}.',
  'a jpeg corrupted photo of a {}.', 'a blurry photo of the {}.', 'a photo of the {}.', 'a good photo of the {}.', 'a rendering of the {}.',
  'a {} in a video game.', 'a photo of one {}.', 'a doodle of a {}.', 'a close-up photo of the {}.', 'a photo of a {}.',
  'the origami {}.', 'the {} in a video game.', 'a sketch of a {}.', 'a doodle of the {}.', 'a origami {}.',
  'a low resolution photo of a {}.', 'the toy {}.', 'a rendition of the {}.', 'a photo of the clean {}.', 'a photo of a large {}.',
  'a rendition of a {}.', 'a photo of a nice {}.', 'a photo of a weird {}.', 'a blurry photo of a {}.', 'a cartoon {}.',
  'art of a {}.', 'a sketch of the {}.', 'a embroidered {}.', 'a pixelated photo of a {}.', 'itap of the {}.',
  'a jpeg corrupted photo of the {}.', 'a good photo of a {}.', 'a plushie {}.', 'a photo of the nice {}.', 'a photo of the small {}.',
  'a photo of the weird {}.', 'the cartoon {}.', 'art of the {}.', 'a drawing of the {}.', 'a photo of the large {}.',
  'a black and white photo of a {}.', 'the plushie {}.', 'a dark photo of a {}.', 'itap of a {}.', 'graffiti of the {}.',
  'a toy {}.', 'itap of my {}.', 'a photo of a cool {}.', 'a photo of a small {}.', 'a tattoo of the {}.',
];

export const BUILTIN_TEMPLATES: Readonly<Record<string, readonly string[]>> = {
  simple: ['a photo of a {}.'],
  'openai-imagenet': IMAGENET,
  mnist: ['a photo of the number: "{}".'],
  svhn: ['a photo of the number: "{}".'],
  gtsrb: ['a zoomed in photo of a "{}" traffic sign.', 'a centered photo of a "{}" traffic sign.', 'a close up photo of a "{}" traffic sign.'],
  eurosat: ['a centered satellite photo of {}.', 'a centered satellite photo of a {}.', 'a centered satellite photo of the {}.'],
  dtd: ['a photo of a {} texture.', 'a photo of a {} pattern.', 'a photo of a {} thing.', 'a photo of a {} object.', 'a photo of the {} texture.', 'a photo of the {} pattern.', 'a photo of the {} thing.', 'a photo of the {} object.'],
  cars: ['a photo of a {}.', 'a photo of the {}.', 'a photo of my {}.', 'i love my {}!', 'a photo of my dirty {}.', 'a photo of my clean {}.', 'a photo of my new {}.', 'a photo of my old {}.'],
  sun397: ['a photo of a {}.', 'a photo of the {}.'],
  resisc45: ['satellite imagery of {}.', 'aerial imagery of {}.', 'satellite photo of {}.', 'aerial photo of {}.', 'satellite view of {}.', 'aerial view of {}.', 'satellite imagery of a {}.', 'aerial imagery of a {}.', 'satellite photo of a {}.', 'aerial photo of a {}.', 'satellite view of a {}.', 'aerial view of a {}.', 'satellite imagery of the {}.', 'aerial imagery of the {}.', 'satellite photo of the {}.', 'aerial photo of the {}.', 'satellite view of the {}.', 'aerial view of the {}.'],
};

/** `builtin:NAME` or a text file with one template per line (blank lines and `#` lines skipped). */
export function loadTemplates(spec: string, option = '--templates'): string[] {
  let list: string[];
  if (spec.startsWith('builtin:')) {
    const b = BUILTIN_TEMPLATES[spec.slice(8)];
    if (!b) throw new ArgumentError(`${option}: unknown built-in templates '${spec.slice(8)}' (built-in: ${Object.keys(BUILTIN_TEMPLATES).map((k) => `builtin:${k}`).join(', ')})`);
    list = [...b];
  } else {
    if (!fs.existsSync(spec)) throw new ArgumentError(`${option}: ${spec}: no such file (a text file with one template per line, {} for the class name, or builtin:NAME)`);
    list = readLines(spec);
  }
  if (list.length === 0) throw new ArgumentError(`${option}: ${spec} holds no templates`);
  list.forEach((t, i) => {
    if ((t.match(/\{\}/g) ?? []).length !== 1) throw new ArgumentError(`${option}: ${spec}: template ${i + 1} (${JSON.stringify(t)}) must hold exactly one {} (where the class name goes)`);
  });
  return list;
}

/** Non-empty lines of a UTF-8 text file, trimmed, `#` comments skipped. */
export function readLines(file: string): string[] {
  return fs
    .readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

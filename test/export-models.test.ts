// Real architectures as torch.export programs, exported at test time (batch dynamic) by the
// PyTorch the addon is built against, against PyTorch's own eval forward, forward-mode JVP and
// reverse-over-forward linearized gradient: torchvision resnet18 and vit_b_32 (batch 2, 224×224);
// open_clip's ViT-B-32 image and text towers (the paper's model, random init); a BERT-like and a
// GPT-2-like sequence classifier from Hugging Face transformers configs (token ids in, a
// ModelOutput's "logits" out). Not committed: 45–350 MB per file.
import t from 'tap';
import * as path from 'node:path';
import { crossCheck, generate, manifest, needPython } from './torchscript-fixtures';

const GENERATOR = path.join(__dirname, 'fixtures', 'make_export_fixtures.py');
// float32 throughout; deep stacks of blocks accumulate rounding.
const TOL = { forward: 1e-4, jvp: 1e-4, grad: 1e-3 };

const CASES: Array<{ gen: string; names: string[]; modules: string[] }> = [
  { gen: 'resnet18', names: ['resnet18'], modules: ['torchvision'] },
  { gen: 'vit_b_32', names: ['vit_b_32'], modules: ['torchvision'] },
  { gen: 'open_clip', names: ['clip_image', 'clip_text'], modules: ['open_clip'] },
  { gen: 'transformers', names: ['bert', 'gpt2'], modules: ['transformers'] },
];

for (const c of CASES) {
  t.test(`${c.names.join(' and ')}, torch.export, against PyTorch`, async (t) => {
    if (!needPython(t, ['torch', 'torch.export', ...c.modules])) return;
    const dir = generate(t, [c.gen], GENERATOR);
    for (const name of c.names) {
      const m = manifest(dir, name);
      await crossCheck(t, dir, m, m.modules.exported!, `${name} (.pt2)`, TOL);
    }
  });
}

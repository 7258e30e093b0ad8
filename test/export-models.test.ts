// Real architectures as torch.export programs: torchvision resnet18 and vit_b_32, exported with a
// dynamic batch at test time by the PyTorch the addon is built against (not committed: 45 MB and
// 350 MB), against PyTorch's own eval forward, forward-mode JVP and reverse-over-forward
// linearized gradient (batch 2, 224×224).
import t from 'tap';
import * as path from 'node:path';
import { crossCheck, generate, manifest, needPython } from './torchscript-fixtures';

const GENERATOR = path.join(__dirname, 'fixtures', 'make_export_fixtures.py');
// float32 throughout; ViT-B/32's 12 blocks and resnet18's 20 convolutions accumulate rounding.
const TOL = { forward: 1e-4, jvp: 1e-4, grad: 1e-3 };

for (const arch of ['resnet18', 'vit_b_32']) {
  t.test(`torchvision ${arch}, torch.export, against PyTorch`, async (t) => {
    if (!needPython(t, ['torch', 'torch.export', 'torchvision'])) return;
    const dir = generate(t, [arch], GENERATOR);
    const m = manifest(dir, arch);
    await crossCheck(t, dir, m, m.modules.exported!, `${arch} (.pt2)`, TOL);
  });
}

// Real architectures: torchvision resnet18 and vit_b_32, each scripted and traced by Debian's
// python3-torch/python3-torchvision at test time (not committed: 45 MB and 350 MB per file),
// against PyTorch's own eval forward, forward-mode JVP and reverse-over-forward linearized
// gradient (batch 2, 224×224).
import t from 'tap';
import { crossCheck, generate, manifest, needPython } from './torchscript-fixtures';

// float32 throughout; ViT-B/32's 12 blocks and resnet18's 20 convolutions accumulate rounding.
const TOL = { forward: 1e-4, jvp: 1e-4, grad: 1e-3 };

for (const arch of ['resnet18', 'vit_b_32']) {
  t.test(`torchvision ${arch}, scripted and traced, against PyTorch`, async (t) => {
    if (!needPython(t, ['torch', 'torchvision'])) return;
    const dir = generate(t, [arch]);
    const m = manifest(dir, arch);
    await crossCheck(t, dir, m, m.modules.scripted!, `${arch} (scripted)`, TOL);
    await crossCheck(t, dir, m, m.modules.traced!, `${arch} (traced)`, TOL);
  });
}

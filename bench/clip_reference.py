"""The PyTorch peer of bench/clip.ts: open_clip's CLIP image tower and the paper's LinearizedModel.

Usage: clip_reference.py ARCH BATCH THREADS WEIGHTS_OUT

Builds open_clip ARCH (random init, seed 0), writes its state dict to WEIGHTS_OUT (safetensors,
so the Node side loads the same weights), then serves one operation per stdin line, printing
{"ms": …}: `forward` (open_clip's eager encode_image under no_grad), `jvp` (torch.func.jvp of
torch.func.functional_call over the tower), `linearizedForward` and `linearizedTrainStep` (a
LinearizedModel as the paper's code builds it, gortizji/tangent_task_arithmetic src/linearize.py,
in PyTorch 2.x's torch.func: θ0 frozen, θ trainable, f(x; θ0) + jvp in the direction θ − θ0, then
cross-entropy through a frozen normalised zero-shot-style head and AdamW's step). The tower runs
in train mode as the paper fine-tunes it (CLIP has no dropout) and every dual computation inside
sdpa_kernel(MATH): the fused attention kernels have no forward-mode formula. `rss` prints the
peak RSS. Run it with OMP_WAIT_POLICY=PASSIVE for the fair peer.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures"))
from torch_compat import math_attention  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_pytorch import serve  # noqa: E402


def main():
    import open_clip
    from safetensors.torch import save_file

    arch, batch, threads, weights = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = open_clip.create_model(arch)
    model.train()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    visual = model.visual
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 224, 224, generator=g)
    y = torch.arange(batch) % 10
    embed = visual.proj.shape[1]
    head = F.normalize(torch.randn(10, embed, generator=g), dim=-1) * 100.0  # exp(logit_scale)·class embeddings
    names = [n for n, _ in visual.named_parameters()]
    params0 = {n: p.detach() for n, p in visual.named_parameters()}
    tangent = {n: 0.01 * torch.randn(p.shape, generator=g) for n, p in params0.items()}

    def f(p, inp):
        return torch.func.functional_call(visual, p, (inp,))

    class LinearizedModel:
        """f_lin(x; θ) = f(x; θ0) + J f(x; θ0)(θ − θ0) by torch.func.jvp, as the paper's code."""

        def __init__(self):
            self.params0 = params0
            self.params = {n: (p + tangent[n]).clone().requires_grad_() for n, p in params0.items()}

        def __call__(self, inp):
            dparams = {n: self.params[n] - self.params0[n] for n in names}
            out, dp = torch.func.jvp(lambda p: f(p, inp), (self.params0,), (dparams,))
            return out + dp

    lin = LinearizedModel()
    opt = torch.optim.AdamW(list(lin.params.values()), lr=1e-5, weight_decay=0.1)

    def forward():
        with torch.no_grad():
            visual(x)

    def jvp():
        with torch.no_grad(), math_attention():
            torch.func.jvp(lambda p: f(p, x), (params0,), (tangent,))

    def lin_forward():
        with torch.no_grad(), math_attention():
            lin(x)

    def lin_step():
        with math_attention():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(F.normalize(lin(x), dim=-1) @ head.T, y)
            loss.backward()
            opt.step()

    ops = {"forward": forward, "jvp": jvp, "linearizedForward": lin_forward, "linearizedTrainStep": lin_step}
    print(json.dumps({"ready": True, "torch": torch.__version__, "open_clip": open_clip.__version__,
                      "threads": torch.get_num_threads(), "params": sum(p.numel() for p in params0.values())}), flush=True)
    serve(ops)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The same ViT and measurements as bench/core.ts, in PyTorch's Python API (Debian python3-torch),
for an apples-to-apples reference: plain forward (no_grad), linearized forward by
torch.autograd.forward_ad (no_grad), standard and linearized train steps (loss + grads + SGD
update). Prints JSON. Usage: /usr/bin/python3 bench/reference_pytorch.py [threads] [reps]; TANGENT_BENCH_DEVICE=cuda runs
it on the GPU (each timed call synchronized), as scripts/gpu-check.sh does.

With --serve-models ARCH BATCH THREADS [SAVE_DIR] it is instead the PyTorch peer of
bench/models.ts: it builds torchvision ARCH (seed 0), optionally saves it scripted and traced to
SAVE_DIR (the modules tangent-edit loads, so both sides hold the same weights), then reads one
operation name per line on stdin (forward, jvp, linearizedForward, standardTrainStep,
linearizedTrainStep, rss, quit), runs it once and prints one JSON line with its time, so the bench
can interleave it with its own runs. Run it with OMP_WAIT_POLICY=PASSIVE for the fair peer.
"""
import json
import math
import os
import sys
import time

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '../test/fixtures'))
from torch_compat import functional_call, math_attention  # noqa: E402  (1.13 and 2.x alike)



def serve(ops):
    """The peers' protocol: one operation name per stdin line, answered with {"ms": …}; `rss`
    answers the peak RSS, `quit` (or end of input) stops."""
    import resource

    for line in sys.stdin:
        op = line.strip()
        if op == "quit":
            break
        if op == "rss":
            print(json.dumps({"maxRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
            continue
        t0 = time.perf_counter()
        ops[op]()
        print(json.dumps({"ms": (time.perf_counter() - t0) * 1000}), flush=True)


def serve_models(arch, batch, threads, save_dir=None):
    """The peer of bench/models.ts (see the module docstring). PyTorch's eager module in eval mode,
    as a PyTorch user runs it: the plain forward under no_grad (nn.MultiheadAttention takes its
    fused inference kernel there). Forward-mode AD cannot go through that kernel, so for the dual
    computations the attention modules are switched to their unfused path by their `training`
    flag — exact here because their dropout is 0 (checked) — which records no autograd graph."""
    import resource
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # as the tests do: no all-zero parameter (vit's head)
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02, generator=g)
    x = torch.randn(batch, 3, 224, 224, generator=g)
    if save_dir:
        torch.jit.save(torch.jit.script(model), f"{save_dir}/{arch}.scripted.pt")
        torch.jit.save(torch.jit.trace(model, (x,), check_trace=False), f"{save_dir}/{arch}.traced.pt")
        if hasattr(torch, "export"):  # PyTorch 2.x: the same module as a torch.export program, batch dynamic
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
            torch.export.save(ep, f"{save_dir}/{arch}.pt2")
        torch.save(x, f"{save_dir}/input.pt")
    y = torch.arange(batch) % 1000
    names = [n for n, _ in model.named_parameters()]
    p0 = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    tangent = {n: 0.01 * torch.randn(p.shape, generator=g) for n, p in p0.items()}
    theta = {n: p0[n] + tangent[n] for n in names}
    mha = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert all(m.dropout == 0 for m in mha), "unfused attention via .training needs dropout 0"

    # Multiply-adds of one forward, from the shapes (Linear, Conv2d, MultiheadAttention).
    macs = [0]

    def count(m, inp, out):
        if isinstance(m, torch.nn.Linear):
            macs[0] += out.numel() * m.in_features
        elif isinstance(m, torch.nn.Conv2d):
            macs[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.MultiheadAttention):
            q = out[0]  # the query's shape (forward is called with keywords: no positional inputs)
            n, t, d = q.shape if m.batch_first else (q.shape[1], q.shape[0], q.shape[2])
            macs[0] += n * t * d * d * 4 + 2 * n * t * t * d  # in/out projections, QKᵀ and AV
    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.MultiheadAttention)) or
             (isinstance(m, torch.nn.Linear) and not isinstance(m, torch.nn.modules.linear.NonDynamicallyQuantizableLinear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()

    def unfused(on):
        for m in mha:
            m.training = on

    def dual_out(primal, tangents):
        with fwAD.dual_level(), math_attention():
            duals = {n: fwAD.make_dual(primal[n], tangents[n]) for n in names}
            return fwAD.unpack_dual(functional_call(model, {**duals, **buffers}, (x,)))

    def forward():
        with torch.no_grad():
            model(x)

    def jvp():
        unfused(True)
        with torch.no_grad():
            dual_out(p0, tangent)
        unfused(False)

    def lin_forward():
        unfused(True)
        with torch.no_grad():
            prim, tan = dual_out(p0, {n: theta[n] - p0[n] for n in names})
            prim + tan
        unfused(False)

    def standard_step():
        leaves = {n: theta[n].clone().requires_grad_() for n in names}
        loss = F.cross_entropy(functional_call(model, {**leaves, **buffers}, (x,)), y)
        torch.autograd.grad(loss, list(leaves.values()))

    def linearized_step():
        unfused(True)
        leaves = {n: theta[n].clone().requires_grad_() for n in names}
        prim, tan = dual_out(p0, {n: leaves[n] - p0[n] for n in names})
        loss = F.cross_entropy(prim + tan, y)
        torch.autograd.grad(loss, list(leaves.values()))
        unfused(False)

    ops = {"forward": forward, "jvp": jvp, "linearizedForward": lin_forward,
           "standardTrainStep": standard_step, "linearizedTrainStep": linearized_step}
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in p0.values()), "forwardMacs": macs[0]}), flush=True)
    serve(ops)


def core_reference(serve=False):
    """The built-in ViT's figures; with serve=True one operation per stdin line (as serve_models),
    so bench/core.ts can alternate its runs with PyTorch's."""
    args = sys.argv[2:] if serve else sys.argv[1:]
    threads = int(args[0]) if len(args) > 0 else 2
    reps = int(args[1]) if len(args) > 1 else 15
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    D, depth, H, P, S, C, MLP, B = 128, 4, 4, 4, 28, 10, 256, 128
    T = (S // P) ** 2 + 1


    def init():
        p = {"patch_embed.weight": torch.randn(D, 1, P, P) * 0.25, "patch_embed.bias": torch.zeros(D),
             "cls_token": torch.randn(1, 1, D) * 0.02, "pos_embed": torch.randn(1, T, D) * 0.02}
        for b in range(depth):
            q = f"blocks.{b}."
            p.update({q + "norm1.weight": torch.ones(D), q + "norm1.bias": torch.zeros(D),
                      q + "attn.qkv.weight": torch.randn(3 * D, D) / math.sqrt(D), q + "attn.qkv.bias": torch.zeros(3 * D),
                      q + "attn.proj.weight": torch.randn(D, D) / math.sqrt(D), q + "attn.proj.bias": torch.zeros(D),
                      q + "norm2.weight": torch.ones(D), q + "norm2.bias": torch.zeros(D),
                      q + "mlp.fc1.weight": torch.randn(MLP, D) / math.sqrt(D), q + "mlp.fc1.bias": torch.zeros(MLP),
                      q + "mlp.fc2.weight": torch.randn(D, MLP) / math.sqrt(MLP), q + "mlp.fc2.bias": torch.zeros(D)})
        p.update({"norm.weight": torch.ones(D), "norm.bias": torch.zeros(D),
                  "head.weight": torch.randn(C, D) / math.sqrt(D), "head.bias": torch.zeros(C)})
        return p


    def vit(p, x):
        n = x.shape[0]
        h = F.conv2d(x, p["patch_embed.weight"], p["patch_embed.bias"], stride=P).flatten(2).transpose(1, 2)
        h = torch.cat([p["cls_token"].expand(n, 1, D), h], 1) + p["pos_embed"]
        for b in range(depth):
            q = f"blocks.{b}."
            a = F.layer_norm(h, (D,), p[q + "norm1.weight"], p[q + "norm1.bias"])
            qkv = F.linear(a, p[q + "attn.qkv.weight"], p[q + "attn.qkv.bias"]).view(n, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            att = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(D // H), -1)
            o = (att @ qkv[2]).transpose(1, 2).reshape(n, T, D)
            h = h + F.linear(o, p[q + "attn.proj.weight"], p[q + "attn.proj.bias"])
            m = F.layer_norm(h, (D,), p[q + "norm2.weight"], p[q + "norm2.bias"])
            h = h + F.linear(F.gelu(F.linear(m, p[q + "mlp.fc1.weight"], p[q + "mlp.fc1.bias"])), p[q + "mlp.fc2.weight"], p[q + "mlp.fc2.bias"])
        feat = F.layer_norm(h[:, 0], (D,), p["norm.weight"], p["norm.bias"])
        return F.linear(feat, p["head.weight"], p["head.bias"])


    def linearized(p0, p, x):
        with fwAD.dual_level(), math_attention():
            duals = {k: fwAD.make_dual(p0[k], p[k] - p0[k]) for k in p0}
            out = vit(duals, x)
            primal, tangent = fwAD.unpack_dual(out)
            return primal + tangent


    dev = torch.device(os.environ.get("TANGENT_BENCH_DEVICE", "cpu"))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    p0 = {k: v.to(dev) for k, v in init().items()}
    theta = {k: v + 0.01 * torch.randn_like(v) for k, v in p0.items()}
    x = torch.randn(B, 1, S, S).to(dev)
    y = (torch.arange(B) % C).to(dev)


    def forward():
        with torch.no_grad():
            vit(theta, x)


    def lin_forward():
        with torch.no_grad():
            linearized(p0, theta, x)


    def step(lin):
        leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
        out = linearized(p0, leaves, x) if lin else vit(leaves, x)
        loss = F.cross_entropy(out, y)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            _ = [v - 1e-3 * g for v, g in zip(theta.values(), grads)]


    fns = {"forward": forward, "linearizedForward": lin_forward,
           "standardTrainStep": lambda: step(False), "linearizedTrainStep": lambda: step(True)}
    if serve:
        print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
        for line in sys.stdin:
            op = line.strip()
            if op == "quit":
                return
            t0 = time.perf_counter()
            fns[op]()
            print(json.dumps({"ms": (time.perf_counter() - t0) * 1000}), flush=True)
        return
    times = {k: [] for k in fns}
    for _ in range(3):
        for f in fns.values():
            f()
    sync()
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append((time.perf_counter() - t0) * 1000)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(json.dumps({"torch": torch.__version__, "device": str(dev), "threads": threads, "reps": reps, "medianMs": med,
                      "ratios": {"linearizedForwardOverForward": med["linearizedForward"] / med["forward"],
                                 "linearizedStepOverStandardStep": med["linearizedTrainStep"] / med["standardTrainStep"]}}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-models":
        serve_models(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-core":
        core_reference(serve=True)
    else:
        core_reference()

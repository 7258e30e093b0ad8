#!/usr/bin/python3
"""The same ViT and measurements as bench/core.ts, in PyTorch's Python API (Debian python3-torch),
for an apples-to-apples reference: plain forward (no_grad), linearized forward by
torch.autograd.forward_ad (no_grad), standard and linearized train steps (loss + grads + SGD
update). Prints JSON. Usage: /usr/bin/python3 bench/reference_pytorch.py [threads] [reps]"""
import json
import math
import sys
import time

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 15
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
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(p0[k], p[k] - p0[k]) for k in p0}
        out = vit(duals, x)
        primal, tangent = fwAD.unpack_dual(out)
        return primal + tangent


p0 = init()
theta = {k: v + 0.01 * torch.randn_like(v) for k, v in p0.items()}
x = torch.randn(B, 1, S, S)
y = torch.arange(B) % C


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
times = {k: [] for k in fns}
for _ in range(2):
    for f in fns.values():
        f()
for _ in range(reps):
    for k, f in fns.items():
        t0 = time.perf_counter()
        f()
        times[k].append((time.perf_counter() - t0) * 1000)
med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
print(json.dumps({"torch": torch.__version__, "threads": threads, "reps": reps, "medianMs": med,
                  "ratios": {"linearizedForwardOverForward": med["linearizedForward"] / med["forward"],
                             "linearizedStepOverStandardStep": med["linearizedTrainStep"] / med["standardTrainStep"]}}))

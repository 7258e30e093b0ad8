"""Writes the inputs of bench/merge-io.ts's LLM case: a base and fine-tuned checkpoints in the
Llama layout, as Hugging Face sharded folders (model-0000i-of-0000N.safetensors +
model.safetensors.index.json + config.json), in bf16.

Usage: make_llm_layout.py ROOT --vocab V --hidden H --intermediate I --layers L
                          [--models 3] [--shard-bytes 536870912] [--seed 0]

ROOT/m0 is the base, ROOT/m1 … the fine-tuned ones. Tensors, per Llama (full multi-head
attention): model.embed_tokens.weight [V, H]; per layer self_attn.{q,k,v,o}_proj.weight [H, H],
mlp.{gate,up}_proj.weight [I, H], mlp.down_proj.weight [H, I], input_layernorm.weight and
post_attention_layernorm.weight [H]; model.norm.weight [H]; lm_head.weight [V, H]. Base values
N(0, 0.02²) (norm weights 1); a fine-tuned model is base + rel · scale · N(0, 1) per entry, where
scale is 0.02 (1 for the norm weights) and rel is 1e-2 for embeddings, attention and norms but
5e-2 for the MLP tensors, so SLERP meets both of its branches (cos > 0.9995 → linear at 1e-2,
cos ≈ 0.9988 → the spherical formula at 5e-2). Values are drawn in float32 and rounded to bf16.
Shards are filled in order, a new one started when the next tensor would pass --shard-bytes
(as transformers' save_pretrained). Prints JSON: params, bytes per model, shards, seconds.
"""
import argparse
import json
import os
import time

import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("root")
p.add_argument("--vocab", type=int, required=True)
p.add_argument("--hidden", type=int, required=True)
p.add_argument("--intermediate", type=int, required=True)
p.add_argument("--layers", type=int, required=True)
p.add_argument("--models", type=int, default=3)
p.add_argument("--shard-bytes", type=int, default=512 * 2**20)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(int(os.environ.get("TANGENT_BENCH_THREADS", "2")))
t0 = time.perf_counter()

V, H, I, L = a.vocab, a.hidden, a.intermediate, a.layers
# (name, shape, kind): kind "norm" (ones), "mlp" (larger fine-tuning delta) or "w".
layout = [("model.embed_tokens.weight", (V, H), "w")]
for i in range(L):
    pre = f"model.layers.{i}."
    layout += [(pre + f"self_attn.{x}_proj.weight", (H, H), "w") for x in "qkvo"]
    layout += [(pre + "mlp.gate_proj.weight", (I, H), "mlp"), (pre + "mlp.up_proj.weight", (I, H), "mlp"), (pre + "mlp.down_proj.weight", (H, I), "mlp")]
    layout += [(pre + "input_layernorm.weight", (H,), "norm"), (pre + "post_attention_layernorm.weight", (H,), "norm")]
layout += [("model.norm.weight", (H,), "norm"), ("lm_head.weight", (V, H), "w")]

numel = lambda s: s[0] * (s[1] if len(s) > 1 else 1)  # noqa: E731
shards, size = [[]], 0
for entry in layout:
    b = numel(entry[1]) * 2
    if shards[-1] and size + b > a.shard_bytes:
        shards.append([])
        size = 0
    shards[-1].append(entry)
    size += b
n = len(shards)
names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
total = sum(numel(s) for _, s, _ in layout) * 2
config = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
    "vocab_size": V, "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
    "num_attention_heads": max(1, H // 64), "num_key_value_heads": max(1, H // 64),
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}
dirs = [os.path.join(a.root, f"m{k}") for k in range(a.models)]
for d in dirs:
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": {name: names[i] for i, sh in enumerate(shards) for name, _, _ in sh}}, f, indent=2)

g = torch.Generator().manual_seed(a.seed)
for i, sh in enumerate(shards):
    out = [{} for _ in dirs]
    for name, shape, kind in sh:
        scale = 1.0 if kind == "norm" else 0.02
        rel = 5e-2 if kind == "mlp" else 1e-2
        base = torch.ones(shape) if kind == "norm" else torch.randn(shape, generator=g).mul_(scale)
        out[0][name] = base.to(torch.bfloat16)
        for k in range(1, len(dirs)):
            out[k][name] = torch.randn(shape, generator=g).mul_(rel * scale).add_(base).to(torch.bfloat16)
        del base
    for d, tensors in zip(dirs, out):
        save_file(tensors, os.path.join(d, names[i]), metadata={"format": "pt"})
    del out

print(json.dumps({"params": total // 2, "bytesPerModel": total, "shards": n, "tensors": len(layout), "seconds": time.perf_counter() - t0}))

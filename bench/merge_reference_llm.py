"""The Python peer of bench/merge-io.ts's LLM case: a plain per-tensor loop over memory-mapped
shards, as a user would write it — every shard opened with safetensors' safe_open (mmap), each
tensor read, merged in float32 with torch ops, rounded to bf16 and collected per output shard;
each shard written with safetensors.torch.save_file and fsync'ed, then
model.safetensors.index.json. Methods (docs/merging.md's semantics, λ applied as mergekit):
  task_arithmetic  θ0 + λ Σ_k w_k (θ_k − θ0)
  ties             τ̂_k = τ_k on its top round(density · n) entries by |τ_k| (torch.topk, as
                   mergekit's sparsify), γ = sign(Σ w_k τ̂_k), disjoint mean over the models
                   agreeing with γ, θ0 + λ · merged
  slerp            whole flattened tensors, cosine in float64; |cos| > 0.9995 or a norm ≤ 1e-8
                   interpolates linearly (mergekit's edge rules)
Prints JSON with the merge time after `import torch` (ms) and the peak RSS (KiB).

Usage: merge_reference_llm.py merge METHOD OUTDIR SHARD_BYTES PARAMS_JSON BASE_DIR MODEL_DIR [...]
       merge_reference_llm.py compare DIR_A DIR_B      (max |a − b| over every tensor, as float32)
"""
import time

t_start = time.perf_counter()
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(int(os.environ.get("TANGENT_BENCH_THREADS", "2")))
INDEX = "model.safetensors.index.json"


class Sharded:
    """A sharded checkpoint: tensor name → its shard's safe_open handle (memory-mapped)."""

    def __init__(self, d):
        with open(os.path.join(d, INDEX)) as f:
            self.weight_map = json.load(f)["weight_map"]
        self.files = {s: safe_open(os.path.join(d, s), framework="pt") for s in dict.fromkeys(self.weight_map.values())}

    def names(self):
        return list(self.weight_map)

    def get(self, name):
        return self.files[self.weight_map[name]].get_tensor(name)

    def shape(self, name):
        return self.files[self.weight_map[name]].get_slice(name).get_shape()


def task_arithmetic(theta0, thetas, p):
    lam, ws = p.get("lambda", 1.0), p["weights"]
    acc = torch.zeros_like(theta0)
    for w, t in zip(ws, thetas):
        acc.add_(t - theta0, alpha=w)
    return theta0 + lam * acc


def ties(theta0, thetas, p):
    lam, ws, dens = p.get("lambda", 1.0), p["weights"], p["density"]
    trimmed = []
    for t, d in zip(thetas, dens):
        tau = (t - theta0).flatten()
        k = min(max(int(round(d * tau.numel())), 0), tau.numel())
        mask = torch.zeros_like(tau, dtype=torch.bool)
        if k > 0:
            mask[torch.topk(tau.abs(), k, sorted=False).indices] = True
        trimmed.append(tau * mask)
    stacked = torch.stack(trimmed)
    w = torch.tensor(ws, dtype=torch.float32).view(-1, 1)
    gamma = torch.sign((stacked * w).sum(0))
    agree = (torch.sign(stacked) == gamma) & (stacked != 0)
    num = (stacked * w * agree).sum(0)
    den = (w * agree).sum(0)
    den[den.abs() < 1e-8] = 1
    return theta0 + lam * (num / den).view_as(theta0)


def slerp(theta0, thetas, p):
    (theta1,) = thetas
    t = p["t"]
    a, b = theta0.flatten().double(), theta1.flatten().double()
    na, nb = a.norm().item(), b.norm().item()
    if na <= 1e-8 or nb <= 1e-8:
        return (1 - t) * theta0 + t * theta1
    c = (a @ b).item() / (na * nb)
    if abs(c) > 0.9995:
        return (1 - t) * theta0 + t * theta1
    omega = math.acos(max(-1.0, min(1.0, c)))
    s = math.sin(omega)
    return (math.sin((1 - t) * omega) / s) * theta0 + (math.sin(t * omega) / s) * theta1


def merge(method, out, shard_bytes, params, base_dir, model_dirs):
    fn = {"task_arithmetic": task_arithmetic, "ties": ties, "slerp": slerp}[method]
    t0 = time.perf_counter()
    base = Sharded(base_dir)
    models = [Sharded(d) for d in model_dirs]
    names = base.names()
    # Output shards planned from the shapes (bf16), so each file's name knows the count.
    plan, size = [[]], 0
    for n in names:
        b = math.prod(base.shape(n)) * 2
        if plan[-1] and size + b > shard_bytes:
            plan.append([])
            size = 0
        plan[-1].append(n)
        size += b
    files = [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
    os.makedirs(out, exist_ok=True)
    weight_map, total = {}, 0
    for file, shard in zip(files, plan):
        tensors = {}
        for n in shard:
            theta0 = base.get(n).float()
            merged = fn(theta0, [m.get(n).float() for m in models], params)
            tensors[n] = merged.to(torch.bfloat16)
            total += tensors[n].numel() * 2
            weight_map[n] = file
        path = os.path.join(out, file)
        save_file(tensors, path, metadata={"format": "pt"})
        del tensors
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    with open(os.path.join(out, INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    t1 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"ms": (t1 - t0) * 1000, "importMs": (t0 - t_start) * 1000, "maxRssKiB": rss, "shards": len(files)}))


def compare(da, db):
    a, b = Sharded(da), Sharded(db)
    assert set(a.names()) == set(b.names()), "outputs hold different tensors"
    worst, worst_name, differing, numel, rel = 0.0, None, 0, 0, 0.0
    for n in a.names():
        x, y = a.get(n), b.get(n)
        assert x.shape == y.shape and x.dtype == y.dtype, f"{n}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}"
        d = (x.float() - y.float()).abs()
        m = d.max().item()
        differing += int((d != 0).sum().item())
        numel += d.numel()
        r = m / max(x.float().abs().max().item(), 1e-30)
        rel = max(rel, r)
        if m > worst or worst_name is None:
            worst, worst_name = m, n
    print(json.dumps({"maxAbsDiff": worst, "tensor": worst_name, "maxRelToTensorMax": rel, "differing": differing, "numel": numel, "tensors": len(a.names()), "dtype": str(x.dtype).replace("torch.", "")}))


if __name__ == "__main__":
    if sys.argv[1] == "merge":
        merge(sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]), sys.argv[6], sys.argv[7:])
    elif sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}")

#!/usr/bin/python3
"""The Python peer of bench/merge-io.ts: task arithmetic θ = θ0 + λ Σ_k (θ_k − θ0) over
safetensors files, as a short PyTorch program would do it — every input memory-mapped (numpy
memmap of the data section, no copy), in-place torch ops per tensor, the output written with one
header and fsync'ed. Prints JSON with the merge time (after `import torch`) in milliseconds.

Usage: /usr/bin/python3 bench/merge_reference.py OUT LAMBDA BASE MODEL [MODEL ...]
"""
import time

t_start = time.perf_counter()
import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("TANGENT_BENCH_THREADS", "2")))
out, lam, base, models = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]


def open_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    return header, data


def tensor(st, name):
    header, data = st
    h = header[name]
    assert h["dtype"] == "F32"
    a, b = h["data_offsets"]
    return torch.from_numpy(np.frombuffer(data[a:b], dtype=np.float32).reshape(h["shape"]))


t0 = time.perf_counter()
b = open_st(base)
ms = [open_st(m) for m in models]
names = list(b[0].keys())
header, offset = {}, 0
for n in names:
    size = int(np.prod(b[0][n]["shape"])) * 4
    header[n] = {"dtype": "F32", "shape": b[0][n]["shape"], "data_offsets": [offset, offset + size]}
    offset += size
hb = json.dumps(header, separators=(",", ":")).encode()
hb += b" " * (-len(hb) % 8)
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(hb)) + hb)
    for n in names:
        theta0 = tensor(b, n)
        acc = torch.zeros_like(theta0)
        for m in ms:
            acc.add_(tensor(m, n))
        acc.sub_(theta0, alpha=len(ms)).mul_(lam).add_(theta0)  # θ0 + λ Σ (θ_k − θ0)
        f.write(acc.numpy().tobytes())
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, out)
t1 = time.perf_counter()
print(json.dumps({"ms": (t1 - t0) * 1000, "importMs": (t0 - t_start) * 1000}))

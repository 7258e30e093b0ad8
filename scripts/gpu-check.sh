#!/usr/bin/env bash
# `npm run gpu-check`: the checks that need a GPU, for a machine with one and a CUDA PyTorch. Needs
# no Node: native/ builds as a plain C++ library. Within about 8 minutes it
#   1. builds native/ and its tests against that PyTorch's libtorch (build-gpu/, one libtorch, the
#      same checks as every build),
#   2. runs the native tests on cuda (tangent_native_tests cuda: JVPs against finite differences and
#      the double-backward JVP, f_lin identities, linearized gradients) and tangent_gpu_tests (JVP,
#      linearized forward and gradient on the GPU against float64 CPU results, merges, the NTK, an
#      NCCL group over the GPUs present),
#   3. times the bench's CUDA rows: the built-in ViT of bench/core.ts on the GPU, ours and PyTorch's
#      (bench/reference_pytorch.py, TANGENT_BENCH_DEVICE=cuda), alternating,
# and ends with a summary. TANGENT_PYTHON picks the Python whose PyTorch to use (default python3).
# Output also goes to build-gpu/gpu-check.log; the bench figures to build-gpu/gpu-bench.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out=build-gpu
mkdir -p "$out"
log=$out/gpu-check.log
: >"$log"
say() { printf '%s\n' "$*" | tee -a "$log"; }
start=$SECONDS
py=${TANGENT_PYTHON:-python3}
summary=()

info=$("$py" - <<'PY' 2>&1
import torch, torch.utils, os
print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", os.path.join(torch.utils.cmake_prefix_path, "Torch"), sep="|")
PY
) || { say "gpu-check: $py cannot import torch: $info"; exit 1; }
IFS='|' read -r tv tcuda avail ngpu gname tdir <<<"$(tail -1 <<<"$info")"
say "gpu-check: PyTorch $tv (CUDA $tcuda), GPUs: $ngpu ($gname), nvcc: $(command -v nvcc || echo none), $(nproc) cores"
[ "$avail" = True ] || say "gpu-check: no GPU visible to PyTorch: the CUDA tests will be named as skipped"

# 1. Build.
t0=$SECONDS
if cmake -S . -B "$out" -DTorch_DIR="$tdir" -DTANGENT_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release >"$out/configure.log" 2>&1 &&
   cmake --build "$out" -j "$(nproc)" >"$out/build.log" 2>&1; then
  say "gpu-check: built in $((SECONDS - t0)) s ($(grep -o 'tangent-edit: libtorch [^,]*' "$out/configure.log" | head -1))"
  summary+=("build: ok ($((SECONDS - t0)) s)")
else
  tail -n 40 "$out/configure.log" "$out/build.log" | tee -a "$log"
  say "gpu-check: build FAILED (logs: $out/configure.log, $out/build.log)"
  exit 1
fi
ldd "$out/Release/tangent_gpu_tests" | grep -E 'lib(torch|c10)' | sed 's/^/  ldd: /' | tee -a "$log"

# 2. Tests.
fails=0
runt() {  # name, command...
  local name=$1; shift
  local o rc
  o=$(timeout 300 "$@" 2>&1); rc=$?
  printf '%s\n' "$o" | sed "s/^/  $name: /" | tee -a "$log" >/dev/null
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$o" | tail -1)
  grep -E '^(not ok|ok .*# SKIP)' <<<"$o" | sed "s/^/  $name: /"
  say "gpu-check: $name: ${line:-no summary} (exit $rc)"
  summary+=("$name: ${line:-no summary, exit $rc}")
  [ "$rc" = 0 ] || fails=$((fails + 1))
}
if [ "$avail" = True ]; then
  runt "native tests on cuda" "$out/Release/tangent_native_tests" cuda
fi
runt "GPU tests" "$out/Release/tangent_gpu_tests"

# 3. The bench's CUDA rows, alternating ours and PyTorch's, three rounds each.
if [ "$avail" = True ]; then
  rounds=()
  for r in 1 2 3; do
    ours=$("$out/Release/tangent_gpu_tests" --bench 50 2>/dev/null | grep -E '^\{"bench"' | tail -1)
    theirs=$(TANGENT_BENCH_DEVICE=cuda OMP_WAIT_POLICY=PASSIVE "$py" bench/reference_pytorch.py 2 50 2>/dev/null | tail -1)
    rounds+=("{\"round\": $r, \"ours\": ${ours:-null}, \"pytorch\": ${theirs:-null}}")
  done
  (IFS=,; printf '{"device": "%s", "torch": "%s", "rounds": [%s]}\n' "$gname" "$tv" "${rounds[*]}") >"$out/gpu-bench.json"
  "$py" - "$out/gpu-bench.json" <<'PY' | tee -a "$log"
import json, sys, statistics
d = json.load(open(sys.argv[1]))
ops = ["forward", "linearizedForward", "standardTrainStep", "linearizedTrainStep"]
print(f"gpu-check: bench, built-in ViT batch 128 float32 on {d['device']}, median of 50 per round, 3 alternating rounds (ms: ours / PyTorch {d['torch']} / speed-up)")
for op in ops:
    o = [r["ours"]["bench"][op] for r in d["rounds"] if r["ours"]]
    p = [r["pytorch"]["medianMs"][op] for r in d["rounds"] if r["pytorch"]]
    if o and p:
        print(f"  {op:22s} {statistics.median(o):8.3f} / {statistics.median(p):8.3f} / {statistics.median(p) / statistics.median(o):5.2f}x  (rounds: {', '.join(f'{v:.3f}' for v in o)} / {', '.join(f'{v:.3f}' for v in p)})")
PY
  summary+=("bench: $out/gpu-bench.json")
fi

say "gpu-check summary ($((SECONDS - start)) s):"
for s in "${summary[@]}"; do say "  - $s"; done
[ "$fails" = 0 ] && say "gpu-check: PASSED" || say "gpu-check: FAILED ($fails test binaries)"
[ "$fails" = 0 ]

#!/usr/bin/env bash
# Chooses the libtorch that scripts/setup.sh builds against and writes it to build/torch.env
# (TORCH_DIR, TORCH_PYTHON, TORCH_VERSION, TORCH_SOURCE); scripts/test.sh reads it so that the
# PyTorch cross-checks run on the same PyTorch. The order (the first that has PyTorch >= 2 with its
# CMake config wins):
#   1. Torch_DIR or TANGENT_LIBTORCH (a libtorch you name; no Python cross-checks beyond python3-torch)
#   2. TANGENT_PYTHON
#   3. the active virtual environment ($VIRTUAL_ENV)
#   4. python3 on PATH
#   5. the project's own venv, .venv/torch-$TANGENT_TORCH_VERSION (default 2.14.1, with torchvision
#      0.29.1; 2.13.0 gives the CPU-only wheel), made here with pip when missing: what a user's
#      `pip install torch` gives
#   6. Debian's libtorch-dev (1.13) with python3-torch, when no PyTorch 2.x can be had
# TANGENT_TORCH=debian skips 2-5 (the 1.13 build); TANGENT_TORCH=venv skips 2-4.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }
mkdir -p build
out=build/torch.env

probe() {  # python -> "version<TAB>cmake_prefix_path" for PyTorch >= 2 with a CMake config, else nothing
  "$1" - 2>/dev/null <<'PY' || true
import os, torch, torch.utils
v = torch.__version__
p = torch.utils.cmake_prefix_path
if int(v.split('.')[0]) >= 2 and os.path.exists(os.path.join(p, 'Torch', 'TorchConfig.cmake')):
    print(v + '\t' + os.path.join(p, 'Torch'))
PY
}
write() {  # dir python version source
  printf 'TORCH_DIR=%q\nTORCH_PYTHON=%q\nTORCH_VERSION=%q\nTORCH_SOURCE=%q\n' "$1" "$2" "$3" "$4" >"$out.tmp"
  mv "$out.tmp" "$out"
  say "libtorch $3 ($4): $1"
  exit 0
}

mode=${TANGENT_TORCH:-auto}
case "$mode" in auto|venv|debian) ;; *) say "TANGENT_TORCH=$mode: expected auto, venv or debian"; exit 1 ;; esac

if [ -n "${TANGENT_LIBTORCH:-}${Torch_DIR:-}" ]; then
  dir=${Torch_DIR:-$TANGENT_LIBTORCH}
  [ -f "$dir/TorchConfig.cmake" ] || { [ -f "$dir/share/cmake/Torch/TorchConfig.cmake" ] && dir=$dir/share/cmake/Torch; }
  [ -f "$dir/TorchConfig.cmake" ] || { say "Torch_DIR/TANGENT_LIBTORCH=$dir holds no TorchConfig.cmake"; exit 1; }
  ver=$(sed -n 's/.*set(PACKAGE_VERSION "\([^"]*\)").*/\1/p' "$dir/TorchConfigVersion.cmake" 2>/dev/null || true)
  write "$dir" "${TANGENT_PYTHON:-/usr/bin/python3}" "${ver:-unknown}" "Torch_DIR"
fi

if [ "$mode" = auto ]; then
  cands=()
  [ -n "${TANGENT_PYTHON:-}" ] && cands+=("TANGENT_PYTHON:$TANGENT_PYTHON")
  [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python3" ] && cands+=("VIRTUAL_ENV:$VIRTUAL_ENV/bin/python3")
  command -v python3 >/dev/null && cands+=("PATH:$(command -v python3)")
  for c in "${cands[@]}"; do
    py=${c#*:}
    r=$(probe "$py")
    if [ -n "$r" ]; then write "${r#*$'\t'}" "$py" "${r%%$'\t'*}" "${c%%:*}"; fi
    if [ "${c%%:*}" = TANGENT_PYTHON ]; then say "TANGENT_PYTHON=$py has no PyTorch >= 2 with its CMake config"; exit 1; fi
  done
fi

if [ "$mode" != debian ]; then
  want=${TANGENT_TORCH_VERSION:-2.14.1}
  venv=.venv/torch-$want
  py=$PWD/$venv/bin/python3
  if [ -z "$(probe "$py")" ]; then
    case "$want" in
      2.14.1) pkgs=(torch==2.14.1 torchvision==0.29.1) ;;
      2.13.0) pkgs=(torch==2.13.0+cpu) ;;  # torchvision 0.28.0 does not load with the CPU wheel
      *) pkgs=("torch==$want") ;;
    esac
    say "making $venv with ${pkgs[*]} (pip; a few minutes the first time)"
    rm -rf "$venv"
    if python3 -m venv "$venv" >/dev/null 2>&1 || /usr/bin/python3 -m venv "$venv" >/dev/null 2>&1; then
      # --retries 0: an unreachable public index (a machine with only a local mirror) fails fast.
      pip=("$venv/bin/python3" -m pip install -q --disable-pip-version-check --retries 0)
      # torch's CUDA wheels name cuda-bindings, which a local mirror may lack: then install the
      # wheel without its resolver and name its run-time requirements (the nvidia-* libraries too).
      if ! "${pip[@]}" "${pkgs[@]}" numpy >"build/pip.log" 2>&1; then
        deps=(numpy typing_extensions sympy mpmath networkx jinja2 markupsafe fsspec filelock pillow)
        if [ "$want" = 2.14.1 ]; then
          deps+=(nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
                 nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13
                 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx)
        fi
        "${pip[@]}" --no-deps "${pkgs[@]}" "${deps[@]}" >>"build/pip.log" 2>&1 || say "pip failed (build/pip.log)"
      fi
    fi
  fi
  # The model zoo the torch.export cross-checks export (test/export-models.test.ts): open_clip's
  # ViT-B-32 and Hugging Face transformers configs. Pinned and without the resolver (it would ask
  # for torch's cuda-bindings, which a local mirror may lack); failure is reported, not fatal.
  if [ "$want" = 2.14.1 ] && [ -x "$py" ] && ! "$py" -c 'import open_clip, transformers' >/dev/null 2>&1; then
    say "adding open_clip_torch 3.3.0 and transformers 5.18.0 to $venv (pip)"
    zoo=(open_clip_torch==3.3.0 transformers==5.18.0 huggingface_hub==2.0.0 tokenizers==0.23.2 safetensors==0.8.0
         timm==1.0.29 ftfy==6.3.1 wcwidth==0.9.1 regex==2026.9.29 tqdm==4.70.1 PyYAML==6.0.3 packaging==26.3
         requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.7.22 charset-normalizer==3.5.2 hf-xet==1.6.0
         httpx2==2.13.1 httpcore2==2.13.1 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.15.1 sniffio==1.3.1
         truststore==0.10.4 typer==0.27.2 click==8.5.0 rich==15.0.0 shellingham==1.5.4 markdown-it-py==4.2.0
         mdurl==0.1.2 Pygments==2.21.0)
    "$py" -m pip install -q --disable-pip-version-check --retries 0 --no-deps "${zoo[@]}" >>"build/pip.log" 2>&1 \
      || say "pip could not add the model zoo (build/pip.log): the open_clip / transformers cross-checks will say so"
  fi
  r=$(probe "$py")
  if [ -n "$r" ]; then write "${r#*$'\t'}" "$py" "${r%%$'\t'*}" "venv"; fi
  [ "$mode" = venv ] && { say "no PyTorch in $venv (build/pip.log)"; exit 1; }
  say "no PyTorch 2.x could be installed (build/pip.log): falling back to Debian's libtorch-dev"
fi

for d in /usr/lib/*-linux-gnu/cmake/Torch; do
  if [ -f "$d/TorchConfig.cmake" ]; then
    ver=$(sed -n 's/.*set(PACKAGE_VERSION "\([^"]*\)").*/\1/p' "$d/TorchConfigVersion.cmake" 2>/dev/null || true)
    write "$d" /usr/bin/python3 "${ver:-1.13}" debian
  fi
done
say "no libtorch: install PyTorch (pip install torch) or Debian's libtorch-dev"
exit 1

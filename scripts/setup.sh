#!/usr/bin/env bash
# Idempotent set-up shared by `npm test`, `npm run demo` and `npm run bench`: system packages
# (when root), npm dependencies, the native addon and the TypeScript build. Each step is skipped
# when its output is present and newer than its inputs, so a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*"; }

# 1. System packages: libtorch (C++ headers, cmake config, libs), a fast BLAS, the toolchain.
pkgs=(libtorch-dev libgloo-dev libopenblas0-pthread cmake g++ make)
# Optional: Debian's python3-torch (the same libtorch) lets the tests cross-check against PyTorch
# itself (torch.load of our .pt files, TorchScript modules and torchvision models built at test
# time) and the bench run PyTorch's Python API beside ours.
# ccache: CMakeLists.txt compiles through it when present, so test/install.test.ts (npm install of
# the packed tarball, which builds the addon again) reuses this build's objects instead of minutes.
optional=(python3-torch python3-torchvision ccache)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${TANGENT_SKIP_OPTIONAL:-}" ]; then
  for p in "${optional[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif [ -z "${Torch_DIR:-}${CMAKE_PREFIX_PATH:-}" ]; then
    say "missing system packages: ${missing[*]}"
    say "install them (sudo apt-get install ${missing[*]}) or set Torch_DIR to a libtorch"
    exit 1
  fi
fi
bash scripts/setup-data.sh

# 2. npm dependencies.
if [ ! -f node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ] ||
   { [ -f package-lock.json ] && [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
  say "installing npm dependencies"
  if [ -f package-lock.json ] && [ ! -d node_modules ]; then npm ci --no-audit --no-fund --loglevel=error
  else npm install --no-audit --no-fund --loglevel=error; fi
  touch node_modules/.package-lock.json
fi

# 3. The native addon and native/'s plain C++ tests, in one build tree (cmake-js; libtorch from
#    Torch_DIR / CMAKE_PREFIX_PATH or Debian's). A lock keeps concurrent runs out of each other's way;
#    the log is per checkout (build/build.log), never a path shared by every build on the machine.
#    Which libtorch: scripts/setup-torch.sh (a PyTorch 2.x when one is found or can be installed into
#    the project's venv, Debian's 1.13 otherwise; it says which). Another libtorch than the last
#    build's starts the build tree afresh (one libtorch per build).
bash scripts/setup-torch.sh
# shellcheck disable=SC1091
. build/torch.env
addon=build/Release/tangent.node
tests_bin=build/Release/tangent_native_tests
cached_torch=$(sed -n 's/^Torch_DIR:[A-Z]*=//p' build/CMakeCache.txt 2>/dev/null || true)
if [ -f build/CMakeCache.txt ] && [ "$cached_torch" != "$TORCH_DIR" ]; then
  say "libtorch changed to $TORCH_DIR: reconfiguring the build from scratch"
  find build -mindepth 1 -maxdepth 1 ! -name torch.env ! -name pip.log ! -name .lock -exec rm -rf {} +
fi
needs_build() {
  [ ! -f "$addon" ] || [ ! -f "$tests_bin" ] || [ ! -f build/Release/tangent_gpu_tests ] ||
    [ -n "$(find native binding cmake CMakeLists.txt -newer "$addon" -print -quit)" ]
}
if needs_build; then
  mkdir -p build
  exec 9>build/.lock
  flock 9
  if needs_build; then
    say "building the native addon and tests (a few minutes the first time; log: build/build.log)"
    start=$SECONDS
    npx cmake-js compile --out build --log-level error --CDTANGENT_BUILD_TESTS=ON --CDTorch_DIR="$TORCH_DIR" \
      --CDTANGENT_LIBTORCH_SOURCE="$TORCH_SOURCE" --CDTANGENT_TORCH_PYTHON="$TORCH_PYTHON" >build/build.log 2>&1 ||
      { tail -40 build/build.log; say "native build failed (log: $PWD/build/build.log)"; exit 1; }
    touch "$addon"
    say "native build done in $((SECONDS - start)) s"
  fi
  flock -u 9
fi

# 4. TypeScript.
stamp=dist/.tsbuild
if [ ! -f "$stamp" ] || [ -n "$(find lib bench tsconfig.json -newer "$stamp" -print -quit)" ]; then
  say "compiling TypeScript"
  npx tsc -p tsconfig.json
  touch "$stamp"
fi

#!/usr/bin/env bash
# The test suite: node-tap over test/**/*.test.ts, then native/'s plain C++ tests (built by
# scripts/setup.sh in the same build tree as the addon). The exit status is the truth: a failing
# check, a crashed or silent test file, a tap run without its summary line, or a missing native test
# binary each fail the run. Ends with one "N passed, N failed, N skipped" line, after the reason of
# every skip. Under CI=true a skipped PyTorch cross-check is a failure (CI has python3-torch).
# The test files are type-checked first (tsconfig.test.json); a type error fails the run.
#
# Isolation: the dataset cache (TANGENT_CACHE) and temporary files go to a fresh directory that is
# removed at the end; set TANGENT_TEST_CACHE=DIR to reuse a cache between runs.
#
#   bash scripts/test.sh                       # everything
#   bash scripts/test.sh test/merge.test.ts    # some tap files (the native tests still run)
#   TANGENT_NATIVE_ONLY=1 / TANGENT_SKIP_NATIVE_TESTS=1
set -uo pipefail
cd "$(dirname "$0")/.."

# The PyTorch cross-checks run on the PyTorch the addon was built against (scripts/setup-torch.sh).
if [ -f build/torch.env ]; then
  # shellcheck disable=SC1091
  . build/torch.env
  export TANGENT_TEST_PYTHON="${TANGENT_TEST_PYTHON:-$TORCH_PYTHON}"
  echo "libtorch $TORCH_VERSION ($TORCH_SOURCE), PyTorch cross-checks by $TANGENT_TEST_PYTHON"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tangent-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TANGENT_CACHE="${TANGENT_TEST_CACHE:-$work/cache}"
mkdir -p "$work/tmp"
export TMPDIR="$work/tmp"   # whatever a test leaves in os.tmpdir() goes with $work
log=$work/tap.log
pass=0; fail=0; skip=0
problems=()
start=$SECONDS

if [ -z "${TANGENT_NATIVE_ONLY:-}" ]; then
  # The tests are type-checked with the library (tap's TypeScript loader only transpiles).
  if ! tsc_out=$(npx tsc -p tsconfig.test.json 2>&1 | grep -v 'npm warn'); then :; fi
  if grep -q 'error TS' <<<"$tsc_out"; then
    grep 'error TS' <<<"$tsc_out" | head -40
    problems+=("the tests do not type-check ($(grep -c 'error TS' <<<"$tsc_out") errors; npx tsc -p tsconfig.test.json)")
    fail=$((fail + 1))
  fi

  # Which files should report: the arguments, or every test file (what .taprc includes).
  if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi

  npx tap --reporter=tap "$@" 2>&1 | tee "$log" | grep --line-buffered -E '^(not )?ok [0-9]+ - |^\s+not ok '
  tap_rc=${PIPESTATUS[0]}

  summary=$(grep -E '^# \{ total' "$log" | tail -1)
  if [ -z "$summary" ]; then
    problems+=("tap ended without its summary line (exit $tap_rc): it crashed or was killed")
    fail=$((fail + 1))
  else
    n() { grep -oE "$1: [0-9]+" <<<"$summary" | grep -oE '[0-9]+' || echo 0; }
    pass=$(n pass); fail=$((fail + $(n fail))); skip=$(n skip)
  fi
  if [ "$tap_rc" != 0 ] && [ "$fail" = 0 ]; then
    problems+=("tap exited with status $tap_rc although no check failed")
    fail=1
  fi
  # Every test file must have run and reported at least one check.
  for f in "${files[@]}"; do
    [ -d "$f" ] && continue
    if ! grep -qE "^(not )?ok [0-9]+ - ${f//./\\.}( |$)" "$log"; then
      problems+=("$f never reported a result"); fail=$((fail + 1))
    fi
  done
  empty=$(grep -B1 -E '^\s+1\.\.0 # no tests found' "$log" | grep -oE 'Subtest: test/\S+' | sed 's/Subtest: //')
  for f in $empty; do problems+=("$f ran no tests"); fail=$((fail + 1)); done

  skips=$(grep -E '^\s*ok [0-9]+ - .* # SKIP' "$log" | sed -E 's/^\s*ok [0-9]+ - //')
  if [ -n "$skips" ]; then
    echo "skipped:"
    sed 's/^/  /' <<<"$skips"
    if [ "${CI:-}" = true ] && grep -qiE 'torch|python' <<<"$skips"; then
      problems+=("CI=true: a PyTorch cross-check was skipped (install python3-torch)"); fail=$((fail + 1))
    fi
  fi
  if [ "$fail" != 0 ]; then
    echo "failures:"
    grep -E -B2 -A30 '^\s+not ok ' "$log" | head -200
  fi
fi

# Native C++ tests: the binaries scripts/setup.sh built next to the addon (the core's, on the CPU;
# the process group's, two and three ranks as threads over loopback).
run_native() {
  local bin=$1; shift
  if [ ! -x "$bin" ]; then
    problems+=("$bin is missing (run bash scripts/setup.sh)"); fail=$((fail + 1)); return
  fi
  local out rc np nf
  out=$(timeout 600 "$bin" "$@" 2>&1); rc=$?
  sed "s/^/native: /" <<<"$out"
  np=$(grep -oE '^[0-9]+ passed' <<<"$out" | grep -oE '^[0-9]+' | tail -1 || true)
  nf=$(grep -oE '[0-9]+ failed' <<<"$out" | grep -oE '^[0-9]+' | tail -1 || true)
  np=${np:-0}; nf=${nf:-0}
  # A test binary that names a test as skipped says why (the CUDA tests without a GPU).
  local ns
  ns=$(grep -cE '^ok .* # SKIP' <<<"$out" || true)
  skip=$((skip + ${ns:-0}))
  if [ "$rc" != 0 ] && [ "$nf" = 0 ]; then problems+=("$bin exited with status $rc"); nf=1; fi
  if [ "$np" = 0 ] && [ "$nf" = 0 ] && [ "${ns:-0}" = 0 ]; then problems+=("$bin reported no results"); nf=1; fi
  pass=$((pass + np)); fail=$((fail + nf))
}
if [ -z "${TANGENT_SKIP_NATIVE_TESTS:-}" ]; then
  run_native build/Release/tangent_native_tests cpu
  run_native build/Release/tangent_distributed_tests
  # The CUDA tests (against float64 CPU results, NCCL): run where there is a GPU, else each is named
  # as skipped with the reason; scripts/gpu-check.sh runs them with the bench's CUDA rows.
  run_native build/Release/tangent_gpu_tests
fi

for p in "${problems[@]}"; do echo "problem: $p"; done
echo "$pass passed, $fail failed, $skip skipped ($((SECONDS - start)) s)"
[ "$fail" = 0 ]

#!/usr/bin/env bash
# The test suite: node-tap over test/*.test.ts, then native/'s plain C++ tests (built here
# against the same libtorch). Ends with one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
pass=0; fail=0
if [ -z "${TANGENT_NATIVE_ONLY:-}" ]; then
npx tap --reporter=tap "$@" 2>&1 | tee "$log" | grep -E '^(not )?ok|^# (Subtest|\{)|^\s+not ok' || true
tap_rc=${PIPESTATUS[0]}
summary=$(grep -E '^# \{ total' "$log" | tail -1)
pass=$(grep -oE 'pass: [0-9]+' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
fail=$(grep -oE 'fail: [0-9]+' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
[ "$tap_rc" != 0 ] && [ "$fail" = 0 ] && fail=1
if [ "$tap_rc" != 0 ]; then grep -E -B2 -A30 '^\s+not ok' "$log" | head -150; fi
fi

# Native C++ tests (skip with TANGENT_SKIP_NATIVE_TESTS=1).
if [ -z "${TANGENT_SKIP_NATIVE_TESTS:-}" ]; then
  mkdir -p build-native
  if (cd build-native && cmake .. -DTANGENT_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null &&
      cmake --build . --target tangent_native_tests -j2 >/tmp/tangent-native-build.log 2>&1); then
    out=$(build-native/tangent_native_tests cpu 2>&1); rc=$?
    echo "$out" | sed 's/^/native: /'
    np=$(grep -oE '^[0-9]+ passed' <<<"$out" | grep -oE '[0-9]+' || echo 0)
    nf=$(grep -oE '[0-9]+ failed' <<<"$out" | grep -oE '[0-9]+' || echo 1)
    [ "$rc" != 0 ] && [ "$nf" = 0 ] && nf=1
    pass=$((pass + np)); fail=$((fail + nf))
  else
    tail -30 /tmp/tangent-native-build.log; fail=$((fail + 1))
  fi
fi
rm -f "$log"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a
# bounded time from its seed corpus, then replays every corpus (the crash
# regressions among them). One line per target, and a last line
# "fuzz: N passed, N failed". Targets run side by side, as many at once as
# there are processors (DBSCOPE_FUZZ_JOBS): each one is single-threaded.
#
#   tests/fuzz/run.sh [seconds per target (20)]
#   tests/fuzz/run.sh --build-only      only build them (scripts/test builds
#                                       ahead of running)
# A crash leaves its input in build/fuzz/artifacts/: add it to
# tests/fuzz/corpus/<target>/ once fixed, so it is replayed for good.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build_only=0
if [ "${1:-}" = --build-only ]; then build_only=1; shift; fi
secs=${1:-${DBSCOPE_FUZZ_SECONDS:-20}}
dir="$root/build/fuzz"
mkdir -p "$dir/artifacts"
passed=0
failed=0
if ! cmake -S "$root" -B "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DDBSCOPE_FUZZ=ON -DDBSCOPE_BUILD_TESTS=OFF -DDBSCOPE_BUILD_EXAMPLES=OFF \
      -DDBSCOPE_WERROR=ON >"$dir.configure.log" 2>&1 ||
   ! cmake --build "$dir" -j"$(nproc 2>/dev/null || echo 2)" >"$dir.build.log" 2>&1; then
  grep -E 'error|warning' -A3 "$dir.configure.log" "$dir.build.log" | head -40
  echo "fuzz: build failed (logs: $dir.configure.log, $dir.build.log)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
[ "$build_only" -eq 1 ] && { echo "fuzz: built"; exit 0; }
# One target: its verdict in $dir/<target>.result, its lines in .out.
fuzz_one() {
  local t=$1 corpus=$2 bin=$3 work log runs
  work=$(mktemp -d)
  log="$dir/$t.log"
  # new inputs go to the scratch directory; the committed seeds stay as they are
  if timeout $((secs + 60)) "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$dir/artifacts/$t-" "$work" "$corpus" >"$log" 2>&1 &&
     "$bin" -runs=0 "$corpus" >>"$log" 2>&1; then
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | head -1)
    echo "fuzz: $t passed (${runs:-?} inputs in ${secs} s)" >"$dir/$t.out"
    echo passed >"$dir/$t.result"
  else
    { echo "fuzz: $t FAILED (log: $log)"
      grep -E 'invariant broken|ERROR:|SUMMARY|Test unit written' "$log" | head -8; } >"$dir/$t.out"
    echo failed >"$dir/$t.result"
  fi
  rm -rf "$work"
}
jobs=${DBSCOPE_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
targets=()
for corpus in "$root"/tests/fuzz/corpus/*/; do
  t=$(basename "$corpus")
  bin="$dir/tests/fuzz/$t"
  [ -x "$bin" ] || continue
  rm -f "$dir/$t.result" "$dir/$t.out"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  fuzz_one "$t" "$corpus" "$bin" &
  targets+=("$t")
done
wait
for t in "${targets[@]}"; do
  cat "$dir/$t.out" 2>/dev/null
  if [ "$(cat "$dir/$t.result" 2>/dev/null)" = passed ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

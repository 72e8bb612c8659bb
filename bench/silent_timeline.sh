#!/usr/bin/env bash
# The silent-network timeline of docs/pool.md: builds bench_silent_timeline,
# starts a throwaway PostgreSQL (tests/pg_server.sh), runs it, stops the
# server.  bench/silent_timeline.sh [SILENT_S]   (default 10)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build/bench-silent"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDBSCOPE_BUILD_BENCH=ON \
  -DDBSCOPE_BUILD_TESTS=OFF -DDBSCOPE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_silent_timeline >/dev/null
dir=$(mktemp -d /tmp/dbscope-silent-XXXXXX)
trap 'sh "$root/tests/pg_server.sh" stop "$dir"' EXIT
sh "$root/tests/pg_server.sh" start "$dir" >/dev/null
"$build/bench/bench_silent_timeline" "$(cat "$dir/port")" "$(cat "$dir/password")" "${1:-10}"

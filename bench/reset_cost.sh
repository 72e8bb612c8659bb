#!/usr/bin/env bash
# What the PostgreSQL reset costs: builds bench/reset_cost.c, starts a
# throwaway server (tests/pg_server.sh), runs it over the Unix socket and
# over TCP, stops the server. About a minute with the defaults.
#
#   bench/reset_cost.sh [units] [rounds] [per-command]   (20000, 3)
# per-command: also what each reset command adds (about 3x as long).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build/bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDBSCOPE_BUILD_BENCH=ON \
  -DDBSCOPE_BUILD_TESTS=OFF -DDBSCOPE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j2 --target reset_cost >/dev/null
dir=$(mktemp -d /tmp/dbscope-reset-cost.XXXXXX)
trap 'sh "$root/tests/pg_server.sh" stop "$dir/pg"; rmdir "$dir"' EXIT
sh "$root/tests/pg_server.sh" start "$dir/pg" >/dev/null
pw=$(cat "$dir/pg/password")
port=$(cat "$dir/pg/port")
echo "== Unix socket"
"$build/bench/reset_cost" "postgresql://dbscope:$pw@/dbscope?host=$dir/pg&port=$port" "$@"
echo "== TCP, 127.0.0.1, TLS off"
"$build/bench/reset_cost" "postgresql://dbscope:$pw@127.0.0.1:$port/dbscope?sslmode=disable" "$@"

#!/usr/bin/env bash
# Load on shiftboard with wrk: a realistic mix (each wrk thread is its own
# user, logged in once before the run; then one shift created for every two
# listings), on SQLite and then on a throwaway PostgreSQL. Prints wrk's
# report for each.
#
#   bench/shiftboard/load.sh [duration] [connections] [wrk-threads]
#   defaults: 10s 32 4
#
# shiftboard and wrk share the machine: on a small one the numbers are a
# floor, not a ceiling.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
duration=${1:-10s}
conns=${2:-32}
wthreads=${3:-4}

"$root/scripts/install-deps.sh" shiftboard pg load
cmake -S "$root" -B "$root/build/release" -DCMAKE_BUILD_TYPE=Release \
  -DDBSCOPE_BUILD_TESTS=OFF >/dev/null
cmake --build "$root/build/release" -j"$(nproc)" --target shiftboard >/dev/null
bin=$root/build/release/examples/shiftboard/shiftboard

work=$(mktemp -d /tmp/shiftboard-load.XXXXXX)
chmod 755 "$work"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -d "$work/pg" ] && sh "$root/tests/pg_server.sh" stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run() {
  local name=$1 url=$2
  echo "=== $name: shiftboard --threads 8 --slots-per-ip 0, DB_POOL_SIZE=8; wrk -t$wthreads -c$conns -d$duration"
  # wrk's users all come from one address, as behind a reverse proxy: no
  # per-address share of the handler slots (the default would leave wrk 6
  # of the 8, its further requests waiting in line)
  DATABASE_URL=$url DB_POOL_SIZE=8 "$bin" --listen "127.0.0.1:$port" --threads 8 \
    --slots-per-ip 0 >"$work/$name.out" 2>"$work/$name.log" &
  pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
  done
  # each wrk thread is a user: registered and logged in once, here
  local tokens="" body
  for i in $(seq "$wthreads"); do
    body="{\"name\":\"load$i\",\"password\":\"load-password\"}"
    curl -sf -XPOST "http://127.0.0.1:$port/api/users" -d "$body" >/dev/null
    tokens="$tokens $(curl -sf -XPOST "http://127.0.0.1:$port/api/login" -d "$body" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
  done
  SB_TOKENS=$tokens wrk -t"$wthreads" -c"$conns" -d"$duration" --latency -s "$root/bench/shiftboard/mix.lua" \
    "http://127.0.0.1:$port"
  echo "--- pool after the run:"
  curl -s "http://127.0.0.1:$port/api/pool" | python3 -c 'import json,sys; p=json.load(sys.stdin); print("acquired %d, timeouts %d, wait p50 %d us, p99 %d us, max %d us; session use p50 %d us, p99 %d us" % (p["acquired"], p["timeouts"], p["wait_us"]["p50"], p["wait_us"]["p99"], p["wait_us"]["max"], p["use_us"]["p50"], p["use_us"]["p99"]))'
  kill -TERM "$pid"
  wait "$pid"
  pid=""
}

run sqlite "sqlite:$work/load.db"
sh "$root/tests/pg_server.sh" start "$work/pg" >/dev/null
run postgresql "$(cat "$work/pg/url")"

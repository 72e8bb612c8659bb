#!/usr/bin/env bash
# The TechEmpower test types on dbscope (examples/tfb/tfb-server, in loop
# mode, threads mode, and loop mode without pipelining) beside Go
# net/http + pgx, Node.js + postgres and FastAPI + asyncpg (bench/tfb/go,
# node, python), on one throwaway PostgreSQL with the tables TechEmpower's
# toolset makes, under wrk at 16, 64 and 256 connections. Writes
# docs/bench/tfb.json and the tfb section of docs/benchmarks.md, and prints
# the targets. About 13 minutes on 2 cores at the default 5 s a point.
#
#   bench/tfb/run.sh                      everything
#   bench/tfb/run.sh --smoke              1 s a point after 1 s of warm-up, 64 connections, no report
#   bench/tfb/run.sh --seconds 10 --conns 64,256 --systems dbscope-loop,go
#                    --tests queries,db --pool 8 --out DIR --no-report
#   bench/tfb/run.sh --build DIR ...      use what bench/tfb/prepare.sh built in DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$build" ]; then
  "$root/scripts/install-deps.sh" pg bench-tfb
  build=$root/build/tfb
  "$root/bench/tfb/prepare.sh" "$build"
fi
cmd="bench/tfb/run.sh${args[*]:+ ${args[*]}}"
exec /usr/bin/python3 "$root/bench/tfb/tfb.py" --build "$build" --command "$cmd" ${args[@]+"${args[@]}"}

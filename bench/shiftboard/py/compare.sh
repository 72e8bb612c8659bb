#!/usr/bin/env bash
# shiftboard beside the Python stack it replaces (FastAPI + uvicorn and
# Flask + gunicorn on SQLAlchemy 1.4), on SQLite and on a throwaway
# PostgreSQL, in one run: the same functional checks against all three
# first (the load is refused unless all pass), then the same wrk mix at the
# same connection counts; writes docs/bench/shiftboard-py.{json,svg} and the
# shiftboard-py section of docs/benchmarks.md. About 12 minutes on 2 cores.
#
#   bench/shiftboard/py/compare.sh [--duration S] [--rounds N] [--conns 8,32,128] [--only sqlite]
#                                  [--no-report] [--logs DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
"$root/scripts/install-deps.sh" shiftboard pg load bench-py
build=$root/build/release
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDBSCOPE_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target shiftboard >/dev/null
cmd="bench/shiftboard/py/compare.sh${*:+ $*}"
exec /usr/bin/python3 "$root/bench/shiftboard/py/compare.py" --build "$build" --command "$cmd" "$@"

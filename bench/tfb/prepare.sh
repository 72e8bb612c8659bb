#!/usr/bin/env bash
# Builds what bench/tfb/tfb.py runs, into BUILD (default build/tfb):
#   BUILD/tfb-go                      the Go peer, offline from Debian's Go packages
#   bench/tfb/node/node_modules       the Node peer's client (npm ci, package-lock.json)
#   BUILD/dbscope/examples/tfb/tfb-server   dbscope's server, when the tree has it
# The Python peer runs from its sources with Debian's packages. A part that
# does not build is said so here and skipped by the run (its report says
# "not built"), so that one missing toolchain or registry costs one system.
#
#   bench/tfb/prepare.sh [BUILD]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build/tfb}
mkdir -p "$build"
log() { echo "tfb prepare: $*" >&2; }

if [ ! -x "$build/tfb-go" ] || [ "$root/bench/tfb/go/main.go" -nt "$build/tfb-go" ]; then
  log "go build (GOPATH=/usr/share/gocode, offline)"
  GOCACHE="$build/gocache" "$root/bench/tfb/go/build.sh" "$build/tfb-go" ||
    { rm -f "$build/tfb-go"; log "the Go peer did not build (golang-go, golang-github-jackc-pgx-v4-dev)"; }
fi

node=$root/bench/tfb/node
if [ ! -d "$node/node_modules/postgres" ] || [ "$node/package-lock.json" -nt "$node/node_modules/.package-lock.json" ]; then
  if ! command -v npm >/dev/null; then
    log "no npm: the Node peer is skipped (install Node.js with npm: scripts/packages/bench-tfb.txt)"
  else
    log "npm ci (bench/tfb/node)"
    (cd "$node" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
      log "npm ci failed (the npm registry?): the Node peer is skipped"
  fi
fi

if [ -f "$root/examples/tfb/CMakeLists.txt" ]; then
  log "cmake --build (tfb-server, Release)"
  { cmake -S "$root" -B "$build/dbscope" -DCMAKE_BUILD_TYPE=Release -DDBSCOPE_BUILD_TESTS=OFF \
      -DDBSCOPE_BUILD_EXAMPLES=ON >/dev/null &&
    cmake --build "$build/dbscope" -j"$(nproc)" --target tfb-server >/dev/null; } ||
    log "tfb-server did not build: the run goes on with the peers"
else
  log "no examples/tfb in this tree: the run goes on with the peers"
fi
exit 0

#!/bin/sh
# Builds bench/tfb/go/tfb-go offline from Debian's Go packages (golang-go,
# golang-github-jackc-pgx-v4-dev and what it depends on, under
# /usr/share/gocode): GOPATH mode, no module proxy.
#
#   bench/tfb/go/build.sh OUT      writes the binary to OUT
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/tfb-go}
cache=${GOCACHE:-${TMPDIR:-/tmp}/dbscope-tfb-gocache}
mkdir -p "$cache"
cd "$here"
GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off GOCACHE="$cache" \
    go build -o "$out" main.go

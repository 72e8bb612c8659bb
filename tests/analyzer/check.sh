#!/usr/bin/env bash
# Compiles each program here the way docs/leaks.md tells users to (GCC's
# -fanalyzer with -DDBSCOPE_ANALYZE) and checks that dbscope's
# malloc(dbs_session_close) attribute makes GCC report exactly the misuse the
# file's name announces (leak_*, double_*, use_*) and nothing for the correct
# ones (ok_*). A use after close is reported by -Wuse-after-free (part of
# -Wall, driven by the same attribute) or by the analyzer: either will do.
# Usage: check.sh CC INCLUDE_DIR
set -u
cc=$1
inc=$2
here=$(cd "$(dirname "$0")" && pwd)
fail=0
for f in "$here"/*.c; do
  name=$(basename "$f" .c)
  out=$("$cc" -std=c11 -fanalyzer -Wall -DDBSCOPE_ANALYZE -I"$inc" -c "$f" -o /dev/null 2>&1)
  case "$name" in
    leak_*) want='-Wanalyzer-malloc-leak' ;;
    double_*) want='-Wanalyzer-double-free' ;;
    use_*) want='-W(analyzer-)?use-after-free' ;;
    ok_*) want='' ;;
    *) echo "check.sh: $name: unknown kind"; fail=1; continue ;;
  esac
  if [ -n "$want" ]; then
    if echo "$out" | grep -Eq -- "$want"; then
      echo "ok: $name reported ($want)"
    else
      echo "FAIL: $name: expected $want, got:"; echo "$out"; fail=1
    fi
  else
    if echo "$out" | grep -Eq -- '-Wanalyzer|use-after-free'; then
      echo "FAIL: $name: correct code reported:"; echo "$out"; fail=1
    else
      echo "ok: $name not reported"
    fi
  fi
done
exit $fail

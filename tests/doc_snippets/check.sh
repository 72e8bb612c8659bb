#!/usr/bin/env bash
# Compiles every C block of README.md and docs/*.md the way a user who
# pastes it would build it (C11, -Wall -Wextra -Werror), so that a sample
# cannot rot while the header moves on. The line before each ```c fence
# says what the block is:
#   <!-- snippet: program -->        a whole program: compiled, linked and
#                                    run on a fresh SQLite file (DATABASE_URL)
#                                    in an empty directory; it must exit 0
#   <!-- snippet: fragment NAME -->  part of a program: put into
#                                    tests/doc_snippets/NAME.c, its lines up
#                                    to the last one that starts in column 0
#                                    and ends with "}" (a function's end) at
#                                    @FILE_SCOPE@, the rest at @BODY@; a
#                                    template with a main is linked and run
#                                    like a program, others only compiled
#   <!-- snippet: skip WHY -->       not C a compiler can take (it elides
#                                    with "..."): WHY says so
# A block without a marker fails, so a new sample is checked from the start.
# Usage: check.sh CC SOURCE_DIR LIBRARY_DIR
set -u
cc=$1
src=$2
libdir=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
mkdir "$work/b"
trap 'rm -rf "$work"' EXIT
fail=0
n=0

run() { # run EXE NAME: in a directory of its own, on a fresh SQLite file
  local dir="$work/run-$2"
  mkdir -p "$dir"
  if (cd "$dir" && DATABASE_URL="sqlite:$dir/app.db" timeout 60 "$1" >"$dir/out" 2>&1); then
    echo "ok: $2 ran"
  else
    echo "FAIL: $2 exited non-zero:"; cat "$dir/out"; fail=1
  fi
}

build() { # build FILE NAME LINK(0/1)
  local out
  if [ "$3" = 1 ]; then
    out=$("$cc" -std=c11 -Wall -Wextra -Werror -I"$src/include" "$1" -o "$work/$2" \
      -L"$libdir" -ldbscope -Wl,-rpath,"$libdir" 2>&1)
  else
    out=$("$cc" -std=c11 -Wall -Wextra -Werror -I"$src/include" -c "$1" -o /dev/null 2>&1)
  fi
  if [ $? -ne 0 ]; then
    echo "FAIL: $2 does not compile:"; echo "$out"; fail=1; return 1
  fi
  echo "ok: $2 compiles"
}

for md in "$src/README.md" "$src"/docs/*.md; do
  base=$(basename "$md" .md)
  # one file per block: block-N.c, with block-N.kind holding its marker
  awk -v out="$work/$base" '
    /^```c[ \t]*$/ { n++; inblock = 1; print kind > (out "-" n ".kind"); close(out "-" n ".kind");
                     printf "" > (out "-" n ".c"); next }
    inblock && /^```/ { inblock = 0; close(out "-" n ".c"); kind = ""; next }
    inblock { print >> (out "-" n ".c"); next }
    { kind = ""; if (match($0, /^<!-- snippet: .* -->[ \t]*$/)) kind = substr($0, 15, length($0) - 18) }
  ' "$md"
  for c in "$work/$base"-*.c; do
    [ -e "$c" ] || continue
    n=$((n + 1))
    name=$(basename "$c" .c)
    read -r kind arg rest <"${c%.c}.kind" || kind=
    line=$(awk -v want="${name##*-}" '/^```c[ \t]*$/ { if (++k == want) { print NR; exit } }' "$md")
    where="${md#$src/}:$line"
    case "$kind" in
      program)
        build "$c" "$name" 1 && run "$work/$name" "$name" ;;
      fragment)
        tpl="$here/$arg.c"
        if [ ! -f "$tpl" ]; then echo "FAIL: $where: no template $tpl"; fail=1; continue; fi
        # a template's "/* requires: HEADER */" lines: a library the build may lack
        missing=
        for h in $(sed -n 's|^/\* requires: \(.*\) \*/$|\1|p' "$tpl"); do
          echo "#include <$h>" | "$cc" -E -x c - >/dev/null 2>&1 || missing="$missing $h"
        done
        if [ -n "$missing" ]; then echo "skip: $where (no$missing here)"; continue; fi
        last=$(grep -nE '^([^[:space:]].*)?}[[:space:]]*$' "$c" | tail -n 1 | cut -d: -f1)
        last=${last:-0}
        head -n "$last" "$c" >"$work/b/$name.top"
        tail -n +"$((last + 1))" "$c" >"$work/b/$name.body"
        awk '
          /@FILE_SCOPE@/ { printf "#line %d \"%s\"\n", first, md; while ((getline l < top) > 0) print l
                           printf "#line %d \"%s\"\n", NR + 1, tpl; next }
          /@BODY@/ { printf "#line %d \"%s\"\n", first + last, md; while ((getline l < body) > 0) print l
                     printf "#line %d \"%s\"\n", NR + 1, tpl; next }
          { print }' top="$work/b/$name.top" body="$work/b/$name.body" md="${md#$src/}" first=$((line + 1)) last="$last" \
          tpl="$tpl" "$tpl" >"$work/b/$name.full.c"
        if grep -q '^int main' "$tpl"; then
          build "$work/b/$name.full.c" "$name" 1 && run "$work/$name" "$name"
        else
          build "$work/b/$name.full.c" "$name" 0
        fi ;;
      skip)
        [ -n "$arg" ] && echo "skip: $where ($arg $rest)" || { echo "FAIL: $where: skip without a reason"; fail=1; } ;;
      *)
        echo "FAIL: $where: a \`\`\`c block without a <!-- snippet: ... --> line before it"; fail=1 ;;
    esac
  done
done
[ $n -gt 0 ] || { echo "FAIL: no C blocks found under $src"; fail=1; }
echo "$n blocks"
exit $fail

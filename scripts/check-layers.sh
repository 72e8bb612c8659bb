#!/usr/bin/env bash
# Checks that the library's files call one another in one direction only:
# no circle among its object files as the linker sees them (file A uses a
# symbol file B defines and B, directly or through others, uses one A
# defines). Calls through a method table (the driver table) leave no such
# tie and are not seen.
#
#   scripts/check-layers.sh DIR      DIR holds the library's *.o files
#                                    (build/dev/CMakeFiles/dbscope_obj.dir/src)
#   scripts/check-layers.sh A.o B.o  the object files themselves (CTest
#                                    passes the library's, so that objects
#                                    left from deleted sources do not count)
#   scripts/check-layers.sh -v ...   also prints every file's uses
#
# Exit 0 when there is no circle; 1, naming each circle's files, when there
# is one; 2 on bad use.
set -euo pipefail
verbose=0
if [ "${1:-}" = "-v" ]; then
  verbose=1
  shift
fi
if [ $# -eq 1 ] && [ -d "$1" ]; then
  shopt -s nullglob
  objs=("$1"/*.o)
else
  objs=("$@")
fi
if [ ${#objs[@]} -eq 0 ]; then
  echo "usage: $0 [-v] DIR|FILE.o... (the library's object files; build it first)" >&2
  exit 2
fi
for o in "${objs[@]}"; do
  if [ ! -f "$o" ]; then
    echo "$0: $o: no such object file: build the library first" >&2
    exit 2
  fi
done
NM=${NM:-nm}
# One line per tie: "user definer".
{
  for o in "${objs[@]}"; do
    f=$(basename "$o" .o)
    f=${f%.obj}
    "$NM" -g --defined-only "$o" | awk -v f="$f" 'NF >= 3 { print "D", f, $3 }'
    "$NM" -g --undefined-only "$o" | awk -v f="$f" '{ print "U", f, $NF }'
  done
} | awk -v verbose="$verbose" '
  $1 == "D" { def[$3] = $2; next }
  $1 == "U" { use[++n] = $2 " " $3 }
  END {
    for (i = 1; i <= n; i++) {
      split(use[i], a, " ")
      d = def[a[2]]
      if (d == "" || d == a[1]) continue
      if (!((a[1], d) in edge)) {
        edge[a[1], d] = 1
        out[a[1]] = out[a[1]] " " d
        files[a[1]] = 1; files[d] = 1
      }
    }
    if (verbose)
      for (f in out) printf "%s ->%s\n", f, out[f]
    # Reachability by repeated closure (a few dozen files: cheap enough).
    for (f in files) for (g in files) reach[f, g] = ((f, g) in edge)
    for (k in files) for (f in files) if (reach[f, k]) for (g in files)
      if (reach[k, g]) reach[f, g] = 1
    bad = 0
    for (f in files) {
      if (!reach[f, f] || seen[f]) continue
      members = ""
      for (g in files) if (reach[f, g] && reach[g, f]) { members = members " " g; seen[g] = 1 }
      printf "circle among:%s\n", members
      for (g in files) if (reach[f, g] && reach[g, f]) for (h in files)
        if (reach[g, h] && reach[h, f] && ((g, h) in edge)) printf "  %s uses %s\n", g, h
      bad = 1
    }
    exit bad
  }'

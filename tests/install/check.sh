#!/usr/bin/env bash
# dbscope as its users get it: installed, then used from their own programs.
#
#   tests/install/check.sh SOURCE_DIR BUILD_DIR
#
# Runs README.md's install steps as written (build directory and install
# root moved under a temporary directory), installs BUILD_DIR to a
# temporary prefix and moves that prefix elsewhere (the package must not
# name where it was installed), then builds and runs, against the package
# only: consumer.c with pkg-config (shared, and static with --static),
# consumer.c with CMake's find_package (dbscope::dbscope, dbscope::static),
# and README.md's Quick start, extracted from the README, compiled with
# -Wall -Wextra -Werror. Every program must exit 0 and print what it should.
# Prints one line a check; exits 1 if any failed.
set -uo pipefail
src=$(cd "${1:?usage: check.sh SOURCE_DIR BUILD_DIR}" && pwd)
build=$(cd "${2:?usage: check.sh SOURCE_DIR BUILD_DIR}" && pwd)
here="$src/tests/install"
work=$(mktemp -d "${TMPDIR:-/tmp}/dbscope-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
unset DATABASE_URL PKG_CONFIG_PATH CMAKE_PREFIX_PATH
passed=0
failed=0

# check WHAT COMMAND...: runs COMMAND, its output kept in $work/out.
check() {
  local what=$1; shift
  if "$@" >"$work/out" 2>&1; then
    echo "install: ok   $what"
    passed=$((passed + 1))
  else
    echo "install: FAIL $what"
    sed 's/^/    /' "$work/out" | tail -n 40
    failed=$((failed + 1))
  fi
}

# same_output FILE COMMAND...: COMMAND exits 0 and prints exactly FILE.
same_output() {
  local want=$1; shift
  local got
  got=$("$@") || { echo "exit status $? from $*"; return 1; }
  [ "$got" = "$(cat "$want")" ] || { printf 'printed:\n%s\nwanted:\n%s\n' "$got" "$(cat "$want")"; return 1; }
}

# needs_libdbscope_so BINARY yes|no: whether BINARY loads libdbscope.so.
needs_so() {
  local got=no
  readelf -d "$1" | grep -q 'NEEDED.*libdbscope\.so' && got=yes
  [ "$got" = "$2" ] || { echo "$1: loads libdbscope.so: $got, wanted $2"; return 1; }
}

cat >"$work/consumer.want" <<OUT
consumer: dbscope $(sed -nE 's/^project\(dbscope VERSION ([0-9.]+).*/\1/p' "$src/CMakeLists.txt")
consumer: 1 alpha
consumer: 2 beta
consumer: 3 gamma
consumer: ok
OUT

# 1. README.md's install steps, as written, into DESTDIR.
readme_install() {
  local steps
  steps=$(awk '/^## Install/ {on = 1; next} /^## / {on = 0}
               on && /^```sh/ {code = 1; next} on && /^```/ {if (code) exit; next}
               code' "$src/README.md")
  [ -n "$steps" ] || { echo "README.md has no sh block under '## Install'"; return 1; }
  echo "$steps"
  (cd "$src" && DESTDIR="$work/destdir" bash -euo pipefail -c "${steps//build\/release/$work/readme-build}")
  find "$work/destdir" -name dbscope.pc | grep -q . || { echo "no dbscope.pc installed"; return 1; }
  find "$work/destdir" -name 'libdbscope.so*' | grep -q . || { echo "no libdbscope.so installed"; return 1; }
}
check "README.md's install steps, as written" readme_install

# 2. The tested build, installed, then moved: nothing may point back.
install_moved() {
  cmake --install "$build" --prefix "$work/staged" &&
    mv "$work/staged" "$work/prefix" &&
    ! grep -rl "$work/staged" "$work/prefix"
}
check "cmake --install --prefix, then the prefix moved" install_moved
prefix="$work/prefix"
pcdir=$(dirname "$(find "$prefix" -name dbscope.pc | head -n 1)")
export PKG_CONFIG_PATH="$pcdir"

pc_shared() {
  local libdir
  libdir=$(pkg-config --variable=libdir dbscope) &&
    cc -std=c11 -Wall -Wextra -Werror -o "$work/pc_shared" "$here/consumer.c" \
      $(pkg-config --cflags --libs dbscope) -Wl,-rpath,"$libdir" &&
    needs_so "$work/pc_shared" yes &&
    same_output "$work/consumer.want" "$work/pc_shared" "sqlite:$work/pc_shared.db"
}
check "pkg-config, shared library" pc_shared

# The static library alone in a prefix of its own, so -ldbscope can only
# be libdbscope.a: what it needs must come from Requires.private and
# Libs.private.
pc_static() {
  cp -a "$prefix" "$work/static" &&
    find "$work/static" -name 'libdbscope.so*' -delete &&
    PKG_CONFIG_PATH="${pcdir/$prefix/$work/static}" bash -c '
      cc -std=c11 -Wall -Wextra -Werror -o "$1/pc_static" "$2/consumer.c" \
        $(pkg-config --static --cflags --libs dbscope)' - "$work" "$here" &&
    needs_so "$work/pc_static" no &&
    same_output "$work/consumer.want" "$work/pc_static" "sqlite:$work/pc_static.db"
}
check "pkg-config --static, static library" pc_static

cmake_consumer() {
  cmake -S "$here" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" &&
    cmake --build "$work/cmake" &&
    needs_so "$work/cmake/consumer_shared" yes &&
    needs_so "$work/cmake/consumer_static" no &&
    same_output "$work/consumer.want" "$work/cmake/consumer_shared" "sqlite:$work/c_shared.db" &&
    same_output "$work/consumer.want" "$work/cmake/consumer_static" "sqlite:$work/c_static.db"
}
check "CMake find_package: dbscope::dbscope and dbscope::static" cmake_consumer

# 3. README.md's Quick start: the first C block under "## Quick start",
# built with the README's pkg-config command and warnings as errors.
quick_start() {
  awk '/^## Quick start/ {on = 1; next} /^## / {on = 0}
       on && /^```c/ {code = 1; next} code && /^```/ {exit} code' \
    "$src/README.md" >"$work/app.c"
  [ -s "$work/app.c" ] || { echo "README.md has no c block under '## Quick start'"; return 1; }
  local build_cmd
  build_cmd=$(awk '/^## Quick start/ {on = 1; next} /^## / {on = 0}
                   on && /^cc .*pkg-config/ {print; exit}' "$src/README.md")
  [ -n "$build_cmd" ] || { echo "README.md's Quick start shows no 'cc ... pkg-config' line"; return 1; }
  echo "$build_cmd"
  mkdir -p "$work/qs" && cp "$work/app.c" "$work/qs/" &&
    (cd "$work/qs" && bash -euo pipefail -c "$build_cmd -Wall -Wextra -Werror") &&
    printf 'night\n' >"$work/qs1.want" && printf 'night\nnight\n' >"$work/qs2.want" &&
    (cd "$work/qs" && same_output "$work/qs1.want" ./app) &&
    (cd "$work/qs" && same_output "$work/qs2.want" ./app) || return 1
  # an error must make it say so and exit non-zero, whatever step fails
  local code=0
  (cd "$work/qs" && DATABASE_URL="sqlite:$work/no/such/dir/app.db" ./app) && code=0 || code=$?
  [ "$code" -ne 0 ] || { echo "Quick start exited 0 on a database it cannot open"; return 1; }
  (cd "$work/qs" && DB_POOL_SIZE=banana ./app) && code=0 || code=$?
  [ "$code" -ne 0 ] || { echo "Quick start exited 0 on a bad DB_POOL_SIZE"; return 1; }
  # a table without the owner column: the INSERT fails
  python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()' \
    "$work/qs/other.db" "CREATE TABLE shift (title TEXT NOT NULL)" &&
    { (cd "$work/qs" && DATABASE_URL="sqlite:other.db" ./app) && code=0 || code=$?; }
  [ "$code" -ne 0 ] || { echo "Quick start exited 0 when its INSERT failed"; return 1; }
  # the INSERT passes (a trigger swallows it), the SELECT fails while reading
  python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2])' \
    "$work/qs/select.db" "CREATE VIEW shift AS SELECT 'x' AS title, 42 AS owner
                            WHERE abs(-9223372036854775807 - 1);
                          CREATE TRIGGER shift_insert INSTEAD OF INSERT ON shift BEGIN SELECT 1; END;" &&
    { (cd "$work/qs" && DATABASE_URL="sqlite:select.db" ./app) && code=0 || code=$?; }
  [ "$code" -ne 0 ] || { echo "Quick start exited 0 when its SELECT failed"; return 1; }
}
check "README.md's Quick start: builds with -Wall -Wextra -Werror, runs, fails loudly" quick_start

echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# dbscope as its users get it: installed, then used from their own programs.
#
#   tests/install/check.sh SOURCE_DIR BUILD_DIR
#
# Runs README.md's install steps as written (build directory and install
# root moved under a temporary directory) and builds consumer.c against
# what they installed (pkg-config and find_package), installs BUILD_DIR to a
# temporary prefix and moves that prefix elsewhere (the package must not
# name where it was installed), then builds and runs, against the package
# only: consumer.c with pkg-config (shared, and static with --static),
# consumer.c with CMake's find_package (dbscope::dbscope, dbscope::static),
# version.c, the header alone, as C11 and as C++ (GCC and Clang, -pedantic
# -Werror), its version macros against the library's, dbscope.pc's and
# CMake's; the shared library's soname and exports against the header's
# declarations; a project that builds dbscope with add_subdirectory
# (nothing of the library's flags may reach it); and README.md's Quick
# start, extracted from the README, compiled with -Wall -Wextra -Werror.
# Every program must exit 0 and print what it should.
# Prints one line a check; exits 1 if any failed. A check fails as soon as
# any of its steps fails (not only its last one): the failing step, its exit
# status and its line are printed with the check's output.
set -uo pipefail
src=$(cd "${1:?usage: check.sh SOURCE_DIR BUILD_DIR}" && pwd)
build=$(cd "${2:?usage: check.sh SOURCE_DIR BUILD_DIR}" && pwd)
here="$src/tests/install"
work=$(mktemp -d "${TMPDIR:-/tmp}/dbscope-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
unset DATABASE_URL PKG_CONFIG_PATH CMAKE_PREFIX_PATH
passed=0
failed=0

# run_step COMMAND...: runs COMMAND with errexit in force in every function
# it calls, so that any step failing fails it; names the failing step.
# Never call it inside an if, &&, || or !: bash ignores errexit there, in
# every function and subshell below; read its status afterwards instead.
run_step() {
  (
    set -eEuo pipefail
    shopt -s inherit_errexit
    trap 'echo "step failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
    "$@"
  )
  local rc=$?
  return "$rc"
}

# check WHAT COMMAND...: runs COMMAND, its output kept in $work/out.
check() {
  local what=$1; shift
  local rc=0
  run_step "$@" >"$work/out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "install: ok   $what"
    passed=$((passed + 1))
  else
    echo "install: FAIL $what (exit $rc)"
    sed 's/^/    /' "$work/out" | tail -n 40
    failed=$((failed + 1))
  fi
}

# The check must be able to fail: a step that fails before a last step that
# succeeds fails the whole check, and so does a failing command in a script
# run the way the README's steps are.
self_test_early_step() { false; true; }
self_test_script() { bash -euo pipefail -c 'false; true'; }
for t in self_test_early_step self_test_script; do
  run_step "$t" >/dev/null 2>&1
  if [ $? -eq 0 ]; then
    echo "install: FAIL the check itself: $t passed although a step of it failed"
    exit 1
  fi
done

# same_output FILE COMMAND...: COMMAND exits 0 and prints exactly FILE.
same_output() {
  local want=$1; shift
  local got
  got=$("$@") || { echo "exit status $? from $*"; return 1; }
  [ "$got" = "$(cat "$want")" ] || { printf 'printed:\n%s\nwanted:\n%s\n' "$got" "$(cat "$want")"; return 1; }
}

# needs_so BINARY yes|no: whether BINARY loads libdbscope.so.
needs_so() {
  local got=no dynamic
  dynamic=$(readelf -d "$1")
  if grep -q 'NEEDED.*libdbscope\.so' <<<"$dynamic"; then got=yes; fi
  [ "$got" = "$2" ] || { echo "$1: loads libdbscope.so: $got, wanted $2"; return 1; }
}

version=$(sed -nE 's/^project\(dbscope VERSION ([0-9.]+).*/\1/p' "$src/CMakeLists.txt")
cat >"$work/consumer.want" <<OUT
consumer: dbscope $version
consumer: 1 alpha
consumer: 2 beta
consumer: 3 gamma
consumer: ok
OUT

# 1. README.md's install steps, as written, into DESTDIR: every step must
# succeed, and what the README says it installs must be there.
readme_install() {
  local steps
  steps=$(awk '/^## Install/ {on = 1; next} /^## / {on = 0}
               on && /^```sh/ {code = 1; next} on && /^```/ {if (code) exit; next}
               code' "$src/README.md")
  [ -n "$steps" ] || { echo "README.md has no sh block under '## Install'"; return 1; }
  echo "$steps"
  (cd "$src" && DESTDIR="$work/destdir" bash -euo pipefail -c "${steps//build\/release/$work/readme-build}")
  local f
  for f in include/dbscope.h lib/libdbscope.so lib/libdbscope.a lib/pkgconfig/dbscope.pc \
           lib/cmake/dbscope/dbscopeConfig.cmake bin/dbscope-sizing; do
    [ -n "$(find "$work/destdir" -path "*/${f%%/*}*/${f##*/}")" ] ||
      { echo "README.md's install steps installed no ${f##*/}"; return 1; }
  done
}
check "README.md's install steps, as written" readme_install

# 2. The tested build, installed, then moved: nothing may point back.
install_moved() {
  cmake --install "$build" --prefix "$work/staged" &&
    mv "$work/staged" "$work/prefix" &&
    ! grep -rl "$work/staged" "$work/prefix"
}
check "cmake --install --prefix, then the prefix moved" install_moved

# pc_dir PREFIX: the directory of PREFIX's dbscope.pc.
pc_dir() {
  local pc
  pc=$(find "$1" -name dbscope.pc | head -n 1)
  [ -n "$pc" ] || { echo "no dbscope.pc under $1" >&2; return 1; }
  dirname "$pc"
}

# in_prefix PREFIX DIR: DIR exists and lies inside PREFIX.
in_prefix() {
  local p d
  p=$(realpath "$1") && d=$(realpath "$2") || { echo "$2: no such directory"; return 1; }
  [[ "$d/" == "$p/"* ]] || { echo "$2 is outside the prefix $1"; return 1; }
}

# pc_shared PREFIX NAME: consumer.c built with pkg-config against PREFIX.
pc_shared() {
  local libdir
  export PKG_CONFIG_PATH
  PKG_CONFIG_PATH=$(pc_dir "$1")
  libdir=$(pkg-config --variable=libdir dbscope)
  # a dbscope.pc that names another prefix (the configured one) would
  # still build here if that prefix holds a dbscope too
  in_prefix "$1" "$libdir"
  in_prefix "$1" "$(pkg-config --variable=includedir dbscope)"
  cc -std=c11 -Wall -Wextra -Werror -o "$work/$2" "$here/consumer.c" \
    $(pkg-config --cflags --libs dbscope) -Wl,-rpath,"$libdir"
  needs_so "$work/$2" yes
  same_output "$work/consumer.want" "$work/$2" "sqlite:$work/$2.db"
}

# pc_static PREFIX: the static library alone in a prefix of its own, so
# -ldbscope can only be libdbscope.a: what it needs must come from
# Requires.private and Libs.private.
pc_static() {
  cp -a "$1" "$work/static"
  find "$work/static" -name 'libdbscope.so*' -delete
  export PKG_CONFIG_PATH
  PKG_CONFIG_PATH=$(pc_dir "$work/static")
  cc -std=c11 -Wall -Wextra -Werror -o "$work/pc_static" "$here/consumer.c" \
    $(pkg-config --static --cflags --libs dbscope)
  needs_so "$work/pc_static" no
  same_output "$work/consumer.want" "$work/pc_static" "sqlite:$work/pc_static.db"
}

# cmake_consumer PREFIX NAME: consumer.c built with find_package against PREFIX.
cmake_consumer() {
  cmake -S "$here" -B "$work/$2" -DCMAKE_PREFIX_PATH="$1" -DDBSCOPE_WANT_VERSION="$version"
  cmake --build "$work/$2"
  needs_so "$work/$2/consumer_shared" yes
  needs_so "$work/$2/consumer_static" no
  same_output "$work/consumer.want" "$work/$2/consumer_shared" "sqlite:$work/$2-shared.db"
  same_output "$work/consumer.want" "$work/$2/consumer_static" "sqlite:$work/$2-static.db"
}

readme_prefix="$work/destdir/usr/local"
check "README.md's install: pkg-config, shared library" pc_shared "$readme_prefix" readme_pc
check "README.md's install: CMake find_package" cmake_consumer "$readme_prefix" readme_cmake
prefix="$work/prefix"
check "pkg-config, shared library" pc_shared "$prefix" pc_shared
check "pkg-config --static, static library" pc_static "$prefix"
check "CMake find_package: dbscope::dbscope and dbscope::static" cmake_consumer "$prefix" cmake
PKG_CONFIG_PATH=$(pc_dir "$prefix" 2>/dev/null) || PKG_CONFIG_PATH=
export PKG_CONFIG_PATH

# 3. The header alone, first in a program, as C11 and as C++ (it has
# extern "C" guards), GCC's and Clang's, with -pedantic -Werror; the
# version its macros give, the linked library's, and dbscope.pc's must all
# be CMake's project version.
header_alone() {
  local n want libdir cc std
  n=$(awk -F. '{ print $1 * 65536 + $2 * 256 + $3 }' <<<"$version")
  want="$version $version $version $n $n"
  [ "$(pkg-config --modversion dbscope)" = "$version" ] ||
    { echo "dbscope.pc: version $(pkg-config --modversion dbscope), wanted $version"; return 1; }
  libdir=$(pkg-config --variable=libdir dbscope)
  for cc in "cc -std=c11" "clang -std=c11" "c++ -std=c++11" "c++ -std=c++17" \
            "clang++ -std=c++11" "clang++ -std=c++17"; do
    std=${cc#* }
    cc=${cc%% *}
    command -v "$cc" >/dev/null || { echo "no $cc (scripts/packages/core.txt)"; return 1; }
    [[ "$cc" == *++ ]] && set -- -x c++ || set --
    "$cc" "$std" -Wall -Wextra -pedantic -Werror "$@" -o "$work/version" "$here/version.c" -x none \
      $(pkg-config --cflags --libs dbscope) -Wl,-rpath,"$libdir"
    [ "$("$work/version")" = "$want" ] ||
      { echo "$cc $std: printed '$("$work/version")', wanted '$want'"; return 1; }
  done
}
check "the header alone: C11 and C++, GCC and Clang, -pedantic -Werror; versions agree" header_alone

# 4. The shared library exports exactly the functions the header declares
# (src/dbscope.map), under the soname of the major version.
exported_symbols() {
  local so soname
  so=$(find "$prefix" -name "libdbscope.so.$version")
  [ -n "$so" ] || { echo "no libdbscope.so.$version under $prefix"; return 1; }
  soname=$(readelf -d "$so" | sed -nE 's/.*\(SONAME\).*\[(.*)\]/\1/p')
  [ "$soname" = "libdbscope.so.${version%%.*}" ] ||
    { echo "soname '$soname', wanted libdbscope.so.${version%%.*}"; return 1; }
  nm -D --defined-only "$so" | awk '{ print $3 }' | sort -u >"$work/exported"
  printf '#include <dbscope.h>\n' >"$work/declared.c"
  cc -std=c11 -I"$(pkg-config --variable=includedir dbscope)" -aux-info "$work/aux" \
    -fsyntax-only "$work/declared.c"
  grep '/dbscope\.h:' "$work/aux" | sed -E 's/^.*[ *](dbs_[A-Za-z0-9_]+) *\(.*$/\1/' |
    sort -u >"$work/declared"
  [ -s "$work/declared" ] || { echo "found no function declared in dbscope.h"; return 1; }
  diff "$work/declared" "$work/exported" >"$work/symbols.diff" || {
    echo "declared in dbscope.h (<) and exported by $(basename "$so") (>) differ:"
    cat "$work/symbols.diff"; return 1; }
}
check "libdbscope.so: soname, exports exactly what dbscope.h declares" exported_symbols

# 5. dbscope as a subproject (add_subdirectory) of a project that sets no
# build type: its warnings, -Werror, build type, tests and examples stay
# its own.
subproject() {
  local app
  cmake -S "$here/subproject" -B "$work/subproject" -DDBSCOPE_SOURCE_DIR="$src" \
    -DDBSCOPE_WERROR=ON -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
  app=$(grep -F -- "-c $here/subproject/app.c" "$work/subproject/compile_commands.json")
  [ -n "$app" ] || { echo "no compile command for app.c"; return 1; }
  if grep -qE -- ' -W| -DNDEBUG| -O[0-9s]' <<<"$app"; then
    echo "the library's settings reach the parent's app.c: $app"; return 1
  fi
  # Its tests and examples are its own too: not built by default there.
  if grep -qF -e "$src/tests/test_" -e "$src/examples/" "$work/subproject/compile_commands.json"; then
    echo "a parent's build compiles dbscope's tests or examples by default"; return 1
  fi
}
check "add_subdirectory: no warnings, -Werror, build type, tests or examples reach the parent" subproject

# 6. README.md's Quick start: the first C block under "## Quick start",
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
    "$work/qs/other.db" "CREATE TABLE shift (title TEXT NOT NULL)"
  (cd "$work/qs" && DATABASE_URL="sqlite:other.db" ./app) && code=0 || code=$?
  [ "$code" -ne 0 ] || { echo "Quick start exited 0 when its INSERT failed"; return 1; }
  # the INSERT passes (a trigger swallows it), the SELECT fails while reading
  python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2])' \
    "$work/qs/select.db" "CREATE VIEW shift AS SELECT 'x' AS title, 42 AS owner
                            WHERE abs(-9223372036854775807 - 1);
                          CREATE TRIGGER shift_insert INSTEAD OF INSERT ON shift BEGIN SELECT 1; END;"
  (cd "$work/qs" && DATABASE_URL="sqlite:select.db" ./app) && code=0 || code=$?
  [ "$code" -ne 0 ] || { echo "Quick start exited 0 when its SELECT failed"; return 1; }
}
check "README.md's Quick start: builds with -Wall -Wextra -Werror, runs, fails loudly" quick_start

echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

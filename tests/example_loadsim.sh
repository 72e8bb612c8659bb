#!/bin/sh
# examples/loadsim on a throwaway server: the ledger balances, and what it
# prints (its banner, the database's messages, its stats) never shows the
# password of DATABASE_URL.
#
#   example_loadsim.sh LOADSIM SERVER_DIR
set -u
loadsim=$1 dir=$2
url=$(cat "$dir/url") || exit 1
password=$(cat "$dir/password") || exit 1
[ -n "$password" ] || { echo "no password in $dir/password" >&2; exit 1; }
out=$(DATABASE_URL=$url "$loadsim" 20 4 2>&1)
rc=$?
printf '%s\n' "$out"
case $out in
*"$password"*)
    echo "FAIL: the password of DATABASE_URL appears in loadsim's output" >&2
    exit 1 ;;
esac
[ $rc -eq 0 ] || { echo "FAIL: loadsim exited $rc" >&2; exit 1; }
case $out in
*"(expected 20000): ok"*) ;;
*) echo "FAIL: the ledger does not balance" >&2; exit 1 ;;
esac
echo ok

#!/bin/sh
# Runs a test program with a DNS server that never answers: in a mount
# namespace of its own, /etc/resolv.conf is a file of this run, into which
# the test program (DBSCOPE_RESOLV_CONF) writes the loopback address where
# it listens on UDP port 53 and answers nothing, with the resolver's own
# timeout as long as it goes (30 s, one attempt). /etc/hosts is a copy
# with one name more, dbscope-loopback.test for 127.0.0.1: a name the
# lookup answers from the file, on every backend (MariaDB takes
# "localhost" for its Unix socket); and dbscope-multi.test for
# 127.0.0.2-5, a name with several addresses. Root only (exit 77, skipped,
# otherwise).
#
#   dns_silent.sh PROGRAM [ARGS...]
set -u
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null 2>&1; then
    echo "skipped: needs root and unshare" >&2
    exit 77
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/dbscope-dns-XXXXXX")
# Until the program writes its address: a server nobody listens on.
printf 'nameserver 127.0.53.255\noptions timeout:30 attempts:1\n' >"$dir/resolv.conf"
{
    cat /etc/hosts
    printf '127.0.0.1 dbscope-loopback.test\n'
    for a in 2 3 4 5; do printf '127.0.0.%s dbscope-multi.test\n' $a; done
} >"$dir/hosts"
DBSCOPE_RESOLV_CONF="$dir/resolv.conf"
export DBSCOPE_RESOLV_CONF
unshare -m sh -c '
    mount --make-rprivate / &&
    mount --bind "$0/resolv.conf" /etc/resolv.conf &&
    mount --bind "$0/hosts" /etc/hosts &&
    exec "$@"' "$dir" "$@"
rc=$?
rm -rf "$dir"
exit $rc

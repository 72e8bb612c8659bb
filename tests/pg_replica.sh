#!/bin/sh
# A throwaway PostgreSQL primary with a synchronous streaming standby, for the
# replica and failover tests.
#
#   pg_replica.sh start DIR        initdb DIR/a (primary), pg_basebackup -R
#                                  into DIR/b (standby), a names b in
#                                  synchronous_standby_names; each on its own
#                                  free port on 127.0.0.1, Unix sockets in DIR.
#                                  Writes DIR/a.port, DIR/b.port, DIR/password
#                                  (role dbscope), DIR/superpw, DIR/bindir.
#   pg_replica.sh stop DIR         stops both and removes DIR.
#   pg_replica.sh halt DIR NODE    stops NODE (a or b) with -m fast.
#   pg_replica.sh kill DIR NODE    stops NODE with -m immediate (a crash).
#   pg_replica.sh run DIR NODE     starts NODE again.
#   pg_replica.sh promote DIR NODE promotes the standby NODE and waits.
#   pg_replica.sh rejoin DIR NODE FROM
#                                  makes NODE a fresh standby of FROM: its
#                                  data is replaced by a pg_basebackup of FROM,
#                                  on NODE's port.
#
# postgres refuses to run as root, so as root every server command runs as
# the postgres system user, which must own DIR.
set -eu
. "$(dirname "$0")/server_lib.sh"

cmd=${1:?usage: pg_replica.sh start|stop|halt|kill|run|promote|rejoin DIR [NODE [FROM]]}
dir=${2:?usage: pg_replica.sh CMD DIR}

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
    for v in 17 16 15 14; do
        if [ -x /usr/lib/postgresql/$v/bin/initdb ]; then
            bindir=/usr/lib/postgresql/$v/bin
            break
        fi
    done
fi
[ -n "$bindir" ] || { echo "pg_replica.sh: no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ctl() { # node, pg_ctl arguments...
    node=$1
    shift
    as_pg "$bindir/pg_ctl" -D "$dir/$node" "$@"
}

stop_all() {
    for n in a b; do
        if [ -f "$dir/$n/postmaster.pid" ]; then
            ctl $n -m immediate -w stop >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$dir"
}

# Starts node, retrying on another free port if somebody took this one.
start_node() { # node
    n=$1
    tries=0
    while :; do
        if [ ! -f "$dir/$n.port" ]; then
            free_port >"$dir/$n.port"
        fi
        port=$(cat "$dir/$n.port")
        cat >>"$dir/$n/postgresql.auto.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 100
fsync = off
full_page_writes = off
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql.log'
EOF
        if ctl "$n" -l "$dir/$n.out" -w -t 60 start >/dev/null 2>&1; then
            return 0
        fi
        tries=$((tries + 1))
        rm -f "$dir/$n.port"
        if [ $tries -ge 5 ]; then
            cat "$dir/$n.out" >&2 || true
            return 1
        fi
    done
}

# A standby of FROM in DIR/NODE (replacing what is there), not itself asking
# for a synchronous standby: promoted, it must accept writes on its own.
basebackup() { # node from
    rm -rf "$dir/$1"
    as_pg env PGPASSWORD="$(cat "$dir/superpw")" "$bindir/pg_basebackup" -h "$dir" \
        -p "$(cat "$dir/$2.port")" -U postgres -D "$dir/$1" -R -X stream -c fast >/dev/null
    chmod 700 "$dir/$1"
    echo "synchronous_standby_names = ''" >>"$dir/$1/postgresql.auto.conf"
    # the primary's own settings travel with the copy: drop its port
    sed -i '/^port = /d' "$dir/$1/postgresql.auto.conf"
}

case "$cmd" in
stop)
    stop_all
    exit 0
    ;;
halt)
    ctl "${3:?node}" -m fast -w stop >/dev/null
    exit 0
    ;;
kill)
    ctl "${3:?node}" -m immediate -w stop >/dev/null
    exit 0
    ;;
run)
    start_node "${3:?node}"
    exit 0
    ;;
promote)
    ctl "${3:?node}" -w -t 60 promote >/dev/null
    exit 0
    ;;
rejoin)
    n=${3:?node}
    from=${4:?from}
    if [ -f "$dir/$n/postmaster.pid" ]; then
        ctl "$n" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    basebackup "$n" "$from"
    start_node "$n"
    exit 0
    ;;
start) ;;
*)
    echo "usage: pg_replica.sh start|stop|halt|kill|run|promote|rejoin DIR [NODE [FROM]]" >&2
    exit 2
    ;;
esac

stop_all
make_server_dir postgres

password=$(random_secret pw)
superpw=$(random_secret su)
printf '%s\n' "$superpw" >"$dir/superpw"
printf '%s\n' "$password" >"$dir/password"
printf '%s\n' "$bindir" >"$dir/bindir"
chmod 644 "$dir/superpw" "$dir/password" "$dir/bindir"

as_pg "$bindir/initdb" -D "$dir/a" -U postgres --pwfile="$dir/superpw" \
    -A scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
start_node a
as_pg env PGPASSWORD="$superpw" "$bindir/psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$dir" -p "$(cat "$dir/a.port")" -U postgres -d postgres \
    -c "CREATE ROLE dbscope LOGIN PASSWORD '$password'" \
    -c "CREATE DATABASE dbscope OWNER dbscope" >/dev/null
basebackup b a
start_node b
# Synchronous from now on: a commit is acknowledged once the standby has it.
echo "synchronous_standby_names = '*'" >>"$dir/a/postgresql.auto.conf"
ctl a reload >/dev/null
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"/*.port
fi
chmod 644 "$dir"/*.port
echo "pg_replica.sh: primary on 127.0.0.1:$(cat "$dir/a.port"), standby on 127.0.0.1:$(cat "$dir/b.port"), in $dir"

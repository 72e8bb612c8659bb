#!/bin/sh
# Starts or stops a throwaway PostgreSQL server for the test suite.
#
#   pg_server.sh start DIR   initdb into DIR/data, TLS on (snakeoil), scram
#                            auth, Unix socket in DIR, TCP on 127.0.0.1 at a
#                            free port; writes DIR/url (test role, password),
#                            DIR/super_url, DIR/port, DIR/socket, DIR/pg_ctl,
#                            DIR/password; statement log in DIR/data/log/.
#   pg_server.sh stop DIR    stops it and removes DIR.
#
# postgres refuses to run as root, so as root every server command runs as
# the postgres system user, which must own DIR.
set -eu
. "$(dirname "$0")/server_lib.sh"

cmd=${1:?usage: pg_server.sh start|stop DIR}
dir=${2:?usage: pg_server.sh start|stop DIR}

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
    for v in 17 16 15 14; do
        if [ -x /usr/lib/postgresql/$v/bin/initdb ]; then
            bindir=/usr/lib/postgresql/$v/bin
            break
        fi
    done
fi
[ -n "$bindir" ] || { echo "pg_server.sh: no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop_server() {
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "$cmd" in
stop)
    stop_server
    exit 0
    ;;
start) ;;
*)
    echo "usage: pg_server.sh start|stop DIR" >&2
    exit 2
    ;;
esac

# A leftover directory from a crashed run: stop what it may still run.
stop_server
make_server_dir postgres

password=$(random_secret pw)
superpw=$(random_secret su)
printf '%s\n' "$superpw" >"$dir/superpw"
chmod 644 "$dir/superpw"

as_pg "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$dir/superpw" \
    -A scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }

# TLS: a copy of the snakeoil pair the server user may read.
if [ -r /etc/ssl/certs/ssl-cert-snakeoil.pem ] && [ -r /etc/ssl/private/ssl-cert-snakeoil.key ]; then
    cp /etc/ssl/certs/ssl-cert-snakeoil.pem "$dir/data/server.crt"
    cp /etc/ssl/private/ssl-cert-snakeoil.key "$dir/data/server.key"
else
    openssl req -new -x509 -days 30 -nodes -subj /CN=localhost \
        -keyout "$dir/data/server.key" -out "$dir/data/server.crt" >/dev/null 2>&1
fi
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir/data/server.crt" "$dir/data/server.key"
fi
chmod 600 "$dir/data/server.key"

tries=0
while :; do
    port=$(free_port)
    cat >>"$dir/data/postgresql.auto.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
ssl = on
max_connections = 200
log_destination = 'stderr'
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql.log'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    if as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/data/server.out" -w -t 60 start >/dev/null 2>&1; then
        break
    fi
    tries=$((tries + 1))
    if [ $tries -ge 5 ]; then
        cat "$dir/data/server.out" >&2 || true
        exit 1
    fi
done

export PGPASSWORD="$superpw"
psql_su() {
    as_pg env PGPASSWORD="$superpw" "$bindir/psql" -X -q -v ON_ERROR_STOP=1 \
        -h "$dir" -p "$port" -U postgres -d postgres "$@"
}
psql_su -c "CREATE ROLE dbscope LOGIN PASSWORD '$password' CREATEROLE" \
    -c "CREATE DATABASE dbscope OWNER dbscope" >/dev/null

printf 'postgresql://dbscope:%s@127.0.0.1:%s/dbscope?connect_timeout=10\n' "$password" "$port" >"$dir/url"
printf 'postgresql://postgres:%s@127.0.0.1:%s/dbscope?connect_timeout=10\n' "$superpw" "$port" >"$dir/super_url"
printf '%s\n' "$port" >"$dir/port"
printf '%s\n' "$dir" >"$dir/socket"
printf '%s\n' "$password" >"$dir/password"
printf '%s\n' "$bindir/pg_ctl" >"$dir/pg_ctl"
chmod 644 "$dir"/url "$dir"/super_url "$dir"/port "$dir"/socket "$dir"/password "$dir"/pg_ctl
echo "pg_server.sh: PostgreSQL on 127.0.0.1:$port, data in $dir/data"

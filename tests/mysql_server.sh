#!/bin/sh
# Starts or stops a throwaway MariaDB server for the test suite.
#
#   mysql_server.sh start DIR [OPTION...]
#                               mariadb-install-db into DIR/data, TLS on
#                               (snakeoil), Unix socket DIR/mysqld.sock, TCP
#                               on 127.0.0.1 at a free port; writes DIR/url
#                               (test user with a password, granted the
#                               role dbscope_role), DIR/super_url,
#                               DIR/port, DIR/socket, DIR/password. Each
#                               OPTION (--innodb-rollback-on-timeout, say;
#                               no spaces) goes to mariadbd after the
#                               suite's own, kept in DIR/options for a
#                               restart.
#   mysql_server.sh restart DIR stops the running server (SIGKILL-free: a
#                               clean shutdown) and starts it again on the
#                               same port and data.
#   mysql_server.sh stop DIR    stops it and removes DIR.
#
# As root the server runs as the mysql system user (--user=mysql), which
# must own DIR.
set -eu
. "$(dirname "$0")/server_lib.sh"

cmd=${1:?usage: mysql_server.sh start|stop|restart DIR}
dir=${2:?usage: mysql_server.sh start|stop|restart DIR}
shift 2

command -v mariadbd >/dev/null 2>&1 || PATH="$PATH:/usr/sbin"
command -v mariadbd >/dev/null 2>&1 ||
    { echo "mysql_server.sh: no MariaDB server found (apt-get install mariadb-server)" >&2; exit 1; }

as_my() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u mysql -- "$@"
    else
        "$@"
    fi
}

# Whether process $1 runs (a zombie nobody reaped yet does not).
running() {
    case $(ps -o stat= -p "$1" 2>/dev/null) in
    "" | Z*) return 1 ;;
    esac
    return 0
}

stop_mariadbd() {
    # The pid file comes late in a start (after InnoDB's): one still
    # starting is known by the process start_mariadbd launched.
    pid=""
    if [ -f "$dir/data/mariadbd.pid" ]; then
        pid=$(cat "$dir/data/mariadbd.pid")
    elif [ -f "$dir/launched.pid" ]; then
        pid=$(cat "$dir/launched.pid")
    fi
    if [ -n "$pid" ]; then
        if running "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            i=0
            while running "$pid" && [ $i -lt 300 ]; do
                sleep 0.1
                i=$((i + 1))
            done
            running "$pid" && kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/launched.pid"
}

# Starts mariadbd on DIR/port; 0 when it answers. The server is detached
# (its own session, reparented to init, no descriptor of the caller's kept
# open): a test that restarts it must not wait for it, nor lend it its own
# client sockets, which would keep connections the test closed alive.
start_mariadbd() {
    port=$(cat "$dir/port")
    user_opt=""
    [ "$(id -u)" = 0 ] && user_opt="--user=mysql"
    launched=$(python3 -c 'import subprocess, sys
print(subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True).pid)' \
        mariadbd --no-defaults $user_opt --datadir="$dir/data" --port="$port" \
        --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" \
        --pid-file="$dir/data/mariadbd.pid" --log-error="$dir/data/error.log" \
        --tmpdir="$dir/tmp" --skip-name-resolve --max-connections=300 \
        --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
        --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 \
        --ssl-cert="$dir/server.crt" --ssl-key="$dir/server.key" \
        --innodb-lock-wait-timeout=10 $(cat "$dir/options" 2>/dev/null)) || return 1
    printf '%s\n' "$launched" >"$dir/launched.pid"
    i=0
    while [ $i -lt 600 ]; do
        if [ -S "$dir/mysqld.sock" ] &&
            mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -uroot \
                --password="$(cat "$dir/superpw" 2>/dev/null)" ping >/dev/null 2>&1; then
            return 0
        fi
        # Gave up already (port taken, bad data directory)? Its process
        # is gone. Not the pid file: a loaded machine's server writes it
        # seconds after the start, and one taken for dead then would come
        # up beside the next try, on the same files and socket.
        if ! running "$launched"; then
            break
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

case "$cmd" in
stop)
    stop_mariadbd
    rm -rf "$dir"
    exit 0
    ;;
restart)
    stop_mariadbd
    start_mariadbd || { tail -20 "$dir/data/error.log" >&2; exit 1; }
    exit 0
    ;;
start) ;;
*)
    echo "usage: mysql_server.sh start|stop|restart DIR" >&2
    exit 2
    ;;
esac

# A leftover directory from a crashed run: stop what it may still run.
stop_mariadbd
rm -rf "$dir"
make_server_dir mysql
printf '%s\n' "$*" >"$dir/options"

password=$(random_secret pw)
superpw=$(random_secret su)

# A temporary directory of its own: two servers set up at once (the suite
# starts more than one) must not share /tmp's scratch files.
as_my mkdir -p "$dir/tmp"
as_my mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db --tmpdir="$dir/tmp" >"$dir/install.log" 2>&1 ||
    { cat "$dir/install.log" >&2; exit 1; }

if [ -r /etc/ssl/certs/ssl-cert-snakeoil.pem ] && [ -r /etc/ssl/private/ssl-cert-snakeoil.key ]; then
    cp /etc/ssl/certs/ssl-cert-snakeoil.pem "$dir/server.crt"
    cp /etc/ssl/private/ssl-cert-snakeoil.key "$dir/server.key"
else
    openssl req -new -x509 -days 30 -nodes -subj /CN=localhost \
        -keyout "$dir/server.key" -out "$dir/server.crt" >/dev/null 2>&1
fi
[ "$(id -u)" = 0 ] && chown mysql: "$dir/server.crt" "$dir/server.key"
chmod 600 "$dir/server.key"

tries=0
while :; do
    free_port >"$dir/port"
    start_mariadbd && break
    stop_mariadbd
    tries=$((tries + 1))
    if [ $tries -ge 5 ]; then
        tail -20 "$dir/data/error.log" >&2 || true
        exit 1
    fi
done
port=$(cat "$dir/port")

# Fresh install: root has no password over the socket as the mysql user.
as_my mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '$superpw';
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$superpw';
GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE dbscope CHARACTER SET utf8mb4;
CREATE DATABASE dbscope_other CHARACTER SET utf8mb4;
CREATE USER 'dbscope'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER 'dbscope'@'localhost' IDENTIFIED BY '$password';
GRANT ALL ON dbscope.* TO 'dbscope'@'127.0.0.1';
GRANT ALL ON dbscope.* TO 'dbscope'@'localhost';
GRANT ALL ON dbscope_other.* TO 'dbscope'@'127.0.0.1';
GRANT ALL ON dbscope_other.* TO 'dbscope'@'localhost';
CREATE ROLE dbscope_role;
GRANT dbscope_role TO 'dbscope'@'127.0.0.1';
GRANT dbscope_role TO 'dbscope'@'localhost';
FLUSH PRIVILEGES;
SQL
printf '%s\n' "$superpw" >"$dir/superpw"

printf 'mariadb://dbscope:%s@127.0.0.1:%s/dbscope?connect_timeout=10\n' "$password" "$port" >"$dir/url"
printf 'mariadb://root:%s@127.0.0.1:%s/dbscope?connect_timeout=10\n' "$superpw" "$port" >"$dir/super_url"
printf '%s\n' "$dir/mysqld.sock" >"$dir/socket"
printf '%s\n' "$password" >"$dir/password"
chmod 644 "$dir"/url "$dir"/super_url "$dir"/port "$dir"/socket "$dir"/password "$dir"/superpw
echo "mysql_server.sh: MariaDB on 127.0.0.1:$port, data in $dir/data"

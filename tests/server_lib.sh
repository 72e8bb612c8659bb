# Sourced by the throwaway servers' scripts (pg_server.sh, pg_replica.sh,
# mysql_server.sh): what they share in setting a server up.

# Makes DIR (sets $dir to its absolute path), owned by USER when run as
# root, and reachable by that user through every parent.
make_server_dir() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" = 0 ]; then
        chown "$1": "$dir"
        p=$(dirname "$dir")
        while [ "$p" != / ]; do
            chmod o+x "$p" 2>/dev/null || true
            p=$(dirname "$p")
        done
    fi
    chmod 755 "$dir"
}

# A random secret with the given prefix: 16 hex digits from /dev/urandom.
random_secret() {
    printf '%s-%s' "$1" "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
}

# A free port: ask the kernel, then hope nobody takes it in between (the
# callers' starts fail loudly if somebody did, and they retry).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000))
}

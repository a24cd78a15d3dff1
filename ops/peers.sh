#!/usr/bin/env bash
# The peers of orderd-bench: PostgreSQL 15 and Redis 7, each in a temporary data directory, on
# loopback only, on non-default ports, configured to acknowledge only what is on disk
# (PostgreSQL: fsync=on, synchronous_commit=on; Redis: appendonly yes, appendfsync always).
#
#   ops/peers.sh start    install what is missing (one apt-get update), start both, and print
#                         their URLs as shell assignments: eval "$(ops/peers.sh start)"
#   ops/peers.sh status   say whether each runs
#   ops/peers.sh stop     stop both and remove their data directories
#
# Environment: ORDERD_PEERS_DIR (default ${TMPDIR:-/tmp}/orderd-peers), ORDERD_PEERS_PG_PORT
# (55432), ORDERD_PEERS_REDIS_PORT (56379). The URLs printed are the defaults orderd-bench uses
# when ORDERD_BENCH_POSTGRES_URL / ORDERD_BENCH_REDIS_URL are not set.
set -euo pipefail

ROOT="${ORDERD_PEERS_DIR:-${TMPDIR:-/tmp}/orderd-peers}"
PG_PORT="${ORDERD_PEERS_PG_PORT:-55432}"
REDIS_PORT="${ORDERD_PEERS_REDIS_PORT:-56379}"
PG_DIR="$ROOT/postgres"
REDIS_DIR="$ROOT/redis"
PG_DB=orderd_bench
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "peers: $*" >&2; }

pg_bin() {
    # Debian keeps each major version's server programs apart; take 15 when there, else the newest.
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        echo /usr/lib/postgresql/15/bin
    else
        local dirs=(/usr/lib/postgresql/*/bin)
        if [ -d "${dirs[0]}" ]; then
            printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1
        fi
    fi
}

install_missing() {
    local packages=()
    [ -n "$(pg_bin)" ] || packages+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
    if [ "${#packages[@]}" -gt 0 ]; then
        # One apt-get update, then one install (ops/install-deps.sh).
        "$HERE/install-deps.sh" "${packages[@]}" >&2
    fi
}

pg_running() {
    [ -f "$PG_DIR/data/postmaster.pid" ] &&
        runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

redis_running() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG
}

start_postgres() {
    local bin
    bin="$(pg_bin)"
    if pg_running; then
        log "PostgreSQL already runs on 127.0.0.1:$PG_PORT"
        return
    fi
    mkdir -p "$ROOT"
    chmod 755 "$ROOT"
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR"
    chown postgres:postgres "$PG_DIR"
    runuser -u postgres -- "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; exit 1; }
    # Durable commits (the defaults, set explicitly so that no config file can change them),
    # loopback only, a port of our own, the socket in our directory, room for the bench's
    # connections.
    runuser -u postgres -- "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_DIR -c max_connections=300 -c shared_buffers=256MB" \
        start >/dev/null ||
        { cat "$PG_DIR/server.log" >&2; exit 1; }
    runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$PG_DB"
    log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT, data in $PG_DIR/data"
}

start_redis() {
    if redis_running; then
        log "Redis already runs on 127.0.0.1:$REDIS_PORT"
        return
    fi
    rm -rf "$REDIS_DIR"
    mkdir -p "$REDIS_DIR"
    # Every write appended and fsynced before its reply; no RDB snapshots (the AOF is the
    # durability); loopback only.
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes --appendfsync always \
        --save "" --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" \
        --logfile "$REDIS_DIR/redis.log"
    for _ in $(seq 1 100); do
        redis_running && break
        sleep 0.1
    done
    redis_running || { cat "$REDIS_DIR/redis.log" >&2; exit 1; }
    log "Redis $(redis-server --version | awk '{print $3}' | tr -d 'v=') on 127.0.0.1:$REDIS_PORT, data in $REDIS_DIR"
}

stop_postgres() {
    if pg_running; then
        runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
        log "PostgreSQL stopped"
    fi
    rm -rf "$PG_DIR"
}

stop_redis() {
    if redis_running; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        for _ in $(seq 1 100); do
            redis_running || break
            sleep 0.1
        done
        log "Redis stopped"
    fi
    rm -rf "$REDIS_DIR"
}

urls() {
    echo "export ORDERD_BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PG_PORT/$PG_DB"
    echo "export ORDERD_BENCH_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/"
}

case "${1:-}" in
    start)
        install_missing
        start_postgres
        start_redis
        urls
        ;;
    stop)
        # Both, even when one of them fails to stop.
        status=0
        stop_postgres || status=1
        stop_redis || status=1
        rmdir "$ROOT" 2>/dev/null || true
        exit "$status"
        ;;
    status)
        if [ -n "$(pg_bin)" ] && pg_running; then
            log "PostgreSQL runs on 127.0.0.1:$PG_PORT"
        else
            log "PostgreSQL is not running"
        fi
        if command -v redis-cli >/dev/null 2>&1 && redis_running; then
            log "Redis runs on 127.0.0.1:$REDIS_PORT"
        else
            log "Redis is not running"
        fi
        urls
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac

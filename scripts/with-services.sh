#!/usr/bin/env bash
# Runs a command against PostgreSQL and Redis.
#
# If PG_TEST_URL and REDIS_TEST_URL are set (CI starts the system services and sets them),
# those are used. Otherwise a throwaway PostgreSQL cluster (in a temporary folder) and Redis
# server are started on spare ports and removed afterwards, whether the command passes, fails or
# is interrupted, so `make test` needs only the packages (postgresql, redis-server), not running
# services, and leaves nothing behind in /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."

started_pg="" started_redis="" PG_DATA=""
cleanup() {
    if [ -n "$started_redis" ]; then
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    fi
    if [ -n "$started_pg" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ -n "$PG_DATA" ]; then rm -rf -- "$PG_DATA"; fi
}
trap cleanup EXIT
# Ctrl-C or a kill: the EXIT trap cleans up; exit with the signal's usual status.
trap 'exit 130' INT
trap 'exit 143' TERM

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Debian keeps the server binaries out of PATH; elsewhere initdb is usually on it.
find_pg_bin() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if { [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; } && command -v initdb >/dev/null; then
        PG_BIN=$(dirname "$(command -v initdb)")
    fi
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ]
}

if [ -z "${PG_TEST_URL:-}" ]; then
    # Installs the packages when it can, else stops with the command that does.
    find_pg_bin || bash scripts/system-deps.sh test
    if ! find_pg_bin; then
        echo "PostgreSQL's initdb is not found (or set PG_TEST_URL)." >&2
        exit 2
    fi
    PG_PORT=${PG_PORT:-55432}
    PG_DATA=$(mktemp -d /tmp/thinkpool-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DATA"; fi
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U thinkpool --auth=trust -E UTF8 >/dev/null
    started_pg=1
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/log" -w \
        -o "-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null; then
        echo "PostgreSQL did not start on port $PG_PORT (another one there? set PG_PORT):" >&2
        tail -n 20 "$PG_DATA/log" >&2 || true
        exit 1
    fi
    PG_TEST_URL="postgres://thinkpool@127.0.0.1:$PG_PORT/thinkpool"
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U thinkpool thinkpool
fi

if [ -z "${REDIS_TEST_URL:-}" ]; then
    command -v redis-server >/dev/null || bash scripts/system-deps.sh test
    if ! command -v redis-server >/dev/null; then
        echo "redis-server is not found (or set REDIS_TEST_URL)." >&2
        exit 2
    fi
    REDIS_PORT=${REDIS_PORT:-56379}
    started_redis=1
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes >/dev/null
    REDIS_TEST_URL="redis://127.0.0.1:$REDIS_PORT/0"
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

export DATABASE_URL="$PG_TEST_URL" CELERY_BROKER_URL="$REDIS_TEST_URL" CACHE_URL="$REDIS_TEST_URL"
"$@"

#!/usr/bin/env bash
# Runs a command against PostgreSQL and Redis.
#
# If PG_TEST_URL and REDIS_TEST_URL are set (CI starts the system services and sets them),
# those are used. Otherwise a throwaway PostgreSQL cluster and Redis server are started under
# var/services/ on spare ports and stopped afterwards, so `make test` needs only the
# packages (postgresql, redis-server), not running services.
set -euo pipefail
cd "$(dirname "$0")/.."

started_pg="" started_redis=""
cleanup() {
    if [ -n "$started_redis" ]; then redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; fi
    if [ -n "$started_pg" ]; then as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -z "${PG_TEST_URL:-}" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
        echo "PostgreSQL is not installed: apt-get install postgresql (or set PG_TEST_URL)." >&2
        exit 2
    fi
    PG_PORT=${PG_PORT:-55432}
    PG_DATA=$(mktemp -d /tmp/thinkpool-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U thinkpool --auth=trust -E UTF8 >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/log" -w \
        -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    started_pg=1
    PG_TEST_URL="postgres://thinkpool@127.0.0.1:$PG_PORT/thinkpool"
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U thinkpool thinkpool
fi

if [ -z "${REDIS_TEST_URL:-}" ]; then
    if ! command -v redis-server >/dev/null; then
        echo "Redis is not installed: apt-get install redis-server (or set REDIS_TEST_URL)." >&2
        exit 2
    fi
    REDIS_PORT=${REDIS_PORT:-56379}
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
    started_redis=1
    REDIS_TEST_URL="redis://127.0.0.1:$REDIS_PORT/0"
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

export DATABASE_URL="$PG_TEST_URL" CELERY_BROKER_URL="$REDIS_TEST_URL" CACHE_URL="$REDIS_TEST_URL"
"$@"

#!/usr/bin/env bash
# The newcomer's first minute: SQLite, a filesystem broker, a real Celery worker and beat.
#
# The banner is printed only once the web server answers /healthz and the Celery worker answers a
# ping. Each process runs in its own process group; Ctrl-C (or a kill of this script, or any of
# them exiting) stops all of them, worker pool children included.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CELERY=.venv/bin/celery
PORT=${PORT:-8000}
VAR=${THINKPOOL_VAR_DIR:-var}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-120}
export DEBUG=${DEBUG:-1}
mkdir -p "$VAR/log"

# This checkout's development settings (DEBUG=1, a generated SECRET_KEY), written once and kept:
# every manage.py command typed later reads them too (scripts/local-env.sh).
bash scripts/local-env.sh

pids=()
names=()
stopping=""
stop_all() {
    [ -n "$stopping" ] && return
    stopping=1
    # A second Ctrl-C while waiting skips the grace period; it never skips the cleanup.
    hurry=""
    trap 'hurry=1' INT TERM HUP
    local pid
    # Each leader first: the Celery worker then stops its own pool (a warm shutdown).
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # A task in flight gets ten seconds; then the whole group goes, and acks_late re-delivers it.
    for _ in $(seq 1 50); do
        local alive=""
        for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] || [ -n "$hurry" ] && break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# `spawn NAME CMD...`: CMD in the background, in a process group of its own (job control on
# just for the start), so one kill reaches its children too. The script's own foreground
# commands stay in the terminal's group: Ctrl-C reaches this script, which stops them all.
spawn() {
    local name=$1
    shift
    set -m
    "$@" >"$VAR/log/$name.log" 2>&1 &
    set +m
    pids+=("$!")
    names+=("$name")
}
# Exits (stopping the others) when one of the processes already ended.
check_alive() {
    local i
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "The ${names[$i]} stopped while starting; the end of $VAR/log/${names[$i]}.log:" >&2
            tail -n 20 "$VAR/log/${names[$i]}.log" >&2 || true
            exit 1
        fi
    done
}

$PY manage.py migrate --noinput -v0
seed=$($PY manage.py seed_demo)

# Code samples need the sandbox (bubblewrap and per-run cgroups: root, or a delegated cgroup);
# a worker consuming `sandbox` refuses to start without it. Without one, code samples wait in
# their queue until a worker that has it starts.
queues=verify,sandbox,maintenance,publish,gpu
if ! sandbox_status=$($PY -m scoring.sandbox 2>&1); then
    queues=verify,maintenance,publish,gpu
    echo "No code sandbox here, so code samples wait unjudged: ${sandbox_status##*$'\n'}" >&2
fi
worker_name="thinkpool-run-$$@$HOSTNAME"
spawn worker $CELERY -A thinkpool worker -n "$worker_name" -Q "$queues" --concurrency 2 \
    --loglevel INFO
spawn beat $CELERY -A thinkpool beat --loglevel INFO
spawn web $PY manage.py runserver "127.0.0.1:${PORT}" --noreload

echo "Starting the web server, the Celery worker and beat (logs in $VAR/log/) ..." >&2
deadline=$((SECONDS + READY_TIMEOUT_S))
web_ready="" worker_ready=""
while [ -z "$web_ready" ] || [ -z "$worker_ready" ]; do
    check_alive
    if [ "$SECONDS" -ge "$deadline" ]; then
        [ -z "$web_ready" ] && echo "The web server did not answer /healthz on port $PORT." >&2
        [ -z "$worker_ready" ] && echo "The Celery worker did not answer a ping." >&2
        echo "Waited ${READY_TIMEOUT_S} s; see $VAR/log/." >&2
        exit 1
    fi
    if [ -z "$web_ready" ] && $PY -c "import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except Exception:
    sys.exit(1)" "http://127.0.0.1:${PORT}/healthz" 2>/dev/null; then
        web_ready=1
    fi
    # A control ping through the broker: answered only once the worker consumes messages.
    if [ -z "$worker_ready" ] &&
        $CELERY -A thinkpool inspect ping -d "$worker_name" --timeout 2 >/dev/null 2>&1; then
        worker_ready=1
    fi
    [ -n "$web_ready" ] && [ -n "$worker_ready" ] || sleep 0.5
done

$PY - "$seed" "$PORT" "$VAR" <<'PYEOF'
import json, sys
seed, port, var = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
url = f"http://127.0.0.1:{port}"
print(f"""
Thinkpool is running.
  Site:        {url}/
  API docs:    {url}/api/docs/
  Admin:       {url}/admin/   user: admin   password: {seed['admin']['password']}
  Demo token:  {seed['demo_token']}
  Try:         curl -H "Authorization: Bearer {seed['demo_token']}" {url}/api/v1/me/
  Logs:        {var}/log/ (web, worker, beat). Ctrl-C stops everything.
""", flush=True)
PYEOF

set +e
wait -n "${pids[@]}"
status=$?
set -e
# One of them ended on its own: say which, then the EXIT trap stops the others.
for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "The ${names[$i]} stopped (see $VAR/log/${names[$i]}.log); stopping the rest." >&2
    fi
done
exit "$status"

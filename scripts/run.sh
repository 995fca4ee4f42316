#!/usr/bin/env bash
# The newcomer's first minute: SQLite, a filesystem broker, a real Celery worker and beat.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${PORT:-8000}
export DEBUG=${DEBUG:-1}
mkdir -p var/log

$PY manage.py migrate --noinput -v0
seed=$($PY manage.py seed_demo)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# Code samples need the sandbox (bubblewrap and per-run cgroups: root, or a delegated cgroup);
# a worker consuming `sandbox` refuses to start without it. Without one, code samples wait in
# their queue until a worker that has it starts.
queues=verify,sandbox,maintenance,publish
if ! sandbox_status=$($PY -m scoring.sandbox 2>&1); then
    queues=verify,maintenance,publish
    echo "No code sandbox here, so code samples wait unjudged: ${sandbox_status##*$'\n'}" >&2
fi
.venv/bin/celery -A thinkpool worker -Q "$queues" --concurrency 2 \
    --loglevel INFO >var/log/worker.log 2>&1 &
pids+=($!)
.venv/bin/celery -A thinkpool beat --loglevel INFO >var/log/beat.log 2>&1 &
pids+=($!)
$PY manage.py runserver "127.0.0.1:${PORT}" --noreload >var/log/web.log 2>&1 &
pids+=($!)

for _ in $(seq 1 60); do
    curl -fs "http://127.0.0.1:${PORT}/healthz" >/dev/null 2>&1 && break
    sleep 0.5
done

$PY - "$seed" "$PORT" <<'PYEOF'
import json, sys
seed, port = json.loads(sys.argv[1]), sys.argv[2]
url = f"http://127.0.0.1:{port}"
print(f"""
Thinkpool is running.
  Site:        {url}/
  API docs:    {url}/api/docs/
  Admin:       {url}/admin/   user: admin   password: {seed['admin']['password']}
  Demo token:  {seed['demo_token']}
  Try:         curl -H "Authorization: Bearer {seed['demo_token']}" {url}/api/v1/me/
  Logs:        var/log/ (web, worker, beat). Ctrl-C stops everything.
""", flush=True)
PYEOF
wait -n "${pids[@]}"

"""Lease and upload throughput of a running Thinkpool server (gunicorn + PostgreSQL).

Simulated workers (separate processes) lease prompts until the server has no more work, then
upload `n` samples per leased item with completions of --completion-bytes, in batches. Reports
prompts leased per second and samples ingested per second, per-call latency, where the CPU
went (gunicorn, PostgreSQL, this client), and a raw-PostgreSQL baseline: the same rows through
COPY in batches of the same size.

By default it starts everything itself against $DATABASE_URL (PostgreSQL):

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... .venv/bin/python bench/lease_upload.py

Run by hand; numbers go into notes, never into tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/scoring.py would shadow the `scoring` package: import from the repository root instead.
sys.path[0] = str(ROOT)

from bench._harness import (  # noqa: E402
    CpuMeter,
    copy_baseline,
    gunicorn,
    import_set,
    issue_tokens,
    lease_then_upload,
    manage,
    register_nodes,
    report,
    server_env,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=4000)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8, help="simulated worker processes")
    parser.add_argument("--max-prompts", type=int, default=64, help="prompts per lease")
    parser.add_argument("--batch", type=int, default=64, help="samples per upload call")
    parser.add_argument("--completion-bytes", type=int, default=4096)
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    parser.add_argument("--gunicorn-threads", type=int, default=1)
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database: this measures gunicorn + it.")
    env = server_env(database_url)
    manage("migrate", "--noinput", "-v0", env=env)
    # Earlier runs' sets would be walked by every lease of this one: retire them.
    manage(
        "shell",
        "-c",
        "from scoring.models import PromptSet; "
        "PromptSet.objects.filter(name__startswith='bench-').update(is_active=False)",
        env=env,
    )
    set_name = f"bench-{int(time.time())}"
    import_set(env, set_name, args.prompts, args.samples_per_prompt, seed=int(time.time()))
    tokens = issue_tokens(env, f"bench-{set_name}", args.workers)

    with gunicorn(env, args.gunicorn_workers, args.gunicorn_threads) as (server, pid):
        nodes = register_nodes(server, tokens)
        lease, upload = lease_then_upload(
            server,
            CpuMeter(pid, database_url),
            tokens,
            nodes,
            max_prompts=args.max_prompts,
            batch=args.batch,
            completion_bytes=args.completion_bytes,
        )

    baseline = copy_baseline(
        database_url, min(upload.count, 20000), args.batch, args.completion_bytes
    )
    cores = os.cpu_count() or 1
    gunicorn_shape = f"{args.gunicorn_workers}x{args.gunicorn_threads}"
    print(f"machine: {cores} cores; {args.workers} simulated workers; gunicorn {gunicorn_shape}")
    report(
        "lease",
        f"{lease.count} prompts",
        lease.rate,
        "prompts/s",
        lease.elapsed,
        lease.latencies,
        f"calls of up to {args.max_prompts} prompts",
        lease.cpu,
        cores,
    )
    report(
        "upload",
        f"{upload.count} samples of {args.completion_bytes} B",
        upload.rate,
        "samples/s",
        upload.elapsed,
        upload.latencies,
        f"calls of {args.batch} samples",
        upload.cpu,
        cores,
    )
    print(
        f"baseline: raw PostgreSQL COPY, same rows, batches of {args.batch}: {baseline:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()

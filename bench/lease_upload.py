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
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# bench/scoring.py would shadow the `scoring` package: import from the repository root instead.
sys.path[0] = str(ROOT)
MODEL = "bench/model-a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def pids_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


# --- simulated workers ------------------------------------------------------------------------


def lease_worker(
    index: int, server: str, token: str, node: int, max_prompts: int, out: mp.Queue
) -> None:
    client = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    items, latencies = [], []
    while True:
        started = time.perf_counter()
        response = client.post(
            "/api/v1/leases/", json={"node": node, "model": MODEL, "max_prompts": max_prompts}
        )
        latencies.append(time.perf_counter() - started)
        if response.status_code == 204:
            break
        response.raise_for_status()
        lease = response.json()
        items += [(lease["id"], i["id"], i["sampling"]) for i in lease["items"]]
    out.put((index, (items, latencies)))


def upload_worker(
    index: int,
    server: str,
    token: str,
    items: list,
    batch: int,
    completion_bytes: int,
    out: mp.Queue,
) -> None:
    client = httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    rng = random.Random(0)
    words = ["so", "then", "we", "add", "the", "two", "numbers", "check", "carefully", "answer"]
    body = " ".join(rng.choice(words) for _ in range(completion_bytes // 5))[
        : completion_bytes - 40
    ]
    completion = f"<think>{body}</think> \\boxed{{42}}"
    per_lease: dict[int, list] = {}
    for lease_id, item_id, sampling in items:
        for _ in range(sampling["n"]):
            per_lease.setdefault(lease_id, []).append(
                {
                    "client_id": str(uuid.uuid4()),
                    "item": item_id,
                    "completion": completion,
                    "model": MODEL,
                    "model_revision": "bench",
                    "sampling": sampling,
                    "finish_reason": "stop",
                    "prompt_tokens": 60,
                    "completion_tokens": 900,
                    "generation_ms": 20000,
                }
            )
    latencies, accepted = [], 0
    for lease_id, samples in per_lease.items():
        for start in range(0, len(samples), batch):
            chunk = samples[start : start + batch]
            t0 = time.perf_counter()
            response = client.post(f"/api/v1/leases/{lease_id}/samples/", json={"samples": chunk})
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
            result = response.json()
            if result["rejected"]:
                raise SystemExit(f"rejected: {result['rejected'][:2]}")
            accepted += len(result["accepted"])
    out.put((index, (accepted, latencies)))


def run_phase(target, args_list) -> tuple[list, float]:  # type: ignore[no-untyped-def]
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=target, args=(i, *a, out)) for i, a in enumerate(args_list)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    # Results arrive in completion order; put them back in worker order.
    results = [r for _, r in sorted(out.get(timeout=600) for _ in procs)]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    return results, elapsed


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def copy_baseline(database_url: str, rows: int, batch: int, completion_bytes: int) -> float:
    import psycopg

    text = "x" * completion_bytes
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "CREATE TEMP TABLE bench_copy (client_id uuid primary key, prompt_id bigint, "
            "completion text, sampling jsonb, status text, received_at timestamptz)"
        )
        started = time.perf_counter()
        for start in range(0, rows, batch):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy("COPY bench_copy FROM STDIN") as copy,
            ):
                for i in range(start, min(rows, start + batch)):
                    copy.write_row(
                        (uuid.uuid4(), i, text, '{"temperature": 0.6}', "received", "now")
                    )
        return rows / (time.perf_counter() - started)


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
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "bench",
        "ALLOWED_HOSTS": "127.0.0.1",
        "THINKPOOL_TOKEN_RATE": "100000000/min",
        "LOG_LEVEL": "WARNING",
        "THINKPOOL_MAX_LIVE_LEASES_PER_NODE": "1000",
        "THINKPOOL_MAX_LIVE_LEASES_PER_USER": "1000",
    }
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
    prompts_file = Path(f"/tmp/{set_name}.jsonl")
    from scoring.generators import generate

    with prompts_file.open("w") as fh:
        for row in generate(args.prompts, seed=int(time.time())):
            fh.write(json.dumps(row) + "\n")
    manage(
        "import_prompts",
        str(prompts_file),
        "--set",
        set_name,
        "--domain",
        "math",
        "--license",
        "CC0-1.0",
        "--samples-per-prompt",
        str(args.samples_per_prompt),
        "--priority",
        "1000",
        "--models",
        MODEL,
        env=env,
    )
    tokens, nodes = [], []
    for w in range(args.workers):
        tokens.append(manage("issue_token", f"bench-{set_name}-{w}", "--create", env=env).strip())

    gunicorn = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "thinkpool.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(args.gunicorn_workers),
            "--threads",
            str(args.gunicorn_threads),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{server}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        for token in tokens:
            response = httpx.post(
                f"{server}/api/v1/nodes/",
                json={"name": "bench-node", "backend": "openai", "models": [{"id": MODEL}]},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            nodes.append(response.json()["id"])

        server_pids = lambda: [gunicorn.pid, *children_of(gunicorn.pid)]  # noqa: E731
        cpu0 = (cpu_seconds(server_pids()), cpu_seconds(pids_named("postgres")))
        lease_results, lease_time = run_phase(
            lease_worker,
            [(server, t, n, args.max_prompts) for t, n in zip(tokens, nodes, strict=True)],
        )
        cpu1 = (cpu_seconds(server_pids()), cpu_seconds(pids_named("postgres")))
        leased = sum(len(items) for items, _ in lease_results)
        lease_lat = [x for _, lat in lease_results for x in lat]

        upload_results, upload_time = run_phase(
            upload_worker,
            [
                (server, t, items, args.batch, args.completion_bytes)
                for t, (items, _) in zip(tokens, lease_results, strict=True)
            ],
        )
        cpu2 = (cpu_seconds(server_pids()), cpu_seconds(pids_named("postgres")))
        ingested = sum(n for n, _ in upload_results)
        upload_lat = [x for _, lat in upload_results for x in lat]
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
        prompts_file.unlink(missing_ok=True)

    baseline = copy_baseline(database_url, min(ingested, 20000), args.batch, args.completion_bytes)
    cores = os.cpu_count() or 1
    gunicorn_shape = f"{args.gunicorn_workers}x{args.gunicorn_threads}"
    print(f"machine: {cores} cores; {args.workers} simulated workers; gunicorn {gunicorn_shape}")
    report(
        "lease",
        f"{leased} prompts",
        leased / lease_time,
        "prompts/s",
        lease_time,
        lease_lat,
        f"calls of up to {args.max_prompts} prompts",
        (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]),
        cores,
    )
    report(
        "upload",
        f"{ingested} samples of {args.completion_bytes} B",
        ingested / upload_time,
        "samples/s",
        upload_time,
        upload_lat,
        f"calls of {args.batch} samples",
        (cpu2[0] - cpu1[0], cpu2[1] - cpu1[1]),
        cores,
    )
    print(
        f"baseline: raw PostgreSQL COPY, same rows, batches of {args.batch}: {baseline:,.0f} rows/s"
    )


def report(
    phase: str,
    what: str,
    rate: float,
    unit: str,
    elapsed: float,
    latencies: list[float],
    calls: str,
    cpu: tuple[float, float],
    cores: int,
) -> None:
    print(f"{phase}: {what} in {elapsed:.2f}s = {rate:,.0f} {unit}")
    print(
        f"    {len(latencies)} {calls}; p50 {pct(latencies, 0.5):.0f} ms, "
        f"p95 {pct(latencies, 0.95):.0f} ms"
    )
    print(
        f"    CPU: gunicorn {cpu[0]:.1f}s, postgres {cpu[1]:.1f}s, "
        f"of {elapsed * cores:.1f}s on {cores} cores"
    )


if __name__ == "__main__":
    main()

"""What the API benchmarks share: a gunicorn server on a PostgreSQL database, simulated worker
processes that lease and upload through the real HTTP API, and CPU accounting.

Used by bench/lease_upload.py and bench/scale.py; not run on its own.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench/model-a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def has_command(name: str, env: dict[str, str]) -> bool:
    """Whether manage.py knows `name` (commands that other work is still adding)."""
    return name in manage("help", "--commands", env=env).split()


# Prompts a contributor or node may lease per day in a benchmark: never reached.
BENCH_QUOTA = str(1_000_000_000)


def server_env(database_url: str) -> dict[str, str]:
    """The environment of every server process of a benchmark: production settings (DEBUG off),
    with the throttles, lease caps and daily prompt quotas lifted so that they are not what is
    measured."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": "bench",
        "ALLOWED_HOSTS": "127.0.0.1,testserver",
        "THINKPOOL_TOKEN_RATE": "100000000/min",
        "THINKPOOL_ANON_RATE": "100000000/min",
        "LOG_LEVEL": "WARNING",
        "THINKPOOL_MAX_LIVE_LEASES_PER_NODE": "1000",
        "THINKPOOL_MAX_LIVE_LEASES_PER_USER": "1000",
        # The daily prompt quota (contributors.services.trust) pinned far above what any run
        # leases: min = initial = max, so neither new tokens (initial) nor leases left to
        # expire (cuts) throttle leasing. Fits the PositiveIntegerField columns (int32).
        "THINKPOOL_TRUST_INITIAL_QUOTA": BENCH_QUOTA,
        "THINKPOOL_TRUST_MIN_QUOTA": BENCH_QUOTA,
        "THINKPOOL_TRUST_MAX_QUOTA": BENCH_QUOTA,
        # Plain HTTP on the loopback: no redirect to https (production's default).
        "SECURE_SSL_REDIRECT": "0",
        # No collectstatic for a benchmark: WhiteNoise's warning about it is noise here.
        "PYTHONWARNINGS": "ignore:No directory at:UserWarning",
    }


# --- CPU accounting -----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pids: list[int], *, reaped_children_of: int | None = None) -> float:
    """utime + stime of `pids`; for `reaped_children_of`, also the CPU of its children that
    have exited (PostgreSQL backends and autovacuum workers come and go during a phase)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if pid == reaped_children_of:
            total += (int(fields[13]) + int(fields[14])) / tick  # cutime + cstime
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


def postmaster_of(database_url: str) -> int | None:
    """The PostgreSQL server process behind `database_url`, if it runs on this machine: the
    parent of our own backend. Other PostgreSQL clusters on a shared machine are not counted."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    fields = _stat_fields(row[0]) if row else None
    if fields is None:
        return None
    parent = int(fields[1])
    return parent if _stat_fields(parent) is not None else None


class CpuMeter:
    """CPU seconds of the gunicorn process tree and of one PostgreSQL cluster."""

    def __init__(self, gunicorn_pid: int, database_url: str):
        self.gunicorn_pid = gunicorn_pid
        self.postmaster = postmaster_of(database_url)

    def read(self) -> tuple[float, float]:
        server = cpu_seconds([self.gunicorn_pid, *children_of(self.gunicorn_pid)])
        if self.postmaster is None:
            # Not on this machine (or not visible): fall back to every `postgres` process.
            return server, cpu_seconds(pids_named("postgres"))
        pg = [self.postmaster, *children_of(self.postmaster)]
        return server, cpu_seconds(pg, reaped_children_of=self.postmaster)


# --- the server -------------------------------------------------------------------------------


def write_prompts(path: Path, count: int, seed: int) -> None:
    from scoring.generators import generate

    with path.open("w") as fh:
        for row in generate(count, seed=seed):
            fh.write(json.dumps(row) + "\n")


def import_set(
    env: dict[str, str],
    set_name: str,
    prompts: int,
    samples_per_prompt: int,
    *,
    priority: int = 1000,
    seed: int | None = None,
) -> None:
    """A fresh math set of `prompts` generated prompts, for MODEL, through import_prompts."""
    prompts_file = Path(f"/tmp/{set_name}.jsonl")
    write_prompts(prompts_file, prompts, int(time.time()) if seed is None else seed)
    try:
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
            str(samples_per_prompt),
            "--priority",
            str(priority),
            "--models",
            MODEL,
            env=env,
        )
    finally:
        prompts_file.unlink(missing_ok=True)


def issue_tokens(env: dict[str, str], prefix: str, count: int) -> list[str]:
    return [
        manage("issue_token", f"{prefix}-{w}", "--create", env=env).strip() for w in range(count)
    ]


@contextmanager
def gunicorn(env: dict[str, str], workers: int, threads: int) -> Iterator[tuple[str, int]]:
    """A gunicorn server on a free port; yields (its URL, its master's pid) once it answers."""
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "thinkpool.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "--threads",
            str(threads),
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
        yield server, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def register_nodes(server: str, tokens: list[str]) -> list[int]:
    nodes = []
    for token in tokens:
        response = httpx.post(
            f"{server}/api/v1/nodes/",
            json={"name": "bench-node", "backend": "openai", "models": [{"id": MODEL}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        nodes.append(response.json()["id"])
    return nodes


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


def make_completion(completion_bytes: int) -> str:
    rng = random.Random(0)
    words = ["so", "then", "we", "add", "the", "two", "numbers", "check", "carefully", "answer"]
    body = " ".join(rng.choice(words) for _ in range(completion_bytes // 5))[
        : completion_bytes - 40
    ]
    return f"<think>{body}</think> \\boxed{{42}}"


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
    completion = make_completion(completion_bytes)
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


def run_phase(target: Callable[..., None], args_list: list[tuple]) -> tuple[list, float]:
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


@dataclass
class Phase:
    """One measured phase: `count` things done in `elapsed` seconds, with per-call latencies
    and the CPU seconds (gunicorn, postgres) it cost."""

    count: int
    elapsed: float
    latencies: list[float]
    cpu: tuple[float, float]

    @property
    def rate(self) -> float:
        return self.count / self.elapsed

    @property
    def p50(self) -> float:
        return pct(self.latencies, 0.5)

    @property
    def p95(self) -> float:
        return pct(self.latencies, 0.95)


def lease_then_upload(
    server: str,
    meter: CpuMeter,
    tokens: list[str],
    nodes: list[int],
    *,
    max_prompts: int,
    batch: int,
    completion_bytes: int,
) -> tuple[Phase, Phase]:
    """Every simulated worker leases until the server has no more work; then each uploads
    `n` samples for every item it was given."""
    cpu0 = meter.read()
    lease_results, lease_time = run_phase(
        lease_worker, [(server, t, n, max_prompts) for t, n in zip(tokens, nodes, strict=True)]
    )
    cpu1 = meter.read()
    upload_results, upload_time = run_phase(
        upload_worker,
        [
            (server, t, items, batch, completion_bytes)
            for t, (items, _) in zip(tokens, lease_results, strict=True)
        ],
    )
    cpu2 = meter.read()
    lease = Phase(
        sum(len(items) for items, _ in lease_results),
        lease_time,
        [x for _, lat in lease_results for x in lat],
        (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]),
    )
    upload = Phase(
        sum(n for n, _ in upload_results),
        upload_time,
        [x for _, lat in upload_results for x in lat],
        (cpu2[0] - cpu1[0], cpu2[1] - cpu1[1]),
    )
    return lease, upload


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

"""The worker's own cost per sample: journal write + its share of the (batched) uploads.

    .venv/bin/python bench/worker_overhead.py [--prompts 500] [--n 4] [--concurrency 4]
    .venv/bin/python bench/worker_overhead.py --server URL --token TOKEN --model M  # existing

The backend answers instantly (an in-process OpenAI-compatible stub mounted on the worker's own
httpx client, so request building and response parsing are still measured), so whatever time is
left is the client's. The Thinkpool side is the real dev server (`manage.py runserver` on a
throwaway SQLite database under a temporary THINKPOOL_VAR_DIR) unless --server is given.

Reported per sample:
- worker CPU: process CPU time of the worker (all its threads) / samples: the client's own cost,
  excluding the server, which runs in another process. Target: < 2 ms.
- journal write: time inside Journal.record (durable commit, one per generation batch).
- upload wall: time inside upload calls / samples: includes the server's own processing.
- end-to-end wall: lease → all uploaded, / samples.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from contributors.worker.backends.openai import OpenAIBackend  # noqa: E402
from contributors.worker.display import Progress  # noqa: E402
from contributors.worker.journal import Journal  # noqa: E402
from contributors.worker.net import RetryPolicy, ServerClient, make_http_client  # noqa: E402
from contributors.worker.runner import Runner, RunOptions  # noqa: E402
from contributors.worker.uploader import Uploader  # noqa: E402

MODEL = "bench/instant-model"

SETUP = """
from contributors.services import issue_token
from django.contrib.auth import get_user_model
from scoring.models import Prompt, PromptSet
u = get_user_model().objects.create_user(username="bench")
_, raw = issue_token(user=u)
ps = PromptSet.objects.create(name="bench", domain="math", license="MIT", temperatures=[0.6],
                              samples_per_prompt={n}, max_tokens=64, lease_seconds=3600)
Prompt.objects.bulk_create([Prompt(prompt_set=ps, seq=i + 1, external_id=f"p{{i}}",
    text_hash=f"{{i:064d}}",
    messages=[{{"role": "user", "content": f"What is {{i}} + {{i}}?"}}]) for i in range({prompts})])
PromptSet.objects.filter(pk=ps.pk).update(last_prompt_seq={prompts})
print("TOKEN=" + raw)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev_server(prompts: int, n: int, var: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {
        **os.environ,
        "THINKPOOL_VAR_DIR": str(var),
        "THINKPOOL_TOKEN_RATE": "100000/min",
        "DEBUG": "0",  # production-like: no per-query logging
        "SECRET_KEY": "bench-only",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=REPO)
    out = subprocess.run(
        [*manage, "shell", "-c", SETUP.format(prompts=prompts, n=n)],
        env=env,
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    token = next(line[6:] for line in out.splitlines() if line.startswith("TOKEN="))
    port = free_port()
    proc = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/api/v1/stats/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    return proc, url, token


def instant_llm(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    n = body.get("n", 1)
    choice = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": "<think>2+2=4</think> The answer is 4."},
    }
    return httpx.Response(
        200,
        json={
            "model": MODEL,
            "choices": [choice] * n,
            "usage": {"prompt_tokens": 12, "completion_tokens": 9 * n},
        },
    )


class Timed:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn: Any) -> Any:
        def inner(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        return inner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--server")
    ap.add_argument("--token")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    proc = None
    if args.server:
        url, token, where = args.server, args.token, f"existing server {args.server}"
    else:
        proc, url, token = start_dev_server(args.prompts, args.n, tmp / "var")
        where = "real Thinkpool dev server (manage.py runserver, SQLite)"
    try:
        http = make_http_client(
            pool_size=args.concurrency,
            mounts={"http://instant-llm": httpx.MockTransport(instant_llm)},
        )
        server = ServerClient(http, url, token, policy=RetryPolicy(cap_s=2))
        node = server.register_node(
            {"name": "bench", "backend": "openai", "models": [{"id": MODEL}], "hardware": {}}
        )
        backend = OpenAIBackend(
            http, "http://instant-llm/v1", model=MODEL, max_parallel=args.concurrency
        )
        journal = Journal(tmp / "journal.sqlite3")
        jt, ut = Timed(), Timed()
        journal.record = jt.wrap(journal.record)  # type: ignore[method-assign]
        runner = Runner(
            server=server,
            backend=backend,
            journal=journal,
            node_id=str(node["id"]),
            model=MODEL,
            options=RunOptions(
                once=True, concurrency=args.concurrency, max_prompts=256, heartbeat_interval_s=30
            ),
            progress=Progress(),
        )
        runner.uploader._send = ut.wrap(runner.uploader._send)  # type: ignore[method-assign]
        assert isinstance(runner.uploader, Uploader)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        runner.run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        counts = journal.counts()
        samples = counts["accepted"] + counts["duplicate"]
        assert samples > 0 and counts["pending"] == 0 and counts["rejected"] == 0, counts
        per = 1000 / samples
        print(f"backend: instant in-process OpenAI stub; server: {where}")
        print(f"samples uploaded: {samples} ({args.n} per prompt), uploads: {ut.calls} calls")
        print(f"worker CPU        {cpu * per:7.3f} ms/sample   (target < 2 ms)")
        print(f"journal write     {jt.seconds * per:7.3f} ms/sample   ({jt.calls} commits)")
        print(f"upload wall       {ut.seconds * per:7.3f} ms/sample   (includes server time)")
        print(f"end-to-end wall   {wall * per:7.3f} ms/sample")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()

"""A real Celery worker process for integration tests.

The worker is a separate `celery -A thinkpool worker` process that talks to the same test
database (a file on SQLite, the test database on PostgreSQL) and the same broker as the test:
the filesystem broker in a temporary folder on the SQLite pass, Redis on the PostgreSQL pass.
Nothing runs eagerly here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from thinkpool.celery import app

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    cfg = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{cfg['NAME']}"
    auth = cfg["USER"] + (f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else "")
    return f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pool_processes(self) -> list[int]:
        """The pids of the worker's prefork pool processes (the children of its main one)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and prefork children), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _reset_broker_connections() -> None:
    # The app caches a connection pool and a producer pool built from the old options. They
    # are dropped, not closed: kombu keeps pools in a global registry keyed by connection, and
    # a closed pool left there would be handed out again.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def celery_broker(tmp_path: Path, settings: Any) -> Iterator[dict[str, str]]:
    """Points this process's Celery app at the broker the worker will use, non-eagerly."""
    env: dict[str, str] = {}
    saved = {
        "task_always_eager": app.conf.task_always_eager,
        "broker_transport_options": app.conf.broker_transport_options,
    }
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = tmp_path / "broker"
        options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
        for path in options.values():
            if isinstance(path, str):
                Path(path).mkdir(parents=True, exist_ok=True)
        app.conf.broker_transport_options = options
        env["THINKPOOL_VAR_DIR"] = str(tmp_path)
    app.conf.task_always_eager = False
    _reset_broker_connections()
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        app.control.purge()
    try:
        yield env
    finally:
        app.conf.update(saved)
        _reset_broker_connections()


@pytest.fixture
def start_worker(
    transactional_db: Any, celery_broker: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(
        *,
        queues: str = "verify,sandbox,maintenance",
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        may_exit: bool = False,
    ) -> WorkerProcess:
        """`extra_args` go to `celery worker` (e.g. `--include tests.e2e.worker_hooks`);
        with `may_exit`, a worker that exits at start-up is returned, not an error."""
        log = tmp_path / f"worker-{len(started)}.log"
        env = {
            **os.environ,
            **celery_broker,
            "DATABASE_URL": database_url(),
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "DEBUG": "1",
            **(extra_env or {}),
        }
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "thinkpool",
                    "worker",
                    "-Q",
                    queues,
                    "--pool",
                    "prefork",
                    "--concurrency",
                    "1",
                    "-n",
                    f"test-{uuid.uuid4().hex[:8]}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "INFO",
                    *(extra_args or []),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, log)
        started.append(worker)
        wait_for(
            lambda: "ready." in worker.output() or proc.poll() is not None,
            timeout=90,
            what="worker start",
        )
        if proc.poll() is not None and not may_exit:
            raise AssertionError(f"worker exited:\n{worker.output()[-3000:]}")
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGTERM)
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()

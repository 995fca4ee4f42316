"""Fixtures for the worker's end-to-end tests: a real Thinkpool server (pytest-django's
live_server), a real OpenAI-compatible model server (`transformers serve` on a tiny model built
locally), and the worker run as a separate process with its own config and journal."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.tiny_model import tiny_model_dir

SERVED_NAME = "thinkpool-test/tiny-qwen2"  # how Thinkpool names the tiny model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_model_dir()


@pytest.fixture(scope="session")
def transformers_serve(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`transformers serve` on the tiny model, offline. Yields its OpenAI base URL (…/v1)."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"transformers serve needs {missing}: pip install 'thinkpool[models]'")
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(exe),
                "serve",
                str(tiny_model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
                "--default-seed",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Thinkpool:
    url: str
    token: str
    user: Any
    prompt_set: Any
    prompts: list[Any] = field(default_factory=list)


def make_thinkpool(
    live_server: Any, *, prompts: int, spp: int, temperature: float = 0.7, max_tokens: int = 48
) -> Thinkpool:
    from contributors.services import issue_token
    from tests.factories import PromptFactory, PromptSetFactory, UserFactory

    user = UserFactory(username="worker-e2e")
    _, raw = issue_token(user=user)
    ps = PromptSetFactory(
        name="worker-e2e",
        temperatures=[temperature],
        samples_per_prompt=spp,
        max_tokens=max_tokens,
        top_p=0.9,
        lease_seconds=600,
    )
    made = PromptFactory.create_batch(prompts, prompt_set=ps)
    return Thinkpool(live_server.url, raw, user, ps, made)


class Worker:
    """Runs `thinkpool-worker` as a separate process with its own XDG dirs."""

    def __init__(self, root: Path, server: str, token: str) -> None:
        self.root = root
        self.journal = root / "data" / "thinkpool" / "journal.sqlite3"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("THINKPOOL_")},
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_DATA_HOME": str(root / "data"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "THINKPOOL_RETRY_CAP_S": "1",
            "THINKPOOL_POLL_MAX_S": "1",
            "THINKPOOL_HEARTBEAT_S": "1",
        }
        self.server, self.token = server, token

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "contributors.worker", "--log-format", "json", *args]

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cmd(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.cmd(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def ok(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, f"{args}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def login(self, server: str | None = None) -> None:
        self.ok("login", "--server", server or self.server, "--token", self.token)

    def journal_rows(self) -> list[tuple[str, str]]:
        if not self.journal.exists():
            return []
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT client_id, state FROM samples").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def wait_for_samples(self, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = len(self.journal_rows())
            if got >= n:
                return got
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.02)
        raise AssertionError("timed out waiting for samples")


@pytest.fixture
def make_worker(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(server: str, token: str, name: str = "w") -> Worker:
        return Worker(tmp_path / name, server, token)

    return make


class FlakyProxy:
    """A TCP forwarder in front of the Thinkpool server that can be taken down (connections
    refused, open ones cut) and brought back on the same port: a server outage, for real."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone would not, and
                # the kernel would go on accepting connections for it.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

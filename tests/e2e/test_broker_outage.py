"""Redis, the broker, goes away while contributors upload: uploads are stored and answered,
their scoring messages wait in the outbox, and the minute sweep publishes them once Redis is
back, judged by a real worker.

The test runs its own redis-server (the broker only; the cache stays where the suite put it),
so it can stop and start it; it is skipped where redis-server is not installed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.utils import timezone

from scoring.models import Sample, SampleStatus, ScoringOutbox
from scoring.tasks import sweep_stuck_samples
from tests.conftest import client_for
from tests.e2e.conftest import wait_for
from tests.e2e.test_scoring_worker import PROMPT, REASONING
from tests.factories import (
    NodeFactory,
    PromptFactory,
    PromptSetFactory,
    UserFactory,
    sample_payload,
)
from thinkpool.celery import app, bounded_transport_options

pytestmark = pytest.mark.celery_worker


class RedisServer:
    """A redis-server of this test's own, on a port of its own, that it can stop and start."""

    def __init__(self, executable: str, folder: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.executable, self.folder = executable, folder
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_for(lambda: self._answers(client), timeout=30, what="redis-server to start")

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def own_redis(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedisServer]:
    """The broker of this test (this process and the worker it starts): its own Redis."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable, tmp_path)
    server.start()
    saved = {key: app.conf[key] for key in ("broker_url", "broker_transport_options")}
    settings.CELERY_BROKER_URL = server.url  # start_worker's broker fixture reads it
    # Celery reads the variable before its configuration (the PostgreSQL pass sets it).
    monkeypatch.setenv("CELERY_BROKER_URL", server.url)
    app.conf.broker_url = server.url
    # What production gets for a Redis broker (settings, then thinkpool/celery.py).
    app.conf.broker_transport_options = bounded_transport_options(
        server.url, {"visibility_timeout": 3600}
    )
    app._pool = None
    app.amqp._producer_pool = None
    try:
        yield server
    finally:
        server.stop()
        app.conf.update(saved)
        app._pool = None
        app.amqp._producer_pool = None


def test_uploads_while_redis_is_down_are_answered_and_judged_once_it_is_back(
    own_redis, start_worker
):
    user = UserFactory(username="outage")
    api, node = client_for(user), NodeFactory(owner=user)
    PromptFactory(prompt_set=PromptSetFactory(samples_per_prompt=2), messages=PROMPT, gold="42")
    start_worker(extra_env={"CELERY_BROKER_URL": own_redis.url})
    lease = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 1},
        format="json",
    ).json()
    item = lease["items"][0]["id"]

    own_redis.stop()
    body = {
        "samples": [
            sample_payload(item, completion=REASONING.format(n=42) + "\\boxed{42}"),
            sample_payload(item, completion=REASONING.format(n=41) + "\\boxed{41}"),
        ]
    }
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", body, format="json")
    assert response.status_code == 200, response.content
    assert [a["client_id"] for a in response.json()["accepted"]] == [
        s["client_id"] for s in body["samples"]
    ]
    right, wrong = (a["id"] for a in response.json()["accepted"])
    samples = Sample.objects.filter(pk__in=[right, wrong])
    # Stored, and their message kept in the outbox.
    assert set(samples.values_list("status", flat=True)) == {SampleStatus.RECEIVED}
    assert list(ScoringOutbox.objects.values_list("sample_ids", "sandbox")) == [
        ([right, wrong], False)
    ]

    own_redis.start()
    time.sleep(2)  # the worker reconnects on its own; nothing has queued the samples
    assert set(samples.values_list("status", flat=True)) == {SampleStatus.RECEIVED}
    assert ScoringOutbox.objects.count() == 1

    # A minute later, beat's sweep (every minute, on the worker's maintenance queue) publishes
    # the message. The minute is skipped by moving the outbox row's clock back.
    assert app.conf.beat_schedule["sweep-stuck-samples"] == {
        "task": "scoring.sweep_stuck_samples",
        "schedule": 60.0,
    }
    ScoringOutbox.objects.update(created_at=timezone.now() - timedelta(minutes=2))
    sweep_stuck_samples.delay()

    def settled() -> dict[int, str] | None:
        statuses = dict(samples.values_list("pk", "status"))
        open_ = {SampleStatus.RECEIVED, SampleStatus.SCORING}
        return None if open_ & set(statuses.values()) else statuses

    assert wait_for(settled, timeout=120, what="the swept samples to be judged") == {
        right: SampleStatus.VERIFIED,
        wrong: SampleStatus.REJECTED,
    }
    assert not ScoringOutbox.objects.exists()
    assert set(samples.values_list("attempts", flat=True)) == {1}

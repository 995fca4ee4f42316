"""The broker away when samples are queued: the upload is stored and answered, the samples are
left without `queued_at`, publishing gives up in bounded time, and the minute sweep queues
them once it can (the e2e test, tests/e2e/test_broker_outage.py, does it with a real Redis
and a real worker)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from scoring import pipeline, tasks
from scoring.models import Sample, SampleStatus
from tests.factories import sample_payload
from tests.scoring.test_pipeline import make_sample
from thinkpool.celery import app, bounded_transport_options

pytestmark = pytest.mark.django_db


class Broker:
    """Stands in for `apply_async` of both scoring tasks: records what was published, or
    raises as kombu does when the broker is unreachable."""

    def __init__(self) -> None:
        self.down = False
        self.tries = 0
        self.sent: list[list[int]] = []

    def apply_async(self, args: Any, **options: Any) -> None:
        self.tries += 1
        if self.down:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append(list(args[0]))


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    fake = Broker()
    monkeypatch.setattr(tasks.score_samples, "apply_async", fake.apply_async)
    monkeypatch.setattr(tasks.score_code_samples, "apply_async", fake.apply_async)
    return fake


def queued(*samples: Sample) -> list[bool]:
    rows = dict(
        Sample.objects.filter(pk__in=[s.pk for s in samples]).values_list("pk", "queued_at")
    )
    return [rows[s.pk] is not None for s in samples]


def age(sample: Sample, seconds: float) -> None:
    Sample.objects.filter(pk=sample.pk).update(
        status_changed_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_an_upload_while_the_broker_is_down_is_stored_answered_and_flagged(
    api, lease, broker, caplog, django_capture_on_commit_callbacks
):
    broker.down = True
    items = [item["id"] for item in lease["items"][:2]]
    with (
        caplog.at_level(logging.ERROR, logger="scoring.tasks"),
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        response = api.post(
            f"/api/v1/leases/{lease['id']}/samples/",
            {"samples": [sample_payload(i) for i in items]},
            format="json",
        )
    assert response.status_code == 200, response.content
    accepted = [a["id"] for a in response.json()["accepted"]]
    assert len(accepted) == 2 and len(callbacks) == 1
    stored = Sample.objects.filter(pk__in=accepted)
    assert sorted(stored.values_list("status", flat=True)) == ["received", "received"]
    assert list(stored.values_list("queued_at", flat=True)) == [None, None]
    assert broker.tries == 1 and broker.sent == []
    assert "could not queue 2 samples for scoring (OperationalError" in caplog.text


def test_a_published_chunk_is_marked_queued_and_a_failure_stops_the_rest(broker):
    samples = [make_sample(completion=f"c{k}") for k in range(3)]
    ids = [s.pk for s in samples]
    before = timezone.now()
    assert tasks.queue_scoring(ids) == 3
    assert broker.sent == [ids] and queued(*samples) == [True, True, True]
    assert all(at >= before for at in Sample.objects.values_list("queued_at", flat=True))

    # Three chunks, the broker gone: one try, not three; all flagged again.
    broker.down, broker.tries = True, 0
    many = [make_sample(completion=f"m{k}") for k in range(2 * tasks.QUEUE_CHUNK + 1)]
    Sample.objects.filter(pk__in=[s.pk for s in many]).update(queued_at=timezone.now())
    assert tasks.queue_scoring([s.pk for s in many]) == 0
    assert broker.tries == 1
    assert not any(queued(*many))


def test_the_minute_sweep_requeues_only_samples_whose_message_never_left(broker):
    lost = make_sample(completion="lost")
    fresh = make_sample(completion="fresh")  # stored seconds ago: its message may be on its way
    waiting = make_sample(completion="waiting", queued_at=timezone.now())  # in a long queue
    claimed = make_sample(completion="claimed", status=SampleStatus.SCORING, queued_at=None)
    held = make_sample(completion="held", quarantined=True)
    for sample in (lost, waiting, claimed, held):
        age(sample, 10 * 60)  # ten minutes: far below SWEEP_AFTER_S, far above a minute
    age(fresh, pipeline.UNQUEUED_AFTER_S - 10)

    assert pipeline.unqueued_sample_ids() == [lost.pk]
    # Its clock was reset: the next minute's sweep does not send it again meanwhile.
    assert pipeline.unqueued_sample_ids() == []

    # Through the beat task: found, sent, marked.
    age(lost, 2 * 60)
    assert tasks.sweep_stuck_samples.apply().get() == 1
    assert broker.sent == [[lost.pk]]
    assert queued(lost, fresh, waiting, claimed, held) == [True, False, True, False, False]
    assert tasks.sweep_stuck_samples.apply().get() == 0


def test_a_sample_the_sweep_could_not_send_is_found_again_a_minute_later(broker):
    lost = make_sample()
    age(lost, 2 * 60)
    broker.down = True
    assert tasks.sweep_stuck_samples.apply().get() == 1
    assert queued(lost) == [False]
    assert pipeline.unqueued_sample_ids() == []  # not before a minute has passed
    age(lost, 2 * 60)
    broker.down = False
    assert tasks.sweep_stuck_samples.apply().get() == 1
    assert broker.sent == [[lost.pk]] and queued(lost) == [True]


def test_the_long_sweep_clears_queued_at_so_a_failed_requeue_is_found_fast(broker, settings):
    stuck = make_sample(status=SampleStatus.SCORING, queued_at=timezone.now())
    age(stuck, settings.THINKPOOL["SWEEP_AFTER_S"] + 60)
    broker.down = True
    assert tasks.sweep_stuck_samples.apply().get() == 1
    assert Sample.objects.get(pk=stuck.pk).status == SampleStatus.RECEIVED
    assert queued(stuck) == [False]
    age(stuck, 2 * 60)
    assert pipeline.unqueued_sample_ids() == [stuck.pk]


# --- the real client against brokers that are not there ---------------------------------------


@pytest.fixture
def broker_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Points this process's Celery app (non-eager) at a broker URL, with the transport
    options production gets (thinkpool/celery.py)."""
    saved = {
        key: app.conf[key]
        for key in ("task_always_eager", "broker_url", "broker_transport_options")
    }

    def point(url: str) -> None:
        app.conf.task_always_eager = False
        # Celery reads the variable before its configuration (the PostgreSQL pass sets it).
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        app.conf.broker_url = url
        app.conf.broker_transport_options = bounded_transport_options(url)
        app._pool = None
        app.amqp._producer_pool = None

    yield point
    app.conf.update(saved)
    app._pool = None
    app.amqp._producer_pool = None


def queue_in_thread(ids: list[int]) -> list[Any]:
    """queue_scoring in a thread, joined with a generous limit: a hang shows as a failure of
    this test, not of the suite. Returns [its result] when it returned."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(tasks.queue_scoring(ids)), daemon=True)
    thread.start()
    thread.join(60)
    return out


def test_publishing_to_a_closed_port_gives_up_and_flags_the_samples(broker_at):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once it is closed
    broker_at(f"redis://127.0.0.1:{port}/0")
    sample = make_sample()
    assert tasks.queue_scoring([sample.pk]) == 0
    assert queued(sample) == [False]


@pytest.mark.django_db(transaction=True)
def test_publishing_to_a_broker_that_never_answers_gives_up(broker_at):
    # Accepts connections (the kernel's backlog) and never says a word: a hung Redis, or a
    # half-open connection after a failover. Without socket timeouts this waits for ever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        broker_at(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        sample = make_sample()
        assert queue_in_thread([sample.pk]) == [0]
    assert queued(sample) == [False]

"""The scoring outbox (scoring.tasks.enqueue_on_commit, publish_outbox, queue_scoring): an
upload's messages are written in its transaction and deleted once published; a message the
broker did not take (it was away, or the process died between commit and publish) stays, and
the minute sweep publishes it once it is a minute old. Publishing gives up in bounded time. The
e2e test (tests/e2e/test_broker_outage.py) does it with a real Redis and a real worker."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError

from scoring import tasks
from scoring.models import Sample, SampleStatus, ScoringOutbox, Verdict
from tests.factories import PromptSetFactory, sample_payload
from tests.scoring.test_pipeline import make_sample
from thinkpool.celery import app, bounded_transport_options

pytestmark = pytest.mark.django_db

CHUNK = tasks.QUEUE_CHUNK


class Broker:
    """Stands in for `apply_async` of both scoring tasks: records each message published as
    (queue, ids, rescore), or raises as kombu does when the broker is unreachable: from the
    try numbered `fail_from` on (0: down from the start; None: up)."""

    def __init__(self) -> None:
        self.fail_from: int | None = None
        self.tries = 0
        self.sent: list[tuple[str, list[int], bool]] = []
        self.before_send: Any = None  # called with each message, before it is recorded

    @property
    def down(self) -> bool:
        return self.fail_from is not None and self.tries >= self.fail_from

    def for_queue(self, queue: str) -> Any:
        def apply_async(args: Any, **options: Any) -> None:
            if self.down:
                self.tries += 1
                raise OperationalError(
                    "Error 111 connecting to 127.0.0.1:6379. Connection refused."
                )
            self.tries += 1
            if self.before_send is not None:
                self.before_send(args)
            self.sent.append((queue, list(args[0]), bool(args[1])))

        return apply_async


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    fake = Broker()
    monkeypatch.setattr(tasks.score_samples, "apply_async", fake.for_queue("verify"))
    monkeypatch.setattr(tasks.score_code_samples, "apply_async", fake.for_queue("sandbox"))
    return fake


def outbox() -> list[tuple[list[int], bool, bool]]:
    return list(
        ScoringOutbox.objects.order_by("pk").values_list("sample_ids", "sandbox", "rescore")
    )


def age_outbox(seconds: float) -> None:
    ScoringOutbox.objects.update(created_at=timezone.now() - timedelta(seconds=seconds))


def samples(count: int, **fields: Any) -> list[int]:
    return [make_sample(completion=f"c{k}", **fields).pk for k in range(count)]


# --- an upload, through the API ----------------------------------------------------------------


def test_an_upload_while_the_broker_is_down_is_stored_answered_and_kept_in_the_outbox(
    api, lease, broker, caplog, django_capture_on_commit_callbacks
):
    broker.fail_from = 0
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
    assert outbox() == [(accepted, False, False)]
    assert broker.tries == 1 and broker.sent == []
    assert "could not queue 2 samples for scoring (OperationalError" in caplog.text


# --- enqueue_on_commit: the happy path, a failed publish, a killed process, a rollback --------


def test_a_published_message_is_deleted_and_no_sample_row_is_written(
    broker, django_capture_on_commit_callbacks
):
    plain, code = samples(CHUNK + 1), samples(2)
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        transaction.atomic(),
    ):
        tasks.enqueue_on_commit(plain + code, sandbox_ids=code)
        # Inside the transaction: written, not yet sent.
        assert outbox() == [
            (plain[:CHUNK], False, False),
            (plain[CHUNK:], False, False),
            (code, True, False),
        ]
        assert broker.sent == []
    assert len(callbacks) == 1
    assert broker.sent == [
        ("verify", plain[:CHUNK], False),
        ("verify", plain[CHUNK:], False),
        ("sandbox", code, False),
    ]
    assert outbox() == []
    # The caller named the sandbox's samples: one INSERT and one DELETE (plus the test's own
    # reads), no read of the samples and no write of their rows.
    writes = [
        q["sql"].split(" ", 3)[:3]
        for q in queries.captured_queries
        if q["sql"].startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == [
        ["INSERT", "INTO", '"scoring_scoringoutbox"'],
        ["DELETE", "FROM", '"scoring_scoringoutbox"'],
    ]
    assert not any('"scoring_sample"' in q["sql"] for q in queries.captured_queries)


def test_without_sandbox_ids_the_queues_are_read_from_the_prompt_sets(
    broker, django_capture_on_commit_callbacks
):
    plain = make_sample()
    code = make_sample(prompt_set=PromptSetFactory(domain="code"))
    enabled = make_sample(
        prompt_set=PromptSetFactory(domain="general", verifier_config={"enable": ["code"]})
    )
    with django_capture_on_commit_callbacks(execute=True):
        tasks.enqueue_on_commit([code.pk, plain.pk, enabled.pk, plain.pk])
    assert broker.sent == [
        ("verify", [plain.pk], False),
        ("sandbox", [code.pk, enabled.pk], False),
    ]
    assert outbox() == []


def test_a_failed_publish_keeps_the_messages_not_sent_and_tries_once(
    broker, caplog, django_capture_on_commit_callbacks
):
    ids = samples(2 * CHUNK + 1)
    broker.fail_from = 1  # the first message goes, then the broker is gone
    with (
        caplog.at_level(logging.ERROR, logger="scoring.tasks"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tasks.enqueue_on_commit(ids, sandbox_ids=[])
    assert broker.sent == [("verify", ids[:CHUNK], False)]
    assert broker.tries == 2  # not three: nobody waits on an absent broker twice
    assert outbox() == [(ids[CHUNK : 2 * CHUNK], False, False), (ids[2 * CHUNK :], False, False)]
    assert f"could not queue {CHUNK + 1} samples for scoring (OperationalError" in caplog.text
    assert set(Sample.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"received"}


def test_a_message_left_by_a_killed_process_is_sent_by_the_sweep_after_a_minute_not_before(
    broker, django_capture_on_commit_callbacks
):
    ids = samples(2)
    # The process dies between commit and publish: its on-commit callback never runs.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tasks.enqueue_on_commit(ids, sandbox_ids=[])
    assert len(callbacks) == 1 and outbox() == [(ids, False, False)]

    age_outbox(tasks.UNQUEUED_AFTER_S - 5)
    assert tasks.sweep_stuck_samples.apply().get() == 0
    assert broker.sent == [] and outbox() == [(ids, False, False)]

    age_outbox(tasks.UNQUEUED_AFTER_S + 5)
    assert tasks.sweep_stuck_samples.apply().get() == 2
    assert broker.sent == [("verify", ids, False)] and outbox() == []
    assert tasks.sweep_stuck_samples.apply().get() == 0
    assert len(broker.sent) == 1


def test_messages_the_sweep_could_not_send_stay_and_go_a_minute_later(broker):
    ids = samples(3)
    ScoringOutbox.objects.bulk_create(
        [ScoringOutbox(sample_ids=[pk]) for pk in ids]
        + [ScoringOutbox(sample_ids=[ids[0]], sandbox=True, rescore=True)]
    )
    age_outbox(2 * 60)
    broker.fail_from = 0
    assert tasks.sweep_stuck_samples.apply().get() == 0
    assert broker.tries == 1 and len(outbox()) == 4
    broker.fail_from = None
    assert tasks.sweep_stuck_samples.apply().get() == 4
    assert broker.sent == [
        ("verify", [ids[0]], False),
        ("verify", [ids[1]], False),
        ("verify", [ids[2]], False),
        ("sandbox", [ids[0]], True),
    ]
    assert outbox() == []


def test_the_sweep_takes_the_outbox_in_batches_oldest_first(broker):
    ids = samples(5)
    now = timezone.now()
    ScoringOutbox.objects.bulk_create(
        [
            ScoringOutbox(sample_ids=[pk], created_at=now - timedelta(minutes=10 - k))
            for k, pk in enumerate(reversed(ids))
        ]
        + [ScoringOutbox(sample_ids=[999_999], created_at=now)]  # too young
    )
    assert tasks.publish_outbox(batch=2) == 5
    assert [ids for _, ids, _ in broker.sent] == [[pk] for pk in reversed(ids)]
    assert outbox() == [([999_999], False, False)]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_upload_leaves_no_message_and_sends_nothing(broker):
    ids = samples(2)
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.enqueue_on_commit(ids, sandbox_ids=[])
        assert len(outbox()) == 1
        raise RuntimeError("the upload failed after its samples were written")
    assert outbox() == [] and broker.sent == []
    # A committed one, for contrast: sent on commit and gone.
    with transaction.atomic():
        tasks.enqueue_on_commit(ids, sandbox_ids=[])
    assert broker.sent == [("verify", ids, False)] and outbox() == []


# --- queue_scoring: a direct publish that keeps what it could not send -------------------------


def test_queue_scoring_sends_now_and_keeps_what_it_could_not_send_in_the_outbox(broker):
    ids = samples(CHUNK + 1)
    assert tasks.queue_scoring(ids, rescore=True) == CHUNK + 1
    assert broker.sent == [("verify", ids[:CHUNK], True), ("verify", ids[CHUNK:], True)]
    assert outbox() == []

    broker.fail_from, broker.tries, broker.sent = 0, 0, []
    assert tasks.queue_scoring(ids, rescore=True) == 0
    assert broker.tries == 1
    assert outbox() == [(ids[:CHUNK], False, True), (ids[CHUNK:], False, True)]
    # Sent a minute later as they were asked for: a rescore stays a rescore.
    age_outbox(2 * 60)
    broker.fail_from = None
    assert tasks.publish_outbox() == CHUNK + 1
    assert broker.sent == [("verify", ids[:CHUNK], True), ("verify", ids[CHUNK:], True)]


def test_a_stuck_sample_the_sweep_could_not_requeue_is_sent_a_minute_later(broker, settings):
    stuck = make_sample(status=SampleStatus.SCORING)
    Sample.objects.filter(pk=stuck.pk).update(
        status_changed_at=timezone.now()
        - timedelta(seconds=settings.THINKPOOL["SWEEP_AFTER_S"] + 60)
    )
    broker.fail_from = 0
    assert tasks.sweep_stuck_samples.apply().get() == 1
    assert Sample.objects.get(pk=stuck.pk).status == SampleStatus.RECEIVED
    assert outbox() == [([stuck.pk], False, False)]
    age_outbox(2 * 60)
    broker.fail_from = None
    assert tasks.sweep_stuck_samples.apply().get() == 1  # the outbox's, not a stuck one
    assert broker.sent == [("verify", [stuck.pk], False)] and outbox() == []


# --- a message sent twice is harmless --------------------------------------------------------


def test_a_second_message_for_the_same_samples_judges_nothing_twice():
    settled, held = make_sample(), make_sample(completion="held")
    assert tasks.score_samples.apply(args=([settled.pk], False), task_id="first").get() == 1
    verdict_rows = list(Verdict.objects.filter(sample=settled).values_list("pk", "created_at"))
    # `held` is being judged by the first message's task right now.
    Sample.objects.filter(pk=held.pk).update(
        status=SampleStatus.SCORING, claim_key="first", attempts=1
    )
    assert (
        tasks.score_samples.apply(args=([settled.pk, held.pk], False), task_id="again").get() == 0
    )
    rows = dict(Sample.objects.values_list("pk", "status"))
    assert rows == {settled.pk: SampleStatus.VERIFIED, held.pk: SampleStatus.SCORING}
    assert list(Sample.objects.order_by("pk").values_list("attempts", "claim_key")) == [
        (1, "first"),
        (1, "first"),
    ]
    assert (
        list(Verdict.objects.filter(sample=settled).values_list("pk", "created_at")) == verdict_rows
    )
    assert not Verdict.objects.filter(sample=held).exists()


# --- two sweepers (PostgreSQL: SKIP LOCKED) ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweepers_never_both_send_a_message(broker):
    ids = samples(3)
    ScoringOutbox.objects.bulk_create([ScoringOutbox(sample_ids=[pk]) for pk in ids])
    age_outbox(2 * 60)
    first_sending, go_on = threading.Event(), threading.Event()

    def hold_first(args: Any) -> None:
        # The first sweeper's first message: it stops here, its two rows locked.
        if threading.current_thread().name == "first" and not first_sending.is_set():
            first_sending.set()
            go_on.wait(60)

    broker.before_send = hold_first
    results: dict[str, int] = {}

    def sweep(name: str) -> None:
        try:
            results[name] = tasks.publish_outbox(batch=2)
        finally:
            connection.close()

    first = threading.Thread(target=sweep, args=("first",), name="first", daemon=True)
    first.start()
    assert first_sending.wait(30)
    # The second sweeper skips the rows the first holds (it neither waits nor sends them).
    second = threading.Thread(target=sweep, args=("second",), name="second", daemon=True)
    second.start()
    second.join(30)
    finished_while_held = not second.is_alive()
    go_on.set()
    first.join(30)
    second.join(30)
    assert finished_while_held, "the second sweeper waited for the first one's rows"
    assert results == {"first": 2, "second": 1}
    assert sorted(ids for _, ids, _ in broker.sent) == [[pk] for pk in ids]
    assert broker.sent[0] == ("verify", [ids[2]], False)  # the second's, while the first waited
    assert outbox() == []


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


def in_thread(call: Any) -> list[Any]:
    """Runs `call` in a thread, joined with a generous limit: a hang shows as a failure of
    this test, not of the suite. Returns [its result] when it returned."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    return out


def test_publishing_to_a_closed_port_gives_up_and_keeps_the_messages(
    broker_at, django_capture_on_commit_callbacks
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once it is closed
    broker_at(f"redis://127.0.0.1:{port}/0")
    first, second = samples(2)
    assert tasks.queue_scoring([first]) == 0
    with django_capture_on_commit_callbacks(execute=True):
        tasks.enqueue_on_commit([second], sandbox_ids=[])
    assert outbox() == [([first], False, False), ([second], False, False)]


@pytest.mark.django_db(transaction=True)
def test_publishing_to_a_broker_that_never_answers_gives_up(broker_at):
    # Accepts connections (the kernel's backlog) and never says a word: a hung Redis, or a
    # half-open connection after a failover. Without socket timeouts this waits for ever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        broker_at(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        first, second = samples(2)
        assert in_thread(lambda: tasks.queue_scoring([first])) == [0]

        def upload() -> None:
            with transaction.atomic():
                tasks.enqueue_on_commit([second], sandbox_ids=[])

        assert in_thread(upload) == [None]
    assert outbox() == [([first], False, False), ([second], False, False)]

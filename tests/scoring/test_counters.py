"""The public counters (scoring/counters.py): kept in step with the rows through uploads,
scoring, closes, rescores and sweeps; rebuilt by `recompute`; and what /stats reads instead of
aggregating whole tables."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contributors import selectors
from scoring import counters, pipeline
from scoring.models import Counter, Prompt, PromptSet, Sample, SampleStatus
from scoring.prompt_io import RawRow
from scoring.services import close_prompts, import_prompts, retire_prompt_set
from scoring.verifiers import REGISTRY
from scoring.verifiers.base import Outcome, Status
from tests.conftest import client_for
from tests.factories import (
    PromptFactory,
    PromptSetFactory,
    UserFactory,
    sample_payload,
)
from tests.scoring.test_pipeline import make_sample

RIGHT = "<think>2+2 is 4, since two and two make four.</think> The answer is \\boxed{4}."
WRONG = "<think>2+2 is 5, since two and two make five.</think> The answer is \\boxed{5}."


def stored() -> dict[str, int]:
    return counters.read()


def true() -> dict[str, int]:
    return {name: value for name, value in counters.truth().items() if value}


def kept_by_scoring() -> tuple[dict[str, int], dict[str, int]]:
    """(stored, true) of the counters scoring keeps itself: prompts per set and samples of
    closed prompts by status (samples made here skip the upload that counts them)."""
    truth = counters.truth()
    names = [name for name in truth if name.startswith(("prompts_set_", "samples_closed_"))]
    return counters.read(names), {name: truth[name] for name in names}


_texts = itertools.count()


def assert_kept() -> None:
    kept, truth = kept_by_scoring()
    assert kept == truth


def sample_on_new_prompt(**fields: Any) -> Sample:
    """A sample of a prompt of its own (its own text: closing it closes no twin)."""
    prompt = PromptFactory(
        messages=[{"role": "user", "content": f"What is 2+2? Explain ({next(_texts)})."}],
        gold="4",
    )
    return Sample.objects.create(
        prompt=prompt,
        contributor=UserFactory(),
        model="m",
        temperature=0.6,
        finish_reason="stop",
        completion=RIGHT,
        **fields,
    )


# --- the API ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_add_sums_over_shards_and_read_gives_every_name_asked(monkeypatch):
    shards = iter([0, 3, 3, 15])
    monkeypatch.setattr(counters.random, "randrange", lambda n: next(shards))
    counters.add({"a": 2}, b=5)
    counters.add(a=3)
    counters.add({"a": -1, "b": 0})
    counters.add(b=-5)
    assert set(Counter.objects.values_list("name", "shard", "value")) == {
        ("a", 0, 2),
        ("b", 0, 5),
        ("a", 3, 2),  # two writes to one shard add up in its row
        ("b", 15, -5),
    }
    assert counters.read(["a", "b", "never"]) == {"a": 4, "b": 0, "never": 0}
    assert counters.read() == {"a": 4}  # without names: the non-zero ones


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_counts_nothing():
    counters.add(a=1)
    with pytest.raises(RuntimeError), transaction.atomic():
        counters.add(a=10, b=1)
        raise RuntimeError("the upload failed")
    assert counters.read(["a", "b"]) == {"a": 1, "b": 0}


@pytest.mark.django_db
def test_recompute_repairs_drift_and_reports_it():
    prompt = PromptFactory()
    make_sample(prompt_set=prompt.prompt_set)
    gone = PromptSetFactory()
    counters.add({counters.SAMPLES: 40, counters.prompts_in_set(gone.pk + 1000): 3, "other": 7})
    drift = counters.recompute()
    assert drift[counters.SAMPLES] == (40, 1)  # made here, not uploaded: never counted
    assert drift[counters.prompts_in_set(gone.pk + 1000)] == (3, 0)  # a set that is no more
    assert "other" not in drift  # nobody knows it: left alone
    assert stored() == {**true(), "other": 7}
    assert counters.recompute() == {}
    # One row per counter afterwards.
    assert Counter.objects.filter(name=counters.SAMPLES).count() == 1


@pytest.mark.django_db
def test_a_registered_source_is_part_of_the_truth(monkeypatch):
    monkeypatch.setattr(counters, "_sources", {})

    @counters.register
    def slots() -> dict[str, int]:
        return {counters.SLOTS_TARGET: 12}

    assert counters.truth()[counters.SLOTS_TARGET] == 12
    counters.recompute()
    assert counters.read([counters.SLOTS_TARGET]) == {counters.SLOTS_TARGET: 12}


# --- prompts ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prompts_are_counted_per_set_however_they_are_made():
    prompt_set = PromptSetFactory(domain="math")
    rows = [
        RawRow(line=k, data={"prompt": f"What is {k}+{k}?", "answer": str(2 * k)})
        for k in range(1, 4)
    ]
    assert import_prompts(prompt_set=prompt_set, rows=rows).created == 3
    assert import_prompts(prompt_set=prompt_set, rows=rows).created == 0  # duplicates
    PromptFactory(prompt_set=prompt_set)  # one by one (the admin, a test)
    assert counters.read([counters.prompts_in_set(prompt_set.pk)]) == {
        counters.prompts_in_set(prompt_set.pk): 4
    }
    assert stored() == true()


# --- samples by status over closed prompts --------------------------------------------------


@pytest.mark.django_db
def test_only_samples_of_closed_prompts_are_counted_by_status_and_every_move_after_is():
    open_sample = sample_on_new_prompt()
    pipeline.score_sample(sample_id=open_sample.pk)
    assert not any(name.startswith("samples_closed_") for name in stored())

    waiting = sample_on_new_prompt()
    scored = sample_on_new_prompt()
    pipeline.score_sample(sample_id=scored.pk)
    close_prompts(prompt_ids=[waiting.prompt_id, scored.prompt_id])
    assert counters.read(counters.CLOSED_SAMPLES.values()) == {
        counters.closed_samples("received"): 1,
        counters.closed_samples("scoring"): 0,
        counters.closed_samples("verified"): 1,
        counters.closed_samples("rejected"): 0,
        counters.closed_samples("error"): 0,
    }
    # Judged after the close (a backlog): received -> scoring -> verified, counted.
    pipeline.score_sample(sample_id=waiting.pk)
    assert counters.read([counters.closed_samples("verified")]) == {
        counters.closed_samples("verified"): 2
    }
    assert_kept()


@pytest.mark.django_db
def test_sweeps_poison_and_rescores_of_closed_prompts_move_the_counters(settings, monkeypatch):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_SCORING_ATTEMPTS": 2}
    stuck, poison, due, rescored = (sample_on_new_prompt() for _ in range(4))
    pipeline.score_sample(sample_id=rescored.pk)
    long_ago = timezone.now() - timedelta(hours=2)
    Sample.objects.filter(pk=stuck.pk).update(status=SampleStatus.SCORING, attempts=1)
    Sample.objects.filter(pk=poison.pk).update(status=SampleStatus.SCORING, attempts=2)
    Sample.objects.filter(pk__in=[stuck.pk, poison.pk]).update(status_changed_at=long_ago)
    Sample.objects.filter(pk=due.pk).update(
        status=SampleStatus.ERROR, attempts=1, next_attempt_at=long_ago
    )
    close_prompts(prompt_ids=Sample.objects.values_list("prompt_id", flat=True))
    assert_kept()

    # Poison: a stale claim past its attempts ends `error`.
    assert pipeline.claim(sample_id=poison.pk, claim_key="late") is None
    assert Sample.objects.get(pk=poison.pk).status == SampleStatus.ERROR
    assert_kept()
    # The stuck sweep (scoring -> received) and the retry sweep (error -> received).
    assert pipeline.stuck_sample_ids() == [stuck.pk]
    assert pipeline.due_retry_ids() == [due.pk]
    assert_kept()
    # A rescore whose new verifier version changes the status: verified -> rejected.
    monkeypatch.setattr(type(REGISTRY["math"]), "version", REGISTRY["math"].version + 1)
    monkeypatch.setattr(type(REGISTRY["math"]), "verify", lambda *args: Outcome(Status.FAIL, 0.0))
    call_command("rescore", "--set", rescored.prompt.prompt_set.name, stdout=StringIO())
    assert Sample.objects.get(pk=rescored.pk).status == SampleStatus.REJECTED
    assert (
        counters.read([counters.closed_samples("rejected")])[counters.closed_samples("rejected")]
        == Sample.objects.filter(status=SampleStatus.REJECTED).count()
    )
    assert_kept()


@pytest.mark.django_db
def test_counters_equal_the_rows_after_uploads_scoring_closes_and_a_retirement(
    django_capture_on_commit_callbacks,
):
    prompt_set = PromptSetFactory(name="arith", samples_per_prompt=2)
    prompts = [
        PromptFactory(
            prompt_set=prompt_set,
            messages=[{"role": "user", "content": f"What is 2+2? (variant {k})"}],
            gold="4",
        )
        for k in range(3)
    ]
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")

    def upload(user: Any, answers: list[tuple[Prompt, str]]) -> None:
        samples = []
        for prompt, completion in answers:
            payload = sample_payload(0, prompt=prompt.pk, completion=completion)
            del payload["item"]  # offline: no lease
            samples.append(payload)
        with django_capture_on_commit_callbacks(execute=True):  # scoring, eagerly
            response = client_for(user).post(
                "/api/v1/samples/", {"samples": samples}, format="json"
            )
        assert response.status_code == 200, response.content
        assert len(response.json()["accepted"]) == len(answers)

    upload(alice, [(prompts[0], RIGHT), (prompts[1], WRONG)])
    assert stored() == true()
    assert counters.read([counters.SAMPLES, counters.CONTRIBUTORS]) == {
        counters.SAMPLES: 2,
        counters.CONTRIBUTORS: 1,
    }
    close_prompts(prompt_ids=[prompts[0].pk], twins=False)
    assert stored() == true()
    assert stored()[counters.closed_samples("verified")] == 1  # alice's right answer
    upload(bob, [(prompts[1], RIGHT), (prompts[2], RIGHT)])
    upload(alice, [(prompts[2], WRONG)])
    assert stored() == true()
    retire_prompt_set(prompt_set=prompt_set)
    assert stored() == true()
    assert counters.read([counters.SAMPLES, counters.CONTRIBUTORS]) == {
        counters.SAMPLES: 5,
        counters.CONTRIBUTORS: 2,
    }
    assert counters.read(counters.CLOSED_SAMPLES.values()) == {
        **dict.fromkeys(counters.CLOSED_SAMPLES.values(), 0),
        counters.closed_samples("verified"): 3,
        counters.closed_samples("rejected"): 2,
    }
    assert counters.recompute() == {}


# --- /stats -------------------------------------------------------------------------------


def grow(n: int) -> None:
    for _ in range(n):
        sample_on_new_prompt()


@pytest.mark.django_db
def test_stats_read_counters_in_three_queries_whatever_the_table_sizes():
    counts = []
    for n in (1, 30):
        grow(n)
        close_prompts(prompt_ids=Prompt.objects.values_list("pk", flat=True)[:2])
        with CaptureQueriesContext(connection) as queries:
            selectors._compute_stats()
        sql = [q["sql"] for q in queries.captured_queries]
        counts.append(len(sql))
        # Nothing counts samples, prompts or slots: the sets, the counters, the live leases.
        for statement in sql:
            tables = statement.split(" FROM ", 1)[1].split()[0].strip('"')
            assert tables in {"scoring_promptset", "scoring_counter", "contributors_lease"}
            assert "scoring_sample" not in statement and "contributors_slot" not in statement
    assert counts == [3, 3]


@pytest.mark.django_db
def test_stats_say_what_the_counters_say_within_the_disclosure_rule(user):
    active, retired = PromptSetFactory(), PromptSetFactory()
    PromptFactory.create_batch(3, prompt_set=active)
    PromptFactory.create_batch(2, prompt_set=retired)
    retire_prompt_set(prompt_set=retired)
    counters.add({counters.SAMPLES: 7, counters.CONTRIBUTORS: 2, counters.SLOTS_TARGET: 9})
    counters.add({counters.SLOTS_FILLED: 4, counters.closed_samples("verified"): 2})
    counters.add({counters.closed_samples("rejected"): 1})
    stats = selectors._compute_stats()
    assert stats == {
        "prompt_sets": 1,
        "prompts": 3,
        "samples": 7,
        "samples_by_status": {
            "awaiting_disclosure": 4,
            "received": 0,
            "scoring": 0,
            "verified": 2,
            "rejected": 1,
            "error": 0,
        },
        "contributors": 2,
        "live_leases": 0,
        "slots": {"target": 9, "filled": 4},
    }


@pytest.mark.django_db
def test_stats_are_answered_when_the_cache_is_down(monkeypatch, caplog):
    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(selectors.cache, "get_or_set", down)
    counters.add({counters.SAMPLES: 3})
    assert selectors.public_stats()["samples"] == 3
    assert "public stats computed without the cache (ConnectionError" in caplog.text


# --- a close and a status change at the same time (PostgreSQL's row locks) -------------------


def _wait_until_blocked(timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            # pg_locks, not pg_stat_activity: the latter is a snapshot fixed for the rest of
            # the transaction this runs in.
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the other transaction never waited for ours")


def _in_thread(target: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target())
        except BaseException as exc:  # reported by the test
            out.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_close_waits_for_a_finish_in_flight_and_counts_its_new_status():
    sample = sample_on_new_prompt()
    held = pipeline.claim(sample_id=sample.pk, claim_key="task-1")
    assert held is not None
    with transaction.atomic():
        assert pipeline._finish(held, SampleStatus.VERIFIED, "") is True
        # The prompt was open: no move counted. The close must not count "scoring".
        thread, out = _in_thread(lambda: close_prompts(prompt_ids=[sample.prompt_id]))
        _wait_until_blocked()
    thread.join(30)
    assert out == [1]
    assert counters.read(counters.CLOSED_SAMPLES.values()) == {
        **{name: 0 for name in counters.CLOSED_SAMPLES.values()},
        counters.closed_samples("verified"): 1,
    }
    assert_kept()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_finish_waits_for_a_close_in_flight_and_moves_what_it_counted():
    sample = sample_on_new_prompt()
    held = pipeline.claim(sample_id=sample.pk, claim_key="task-1")
    assert held is not None
    with transaction.atomic():
        assert close_prompts(prompt_ids=[sample.prompt_id]) == 1  # counts it as "scoring"
        thread, out = _in_thread(lambda: pipeline._finish(held, SampleStatus.REJECTED, "x"))
        _wait_until_blocked()
    thread.join(30)
    assert out == [True]
    assert counters.read(counters.CLOSED_SAMPLES.values()) == {
        **{name: 0 for name in counters.CLOSED_SAMPLES.values()},
        counters.closed_samples("rejected"): 1,
    }
    assert_kept()


@pytest.mark.django_db
def test_prompt_sets_of_the_stats_are_the_active_ones():
    PromptSetFactory(is_active=False)
    PromptSetFactory()
    assert (
        selectors._compute_stats()["prompt_sets"]
        == PromptSet.objects.filter(is_active=True).count()
        == 1
    )


@pytest.mark.django_db
def test_a_maintainers_requeue_moves_the_counters_and_starts_attempts_over():
    errored = sample_on_new_prompt(status=SampleStatus.ERROR, attempts=5)
    held = sample_on_new_prompt(status=SampleStatus.VERIFIED, quarantined=True)
    verified = sample_on_new_prompt(status=SampleStatus.VERIFIED)
    close_prompts(prompt_ids=Sample.objects.values_list("prompt_id", flat=True))
    ids = [errored.pk, held.pk, verified.pk]
    # "Score again": samples in error only (not the verified one, not the quarantined one).
    assert pipeline.requeue(sample_ids=ids, only_status=SampleStatus.ERROR) == [errored.pk]
    # "Release from quarantine": the quarantined one only, released.
    assert pipeline.requeue(sample_ids=ids, release=True) == [held.pk]
    rows = dict(Sample.objects.values_list("pk", "status"))
    assert rows == {
        errored.pk: SampleStatus.RECEIVED,
        held.pk: SampleStatus.RECEIVED,
        verified.pk: SampleStatus.VERIFIED,
    }
    assert Sample.objects.get(pk=errored.pk).attempts == 0
    assert not Sample.objects.get(pk=held.pk).quarantined
    assert counters.read(counters.CLOSED_SAMPLES.values()) == {
        **dict.fromkeys(counters.CLOSED_SAMPLES.values(), 0),
        counters.closed_samples("received"): 2,
        counters.closed_samples("verified"): 1,
    }
    assert_kept()

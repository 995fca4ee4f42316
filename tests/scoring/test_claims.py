"""Failure paths of scoring: claims, attempts, poison, retries (eager Celery: a task's retry
runs at once, in this process, with the same task id, as a worker's retry would later)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError
from django.utils import timezone

from scoring import pipeline
from scoring.models import Sample, SampleStatus, Verdict
from scoring.tasks import score_samples, sweep_stuck_samples
from scoring.verifiers.base import Outcome, Status
from tests.factories import PromptSetFactory
from tests.scoring.test_pipeline import make_sample

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _eager_retries() -> Iterator[None]:
    # With eager exceptions propagating (the suite's default), an eager task's retry is raised
    # to the caller instead of run; here it runs, as a worker would run it, and a failure still
    # comes out of `.get()`.
    conf = score_samples.app.conf
    saved = conf.task_eager_propagates
    conf.task_eager_propagates = False
    yield
    conf.task_eager_propagates = saved


class Probe:
    """A stand-in for the math verifier that does what a test tells it, per sample, and
    records every call (by completion, which names the sample)."""

    name: ClassVar[str] = "math"
    version: ClassVar[int] = 99

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.plan: dict[str, list[Any]] = {}  # completion -> what each call does, in turn

    def verify(self, candidate: Any, gold: Any, config: Any) -> Outcome:
        self.calls.append(candidate.completion)
        steps = self.plan.get(candidate.completion) or []
        step = steps.pop(0) if len(steps) > 1 else (steps[0] if steps else Status.PASS)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            step = step()
        return Outcome(step, 1.0 if step == Status.PASS else 0.0)


@pytest.fixture
def probe(monkeypatch) -> Probe:
    probe = Probe()
    monkeypatch.setattr("scoring.verifiers.verifiers_for", lambda domain, config: [probe])
    return probe


@pytest.fixture
def cap(settings) -> int:
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_SCORING_ATTEMPTS": 3}
    return 3


def row(sample: Sample) -> dict[str, Any]:
    return Sample.objects.values(
        "status", "status_reason", "attempts", "claim_key", "next_attempt_at"
    ).get(pk=sample.pk)


def run_task(ids: list[int], task_id: str, rescore: bool = False) -> Any:
    return score_samples.apply(args=[ids, rescore], task_id=task_id).get()


# --- claims --------------------------------------------------------------------------------


def test_a_claim_counts_the_attempt_and_names_its_holder():
    sample = make_sample()
    held = pipeline.claim(sample_id=sample.pk, claim_key="task-a")
    assert held == pipeline.Claim(sample_id=sample.pk, key="task-a", attempt=1)
    assert row(sample) == {
        "status": SampleStatus.SCORING,
        "status_reason": "",
        "attempts": 1,
        "claim_key": "task-a",
        "next_attempt_at": None,
    }


def test_a_duplicate_message_with_another_task_id_does_not_run_again(probe):
    sample = make_sample(completion="a")
    assert pipeline.claim(sample_id=sample.pk, claim_key="task-a") is not None
    # Another message for the same sample (a second upload hook, a sweep of a lost message).
    assert run_task([sample.pk], "task-b") == 0
    assert probe.calls == []
    assert not Verdict.objects.filter(sample=sample).exists()
    assert row(sample)["status"] == SampleStatus.SCORING
    assert (row(sample)["attempts"], row(sample)["claim_key"]) == (1, "task-a")


def test_a_redelivered_message_reclaims_its_own_sample_at_once(probe):
    sample = make_sample(completion="a")
    # The first delivery claimed the sample, then its worker process died.
    assert pipeline.claim(sample_id=sample.pk, claim_key="task-a") is not None
    assert run_task([sample.pk], "task-a") == 1
    assert probe.calls == ["a"]
    assert row(sample) == {
        "status": SampleStatus.VERIFIED,
        "status_reason": "",
        "attempts": 2,
        "claim_key": "task-a",
        "next_attempt_at": None,
    }


def test_the_soft_time_limit_propagates_and_the_task_retries_from_that_sample(probe):
    a, b, c = (make_sample(completion=name) for name in "abc")
    probe.plan["b"] = [SoftTimeLimitExceeded(), Status.PASS]
    # The eager result is the retry's: it judged b and c.
    assert run_task([a.pk, b.pk, c.pk], "task-soft") == 2
    # a was judged once, b twice (cut short, then re-claimed at once by the retry), c once,
    # after b: the retry went on with the rest of the chunk, not from its start.
    assert probe.calls == ["a", "b", "b", "c"]
    assert [(row(s)["status"], row(s)["attempts"], row(s)["claim_key"]) for s in (a, b, c)] == [
        (SampleStatus.VERIFIED, 1, "task-soft"),
        (SampleStatus.VERIFIED, 2, "task-soft"),
        (SampleStatus.VERIFIED, 1, "task-soft"),
    ]
    assert Verdict.objects.filter(sample=b).count() == 1


def test_score_sample_never_swallows_the_soft_time_limit(probe):
    sample = make_sample(completion="a")
    probe.plan["a"] = [SoftTimeLimitExceeded()]
    with pytest.raises(SoftTimeLimitExceeded):
        pipeline.score_sample(sample_id=sample.pk, claim_key="task-a")
    # No verdict, no settling: the sample waits, claimed, for the task's retry.
    assert not Verdict.objects.filter(sample=sample).exists()
    assert row(sample) == {
        "status": SampleStatus.SCORING,
        "status_reason": "",
        "attempts": 1,
        "claim_key": "task-a",
        "next_attempt_at": None,
    }


def test_a_retry_after_a_database_error_reclaims_its_own_sample_at_once(probe, monkeypatch):
    a, b = make_sample(completion="a"), make_sample(completion="b")
    real_gold_for = pipeline.gold_for
    failures = [OperationalError("server closed the connection unexpectedly")]

    def flaky_gold_for(sample: Sample) -> Any:
        if sample.pk == a.pk and failures:
            raise failures.pop()
        return real_gold_for(sample)

    monkeypatch.setattr(pipeline, "gold_for", flaky_gold_for)
    run_task([a.pk, b.pk], "task-db")
    assert failures == []
    assert probe.calls == ["a", "b"]
    # Re-claimed by the retry (attempt 2, same key), not left for the sweeper's 40 minutes.
    assert [(row(s)["status"], row(s)["attempts"], row(s)["claim_key"]) for s in (a, b)] == [
        (SampleStatus.VERIFIED, 2, "task-db"),
        (SampleStatus.VERIFIED, 1, "task-db"),
    ]


def test_an_outdated_claim_can_neither_write_verdicts_nor_settle(probe):
    sample = make_sample(completion="a")

    def taken_over() -> Status:
        # While the first holder judges, the sweeper resets its (stale) claim and another task
        # claims the sample.
        Sample.objects.filter(pk=sample.pk).update(
            status_changed_at=timezone.now() - timedelta(hours=2)
        )
        assert pipeline.stuck_sample_ids() == [sample.pk]
        assert pipeline.claim(sample_id=sample.pk, claim_key="task-new") == pipeline.Claim(
            sample_id=sample.pk, key="task-new", attempt=2
        )
        return Status.FAIL

    probe.plan["a"] = [taken_over]
    assert pipeline.score_sample(sample_id=sample.pk, claim_key="task-old") is False
    assert not Verdict.objects.filter(sample=sample).exists()
    assert (row(sample)["status"], row(sample)["claim_key"]) == (SampleStatus.SCORING, "task-new")

    old = pipeline.Claim(sample_id=sample.pk, key="task-old", attempt=1)
    assert pipeline._finish(old, SampleStatus.REJECTED, "math: fail") is False
    # The same holder's earlier attempt is outdated too.
    earlier = pipeline.Claim(sample_id=sample.pk, key="task-new", attempt=1)
    assert pipeline._finish(earlier, SampleStatus.REJECTED, "math: fail") is False
    assert row(sample)["status"] == SampleStatus.SCORING
    new = pipeline.Claim(sample_id=sample.pk, key="task-new", attempt=2)
    assert pipeline._finish(new, SampleStatus.VERIFIED, "") is True
    assert row(sample)["status"] == SampleStatus.VERIFIED


def test_a_quarantine_while_scoring_blocks_verdicts_and_settling(probe):
    sample = make_sample(completion="a")

    def quarantined() -> Status:
        Sample.objects.filter(pk=sample.pk).update(quarantined=True)
        return Status.PASS

    probe.plan["a"] = [quarantined]
    assert pipeline.score_sample(sample_id=sample.pk, claim_key="task-a") is False
    assert not Verdict.objects.filter(sample=sample).exists()
    assert row(sample)["status"] == SampleStatus.SCORING
    # Nor may the holder settle it afterwards, and the sweeper leaves it to the maintainer.
    held = pipeline.Claim(sample_id=sample.pk, key="task-a", attempt=1)
    assert pipeline._finish(held, SampleStatus.VERIFIED, "") is False
    Sample.objects.filter(pk=sample.pk).update(
        status_changed_at=timezone.now() - timedelta(hours=2)
    )
    assert pipeline.stuck_sample_ids() == []
    assert row(sample)["status"] == SampleStatus.SCORING


# --- attempts and poison -------------------------------------------------------------------


def test_a_sample_that_keeps_timing_out_ends_poison_and_the_chunk_goes_on(probe, cap):
    a, b = make_sample(completion="a"), make_sample(completion="b")
    probe.plan["a"] = [SoftTimeLimitExceeded()]
    run_task([a.pk, b.pk], "task-poison")
    assert probe.calls == ["a", "a", "a", "b"]
    assert row(a) == {
        "status": SampleStatus.ERROR,
        "status_reason": "poison: crashed or timed out its scoring task 3 times",
        "attempts": 3,
        "claim_key": "task-poison",
        "next_attempt_at": None,
    }
    assert not Verdict.objects.filter(sample=a).exists()
    assert (row(b)["status"], row(b)["attempts"]) == (SampleStatus.VERIFIED, 1)
    # Never retried on its own.
    assert sweep_stuck_samples.apply().get() == 0
    assert row(a)["status"] == SampleStatus.ERROR and probe.calls == ["a", "a", "a", "b"]


def test_a_redelivery_past_the_cap_marks_poison_without_judging(probe, cap):
    sample = make_sample(completion="a")
    # Three deliveries of task-crash claimed it and each killed its worker process.
    Sample.objects.filter(pk=sample.pk).update(
        status=SampleStatus.SCORING, attempts=3, claim_key="task-crash"
    )
    # A duplicate with another id neither judges nor poisons it: the claim is not its own.
    assert run_task([sample.pk], "task-other") == 0
    assert (row(sample)["status"], row(sample)["attempts"]) == (SampleStatus.SCORING, 3)
    assert run_task([sample.pk], "task-crash") == 0
    assert probe.calls == []
    assert row(sample)["status"] == SampleStatus.ERROR
    assert row(sample)["status_reason"] == "poison: crashed or timed out its scoring task 3 times"


def test_a_stale_sample_past_the_cap_is_poisoned_by_the_task_the_sweeper_queues(probe, cap):
    sample = make_sample(completion="a")
    Sample.objects.filter(pk=sample.pk).update(
        status=SampleStatus.SCORING,
        attempts=3,
        claim_key="task-dead",
        status_changed_at=timezone.now() - timedelta(hours=2),
    )
    assert sweep_stuck_samples.apply().get() == 1
    assert probe.calls == []
    assert row(sample)["status"] == SampleStatus.ERROR
    assert row(sample)["status_reason"].startswith("poison: ")
    assert row(sample)["attempts"] == 3


# --- transient and permanent errors --------------------------------------------------------


def test_a_transient_verifier_error_is_retried_by_the_sweeper_once_due(probe):
    sample = make_sample(completion="a")
    probe.plan["a"] = [Status.ERROR, Status.PASS]  # e.g. the sandbox was away
    before = timezone.now()
    run_task([sample.pk], "task-1")
    after = timezone.now()
    state = row(sample)
    assert (state["status"], state["status_reason"], state["attempts"]) == (
        SampleStatus.ERROR,
        "verifier error: math",
        1,
    )
    assert (
        before + timedelta(seconds=60) <= state["next_attempt_at"] <= after + timedelta(seconds=60)
    )
    # Not yet due: the sweeper leaves it.
    assert sweep_stuck_samples.apply().get() == 0
    assert probe.calls == ["a"] and row(sample)["status"] == SampleStatus.ERROR
    # Time passes.
    Sample.objects.filter(pk=sample.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert sweep_stuck_samples.apply().get() == 1
    assert probe.calls == ["a", "a"]
    state = row(sample)
    assert (state["status"], state["attempts"], state["next_attempt_at"]) == (
        SampleStatus.VERIFIED,
        2,
        None,
    )
    assert list(Verdict.objects.filter(sample=sample).values_list("status", flat=True)) == ["pass"]


def test_retry_back_off_doubles_and_stops_when_attempts_are_spent(settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_SCORING_ATTEMPTS": 9}
    assert [pipeline.retry_delay(attempt=k) for k in range(1, 10)] == [
        timedelta(seconds=60),
        timedelta(seconds=120),
        timedelta(seconds=240),
        timedelta(seconds=480),
        timedelta(seconds=960),
        timedelta(seconds=1920),
        timedelta(seconds=3600),
        timedelta(seconds=3600),
        None,
    ]


def test_transient_errors_are_not_retried_once_attempts_are_spent(probe, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_SCORING_ATTEMPTS": 2}
    sample = make_sample(completion="a")
    probe.plan["a"] = [Status.ERROR]
    run_task([sample.pk], "task-1")
    assert row(sample)["next_attempt_at"] is not None
    Sample.objects.filter(pk=sample.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert sweep_stuck_samples.apply().get() == 1
    assert row(sample) == {
        "status": SampleStatus.ERROR,
        "status_reason": "verifier error: math; gave up after 2 attempts",
        "attempts": 2,
        "claim_key": row(sample)["claim_key"],
        "next_attempt_at": None,
    }
    assert sweep_stuck_samples.apply().get() == 0
    assert probe.calls == ["a", "a"]


def test_permanent_errors_are_not_retried_automatically():
    unparsable = make_sample(gold="\\boxed{")
    typo = make_sample(prompt_set=PromptSetFactory(verifier_config={"enable": ["lang"]}))
    run_task([unparsable.pk, typo.pk], "task-1")
    assert row(unparsable)["status_reason"] == "could not be judged: math: skipped"
    assert row(typo)["status_reason"].startswith("verifier configuration: unknown verifiers")
    verdict_rows = list(Verdict.objects.order_by("pk").values_list("pk", "status"))
    # However long they wait.
    Sample.objects.update(status_changed_at=timezone.now() - timedelta(days=2))
    assert sweep_stuck_samples.apply().get() == 0
    for sample in (unparsable, typo):
        assert (row(sample)["status"], row(sample)["attempts"], row(sample)["next_attempt_at"]) == (
            SampleStatus.ERROR,
            1,
            None,
        )
    assert list(Verdict.objects.order_by("pk").values_list("pk", "status")) == verdict_rows


def test_a_bug_on_one_sample_errors_it_for_a_later_try_and_the_chunk_goes_on(probe, monkeypatch):
    a, b = make_sample(completion="a"), make_sample(completion="b")
    real_candidate_for = pipeline.candidate_for

    def buggy(sample: Sample) -> Any:
        if sample.pk == a.pk:
            raise KeyError("content")
        return real_candidate_for(sample)

    monkeypatch.setattr(pipeline, "candidate_for", buggy)
    assert run_task([a.pk, b.pk], "task-1") == 1
    assert row(a)["status"] == SampleStatus.ERROR
    assert row(a)["status_reason"] == "scoring failed: KeyError"
    assert row(a)["next_attempt_at"] is not None
    assert row(b)["status"] == SampleStatus.VERIFIED
    assert probe.calls == ["b"]


# --- rescore -------------------------------------------------------------------------------


def test_rescore_starts_attempts_over_but_never_twice_within_one_task(probe, cap):
    poisoned = make_sample(completion="a")
    Sample.objects.filter(pk=poisoned.pk).update(
        status=SampleStatus.ERROR,
        status_reason="poison: crashed or timed out its scoring task 3 times",
        attempts=3,
        claim_key="task-old",
    )
    assert run_task([poisoned.pk], "task-rescore", rescore=True) == 1
    assert (row(poisoned)["status"], row(poisoned)["attempts"]) == (SampleStatus.VERIFIED, 1)
    # A retry or redelivery of that same rescore task does not judge it again.
    assert run_task([poisoned.pk], "task-rescore", rescore=True) == 0
    assert probe.calls == ["a"]
    # Nor does a plain (non-rescore) message judge a settled sample.
    assert run_task([poisoned.pk], "task-plain") == 0
    assert probe.calls == ["a"]


# --- admin ---------------------------------------------------------------------------------


def test_the_admin_lists_attempts_and_reasons_and_filters_poison(admin_client, probe):
    poisoned = make_sample(completion="a")
    fine = make_sample(completion="b")
    Sample.objects.filter(pk=poisoned.pk).update(
        status=SampleStatus.ERROR,
        status_reason="poison: crashed or timed out its scoring task 5 times",
        attempts=5,
    )
    Sample.objects.filter(pk=fine.pk).update(status=SampleStatus.VERIFIED, attempts=1)
    page = admin_client.get("/admin/scoring/sample/?trouble=poison").content.decode()
    assert "poison: crashed or timed out its scoring task 5 times" in page
    assert f'value="{poisoned.pk}"' in page
    assert f'value="{fine.pk}"' not in page
    assert "column-attempts" in page

    response = admin_client.post(
        "/admin/scoring/sample/",
        {"action": "score_again", "_selected_action": [poisoned.pk, fine.pk]},
    )
    assert response.status_code == 302
    # Queued (eagerly judged here) with its attempts started over; the verified one untouched.
    assert (row(poisoned)["status"], row(poisoned)["attempts"]) == (SampleStatus.VERIFIED, 1)
    assert (row(fine)["status"], row(fine)["attempts"]) == (SampleStatus.VERIFIED, 1)
    assert probe.calls == ["a"]

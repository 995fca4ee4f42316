"""What judging one sample costs the database: a constant number of queries whatever the
number of verifiers (one upsert for all verdicts), and two writes of the sample row (the claim
and the finish)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scoring import pipeline
from scoring.models import Sample, SampleStatus, Verdict
from scoring.services import close_prompts
from scoring.verifiers.base import Outcome, Status
from tests.scoring.test_pipeline import make_sample

pytestmark = pytest.mark.django_db

# Claim (lock and read the sample with prompt, set and gold; UPDATE; is the prompt closed),
# the verdicts to reuse, the finish (UPDATE; upsert; is the prompt closed), and the
# savepoints of the two transactions (the test runs inside one). A closed prompt adds one
# counter upsert to each status change.
# +1: the per (prompt, model) stats upsert at finish (scoring/stats.py); +1: for a closed
# prompt, the set progress upsert (scoring/progress.py).
MAX_QUERIES = 15


class Fake:
    def __init__(self, name: str, plan: list[Any] | None = None) -> None:
        self.name, self.version, self.calls = name, 1, 0
        self.plan = plan or []

    def verify(self, candidate: Any, gold: Any, config: Any) -> Outcome:
        self.calls += 1
        step = self.plan.pop(0) if self.plan else Status.PASS
        if isinstance(step, BaseException):
            raise step
        return Outcome(step, 1.0)


def use(monkeypatch: pytest.MonkeyPatch, verifiers: list[Fake]) -> None:
    monkeypatch.setattr("scoring.verifiers.verifiers_for", lambda domain, config: verifiers)


def score(sample: Sample, **kwargs: Any) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        assert pipeline.score_sample(sample_id=sample.pk, **kwargs) is True
    return [q["sql"] for q in queries.captured_queries]


def table_writes(sql: list[str], table: str) -> list[str]:
    pattern = re.compile(rf'^(UPDATE|INSERT INTO) "?{table}"?\s', re.IGNORECASE)
    return [s.split()[0].upper() for s in sql if pattern.match(s)]


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_scoring_costs_the_same_queries_for_one_verifier_or_twenty(monkeypatch, closed):
    counts = {}
    for n in (1, 20):
        use(monkeypatch, [Fake(f"v{k}") for k in range(n)])
        sample = make_sample(completion=f"n={n}")
        if closed:
            close_prompts(prompt_ids=[sample.prompt_id])
        sql = score(sample)
        counts[n] = len(sql)
        assert Verdict.objects.filter(sample=sample, status="pass").count() == n
        assert Sample.objects.get(pk=sample.pk).status == SampleStatus.VERIFIED
        # The sample row is written twice (claim, finish); the verdicts in one statement.
        assert table_writes(sql, "scoring_sample") == ["UPDATE", "UPDATE"]
        assert table_writes(sql, "scoring_verdict") == ["INSERT"]
    assert counts[1] == counts[20] <= MAX_QUERIES


def test_the_query_budget_holds(monkeypatch, django_assert_max_num_queries):
    use(monkeypatch, [Fake(f"v{k}") for k in range(12)])
    sample = make_sample()
    with django_assert_max_num_queries(MAX_QUERIES):
        assert pipeline.score_sample(sample_id=sample.pk) is True


def test_a_rescore_reuses_current_verdicts_and_writes_only_the_new_ones(monkeypatch):
    old = [Fake(f"v{k}") for k in range(5)]
    use(monkeypatch, old)
    sample = make_sample()
    score(sample)
    kept = dict(Verdict.objects.filter(sample=sample).values_list("verifier", "pk"))
    newer = Fake("v4")
    newer.version = 2
    use(monkeypatch, [*old[:4], newer])
    sql = score(sample, rescore=True)
    assert [v.calls for v in old] == [1, 1, 1, 1, 1] and newer.calls == 1
    assert table_writes(sql, "scoring_verdict") == ["INSERT"]
    after = Verdict.objects.filter(sample=sample)
    assert dict(after.filter(version=1).values_list("verifier", "pk")) == kept
    assert list(after.filter(version=2).values_list("verifier", flat=True)) == ["v4"]


def test_a_soft_time_limit_keeps_the_verdicts_judged_before_it(monkeypatch):
    first, slow, last = Fake("first"), Fake("slow", [SoftTimeLimitExceeded()]), Fake("last")
    use(monkeypatch, [first, slow, last])
    sample = make_sample()
    with pytest.raises(SoftTimeLimitExceeded):
        pipeline.score_sample(sample_id=sample.pk, claim_key="task-1")
    # Kept for the retry; the sample is still held, not settled.
    assert list(Verdict.objects.filter(sample=sample).values_list("verifier", flat=True)) == [
        "first"
    ]
    assert Sample.objects.get(pk=sample.pk).status == SampleStatus.SCORING
    # The retry (same task id) goes on from the verifier that was cut short.
    assert pipeline.score_sample(sample_id=sample.pk, claim_key="task-1") is True
    assert (first.calls, slow.calls, last.calls) == (1, 2, 1)
    assert dict(Verdict.objects.filter(sample=sample).values_list("verifier", "status")) == {
        "first": "pass",
        "slow": "pass",
        "last": "pass",
    }


def test_an_outdated_holder_keeps_nothing_when_cut_short(monkeypatch):
    sample = make_sample()

    def taken_over() -> Status:
        Sample.objects.filter(pk=sample.pk).update(claim_key="task-new", attempts=2)
        raise SoftTimeLimitExceeded()

    class TakenOver(Fake):
        def verify(self, candidate: Any, gold: Any, config: Any) -> Outcome:
            taken_over()
            raise AssertionError("unreachable")

    use(monkeypatch, [Fake("first"), TakenOver("second")])
    with pytest.raises(SoftTimeLimitExceeded):
        pipeline.score_sample(sample_id=sample.pk, claim_key="task-old")
    assert not Verdict.objects.filter(sample=sample).exists()

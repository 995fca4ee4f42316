"""The scoring pipeline, called directly (the e2e tests run it through a real worker)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any, ClassVar

import pytest
from django.core.management import call_command
from django.utils import timezone

from scoring import pipeline
from scoring.models import PromptGold, Sample, SampleStatus, Verdict
from scoring.verifiers import REGISTRY
from scoring.verifiers.base import Outcome, Status
from tests.factories import PromptFactory, PromptSetFactory, UserFactory

pytestmark = pytest.mark.django_db

GOOD = (
    "<think>We need six times seven. Six groups of seven make forty-two, and checking with "
    "seven groups of six gives the same product, so the result is 42.</think> "
    "So the answer is \\boxed{42}."
)


def make_sample(*, completion: str = GOOD, gold: str = "42", **fields: Any) -> Sample:
    prompt = PromptFactory(
        prompt_set=fields.pop("prompt_set", None) or PromptSetFactory(),
        messages=[
            {
                "role": "user",
                "content": "Please compute six times seven, and explain how you got it.",
            }
        ],
        gold=gold,
    )
    return Sample.objects.create(
        prompt=prompt,
        contributor=UserFactory(),
        model="m",
        temperature=0.6,
        completion=completion,
        finish_reason=fields.pop("finish_reason", "stop"),
        **fields,
    )


def verdicts(sample: Sample) -> dict[str, str]:
    return dict(Verdict.objects.filter(sample=sample).values_list("verifier", "status"))


def test_a_right_answer_is_verified_with_a_verdict_per_verifier():
    sample = make_sample()
    assert pipeline.score_sample(sample_id=sample.pk) is True
    sample.refresh_from_db()
    assert sample.status == SampleStatus.VERIFIED and sample.status_reason == ""
    assert verdicts(sample) == {
        "format": "pass",
        "math": "pass",
        "language": "pass",
        "repetition": "pass",
        "truncation": "pass",
    }
    assert set(Verdict.objects.filter(sample=sample).values_list("verifier", "version")) == {
        (name, REGISTRY[name].version) for name in verdicts(sample)
    }


def test_a_wrong_answer_is_rejected_with_a_reason_that_hides_the_gold():
    sample = make_sample(completion="<think>6 times 7 is 41.</think> \\boxed{41}", gold="42")
    pipeline.score_sample(sample_id=sample.pk)
    sample.refresh_from_db()
    assert sample.status == SampleStatus.REJECTED
    assert sample.status_reason == "math: fail"
    assert "42" not in sample.status_reason


def test_truncated_generation_is_rejected():
    sample = make_sample(completion="", reasoning="6 times 7 is", finish_reason="length")
    pipeline.score_sample(sample_id=sample.pk)
    sample.refresh_from_db()
    assert sample.status == SampleStatus.REJECTED
    assert "truncation: fail" in sample.status_reason


def test_unparsable_gold_is_never_a_pass():
    sample = make_sample(gold="\\boxed{")
    pipeline.score_sample(sample_id=sample.pk)
    sample.refresh_from_db()
    assert verdicts(sample)["math"] == "skipped"
    assert sample.status == SampleStatus.ERROR
    assert sample.status_reason == "could not be judged: math: skipped"


def test_a_crashing_verifier_makes_an_error_never_a_pass(monkeypatch):
    class Broken:
        name: ClassVar[str] = "math"
        version: ClassVar[int] = 99

        def verify(self, candidate: Any, gold: Any, config: Any) -> Outcome:
            raise RuntimeError("boom")

    monkeypatch.setattr("scoring.verifiers.verifiers_for", lambda domain, config: [Broken()])
    sample = make_sample()
    pipeline.score_sample(sample_id=sample.pk)
    sample.refresh_from_db()
    assert sample.status == SampleStatus.ERROR
    assert Verdict.objects.get(sample=sample).details == {"error": "RuntimeError"}


def test_scoring_twice_keeps_one_verdict_per_verifier_and_version():
    sample = make_sample()
    pipeline.score_sample(sample_id=sample.pk)
    first = list(Verdict.objects.filter(sample=sample).order_by("pk").values_list("pk", "status"))
    # A redelivered task: the sample is settled, so the claim fails and nothing changes.
    assert pipeline.score_sample(sample_id=sample.pk) is False
    # A duplicate message while another task holds the sample: not claimed, not run twice.
    Sample.objects.filter(pk=sample.pk).update(
        status=SampleStatus.SCORING, status_changed_at=timezone.now()
    )
    assert pipeline.score_sample(sample_id=sample.pk) is False
    # A task that died after the claim: once stale, the sample is claimed again, and the
    # verdicts it already has are reused.
    Sample.objects.filter(pk=sample.pk).update(
        status_changed_at=timezone.now() - timedelta(hours=2)
    )
    assert pipeline.score_sample(sample_id=sample.pk) is True
    assert (
        list(Verdict.objects.filter(sample=sample).order_by("pk").values_list("pk", "status"))
        == first
    )


def test_quarantined_samples_are_not_scored():
    sample = make_sample(quarantined=True)
    assert pipeline.score_sample(sample_id=sample.pk) is False
    assert Verdict.objects.count() == 0


def test_sweeper_finds_samples_stuck_before_a_verdict_and_resets_their_clock(settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "SWEEP_AFTER_S": 60}
    old = timezone.now() - timedelta(minutes=5)
    stuck_received = make_sample()
    stuck_scoring = make_sample(status=SampleStatus.SCORING)
    fresh = make_sample()
    done = make_sample(status=SampleStatus.VERIFIED)
    Sample.objects.exclude(pk=fresh.pk).update(status_changed_at=old)
    assert pipeline.stuck_sample_ids() == [stuck_received.pk, stuck_scoring.pk]
    assert pipeline.stuck_sample_ids() == []  # clock reset: the next sweep leaves them alone
    # Back to `received`, so the task the sweeper queues can claim them.
    assert Sample.objects.get(pk=stuck_scoring.pk).status == SampleStatus.RECEIVED
    held = pipeline.claim(sample_id=stuck_scoring.pk, claim_key="task-after-sweep")
    assert held == pipeline.Claim(sample_id=stuck_scoring.pk, key="task-after-sweep", attempt=1)
    assert Sample.objects.get(pk=done.pk).status == SampleStatus.VERIFIED


def test_rescore_rejudges_only_what_a_new_version_changed(monkeypatch):
    prompt_set = PromptSetFactory(name="rescore-me")
    sample = make_sample(prompt_set=prompt_set)
    pipeline.score_sample(sample_id=sample.pk)
    before = dict(Verdict.objects.filter(sample=sample).values_list("verifier", "pk"))

    old_version = REGISTRY["math"].version
    monkeypatch.setattr(type(REGISTRY["math"]), "version", old_version + 1)
    out = StringIO()
    call_command("rescore", "--set", "rescore-me", stdout=out)
    assert "rescore-me: 1 samples to judge again" in out.getvalue()
    after = Verdict.objects.filter(sample=sample)
    assert set(after.filter(verifier="math").values_list("version", flat=True)) == {
        old_version,
        old_version + 1,
    }
    unchanged = dict(after.exclude(verifier="math").values_list("verifier", "pk"))
    assert unchanged == {k: v for k, v in before.items() if k != "math"}
    assert Sample.objects.get(pk=sample.pk).status == SampleStatus.VERIFIED
    out = StringIO()
    call_command("rescore", "--set", "rescore-me", stdout=out)
    assert "rescore-me: 0 samples" in out.getvalue()


def test_code_samples_are_judged_in_the_sandbox():
    prompt_set = PromptSetFactory(domain="code")
    prompt = PromptFactory(prompt_set=prompt_set, gold="")
    PromptGold.objects.filter(prompt=prompt).update(
        tests={
            "test": "def check(candidate):\n    assert candidate(2) == 4\n",
            "entry_point": "double",
        }
    )
    good = Sample.objects.create(
        prompt=prompt,
        contributor=UserFactory(),
        model="m",
        temperature=0.6,
        finish_reason="stop",
        completion="<think>Times two.</think>\n```python\ndef double(x):\n    return 2 * x\n```",
    )
    bad = Sample.objects.create(
        prompt=prompt,
        contributor=good.contributor,
        model="m",
        temperature=0.6,
        finish_reason="stop",
        completion="<think>Add one.</think>\n```python\ndef double(x):\n    return x + 1\n```",
    )
    for sample in (good, bad):
        pipeline.score_sample(sample_id=sample.pk)
    assert Sample.objects.get(pk=good.pk).status == SampleStatus.VERIFIED
    assert Sample.objects.get(pk=bad.pk).status == SampleStatus.REJECTED
    assert Sample.objects.get(pk=bad.pk).status_reason == "code: fail"
    assert Verdict.objects.get(sample=bad, verifier="code").status == Status.FAIL


def test_error_verdicts_are_computed_again_not_reused(monkeypatch):
    sample = make_sample()
    pipeline.score_sample(sample_id=sample.pk)
    Verdict.objects.filter(sample=sample, verifier="math").update(status="error", details={})
    Sample.objects.filter(pk=sample.pk).update(status=SampleStatus.ERROR)
    out = StringIO()
    call_command("rescore", "--verifier", "math", stdout=out)
    assert "total: 1 queued" in out.getvalue()
    assert Verdict.objects.get(sample=sample, verifier="math").status == "pass"
    assert Sample.objects.get(pk=sample.pk).status == SampleStatus.VERIFIED


def test_a_bad_verifier_config_errors_the_sample_with_the_reason():
    prompt_set = PromptSetFactory(verifier_config={"enable": ["lang"]})
    sample = make_sample(prompt_set=prompt_set)
    assert pipeline.score_sample(sample_id=sample.pk) is True
    sample.refresh_from_db()
    assert sample.status == SampleStatus.ERROR
    assert sample.status_reason.startswith("verifier configuration: unknown verifiers ['lang']")


def test_prompt_set_validation_rejects_unknown_verifiers():
    from django.core.exceptions import ValidationError

    prompt_set = PromptSetFactory.build(verifier_config={"enable": ["lang"]})
    with pytest.raises(ValidationError, match="unknown verifiers"):
        prompt_set.full_clean()


@pytest.mark.django_db
def test_samples_that_run_code_go_to_the_sandbox_queue_whatever_their_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scoring import tasks

    sent: dict[str, list[int]] = {"verify": [], "sandbox": []}
    monkeypatch.setattr(
        tasks.score_samples, "apply_async", lambda args, **kw: sent["verify"].extend(args[0])
    )
    monkeypatch.setattr(
        tasks.score_code_samples,
        "apply_async",
        lambda args, **kw: sent["sandbox"].extend(args[0]),
    )
    plain = make_sample()
    code_set = PromptSetFactory(domain="code")
    with_code = PromptSetFactory(domain="general", verifier_config={"enable": ["code"]})
    typo = PromptSetFactory(domain="math", verifier_config={"enable": ["cdoe"]})
    code = make_sample(prompt_set=code_set)
    enabled = make_sample(prompt_set=with_code)
    broken = make_sample(prompt_set=typo)
    tasks.queue_scoring([plain.pk, code.pk, enabled.pk, broken.pk])
    assert sent == {"verify": [plain.pk, broken.pk], "sandbox": [code.pk, enabled.pk]}

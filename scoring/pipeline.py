"""Judging one sample: claim it, run the verifiers its prompt set calls for, record verdicts,
settle its status.

Safe to run twice, concurrently or after a crash: the claim is a conditional UPDATE, verdicts
are upserted by (sample, verifier, version) and an up-to-date verdict is reused, and the final
status is written only while the sample is still `scoring`.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from scoring.models import PromptGold, Sample, SampleStatus, Verdict, VerdictStatus
from scoring.verifiers.base import Candidate, Gold, Outcome, Status

logger = logging.getLogger(__name__)

# Errors of the database or the network, not of the sample: the task retries with back-off.
InfrastructureError = (OperationalError, InterfaceError)

OPEN_STATUSES = (SampleStatus.RECEIVED, SampleStatus.SCORING)
SETTLED_VERDICTS = (VerdictStatus.PASS, VerdictStatus.FAIL, VerdictStatus.SKIPPED)

# The verifiers that judge whether the answer is right. If one of them cannot judge, the
# sample cannot be verified.
CORRECTNESS_VERIFIERS = frozenset({"math", "code", "mcq", "string"})


def claim(*, sample_id: int, rescore: bool = False) -> bool:
    """Moves the sample to `scoring`, once: a conditional UPDATE, so of two tasks for the same
    sample only one goes on. A sample already `scoring` is claimed again only once it is stale
    (its task died with its worker): a duplicate message must not run the sandbox twice."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.THINKPOOL["SWEEP_AFTER_S"])
    claimable = Q(status=SampleStatus.RECEIVED) | Q(
        status=SampleStatus.SCORING, status_changed_at__lt=stale
    )
    if rescore:
        claimable |= Q(
            status__in=[SampleStatus.VERIFIED, SampleStatus.REJECTED, SampleStatus.ERROR]
        )
    return bool(
        Sample.objects.filter(claimable, pk=sample_id, quarantined=False).update(
            status=SampleStatus.SCORING, status_changed_at=now
        )
    )


def candidate_for(sample: Sample) -> Candidate:
    user_messages = [m for m in sample.prompt.messages if m.get("role") == "user"]
    return Candidate(
        completion=sample.completion,
        reasoning=sample.reasoning or None,
        finish_reason=sample.finish_reason,
        prompt_text=str(user_messages[-1]["content"]) if user_messages else "",
    )


def gold_for(sample: Sample) -> Gold:
    try:
        gold = sample.prompt.gold
    except PromptGold.DoesNotExist:
        return Gold()
    return Gold(answer=gold.answer or None, tests=gold.tests)


def _run(
    verifier: Any, candidate: Candidate, gold: Gold, config: dict[str, Any]
) -> tuple[Outcome, int]:
    started = time.perf_counter()
    try:
        outcome = verifier.verify(candidate, gold, config)
    except SoftTimeLimitExceeded:
        raise  # the task ran out of time: that is no verdict on the sample
    except Exception as exc:  # a broken verifier must never pass a sample
        logger.exception("verifier %s crashed", verifier.name)
        outcome = Outcome(Status.ERROR, 0.0, {"error": type(exc).__name__})
    return outcome, int((time.perf_counter() - started) * 1000)


def settle(verdicts: list[Verdict]) -> tuple[str, str]:
    """The sample's status from its verdicts, and a reason its contributor may read
    (verifier names and statuses only: details can hold the gold and stay server-side)."""
    by_status: dict[str, list[str]] = {}
    for verdict in verdicts:
        by_status.setdefault(verdict.status, []).append(verdict.verifier)
    if by_status.get(VerdictStatus.ERROR):
        return SampleStatus.ERROR, "verifier error: " + ", ".join(by_status[VerdictStatus.ERROR])
    failed = by_status.get(VerdictStatus.FAIL, []) + by_status.get(VerdictStatus.TIMEOUT, [])
    if failed:
        parts = [f"{v.verifier}: {v.status}" for v in verdicts if v.verifier in failed]
        return SampleStatus.REJECTED, "; ".join(parts)
    unjudged = [n for n in by_status.get(VerdictStatus.SKIPPED, []) if n in CORRECTNESS_VERIFIERS]
    if unjudged:
        # Correctness could not be judged (e.g. the reference does not parse): never a pass.
        # A skipped side check (language of a very short prompt, say) does not block.
        return SampleStatus.ERROR, "could not be judged: " + ", ".join(
            f"{name}: skipped" for name in unjudged
        )
    return SampleStatus.VERIFIED, ""


def score_sample(*, sample_id: int, rescore: bool = False) -> bool:
    """Judges one sample. With `rescore`, a sample already settled is judged again: verdicts
    at a verifier's current version are kept, older or missing ones are (re)computed."""
    if not claim(sample_id=sample_id, rescore=rescore):
        return False
    sample = Sample.objects.select_related("prompt__prompt_set").get(pk=sample_id)
    prompt_set = sample.prompt.prompt_set
    config = prompt_set.verifier_config or {}
    candidate, gold = candidate_for(sample), gold_for(sample)
    # A settled verdict at the verifier's current version is kept; an `error` or `timeout` is
    # computed again (the sandbox may have been missing, a worker overloaded).
    current = {
        (v.verifier, v.version): v
        for v in Verdict.objects.filter(sample_id=sample_id, status__in=SETTLED_VERDICTS)
    }
    # Imported here: the verifiers pull in math-verify and sympy, which the web process never needs.
    from scoring.verifiers import verifiers_for

    try:
        verifiers = verifiers_for(prompt_set.domain, config)
    except ValueError as exc:
        # A maintainer's typo in verifier_config: loud on the sample, not a crashed task.
        _finish(sample_id, SampleStatus.ERROR, f"verifier configuration: {exc}")
        return True
    verdicts: list[Verdict] = []
    for verifier in verifiers:
        existing = current.get((verifier.name, verifier.version))
        if existing is not None:
            verdicts.append(existing)
            continue
        outcome, duration_ms = _run(verifier, candidate, gold, config)
        verdict, _ = Verdict.objects.update_or_create(
            sample_id=sample_id,
            verifier=verifier.name,
            version=verifier.version,
            defaults={
                "status": str(outcome.status),
                "score": outcome.score,
                "details": outcome.details,
                "duration_ms": duration_ms,
            },
        )
        verdicts.append(verdict)
    _finish(sample_id, *settle(verdicts))
    return True


def _finish(sample_id: int, status: str, reason: str) -> None:
    # Only while still `scoring`: a maintainer's quarantine or a newer claim wins.
    Sample.objects.filter(pk=sample_id, status=SampleStatus.SCORING).update(
        status=status, status_reason=reason[:500], status_changed_at=timezone.now()
    )


def stuck_sample_ids(*, limit: int = 5000) -> list[int]:
    """Samples left before a verdict for too long: a lost message, or a task that died with
    its worker (SWEEP_AFTER_S is longer than any scoring task may run). They go back to
    `received` with a fresh clock, so the next task claims them and the next sweep leaves
    them alone while they wait in the queue."""
    cutoff = timezone.now() - timedelta(seconds=settings.THINKPOOL["SWEEP_AFTER_S"])
    stuck = Sample.objects.filter(
        status__in=OPEN_STATUSES, status_changed_at__lt=cutoff, quarantined=False
    )
    ids = list(stuck.order_by("pk").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    # Conditional on still being stuck: a task that claimed one meanwhile keeps it.
    stuck.filter(pk__in=ids).update(status=SampleStatus.RECEIVED, status_changed_at=timezone.now())
    return ids

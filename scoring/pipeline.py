"""Judging one sample: claim it, run the verifiers its prompt set calls for, record verdicts,
settle its status.

Safe to run twice, concurrently or after a crash:

* A claim is a conditional UPDATE that adds one to `Sample.attempts` and names its holder in
  `claim_key` (the Celery task id, which a retry and an acks_late redelivery keep). It takes a
  `received` sample, a `scoring` sample its own holder left behind (the retry after a soft time
  limit or a database error, the redelivery after a killed worker: at once, with no wait for the
  sweeper), or a `scoring` sample stale beyond the sweep window. A message with another task id
  leaves a fresh claim alone, so the sandbox never runs one sample twice side by side.
* The final status is a conditional UPDATE on the claim: still `scoring`, same attempt, same
  holder, not quarantined. An outdated claim settles nothing. The sample's new verdicts are
  written in the same transaction, in one upsert by (sample, verifier, version), behind that
  UPDATE's row lock: a verdict is written only while the claim still holds. An up-to-date
  verdict is reused. When the soft time limit cuts a sample short, the verdicts judged so far
  are kept (while the claim holds), so the retry goes on from the next verifier.
* A few queries per sample, however many verifiers: claim (lock and read the sample with its
  prompt, set and gold; UPDATE), the verdicts to reuse, and the finish (UPDATE, upsert). Each
  status change also reads whether the prompt is closed, after it holds the row: the public
  per-status counters count samples of closed prompts only (scoring/counters.py), and
  `close_prompts` locks a prompt's samples to count them, so the two never miss each other.
* Attempts are capped (THINKPOOL["MAX_SCORING_ATTEMPTS"]): a sample whose scoring crashed its
  worker or ran out of time that often ends `error` with a reason starting "poison".
* A verifier that could not judge for a passing reason (status `error`: sandbox unavailable, a
  crashed math worker) leaves the sample `error` with `next_attempt_at` set, exponential back-off;
  the sweeper queues it again then, while attempts remain. Errors that another try cannot mend
  (gold that does not parse, a typo in the verifier configuration) are not retried on their own:
  `manage.py rescore` is for those.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import CharField, F, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from scoring import attesting, counters, progress, stats
from scoring.models import PromptGold, Sample, SampleStatus, Verdict, VerdictStatus
from scoring.signals import disclosed_changed
from scoring.verifiers.base import Candidate, Gold, Outcome, Status

logger = logging.getLogger(__name__)

# Errors of the database or the network, not of the sample: the task retries with back-off.
InfrastructureError = (OperationalError, InterfaceError)

OPEN_STATUSES = (SampleStatus.RECEIVED, SampleStatus.SCORING)
SETTLED_STATUSES = (SampleStatus.VERIFIED, SampleStatus.REJECTED, SampleStatus.ERROR)
SETTLED_VERDICTS = (VerdictStatus.PASS, VerdictStatus.FAIL, VerdictStatus.SKIPPED)

# The verifiers that judge whether the answer is right. If one of them cannot judge, the
# sample cannot be verified.
CORRECTNESS_VERIFIERS = frozenset({"math", "code", "mcq", "string"})

# Back-off of a transient verifier error: 1, 2, 4, 8 ... minutes after the attempt, at most an
# hour. The sweeper (every minute) queues the sample again once its time has come.
RETRY_BASE_S = 60
RETRY_MAX_S = 3600

POISON_PREFIX = "poison: "


@dataclass(frozen=True)
class Claim:
    """Who holds a sample's scoring, and in which attempt."""

    sample_id: int
    key: str
    attempt: int

    def still_held(self) -> QuerySet[Sample]:
        """The sample, as long as this claim still holds it: every write of the claim is
        conditional on this, so a newer claim, the sweeper or a quarantine wins."""
        return Sample.objects.filter(
            pk=self.sample_id,
            status=SampleStatus.SCORING,
            attempts=self.attempt,
            claim_key=self.key,
            quarantined=False,
        )


def max_attempts() -> int:
    return int(settings.THINKPOOL["MAX_SCORING_ATTEMPTS"])


def claim(*, sample_id: int, claim_key: str, rescore: bool = False) -> Claim | None:
    """Moves the sample to `scoring` under `claim_key` and counts the attempt: a conditional
    UPDATE, so of two tasks for the same sample only one goes on.

    Claimable: a `received` sample; a `scoring` sample held by this same key (a retry or a
    redelivery of the task whose run was cut short); a `scoring` sample stale beyond the sweep
    window (its task died with its worker and no redelivery came). A `scoring` sample freshly
    held by another key is not: a duplicate message (the outbox's sweep may send a message
    twice) must not run the sandbox twice, and a settled sample is not claimed again. With
    `rescore`, a settled sample is claimed too, as a new judgement (its attempts start over),
    unless this same key settled it (a retry of a rescore judges nothing twice).

    An unfinished sample that has had its attempts is not claimed but ends `error`, "poison":
    a sample that crashes its worker every time would otherwise be redelivered for ever."""
    return _claim(sample_id=sample_id, claim_key=claim_key, rescore=rescore)[0]


def _claim(*, sample_id: int, claim_key: str, rescore: bool) -> tuple[Claim | None, Sample | None]:
    """`claim`, and the sample as the verifiers need it (prompt, set and gold loaded)."""
    now = timezone.now()
    cap = max_attempts()
    stale = now - timedelta(seconds=settings.THINKPOOL["SWEEP_AFTER_S"])
    unfinished = (
        Q(status=SampleStatus.RECEIVED)
        | Q(status=SampleStatus.SCORING, claim_key=claim_key)
        | Q(status=SampleStatus.SCORING, status_changed_at__lt=stale)
    )
    this = Sample.objects.filter(pk=sample_id, quarantined=False)
    claimed_fields = {
        "status": SampleStatus.SCORING,
        "status_changed_at": now,
        "claim_key": claim_key,
        "next_attempt_at": None,
    }
    with transaction.atomic():
        # Locked first (PostgreSQL; SQLite's IMMEDIATE transaction locks all): what the row
        # holds now is what the UPDATEs below see, so its status is the one they change (for
        # the counters) and its attempts plus one is the attempt they write. The same read
        # brings what the verifiers need.
        sample = (
            Sample.objects.select_for_update(of=("self",))
            .select_related("prompt__prompt_set", "prompt__gold")
            .filter(pk=sample_id, quarantined=False)
            .first()
        )
        if sample is None:
            return None, None
        before = sample.status
        attempt = sample.attempts + 1
        claimed = this.filter(unfinished, attempts__lt=cap).update(
            attempts=F("attempts") + 1, **claimed_fields
        )
        if not claimed and rescore:
            attempt = 1
            claimed = (
                this.filter(status__in=SETTLED_STATUSES)
                .exclude(claim_key=claim_key)
                .update(attempts=1, **claimed_fields)
            )
        if claimed:
            _count_moves([(sample_id, before, SampleStatus.SCORING)])
            return Claim(sample_id=sample_id, key=claim_key, attempt=attempt), sample
        # A maintainer's override (Sample.override) is the final status even here, with the
        # maintainer's reason kept.
        ended = sample.override or SampleStatus.ERROR
        poison_reason = Concat(
            Value(POISON_PREFIX + "crashed or timed out its scoring task "),
            Cast("attempts", output_field=CharField()),
            Value(" times"),
            output_field=CharField(),
        )
        poisoned = this.filter(unfinished, attempts__gte=cap, override=sample.override).update(
            status=ended,
            status_changed_at=now,
            claim_key=claim_key,
            next_attempt_at=None,
            **({} if sample.override else {"status_reason": poison_reason}),
        )
        if poisoned:
            _count_moves([(sample_id, before, ended)])
    if poisoned:
        logger.warning(
            "sample %s: its scoring was cut short (crash or time limit) in each of its %s "
            "attempts; marked poison",
            sample_id,
            cap,
        )
    return None, None


def _count_moves(moves: list[tuple[int, str, str]]) -> None:
    """Moves the public per-status counters of closed prompts' samples (scoring/counters.py)
    for samples that changed status, given as (id, old, new). Called in the transaction of
    the UPDATE that changed them, after it: the rows are locked by now, and this read (a fresh
    statement) sees a `close_prompts` that committed while the UPDATE waited for them. A close
    still in flight waits for these rows and counts their new status itself."""
    changed = [(pk, old, new) for pk, old, new in moves if old != new]
    if not changed:
        return
    # One read for all: the per (prompt, model) stats, whether the prompt is closed, and the
    # set's progress cell (scoring/progress.py).
    rows = Sample.objects.filter(pk__in=[pk for pk, _, _ in changed]).values_list(
        "pk",
        "prompt_id",
        "model",
        "prompt__closed_at",
        "prompt__prompt_set_id",
        "temperature",
        "replica",
    )
    keys, closed, cells, replicas = {}, set(), {}, set()
    for pk, prompt_id, model, closed_at, set_id, temperature, replica in rows:
        keys[pk] = (prompt_id, model)
        cells[pk] = (set_id, model, temperature)
        if replica:
            replicas.add(pk)
        if closed_at is not None:
            closed.add(pk)
    stats.record_moves(changed, keys=keys)
    deltas: dict[str, int] = {}
    for pk, old, new in changed:
        if pk in closed:
            deltas[counters.closed_samples(old)] = deltas.get(counters.closed_samples(old), 0) - 1
            deltas[counters.closed_samples(new)] = deltas.get(counters.closed_samples(new), 0) + 1
    counters.add(deltas)
    # Verified / rejected of closed prompts only: a verdict on an open one moves nothing.
    # (A spot check's replica is no progress.)
    progress.record_moves(
        (cells[pk], old, new) for pk, old, new in changed if pk in closed and pk not in replicas
    )
    if closed:
        disclosed_changed.send(sender=Sample, prompt_ids=sorted({keys[pk][0] for pk in closed}))


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


def score_sample(*, sample_id: int, claim_key: str | None = None, rescore: bool = False) -> bool:
    """Judges one sample; True when this call settled it. With `rescore`, a sample already
    settled is judged again: verdicts at a verifier's current version are kept, older or
    missing ones are (re)computed.

    `claim_key` names the holder (the Celery task id); without one, the call is a holder of its
    own. A soft time limit or a database error propagates: the task retries, and its retry
    re-claims the sample under the same key."""
    held, sample = _claim(
        sample_id=sample_id, claim_key=claim_key or f"call-{uuid.uuid4().hex}", rescore=rescore
    )
    if held is None or sample is None:
        return False
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
        # A maintainer's typo in verifier_config: loud on the sample, not a crashed task. Not
        # retried on its own: no later try mends it (fix the set, then `manage.py rescore`).
        return _finish(
            held, SampleStatus.ERROR, f"verifier configuration: {exc}", override=sample.override
        )
    verdicts: list[Verdict] = []
    fresh: list[Verdict] = []  # judged now: written with the finish
    try:
        for verifier in verifiers:
            existing = current.get((verifier.name, verifier.version))
            if existing is not None:
                verdicts.append(existing)
                continue
            outcome, duration_ms = _run(verifier, candidate, gold, config)
            verdict = Verdict(
                sample_id=sample_id,
                verifier=verifier.name,
                version=verifier.version,
                status=str(outcome.status),
                score=outcome.score,
                details=outcome.details,
                duration_ms=duration_ms,
            )
            verdicts.append(verdict)
            fresh.append(verdict)
    except SoftTimeLimitExceeded:
        # Each verifier fits in the soft time limit (scoring/checks.py), not always all of
        # them together: what was judged is kept for the retry, which goes on from here.
        _keep(held, fresh)
        raise
    status, reason = settle(verdicts)
    # A verifier that reported `error` could not judge for a reason of its own (sandbox
    # missing, math worker crashed): worth another try later. "Could not be judged" (gold
    # that does not parse) is not: the same inputs give the same answer.
    transient = any(v.status == VerdictStatus.ERROR for v in verdicts)
    settled = _finish(
        held, status, reason, transient=transient, verdicts=fresh, override=sample.override
    )
    if settled:
        # Model attestation (scoring/attesting.py): a sampled few, chosen and queued on
        # commit; evidence about the contributor, never part of the status settled above.
        attesting.on_scored(sample)
    return settled


def _keep(held: Claim, verdicts: list[Verdict]) -> None:
    """Writes verdicts judged before the task ran out of time, while the claim still holds
    (its row locked meanwhile). Never raises: the time limit is what must propagate."""
    if not verdicts:
        return
    try:
        with transaction.atomic():
            if list(held.still_held().select_for_update().values_list("pk", flat=True)):
                Verdict.objects.upsert(verdicts)
    except Exception:
        logger.exception(
            "sample %s: verdicts judged before the time limit are lost", held.sample_id
        )


def retry_delay(*, attempt: int) -> timedelta | None:
    """When a transient error after `attempt` is tried again; None once attempts are spent."""
    if attempt >= max_attempts():
        return None
    return timedelta(seconds=min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(attempt - 1, 0)))


def _finish(
    held: Claim,
    status: str,
    reason: str,
    *,
    transient: bool = False,
    verdicts: list[Verdict] | None = None,
    override: str = "",
) -> bool:
    """Settles the sample and writes its new `verdicts`, only while `held` still holds it: a
    newer claim, the sweeper's reset or a maintainer's quarantine wins, and then nothing is
    written. True when it did.

    `override`: the sample's Sample.override as claimed. A maintainer's decision is sticky:
    the sample keeps that status and the maintainer's reason, and is not retried; the
    verdicts are still written, as evidence. An override changed since the claim outdates it."""
    now = timezone.now()
    retry_at: datetime | None = None
    if override:
        status, transient = override, False
    if transient:
        delay = retry_delay(attempt=held.attempt)
        if delay is None:
            reason = f"{reason}; gave up after {held.attempt} attempts"
        else:
            retry_at = now + delay
    fields: dict[str, Any] = {} if override else {"status_reason": reason[:500]}
    with transaction.atomic():
        # The UPDATE locks the row until commit: a newer claim (an UPDATE of that row) waits
        # for the verdicts below, so an outdated holder never overwrites those of the claim
        # that came after it.
        settled = (
            held.still_held()
            .filter(override=override)
            .update(status=status, status_changed_at=now, next_attempt_at=retry_at, **fields)
        )
        if settled:
            Verdict.objects.upsert(verdicts or [])
            _count_moves([(held.sample_id, SampleStatus.SCORING, status)])
    if not settled:
        logger.info(
            "sample %s: claim %s (attempt %s) is outdated or quarantined; not settled",
            held.sample_id,
            held.key,
            held.attempt,
        )
    return bool(settled)


def give_up(*, sample_id: int, claim_key: str, error: BaseException) -> bool:
    """A bug of ours (not of a verifier: those become `error` verdicts) broke the judging of
    one sample: it ends `error` and is tried again with back-off, while attempts remain,
    instead of staying `scoring` until the sweeper finds it."""
    row = (
        Sample.objects.filter(
            pk=sample_id, status=SampleStatus.SCORING, claim_key=claim_key, quarantined=False
        )
        .values_list("attempts", "override")
        .first()
    )
    if row is None:
        return False
    attempt, override = row
    held = Claim(sample_id=sample_id, key=claim_key, attempt=attempt)
    return _finish(
        held,
        SampleStatus.ERROR,
        f"scoring failed: {type(error).__name__}",
        transient=True,
        override=override,
    )


def _move_back(candidates: QuerySet[Sample], ids: list[int], **fields: Any) -> list[int]:
    """Puts the `ids` that still match `candidates` back to `received` with `fields`; returns
    them. They are locked first, so the old statuses read are the ones changed (for the
    counters), and a task that claimed one meanwhile keeps it."""
    with transaction.atomic():
        rows = list(
            candidates.filter(pk__in=ids)
            .select_for_update()
            .order_by("pk")
            .values_list("pk", "status")
        )
        moved = [pk for pk, _ in rows]
        if moved:
            Sample.objects.filter(pk__in=moved).update(status=SampleStatus.RECEIVED, **fields)
            _count_moves([(pk, old, SampleStatus.RECEIVED) for pk, old in rows])
    return moved


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
    return _move_back(stuck, ids, status_changed_at=timezone.now())


def due_retry_ids(*, limit: int = 5000) -> list[int]:
    """Samples left `error` by a transient verifier error whose back-off has passed, with
    attempts left. They go back to `received` (attempts kept) for the task the sweeper queues;
    one that a rescore claimed meanwhile is left alone."""
    now = timezone.now()
    due = Sample.objects.filter(
        status=SampleStatus.ERROR,
        next_attempt_at__lte=now,
        attempts__lt=max_attempts(),
        quarantined=False,
    )
    ids = list(due.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    return _move_back(due, ids, status_changed_at=now, next_attempt_at=None)


def requeue(
    *, sample_ids: list[int], only_status: str | None = None, release: bool = False
) -> list[int]:
    """A maintainer's fresh start (the admin's "score again" and "release from quarantine"):
    the samples go back to `received` with their attempts starting over, the public counters
    moved with them. With `only_status`, only samples in that status; with `release`, only
    quarantined samples, which are released. Returns the ids moved: queue them with
    scoring.tasks.queue_scoring."""
    candidates = Sample.objects.filter(quarantined=release)
    if only_status is not None:
        candidates = candidates.filter(status=only_status)
    extra = {"quarantined": False} if release else {}
    return _move_back(
        candidates,
        list(sample_ids),
        status_changed_at=timezone.now(),
        attempts=0,
        next_attempt_at=None,
        **extra,
    )

"""Celery tasks for scoring. Each takes ids, fetches fresh rows, calls a service, and is safe
to run twice (the service claims work with a conditional UPDATE and upserts verdicts).

Failure paths of a scoring task, and where each sample of its chunk ends up:

* A verifier's own failure is an `error` verdict (pipeline._run), never a crashed task.
* The soft time limit, or a database error (pipeline.InfrastructureError), propagates out of
  the sample being judged: the task retries itself (same task id) with back-off, from that
  sample on. The retry re-claims that sample at once (same claim key) and goes on with the
  rest of the chunk; samples already settled are not judged again.
* A killed worker process (OOM killer, segfault, SIGKILL): `acks_late` and
  `reject_on_worker_lost` put the message back, and its redelivery (same task id) re-claims
  the sample the dead process held at once. Every claim counts an attempt; a sample that keeps
  killing its worker ends `error`, "poison", once THINKPOOL["MAX_SCORING_ATTEMPTS"] are spent.
* Anything else (a bug of ours on one sample) ends that sample `error`, retried later with
  back-off, and the rest of the chunk goes on.
* A lost message, or a worker killed where no redelivery comes (the whole worker on the
  filesystem broker, or before Redis's visibility timeout): the sweeper re-queues samples stuck
  beyond SWEEP_AFTER_S, which scoring/checks.py keeps longer than any task's time limit.

And before a task runs: a message that never reached the broker (it was down when the upload
committed, or the web process died first) leaves its samples without `Sample.queued_at`; the
same minute sweep queues them again after pipeline.UNQUEUED_AFTER_S, not after SWEEP_AFTER_S.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from django.utils import timezone

from scoring import pipeline
from scoring.models import Domain, PromptSet, Sample

logger = logging.getLogger(__name__)

# Uploads queue scoring in chunks of this many ids: one broker message per chunk keeps the
# broker out of the ingest hot path, while a chunk stays small enough to finish in seconds.
QUEUE_CHUNK = 64

# Publishing a chunk tries the broker twice at most, at once (the second try opens a fresh
# connection, which mends one that a broker restart closed): an upload's request must not
# wait on a broker that is away. Each try is bounded by the socket timeouts that
# thinkpool/celery.py sets. Samples not sent are found by the minute sweep.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}

# Retries of a chunk (soft time limit, database errors): exponential with full jitter, at most
# this long apart.
RETRY_BACKOFF_MAX_S = 300
RETRYABLE = (SoftTimeLimitExceeded, *pipeline.InfrastructureError)

_SCORING_TASK: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": 8,
}


@shared_task(
    name="scoring.score_samples",
    queue="verify",
    soft_time_limit=600,
    time_limit=660,
    **_SCORING_TASK,
)
def score_samples(self: Task, sample_ids: list[int], rescore: bool = False) -> int:
    return _score_all(self, sample_ids, rescore)


# Code runs in the sandbox: its own queue, so its workers can be few (bounded concurrency)
# and never hold up the cheap verifiers.
@shared_task(
    name="scoring.score_code_samples",
    queue="sandbox",
    soft_time_limit=1800,
    time_limit=1900,
    **_SCORING_TASK,
)
def score_code_samples(self: Task, sample_ids: list[int], rescore: bool = False) -> int:
    return _score_all(self, sample_ids, rescore)


# The scoring tasks, and which judges the samples of a domain (scoring/checks.py holds the
# verifiers of each domain to the soft time limit of its task).
SCORING_TASKS = (score_samples, score_code_samples)
SANDBOX_DOMAINS = frozenset({Domain.CODE})


def task_for(domain: str) -> Any:
    return score_code_samples if domain in SANDBOX_DOMAINS else score_samples


def runs_code(domain: str, config: Any) -> bool:
    """Whether a set's samples need the sandbox: its domain is code, or its verifier_config
    enables the code verifier (the sandbox never runs on the `verify` queue)."""
    if domain in SANDBOX_DOMAINS:
        return True
    from scoring.verifiers import verifiers_for

    try:
        return any(v.name == "code" for v in verifiers_for(domain, config or {}))
    except ValueError:
        return False  # a typo in the config: the pipeline marks the sample `error` at once


def _score_all(task: Task, sample_ids: list[int], rescore: bool) -> int:
    # The claim key is the task id: a retry (task.retry) and a redelivery after a lost worker
    # keep it, so they re-claim the sample the cut-short run left `scoring`; a duplicate
    # message has another id and leaves it alone. Called directly there is no id: a fresh key.
    key = task.request.id or f"call-{uuid.uuid4().hex}"
    judged = 0
    pending = list(sample_ids)  # this sample and those after it
    try:
        while pending:
            pk = pending[0]
            try:
                judged += pipeline.score_sample(sample_id=pk, claim_key=key, rescore=rescore)
            except RETRYABLE:
                raise  # never swallowed here: the whole task retries (below)
            except Exception as exc:
                # One sample's bug must not hold up the rest of the chunk.
                logger.exception("scoring sample %s failed", pk)
                pipeline.give_up(sample_id=pk, claim_key=key, error=exc)
            pending.pop(0)
    except RETRYABLE as exc:
        # Out of time, or the database is away: try again later from this sample on (those
        # before it are settled; with `rescore` they must not be judged again).
        logger.warning(
            "scoring task %s stopped at sample %s (%s); retrying",
            key,
            pending[0],
            type(exc).__name__,
        )
        countdown = get_exponential_backoff_interval(
            factor=1,
            retries=task.request.retries,
            maximum=RETRY_BACKOFF_MAX_S,
            full_jitter=True,
        )
        raise task.retry(args=(pending, rescore), exc=exc, countdown=countdown) from exc
    return judged


@shared_task(
    name="scoring.sweep_stuck_samples", queue="maintenance", acks_late=True, time_limit=300
)
def sweep_stuck_samples() -> int:
    """Every minute (beat): samples whose message never reached the broker (after a minute),
    samples stuck before a verdict (after SWEEP_AFTER_S), and samples whose transient error is
    due for another try are queued for scoring again."""
    # Unqueued first: it resets their clocks, so the stuck sweep does not take them twice.
    unqueued = pipeline.unqueued_sample_ids()
    stuck = pipeline.stuck_sample_ids()
    due = pipeline.due_retry_ids()
    queue_scoring(unqueued + stuck + due)
    if unqueued:
        logger.info("re-queued %d samples whose message never reached the broker", len(unqueued))
    if stuck:
        logger.info("re-queued %d samples stuck before a verdict", len(stuck))
    if due:
        logger.info("re-queued %d samples whose verifier error is due for another try", len(due))
    return len(unqueued) + len(stuck) + len(due)


def queue_scoring(sample_ids: Sequence[int], *, rescore: bool = False) -> int:
    """Sends ids to the scoring queues; returns how many were sent. Never raises: an upload
    calls it on commit, and its samples are stored whatever happens here.

    A chunk whose message reached the broker gets `queued_at` (one UPDATE per chunk). Once a
    publish fails, the rest of the call sends nothing more (the broker is away: no request
    waits on it twice) and every sample not sent is left without `queued_at`, so the minute
    sweep (pipeline.unqueued_sample_ids) queues them once the broker is back."""
    ids = list(dict.fromkeys(sample_ids))
    if not ids:
        return 0
    try:
        batches = _batches(ids)
    except Exception:
        logger.exception("could not read %d samples to queue; the sweeper will", len(ids))
        return 0
    sent = 0
    unsent: list[int] = []
    for task, chunk in batches:
        if unsent:
            unsent.extend(chunk)
            continue
        try:
            task.apply_async(args=(chunk, rescore), retry=True, retry_policy=PUBLISH_RETRY_POLICY)
        except Exception as exc:
            logger.error(
                "could not queue %d samples for scoring (%s: %s); those waiting for a verdict "
                "are queued again by the minute sweep",
                len(ids) - sent,
                type(exc).__name__,
                exc,
            )
            unsent.extend(chunk)
            continue
        sent += len(chunk)
        _mark_queued(chunk, timezone.now())
    if unsent:
        _mark_queued(unsent, None)
    return sent


def _batches(ids: list[int]) -> list[tuple[Any, list[int]]]:
    """(task, chunk of ids) in the order of `ids`: the sandbox's samples to its own queue."""
    rows = list(Sample.objects.filter(pk__in=ids).values_list("pk", "prompt__prompt_set_id"))
    sets = {
        pk: runs_code(domain, config)
        for pk, domain, config in PromptSet.objects.filter(
            pk__in={set_id for _, set_id in rows}
        ).values_list("pk", "domain", "verifier_config")
    }
    code_ids = {pk for pk, set_id in rows if sets[set_id]}
    known = {pk for pk, _ in rows}
    batches: list[tuple[Any, list[int]]] = []
    for task, wanted in (
        (score_samples, [pk for pk in ids if pk in known and pk not in code_ids]),
        (score_code_samples, [pk for pk in ids if pk in code_ids]),
    ):
        for start in range(0, len(wanted), QUEUE_CHUNK):
            batches.append((task, wanted[start : start + QUEUE_CHUNK]))
    return batches


def _mark_queued(ids: list[int], at: Any) -> None:
    try:
        Sample.objects.filter(pk__in=ids).update(queued_at=at)
    except Exception:
        # Sent but not marked: the minute sweep sends them again, and the second message
        # finds them claimed or settled (claims are keyed by task id).
        logger.exception("could not mark %d samples queued", len(ids))

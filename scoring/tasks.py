"""Celery tasks for scoring. Each takes ids, fetches fresh rows, calls a service, and is safe
to run twice (the service claims work with a conditional UPDATE and upserts verdicts)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import shared_task

from scoring import pipeline
from scoring.models import Domain, Sample

logger = logging.getLogger(__name__)

# Uploads queue scoring in chunks of this many ids: one broker message per chunk keeps the
# broker out of the ingest hot path, while a chunk stays small enough to finish in seconds.
QUEUE_CHUNK = 64

_SCORING_TASK: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": pipeline.InfrastructureError,
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "max_retries": 8,
}


@shared_task(
    name="scoring.score_samples",
    queue="verify",
    soft_time_limit=600,
    time_limit=660,
    **_SCORING_TASK,
)
def score_samples(sample_ids: list[int], rescore: bool = False) -> int:
    return _score_all(sample_ids, rescore)


# Code runs in the sandbox: its own queue, so its workers can be few (bounded concurrency)
# and never hold up the cheap verifiers.
@shared_task(
    name="scoring.score_code_samples",
    queue="sandbox",
    soft_time_limit=1800,
    time_limit=1900,
    **_SCORING_TASK,
)
def score_code_samples(sample_ids: list[int], rescore: bool = False) -> int:
    return _score_all(sample_ids, rescore)


def _score_all(sample_ids: list[int], rescore: bool) -> int:
    judged = 0
    for pk in sample_ids:
        try:
            judged += pipeline.score_sample(sample_id=pk, rescore=rescore)
        except pipeline.InfrastructureError:
            raise  # the task retries the chunk; samples already judged are skipped by the claim
        except Exception:
            # One sample's bug must not hold up the rest of the chunk; it stays `scoring`
            # and the sweeper tries it again later.
            logger.exception("scoring sample %s failed", pk)
    return judged


@shared_task(
    name="scoring.sweep_stuck_samples", queue="maintenance", acks_late=True, time_limit=300
)
def sweep_stuck_samples() -> int:
    ids = pipeline.stuck_sample_ids()
    queue_scoring(ids)
    if ids:
        logger.info("re-queued %d samples stuck before a verdict", len(ids))
    return len(ids)


def queue_scoring(sample_ids: Sequence[int], *, rescore: bool = False) -> None:
    """Sends ids to the scoring queues. Called on commit: if the broker is down the samples
    stay `received` and the sweeper queues them again, so nothing is lost."""
    if not sample_ids:
        return
    code_ids = set(
        Sample.objects.filter(
            pk__in=sample_ids, prompt__prompt_set__domain=Domain.CODE
        ).values_list("pk", flat=True)
    )
    for task, ids in (
        (score_samples, [pk for pk in sample_ids if pk not in code_ids]),
        (score_code_samples, [pk for pk in sample_ids if pk in code_ids]),
    ):
        for start in range(0, len(ids), QUEUE_CHUNK):
            chunk = ids[start : start + QUEUE_CHUNK]
            try:
                task.delay(chunk, rescore)
            except Exception:
                logger.exception(
                    "could not queue %d samples for scoring; the sweeper will", len(chunk)
                )

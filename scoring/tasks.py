"""Celery tasks for scoring. Each takes ids, fetches fresh rows, calls a service, and is safe
to run twice (the service claims work with a conditional UPDATE)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import shared_task

from scoring import pipeline

logger = logging.getLogger(__name__)

# Uploads queue scoring in chunks of this many ids: one broker message per chunk keeps the
# broker out of the ingest hot path, while a chunk stays small enough to finish in seconds.
QUEUE_CHUNK = 64


@shared_task(
    name="scoring.score_samples",
    queue="verify",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=600,
    time_limit=660,
    autoretry_for=pipeline.InfrastructureError,
    retry_backoff=True,
    max_retries=8,
)
def score_samples(sample_ids: list[int]) -> int:
    return sum(1 for sample_id in sample_ids if pipeline.score_sample(sample_id=sample_id))


@shared_task(
    name="scoring.sweep_stuck_samples", queue="maintenance", acks_late=True, time_limit=300
)
def sweep_stuck_samples() -> int:
    ids = pipeline.stuck_sample_ids()
    queue_scoring(ids)
    if ids:
        logger.info("re-queued %d samples stuck before a verdict", len(ids))
    return len(ids)


def queue_scoring(sample_ids: Sequence[int]) -> None:
    """Sends ids to the scoring queue. Called on commit: if the broker is down the samples
    stay `received` and the sweeper queues them again, so nothing is lost."""
    for start in range(0, len(sample_ids), QUEUE_CHUNK):
        chunk = list(sample_ids[start : start + QUEUE_CHUNK])
        try:
            score_samples.delay(chunk)
        except Exception:
            logger.exception("could not queue %d samples for scoring; the sweeper will", len(chunk))

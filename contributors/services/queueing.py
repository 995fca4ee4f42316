"""Queueing work on prompts after the current transaction commits: how credit, trust and spot
checks settle the prompts `scoring.signals.disclosed_changed` names (one place for the rule)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction

logger = logging.getLogger(__name__)

# One quick retry of a publish, as scoring's tasks do; then the sweep's job.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}


def prompts_on_commit(task_name: str, prompt_ids: Iterable[int], *, chunk: int, what: str) -> None:
    """Sends `contributors.tasks.<task_name>` for `prompt_ids` (sorted, `chunk` per message)
    once the current transaction commits, at once outside one. Never raises: a message that
    cannot be sent is logged (as `what`) and caught up by the caller's periodic sweep."""
    ids = sorted({int(pk) for pk in prompt_ids})
    if not ids:
        return

    def send() -> None:
        from contributors import tasks

        task = getattr(tasks, task_name)
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            try:
                task.apply_async((part,), retry=True, retry_policy=RETRY_POLICY)
            except Exception:
                logger.warning("could not queue %s of %d prompts; the sweep will", what, len(part))

    transaction.on_commit(send)

"""Settling work over prompts, in chunks: queued after the current transaction commits (how
credit, trust and spot checks settle the prompts `scoring.signals.disclosed_changed` names), or
walked over every closed prompt (their repairs). One place for each rule."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from django.db import transaction

from scoring.models import Prompt

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


def closed_prompt_chunks(size: int) -> Iterator[list[int]]:
    """Every closed prompt's id, `size` at a time in id order (keyset pages: each page is one
    indexed read, however many prompts there are)."""
    last = 0
    while True:
        ids = list(
            Prompt.objects.filter(closed_at__isnull=False, pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            return
        last = ids[-1]
        yield ids


def lock_closed(prompt_ids: Iterable[int]) -> list[int]:
    """The closed prompts among `prompt_ids`, locked FOR NO KEY UPDATE in id order (the order
    closing takes them), for the rest of the caller's transaction: two settlers of one prompt
    run one after the other, and the second finds nothing left to do."""
    ids = sorted({int(pk) for pk in prompt_ids})
    if not ids:
        return []
    return list(
        Prompt.objects.select_for_update(no_key=True)
        .filter(pk__in=ids, closed_at__isnull=False)
        .order_by("pk")
        .values_list("pk", flat=True)
    )

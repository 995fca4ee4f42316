"""Per (prompt, model) statistics kept as work happens (PromptModelStats): samples stored,
samples judged (verified or rejected), verified. O(1) per change: an upsert that adds deltas,
never a scan of a prompt's samples. Pass rate and difficulty follow from them.

`samples_stored` is called by uploads in their transaction; `record_moves` by the scoring
pipeline for every status change (pipeline._count_moves), under the changed rows' locks.
`recompute` rebuilds them from the rows (`manage.py build_selections --stats`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from scoring.models import PromptModelStats, Sample, SampleStatus

JUDGED = frozenset({SampleStatus.VERIFIED, SampleStatus.REJECTED})

_Key = tuple[int, str]  # (prompt id, model)


def _add(deltas: Mapping[_Key, tuple[int, int, int]]) -> None:
    """Adds (samples, judged, verified) to each key's row, making it if needed: one upsert
    statement, rows in key order (one lock order for every writer)."""
    rows = sorted((key, d) for key, d in deltas.items() if any(d))
    if not rows:
        return
    qn = connection.ops.quote_name
    table = qn(PromptModelStats._meta.db_table)
    cols = ["prompt_id", "model", "samples", "judged", "verified", "updated_at"]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
    adds = ", ".join(
        f"{qn(c)} = {table}.{qn(c)} + excluded.{qn(c)}" for c in ("samples", "judged", "verified")
    )
    sql = (
        f"INSERT INTO {table} ({', '.join(qn(c) for c in cols)}) VALUES {values} "  # noqa: S608
        f"ON CONFLICT ({qn('prompt_id')}, {qn('model')}) DO UPDATE SET {adds}, "
        f"{qn('updated_at')} = excluded.{qn('updated_at')}"
    )
    now = timezone.now()
    params: list[Any] = []
    for (prompt_id, model), (samples, judged, verified) in rows:
        params += [prompt_id, model, samples, judged, verified, now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def samples_stored(samples: Iterable[tuple[int, str]]) -> None:
    """Counts newly stored samples, given as (prompt id, model) each."""
    counts: dict[_Key, int] = defaultdict(int)
    for key in samples:
        counts[key] += 1
    _add({key: (n, 0, 0) for key, n in counts.items()})


def record_moves(
    moves: Iterable[tuple[int, str, str]], *, keys: Mapping[int, _Key] | None = None
) -> None:
    """Moves the judged / verified counts for samples that changed status, as (id, old, new).
    `keys`: each sample's (prompt id, model), when the caller has read them already."""
    changed = [(pk, old, new) for pk, old, new in moves if old != new]
    if not changed:
        return
    if keys is None:
        keys = {
            pk: (prompt_id, model)
            for pk, prompt_id, model in Sample.objects.filter(
                pk__in=[pk for pk, _, _ in changed]
            ).values_list("pk", "prompt_id", "model")
        }
    # A verdict that moves makes the prompt's selections stale: rebuild them (debounced).
    from scoring.tasks import schedule_rebuilds

    schedule_rebuilds([key[0] for key in keys.values()])
    deltas: dict[_Key, list[int]] = defaultdict(lambda: [0, 0, 0])
    for pk, old, new in changed:
        key = keys.get(pk)
        if key is None:
            continue
        deltas[key][1] += (new in JUDGED) - (old in JUDGED)
        deltas[key][2] += (new == SampleStatus.VERIFIED) - (old == SampleStatus.VERIFIED)
    _add({key: (0, j, v) for key, (_, j, v) in deltas.items()})


@transaction.atomic
def recompute(*, prompt_ids: Iterable[int] | None = None) -> int:
    """Rebuilds the stats of `prompt_ids` (all when None) from their samples; returns how many
    rows it wrote. A repair: it scans the samples it covers."""
    samples = Sample.objects.all()
    existing = PromptModelStats.objects.all()
    if prompt_ids is not None:
        ids = list(prompt_ids)
        samples = samples.filter(prompt_id__in=ids)
        existing = existing.filter(prompt_id__in=ids)
    rows = (
        samples.order_by()
        .values("prompt_id", "model")
        .annotate(
            n=Count("pk"),
            judged=Count("pk", filter=Q(status__in=JUDGED)),
            verified=Count("pk", filter=Q(status=SampleStatus.VERIFIED)),
        )
    )
    truth = {(r["prompt_id"], r["model"]): (r["n"], r["judged"], r["verified"]) for r in rows}
    existing.exclude(
        pk__in=[
            pk
            for pk, prompt_id, model in existing.values_list("pk", "prompt_id", "model")
            if (prompt_id, model) in truth
        ]
    ).delete()
    for (prompt_id, model), (n, judged, verified) in truth.items():
        PromptModelStats.objects.update_or_create(
            prompt_id=prompt_id,
            model=model,
            defaults={"samples": n, "judged": judged, "verified": verified},
        )
    return len(truth)

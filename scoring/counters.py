"""Running totals for the public stats, kept in the transactions that change what they count,
so reading them costs one small query whatever the size of the tables (`/stats` never
aggregates samples, prompts or slots).

Writing: `add({name: delta})` or `add(name=delta)`, called by the code that changes the rows,
inside its transaction, so a rolled-back upload counts nothing. Each call adds to one of SHARDS
rows per name, picked at random, in one statement (an upsert): concurrent uploads do not queue
on one row lock. Call it once per transaction where you can, as its last write: the rows stay
locked until commit, and a transaction that takes several names must take them in the same
order as every other (uploads: slots, then samples and contributors).

Reading: `read()` sums the shards (one query).

Repairing: `recompute()` rebuilds every counter from the rows, under a lock that makes
concurrent `add`s wait (`manage.py check_ledger --repair`). Scoring knows its own truths;
other packages `register` theirs (scoring imports nothing of them).

Who bumps what:

* SAMPLES, CONTRIBUTORS: uploads (contributors), when samples are stored / at a contributor's
  first sample.
* SLOTS_TARGET, SLOTS_FILLED: the slot ledger (contributors), when slots are made / filled.
* prompts_in_set(set): `PromptSet.next_seqs`, the one way prompts get made (import, admin).
* closed_samples(status): samples of closed prompts by status (the disclosure rule: per-status
  totals over open prompts would be an oracle). `close_prompts` adds a prompt's samples as it
  closes; every status change of a sample of a closed prompt moves one (scoring.pipeline).
* samples_on(day): samples stored that day (UTC), for the home page's chart: uploads.

Per prompt set, model and temperature the same kind of totals live in SetProgress
(scoring/progress.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from scoring.models import Counter, Prompt, Sample, SampleStatus

SHARDS = 16

SAMPLES = "samples"  # samples stored
CONTRIBUTORS = "contributors"  # contributors with at least one sample stored
SLOTS_TARGET = "slots_target"  # sum of Slot.target
SLOTS_FILLED = "slots_filled"  # sum of Slot.filled

_PROMPTS_PREFIX = "prompts_set_"
_CLOSED_PREFIX = "samples_closed_"
_DAY_PREFIX = "samples_on_"


def prompts_in_set(prompt_set_id: int) -> str:
    """The counter of the prompts of one set (the stats sum those of the active sets, so a set
    that is retired or made active again needs no counting)."""
    return f"{_PROMPTS_PREFIX}{prompt_set_id}"


def closed_samples(status: str) -> str:
    """The counter of the samples of closed prompts that have `status`."""
    return f"{_CLOSED_PREFIX}{status}"


def samples_on(day: date) -> str:
    """The counter of the samples stored on `day` (their `received_at` date, UTC)."""
    return f"{_DAY_PREFIX}{day.isoformat()}"


CLOSED_SAMPLES = {status: closed_samples(status) for status in SampleStatus.values}

Source = Callable[[], Mapping[str, int]]
_sources: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Registers the true values of the counters another package keeps (computed from its
    rows; `recompute` calls it under the counters' lock). Usable as a decorator."""
    _sources[f"{source.__module__}.{source.__qualname__}"] = source
    return source


def add(deltas: Mapping[str, int] | None = None, /, **named: int) -> None:
    """Adds each delta to one shard of its counter, in the caller's transaction."""
    merged: dict[str, int] = dict(deltas or {})
    for name, delta in named.items():
        merged[name] = merged.get(name, 0) + delta
    rows = sorted((name, delta) for name, delta in merged.items() if delta)
    if not rows:
        return
    shard = random.randrange(SHARDS)  # spreading writers, not a secret
    table = connection.ops.quote_name(Counter._meta.db_table)
    # One statement for every name, rows in name order (one lock order everywhere). The same
    # upsert on PostgreSQL and SQLite: a shard's first write makes its row, and a concurrent
    # first write adds to it instead of failing.
    name, shard_, value = (connection.ops.quote_name(c) for c in ("name", "shard", "value"))
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    sql = (
        f"INSERT INTO {table} ({name}, {shard_}, {value}) VALUES {values} "  # noqa: S608
        f"ON CONFLICT ({name}, {shard_}) DO UPDATE SET {value} = {table}.{value} + excluded.{value}"
    )
    params: list[str | int] = []
    for counter, delta in rows:
        params += [counter, shard, delta]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def read(names: Iterable[str] | None = None) -> dict[str, int]:
    """The counters, each summed over its shards (one query). With `names`, exactly those
    (0 for one never written); without, every counter whose total is not zero."""
    rows = Counter.objects.order_by()
    wanted = None if names is None else list(names)
    if wanted is not None:
        rows = rows.filter(name__in=wanted)
    totals = {
        row["name"]: int(row["total"] or 0)
        for row in rows.values("name").annotate(total=Sum("value"))
    }
    if wanted is None:
        return {name: total for name, total in totals.items() if total}
    return {name: totals.get(name, 0) for name in wanted}


def truth() -> dict[str, int]:
    """What every counter should be, counted from the rows (full scans: for repairs only):
    scoring's own, then those of the registered sources."""
    values: dict[str, int] = {
        SAMPLES: Sample.objects.count(),
        CONTRIBUTORS: Sample.objects.order_by().values("contributor_id").distinct().count(),
        **dict.fromkeys(CLOSED_SAMPLES.values(), 0),
    }
    for set_id, n in Prompt.objects.order_by().values_list("prompt_set_id").annotate(n=Count("pk")):
        values[prompts_in_set(set_id)] = n
    for status, n in (
        Sample.objects.filter(prompt__closed_at__isnull=False)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    ):
        values[closed_samples(status)] = n
    for day, n in (
        Sample.objects.annotate(day=TruncDate("received_at", tzinfo=UTC))
        .order_by()
        .values_list("day")
        .annotate(n=Count("pk"))
    ):
        values[samples_on(day)] = n
    for source in _sources.values():
        values.update(source())
    return values


@transaction.atomic
def recompute() -> dict[str, tuple[int, int]]:
    """Rebuilds every counter that scoring or a registered source knows from the rows (a
    counter of a deleted set goes; a name nobody knows is left alone); returns those that
    were wrong, as {name: (stored, true)}.

    The counters table is locked first (PostgreSQL: EXCLUSIVE, which lets reads on but makes
    every `add` wait; SQLite serialises writers anyway), so a transaction that changed rows
    either committed before the count (and its `add` is replaced by the count) or adds after
    the rebuild: none is lost or counted twice."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Counter._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    true = truth()
    known = (
        Q(name__in=list(true))
        | Q(name__startswith=_PROMPTS_PREFIX)
        | Q(name__startswith=_DAY_PREFIX)
    )
    stored = {
        row["name"]: int(row["total"] or 0)
        for row in Counter.objects.filter(known)
        .order_by()
        .values("name")
        .annotate(total=Sum("value"))
    }
    Counter.objects.filter(known).delete()
    Counter.objects.bulk_create(
        [Counter(name=name, shard=0, value=value) for name, value in sorted(true.items()) if value]
    )
    return {
        name: (stored.get(name, 0), true.get(name, 0))
        for name in sorted(set(stored) | set(true))
        if stored.get(name, 0) != true.get(name, 0)
    }

"""Progress of the prompt sets per (model, temperature), kept as work happens (SetProgress), so
no page counts samples: what the home page, the prompt-set pages and the bench read.

Writing, like scoring/counters.py: `add` adds deltas to one of SHARDS rows per cell, picked at
random, in one upsert statement with rows in key order (one lock order for every writer), in
the caller's transaction. It is each caller's last write of the public totals (after
scoring.counters and scoring.stats), so the tables are always locked in one order.

Who moves what:

* `submitted`: uploads (contributors.services.uploads), per sample stored, any status.
* `verified` / `rejected`: samples of *closed* prompts only, by their status now.
  `close_prompts` adds a prompt's samples as it closes (`closed`); every later status change
  of such a sample moves one (`record_moves`, from scoring.pipeline). A verdict on an open
  prompt moves nothing here: a per-status number over open prompts would tell a lone
  contributor whether their guess was right (scoring/disclosure.py).

Reading: `overview()` sums the shards and puts targets beside them. Targets come from the
sampling plan, not from slots (which exist only once a model has leased): per (set, model,
temperature in the plan), prompts in the set times `samples_per_prompt`. A set's models are the
plain ids (no wildcard) of its `models_allowed` and every model that has uploaded to it.
Progress is always `verified` against that target; `rejected` is shown beside it, never as
progress, and `submitted - verified - rejected` is what still awaits a (disclosed) verdict.

Repairing: `recompute()` rebuilds the table from the rows (`manage.py check_ledger --repair`).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Any, cast

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from scoring import counters
from scoring.models import Domain, PromptSet, Sample, SampleStatus, SetProgress

logger = logging.getLogger(__name__)

SHARDS = 16
CACHE_KEY = "thinkpool:set-progress"
DAYS_CACHE_KEY = "thinkpool:samples-per-day"
CACHE_S = 30

# (prompt set id, model, temperature)
Cell = tuple[int, str, float]
# (submitted, verified, rejected)
Delta = tuple[int, int, int]

_WILDCARDS = frozenset("*?[")


def _temperature(value: Any) -> float:
    # As uploads store it (contributors.models.normalise_temperature): plan and rows match.
    return round(float(value), 4)


# --- writing ---------------------------------------------------------------------------------


def add(deltas: Mapping[Cell, Delta]) -> None:
    """Adds (submitted, verified, rejected) to one shard of each cell, in the caller's
    transaction: one statement, rows in key order."""
    merged: dict[Cell, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (set_id, model, temperature), delta in deltas.items():
        row = merged[(set_id, model, _temperature(temperature))]
        for i in range(3):
            row[i] += delta[i]
    rows = sorted((cell, d) for cell, d in merged.items() if any(d))
    if not rows:
        return
    shard = random.randrange(SHARDS)  # spreading writers, not a secret
    qn = connection.ops.quote_name
    table = qn(SetProgress._meta.db_table)
    cols = ["prompt_set_id", "model", "temperature", "shard", "submitted", "verified", "rejected"]
    key = ", ".join(qn(c) for c in ("prompt_set_id", "model", "temperature", "shard"))
    adds = ", ".join(
        f"{qn(c)} = {table}.{qn(c)} + excluded.{qn(c)}"
        for c in ("submitted", "verified", "rejected")
    )
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    sql = (
        f"INSERT INTO {table} ({', '.join(qn(c) for c in cols)}) VALUES {values} "  # noqa: S608
        f"ON CONFLICT ({key}) DO UPDATE SET {adds}"
    )
    params: list[Any] = []
    for (set_id, model, temperature), (submitted, verified, rejected) in rows:
        params += [set_id, model, temperature, shard, submitted, verified, rejected]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _judged(status: str) -> Delta:
    """What one sample of a closed prompt in `status` adds to (submitted, verified, rejected)."""
    return (0, int(status == SampleStatus.VERIFIED), int(status == SampleStatus.REJECTED))


def samples_stored(cells: Iterable[Cell]) -> None:
    """Counts newly stored samples, given as one cell each (uploads)."""
    counts: dict[Cell, int] = defaultdict(int)
    for cell in cells:
        counts[cell] += 1
    add({cell: (n, 0, 0) for cell, n in counts.items()})


def record_moves(moves: Iterable[tuple[Cell, str, str]]) -> None:
    """Moves verified / rejected for samples *of closed prompts* that changed status, given as
    (cell, old, new). The caller leaves out samples of open prompts."""
    deltas: dict[Cell, list[int]] = defaultdict(lambda: [0, 0, 0])
    for cell, old, new in moves:
        if old == new:
            continue
        before, after = _judged(old), _judged(new)
        row = deltas[cell]
        for i in range(3):
            row[i] += after[i] - before[i]
    add({cell: (d[0], d[1], d[2]) for cell, d in deltas.items()})


def closed(rows: Iterable[tuple[Cell, str, int]]) -> None:
    """Adds the samples of prompts closed now, given as (cell, status, count)."""
    deltas: dict[Cell, list[int]] = defaultdict(lambda: [0, 0, 0])
    for cell, status, n in rows:
        judged = _judged(status)
        row = deltas[cell]
        for i in range(3):
            row[i] += judged[i] * n
    add({cell: (d[0], d[1], d[2]) for cell, d in deltas.items()})


# --- repairing -------------------------------------------------------------------------------


def truth() -> dict[Cell, Delta]:
    """What every cell should hold, counted from the rows (full scans: for repairs only)."""
    values: dict[Cell, list[int]] = defaultdict(lambda: [0, 0, 0])
    key = ("prompt__prompt_set_id", "model", "temperature")
    data = Sample.objects.filter(replica=False)  # a spot check's replica is no progress
    for set_id, model, temperature, n in data.order_by().values_list(*key).annotate(n=Count("pk")):
        values[(set_id, model, _temperature(temperature))][0] += n
    for set_id, model, temperature, status, n in (
        data.filter(
            prompt__closed_at__isnull=False,
            status__in=[SampleStatus.VERIFIED, SampleStatus.REJECTED],
        )
        .order_by()
        .values_list(*key, "status")
        .annotate(n=Count("pk"))
    ):
        row = values[(set_id, model, _temperature(temperature))]
        row[1 if status == SampleStatus.VERIFIED else 2] += n
    return {cell: (d[0], d[1], d[2]) for cell, d in values.items() if any(d)}


def stored() -> dict[Cell, Delta]:
    """Every cell as stored, summed over its shards (the non-zero ones)."""
    return {
        cell: delta
        for cell, delta in (
            ((row[0], row[1], _temperature(row[2])), (int(row[3]), int(row[4]), int(row[5])))
            for row in SetProgress.objects.order_by()
            .values_list("prompt_set_id", "model", "temperature")
            .annotate(s=Sum("submitted"), v=Sum("verified"), r=Sum("rejected"))
        )
        if any(delta)
    }


@transaction.atomic
def recompute() -> dict[Cell, tuple[Delta, Delta]]:
    """Rebuilds SetProgress from the rows; returns the cells that were wrong, as
    {cell: (stored, true)}. The table is locked first (PostgreSQL: EXCLUSIVE, which lets reads
    on but makes every `add` wait), so a transaction that changed rows either committed before
    the count or adds after the rebuild: none is lost or counted twice."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(SetProgress._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    true = truth()
    before = stored()
    SetProgress.objects.all().delete()
    SetProgress.objects.bulk_create(
        [
            SetProgress(
                prompt_set_id=set_id,
                model=model,
                temperature=temperature,
                shard=0,
                submitted=submitted,
                verified=verified,
                rejected=rejected,
            )
            for (set_id, model, temperature), (submitted, verified, rejected) in sorted(
                true.items()
            )
        ],
        batch_size=1000,
    )
    zero: Delta = (0, 0, 0)
    return {
        cell: (before.get(cell, zero), true.get(cell, zero))
        for cell in sorted(set(before) | set(true))
        if before.get(cell, zero) != true.get(cell, zero)
    }


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """Samples against a target. `verified` and `rejected` count closed prompts only."""

    submitted: int = 0
    verified: int = 0
    rejected: int = 0
    target: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.submitted + other.submitted,
            self.verified + other.verified,
            self.rejected + other.rejected,
            self.target + other.target,
        )

    @property
    def awaiting(self) -> int:
        """Stored, and not (yet) verified or rejected on a closed prompt."""
        return max(0, self.submitted - self.verified - self.rejected)

    @property
    def judged(self) -> int:
        return self.verified + self.rejected

    @property
    def pass_rate(self) -> float | None:
        """Verified among judged samples of closed prompts; None before any."""
        return self.verified / self.judged if self.judged else None

    @property
    def pass_percent(self) -> str:
        rate = self.pass_rate
        return "-" if rate is None else f"{100 * rate:.1f}%"

    @property
    def percent(self) -> str:
        """Verified against the target, for a label ("-" without a target)."""
        if not self.target:
            return "-"
        return f"{100 * min(self.verified, self.target) / self.target:.1f}%"

    @property
    def bar_value(self) -> int:
        """The value of a <progress> whose max is `target` (verified, capped at it)."""
        return min(self.verified, self.target)


@dataclass(frozen=True)
class SetOverview:
    """One prompt set: its plan and its progress, in total and per model / temperature."""

    id: int
    name: str
    description: str
    domain: str
    domain_label: str
    license: str
    source: str
    is_active: bool
    prompts: int
    samples_per_prompt: int
    temperatures: list[float]
    models: list[str]
    total: Tally
    by_model: list[tuple[str, Tally]]
    by_temperature: list[tuple[float, Tally]]
    cells: list[tuple[str, float, Tally]]

    @property
    def source_url(self) -> str:
        """The source, if it is a web address that may be a link (never `javascript:`)."""
        return self.source if self.source.startswith(("https://", "http://")) else ""

    @property
    def target_per_model(self) -> int:
        """What one more model would add to the target: prompts * samples * temperatures."""
        return self.prompts * self.samples_per_prompt * len(self.temperatures)


@dataclass(frozen=True)
class Overview:
    sets: list[SetOverview]
    by_model: list[tuple[str, Tally]]
    by_domain: list[tuple[str, Tally]]
    total: Tally = field(default_factory=Tally)

    @property
    def active_sets(self) -> list[SetOverview]:
        return [s for s in self.sets if s.is_active]

    def get(self, name: str) -> SetOverview | None:
        return next((s for s in self.sets if s.name == name), None)


def _plain_models(models_allowed: Any) -> list[str]:
    if not isinstance(models_allowed, list):
        return []
    return [m for m in models_allowed if isinstance(m, str) and m and not _WILDCARDS & set(m)]


def compute_overview() -> Overview:
    """Three queries whatever the size of the tables: the sets, their progress rows (summed
    over shards) and the prompt counters."""
    sets = list(
        PromptSet.objects.order_by("-is_active", "-priority", "name").values(
            "pk",
            "name",
            "description",
            "domain",
            "license",
            "source",
            "is_active",
            "samples_per_prompt",
            "temperatures",
            "models_allowed",
        )
    )
    rows: dict[int, dict[tuple[str, float], tuple[int, int, int]]] = defaultdict(dict)
    for (set_id, model, temperature), delta in stored().items():
        rows[set_id][(model, temperature)] = delta
    prompts = counters.read([counters.prompts_in_set(s["pk"]) for s in sets]) if sets else {}
    labels = dict(Domain.choices)

    overviews: list[SetOverview] = []
    by_model: dict[str, Tally] = defaultdict(Tally)
    by_domain: dict[str, Tally] = defaultdict(Tally)
    for s in sets:
        n_prompts = max(0, prompts.get(counters.prompts_in_set(s["pk"]), 0))
        plan = s["temperatures"] if isinstance(s["temperatures"], list) else []
        temperatures = sorted(
            {
                _temperature(t)
                for t in plan
                if isinstance(t, int | float) and not isinstance(t, bool)
            }
        )
        cells_here = rows.get(s["pk"], {})
        models = sorted(set(_plain_models(s["models_allowed"])) | {m for m, _ in cells_here})
        every = sorted(
            {(m, t) for m in models for t in temperatures} | set(cells_here),
            key=lambda mt: (mt[0], mt[1]),
        )
        per_cell = n_prompts * s["samples_per_prompt"]
        cells: list[tuple[str, float, Tally]] = []
        set_models: dict[str, Tally] = defaultdict(Tally)
        set_temps: dict[float, Tally] = defaultdict(Tally)
        for model, temperature in every:
            submitted, verified, rejected = cells_here.get((model, temperature), (0, 0, 0))
            tally = Tally(
                submitted, verified, rejected, per_cell if temperature in temperatures else 0
            )
            cells.append((model, temperature, tally))
            set_models[model] += tally
            set_temps[temperature] += tally
        total = sum((t for _, _, t in cells), Tally())
        overviews.append(
            SetOverview(
                id=s["pk"],
                name=s["name"],
                description=s["description"],
                domain=s["domain"],
                domain_label=labels.get(s["domain"], s["domain"]),
                license=s["license"],
                source=s["source"],
                is_active=s["is_active"],
                prompts=n_prompts,
                samples_per_prompt=s["samples_per_prompt"],
                temperatures=temperatures,
                models=models,
                total=total,
                by_model=sorted(set_models.items()),
                by_temperature=sorted(set_temps.items()),
                cells=cells,
            )
        )
        for model, tally in set_models.items():
            by_model[model] += tally
        by_domain[labels.get(s["domain"], s["domain"])] += total
    return Overview(
        sets=overviews,
        by_model=sorted(by_model.items()),
        by_domain=sorted(by_domain.items()),
        total=sum((o.total for o in overviews), Tally()),
    )


def compute_samples_per_day(days: int = 30) -> list[tuple[date, int]]:
    """Samples stored per day (UTC) over the last `days` days, oldest first: one read of the
    day counters (scoring.counters.samples_on)."""
    today = timezone.now().astimezone(UTC).date()
    dates = [today - timedelta(days=k) for k in range(days - 1, -1, -1)]
    values = counters.read([counters.samples_on(d) for d in dates])
    return [(d, max(0, values[counters.samples_on(d)])) for d in dates]


def _cached(key: str, compute: Callable[[], Any]) -> Any:
    """`compute()`, cached for CACHE_S seconds; an unreachable cache costs the cache, not the
    answer."""
    try:
        return cache.get_or_set(key, compute, CACHE_S)
    except Exception as exc:  # the cache backend's own errors (Redis down): fail open
        logger.warning("%s computed without the cache (%s: %s)", key, type(exc).__name__, exc)
        return compute()


def overview() -> Overview:
    """`compute_overview`, cached briefly."""
    return cast(Overview, _cached(CACHE_KEY, compute_overview))


def samples_per_day() -> list[tuple[date, int]]:
    """`compute_samples_per_day` for the last 30 days, cached briefly."""
    return cast(list[tuple[date, int]], _cached(DAYS_CACHE_KEY, compute_samples_per_day))

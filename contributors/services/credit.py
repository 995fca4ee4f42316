"""Contributors' credit: the one place its formula lives, the ledger it writes, and the
leaderboard built from that ledger.

The formula (constants in settings.THINKPOOL_CREDIT, shown on the leaderboard page). For a
prompt p closed to collection and a contributor c:

    credit(c, p) = P * d(p) * min(v(c, p), C)

* P = points_per_sample, C = cap_per_prompt;
* d(p) = 1 - the mean, over the contributors who have judged samples of p, of each one's pass
  rate on p (quarantined samples, duplicates and banned contributors left out): the prompt's
  difficulty, one vote per contributor (see `difficulties`). A prompt nobody has judged earns
  nothing;
* v(c, p) = c's samples of p that are verified, not quarantined and not a duplicate.

Only closed prompts count (DESIGN.md: verdicts are not an oracle). A prompt's samples are
judged before it closes, but their verdicts are disclosed only once it is closed: credit that
moved when one sample of an open prompt was judged would tell its contributor whether their
guess was right. So nothing here reads an open prompt's samples, and nothing moves for them.

`settle_prompts` recomputes each prompt's credit from its rows, compares with PromptCredit (the
credit as last settled) and writes the difference to the ledger (CreditEntry, kind `samples`).
It is idempotent: settling again writes nothing. Bounty awards are ledger entries too (kind
`bounty`, written by contributors.services.bounties). A contributor's credit over a period is
the sum of their entries in it; `refresh_leaderboard` writes the top of each period to
LeaderboardRow, which the pages read.

Settling is triggered by scoring.signals.disclosed_changed (a prompt closed, or a closed
prompt's sample changed status), queued on commit; a sweep every few minutes settles closed
prompts whose samples changed status lately, in case a message was lost; and
`manage.py settle_credit --all` settles every closed prompt (a repair).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.dispatch import receiver
from django.utils import timezone

from contributors.models import (
    CreditEntry,
    CreditKind,
    LeaderboardRow,
    Period,
    Profile,
    PromptCredit,
)
from contributors.services import queueing
from scoring.models import Prompt, Sample, SampleStatus
from scoring.signals import disclosed_changed

logger = logging.getLogger(__name__)

# Prompts per settling transaction (and per queued message).
SETTLE_CHUNK = 200
# Rows per period on the leaderboard.
LEADERBOARD_SIZE = 100
PERIOD_DAYS = {Period.WEEK: 7, Period.MONTH: 30, Period.ALL: None}
ANONYMOUS = "anonymous"
# Credit is a float; sums of the same entries in another order may differ in the last bits.
# Totals are compared (ties, zero) after rounding to this many decimals.
PRECISION = 6
_EPS = 0.5 * 10**-PRECISION
# The sweep: every SWEEP_EVERY_S (thinkpool/celery.py), prompts whose samples changed status
# (or that closed) in the last SWEEP_WINDOW_S, so one missed sweep loses nothing either.
SWEEP_EVERY_S = 600
SWEEP_WINDOW_S = 2 * SWEEP_EVERY_S


# --- the formula ------------------------------------------------------------------------------


def points_per_sample() -> int:
    return int(settings.THINKPOOL_CREDIT["points_per_sample"])


def cap_per_prompt() -> int:
    return int(settings.THINKPOOL_CREDIT["cap_per_prompt"])


def difficulty(*, verified: float, judged: int) -> float | None:
    """1 - verified / judged (here: the sum of the voters' pass rates over the number of
    voters); None when nothing was judged. Clamped to [0, 1]."""
    if judged <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - verified / judged))


def credited(verified: int) -> int:
    """How many of a contributor's verified samples of one prompt earn credit."""
    return min(max(verified, 0), cap_per_prompt())


def prompt_credit(*, difficulty: float | None, verified: int) -> tuple[int, float]:
    """(verified samples credited, points) for a contributor with `verified` counted samples of
    a closed prompt of that difficulty: P * d * min(v, C)."""
    if difficulty is None:
        return 0, 0.0
    n = credited(verified)
    return n, points_per_sample() * difficulty * n


def difficulties(prompt_ids: Sequence[int]) -> dict[int, float | None]:
    """Each prompt's difficulty: 1 - its pass rate, where every contributor who has judged
    samples of it casts one vote, their own pass rate on it (one grouped query).

    Not the pass rate over all of its samples (PromptModelStats): wrong answers cost nothing to
    make, so one account uploading a pile of junk would raise the difficulty, and with it the
    credit of its partner's right answers. Here an account weighs as much as any other however
    much it uploads, and only samples that could earn credit themselves vote: quarantined ones,
    duplicates and banned contributors' samples do not. (Many accounts are still many votes:
    that is the trust and quota work, not the formula's.)"""
    rows = (
        Sample.objects.filter(
            prompt_id__in=prompt_ids,
            status__in=[SampleStatus.VERIFIED, SampleStatus.REJECTED],
            quarantined=False,
            duplicate_of__isnull=True,
            replica=False,  # a spot check's replica votes nowhere
        )
        .exclude(contributor__profile__banned=True)
        .order_by()
        .values_list("prompt_id", "contributor_id")
        .annotate(j=Count("pk"), v=Count("pk", filter=Q(status=SampleStatus.VERIFIED)))
    )
    votes: dict[int, list[float]] = {}
    for prompt_id, _, judged, verified in rows:
        votes.setdefault(prompt_id, []).append(verified / judged)
    return {
        pk: difficulty(verified=sum(votes[pk]), judged=len(votes[pk])) if pk in votes else None
        for pk in prompt_ids
    }


def counted_samples() -> Q:
    """The samples that earn credit (besides their prompt being closed). A spot check's replica
    earns none: replication never counts twice."""
    return Q(
        status=SampleStatus.VERIFIED, quarantined=False, duplicate_of__isnull=True, replica=False
    )


# --- settling ---------------------------------------------------------------------------------


def chunked(ids: Sequence[int], size: int | None = None) -> Iterator[list[int]]:
    size = size or SETTLE_CHUNK
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _same(a: float, b: float) -> bool:
    return abs(a - b) < _EPS


@transaction.atomic
def settle_prompts(*, prompt_ids: Iterable[int]) -> int:
    """Brings the credit of `prompt_ids` up to date: for each closed prompt and each
    contributor, (verified credited, points) from the rows now, against PromptCredit; one
    ledger entry per pair that changed, with the difference. Open prompts are left alone.
    Returns how many entries it wrote (0 when everything was settled already).

    The prompts are locked (FOR NO KEY UPDATE, in id order, as closing locks them) for the
    whole transaction, so two settlers of one prompt run one after the other and the second
    finds nothing to do; a status change that commits meanwhile sends disclosed_changed and is
    settled again after its commit. KEY SHARE (a scoring finish upserting PromptModelStats)
    is not blocked."""
    closed = queueing.lock_closed(prompt_ids)
    if not closed:
        return 0
    difficulty_of = difficulties(closed)
    counts = (
        Sample.objects.filter(counted_samples(), prompt_id__in=closed)
        .order_by()
        .values_list("prompt_id", "contributor_id")
        .annotate(n=Count("pk"))
    )
    truth: dict[tuple[int, int], tuple[int, float]] = {}
    for prompt_id, contributor_id, n in counts:
        verified, points = prompt_credit(difficulty=difficulty_of[prompt_id], verified=n)
        if verified or points:
            truth[(prompt_id, contributor_id)] = (verified, points)
    settled = {
        (c.prompt_id, c.contributor_id): c
        for c in PromptCredit.objects.filter(prompt_id__in=closed)
    }

    now = timezone.now()
    entries: list[CreditEntry] = []
    added: list[PromptCredit] = []
    changed: list[PromptCredit] = []
    removed: list[int] = []
    for key in sorted(truth.keys() | settled.keys()):
        prompt_id, contributor_id = key
        verified, points = truth.get(key, (0, 0.0))
        row = settled.get(key)
        old_verified, old_points = (row.verified, row.points) if row else (0, 0.0)
        if verified == old_verified and _same(points, old_points):
            continue
        entries.append(
            CreditEntry(
                contributor_id=contributor_id,
                kind=CreditKind.SAMPLES,
                points=points - old_points,
                verified=verified - old_verified,
                prompt_id=prompt_id,
                at=now,
            )
        )
        if row is None:
            added.append(
                PromptCredit(
                    contributor_id=contributor_id,
                    prompt_id=prompt_id,
                    verified=verified,
                    points=points,
                    settled_at=now,
                )
            )
        elif key not in truth:
            removed.append(row.pk)
        else:
            row.verified, row.points, row.settled_at = verified, points, now
            changed.append(row)
    if removed:
        PromptCredit.objects.filter(pk__in=removed).delete()
    if changed:
        PromptCredit.objects.bulk_update(changed, ["verified", "points", "settled_at"])
    if added:
        PromptCredit.objects.bulk_create(added)
    if entries:
        CreditEntry.objects.bulk_create(entries)
    return len(entries)


def settle_all(*, chunk: int | None = None) -> tuple[int, int]:
    """Settles every closed prompt, `chunk` prompts per transaction (a repair: it reads every
    closed prompt's samples). Returns (prompts, entries written)."""
    prompts = entries = 0
    for ids in queueing.closed_prompt_chunks(chunk or SETTLE_CHUNK):
        prompts += len(ids)
        entries += settle_prompts(prompt_ids=ids)
    return prompts, entries


def schedule_settle(prompt_ids: Iterable[int]) -> None:
    """Queues settling of `prompt_ids` once the current transaction commits (at once outside
    one), SETTLE_CHUNK prompts per message. Never raises: a message that cannot be sent is
    caught up by the sweep (`recently_changed_prompts`)."""
    queueing.prompts_on_commit(
        "settle_credit", prompt_ids, chunk=SETTLE_CHUNK, what="settling credit"
    )


@receiver(disclosed_changed, dispatch_uid="credit-settle-disclosed")
def _settle_disclosed(sender: Any, prompt_ids: Sequence[int], **kwargs: Any) -> None:
    """Prompts closed now, or closed prompts whose samples changed status: settle them after
    the commit (the signal is sent inside the changing transaction)."""
    schedule_settle(prompt_ids)


def recently_changed_prompts(*, since: datetime) -> list[int]:
    """Closed prompts with a sample whose status changed since `since`, or that closed since
    then: walks Sample's (status, status_changed_at) index and Prompt's closed_at index."""
    by_samples = (
        Sample.objects.filter(
            status__in=SampleStatus.values,
            status_changed_at__gte=since,
            prompt__closed_at__isnull=False,
        )
        .order_by()
        .values_list("prompt_id", flat=True)
        .distinct()
    )
    by_close = Prompt.objects.filter(closed_at__gte=since).values_list("pk", flat=True)
    return sorted(set(by_samples) | set(by_close))


def sweep(*, now: datetime | None = None) -> int:
    """Queues settling of the closed prompts whose samples changed status (or that closed) in
    the last SWEEP_WINDOW_S. Returns how many prompts it queued."""
    since = (now or timezone.now()) - timedelta(seconds=SWEEP_WINDOW_S)
    ids = recently_changed_prompts(since=since)
    schedule_settle(ids)
    return len(ids)


# --- the leaderboard --------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    contributor_id: int
    points: float
    verified: int
    reached_at: datetime


def period_start(period: str, now: datetime) -> datetime | None:
    days = PERIOD_DAYS[Period(period)]
    return None if days is None else now - timedelta(days=days)


def standings(
    *, period: str, now: datetime | None = None, limit: int = LEADERBOARD_SIZE
) -> list[Standing]:
    """The top `limit` contributors of a period: SUM(points), SUM(verified) of their ledger
    entries in it, banned and deactivated contributors left out, by points (rounded to
    PRECISION), then who reached their total first (their last entry in the period), then the
    lower user id. Contributors with nothing in the period (no points, no verified samples,
    or a negative balance of a week in which credit was taken back) are not listed."""
    now = now or timezone.now()
    entries = CreditEntry.objects.all()
    start = period_start(period, now)
    if start is not None:
        entries = entries.filter(at__gte=start)
    entries = entries.filter(at__lte=now).exclude(contributor__profile__banned=True)
    rows = (
        entries.filter(contributor__is_active=True)
        .order_by()
        .values("contributor_id")
        .annotate(points=Sum("points"), verified=Sum("verified"), reached_at=Max("at"))
        .filter(Q(points__gt=_EPS) | Q(points__gte=-_EPS, verified__gt=0))
        # Ordered in the database on the raw sums (a bounded read); the exact order, with
        # rounded points, is settled below. The margin holds whoever a rounding could move.
        .order_by("-points", "reached_at", "contributor_id")[: limit * 2]
    )
    found = [
        Standing(
            contributor_id=r["contributor_id"],
            points=round(r["points"], PRECISION) + 0.0,  # + 0.0: no "-0.0"
            verified=r["verified"],
            reached_at=r["reached_at"],
        )
        for r in rows
    ]
    found.sort(key=lambda s: (-s.points, s.reached_at, s.contributor_id))
    return found[:limit]


def _handles(user_ids: Sequence[int]) -> dict[int, str]:
    return {
        user_id: handle if public else ANONYMOUS
        for user_id, handle, public in Profile.objects.filter(user_id__in=user_ids).values_list(
            "user_id", "handle", "public_attribution"
        )
    }


@transaction.atomic
def refresh_leaderboard(*, now: datetime | None = None) -> dict[str, int]:
    """Replaces every period's LeaderboardRow rows with its standings, in one transaction
    (readers see the old board or the new one, never half). Two refreshes at once would both
    delete and insert; on PostgreSQL an advisory lock makes the second skip (the first writes
    the same board). Returns the rows written per period ({} when skipped)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext('thinkpool:leaderboard'))")
            if not cursor.fetchone()[0]:
                logger.info("another leaderboard refresh is running; skipped")
                return {}
    now = now or timezone.now()
    tops = {period: standings(period=period, now=now) for period in Period.values}
    handles = _handles(sorted({s.contributor_id for top in tops.values() for s in top}))
    LeaderboardRow.objects.all().delete()
    LeaderboardRow.objects.bulk_create(
        [
            LeaderboardRow(
                period=period,
                rank=rank,
                contributor_id=s.contributor_id,
                handle=handles.get(s.contributor_id, ANONYMOUS),
                points=s.points,
                verified=s.verified,
                computed_at=now,
            )
            for period, top in tops.items()
            for rank, s in enumerate(top, start=1)
        ]
    )
    return {period: len(top) for period, top in tops.items()}

"""Trust and daily quotas, per contributor and per node (BOINC's adaptive scheme): the rules,
the ledger they write, and the quota that leasing enforces.

The rules (parameters in settings.THINKPOOL_TRUST; each contributor sees their own numbers on
their profile page and in `GET /api/v1/me/`):

* a valid sample (verified; not quarantined, not a duplicate):
      streak += 1, valid += 1, quota = min(max_quota, quota + grow)
* an invalid sample (rejected; not quarantined), an expired lease item (a lease that
  expired with samples of the item still owed: hoarding), or an automatic flag (scoring.Flag:
  a copy of another contributor's sample, a claimed model not attested, persistent
  disagreement with spot checks):
      streak = 0, invalid (expired, flagged) += 1, quota = max(min_quota, floor(quota * cut))
  except that an expired lease cuts the quota once, however many of its items expired: each
  item counts in `expired`, only the lease's first one cuts (one lost worker with a 50-prompt
  lease is one cut, not fifty; a contributor who keeps letting leases expire is still cut on
  each);
* trust = min(1, streak / trust_streak) * (1 - bad / all), bad = invalid + expired + flagged,
  all = valid + bad
  (0 with nothing counted yet): trusted only after trust_streak valid samples in a row, and
  less the larger the share of bad work over the whole history (no window: a long honest
  history dilutes an old failure, a streak restarts after each one).
* the quota is in prompts (lease items) leased per UTC day; a new contributor or node starts
  at initial_quota. Leasing refuses past it with `quota_exceeded` (HTTP 429).

When reputation may move (DESIGN.md: verdicts are not an oracle; the contributor sees trust,
streak and quota, so each of them is a disclosure):

* correctness, only for samples of closed prompts: settled per prompt on
  scoring.signals.disclosed_changed (queued on commit, like credit), by a sweep of recently
  changed closed prompts, or by `settle_all` (a repair). A sample of an open prompt moves
  nothing, whatever its verdict;
* samples rejected by gold-free checks alone (format, truncation, repetition, language) are
  disclosed at once by scoring.disclosure and could count at once; for simplicity they count
  with the rest, when the prompt closes;
* a flag, at once (scoring.flags.flags_raised): no flag is derived from the gold. A
  maintainer who clears a flag takes its event back (scoring.flags.flags_cleared): the
  contributor's and their nodes' reputation is replayed from the remaining events;
* an expired lease item, at once (when the lease expires: leasing.expire_overdue_leases, or a
  release that comes after the deadline). A release before the deadline costs nothing: the
  work goes back to the pool in time, and the leased prompts still count for the day. A
  contributor whose expired items within HOARD_WINDOW_S (since a maintainer last cleared
  their hoarding flag, if that is later) reach `hoard_flag_after` gets a hoarding flag
  (scoring.flags.raise_conduct_flag), for maintainers only: it is not counted again (the
  items were), and its evidence is refreshed while it is open.

Each judged sample moves reputation exactly once, at the first settling that finds it valid or
invalid (a ReputationEvent per sample, unique): settling again moves nothing, and a later
change of a sample's status (a rescore) does not move it again. A verified sample that is
quarantined or marked a duplicate is not counted (until that is lifted); an `error` sample is
the server's failure, never counted. Samples of one settling are applied in id order (the
order they were received), which decides where a streak breaks.

Which bad events cut the quota: the first item of each expired lease (`record_expired`), and
per contributor the first of the flags one check raised together (`_count_flags`: a failed
attestation pool, the copies found in one prompt). Each event records whether it cut
(`ReputationEvent.cuts`), so `replay` gives exactly what recording did.

A verified sample with an open copy or attestation flag is not counted valid when its prompt
is settled (the flag counted against its contributor already): a flagged sample must not
rebuild the streak its flag broke. If a maintainer clears the flag, its prompt is settled
again and the sample counts then.

LeaseDay rows older than LEASE_DAY_KEEP_DAYS are deleted by the sweep (`prune_lease_days`):
only today's counts are read.

Sample -> node: SampleOrigin.node (none for a sample whose node was deleted, or uploaded
outside a lease with no node: only the contributor's reputation moves).

Lock order: prompts (settling, FOR NO KEY UPDATE in id order, as credit and closing do) or
the lease (expiry), then slots, then Flag rows (raising or clearing a flag; expiry takes the
contributors' open hoarding flags), then Reputation rows (id order), then NodeReputation rows
(id order). Leasing reads reputation without locking it, and counts leased prompts under the
profile lock it already holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, Max, Min, OuterRef
from django.dispatch import receiver
from django.utils import timezone

from contributors.models import (
    ComputeNode,
    LeaseDay,
    LeaseItem,
    NodeReputation,
    Reputation,
    ReputationEvent,
    ReputationFields,
    ReputationKind,
)
from contributors.services import queueing
from contributors.services.errors import ServiceError
from scoring.flags import flags_cleared, flags_raised, raise_conduct_flag
from scoring.models import Flag, FlagKind, Sample, SampleStatus
from scoring.signals import disclosed_changed

# Prompts per settling transaction (and per queued message).
SETTLE_CHUNK = 200
# The sweep: closed prompts that changed within this window (run it at least twice as often).
SWEEP_WINDOW_S = 1200
# Hoarding: expired items counted toward the flag within this window.
HOARD_WINDOW_S = 24 * 3600
# Lease items named in a hoarding flag's evidence (the newest).
HOARD_EVIDENCE_ITEMS = 50
# Daily lease counts kept this many days (only today's is read; the rest helps a maintainer
# looking into a complaint), deleted by the sweep in batches of LEASE_DAY_PRUNE_BATCH, at most
# LEASE_DAY_PRUNE_BATCHES per run (the rest waits for the next one).
LEASE_DAY_KEEP_DAYS = 7
LEASE_DAY_PRUNE_BATCH = 5000
LEASE_DAY_PRUNE_BATCHES = 20

VALID, INVALID, EXPIRED = ReputationKind.VALID, ReputationKind.INVALID, ReputationKind.EXPIRED
FLAGGED = ReputationKind.FLAGGED
_JUDGED = [str(VALID), str(INVALID)]

R = TypeVar("R", Reputation, NodeReputation)


# --- the rules --------------------------------------------------------------------------------


def params() -> dict[str, Any]:
    return dict(settings.THINKPOOL_TRUST)


def clamp_quota(quota: int) -> int:
    cfg = params()
    low, high = int(cfg["min_quota"]), int(cfg["max_quota"])
    return min(max(quota, low), max(high, low))


def initial_quota() -> int:
    return clamp_quota(int(params()["initial_quota"]))


def trust_of(*, streak: int, valid: int, invalid: int, expired: int, flagged: int = 0) -> float:
    """min(1, streak / trust_streak) * (1 - bad share); 0 when nothing was counted."""
    bad = invalid + expired + flagged
    total = valid + bad
    if total <= 0:
        return 0.0
    ramp = min(1.0, streak / max(int(params()["trust_streak"]), 1))
    return max(0.0, min(1.0, ramp * (1.0 - bad / total)))


def apply(rep: ReputationFields, kind: str, *, cut: bool = True) -> None:
    """Moves `rep` (unsaved) by one event of `kind` (the rules above). `cut=False`: a bad event
    that is counted (streak ended, its count up) without cutting the quota: the second and
    later items of one expired lease."""
    cfg = params()
    if kind == VALID:
        rep.streak += 1
        rep.valid += 1
        rep.daily_quota = clamp_quota(rep.daily_quota + int(cfg["grow"]))
    elif kind in (INVALID, EXPIRED, FLAGGED):
        rep.streak = 0
        if kind == INVALID:
            rep.invalid += 1
        elif kind == EXPIRED:
            rep.expired += 1
        else:
            rep.flagged += 1
        if cut:
            rep.daily_quota = clamp_quota(math.floor(rep.daily_quota * float(cfg["cut"])))
    else:
        raise ValueError(f"unknown reputation event {kind!r}")
    rep.trust = trust_of(
        streak=rep.streak,
        valid=rep.valid,
        invalid=rep.invalid,
        expired=rep.expired,
        flagged=rep.flagged,
    )


# --- the rows ---------------------------------------------------------------------------------


def _locked(model: type[R], field: str, keys: Iterable[int]) -> dict[int, R]:
    """The reputation rows of `keys` (made at the initial quota where missing), locked in id
    order. Inside a transaction."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    have = set(model.objects.filter(**{f"{field}__in": wanted}).values_list(field, flat=True))
    missing = [k for k in wanted if k not in have]
    if missing:
        start = initial_quota()
        # ignore_conflicts: a concurrent first event of the same contributor made it first.
        model.objects.bulk_create(
            [model(**{field: k, "daily_quota": start}) for k in missing], ignore_conflicts=True
        )
    rows = model.objects.select_for_update().filter(**{f"{field}__in": wanted}).order_by("pk")
    return {getattr(row, field): row for row in rows}


_FIELDS = [
    "streak",
    "valid",
    "invalid",
    "expired",
    "flagged",
    "trust",
    "daily_quota",
    "updated_at",
]


def _move(events: Sequence[ReputationEvent], *, cuts: Sequence[bool] | None = None) -> None:
    """Applies `events` (new, in order) to their contributors' and nodes' rows; `cuts`, when
    given, says per event whether it cuts the quota (`apply`)."""
    if not events:
        return
    if cuts is None:
        cuts = [True] * len(events)
    assert len(cuts) == len(events)
    now = timezone.now()
    people = _locked(Reputation, "contributor_id", (e.contributor_id for e in events))
    nodes = _locked(NodeReputation, "node_id", (e.node_id for e in events if e.node_id is not None))
    for e, cut in zip(events, cuts, strict=True):
        e.cuts = cut
        apply(people[e.contributor_id], e.kind, cut=cut)
        if e.node_id is not None and e.node_id in nodes:
            apply(nodes[e.node_id], e.kind, cut=cut)
    for row in [*people.values(), *nodes.values()]:
        row.updated_at = now
    Reputation.objects.bulk_update(list(people.values()), _FIELDS)
    if nodes:
        NodeReputation.objects.bulk_update(list(nodes.values()), _FIELDS)
    ReputationEvent.objects.bulk_create(list(events))


# --- settling disclosed verdicts ----------------------------------------------------------------


def _kind_of(status: str, quarantined: bool, duplicate_of: int | None) -> str | None:
    if quarantined:
        return None
    if status == SampleStatus.VERIFIED:
        return VALID if duplicate_of is None else None
    if status == SampleStatus.REJECTED:
        return INVALID
    return None


@transaction.atomic
def settle_prompts(*, prompt_ids: Iterable[int]) -> int:
    """Counts the judged samples of the closed prompts among `prompt_ids` that no settling
    counted yet; open prompts are left alone. Returns how many samples it counted (0 when
    everything was settled already)."""
    closed = queueing.lock_closed(prompt_ids)
    if not closed:
        return 0
    counted = ReputationEvent.objects.filter(sample=OuterRef("pk"), kind__in=_JUDGED)
    suspect = Flag.objects.filter(
        sample=OuterRef("pk"), kind__in=_HOLDS_VALID, cleared_at__isnull=True
    )
    rows = (
        Sample.objects.filter(
            prompt_id__in=closed,
            status__in=[SampleStatus.VERIFIED, SampleStatus.REJECTED],
            quarantined=False,
        )
        .filter(~Exists(counted))
        .annotate(suspect=Exists(suspect))
        .order_by("pk")
        .values_list(
            "pk", "contributor_id", "origin__node_id", "status", "duplicate_of_id", "suspect"
        )
    )
    now = timezone.now()
    events = []
    for pk, contributor_id, node_id, status, duplicate_of, flagged in rows:
        if flagged and status == SampleStatus.VERIFIED:
            continue  # counted once its flag is cleared (the module)
        kind = _kind_of(status, False, duplicate_of)
        if kind is not None:
            events.append(
                ReputationEvent(
                    contributor_id=contributor_id, node_id=node_id, kind=kind, sample_id=pk, at=now
                )
            )
    _move(events)
    return len(events)


def settle_all(*, chunk: int | None = None) -> tuple[int, int]:
    """Settles every closed prompt, `chunk` per transaction (a repair). Returns (prompts,
    samples counted)."""
    prompts = samples = 0
    for ids in queueing.closed_prompt_chunks(chunk or SETTLE_CHUNK):
        prompts += len(ids)
        samples += settle_prompts(prompt_ids=ids)
    return prompts, samples


def schedule_settle(prompt_ids: Iterable[int]) -> None:
    """Queues settling of `prompt_ids` once the current transaction commits (at once outside
    one). Never raises: a lost message is caught up by the sweep."""
    queueing.prompts_on_commit(
        "settle_trust", prompt_ids, chunk=SETTLE_CHUNK, what="settling trust"
    )


@receiver(disclosed_changed, dispatch_uid="trust-settle-disclosed")
def _settle_disclosed(sender: Any, prompt_ids: Sequence[int], **kwargs: Any) -> None:
    schedule_settle(prompt_ids)


def sweep(*, now: datetime | None = None) -> int:
    """Queues settling of closed prompts whose samples changed status (or that closed) in the
    last SWEEP_WINDOW_S, and comparing their spot checks (contributors.services.spotchecks).
    Returns how many prompts it queued."""
    from contributors.services import spotchecks
    from contributors.services.credit import recently_changed_prompts

    since = (now or timezone.now()) - timedelta(seconds=SWEEP_WINDOW_S)
    ids = recently_changed_prompts(since=since)
    schedule_settle(ids)
    spotchecks.schedule_compare(ids)
    return len(ids)


# --- hoarding ---------------------------------------------------------------------------------


def record_expired(items: Iterable[tuple[int, int, int | None]]) -> int:
    """Counts lease items that expired with samples still owed: (item id, contributor id,
    node id). Inside the transaction that closes their lease (holding its lock); an item
    already counted is skipped. Each item counts in `expired`; only the first counted item of
    each lease cuts the quota (one expired lease, one cut). Then raises or refreshes the
    hoarding flag of each contributor counted who reached `hoard_flag_after`. Returns how many
    it counted."""
    items = sorted(set(items))
    if not items:
        return 0
    ids = [i for i, _, _ in items]
    lease_of = dict(LeaseItem.objects.filter(pk__in=ids).values_list("pk", "lease_id"))
    # Every item of these leases (not only the owing ones): which of them cut already. One
    # index probe per item, never a walk over the whole expired history.
    siblings = list(
        LeaseItem.objects.filter(lease_id__in=set(lease_of.values())).values_list("pk", flat=True)
    )
    seen = ReputationEvent.objects.filter(kind=EXPIRED, lease_item_id__in=set(ids) | set(siblings))
    done: set[int] = set()
    cut_leases: set[int] = set()
    for item_id, lease_id in seen.values_list("lease_item_id", "lease_item__lease_id"):
        done.add(item_id)
        cut_leases.add(lease_id)
    now = timezone.now()
    events: list[ReputationEvent] = []
    cuts: list[bool] = []
    for i, contributor_id, node_id in items:
        if i in done:
            continue
        events.append(
            ReputationEvent(
                contributor_id=contributor_id,
                node_id=node_id,
                kind=EXPIRED,
                lease_item_id=i,
                at=now,
            )
        )
        # Ids ascend in list order (bulk_create), so the event that cuts is its lease's first
        # in ledger order: what replay() finds.
        lease = lease_of.get(i)
        cuts.append(lease is None or lease not in cut_leases)
        if lease is not None:
            cut_leases.add(lease)
    people = sorted({e.contributor_id for e in events})
    if people:
        # Lock order: flags before reputation rows, as raising or clearing any flag takes them
        # (a maintainer clearing this flag with others replays the contributor's rows).
        list(
            Flag.objects.select_for_update()
            .filter(
                contributor_id__in=people,
                kind=FlagKind.HOARDING,
                sample__isnull=True,
                cleared_at__isnull=True,
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    _move(events, cuts=cuts)
    _flag_hoarders(people, now=now)
    return len(events)


def _flag_hoarders(contributor_ids: Iterable[int], *, now: datetime) -> list[int]:
    """Raises (or refreshes) the hoarding flag of each of `contributor_ids` whose expired
    items since `now - HOARD_WINDOW_S` reach `hoard_flag_after`, counting only those after a
    maintainer last cleared that contributor's hoarding flag (they saw those and decided).
    Two queries when none did. Returns the contributors flagged."""
    wanted = sorted(set(contributor_ids))
    if not wanted:
        return []
    threshold = int(params()["hoard_flag_after"])
    window_start = now - timedelta(seconds=HOARD_WINDOW_S)
    recent = ReputationEvent.objects.filter(kind=EXPIRED, at__gte=window_start)
    over = [
        contributor_id
        for contributor_id, n in recent.filter(contributor_id__in=wanted)
        .values("contributor_id")
        .annotate(n=Count("pk"))
        .values_list("contributor_id", "n")
        .order_by("contributor_id")
        if n >= threshold
    ]
    if not over:
        return []
    cleared = dict(
        Flag.objects.filter(
            contributor_id__in=over,
            sample__isnull=True,
            kind=FlagKind.HOARDING,
            cleared_at__gte=window_start,
        )
        .values("contributor_id")
        .annotate(last=Max("cleared_at"))
        .values_list("contributor_id", "last")
    )
    flagged = []
    for contributor_id in over:
        since = max(window_start, cleared.get(contributor_id) or window_start)
        mine = recent.filter(contributor_id=contributor_id, at__gte=since)
        counts = mine.aggregate(
            items=Count("pk"),
            leases=Count("lease_item__lease", distinct=True),
            first=Min("at"),
            last=Max("at"),
        )
        if counts["items"] < threshold:
            continue
        newest = list(
            mine.order_by("-at", "-pk").values_list("lease_item_id", flat=True)[
                :HOARD_EVIDENCE_ITEMS
            ]
        )
        raise_conduct_flag(
            contributor_id=contributor_id,
            kind=FlagKind.HOARDING,
            evidence={
                "expired_items": counts["items"],
                "leases": counts["leases"],
                "lease_item_ids": newest,
                "first_expired_at": counts["first"].isoformat(),
                "last_expired_at": counts["last"].isoformat(),
                "window_s": HOARD_WINDOW_S,
                "threshold": threshold,
            },
        )
        flagged.append(contributor_id)
    return flagged


# --- flags -----------------------------------------------------------------------------------

# A verified sample with one of these flags open is not counted valid (the module).
_HOLDS_VALID = [str(FlagKind.COPY), str(FlagKind.ATTESTATION)]

# Hoarding is counted per expired item already (record_expired); its flag is for maintainers
# and must not count the same items twice.
_NOT_COUNTED_FLAGS = {str(FlagKind.HOARDING)}


@receiver(flags_raised, dispatch_uid="trust-flags-raised")
def _count_flags(sender: Any, flag_ids: Sequence[int], **kwargs: Any) -> None:
    """Each flag raised counts once against its contributor (and the sample's node), in the
    transaction that raised it; the flags raised together (one check's finding: a failed
    attestation pool, the copies found in one prompt) cut the quota once per contributor. A
    flag raised again after resolving is not counted again."""
    rows = (
        Flag.objects.filter(pk__in=list(flag_ids), cleared_at__isnull=True)
        .exclude(kind__in=_NOT_COUNTED_FLAGS)
        .filter(~Exists(ReputationEvent.objects.filter(flag=OuterRef("pk"), kind=FLAGGED)))
        .order_by("pk")
        .values_list("pk", "contributor_id", "sample__origin__node_id")
    )
    now = timezone.now()
    events, cuts, cut_people = [], [], set()
    for pk, contributor_id, node_id in rows:
        events.append(
            ReputationEvent(
                contributor_id=contributor_id, node_id=node_id, kind=FLAGGED, flag_id=pk, at=now
            )
        )
        cuts.append(contributor_id not in cut_people)
        cut_people.add(contributor_id)
    _move(events, cuts=cuts)


@receiver(flags_cleared, dispatch_uid="trust-flags-cleared")
def _uncount_flags(sender: Any, flag_ids: Sequence[int], **kwargs: Any) -> None:
    """A maintainer cleared these flags as unfounded: their events go, and the reputation of
    their contributors and nodes is replayed from what remains. Their samples' prompts are
    settled again: a verified sample held back by its flag counts now."""
    schedule_settle(
        Flag.objects.filter(pk__in=list(flag_ids), sample__isnull=False).values_list(
            "sample__prompt_id", flat=True
        )
    )
    events = ReputationEvent.objects.filter(flag_id__in=list(flag_ids), kind=FLAGGED)
    people = set(events.values_list("contributor_id", flat=True))
    if not people:
        return
    events.delete()
    for contributor_id in sorted(people):
        replay(contributor_id=contributor_id)


def _numbers(row: ReputationFields) -> tuple[Any, ...]:
    return tuple(getattr(row, f) for f in _FIELDS if f != "updated_at")


def replay(*, contributor_id: int) -> bool:
    """Recomputes a contributor's reputation, and their nodes', from the ledger: every event
    applied in order to a fresh start (the initial quota), an expired lease cutting once as
    `record_expired` did. A repair, and how a voided event is taken back. Inside a
    transaction; locks the rows like `_move`. Returns whether any number changed."""
    people = _locked(Reputation, "contributor_id", [contributor_id])
    events = list(
        ReputationEvent.objects.filter(contributor_id=contributor_id)
        .order_by("pk")  # the order they were applied in (`_move` writes them in order)
        .values_list("kind", "node_id", "cuts")
    )
    # Every node of theirs, not only those with events left: a node whose only event was
    # voided goes back to a fresh start too.
    owned = set(ComputeNode.objects.filter(owner_id=contributor_id).values_list("pk", flat=True))
    nodes = _locked(
        NodeReputation, "node_id", owned | {node_id for _, node_id, _ in events if node_id}
    )
    start = initial_quota()
    rows: list[ReputationFields] = [people[contributor_id], *nodes.values()]
    before = [_numbers(row) for row in rows]
    for row in rows:
        row.streak = row.valid = row.invalid = row.expired = row.flagged = 0
        row.trust = 0.0
        row.daily_quota = start
    for kind, node_id, cut in events:
        apply(people[contributor_id], kind, cut=cut)
        if node_id in nodes:
            apply(nodes[node_id], kind, cut=cut)
    now = timezone.now()
    for row in rows:
        row.updated_at = now
    Reputation.objects.bulk_update([people[contributor_id]], _FIELDS)
    if nodes:
        NodeReputation.objects.bulk_update(list(nodes.values()), _FIELDS)
    return [_numbers(row) for row in rows] != before


def replay_all() -> tuple[int, int]:
    """Replays every contributor with events, one transaction each (a repair). Returns
    (contributors replayed, of which changed)."""
    replayed = changed = 0
    people = (
        ReputationEvent.objects.order_by("contributor_id")
        .values_list("contributor_id", flat=True)
        .distinct()
    )
    for contributor_id in list(people):
        with transaction.atomic():
            changed += replay(contributor_id=contributor_id)
        replayed += 1
    return replayed, changed


# --- the daily quota --------------------------------------------------------------------------


def utc_day(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(UTC).date()


def resets_at(now: datetime | None = None) -> datetime:
    """When today's (UTC) count starts again: the next UTC midnight."""
    return datetime.combine(utc_day(now) + timedelta(days=1), time(0), tzinfo=UTC)


def _quota(model: type[Reputation] | type[NodeReputation], **key: int) -> int:
    quota = model.objects.filter(**key).values_list("daily_quota", flat=True).first()
    return initial_quota() if quota is None else clamp_quota(quota)


def _used(*, contributor_id: int, node_id: int | None, day: date) -> int:
    rows = LeaseDay.objects.filter(contributor_id=contributor_id, day=day)
    rows = rows.filter(node__isnull=True) if node_id is None else rows.filter(node_id=node_id)
    return rows.values_list("prompts", flat=True).first() or 0


def quota_room(node: ComputeNode, *, now: datetime | None = None) -> int:
    """How many prompts `node` may still lease today: the least of its owner's room and its
    own. Raises `quota_exceeded` (429) when that is none."""
    now = now or timezone.now()
    day = utc_day(now)
    reset = resets_at(now)
    room = None
    for scope, quota, used in (
        (
            "account",
            _quota(Reputation, contributor_id=node.owner_id),
            _used(contributor_id=node.owner_id, node_id=None, day=day),
        ),
        (
            "node",
            _quota(NodeReputation, node_id=node.pk),
            _used(contributor_id=node.owner_id, node_id=node.pk, day=day),
        ),
    ):
        left = quota - used
        if left <= 0:
            raise ServiceError(
                "quota_exceeded",
                f"This {scope} may lease {quota} prompts a day (UTC) and has leased {used} "
                f"today; the quota resets at {reset:%Y-%m-%dT%H:%M:%SZ}. It grows with valid "
                "samples and shrinks with rejected ones and leases left to expire.",
                status=429,
                details={
                    "scope": scope,
                    "quota": quota,
                    "used": used,
                    "resets_at": reset.isoformat().replace("+00:00", "Z"),
                },
                retry_after=max(1, math.ceil((reset - now).total_seconds())),
            )
        room = left if room is None else min(room, left)
    assert room is not None
    return room


def prune_lease_days(
    *,
    now: datetime | None = None,
    keep_days: int | None = None,
    batch: int | None = None,
    max_batches: int | None = None,
) -> int:
    """Deletes daily lease counts older than `keep_days` UTC days, `batch` rows per statement,
    at most `max_batches` statements (the rest is left for the next sweep). Leasing only
    touches today's rows, so this never meets it. Returns how many it deleted."""
    keep_days = LEASE_DAY_KEEP_DAYS if keep_days is None else keep_days
    batch = batch or LEASE_DAY_PRUNE_BATCH
    max_batches = max_batches or LEASE_DAY_PRUNE_BATCHES
    before = utc_day(now) - timedelta(days=keep_days)
    deleted = 0
    for _ in range(max_batches):
        pks = list(
            LeaseDay.objects.filter(day__lt=before)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch]
        )
        if not pks:
            break
        deleted += LeaseDay.objects.filter(pk__in=pks).delete()[0]
        if len(pks) < batch:
            break
    return deleted


def offline_room(*, contributor_id: int, now: datetime | None = None) -> tuple[int, int]:
    """(quota, prompts left today) of the account, for uploads outside a lease, which take
    prompts like a lease does (uploads.ingest_samples, under the profile lock)."""
    now = now or timezone.now()
    quota = _quota(Reputation, contributor_id=contributor_id)
    used = _used(contributor_id=contributor_id, node_id=None, day=utc_day(now))
    return quota, max(quota - used, 0)


def count_offline(*, contributor_id: int, prompts: int, now: datetime | None = None) -> None:
    """Adds prompts taken by an upload outside a lease to the account's count today."""
    if prompts <= 0:
        return
    day = utc_day(now)
    rows = LeaseDay.objects.filter(contributor_id=contributor_id, day=day, node__isnull=True)
    if not rows.update(prompts=F("prompts") + prompts):
        LeaseDay.objects.create(contributor_id=contributor_id, day=day, prompts=prompts)


def count_leased(node: ComputeNode, prompts: int, *, now: datetime | None = None) -> None:
    """Adds `prompts` to today's counters of the node's owner and of the node. In the leasing
    transaction, under the owner's profile lock (so the check before and this add are one
    step for that contributor)."""
    if prompts <= 0:
        return
    day = utc_day(now)
    for node_id in (None, node.pk):
        rows = LeaseDay.objects.filter(contributor_id=node.owner_id, day=day)
        rows = rows.filter(node__isnull=True) if node_id is None else rows.filter(node_id=node_id)
        if rows.update(prompts=F("prompts") + prompts):
            continue
        try:
            with transaction.atomic():
                LeaseDay.objects.create(
                    contributor_id=node.owner_id, node_id=node_id, day=day, prompts=prompts
                )
        except IntegrityError:  # made meanwhile by a leaser not holding the profile lock
            rows.update(prompts=F("prompts") + prompts)


# --- what the contributor sees ------------------------------------------------------------------


def _shown(rep: ReputationFields | None, used: int, now: datetime) -> dict[str, Any]:
    quota = initial_quota() if rep is None else clamp_quota(rep.daily_quota)
    return {
        "trust": round(rep.trust, 4) if rep else 0.0,
        "streak": rep.streak if rep else 0,
        "valid": rep.valid if rep else 0,
        "invalid": rep.invalid if rep else 0,
        "expired": rep.expired if rep else 0,
        "flagged": rep.flagged if rep else 0,
        "daily_quota": quota,
        "leased_today": used,
        "left_today": max(quota - used, 0),
        "resets_at": resets_at(now),
    }


def standing(*, user: Any, now: datetime | None = None) -> dict[str, Any]:
    """A contributor's trust, streak, counts, daily quota and prompts leased today (UTC), and
    the same for each of their nodes (`nodes`: [{id, name, ...}])."""
    now = now or timezone.now()
    day = utc_day(now)
    used: dict[int | None, int] = dict(
        (node_id, n)
        for node_id, n in LeaseDay.objects.filter(contributor_id=user.pk, day=day).values_list(
            "node_id", "prompts"
        )
    )
    mine = _shown(Reputation.objects.filter(contributor_id=user.pk).first(), used.get(None, 0), now)
    reps = {r.node_id: r for r in NodeReputation.objects.filter(node__owner_id=user.pk)}
    mine["trust_streak"] = int(params()["trust_streak"])
    mine["nodes"] = [
        {"id": pk, "name": name, **_shown(reps.get(pk), used.get(pk, 0), now)}
        for pk, name in ComputeNode.objects.filter(owner_id=user.pk)
        .order_by("pk")
        .values_list("pk", "name")
    ]
    return mine

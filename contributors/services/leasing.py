"""Leases: handing out slots, and closing leases (release, expiry)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from contributors.models import (
    ComputeNode,
    KnownModel,
    Lease,
    LeaseItem,
    LeaseState,
    Profile,
    Slot,
)
from contributors.services import ledger, model_policy, spotchecks, trust
from contributors.services.accounts import ensure_profile
from contributors.services.errors import ServiceError
from contributors.services.uploads import stored_per_key
from scoring.models import PromptSet


def create_lease(
    *, node: ComputeNode, model: str, max_prompts: int, key: str | None = None
) -> tuple[Lease | None, bool]:
    """Hands the node up to `max_prompts` slots still short of their target, for `model`.
    Returns (lease or None when there is no work, whether it was made now).

    With a `key` the request is idempotent: the node's lease of that key is returned as it is
    (made False), so a client whose answer was lost asks again and gets the lease it never saw.

    Highest set priority first; within a set least-covered slots first, across the plan's
    temperatures. Slots for prompts not yet leased to this model are made first, in short
    transactions of their own; then one transaction takes slots with SELECT … FOR UPDATE SKIP
    LOCKED on PostgreSQL, so concurrent leasers never block on or double-book a slot (on SQLite
    the IMMEDIATE transaction serialises them).
    """
    served = {m.get("id") for m in node.models_served if isinstance(m, dict)}
    if model not in served:
        raise ServiceError(
            "model_not_served",
            f"Node {node.name!r} did not register model {model!r}; register it first.",
            status=400,
        )
    known = model_policy.model_for_leasing(model, owner_id=node.owner_id)
    max_prompts = min(max_prompts, settings.THINKPOOL["MAX_PROMPTS_PER_LEASE"])
    sets = [
        ps
        for ps in PromptSet.objects.filter(is_active=True).order_by("-priority", "pk")
        if ps.admits_model(model)
    ]
    frontiers = ledger.frontiers_for(sets=sets, model=model)
    if any(ledger.is_behind(ps, frontiers) for ps in sets):
        # Slots would be made: first the checks made again under the lock below, so that a
        # banned or capped caller gets no slots made (or an unreviewed model's allowance
        # spent) on its behalf. A retry of a keyed lease gets its lease, capped or not.
        existing = _keyed(node, key, model) if key is not None else None
        if existing is not None:
            return existing, False
        _check_caps(node, _profile(node, locked=False))
        trust.quota_room(node)
    for attempt in range(3):
        if attempt:
            frontiers = ledger.frontiers_for(sets=sets, model=model)
        more = [
            ledger.materialise(prompt_set=ps, model=known, need=max_prompts, frontiers=frontiers)
            for ps in sets
        ]
        try:
            lease, made = _lease_open_slots(
                node=node, model=known, max_prompts=max_prompts, sets=sets, key=key
            )
        except IntegrityError:
            # A concurrent request with the same key made it first (the unique constraint).
            if key is None:
                raise
            existing = _keyed(node, key, model)
            if existing is None:
                raise
            return existing, False
        # Empty-handed only because concurrent leasers took every open slot while prompts
        # without slots remain: make more and try again rather than say "no work".
        if lease is not None or not any(more):
            return lease, made
    return None, False


def _profile(node: ComputeNode, *, locked: bool) -> Profile:
    """The node owner's profile; `locked`: holding its row, which makes one contributor's lease
    requests take turns, so N concurrent requests cannot all pass the check-then-act caps."""
    profiles = Profile.objects.filter(user_id=node.owner_id)
    profile = (profiles.select_for_update() if locked else profiles).first()
    if profile is None:
        ensure_profile(user=node.owner)
        profile = (profiles.select_for_update() if locked else profiles).get()
    return profile


def _check_caps(node: ComputeNode, profile: Profile) -> None:
    """Refuses a banned contributor and one at a live-lease cap."""
    cfg = settings.THINKPOOL
    if profile.banned:
        raise ServiceError("banned", "This account may not lease work.", status=403)
    # The node's leases are some of the contributor's: both caps from one query.
    live = Lease.objects.filter(
        contributor_id=node.owner_id, state=LeaseState.LIVE, deadline__gt=timezone.now()
    )
    held = live.aggregate(mine=Count("pk"), node=Count("pk", filter=Q(node=node)))
    if held["node"] >= cfg["MAX_LIVE_LEASES_PER_NODE"]:
        raise ServiceError(
            "too_many_live_leases",
            f"This node already holds {cfg['MAX_LIVE_LEASES_PER_NODE']} live leases; "
            "finish or release one first.",
        )
    if held["mine"] >= cfg["MAX_LIVE_LEASES_PER_CONTRIBUTOR"]:
        raise ServiceError(
            "too_many_live_leases",
            f"This account already holds {cfg['MAX_LIVE_LEASES_PER_CONTRIBUTOR']} live leases.",
        )


def _keyed(node: ComputeNode, key: str, model: str) -> Lease | None:
    lease = Lease.objects.filter(node=node, key=key).first()
    if lease is not None and lease.model != model:
        raise ServiceError(
            "lease_key_conflict",
            f"Lease key {key!r} was used for model {lease.model!r}; use a new key per request.",
        )
    return lease


@transaction.atomic
def _lease_open_slots(
    *,
    node: ComputeNode,
    model: KnownModel,
    max_prompts: int,
    sets: list[PromptSet],
    key: str | None,
) -> tuple[Lease | None, bool]:
    now = timezone.now()
    user_id = node.owner_id
    profile = _profile(node, locked=True)
    if key is not None:
        # A concurrent retry that made it while this one waited for the profile lock.
        existing = _keyed(node, key, model.model_id)
        if existing is not None:
            return existing, False
    _check_caps(node, profile)
    # The daily quota (contributors.services.trust): checked and counted under the profile
    # lock, so concurrent requests of one contributor cannot both pass it.
    max_prompts = min(max_prompts, trust.quota_room(node, now=now))

    # Spot checks first (contributors.services.spotchecks): other contributors' items of this
    # model asked again of this one, a bounded share of the lease.
    cap = {ps.pk: ps.samples_per_prompt for ps in sets}
    replicas = spotchecks.take(
        model=model.model_id,
        user_id=user_id,
        limit=spotchecks.replica_room(max_prompts),
        cap=max(cap.values(), default=0),
    )
    replicas = [
        (check, min(give, cap[check.slot.prompt_set_id]))
        for check, give in replicas
        if check.slot.prompt_set_id in cap
    ]
    replica_slots = {check.slot_id for check, _ in replicas}

    picked: list[tuple[Slot, int, PromptSet]] = []
    for prompt_set in sets:
        need = max_prompts - len(replicas) - len(picked)
        if need <= 0:
            break
        # A slot this lease replicates is skipped below: take as many more.
        taken = ledger.take(prompt_set, model.model_id, need + len(replica_slots))
        mine = _held_by(user_id, model.model_id, taken)
        for slot in taken:
            give = min(prompt_set.samples_per_prompt - mine[slot.pk], slot.short_by)
            if (
                give > 0
                and slot.pk not in replica_slots
                and len(picked) < max_prompts - len(replicas)
            ):
                picked.append((slot, give, prompt_set))
    if not picked and not replicas:
        return None, False

    lease_seconds = min(
        [ps.lease_seconds for _, _, ps in picked]
        + [ps.lease_seconds for ps in sets if ps.pk in {c.slot.prompt_set_id for c, _ in replicas}]
    )
    lease = Lease.objects.create(
        node=node,
        contributor_id=user_id,
        model=model.model_id,
        key=key,
        lease_seconds=lease_seconds,
        deadline=now + timedelta(seconds=lease_seconds),
    )
    items = LeaseItem.objects.bulk_create(
        [LeaseItem(lease=lease, slot=slot, n=give) for slot, give, _ in picked]
        + [LeaseItem(lease=lease, slot=c.slot, n=give, replica=True) for c, give in replicas]
    )
    ledger.promise([(slot, give) for slot, give, _ in picked])
    spotchecks.attach(taken=replicas, items={i.slot_id: i for i in items if i.replica})
    spotchecks.plan(
        items=[i for i in items if not i.replica], contributor_id=user_id, model=model.model_id
    )
    trust.count_leased(node, len(items), now=now)
    return lease, True


def _held_by(user: int, model: str, slots: list[Slot]) -> dict[int, int]:
    """Per slot, how many samples `user` already has for its (prompt, model, temperature):
    stored, or promised by their live lease items. Leasing gives them at most the rest of the
    per-prompt cap, so a lease never asks for samples the upload would refuse."""
    if not slots:
        return {}
    stored = stored_per_key(user, model, {(s.prompt_id, s.temperature) for s in slots})
    held = {slot.pk: stored.get((slot.prompt_id, slot.temperature), 0) for slot in slots}
    for item in LeaseItem.objects.filter(
        slot__in=[slot.pk for slot in slots], lease__contributor=user, lease__state=LeaseState.LIVE
    ):
        held[item.slot_id] += item.pending
    return held


@transaction.atomic
def release_lease(*, lease: Lease) -> int:
    """Closes a live lease; what it did not receive goes back to the pool. Returns how many
    samples went back."""
    lease = Lease.objects.select_for_update().get(pk=lease.pk)
    if lease.state != LeaseState.LIVE:
        raise ServiceError("lease_not_live", f"This lease is already {lease.state}.")
    items = list(lease.items.all())
    now = timezone.now()
    if lease.deadline <= now:
        # Released only after its deadline: it was left to expire (hoarding) all the same.
        owed = _owed([lease], items)
    elif now - lease.created_at > timedelta(seconds=lease.lease_seconds):
        # Kept alive by heartbeats past one lease period, then given back untouched: the items
        # that received nothing were held, not worked on (hoarding, released just in time).
        owed = _owed([lease], [i for i in items if i.received == 0])
    else:
        owed = []
    returned = ledger.give_back(items)
    spotchecks.reopen(items)
    trust.record_expired(owed)
    lease.state = LeaseState.RELEASED
    lease.closed_at = timezone.now()
    lease.save(update_fields=["state", "closed_at"])
    return returned


def expire_overdue_leases(*, now: Any = None, batch: int = 200) -> int:
    """Closes live leases past their deadline; their unfinished slots go back to the pool.
    Works in short transactions of `batch` leases, skipping any lease that an upload holds."""
    now = now or timezone.now()
    expired = 0
    while True:
        with transaction.atomic():
            leases = list(
                Lease.objects.select_for_update(skip_locked=True)
                .filter(state=LeaseState.LIVE, deadline__lte=now)
                .order_by("deadline")[:batch]
            )
            items = list(LeaseItem.objects.filter(lease__in=leases))
            owed = _owed(leases, items)
            ledger.give_back(items)
            spotchecks.reopen(items)
            # Items left owing samples count against reputation (hoarding).
            trust.record_expired(owed)
            Lease.objects.filter(pk__in=[lease.pk for lease in leases]).update(
                state=LeaseState.EXPIRED, closed_at=now
            )
            expired += len(leases)
        if len(leases) < batch:
            return expired


def _owed(leases: list[Lease], items: list[LeaseItem]) -> list[tuple[int, int, int | None]]:
    """(item, contributor, node) of the items of expiring `leases` that still owe samples:
    read before give_back, which zeroes what they owe."""
    by_lease = {lease.pk: lease for lease in leases}
    return [
        (item.pk, by_lease[item.lease_id].contributor_id, by_lease[item.lease_id].node_id)
        for item in items
        if item.pending > 0
    ]

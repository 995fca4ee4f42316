"""Writes for the crowd side: tokens, nodes, leases and uploads.

Every function is keyword-only and transactional. Leasing and uploads keep the slot invariant
`filled + outstanding <= target` (also a CHECK constraint, so a bug fails loudly instead of
over-assigning).

Uploads are capped per (contributor, prompt, model, temperature) at the set's
`samples_per_prompt`, lease and offline uploads together, and a closed prompt takes none: with
scoring/disclosure.py (verdicts that need the gold stay hidden until the prompt closes) this
keeps verdicts from being an oracle for the gold.

One lock order everywhere, so nothing deadlocks: lease, prompts (shared, id order), slots (id
order), the contributor's profile. Leasing locks the profile first but takes slots with SKIP
LOCKED, so it never waits on a slot while holding the profile.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from contributors.models import (
    ApiToken,
    ComputeNode,
    Lease,
    LeaseItem,
    LeaseState,
    Profile,
    SampleOrigin,
    Slot,
    SlotFrontier,
    hash_token,
    normalise_temperature,
)
from scoring.models import Prompt, PromptSet, Sample
from scoring.tasks import queue_scoring

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request that is well-formed but not allowed now. `code` is machine-readable."""

    status = 409

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status


# --- accounts and tokens --------------------------------------------------------------------


@transaction.atomic
def ensure_profile(*, user: Any) -> Profile:
    profile, _ = Profile.objects.get_or_create(
        user=user, defaults={"handle": user.get_username()[:64]}
    )
    return profile


@transaction.atomic
def issue_token(*, user: Any, name: str = "") -> tuple[ApiToken, str]:
    """Returns the row and the raw token. The raw token is shown once and never stored."""
    ensure_profile(user=user)
    raw = ApiToken.generate()
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:10], digest=hash_token(raw))
    return token, raw


def revoke_token(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- nodes ----------------------------------------------------------------------------------


@transaction.atomic
def register_node(
    *,
    owner: Any,
    name: str,
    backend: str,
    models_served: list[dict[str, Any]],
    hardware: dict[str, Any],
    worker_version: str,
) -> tuple[ComputeNode, bool]:
    """Registers a node, or updates the caller's node of that name (a worker re-registering
    after a restart keeps its id)."""
    node, created = ComputeNode.objects.update_or_create(
        owner=owner,
        name=name,
        defaults={
            "backend": backend,
            "models_served": models_served,
            "hardware": hardware,
            "worker_version": worker_version,
            "last_heartbeat": timezone.now(),
        },
    )
    return node, created


@transaction.atomic
def heartbeat(*, node: ComputeNode) -> int:
    """Records a heartbeat and pushes the deadlines of the node's live leases forward."""
    now = timezone.now()
    ComputeNode.objects.filter(pk=node.pk).update(last_heartbeat=now)
    node.last_heartbeat = now
    # A heartbeat keeps a lease alive, but not forever: past MAX_LEASE_LIFETIME_S from its
    # creation the lease expires like any other, so a node that only heartbeats cannot hoard.
    lifetime = timedelta(seconds=settings.THINKPOOL["MAX_LEASE_LIFETIME_S"])
    extended = []
    live = Lease.objects.filter(node=node, state=LeaseState.LIVE, deadline__gt=now)
    for lease in live.select_for_update():
        new_deadline = min(
            now + timedelta(seconds=lease.lease_seconds), lease.created_at + lifetime
        )
        if new_deadline > lease.deadline:
            lease.deadline = new_deadline
            extended.append(lease)
    Lease.objects.bulk_update(extended, ["deadline"])
    return len(extended)


# --- leasing --------------------------------------------------------------------------------

# Slots are made lazily, per (set, model, temperature), a chunk of prompts at a time: a set of
# a million prompts served to a hundred models must not need a hundred million rows up front.
MATERIALISE_CHUNK = 512


def _untouched_slots(prompt_set: PromptSet, model: str, need: int) -> int:
    return _open_slots(prompt_set, model).filter(filled=0, outstanding=0)[:need].count()


def ensure_fresh_slots(*, prompt_set: PromptSet, model: str, need: int) -> bool:
    """Makes sure at least `need` untouched slots of the set exist for `model` while prompts
    without slots remain, making the next chunk if not. Each (set, model, temperature) moves
    its frontier in its own short transaction that commits before leasing starts, so the new
    slots are visible to every leaser at once and the frontier lock is held only briefly.
    Returns True if prompts without slots remain after this."""
    behind = _frontier_behind(prompt_set, model)
    if not behind or _untouched_slots(prompt_set, model, need) >= need:
        return behind
    for temperature in prompt_set.temperatures:
        temperature = normalise_temperature(temperature)
        key, _ = SlotFrontier.objects.get_or_create(
            prompt_set=prompt_set, model=model, temperature=temperature
        )
        with transaction.atomic():
            frontier = SlotFrontier.objects.select_for_update().get(pk=key.pk)
            # Another leaser may have made them while we waited for the lock.
            if _untouched_slots(prompt_set, model, need) >= need:
                continue
            ids = list(
                Prompt.objects.filter(prompt_set=prompt_set, pk__gt=frontier.last_prompt_id)
                .order_by("pk")
                .values_list("pk", flat=True)[: max(need, MATERIALISE_CHUNK)]
            )
            if not ids:
                continue
            Slot.objects.bulk_create(
                [
                    Slot(
                        prompt_id=pk,
                        prompt_set=prompt_set,
                        model=model,
                        temperature=temperature,
                        target=prompt_set.slot_target,
                    )
                    for pk in ids
                ],
                # Slots made before frontiers existed (an older database) are kept as they are.
                ignore_conflicts=True,
            )
            frontier.last_prompt_id = ids[-1]
            frontier.save(update_fields=["last_prompt_id"])
    return _frontier_behind(prompt_set, model)


def _frontier_behind(prompt_set: PromptSet, model: str) -> bool:
    """Whether some prompt of the set still has no slot for `model` at some temperature."""
    frontiers = dict(
        SlotFrontier.objects.filter(prompt_set=prompt_set, model=model).values_list(
            "temperature", "last_prompt_id"
        )
    )
    newest = (
        Prompt.objects.filter(prompt_set=prompt_set)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if newest is None:
        return False
    return any(frontiers.get(normalise_temperature(t), 0) < newest for t in prompt_set.temperatures)


def _take_slots(prompt_set: PromptSet, model: str, need: int) -> list[Slot]:
    """Locks up to `need` open slots, least covered first, skipping any another leaser holds."""
    return list(
        _open_slots(prompt_set, model)
        .order_by("filled", "outstanding", "pk")
        .select_for_update(skip_locked=True, of=("self",))[:need]
    )


def _open_slots(prompt_set: PromptSet, model: str):  # type: ignore[no-untyped-def]
    # A prompt closed to collection is never leased again (its gold may be public).
    return Slot.objects.filter(
        prompt_set=prompt_set, model=model, prompt__closed_at__isnull=True
    ).filter(target__gt=F("filled") + F("outstanding"))


_Key = tuple[int, str, float]  # (prompt, model, temperature): a slot's key


def _stored_per_key(user: Any, keys: set[_Key]) -> dict[_Key, int]:
    """How many samples `user` has stored for each (prompt, model, temperature) of `keys`."""
    wanted = Q(pk__in=[])
    for prompt_id, model, temperature in keys:
        wanted |= Q(prompt_id=prompt_id, model=model, temperature=temperature)
    return {
        (row["prompt_id"], row["model"], row["temperature"]): row["n"]
        for row in Sample.objects.filter(wanted, contributor=user)
        .order_by()
        .values("prompt_id", "model", "temperature")
        .annotate(n=Count("pk"))
    }


def _held_by(user: Any, slots: list[Slot]) -> dict[int, int]:
    """Per slot, how many samples `user` already has for its (prompt, model, temperature):
    stored, or promised by their live lease items. Leasing gives them at most the rest of the
    per-prompt cap, so a lease never asks for samples the upload would refuse."""
    if not slots:
        return {}
    stored = _stored_per_key(user, {(s.prompt_id, s.model, s.temperature) for s in slots})
    held = {
        slot.pk: stored.get((slot.prompt_id, slot.model, slot.temperature), 0) for slot in slots
    }
    for item in LeaseItem.objects.filter(
        slot__in=[slot.pk for slot in slots], lease__contributor=user, lease__state=LeaseState.LIVE
    ):
        held[item.slot_id] += item.pending
    return held


def create_lease(*, node: ComputeNode, model: str, max_prompts: int) -> Lease | None:
    """Hands the node up to `max_prompts` slots still short of their target, for `model`.

    Highest set priority first, least-covered slots first. Slots for prompts not yet leased
    to this model are made first, in short transactions of their own; then one transaction
    takes slots with SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL, so concurrent leasers
    never block on or double-book a slot (on SQLite the IMMEDIATE transaction serialises them).
    """
    served = {m.get("id") for m in node.models_served if isinstance(m, dict)}
    if model not in served:
        raise ServiceError(
            "model_not_served",
            f"Node {node.name!r} did not register model {model!r}; register it first.",
            status=400,
        )
    max_prompts = min(max_prompts, settings.THINKPOOL["MAX_PROMPTS_PER_LEASE"])
    sets = [
        ps
        for ps in PromptSet.objects.filter(is_active=True).order_by("-priority", "pk")
        if ps.admits_model(model)
    ]
    ensure_profile(user=node.owner)
    for _ in range(3):
        more = [ensure_fresh_slots(prompt_set=ps, model=model, need=max_prompts) for ps in sets]
        lease = _lease_open_slots(node=node, model=model, max_prompts=max_prompts, sets=sets)
        # Empty-handed only because concurrent leasers took every open slot while prompts
        # without slots remain: make more and try again rather than say "no work".
        if lease is not None or not any(more):
            return lease
    return None


@transaction.atomic
def _lease_open_slots(
    *, node: ComputeNode, model: str, max_prompts: int, sets: list[PromptSet]
) -> Lease | None:
    cfg = settings.THINKPOOL
    now = timezone.now()
    user = node.owner
    # The caps below are check-then-act: holding the contributor's profile row makes one
    # contributor's lease requests take turns, so N concurrent requests cannot all pass them.
    profile = Profile.objects.select_for_update().get(user=user)
    if profile.banned:
        raise ServiceError("banned", "This account may not lease work.", status=403)
    live = Lease.objects.filter(state=LeaseState.LIVE, deadline__gt=now)
    if live.filter(node=node).count() >= cfg["MAX_LIVE_LEASES_PER_NODE"]:
        raise ServiceError(
            "too_many_live_leases",
            f"This node already holds {cfg['MAX_LIVE_LEASES_PER_NODE']} live leases; "
            "finish or release one first.",
        )
    if live.filter(contributor=user).count() >= cfg["MAX_LIVE_LEASES_PER_CONTRIBUTOR"]:
        raise ServiceError(
            "too_many_live_leases",
            f"This account already holds {cfg['MAX_LIVE_LEASES_PER_CONTRIBUTOR']} live leases.",
        )

    picked: list[tuple[Slot, int, PromptSet]] = []
    for prompt_set in sets:
        need = max_prompts - len(picked)
        if need <= 0:
            break
        taken = _take_slots(prompt_set, model, need)
        held = _held_by(user, taken)
        for slot in taken:
            give = min(prompt_set.samples_per_prompt - held[slot.pk], slot.short_by)
            if give > 0:
                picked.append((slot, give, prompt_set))
    if not picked:
        return None

    lease_seconds = min(ps.lease_seconds for _, _, ps in picked)
    lease = Lease.objects.create(
        node=node,
        contributor=user,
        model=model,
        lease_seconds=lease_seconds,
        deadline=now + timedelta(seconds=lease_seconds),
    )
    LeaseItem.objects.bulk_create(
        [LeaseItem(lease=lease, slot=slot, n=give) for slot, give, _ in picked]
    )
    for slot, give, _ in picked:
        slot.outstanding += give
    Slot.objects.bulk_update([slot for slot, _, _ in picked], ["outstanding"])
    return lease


def _close_items(items: list[LeaseItem]) -> int:
    """Gives the unfulfilled part of each item back to its slot. The caller holds the locks of
    the items' leases; the slots are locked here, all at once and in id order (the order every
    writer uses), so two closers or a closer and an upload cannot deadlock."""
    returned_total = 0
    by_slot: dict[int, int] = defaultdict(int)
    for item in items:
        pending = item.pending
        if pending:
            item.returned += pending
            by_slot[item.slot_id] += pending
            returned_total += pending
    if by_slot:
        LeaseItem.objects.bulk_update(items, ["returned"])
        slots = list(Slot.objects.select_for_update().filter(pk__in=by_slot).order_by("pk"))
        for slot in slots:
            slot.outstanding -= by_slot[slot.pk]
        Slot.objects.bulk_update(slots, ["outstanding"])
    return returned_total


@transaction.atomic
def release_lease(*, lease: Lease) -> int:
    lease = Lease.objects.select_for_update().get(pk=lease.pk)
    if lease.state != LeaseState.LIVE:
        raise ServiceError("lease_not_live", f"This lease is already {lease.state}.")
    returned = _close_items(list(lease.items.all()))
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
            _close_items(list(LeaseItem.objects.filter(lease__in=leases)))
            for lease in leases:
                lease.state = LeaseState.EXPIRED
                lease.closed_at = now
            Lease.objects.bulk_update(leases, ["state", "closed_at"])
            expired += len(leases)
        if len(leases) < batch:
            return expired


# --- uploads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleIn:
    """One validated sample from an upload (see contributors.api.serializers)."""

    client_id: UUID
    completion: str
    reasoning: str | None
    model: str
    model_revision: str
    sampling: dict[str, Any]
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    generation_ms: int | None
    item: int | None = None  # a lease item, for uploads to a lease
    prompt: int | None = None  # a prompt id, for offline uploads


@dataclass
class IngestResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, client_id: Any, code: str, message: str, fields: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if fields is not None:
            error["fields"] = fields
        shown = None if client_id is None else str(client_id)[:64]
        self.rejected.append({"client_id": shown, "error": error})


_Pending = list[tuple[SampleIn, Sample, LeaseItem | None]]


def _lock_prompts(ids: set[int]) -> dict[int, Prompt]:
    """The prompts an upload touches, with their sets. On PostgreSQL they are locked FOR SHARE
    (in id order): uploads do not block each other, but `close_prompts` waits for uploads in
    flight, and an upload that waited for a close sees the prompt closed. (SQLite's IMMEDIATE
    transactions already serialise writers.)"""
    if not ids:
        return {}
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Prompt._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR SHARE",  # noqa: S608
                [sorted(ids)],
            )
    return {
        p.pk: p
        for p in Prompt.objects.filter(pk__in=ids)
        .select_related("prompt_set")
        .defer("messages", "metadata")
    }


def _lock_profile(user: Any) -> Profile:
    """The contributor's profile, locked: one contributor's uploads take turns on it for the
    checks that count what is already stored (per-prompt cap, daily quota), so two concurrent
    uploads cannot both fit in the same room. Taken after the slots (the one lock order)."""
    profile = Profile.objects.select_for_update().filter(user=user).first()
    if profile is None:
        ensure_profile(user=user)
        profile = Profile.objects.select_for_update().get(user=user)
    return profile


def _within_caps(
    user: Any, to_store: _Pending, prompts: dict[int, Prompt], result: IngestResult
) -> _Pending:
    """Keeps what fits; rejects the rest, per sample.

    Per-prompt cap: a contributor's samples per (prompt, model, temperature) are at most the
    set's `samples_per_prompt`, lease and offline uploads together, whatever was stored before.
    Without it, uploads would be a way to try every answer; with it, a contributor cannot
    judge more guesses than the plan asks of them. Then the daily quota, if they have one.
    """
    if not to_store:
        return to_store
    profile = _lock_profile(user)
    stored = _stored_per_key(
        user, {(sample.prompt_id, sample.model, sample.temperature) for _, sample, _ in to_store}
    )
    kept: _Pending = []
    for s, sample, item in to_store:
        key = (sample.prompt_id, sample.model, sample.temperature)
        cap = prompts[sample.prompt_id].prompt_set.samples_per_prompt
        if stored.get(key, 0) >= cap:
            result.reject(
                s.client_id,
                "per_prompt_cap",
                f"You already have {cap} samples for this prompt, model and temperature; "
                "that is all the plan asks of one contributor.",
            )
            continue
        stored[key] = stored.get(key, 0) + 1
        kept.append((s, sample, item))

    quota = profile.quota_samples_per_day
    if quota is None:
        return kept
    since = timezone.now() - timedelta(days=1)
    room = max(quota - Sample.objects.filter(contributor=user, received_at__gte=since).count(), 0)
    for s, _, _ in kept[room:]:
        result.reject(
            s.client_id, "quota_exceeded", f"This account may upload {quota} samples a day."
        )
    return kept[:room]


def _offline_problem(s: SampleIn, prompt: Prompt | None) -> tuple[str, str] | None:
    """Why an offline sample cannot count for its prompt, or None. Offline samples fill the
    same slots as leased ones, so they keep the same plan: an open prompt of an active set,
    a model the set takes, one of its temperatures."""
    if prompt is None:
        return "unknown_prompt", "No such prompt."
    if prompt.closed_at is not None:
        return "prompt_closed", "This prompt is closed to collection."
    prompt_set = prompt.prompt_set
    if not prompt_set.is_active:
        return "unknown_prompt", "No such prompt."
    if not prompt_set.admits_model(s.model):
        return "model_not_admitted", f"This prompt's set does not take model {s.model!r}."
    plan = sorted({normalise_temperature(t) for t in prompt_set.temperatures})
    if normalise_temperature(s.sampling["temperature"]) not in plan:
        return (
            "sampling_mismatch",
            f"This prompt's set asks for temperature {', '.join(str(t) for t in plan)}.",
        )
    return None


@transaction.atomic
def ingest_samples(
    *,
    user: Any,
    samples: list[SampleIn],
    lease: Lease | None = None,
    node: ComputeNode | None = None,
    result: IngestResult | None = None,
) -> IngestResult:
    """Stores what is acceptable, in one transaction, and reports per sample.

    A client_id already stored for this contributor is a duplicate (the same answer a retry
    gets), never a second row. A sample for an item whose lease expired or was released is
    accepted as a late result: counted if its slot is still short, else kept as an extra.
    A sample for a closed prompt, or beyond the per-prompt cap, is rejected and not stored.
    Scoring is queued only after commit.
    """
    result = result or IngestResult()
    if lease is not None:
        # Serialises uploads to one lease, so two retries of the same batch cannot both count.
        lease = Lease.objects.select_for_update().get(pk=lease.pk)
        node = lease.node

    # Duplicates: already stored, or repeated within this request.
    wanted_ids = {s.client_id for s in samples}
    existing = {
        row["client_id"]: row
        for row in Sample.objects.filter(client_id__in=wanted_ids).values(
            "id", "client_id", "contributor_id"
        )
    }
    fresh: list[SampleIn] = []
    seen_here: set[UUID] = set()
    for s in samples:
        row = existing.get(s.client_id)
        if row is not None:
            if row["contributor_id"] != user.pk:
                result.reject(
                    s.client_id, "client_id_conflict", "This client_id belongs to another sample."
                )
            else:
                result.duplicates.append({"client_id": str(s.client_id), "id": row["id"]})
            continue
        if s.client_id in seen_here:
            result.reject(
                s.client_id, "client_id_repeated", "This client_id appears twice in the request."
            )
            continue
        seen_here.add(s.client_id)
        fresh.append(s)

    # Resolve where each fresh sample belongs: a lease item (and its slot) or a bare prompt.
    items: dict[int, LeaseItem] = {}
    if lease is not None:
        item_ids = {s.item for s in fresh if s.item is not None}
        items = {i.pk: i for i in LeaseItem.objects.filter(lease=lease, pk__in=item_ids)}
    slot_ids = {i.slot_id for i in items.values()}
    # A slot's prompt never changes: read it before locking, to lock prompts before slots.
    slot_prompts = dict(Slot.objects.filter(pk__in=slot_ids).values_list("pk", "prompt_id"))
    prompts = _lock_prompts(
        {s.prompt for s in fresh if s.prompt is not None} | set(slot_prompts.values())
    )
    # Offline samples count towards the slot of their (prompt, model, temperature) if it has one.
    offline_problems: dict[UUID, tuple[str, str]] = {}
    offline_keys = Q(pk__in=[])
    for s in fresh:
        if lease is not None:
            continue
        problem = _offline_problem(s, prompts.get(s.prompt or -1))
        if problem is not None:
            offline_problems[s.client_id] = problem
            continue
        temperature = normalise_temperature(s.sampling["temperature"])
        offline_keys |= Q(prompt_id=s.prompt, model=s.model, temperature=temperature)
    # Lock the slots touched, in id order (one order everywhere, so no deadlocks).
    slots: dict[int, Slot] = {
        s.pk: s
        for s in Slot.objects.select_for_update()
        .filter(Q(pk__in=slot_ids) | offline_keys)
        .order_by("pk")
    }
    slot_by_key = {(s.prompt_id, s.model, s.temperature): s for s in slots.values()}

    to_store: _Pending = []
    per_item: dict[int, int] = defaultdict(int)
    for s in fresh:
        temperature = normalise_temperature(s.sampling["temperature"])
        if lease is not None:
            item = items.get(s.item or -1)
            if item is None:
                result.reject(s.client_id, "unknown_item", "No such item in this lease.")
                continue
            slot = slots[item.slot_id]
            if prompts[slot.prompt_id].closed_at is not None:
                result.reject(s.client_id, "prompt_closed", "This prompt is closed to collection.")
                continue
            if s.model != lease.model:
                result.reject(
                    s.client_id, "model_mismatch", f"This lease is for model {lease.model!r}."
                )
                continue
            if temperature != slot.temperature:
                result.reject(
                    s.client_id,
                    "sampling_mismatch",
                    f"This item asks for temperature {slot.temperature}.",
                )
                continue
            if item.received + per_item[item.pk] >= item.n:
                result.reject(s.client_id, "item_full", f"This item asked for {item.n} samples.")
                continue
            per_item[item.pk] += 1
            prompt_id = slot.prompt_id
        else:
            problem = offline_problems.get(s.client_id)
            if problem is not None:
                result.reject(s.client_id, *problem)
                continue
            item, prompt_id = None, prompts[s.prompt or -1].pk
        to_store.append(
            (
                s,
                Sample(
                    client_id=s.client_id,
                    prompt_id=prompt_id,
                    contributor=user,
                    model=s.model,
                    model_revision=s.model_revision,
                    temperature=temperature,
                    sampling=s.sampling,
                    completion=s.completion,
                    reasoning=s.reasoning or "",
                    finish_reason=s.finish_reason,
                    prompt_tokens=s.prompt_tokens,
                    completion_tokens=s.completion_tokens,
                    generation_ms=s.generation_ms,
                ),
                item,
            )
        )
    to_store = _within_caps(user, to_store, prompts, result)
    if not to_store:
        return result

    # Count each sample towards its slot: the item's promise first, else a still-short slot
    # (late result), else keep it as an extra.
    touched_items: dict[int, LeaseItem] = {}
    for _, sample, item in to_store:
        if item is None:
            offline_slot = slot_by_key.get((sample.prompt_id, sample.model, sample.temperature))
            if offline_slot is not None and offline_slot.short_by > 0:
                offline_slot.filled += 1
            else:
                sample.counted = False
            continue
        slot = slots[item.slot_id]
        if item.pending > 0:
            slot.outstanding -= 1
            slot.filled += 1
        elif slot.short_by > 0:
            slot.filled += 1
        else:
            sample.counted = False
        item.received += 1
        touched_items[item.pk] = item

    try:
        with transaction.atomic():
            created = Sample.objects.bulk_create([sample for _, sample, _ in to_store])
    except IntegrityError:
        # Another request stored one of these client_ids between our check and our insert.
        # Roll this request back entirely; the client's retry sees them as duplicates.
        raise ServiceError(
            "concurrent_upload",
            "The same samples are being uploaded concurrently; retry.",
            status=409,
        ) from None
    SampleOrigin.objects.bulk_create(
        [
            SampleOrigin(sample=sample, node=node, lease_item=item)
            for (_, _, item), sample in zip(to_store, created, strict=True)
        ]
    )
    if touched_items:
        LeaseItem.objects.bulk_update(list(touched_items.values()), ["received"])
    if slots:
        Slot.objects.bulk_update(list(slots.values()), ["filled", "outstanding"])
    if (
        lease is not None
        and lease.state == LeaseState.LIVE
        and not any(i.pending for i in LeaseItem.objects.filter(lease=lease))
    ):
        lease.state = LeaseState.DONE
        lease.closed_at = timezone.now()
        lease.save(update_fields=["state", "closed_at"])

    ids = [sample.pk for sample in created]
    result.accepted.extend(
        {"client_id": str(sample.client_id), "id": sample.pk} for sample in created
    )
    transaction.on_commit(lambda: queue_scoring(ids))
    return result

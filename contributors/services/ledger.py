"""The slot ledger: the one owner of `Slot.filled` and `Slot.outstanding`.

Invariant, per slot, kept under the slot's row lock (and a CHECK constraint, so a bug fails
loudly instead of over-assigning):

    0 <= filled + outstanding <= target
    filled      = samples stored with the slot's (prompt, model, temperature) and `counted`
    outstanding = sum of `pending` over the items of its live leases, but replicas

A replica item (`LeaseItem.replica`, a spot check: contributors.services.spotchecks) asks a
second contributor for samples of a slot already served: it is never part of `outstanding`,
and its samples are stored uncounted (`counted=False`, `replica=True`).

Every change to either goes through a function here: leasing promises (`promise`), uploads
count (`count_received`), closing a lease gives back (`give_back`), deleting a lease item in any
way gives back (`_give_back_deleted`, a pre_delete receiver; nodes are deleted through
services.nodes.delete_node, which releases their leases first), and `check` recomputes both
from the rows (`manage.py check_ledger`).

Slots are made lazily (`materialise`), per (set, model, temperature), a chunk of prompts at a
time, along `Prompt.seq`: a set of a million prompts served to a hundred models must not need a
hundred million rows up front, and a prompt whose id committed late is never skipped.

Lock order (one everywhere, so nothing deadlocks): lease, prompts (shared, id order), slots (id
order), the contributor's profile. Leasing locks the profile first but takes slots with SKIP
LOCKED, so it never waits on a slot while holding the profile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Count, F, IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from contributors.models import (
    KnownModel,
    LeaseItem,
    LeaseState,
    SampleOrigin,
    Slot,
    SlotFrontier,
    normalise_temperature,
)
from contributors.services import model_policy
from contributors.services.bulk import set_columns
from scoring import counters
from scoring.models import Prompt, PromptSet, Sample
from scoring.signals import prompts_closed

MATERIALISE_CHUNK = 512


# --- making slots -----------------------------------------------------------------------------


def plan_temperatures(prompt_set: PromptSet) -> list[float]:
    return sorted({normalise_temperature(t) for t in prompt_set.temperatures})


def frontiers_for(*, sets: Sequence[PromptSet], model: str) -> dict[tuple[int, float], int]:
    """(set, temperature) -> last seq with slots, for every set at once (one query)."""
    return {
        (row["prompt_set_id"], row["temperature"]): row["last_seq"]
        for row in SlotFrontier.objects.filter(prompt_set__in=sets, model=model).values(
            "prompt_set_id", "temperature", "last_seq"
        )
    }


def is_behind(prompt_set: PromptSet, frontiers: dict[tuple[int, float], int]) -> bool:
    """Whether some prompt of the set has no slot yet at some temperature of its plan."""
    return any(
        frontiers.get((prompt_set.pk, t), 0) < prompt_set.last_prompt_seq
        for t in plan_temperatures(prompt_set)
    )


def open_slots(prompt_set: PromptSet, model: str) -> QuerySet[Slot]:
    # A prompt closed to collection is never leased again (its gold may be public).
    return Slot.objects.filter(
        prompt_set=prompt_set, model=model, prompt__closed_at__isnull=True
    ).filter(target__gt=F("filled") + F("outstanding"))


def _untouched(prompt_set: PromptSet, model: str, temperature: float, need: int) -> int:
    return (
        open_slots(prompt_set, model)
        .filter(temperature=temperature, filled=0, outstanding=0)[:need]
        .count()
    )


def materialise(
    *,
    prompt_set: PromptSet,
    model: KnownModel,
    need: int,
    frontiers: dict[tuple[int, float], int],
) -> bool:
    """Makes sure each of the plan's temperatures has at least `need` untouched slots of the set
    for `model` while prompts without slots remain, making the next chunk where not. Each
    (set, model, temperature) moves its frontier in its own short transaction that commits
    before leasing starts, so the new slots are visible to every leaser at once and the
    frontier lock is held only briefly. Returns True if prompts without slots remain."""
    newest = prompt_set.last_prompt_seq
    room = model_policy.remaining_allowance(model)
    if room == 0 and model.model_id not in prompt_set.models_allowed:
        return False  # out of allowance: no slot could be made, so none is looked for
    behind = [
        t for t in plan_temperatures(prompt_set) if frontiers.get((prompt_set.pk, t), 0) < newest
    ]
    remaining = False
    for temperature in behind:
        if _untouched(prompt_set, model.model_id, temperature, need) >= need:
            remaining = True
            continue
        key, _ = SlotFrontier.objects.get_or_create(
            prompt_set=prompt_set, model=model.model_id, temperature=temperature
        )
        with transaction.atomic():
            frontier = SlotFrontier.objects.select_for_update().get(pk=key.pk)
            # Another leaser may have made them while we waited for the lock.
            if frontier.last_seq >= newest:
                continue
            if _untouched(prompt_set, model.model_id, temperature, need) >= need:
                remaining = True
                continue
            rows = list(
                Prompt.objects.filter(prompt_set=prompt_set, seq__gt=frontier.last_seq)
                .order_by("seq")
                .values_list("pk", "seq", "closed_at")[: max(need, MATERIALISE_CHUNK)]
            )
            # A closed prompt gets no slot (it is never leased), and a slot made another way
            # (a test, a repair) is kept as it is: neither is charged to the allowance.
            existing = set(
                Slot.objects.filter(
                    prompt_id__in=[pk for pk, _, _ in rows],
                    model=model.model_id,
                    temperature=temperature,
                ).values_list("prompt_id", flat=True)
            )
            wanted = [pk for pk, _, closed in rows if closed is None and pk not in existing]
            granted = model_policy.slot_allowance(
                model=model, prompt_set=prompt_set, wanted=len(wanted)
            )
            if granted < len(wanted):
                # Out of allowance: the frontier stops at the last prompt given a slot.
                cut = wanted[granted - 1] if granted else None
                rows = rows[: [pk for pk, _, _ in rows].index(cut) + 1] if cut else []
                wanted = wanted[:granted]
            if not rows:
                continue
            Slot.objects.bulk_create(
                [
                    Slot(
                        prompt_id=pk,
                        prompt_set=prompt_set,
                        model=model.model_id,
                        temperature=temperature,
                        target=prompt_set.slot_target,
                    )
                    for pk in wanted
                ]
            )
            counters.add({counters.SLOTS_TARGET: prompt_set.slot_target * len(wanted)})
            frontier.last_seq = rows[-1][1]
            frontier.save(update_fields=["last_seq"])
            remaining = remaining or frontier.last_seq < newest
    return remaining


# --- promising and counting -------------------------------------------------------------------


def take(prompt_set: PromptSet, model: str, need: int) -> list[Slot]:
    """Locks up to `need` open slots, least covered first and prompt by prompt across the
    plan's temperatures, skipping any another leaser holds (SKIP LOCKED)."""
    return list(
        open_slots(prompt_set, model)
        .order_by("filled", "outstanding", "prompt_id", "temperature")
        .select_for_update(skip_locked=True, of=("self",))[:need]
    )


def promise(picked: Sequence[tuple[Slot, int]]) -> None:
    """A lease's items were made for these locked slots: `give` samples each are outstanding."""
    for slot, give in picked:
        slot.outstanding += give
    set_columns(Slot, ["outstanding"], [(slot.pk, slot.outstanding) for slot, _ in picked])


def give_back(items: list[LeaseItem]) -> int:
    """Gives the unfulfilled part of each item back to its slot. The caller holds the locks of
    the items' leases; the slots are locked here, all at once and in id order (the order every
    writer uses), so two closers or a closer and an upload cannot deadlock."""
    returned_total = 0
    by_slot: dict[int, int] = defaultdict(int)
    for item in items:
        pending = item.pending
        if pending:
            item.returned += pending
            if not item.replica:  # a replica's promise was never the slot's
                by_slot[item.slot_id] += pending
            returned_total += pending
    if returned_total:
        set_columns(LeaseItem, ["returned"], [(i.pk, i.returned) for i in items])
    if by_slot:
        slots = list(Slot.objects.select_for_update().filter(pk__in=by_slot).order_by("pk"))
        # A closed prompt's slot wants nothing more (_close_slots): what comes back shrinks
        # its target too, so it never re-enters the pool of open slots.
        closed = set(
            Prompt.objects.filter(
                pk__in={s.prompt_id for s in slots}, closed_at__isnull=False
            ).values_list("pk", flat=True)
        )
        shrunk = 0
        for slot in slots:
            slot.outstanding -= by_slot[slot.pk]
            if slot.prompt_id in closed:
                slot.target -= by_slot[slot.pk]
                shrunk += by_slot[slot.pk]
        set_columns(
            Slot,
            ["outstanding", "target"],
            [(slot.pk, slot.outstanding, slot.target) for slot in slots],
        )
        if shrunk:
            counters.add({counters.SLOTS_TARGET: -shrunk})
    return returned_total


def count_received(
    pending: Iterable[tuple[Sample, LeaseItem | None]],
    slots: dict[int, Slot],
    slot_by_key: dict[tuple[int, str, float], Slot],
) -> tuple[list[LeaseItem], int]:
    """Counts each stored sample towards its slot (all locked by the caller): the item's promise
    first, else a still-short slot (a late result), else it is kept as an extra
    (`counted=False`). Offline samples count towards the slot of their key, if it exists and is
    short. Sets `sample.counted`; saves the slots; returns the items whose `received` grew
    (the caller saves them once the samples exist) and how many samples filled a slot (for
    the caller's counters.SLOTS_FILLED)."""
    touched: dict[int, LeaseItem] = {}
    filled = 0
    for sample, item in pending:
        if item is None:
            slot = slot_by_key.get((sample.prompt_id, sample.model, sample.temperature))
            if slot is not None and slot.short_by > 0:
                slot.filled += 1
                filled += 1
            else:
                sample.counted = False
            continue
        slot = slots[item.slot_id]
        if item.replica:
            # A spot check's sample: compared, never counted (spotchecks; Sample.replica).
            sample.counted = False
            sample.replica = True
        elif item.pending > 0:
            slot.outstanding -= 1
            slot.filled += 1
            filled += 1
        elif slot.short_by > 0:
            slot.filled += 1
            filled += 1
        else:
            sample.counted = False
        item.received += 1
        touched[item.pk] = item
    set_columns(
        Slot, ["filled", "outstanding"], [(s.pk, s.filled, s.outstanding) for s in slots.values()]
    )
    return list(touched.values()), filled


@receiver(prompts_closed, dispatch_uid="ledger-close-slots")
def _close_slots(sender: Any, prompt_ids: Sequence[int], **kwargs: Any) -> None:
    """Prompts closed to collection want no more samples: their slots' targets shrink to what
    they have and are promised, which takes them out of the open pool (and the partial index
    every lease walks). The closing transaction holds the prompts (FOR UPDATE); the slots are
    locked here, in id order, as every writer does."""
    slots = list(Slot.objects.select_for_update().filter(prompt_id__in=prompt_ids).order_by("pk"))
    shrunk = [(s, s.target - s.filled - s.outstanding) for s in slots]
    shrunk = [(s, d) for s, d in shrunk if d > 0]
    set_columns(Slot, ["target"], [(s.pk, s.target - d) for s, d in shrunk])
    if shrunk:
        counters.add({counters.SLOTS_TARGET: -sum(d for _, d in shrunk)})


@receiver(pre_delete, sender=LeaseItem, dispatch_uid="ledger-give-back-deleted")
def _give_back_deleted(sender: Any, instance: LeaseItem, **kwargs: Any) -> None:
    """However an item of a live lease is deleted (code that deletes a lease, a prompt's
    cascade), what it still promised goes back to its slot first. Leases are PROTECTed from
    their node's and user's cascades (services.nodes.delete_node releases them instead), so
    this is the last line, one item at a time: its lease is locked first (the one lock order)
    and the item read again under it, as an upload in flight may have changed it."""
    from contributors.models import Lease

    lease = Lease.objects.select_for_update().filter(pk=instance.lease_id).first()
    if lease is None or lease.state != LeaseState.LIVE:
        return
    fresh = LeaseItem.objects.filter(pk=instance.pk).first()
    if fresh is not None:
        give_back([fresh])


# --- checking ---------------------------------------------------------------------------------


@dataclass
class LedgerReport:
    slots_checked: int = 0
    slots_wrong: list[dict[str, Any]] = field(default_factory=list)
    items_wrong: list[dict[str, Any]] = field(default_factory=list)
    repaired: bool = False

    @property
    def clean(self) -> bool:
        return not self.slots_wrong and not self.items_wrong


def _real_received() -> Subquery:
    return Subquery(
        SampleOrigin.objects.filter(lease_item=OuterRef("pk"))
        .order_by()
        .values("lease_item")
        .annotate(n=Count("pk"))
        .values("n"),
        output_field=IntegerField(),
    )


def _items_with_truth() -> QuerySet[LeaseItem]:
    return LeaseItem.objects.annotate(
        real_received=Coalesce(_real_received(), 0), lease_state=F("lease__state")
    )


def _slots_with_truth() -> QuerySet[Slot]:
    counted = (
        Sample.objects.filter(
            prompt_id=OuterRef("prompt_id"),
            model=OuterRef("model"),
            temperature=OuterRef("temperature"),
            counted=True,
        )
        .order_by()
        .values("prompt_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    promised = (
        LeaseItem.objects.filter(slot=OuterRef("pk"), lease__state=LeaseState.LIVE, replica=False)
        .order_by()
        .values("slot")
        .annotate(n=Sum(F("n") - F("received") - F("returned")))
        .values("n")
    )
    return Slot.objects.annotate(
        real_filled=Coalesce(Subquery(counted, output_field=IntegerField()), 0),
        real_outstanding=Coalesce(Subquery(promised, output_field=IntegerField()), 0),
    )


def check(*, repair: bool = False, batch: int = 1000) -> LedgerReport:
    """Recomputes the ledger from its rows: each item's `received` (its samples), each closed
    lease's items owing nothing, each slot's `filled` and `outstanding`; with `repair`, sets
    them right, each under the row locks an upload would take, and rebuilds the public counters
    (scoring.counters). Safe beside live traffic: a row is recomputed again under its lock
    before it is written."""
    report = LedgerReport()
    # Items first: a slot's `outstanding` is the sum of its items' pending.
    rows = _items_with_truth().values(  # type: ignore[misc]  # annotations, not fields
        "pk", "lease_id", "n", "received", "returned", "real_received", "lease_state"
    )
    for row in rows.iterator(chunk_size=batch):
        pending = max(row["n"] - row["received"] - row["returned"], 0)
        owes_closed = row["lease_state"] != LeaseState.LIVE and pending > 0
        if row["received"] != row["real_received"] or owes_closed:
            report.items_wrong.append(
                {
                    "item": row["pk"],
                    "lease": row["lease_id"],
                    "received": row["received"],
                    "real_received": row["real_received"],
                    "pending_on_closed_lease": pending if owes_closed else 0,
                }
            )
    if repair and report.items_wrong:
        _repair_items([row["item"] for row in report.items_wrong])

    last = 0
    while True:
        chunk = list(_slots_with_truth().filter(pk__gt=last).order_by("pk")[:batch])
        if not chunk:
            break
        last = chunk[-1].pk
        report.slots_checked += len(chunk)
        wrong = [
            s
            for s in chunk
            if s.filled != s.real_filled or s.outstanding != s.real_outstanding  # type: ignore[attr-defined]
        ]
        report.slots_wrong.extend(
            {
                "slot": s.pk,
                "filled": s.filled,
                "real_filled": s.real_filled,  # type: ignore[attr-defined]
                "outstanding": s.outstanding,
                "real_outstanding": s.real_outstanding,  # type: ignore[attr-defined]
                "target": s.target,
            }
            for s in wrong
        )
        if repair and wrong:
            _repair_slots([s.pk for s in wrong])
    if repair:
        counters.recompute()
        report.repaired = True
    return report


@transaction.atomic
def _repair_items(item_ids: list[int]) -> None:
    from contributors.models import Lease

    lease_ids = sorted(
        set(LeaseItem.objects.filter(pk__in=item_ids).values_list("lease_id", flat=True))
    )
    # The leases first (the one lock order), then the items' truth under those locks.
    list(Lease.objects.select_for_update().filter(pk__in=lease_ids).order_by("pk"))
    for item in _items_with_truth().filter(pk__in=item_ids):
        item.received = item.real_received  # type: ignore[attr-defined]
        if item.lease_state != LeaseState.LIVE:  # type: ignore[attr-defined]
            # A closed lease owes nothing: whatever it did not receive went back.
            item.returned = max(item.n - item.received, 0)
        elif item.pending < 0:
            item.returned = max(item.n - item.received, 0)
        item.save(update_fields=["received", "returned"])


@transaction.atomic
def _repair_slots(slot_ids: list[int]) -> None:
    list(Slot.objects.select_for_update().filter(pk__in=slot_ids).order_by("pk"))
    for slot in _slots_with_truth().filter(pk__in=slot_ids).order_by("pk"):
        slot.filled = slot.real_filled  # type: ignore[attr-defined]
        slot.outstanding = slot.real_outstanding  # type: ignore[attr-defined]
        # A slot counted past its target (only a bug or a hand edit can do that) keeps its
        # samples; its target grows to hold them rather than the CHECK failing the repair.
        slot.target = max(slot.target, slot.filled + slot.outstanding)
        slot.save(update_fields=["filled", "outstanding", "target"])


@counters.register
def slot_totals() -> dict[str, int]:
    """The slot counters' truth, for counters.recompute (scoring cannot count slots itself)."""
    totals = Slot.objects.aggregate(target=Sum("target"), filled=Sum("filled"))
    return {
        counters.SLOTS_TARGET: totals["target"] or 0,
        counters.SLOTS_FILLED: totals["filled"] or 0,
    }

"""Uploads: samples from a lease or offline, stored once, counted towards their slots.

Uploads are capped per (contributor, prompt, model, temperature) at the set's
`samples_per_prompt`, lease and offline uploads together, and a closed prompt takes none: with
scoring/disclosure.py (verdicts that need the gold stay hidden until the prompt closes) this
keeps verdicts from being an oracle for the gold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from contributors.models import (
    ComputeNode,
    Lease,
    LeaseItem,
    LeaseState,
    Profile,
    SampleOrigin,
    Slot,
    normalise_temperature,
)
from contributors.services import bulk, ledger, model_policy, trust
from contributors.services.accounts import ensure_profile
from contributors.services.errors import ServiceError
from scoring import counters, progress, stats
from scoring.dedup import normalised_hash
from scoring.models import Prompt, Sample
from scoring.tasks import enqueue_on_commit, runs_code


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


# (incoming, the row to store, the lease item it answers or None for offline)
_Pending = list[tuple[SampleIn, Sample, LeaseItem | None]]


def stored_per_key(
    user: Any, model: str, keys: set[tuple[int, float]]
) -> dict[tuple[int, float], int]:
    """How many samples `user` has stored of `model` for each (prompt, temperature) of `keys`.
    One indexed query (samples by prompt), however many keys."""
    if not keys:
        return {}
    rows = (
        Sample.objects.filter(prompt_id__in={p for p, _ in keys}, model=model, contributor=user)
        .order_by()
        .values("prompt_id", "temperature")
        .annotate(n=Count("pk"))
    )
    return {
        (row["prompt_id"], row["temperature"]): row["n"]
        for row in rows
        if (row["prompt_id"], row["temperature"]) in keys
    }


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
    user: Any,
    profile: Profile,
    to_store: _Pending,
    prompts: dict[int, Prompt],
    result: IngestResult,
) -> _Pending:
    """Keeps what fits; rejects the rest, per sample.

    Per-prompt cap: a contributor's samples per (prompt, model, temperature) are at most the
    set's `samples_per_prompt`, lease and offline uploads together, whatever was stored before.
    Without it, uploads would be a way to try every answer; with it, a contributor cannot
    judge more guesses than the plan asks of them. Then the daily quota, if they have one.
    """
    stored: dict[tuple[int, str, float], int] = {}
    by_model: dict[str, set[tuple[int, float]]] = defaultdict(set)
    for _, sample, _ in to_store:
        by_model[sample.model].add((sample.prompt_id, sample.temperature))
    for model, keys in by_model.items():
        for (prompt_id, temperature), n in stored_per_key(user, model, keys).items():
            stored[(prompt_id, model, temperature)] = n
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


def _within_daily_prompts(user: Any, to_store: _Pending, result: IngestResult) -> _Pending:
    """Uploads outside a lease take prompts as a lease does: each prompt of the upload counts
    once against the account's daily quota (contributors.services.trust), so the quota and
    its cuts hold whichever way work comes in. Samples of prompts past the room left today
    are rejected. Under the profile lock (the caller's), like leasing's count."""
    quota, room = trust.offline_room(contributor_id=user.pk)
    taken: list[int] = []
    kept: _Pending = []
    for s, sample, item in to_store:
        if sample.prompt_id not in taken:
            if len(taken) >= room:
                result.reject(
                    s.client_id,
                    "quota_exceeded",
                    f"This account may take {quota} prompts a day (UTC), leased or uploaded "
                    "outside a lease, and has none left today.",
                )
                continue
            taken.append(sample.prompt_id)
        kept.append((s, sample, item))
    trust.count_offline(contributor_id=user.pk, prompts=len(taken))
    return kept


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
    plan = ledger.plan_temperatures(prompt_set)
    if normalise_temperature(s.sampling["temperature"]) not in plan:
        return (
            "sampling_mismatch",
            f"This prompt's set asks for temperature {', '.join(str(t) for t in plan)}.",
        )
    return None


def _fresh(user: Any, samples: list[SampleIn], result: IngestResult) -> list[SampleIn]:
    """Drops duplicates: a client_id already stored for this contributor is the same answer a
    retry gets, never a second row; one stored by someone else, or repeated within this
    request, is rejected."""
    existing = {
        row["client_id"]: row
        for row in Sample.objects.filter(client_id__in={s.client_id for s in samples}).values(
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
    return fresh


def _sample_row(user: Any, s: SampleIn, prompt_id: int, temperature: float) -> Sample:
    return Sample(
        client_id=s.client_id,
        prompt_id=prompt_id,
        contributor=user,
        model=s.model,
        model_revision=s.model_revision,
        temperature=temperature,
        sampling=s.sampling,
        completion=s.completion,
        reasoning=s.reasoning or "",
        text_hash=normalised_hash(s.completion, reasoning=s.reasoning or None),
        finish_reason=s.finish_reason,
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        generation_ms=s.generation_ms,
    )


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

    A sample for an item whose lease expired or was released is accepted as a late result:
    counted if its slot is still short, else kept as an extra. A sample for a closed prompt,
    of a blocked model, or beyond the per-prompt cap, is rejected and not stored. Scoring is
    queued only after commit.
    """
    result = result or IngestResult()
    if lease is not None:
        # Serialises uploads to one lease, so two retries of the same batch cannot both count.
        node = lease.node  # loaded with the lease by the caller; a lease's node never changes
        lease = Lease.objects.select_for_update().get(pk=lease.pk)

    fresh = _fresh(user, samples, result)
    blocked = model_policy.blocked_among(s.model for s in fresh)

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
        if s.model in blocked:
            result.reject(s.client_id, "model_blocked", model_policy.blocked_message(s.model))
            continue
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
        to_store.append((s, _sample_row(user, s, prompt_id, temperature), item))
    if not to_store:
        return result
    profile = _lock_profile(user)
    to_store = _within_caps(user, profile, to_store, prompts, result)
    if lease is None:
        to_store = _within_daily_prompts(user, to_store, result)
    if not to_store:
        return result

    touched_items, filled = ledger.count_received(
        [(sample, item) for _, sample, item in to_store], slots, slot_by_key
    )
    try:
        created = bulk.insert(Sample, [sample for _, sample, _ in to_store])
    except IntegrityError:
        # Another request stored one of these client_ids between our check and our insert.
        # No savepoint: nothing more runs in this transaction, which the raise rolls back
        # entirely; the client's retry sees them as duplicates.
        raise ServiceError(
            "concurrent_upload",
            "The same samples are being uploaded concurrently; retry.",
            status=409,
        ) from None
    bulk.insert(
        SampleOrigin,
        [
            SampleOrigin(sample=sample, node=node, lease_item=item)
            for (_, _, item), sample in zip(to_store, created, strict=True)
        ],
    )
    bulk.set_columns(LeaseItem, ["received"], [(i.pk, i.received) for i in touched_items])
    _count(profile, created=created, filled=filled)
    stats.samples_stored((s.prompt_id, s.model) for s in created)
    # A spot check's replica counts towards no progress (Sample.replica).
    progress.samples_stored(
        (prompts[s.prompt_id].prompt_set_id, s.model, s.temperature)
        for s in created
        if not s.replica
    )
    if (
        lease is not None
        and lease.state == LeaseState.LIVE
        and not any(i.pending for i in LeaseItem.objects.filter(lease=lease))
    ):
        lease.state = LeaseState.DONE
        lease.closed_at = timezone.now()
        lease.save(update_fields=["state", "closed_at"])

    result.accepted.extend(
        {"client_id": str(sample.client_id), "id": sample.pk} for sample in created
    )
    # Through the outbox, in this transaction: published once it commits, or by the minute
    # sweep if the broker is away or this process dies first.
    sandbox = {
        set_id: runs_code(p.prompt_set.domain, p.prompt_set.verifier_config)
        for set_id, p in {p.prompt_set_id: p for p in prompts.values()}.items()
    }
    enqueue_on_commit(
        [sample.pk for sample in created],
        sandbox_ids=[s.pk for s in created if sandbox[prompts[s.prompt_id].prompt_set_id]],
    )
    return result


def _count(profile: Profile, *, created: list[Sample], filled: int) -> None:
    """The public counters (scoring.counters): samples (in all and per day stored), slots
    filled, and contributors at their first sample. The profile is locked, so
    `first_sample_at` is set once."""
    deltas = {counters.SAMPLES: len(created), counters.SLOTS_FILLED: filled}
    for sample in created:
        name = counters.samples_on(sample.received_at.astimezone(UTC).date())
        deltas[name] = deltas.get(name, 0) + 1
    if profile.first_sample_at is None:
        profile.first_sample_at = timezone.now()
        profile.save(update_fields=["first_sample_at"])
        deltas[counters.CONTRIBUTORS] = 1
    counters.add(deltas)

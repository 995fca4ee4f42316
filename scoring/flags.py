"""Flags: automatic suspicions about samples, for maintainers (scoring.models.Flag).

A check raises a flag with its evidence (`raise_flag`, or `sync_copy_flags` for the copy
check); a maintainer reads it in the admin and clears it with a reason (`clear_flags`,
audited), or acts on the sample or its contributor (quarantine, ban). A flag decides nothing
by itself.

The rules every kind keeps:

- One flag per (sample, kind): raising it again while it is open replaces its evidence; a
  flag a maintainer cleared stays cleared (the same check does not raise it again: the
  maintainer has seen that evidence and decided).
- A flag whose condition went away (the copy's original was quarantined, the sample is no
  longer a near-duplicate) is not deleted or cleared automatically: it stays open with
  `evidence["resolved_at"]` (and why) for a maintainer to clear, since what was seen once
  remains evidence about its contributor. If the condition comes back, the mark goes.

Copying (`copy`): `selection.mark_duplicates` finds, per prompt, the samples that are exact or
near (MinHash, Jaccard >= 0.8) duplicates of an earlier kept sample (`duplicate_of`). When the
kept original belongs to another contributor, the later sample is flagged as a copy, with the
original's sample and contributor ids, the estimated Jaccard similarity, and whether the texts
are exactly equal after normalisation. A near-duplicate of one's own earlier sample is only a
duplicate (left out of selections), not copying. Two contributors whose one model wrote the
same text independently (temperature 0, a short answer) look the same: the evidence carries
both models and temperatures so a maintainer can tell, and that is why a flag is cleared by a
person, not by a rule.

Replaying a public dataset (the other half of the issue's "copying") is not detected here:
it needs an index of public datasets' completions per prompt, which Thinkpool does not hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from scoring.models import Flag, FlagKind, Sample

# Sent inside the transaction that raised them, with `kind` and `flag_ids`: flags newly raised
# or raised again after their condition had gone away. contributors.services.trust counts them
# against their contributors; scoring imports nothing of it.
flags_raised = Signal()
# Sent inside the transaction that cleared them, with `flag_ids`: a maintainer found them
# unfounded, and what was built on them (trust) is taken back.
flags_cleared = Signal()

# A copy flag needs at least this many words in the copy (scoring.selection.
# is_long_enough_to_copy): short answers coincide honestly. Chains of thought are far longer.
COPY_MIN_WORDS = 40
# Nor between two samples of one model both at or below this temperature (greedy decoding).
GREEDY_TEMPERATURE = 0.05

# Keys of a flag's evidence that bookkeeping writes (not what the check found).
RESOLVED_KEYS = ("resolved_at", "resolved")


class FlagError(ValueError):
    """A flag decision that cannot be taken as asked (no reason)."""


def _found(evidence: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in evidence.items() if k not in RESOLVED_KEYS}


@transaction.atomic
def raise_flag(*, sample_id: int, kind: str, evidence: Mapping[str, Any]) -> Flag:
    """Raises (or refreshes) the `kind` flag of a sample. Open: its evidence is replaced. A
    cleared one is returned as it is. Idempotent: raising the same evidence twice changes
    nothing."""
    return raise_flags(kind=kind, evidence={sample_id: evidence})[0]


@transaction.atomic
def raise_flags(*, kind: str, evidence: Mapping[int, Mapping[str, Any]]) -> list[Flag]:
    """Raises (or refreshes) the `kind` flags of several samples found by one check (sample id
    -> evidence), in id order, as `raise_flag` does each; those newly raised are signalled
    together: one finding (a failed attestation pool) is one signal, which trust counts as one
    cut of the quota (contributors.services.trust)."""
    if kind not in FlagKind.values:
        raise FlagError(f"unknown flag kind {kind!r}")
    owners = dict(Sample.objects.filter(pk__in=list(evidence)).values_list("pk", "contributor_id"))
    flags: list[Flag] = []
    signalled: list[int] = []
    for sample_id in sorted(evidence):
        flag, created = Flag.objects.select_for_update().get_or_create(
            sample_id=sample_id,
            kind=kind,
            defaults={"evidence": dict(evidence[sample_id]), "contributor_id": owners[sample_id]},
        )
        if _refreshed(flag, created, evidence[sample_id]):
            signalled.append(flag.pk)
        flags.append(flag)
    if signalled:
        flags_raised.send(sender=Flag, kind=kind, flag_ids=signalled)
    return flags


@transaction.atomic
def raise_conduct_flag(*, contributor_id: int, kind: str, evidence: Mapping[str, Any]) -> Flag:
    """Raises (or refreshes) the open `kind` flag about a contributor's conduct (no sample):
    hoarding, persistent disagreement with spot checks. While one is open, raising it again
    replaces its evidence; after a maintainer cleared it, a new one is raised."""
    if kind not in FlagKind.values:
        raise FlagError(f"unknown flag kind {kind!r}")
    flag, created = Flag.objects.select_for_update().get_or_create(
        contributor_id=contributor_id,
        sample=None,
        kind=kind,
        cleared_at=None,
        defaults={"evidence": dict(evidence)},
    )
    if _refreshed(flag, created, evidence):
        flags_raised.send(sender=Flag, kind=flag.kind, flag_ids=[flag.pk])
    return flag


def _refreshed(flag: Flag, created: bool, evidence: Mapping[str, Any]) -> bool:
    """Brings an existing open flag's evidence up to date; whether the flag is to be signalled
    as raised (new, or back after its condition had gone away)."""
    if created:
        return True
    if flag.cleared_at is None and flag.evidence != dict(evidence):
        came_back = any(k in flag.evidence for k in RESOLVED_KEYS)
        flag.evidence = dict(evidence)
        flag.save(update_fields=["evidence"])
        return came_back
    return False


def sync_copy_flags(
    *, checked: Iterable[int], copies: Mapping[int, Mapping[str, Any]]
) -> list[int]:
    """The copy check's result for one prompt: `checked` are the sample ids it looked at,
    `copies` the ones it found copying (sample id -> evidence). Raises new flags, refreshes
    open ones, and marks open flags of checked samples that are no longer copies as resolved
    (see the module). Returns the sample ids flagged now (new, or back after resolving).
    Two queries when nothing changed."""
    checked = set(checked)
    if not checked:
        return []
    now = timezone.now().isoformat()
    existing: dict[int, Flag] = {
        flag.sample_id: flag
        for flag in Flag.objects.filter(kind=FlagKind.COPY, sample_id__in=checked)
        if flag.sample_id is not None
    }
    raised: list[int] = []
    owners = dict(
        Sample.objects.filter(pk__in=[pk for pk in copies if pk not in existing]).values_list(
            "pk", "contributor_id"
        )
    )
    new = [
        Flag(sample_id=pk, contributor_id=owners[pk], kind=FlagKind.COPY, evidence=dict(evidence))
        for pk, evidence in sorted(copies.items())
        if pk not in existing
    ]
    if new:
        # A concurrent rebuild of the prompt (SQLite, or outside the advisory lock) may have
        # raised one meanwhile: the unique (sample, kind) keeps one.
        Flag.objects.bulk_create(new, ignore_conflicts=True)
        raised.extend(f.sample_id for f in new if f.sample_id is not None)
    for pk, flag in existing.items():
        if flag.cleared_at is not None:
            continue
        if pk in copies:
            wanted = dict(copies[pk])
            if flag.evidence != wanted:
                if any(k in flag.evidence for k in RESOLVED_KEYS):
                    raised.append(pk)
                Flag.objects.filter(pk=flag.pk).update(evidence=wanted)
        elif "resolved_at" not in flag.evidence:
            Flag.objects.filter(pk=flag.pk).update(
                evidence={
                    **_found(flag.evidence),
                    "resolved_at": now,
                    "resolved": "no longer a duplicate of another contributor's kept sample",
                }
            )
    if raised:
        flag_ids = Flag.objects.filter(kind=FlagKind.COPY, sample_id__in=raised).values_list(
            "pk", flat=True
        )
        flags_raised.send(sender=Flag, kind=FlagKind.COPY, flag_ids=sorted(flag_ids))
    return sorted(raised)


@transaction.atomic
def clear_flags(*, flag_ids: Iterable[int], by: Any, reason: str) -> list[int]:
    """A maintainer clears flags (open ones; cleared ones are left as they are) with a reason:
    who, when and why are kept on each flag and in the audit trail. Raises FlagError without
    a reason. Returns the ids cleared."""
    from scoring import audit

    reason = (reason or "").strip()
    if not reason:
        raise FlagError("A reason is required.")
    rows = list(
        Flag.objects.select_for_update()
        .filter(pk__in=list(flag_ids), cleared_at__isnull=True)
        .order_by("pk")
        .values_list("pk", "kind")
    )
    ids = [pk for pk, _ in rows]
    if not ids:
        return []
    user = by if getattr(by, "is_authenticated", False) else None
    Flag.objects.filter(pk__in=ids).update(
        cleared_at=timezone.now(), cleared_by=user, clear_reason=reason
    )
    audit.record(
        actor=by,
        action="flag.clear",
        model=Flag,
        ids=ids,
        reason=reason,
        details={"kinds": dict(Counter(kind for _, kind in rows))},
    )
    flags_cleared.send(sender=Flag, flag_ids=ids)
    return ids

"""Bounties: progress of data bounties, claims, completion, awards.

A data bounty's progress is the number of *verified* samples that count toward it:

* of prompts in its prompt set (or in any set of its domain), of sets whose language
  (`verifier_config`'s `language`) is the bounty's, when it names one;
* of **closed** prompts only: an open prompt's verdicts are not disclosed to anyone
  (scoring/disclosure.py), and a progress bar that moved when one open-prompt sample was judged
  would be an oracle for its gold;
* not quarantined, not a duplicate, received at or after the bounty was made (and by its
  deadline, when it has one), by a contributor who is not banned, of a model that matches its
  `model_pattern` (fnmatch, case-insensitive: the Hub treats ids so).

Progress is recounted from the samples (`refresh_data_bounty`), never incremented, so a
recount is idempotent and catches up with anything (a ban, a quarantine, an override) whenever
it runs: on commit of every change of disclosed verdicts (`scoring.signals.disclosed_changed`,
debounced per bounty) and every few minutes (contributors.tasks.refresh_bounties).

Every status move is one conditional UPDATE (`filter(pk=..., status__in=...).update(...)`), so
two tasks that race make it once; the bounty's row is also locked first by every writer here,
so the reads a move depends on (contributions, claims) cannot change under it. An award pays
each contributor once (the UPDATE completed -> awarded, and CreditEntry's `credit_bounty_once`).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.dispatch import receiver
from django.utils import timezone

from contributors.models import (
    BOUNTY_LIVE,
    Bounty,
    BountyClaim,
    BountyContribution,
    BountyKind,
    BountyStatus,
    ClaimStatus,
    CreditEntry,
    CreditKind,
    Profile,
)
from contributors.services.errors import ServiceError
from scoring import audit
from scoring.models import Prompt, PromptSet, Sample, SampleStatus
from scoring.signals import disclosed_changed
from scoring.verifiers.base import own_config

logger = logging.getLogger(__name__)

# A change of disclosed verdicts queues a refresh of the bounties it touches at most once per
# this many seconds per bounty (the refresh recounts everything, so one run covers them all).
REFRESH_DEBOUNCE_S = 10
# How long the "refresh queued" mark lives if its task is lost (the periodic task catches up).
REFRESH_MARK_TTL_S = 300
_CHUNK = 1000
# Shares of an engineering bounty's approved claims may sum to at most 1 (plus float noise).
_SHARE_SLACK = 1e-9


def _mark_key(bounty_id: int) -> str:
    return f"thinkpool:bounty-refresh:{bounty_id}"


def _locked(bounty_id: int) -> Bounty:
    bounty = Bounty.objects.select_for_update().filter(pk=bounty_id).first()
    if bounty is None:
        raise ServiceError("not_found", f"No bounty {bounty_id}.", status=404)
    return bounty


def _record(*, by: Any, action: str, bounty: Bounty, reason: str = "", **details: Any) -> None:
    audit.record(
        actor=by,
        action=action,
        model=Bounty,
        ids=[bounty.pk],
        reason=reason,
        details={"bounty": bounty.pk, **details},
    )


# --- what counts toward a data bounty ---------------------------------------------------------


def set_language(prompt_set: PromptSet) -> str:
    """The language a set's prompts are in, as its verifier config says ("" when it says not)."""
    value = own_config(prompt_set.verifier_config or {}, "language").get("language")
    return str(value).strip().lower() if value else ""


def target_sets(bounty: Bounty) -> list[int]:
    """Ids of the prompt sets whose samples may count toward `bounty`."""
    if bounty.prompt_set_id:
        sets = PromptSet.objects.filter(pk=bounty.prompt_set_id)
    elif bounty.domain:
        sets = PromptSet.objects.filter(domain=bounty.domain)
    else:
        return []
    wanted = bounty.language.strip().lower()
    return [
        s.pk for s in sets.only("pk", "verifier_config") if not wanted or set_language(s) == wanted
    ]


def model_matches(pattern: str, model: str) -> bool:
    return not pattern or fnmatch.fnmatchcase(model.lower(), pattern.strip().lower())


def count_verified(bounty: Bounty) -> dict[int, int]:
    """Per contributor: their verified samples that count toward `bounty` (see the module)."""
    sets = target_sets(bounty)
    if not sets:
        return {}
    samples = Sample.objects.filter(
        prompt__prompt_set_id__in=sets,
        prompt__closed_at__isnull=False,
        status=SampleStatus.VERIFIED,
        quarantined=False,
        duplicate_of__isnull=True,
        replica=False,  # a spot check's replica counts towards no target
        received_at__gte=bounty.created_at,
    ).exclude(contributor_id__in=Profile.objects.filter(banned=True).values("user_id"))
    if bounty.deadline is not None:
        samples = samples.filter(received_at__lte=bounty.deadline)
    # One grouped read by (contributor, model): the pattern is matched here, in Python, over the
    # few distinct models (fnmatch is not a database regex dialect).
    counts: dict[int, int] = {}
    rows = (
        samples.order_by()
        .values_list("contributor_id", "model")
        .annotate(n=Count("pk"))
        .values_list("contributor_id", "model", "n")
    )
    for contributor_id, model, n in rows:
        if model_matches(bounty.model_pattern, model):
            counts[contributor_id] = counts.get(contributor_id, 0) + n
    return {k: v for k, v in counts.items() if v > 0}


# --- progress ---------------------------------------------------------------------------------


@transaction.atomic
def refresh_data_bounty(*, bounty_id: int) -> Bounty:
    """Recounts a live data bounty's contributions and progress; moves it open -> in progress
    (some progress) and -> completed (target reached), and awards a completed one at once.
    Anything else (an engineering bounty, one already completed, cancelled or expired) is
    returned as it is."""
    bounty = _locked(bounty_id)
    if bounty.kind != BountyKind.DATA or bounty.status not in BOUNTY_LIVE:
        return bounty
    counts = count_verified(bounty)
    existing = {c.contributor_id: c for c in BountyContribution.objects.filter(bounty_id=bounty.pk)}
    gone = [c.pk for uid, c in existing.items() if uid not in counts]
    if gone:
        BountyContribution.objects.filter(pk__in=gone).delete()
    changed = []
    for uid, contribution in existing.items():
        if uid in counts and contribution.verified != counts[uid]:
            contribution.verified = counts[uid]
            changed.append(contribution)
    if changed:
        BountyContribution.objects.bulk_update(changed, ["verified"])
    new = [
        BountyContribution(bounty_id=bounty.pk, contributor_id=uid, verified=n)
        for uid, n in counts.items()
        if uid not in existing
    ]
    if new:
        BountyContribution.objects.bulk_create(new)

    total = sum(counts.values())
    target = bounty.target_verified
    progress = min(total, target) if target else 0
    live = Bounty.objects.filter(pk=bounty.pk, status__in=BOUNTY_LIVE)
    if target and progress >= target:
        if live.update(
            status=BountyStatus.COMPLETED, progress=progress, completed_at=timezone.now()
        ):
            award_bounty(bounty_id=bounty.pk)
    else:
        if progress != bounty.progress:
            live.update(progress=progress)
        if progress > 0:
            Bounty.objects.filter(pk=bounty.pk, status=BountyStatus.OPEN).update(
                status=BountyStatus.IN_PROGRESS
            )
    bounty.refresh_from_db()
    return bounty


def refresh_data_bounties(*, bounty_ids: Iterable[int] | None = None) -> int:
    """Refreshes the given bounties (all live data bounties when None), each in its own
    transaction; one that fails is logged and the rest go on. Returns how many were refreshed."""
    live = Bounty.objects.filter(kind=BountyKind.DATA, status__in=BOUNTY_LIVE)
    if bounty_ids is not None:
        live = live.filter(pk__in=list(bounty_ids))
    ids = list(live.order_by("pk").values_list("pk", flat=True))
    done = 0
    for pk in ids:
        # Cleared before the recount reads anything: a change that commits after this queues
        # a refresh of its own; one before it is seen by this recount.
        _forget_mark(pk)
        try:
            refresh_data_bounty(bounty_id=pk)
            done += 1
        except Exception:
            logger.exception("could not refresh bounty %s", pk)
    return done


def _forget_mark(bounty_id: int) -> None:
    try:
        cache.delete(_mark_key(bounty_id))
    except Exception:  # an unreachable cache costs a redundant refresh, nothing else
        logger.warning("bounty refresh mark not cleared (cache unreachable)")


def bounties_for_prompts(prompt_ids: Sequence[int]) -> list[int]:
    """Live data bounties whose target includes any of `prompt_ids`."""
    live = Bounty.objects.filter(kind=BountyKind.DATA, status__in=BOUNTY_LIVE)
    if not live.exists():
        return []
    set_ids: set[int] = set()
    domains: set[str] = set()
    for start in range(0, len(prompt_ids), _CHUNK):
        chunk = list(prompt_ids[start : start + _CHUNK])
        rows = (
            Prompt.objects.filter(pk__in=chunk)
            .order_by()
            .values_list("prompt_set_id", "prompt_set__domain")
            .distinct()
        )
        for set_id, domain in rows:
            set_ids.add(set_id)
            domains.add(domain)
    if not set_ids:
        return []
    return list(
        live.filter(
            Q(prompt_set_id__in=set_ids) | Q(prompt_set__isnull=True, domain__in=domains)
        ).values_list("pk", flat=True)
    )


def queue_refresh(bounty_ids: Iterable[int]) -> list[int]:
    """Queues a refresh of each bounty not already queued (see REFRESH_DEBOUNCE_S). Returns
    the ids queued now."""
    from contributors.tasks import refresh_bounties

    todo = []
    for pk in bounty_ids:
        try:
            fresh = cache.add(_mark_key(pk), 1, REFRESH_MARK_TTL_S)
        except Exception:  # no cache: queue every time (the refresh is idempotent)
            fresh = True
        if fresh:
            todo.append(pk)
    if todo:
        try:
            refresh_bounties.apply_async(
                kwargs={"bounty_ids": sorted(todo)}, countdown=REFRESH_DEBOUNCE_S
            )
        except Exception:
            logger.exception("could not queue a refresh of bounties %s", todo)
            for pk in todo:
                _forget_mark(pk)
            return []
    return todo


def _refresh_after_commit(prompt_ids: list[int]) -> None:
    try:
        queue_refresh(bounties_for_prompts(prompt_ids))
    except Exception:  # never the caller's problem: the periodic refresh catches up
        logger.exception("could not queue bounty refreshes for %d prompts", len(prompt_ids))


@receiver(disclosed_changed, dispatch_uid="bounties-disclosed-changed")
def _disclosed_changed(sender: Any, prompt_ids: Sequence[int], **kwargs: Any) -> None:
    """Prompts whose disclosed verdicts changed: the data bounties that count them are
    refreshed once the change commits (never before: the refresh must see it)."""
    ids = list(prompt_ids)
    if ids:
        transaction.on_commit(lambda: _refresh_after_commit(ids), robust=True)


# --- awards -----------------------------------------------------------------------------------


def split_points(total: int, weights: dict[int, Fraction]) -> dict[int, int]:
    """`total` integer points split in proportion to `weights` by largest remainder: the parts
    sum to exactly `total`. Ties go to the larger weight, then the smaller key."""
    weight_sum = sum(weights.values(), Fraction(0))
    if total <= 0 or weight_sum <= 0:
        return {k: 0 for k in weights}
    quotas = {k: Fraction(total) * w / weight_sum for k, w in weights.items()}
    parts = {k: int(q) for k, q in quotas.items()}  # floor: quotas are >= 0
    left = total - sum(parts.values())
    for k in sorted(weights, key=lambda k: (-(quotas[k] - parts[k]), -weights[k], k))[:left]:
        parts[k] += 1
    return parts


def _engineering_split(bounty: Bounty) -> tuple[dict[int, int], dict[int, float]]:
    claims = list(
        BountyClaim.objects.filter(bounty_id=bounty.pk, status=ClaimStatus.APPROVED).order_by("pk")
    )
    if not claims:
        raise ServiceError("no_approved_claims", "Approve at least one claim (with a share).")
    missing = [c.pk for c in claims if c.share is None]
    if missing:
        raise ServiceError(
            "share_missing", f"Approved claims {missing} have no share: set one (0..1)."
        )
    shares = {c.contributor_id: float(c.share or 0) for c in claims}
    total_share = sum(shares.values())
    if total_share > 1 + _SHARE_SLACK:
        raise ServiceError(
            "shares_over_one", f"Approved shares sum to {total_share:.4f}; they must be <= 1."
        )
    exact = {uid: Fraction(s).limit_denominator(10**6) for uid, s in shares.items()}
    paid = round(Fraction(bounty.reward_points) * sum(exact.values(), Fraction(0)))
    return split_points(paid, exact), shares


@transaction.atomic
def award_bounty(*, bounty_id: int, by: Any = None) -> dict[int, int]:
    """Pays a completed bounty: completed -> awarded, and one CreditEntry (kind bounty) per
    contributor with points > 0. Data: `reward_points` split by verified samples toward the
    target (largest remainder: the parts sum exactly to the reward), written as approved claims
    with their share. Engineering: split among the approved claims by their shares (<= 1 in
    all). Returns {contributor id: points} paid now: empty when it was awarded already."""
    bounty = _locked(bounty_id)
    if bounty.status == BountyStatus.AWARDED:
        return {}
    if bounty.status != BountyStatus.COMPLETED:
        raise ServiceError(
            "not_completed", f"Bounty {bounty.pk} is {bounty.status}; only a completed one pays."
        )
    now = timezone.now()
    if bounty.kind == BountyKind.DATA:
        verified = dict(
            BountyContribution.objects.filter(bounty_id=bounty.pk, verified__gt=0).values_list(
                "contributor_id", "verified"
            )
        )
        if not verified:
            raise ServiceError("no_contributions", "Nobody has verified samples toward it.")
        total = sum(verified.values())
        points = split_points(
            bounty.reward_points, {uid: Fraction(n) for uid, n in verified.items()}
        )
        shares = {uid: n / total for uid, n in verified.items()}
    else:
        points, shares = _engineering_split(bounty)

    if not Bounty.objects.filter(pk=bounty.pk, status=BountyStatus.COMPLETED).update(
        status=BountyStatus.AWARDED, awarded_at=now
    ):
        return {}

    if bounty.kind == BountyKind.DATA:
        claims = {c.contributor_id: c for c in BountyClaim.objects.filter(bounty_id=bounty.pk)}
        for uid, share in shares.items():
            claim = claims.get(uid)
            if claim is None:
                BountyClaim.objects.create(
                    bounty_id=bounty.pk,
                    contributor_id=uid,
                    status=ClaimStatus.APPROVED,
                    share=share,
                    decided_at=now,
                )
            else:
                BountyClaim.objects.filter(pk=claim.pk).update(
                    status=ClaimStatus.APPROVED, share=share, decided_at=now
                )
        # A claim of someone with no verified samples toward it earned nothing.
        BountyClaim.objects.filter(bounty_id=bounty.pk, status=ClaimStatus.PENDING).exclude(
            contributor_id__in=list(shares)
        ).update(status=ClaimStatus.REJECTED, share=None, decided_at=now)

    CreditEntry.objects.bulk_create(
        [
            CreditEntry(
                contributor_id=uid, kind=CreditKind.BOUNTY, points=p, bounty_id=bounty.pk, at=now
            )
            for uid, p in sorted(points.items())
            if p > 0
        ],
        ignore_conflicts=True,  # credit_bounty_once: a bounty pays each contributor once
    )
    if by is not None:
        _record(
            by=by,
            action="bounty.award",
            bounty=bounty,
            points={str(k): v for k, v in points.items()},
        )
    return {uid: p for uid, p in points.items() if p > 0}


# --- claims -----------------------------------------------------------------------------------


@transaction.atomic
def claim_bounty(*, bounty_id: int, user: Any, note: str = "") -> BountyClaim:
    """A contributor's claim (pending) on an open or in-progress bounty."""
    bounty = Bounty.objects.filter(pk=bounty_id).first()
    if bounty is None:
        raise ServiceError("not_found", f"No bounty {bounty_id}.", status=404)
    profile = Profile.objects.filter(user_id=user.pk).first()
    if profile is None or profile.banned:
        raise ServiceError("banned", "This account may not claim bounties.", status=403)
    if bounty.status not in BOUNTY_LIVE:
        raise ServiceError(
            "bounty_closed", f"This bounty is {bounty.get_status_display()}: it takes no claims."
        )
    note = note.strip()
    if len(note) > 2000:
        raise ServiceError("note_too_long", "Keep the note under 2000 characters.", status=400)
    try:
        with transaction.atomic():
            return BountyClaim.objects.create(bounty=bounty, contributor=user, note=note)
    except IntegrityError:
        raise ServiceError("already_claimed", "You have already claimed this bounty.") from None


@transaction.atomic
def decide_claim(
    *, claim_id: int, status: str, share: float | None = None, by: Any, reason: str = ""
) -> BountyClaim:
    """A maintainer approves (with a share 0..1) or rejects a claim of a bounty not yet paid,
    cancelled or expired. Approved shares of a bounty may sum to at most 1. Approving a claim
    on an open engineering bounty moves it to in progress."""
    if status not in (ClaimStatus.APPROVED, ClaimStatus.REJECTED):
        raise ServiceError("bad_status", "A claim is approved or rejected.", status=400)
    claim = BountyClaim.objects.filter(pk=claim_id).first()
    if claim is None:
        raise ServiceError("not_found", f"No claim {claim_id}.", status=404)
    bounty = _locked(claim.bounty_id)
    deciding = (*BOUNTY_LIVE, BountyStatus.COMPLETED)
    if bounty.status not in deciding:
        raise ServiceError(
            "bounty_closed", f"Bounty {bounty.pk} is {bounty.status}: its claims are final."
        )
    if status == ClaimStatus.REJECTED:
        share = None
    elif share is not None:
        share = float(share)
        if not 0 <= share <= 1:
            raise ServiceError("bad_share", "A share is a fraction between 0 and 1.", status=400)
        others = sum(
            float(s or 0)
            for s in BountyClaim.objects.filter(bounty_id=bounty.pk, status=ClaimStatus.APPROVED)
            .exclude(pk=claim.pk)
            .values_list("share", flat=True)
        )
        if others + share > 1 + _SHARE_SLACK:
            raise ServiceError(
                "shares_over_one",
                f"Other approved claims hold {others:.4f}; "
                f"at most {max(0.0, 1 - others):.4f} is left.",
            )
    elif bounty.kind == BountyKind.ENGINEERING:
        raise ServiceError("share_missing", "Approving needs a share (0..1).", status=400)
    BountyClaim.objects.filter(pk=claim.pk, bounty__status__in=deciding).update(
        status=status, share=share, decided_at=timezone.now()
    )
    if status == ClaimStatus.APPROVED and bounty.kind == BountyKind.ENGINEERING:
        Bounty.objects.filter(pk=bounty.pk, status=BountyStatus.OPEN).update(
            status=BountyStatus.IN_PROGRESS
        )
    audit.record(
        actor=by,
        action=f"bounty.claim.{'approve' if status == ClaimStatus.APPROVED else 'reject'}",
        model=BountyClaim,
        ids=[claim.pk],
        reason=reason,
        details={"bounty": bounty.pk, "contributor": claim.contributor_id, "share": share},
    )
    claim.refresh_from_db()
    return claim


# --- maintainers' moves -----------------------------------------------------------------------


@transaction.atomic
def complete_engineering_bounty(
    *, bounty_id: int, work_url: str, by: Any, reason: str = ""
) -> Bounty:
    """A maintainer marks an engineering bounty done, with a link to the work. Paying it is
    `award_bounty` (once its claims are decided)."""
    from django.core.exceptions import ValidationError
    from django.core.validators import URLValidator

    bounty = _locked(bounty_id)
    if bounty.kind != BountyKind.ENGINEERING:
        raise ServiceError(
            "not_engineering", "A data bounty completes itself when its target is reached."
        )
    work_url = (work_url or "").strip()
    try:
        URLValidator(schemes=["http", "https"])(work_url)
    except ValidationError:
        raise ServiceError(
            "bad_url", "Give the link to the work (http or https).", status=400
        ) from None
    if len(work_url) > 500:
        raise ServiceError("bad_url", "The link is longer than 500 characters.", status=400)
    if not Bounty.objects.filter(pk=bounty.pk, status__in=BOUNTY_LIVE).update(
        status=BountyStatus.COMPLETED, work_url=work_url, completed_at=timezone.now()
    ):
        raise ServiceError(
            "not_live", f"Bounty {bounty.pk} is {bounty.status}: only a live one completes."
        )
    _record(by=by, action="bounty.complete", bounty=bounty, reason=reason, work_url=work_url)
    bounty.refresh_from_db()
    return bounty


@transaction.atomic
def cancel_bounty(*, bounty_id: int, by: Any, reason: str = "") -> Bounty:
    bounty = _locked(bounty_id)
    if not Bounty.objects.filter(pk=bounty.pk, status__in=BOUNTY_LIVE).update(
        status=BountyStatus.CANCELLED
    ):
        raise ServiceError(
            "not_live", f"Bounty {bounty.pk} is {bounty.status}: only a live one is cancelled."
        )
    _record(by=by, action="bounty.cancel", bounty=bounty, reason=reason)
    bounty.refresh_from_db()
    return bounty


def expire_overdue_bounties() -> int:
    """Live bounties whose deadline has passed become expired. A data bounty is recounted
    first (only samples received by the deadline count), so one that reached its target in
    time completes instead. Returns how many expired."""
    now = timezone.now()
    overdue = Bounty.objects.filter(status__in=BOUNTY_LIVE, deadline__lt=now)
    refresh_data_bounties(
        bounty_ids=list(overdue.filter(kind=BountyKind.DATA).values_list("pk", flat=True))
    )
    expired = 0
    for pk in list(overdue.values_list("pk", flat=True)):
        with transaction.atomic():
            if Bounty.objects.filter(pk=pk, status__in=BOUNTY_LIVE, deadline__lt=now).update(
                status=BountyStatus.EXPIRED
            ):
                expired += 1
                audit.record(
                    actor=None,
                    action="bounty.expire",
                    model=Bounty,
                    ids=[pk],
                    reason="deadline passed",
                    details={"bounty": pk},
                )
    return expired


@transaction.atomic
def record_refresh(*, bounty_ids: Sequence[int], by: Any) -> None:
    """Audits a maintainer's "refresh progress" (the refresh itself changes nothing by hand)."""
    for pk in bounty_ids:
        audit.record(
            actor=by,
            action="bounty.refresh",
            model=Bounty,
            ids=[pk],
            details={"bounty": pk},
        )

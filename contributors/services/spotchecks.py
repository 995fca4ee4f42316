"""Spot-check replication: some lease items are asked again of a second, independent contributor
serving the same model, and the two are compared once the prompt closes.

Planning (at lease time, `plan`): each item a contributor leases becomes a spot check with
probability `fraction(trust)`, from THINKPOOL_TRUST["spot_check_max"] for an untrusted
contributor down to ["spot_check_min"] for a fully trusted one. The draw uses the system's
random source: nobody can tell which of their items are checked, and the replica looks like
any other lease item to whoever gets it.

Replicas (`take`, in the leasing transaction): a lease takes open checks of its model first, at
most THINKPOOL_TRUST["replica_share"] of its prompts, oldest first, skipping checks another
leaser holds (SKIP LOCKED), and only checks whose original delivered something. Independence
is by construction: a check is never given to its original contributor, nor to a contributor
who already holds samples or an item of that (prompt, model, temperature), nor to one whose
trust is below ["replica_min_trust"] (a fresh account, a cheat's second one, replicates
nobody). The replica item is a LeaseItem with `replica=True`: it touches
none of the slot's counters, its samples are stored with `Sample.replica=True` and
`counted=False`, and they count towards no target, credit, bounty, progress or selection:
replication never counts twice. (They are judged, and count for their contributor's trust
like any other sample.) A replica item given back with nothing received reopens its check. The
contributor is not told: their replica samples show as counted (contributors.selectors).

Comparing (`compare_prompts`, on scoring.signals.disclosed_changed, and by the trust sweep):
only once the prompt is closed, because pass rates are built on the gold (verdicts of open
prompts are not disclosed, and a contributor sees their trust). Both sides must be fully
judged; a side with nothing judged makes the check void.

* Verifiable prompts (every domain but `general`): the pass rates of the two sides. They
  disagree when they differ by THINKPOOL_TRUST["disagree_gap"] or more; the side with the lower
  pass rate is the one the disagreement counts against (more right answers than an honest run
  of the claimed model is not something a cheat can fake: the gold decides).
* Others: mean normalised reward (when both sides have one) and mean length in words (counted
  here; a client's reported token count could be inflated to frame the other side). They
  disagree when rewards differ by ["disagree_reward_gap"] or lengths by a factor of
  ["disagree_length_ratio"]; it counts against the side farther from the other samples of the
  same (prompt, model, temperature), and against nobody when there are none.

Persistent disagreement: once a contributor has ["disagree_min"] disagreements counted against
them, at least ["disagree_share"] of their last ["disagree_window"] compared checks (either
side; since a maintainer last cleared such a flag), and where pass rates were compared their
verified samples over those checks are significantly fewer than the other sides' (one-sided
Fisher exact test at ["disagree_alpha"]), a `replica_disagreement` flag about their conduct is
raised (scoring/flags.py) with the checks as evidence; the flag counts against their trust
(contributors.services.trust). One bad comparison is noise; a pattern is a contributor.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from contributors.models import (
    LeaseItem,
    Reputation,
    SampleOrigin,
    SpotCheck,
    SpotCheckState,
)
from contributors.services import queueing
from scoring.models import Domain, Prompt, RewardScore, Sample, SampleStatus
from scoring.signals import disclosed_changed

_random = random.SystemRandom()

COMPARE_CHUNK = 200
_JUDGED = (SampleStatus.VERIFIED, SampleStatus.REJECTED)
_UNJUDGED = (SampleStatus.RECEIVED, SampleStatus.SCORING)


def params() -> dict[str, Any]:
    return dict(settings.THINKPOOL_TRUST)


def fraction(trust: float) -> float:
    """The share of a contributor's items that are spot-checked, at `trust` (0..1)."""
    cfg = params()
    high, low = float(cfg["spot_check_max"]), float(cfg["spot_check_min"])
    trust = min(max(trust, 0.0), 1.0)
    return max(0.0, min(1.0, low + (high - low) * (1.0 - trust)))


def replica_room(max_prompts: int) -> int:
    """How many of a lease's `max_prompts` may be replicas: `replica_share` of them, the
    fraction rounded up or down at random (so small leases take their share on average)."""
    share = max_prompts * float(params()["replica_share"])
    whole = math.floor(share)
    return whole + (1 if _random.random() < share - whole else 0)


# --- at lease time ----------------------------------------------------------------------------


def take(*, model: str, user_id: int, limit: int, cap: int) -> list[tuple[SpotCheck, int]]:
    """Locks up to `limit` open spot checks of `model` that `user_id` may replicate, oldest
    first, each with how many samples to ask (at most `cap`, the per-prompt cap). In the leasing
    transaction; checks another leaser holds are skipped."""
    if limit <= 0:
        return []
    # Replicas are for contributors with a record: a fresh account (one of a cheat's own, say)
    # cannot replicate anyone's checks, its own included, before it has earned some trust.
    trust = Reputation.objects.filter(contributor_id=user_id).values_list("trust", flat=True)
    if (trust.first() or 0.0) < float(params()["replica_min_trust"]):
        return []
    # A window larger than `limit`: some open checks may be ones this contributor cannot take.
    # Only checks whose original delivered something: there is something to compare, and a
    # check is never handed out as work that would count for nothing.
    rows = list(
        SpotCheck.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(
            state=SpotCheckState.OPEN,
            model=model,
            slot__prompt__closed_at__isnull=True,
            original__received__gt=0,
        )
        .exclude(contributor_id=user_id)
        .select_related("slot")
        .order_by("created_at", "pk")[: limit * 4]
    )
    if not rows:
        return []
    held = _touched_by(user_id, model, rows)
    taken: list[tuple[SpotCheck, int]] = []
    for check in rows:
        if len(taken) >= limit:
            break
        key = (check.slot.prompt_id, check.slot.temperature)
        if key in held:
            continue  # not independent: they have samples (or work) of this key already
        held.add(key)  # one check per key and lease (a lease holds one item per slot)
        taken.append((check, min(check.n, cap)))
    return taken


def _touched_by(user_id: int, model: str, checks: list[SpotCheck]) -> set[tuple[int, float]]:
    """The (prompt, temperature) keys of `checks` for which `user_id` has stored samples of
    `model` or holds any lease item."""
    prompt_ids = {c.slot.prompt_id for c in checks}
    keys = set(
        Sample.objects.filter(prompt_id__in=prompt_ids, model=model, contributor_id=user_id)
        .order_by()
        .values_list("prompt_id", "temperature")
        .distinct()
    )
    keys |= set(
        LeaseItem.objects.filter(
            slot_id__in={c.slot_id for c in checks}, lease__contributor_id=user_id
        ).values_list("slot__prompt_id", "slot__temperature")
    )
    return keys


def attach(*, taken: Sequence[tuple[SpotCheck, int]], items: dict[int, LeaseItem]) -> None:
    """The replica items (`items`: slot id -> item; `take` gives one check per slot) of the
    checks `take` returned were made."""
    for check, _ in taken:
        item = items[check.slot_id]
        SpotCheck.objects.filter(pk=check.pk).update(
            replica=item,
            replica_contributor_id=item.lease.contributor_id,
            state=SpotCheckState.LEASED,
        )


def plan(*, items: Sequence[LeaseItem], contributor_id: int, model: str) -> list[SpotCheck]:
    """Draws which of a new lease's (ordinary) items are spot-checked, and opens their checks."""
    trust = (
        Reputation.objects.filter(contributor_id=contributor_id)
        .values_list("trust", flat=True)
        .first()
    )
    share = fraction(trust or 0.0)
    checks = [
        SpotCheck(
            original=item,
            slot_id=item.slot_id,
            model=model,
            contributor_id=contributor_id,
            n=item.n,
        )
        for item in items
        if share > 0 and _random.random() < share
    ]
    return SpotCheck.objects.bulk_create(checks)


def reopen(items: Iterable[LeaseItem]) -> int:
    """Replica items of a closing lease given back with nothing received (in the transaction
    that closes it): their checks wait for someone else. (An original given back empty keeps
    its check: late results are still accepted, and `take` hands out only checks whose
    original delivered; one still empty when the prompt closes is void.) Returns how many
    checks reopened."""
    empty = [i.pk for i in items if i.replica and i.received == 0]
    if not empty:
        return 0
    return SpotCheck.objects.filter(replica_id__in=empty, state=SpotCheckState.LEASED).update(
        state=SpotCheckState.OPEN, replica=None, replica_contributor=None
    )


# --- comparing --------------------------------------------------------------------------------


def _sides(check: SpotCheck) -> dict[int, list[dict[str, Any]]] | None:
    rows = list(
        SampleOrigin.objects.filter(lease_item_id__in=[check.original_id, check.replica_id])
        .order_by("sample_id")
        .values(
            "lease_item_id",
            "sample_id",
            "sample__status",
            "sample__completion_tokens",
            "sample__completion",
            "sample__reasoning",
            "sample__quarantined",
        )
    )
    if any(r["sample__status"] in _UNJUDGED for r in rows):
        return None  # not judged yet: compared later (the sweep)
    sides: dict[int, list[dict[str, Any]]] = {check.original_id: [], check.replica_id or 0: []}
    for r in rows:
        if r["sample__status"] in _JUDGED:
            sides[r["lease_item_id"]].append(dict(r))
    return sides


def _length(row: dict[str, Any]) -> float:
    """A sample's length in words, counted here: never the token count its contributor
    reports, which a replica could inflate to make an honest original look odd."""
    return float(len(row["sample__completion"].split()) + len(row["sample__reasoning"].split()))


def _rewards(sample_ids: Iterable[int]) -> dict[int, float]:
    return {
        pk: float(value or 0.0)
        for pk, value in RewardScore.objects.filter(
            sample_id__in=list(sample_ids), normalised__isnull=False
        ).values_list("sample_id", "normalised")
    }


def _compare(check: SpotCheck, verifiable: bool) -> tuple[str, dict[str, Any], list[int]]:
    """(state, evidence, contributors the disagreement counts against) of one check whose
    sides are judged."""
    cfg = params()
    sides = _sides(check)
    assert sides is not None
    original, replica = sides[check.original_id], sides[check.replica_id or 0]
    evidence: dict[str, Any] = {
        "prompt": check.slot.prompt_id,
        "model": check.model,
        "temperature": check.slot.temperature,
        "original": {"contributor": check.contributor_id, "samples": len(original)},
        "replica": {"contributor": check.replica_contributor_id, "samples": len(replica)},
    }
    if not original or not replica:
        evidence["void"] = "a side has no judged sample"
        return SpotCheckState.VOID, evidence, []
    who = {"original": check.contributor_id, "replica": check.replica_contributor_id}
    if verifiable:
        rates = {
            side: sum(r["sample__status"] == SampleStatus.VERIFIED for r in rows) / len(rows)
            for side, rows in (("original", original), ("replica", replica))
        }
        evidence["original"]["pass_rate"] = round(rates["original"], 4)
        evidence["replica"]["pass_rate"] = round(rates["replica"], 4)
        gap = abs(rates["original"] - rates["replica"])
        evidence["basis"] = "pass_rate"
        evidence["disagree"] = gap >= float(cfg["disagree_gap"])
        if not evidence["disagree"]:
            return SpotCheckState.COMPARED, evidence, []
        lower = min(rates, key=lambda side: rates[side])
        evidence["against"] = lower
        blamed = who[lower]
        return SpotCheckState.COMPARED, evidence, [blamed] if blamed is not None else []
    # Not verifiable: reward (when both sides were scored) and length.
    rewards = _rewards(r["sample_id"] for r in original + replica)
    means: dict[str, dict[str, float]] = {}
    for side, rows in (("original", original), ("replica", replica)):
        means[side] = {"length": fmean(_length(r) for r in rows)}
        scored = [rewards[r["sample_id"]] for r in rows if r["sample_id"] in rewards]
        if scored:
            means[side]["reward"] = fmean(scored)
        evidence[side].update({k: round(v, 4) for k, v in means[side].items()})
    evidence["basis"] = "reward_and_length"
    o, r = means["original"], means["replica"]
    short, long = sorted((max(o["length"], 1.0), max(r["length"], 1.0)))
    disagree = long / short >= float(cfg["disagree_length_ratio"])
    if "reward" in o and "reward" in r:
        disagree = disagree or abs(o["reward"] - r["reward"]) >= float(cfg["disagree_reward_gap"])
    evidence["disagree"] = disagree
    if not disagree:
        return SpotCheckState.COMPARED, evidence, []
    against = _farther(check, means)
    evidence["against"] = against
    return SpotCheckState.COMPARED, evidence, [pk for s in against if (pk := who[s]) is not None]


def _farther(check: SpotCheck, means: dict[str, dict[str, float]]) -> list[str]:
    """The side(s) farther from the other samples of the same (prompt, model, temperature):
    a third party's data decides which of two disagreeing sides is the odd one."""
    others = list(
        Sample.objects.filter(
            prompt_id=check.slot.prompt_id,
            model=check.model,
            temperature=check.slot.temperature,
            status__in=_JUDGED,
            quarantined=False,
            replica=False,
        )
        .exclude(contributor_id__in=[check.contributor_id, check.replica_contributor_id])
        .values("pk", "completion_tokens", "completion", "reasoning")[:200]
    )
    if not others:
        return []  # no third party to tell which side is odd: nobody is blamed
    rows = [
        {
            "sample__completion_tokens": o["completion_tokens"],
            "sample__completion": o["completion"],
            "sample__reasoning": o["reasoning"],
        }
        for o in others
    ]
    centre = {"length": fmean(_length(r) for r in rows)}
    rewards = list(_rewards(o["pk"] for o in others).values())
    if rewards:
        centre["reward"] = fmean(rewards)

    def distance(side: str) -> float:
        m = means[side]
        d = abs(math.log(max(m["length"], 1.0) / max(centre["length"], 1.0)))
        if "reward" in m and "reward" in centre:
            d = max(d, abs(m["reward"] - centre["reward"]))
        return d

    o, r = distance("original"), distance("replica")
    if math.isclose(o, r):
        return []
    return ["original"] if o > r else ["replica"]


@transaction.atomic
def compare_prompts(*, prompt_ids: Iterable[int]) -> int:
    """Compares the spot checks of the closed prompts among `prompt_ids` whose sides are
    judged; checks with no replica become void. Then flags contributors whose disagreement is
    persistent. Safe to run again: a compared check is not compared twice. Returns how many
    checks it settled."""
    ids = sorted({int(pk) for pk in prompt_ids})
    closed = dict(
        Prompt.objects.filter(pk__in=ids, closed_at__isnull=False).values_list(
            "pk", "prompt_set__domain"
        )
    )
    if not closed:
        return 0
    checks = list(
        SpotCheck.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(
            slot__prompt_id__in=list(closed),
            state__in=[SpotCheckState.OPEN, SpotCheckState.LEASED],
        )
        .select_related("slot")
        .order_by("pk")
    )
    now = timezone.now()
    settled = 0
    against: set[int] = set()
    for check in checks:
        if check.replica_id is None:
            check.state, check.evidence = SpotCheckState.VOID, {"void": "never replicated"}
        else:
            # A closed prompt takes no more uploads, so what each side has is all it will
            # have; a side still awaiting its verdict is compared when that comes.
            if _sides(check) is None:
                continue
            verifiable = closed[check.slot.prompt_id] != Domain.GENERAL
            check.state, check.evidence, blamed = _compare(check, verifiable)
            check.agree = (
                None if check.state == SpotCheckState.VOID else not check.evidence["disagree"]
            )
            check.evidence["blamed"] = blamed
            against.update(blamed)
        check.compared_at = now
        check.save(update_fields=["state", "evidence", "agree", "compared_at"])
        settled += 1
    for contributor_id in sorted(against):
        _flag_if_persistent(contributor_id)
    return settled


def fisher_lower(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact test: the probability, were both sides drawn from one pass rate,
    that the first side would pass `k1` of `n1` or fewer, given `k2` of `n2` on the other."""
    total, passed = n1 + n2, k1 + k2
    denominator = math.comb(total, n1)
    low = max(0, passed - n2)
    return (
        sum(math.comb(passed, k) * math.comb(total - passed, n1 - k) for k in range(low, k1 + 1))
        / denominator
    )


def _flag_if_persistent(contributor_id: int) -> None:
    """Flags a contributor whose disagreement is a pattern (the module). For pass rates, the
    pattern must also be significant: over the checks counted, their side's verified samples
    against the other sides', a one-sided Fisher exact test at `disagree_alpha` (a few unlucky
    checks of an honest contributor, a handful of samples each, are not). Only checks compared
    since a maintainer last cleared such a flag count: what they dismissed is not raised again."""
    from scoring.flags import raise_conduct_flag
    from scoring.models import Flag

    cfg = params()
    window = int(cfg["disagree_window"])
    cleared = (
        Flag.objects.filter(
            contributor_id=contributor_id,
            kind="replica_disagreement",
            sample__isnull=True,
            cleared_at__isnull=False,
        )
        .order_by("-cleared_at")
        .values_list("cleared_at", flat=True)
        .first()
    )
    checks = SpotCheck.objects.filter(
        Q(contributor_id=contributor_id) | Q(replica_contributor_id=contributor_id),
        state=SpotCheckState.COMPARED,
    )
    if cleared is not None:
        checks = checks.filter(compared_at__gt=cleared)
    recent = list(
        checks.order_by("-compared_at", "-pk").values("pk", "evidence", "contributor_id")[:window]
    )
    blamed = [c["pk"] for c in recent if contributor_id in c["evidence"].get("blamed", [])]
    if len(blamed) < int(cfg["disagree_min"]) or len(blamed) < float(cfg["disagree_share"]) * len(
        recent
    ):
        return
    mine = [0, 0]
    theirs = [0, 0]
    for c in recent:
        evidence = c["evidence"]
        if evidence.get("basis") != "pass_rate":
            continue
        me, other = ("original", "replica")
        if c["contributor_id"] != contributor_id:
            me, other = other, me
        for side, into in ((me, mine), (other, theirs)):
            n = int(evidence[side]["samples"])
            into[0] += round(float(evidence[side]["pass_rate"]) * n)
            into[1] += n
    p_value = None
    if mine[1] and theirs[1]:
        p_value = fisher_lower(mine[0], mine[1], theirs[0], theirs[1])
        if p_value > float(cfg["disagree_alpha"]):
            return
    raise_conduct_flag(
        contributor_id=contributor_id,
        kind="replica_disagreement",
        evidence={
            "disagreements": len(blamed),
            "compared": len(recent),
            "spot_checks": sorted(blamed),
            "verified": {"theirs": mine, "others": theirs},
            "p_value": None if p_value is None else round(p_value, 6),
            "threshold": {
                "min": int(cfg["disagree_min"]),
                "share": float(cfg["disagree_share"]),
                "window": window,
                "alpha": float(cfg["disagree_alpha"]),
            },
        },
    )


# --- scheduling --------------------------------------------------------------------------------


def schedule_compare(prompt_ids: Iterable[int]) -> None:
    """Queues comparing `prompt_ids` once the current transaction commits. Never raises: the
    trust sweep catches up with a lost message."""
    queueing.prompts_on_commit(
        "compare_spot_checks", prompt_ids, chunk=COMPARE_CHUNK, what="comparing spot checks"
    )


@receiver(disclosed_changed, dispatch_uid="spotchecks-compare-disclosed")
def _compare_disclosed(sender: Any, prompt_ids: Sequence[int], **kwargs: Any) -> None:
    schedule_compare(prompt_ids)

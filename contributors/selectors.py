"""Reads for the crowd side. Every lookup by id is scoped to its owner: another contributor's
node, lease or sample is simply not found."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import Count, F, Max, Q, Sum
from django.http import Http404
from django.utils import timezone

from contributors.models import (
    BOUNTY_LIVE,
    ApiToken,
    Bounty,
    BountyClaim,
    BountyContribution,
    BountyStatus,
    ComputeNode,
    CreditEntry,
    CreditKind,
    LeaderboardRow,
    Lease,
    LeaseItem,
    LeaseState,
    Period,
    Profile,
    SampleOrigin,
)
from contributors.services import credit
from contributors.services.credit import LEADERBOARD_SIZE, PRECISION, period_start
from scoring import counters, disclosure
from scoring.models import (
    AuditEntry,
    Prompt,
    PromptModelStats,
    PromptSet,
    Sample,
    SampleStatus,
)

logger = logging.getLogger(__name__)


# --- Credit and the leaderboard (contributors.services.credit; thinkpool/web/leaderboard.py) --

HISTORY_PAGE_SIZE = 50


def leaderboard_period(value: str | None) -> str:
    """A period from a query string: week, month or all; anything else is the week."""
    return value if value in Period.values else str(Period.WEEK)


def credit_formula() -> dict[str, Any]:
    """The live constants of the credit formula, for the page that shows it, with a worked
    example: one verified sample more than the cap, on a prompt that one sample in four
    passes (d = 0.75)."""
    cap = credit.cap_per_prompt()
    _, example = credit.prompt_credit(difficulty=0.75, verified=cap + 1)
    return {
        "points_per_sample": credit.points_per_sample(),
        "cap_per_prompt": cap,
        "example_verified": cap + 1,
        "example_points": example,
    }


def leaderboard(*, period: str) -> dict[str, Any]:
    """The precomputed board of a period (LeaderboardRow, at most LEADERBOARD_SIZE rows, by
    rank) and when it was computed (None before the first refresh). Never reads the ledger."""
    rows = list(
        LeaderboardRow.objects.filter(period=period)
        .order_by("rank")
        .only("rank", "handle", "points", "verified", "computed_at")[:LEADERBOARD_SIZE]
    )
    if rows:
        computed_at = rows[0].computed_at
    else:  # an empty period: the other periods' rows carry the time of the refresh
        computed_at = LeaderboardRow.objects.aggregate(at=Max("computed_at"))["at"]
    return {"period": period, "rows": rows, "computed_at": computed_at}


def credit_ranks(*, user: Any) -> dict[str, int | None]:
    """The contributor's rank per period on the precomputed board (None: not in its top)."""
    found = dict(LeaderboardRow.objects.filter(contributor=user).values_list("period", "rank"))
    return {period: found.get(period) for period in Period.values}


def credit_totals(*, user: Any, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """The contributor's points and verified samples credited per period, summed from their
    own ledger entries (one aggregate over the (contributor, at) index)."""
    now = now or timezone.now()
    sums: dict[str, Any] = {}
    for period in Period.values:
        start = period_start(period, now)
        window = Q(at__lte=now) if start is None else Q(at__gte=start, at__lte=now)
        sums[f"{period}_points"] = Sum("points", filter=window)
        sums[f"{period}_verified"] = Sum("verified", filter=window)
    totals = CreditEntry.objects.filter(contributor=user).aggregate(**sums)
    return {
        period: {
            "points": round(totals[f"{period}_points"] or 0.0, PRECISION) + 0.0,
            "verified": totals[f"{period}_verified"] or 0,
        }
        for period in Period.values
    }


def credit_history(*, user: Any, page: int | str | None = 1) -> dict[str, Any]:
    """The contributor's credit: their ledger entries, newest first, HISTORY_PAGE_SIZE a page
    (a page out of range is the last one), their totals per period and their ranks."""
    entries = (
        CreditEntry.objects.filter(contributor=user)
        .select_related("bounty")
        .only("kind", "points", "verified", "prompt_id", "bounty__title", "at")
        .order_by("-at", "-pk")
    )
    return {
        "page": Paginator(entries, HISTORY_PAGE_SIZE).get_page(page),
        "totals": credit_totals(user=user),
        "ranks": credit_ranks(user=user),
    }


def node_for(*, user: Any, node_id: int) -> ComputeNode:
    node = ComputeNode.objects.filter(pk=node_id, owner=user).first()
    if node is None:
        raise Http404
    return node


def lease_for(*, user: Any, lease_id: int) -> Lease:
    lease = Lease.objects.select_related("node").filter(pk=lease_id, contributor=user).first()
    if lease is None:
        raise Http404
    return lease


def node_leases(*, user: Any, node_id: int, state: str | None = None) -> list[Lease]:
    """The caller's leases of one of their nodes, newest first (at most 100), each with
    `items_open`: what a restarted worker reconciles its journal against."""
    node = node_for(user=user, node_id=node_id)
    leases = Lease.objects.filter(node=node)
    if state is not None:
        leases = leases.filter(state=state)
    # The 100 newest first, then their items: a node's whole history is never aggregated.
    newest = list(leases.order_by("-pk").values_list("pk", flat=True)[:100])
    return list(
        Lease.objects.filter(pk__in=newest)
        .annotate(
            items_open=Count(
                "items",
                filter=Q(items__n__gt=F("items__received") + F("items__returned")),
            )
        )
        .order_by("-pk")
    )


def lease_items(*, lease: Lease) -> list[LeaseItem]:
    return list(
        LeaseItem.objects.filter(lease=lease)
        .select_related("slot__prompt__prompt_set")
        .order_by("pk")
    )


def open_lease_items(*, lease: Lease) -> list[LeaseItem]:
    """The items still waiting for samples: pending, and for a prompt still open."""
    return [
        item
        for item in lease_items(lease=lease)
        if item.pending and item.slot.prompt.closed_at is None
    ]


def sample_for(*, user: Any, sample_id: int) -> Sample:
    # No verdicts here: what the contributor may see of them is scoring.disclosure's call.
    sample = (
        Sample.objects.filter(pk=sample_id, contributor=user)
        .select_related("prompt__prompt_set")
        .first()
    )
    if sample is None:
        raise Http404
    return sample


def sample_view(*, user: Any, sample_id: int) -> dict[str, Any]:
    """The contributor's sample as the API shows it: its own fields, and its judgement as far
    as scoring.disclosure allows (gold-dependent verdicts only once the prompt is closed)."""
    return _sample_view(sample_for(user=user, sample_id=sample_id))


def _sample_view(sample: Sample, *, listed: bool = False) -> dict[str, Any]:
    """`listed`: a row of the list, where a sample of an open prompt shows only that it awaits
    disclosure; its gold-free checks are computed from its text on read, which `GET
    /samples/{id}/` does for one sample but a page of 500 large completions must not."""
    return {
        "id": sample.pk,
        "client_id": sample.client_id,
        "prompt_id": sample.prompt_id,
        "model": sample.model,
        "model_revision": sample.model_revision,
        "temperature": sample.temperature,
        "finish_reason": sample.finish_reason,
        # A spot check's replica shows as counted: that it is a replica is not for its
        # contributor to know (contributors.services.spotchecks).
        "counted": sample.counted or sample.replica,
        "received_at": sample.received_at,
        **(
            disclosure.awaiting_view()
            if listed and not disclosure.is_disclosed(sample.prompt)
            else disclosure.contributor_view(sample)
        ),
    }


def sample_page(
    *,
    user: Any,
    page: int,
    page_size: int,
    node: int | None = None,
    status: str | None = None,
    since: datetime | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """One page of the caller's samples, newest first, each as `sample_view` shows it, and the
    count of all that match. A `status` filter never looks past the disclosure policy: a real
    status matches samples of closed prompts only; `awaiting_disclosure` the open ones."""
    samples = Sample.objects.filter(contributor=user)
    if node is not None:
        samples = samples.filter(origin__node_id=node)
    if since is not None:
        samples = samples.filter(received_at__gte=since)
    if status == disclosure.AWAITING_DISCLOSURE:
        samples = samples.filter(prompt__closed_at__isnull=True)
    elif status is not None:
        samples = samples.filter(prompt__closed_at__isnull=False, status=status)
    count = samples.count()
    start = (page - 1) * page_size
    rows = (
        samples.select_related("prompt__prompt_set")
        .prefetch_related("verdicts")
        .order_by("-received_at", "-pk")[start : start + page_size]
    )
    return count, [_sample_view(sample, listed=True) for sample in rows]


def sample_summary(*, user: Any) -> dict[str, Any]:
    """A contributor's own counts: by real status only for samples of closed prompts
    (`disclosed`); samples of open prompts are one number. `top_reasons`: why their disclosed
    samples were not verified, most frequent first."""
    mine = Sample.objects.filter(contributor=user)
    counts = disclosure.status_counts(mine)
    awaiting = counts.pop(disclosure.AWAITING_DISCLOSURE)
    reasons = (
        mine.filter(prompt__closed_at__isnull=False)
        .exclude(status=SampleStatus.VERIFIED)
        .order_by()
        .values("status", "status_reason")
        .annotate(n=Count("pk"))
        .order_by("-n", "status", "status_reason")[:TOP_REASONS]
    )
    return {
        "total": awaiting + sum(counts.values()),
        "awaiting_disclosure": awaiting,
        "disclosed": counts,
        "top_reasons": [
            {"status": r["status"], "reason": r["status_reason"], "count": r["n"]} for r in reasons
        ],
    }


TOP_REASONS = 5


def prompt_difficulty(*, prompt_id: int) -> dict[str, Any]:
    """Per model: samples, judged, verified, pass rate and difficulty (1 - pass rate) of a
    prompt. Only once the prompt is closed: while it is open, a pass rate that moves is a
    verdict, and verdicts wait for the close (scoring.disclosure)."""
    prompt = Prompt.objects.filter(pk=prompt_id, prompt_set__is_active=True).first()
    if prompt is None:
        raise Http404
    disclosed = disclosure.is_disclosed(prompt)
    rows = PromptModelStats.objects.filter(prompt=prompt).order_by("model") if disclosed else []
    return {
        "prompt": prompt.pk,
        "disclosed": disclosed,
        "models": [
            {
                "model": row.model,
                "samples": row.samples,
                "judged": row.judged,
                "verified": row.verified,
                "pass_rate": row.pass_rate,
                "difficulty": row.difficulty,
            }
            for row in rows
        ],
    }


# --- bounties (contributors.services.bounties writes them) ------------------------------------
# Pages read the precomputed rows: Bounty.progress, BountyContribution, claims, the audit
# trail's few entries of one bounty; never the samples table.

BOUNTY_PAGE_SIZE = 20
BOUNTY_ROWS = 100  # contributors and claims shown on a bounty's page
BOUNTY_FILTERS = ("open", "mine", "completed")


def bounty_board(*, user: Any, which: str = "open", page: Any = 1) -> dict[str, Any]:
    """The bounty board: `open` (open or in progress, soonest deadline first), `mine` (the
    bounties the user claimed or contributed to; needs a login), `completed` (completed or
    awarded, newest first). Paginated. `needs_login`: `mine` was asked for by nobody."""
    if which not in BOUNTY_FILTERS:
        which = "open"
    bounties = Bounty.objects.select_related("prompt_set")
    needs_login = False
    if which == "open":
        bounties = bounties.filter(status__in=BOUNTY_LIVE).order_by(
            F("deadline").asc(nulls_last=True), "-created_at", "-pk"
        )
    elif which == "completed":
        bounties = bounties.filter(
            status__in=(BountyStatus.COMPLETED, BountyStatus.AWARDED)
        ).order_by(F("completed_at").desc(nulls_last=True), "-pk")
    elif getattr(user, "is_authenticated", False):
        bounties = bounties.filter(
            Q(pk__in=_claimed_by(user)) | Q(pk__in=_contributed_by(user))
        ).order_by("-created_at", "-pk")
    else:
        needs_login = True
        bounties = bounties.none()
    paginator = Paginator(bounties, BOUNTY_PAGE_SIZE)
    return {
        "which": which,
        "filters": BOUNTY_FILTERS,
        "needs_login": needs_login,
        "page": paginator.get_page(page),
    }


def _claimed_by(user: Any) -> Any:
    return BountyClaim.objects.filter(contributor_id=user.pk).values("bounty_id")


def _contributed_by(user: Any) -> Any:
    return BountyContribution.objects.filter(contributor_id=user.pk).values("bounty_id")


def _shown_names(user_ids: Iterable[int], viewer: Any) -> dict[int, str]:
    """Handles as the public sees them: "anonymous" for a contributor who chose not to be
    credited by name (or has no profile). The viewer's own row says so."""
    handles = public_handles(user_ids)
    me = viewer.pk if getattr(viewer, "is_authenticated", False) else None
    names = {}
    for uid in user_ids:
        name = handles.get(uid) or "anonymous"
        names[uid] = f"{name} (you)" if uid == me else name
    return names


# The audit trail's bounty entries, as the bounty's public history says them (who decided is
# for the admin's audit trail; the page says "a maintainer").
_BOUNTY_ACTIONS = {
    "bounty.create": "opened by a maintainer",
    "bounty.change": "edited by a maintainer",
    "bounty.complete": "marked completed by a maintainer",
    "bounty.award": "awarded by a maintainer",
    "bounty.cancel": "cancelled by a maintainer",
    "bounty.expire": "expired: the deadline passed",
    "bounty.claim.approve": "a claim was approved",
    "bounty.claim.reject": "a claim was rejected",
}


def bounty_detail(*, bounty_id: int, user: Any) -> dict[str, Any]:
    """A bounty's page: the bounty, who contributed (verified samples toward it, share, points
    awarded), the claims, the viewer's own claim, and its history (status times and the audit
    trail's entries for it). At most BOUNTY_ROWS contributors and claims."""
    bounty = Bounty.objects.select_related("prompt_set").filter(pk=bounty_id).first()
    if bounty is None:
        raise Http404
    contributions = list(
        BountyContribution.objects.filter(bounty=bounty)
        .order_by("-verified", "contributor_id")
        .values_list("contributor_id", "verified")[:BOUNTY_ROWS]
    )
    totals = BountyContribution.objects.filter(bounty=bounty).aggregate(
        n=Count("pk"), verified=Sum("verified")
    )
    claims = list(
        BountyClaim.objects.filter(bounty=bounty).order_by("created_at", "pk")[:BOUNTY_ROWS]
    )
    points = dict(
        CreditEntry.objects.filter(bounty=bounty, kind=CreditKind.BOUNTY).values_list(
            "contributor_id", "points"
        )
    )
    ids = {uid for uid, _ in contributions} | {c.contributor_id for c in claims}
    names = _shown_names(sorted(ids), user)
    approved = {c.contributor_id: c.share for c in claims if c.share is not None}
    awarded = bounty.status == BountyStatus.AWARDED
    all_verified = totals["verified"] or 0
    rows = [
        {
            "name": names[uid],
            "verified": verified,
            # Before the award: the share the verified samples would earn now.
            "share": approved.get(uid)
            if awarded
            else (verified / all_verified if all_verified else None),
            "points": points.get(uid),
        }
        for uid, verified in contributions
    ]
    me = user.pk if getattr(user, "is_authenticated", False) else None
    history: list[dict[str, Any]] = [
        {"at": bounty.created_at, "what": "created"},
        *([{"at": bounty.completed_at, "what": "completed"}] if bounty.completed_at else []),
        *([{"at": bounty.awarded_at, "what": "awarded"}] if bounty.awarded_at else []),
    ]
    entries = (
        AuditEntry.objects.filter(details__bounty=bounty.pk, action__in=list(_BOUNTY_ACTIONS))
        .order_by("-at", "-pk")
        .values_list("at", "action", "reason")[:BOUNTY_ROWS]
    )
    for at, action, reason in entries:
        history.append({"at": at, "what": _BOUNTY_ACTIONS[action], "reason": reason})
    history.sort(key=lambda h: h["at"])
    return {
        "bounty": bounty,
        "contributions": rows,
        "contributors": totals["n"],
        "verified_total": all_verified,
        "claims": [
            {
                "name": names[c.contributor_id],
                "status": c.status,
                "share": c.share,
                "note": c.note,
                "at": c.created_at,
            }
            for c in claims
        ],
        "my_claim": BountyClaim.objects.filter(bounty=bounty, contributor_id=me).first()
        if me is not None
        else None,
        "history": history,
    }


STATS_CACHE_S = 30


def public_stats() -> dict[str, Any]:
    """Totals for everyone. Read from counters kept as work happens (scoring/counters.py): a
    few small queries, whatever the size of the tables. Cached all the same (the home page
    shows them on every visit); an unreachable cache costs the cache, not the answer."""
    try:
        stats = cache.get_or_set("thinkpool:public-stats", _compute_stats, STATS_CACHE_S)
    except Exception as exc:  # the cache backend's own errors (Redis down): fail open
        logger.warning("public stats computed without the cache (%s: %s)", type(exc).__name__, exc)
        stats = _compute_stats()
    return cast(dict[str, Any], stats)


def _compute_stats() -> dict[str, Any]:
    """Three queries: the active sets, the counters (one grouped read of a few dozen rows) and
    the live leases (an index range, as long as the live leases are few)."""
    active = list(PromptSet.objects.filter(is_active=True).values_list("pk", flat=True))
    per_set = [counters.prompts_in_set(pk) for pk in active]
    values = counters.read(
        [
            counters.SAMPLES,
            counters.CONTRIBUTORS,
            counters.SLOTS_TARGET,
            counters.SLOTS_FILLED,
            *counters.CLOSED_SAMPLES.values(),
            *per_set,
        ]
    )
    # By status only over closed prompts: per-status totals over open ones would let a lone
    # contributor upload one guess and watch which total moves (scoring.disclosure).
    by_status = {status: values[name] for status, name in counters.CLOSED_SAMPLES.items()}
    samples = values[counters.SAMPLES]
    return {
        "prompt_sets": len(active),
        "prompts": sum(values[name] for name in per_set),
        "samples": samples,
        "samples_by_status": {
            disclosure.AWAITING_DISCLOSURE: max(0, samples - sum(by_status.values())),
            **by_status,
        },
        "contributors": values[counters.CONTRIBUTORS],
        "live_leases": Lease.objects.filter(
            state=LeaseState.LIVE, deadline__gt=timezone.now()
        ).count(),
        "slots": {
            "target": values[counters.SLOTS_TARGET],
            "filled": values[counters.SLOTS_FILLED],
        },
    }


def public_handles(user_ids: Iterable[int]) -> dict[int, str | None]:
    """How releases credit each contributor (scoring.publishing.attribution's provider): the
    handle of one who chose public attribution, None for one who did not."""
    return {
        user_id: handle if public else None
        for user_id, handle, public in Profile.objects.filter(user_id__in=list(user_ids))
        .values_list("user_id", "handle", "public_attribution")
        .iterator(chunk_size=2000)
    }


# --- The contributor's own pages (thinkpool/web/account.py) ----------------------------------

# A contributor's nodes on one page: each costs a few indexed queries (its samples by origin).
NODES_SHOWN = 100
THROUGHPUT_WINDOW_H = 24


def node_overview(*, user: Any) -> list[dict[str, Any]]:
    """The caller's nodes (at most NODES_SHOWN, by name), each with its status, the models it
    serves, its throughput (samples uploaded in the last 24 hours, per hour) and its samples'
    counts as scoring.disclosure allows them: accepted (verified) and rejected only among
    samples of closed prompts, one `awaiting_disclosure` count for those of open prompts."""
    since = timezone.now() - timedelta(hours=THROUGHPUT_WINDOW_H)
    nodes = list(ComputeNode.objects.filter(owner=user).order_by("name", "pk")[:NODES_SHOWN])
    ids = [node.pk for node in nodes]
    # Two queries for every node together (not a few per node): the samples by disclosure
    # state, and which nodes hold a live lease (what ComputeNode.status asks one by one).
    closed = Q(sample__prompt__closed_at__isnull=False)
    counts = {
        row["node_id"]: row
        for row in SampleOrigin.objects.filter(node_id__in=ids)
        .order_by()
        .values("node_id")
        .annotate(
            total=Count("pk"),
            awaiting=Count("pk", filter=~closed),
            accepted=Count("pk", filter=closed & Q(sample__status=SampleStatus.VERIFIED)),
            rejected=Count("pk", filter=closed & Q(sample__status=SampleStatus.REJECTED)),
            last_day=Count("pk", filter=Q(sample__received_at__gte=since)),
        )
    }
    leasing = set(
        Lease.objects.filter(node_id__in=ids, state=LeaseState.LIVE).values_list(
            "node_id", flat=True
        )
    )
    rows = []
    for node in nodes:
        row = counts.get(node.pk, {})
        last_day = row.get("last_day", 0)
        status = node.status_given(leasing=node.pk in leasing)
        rows.append(
            {
                "id": node.pk,
                "name": node.name,
                "backend": node.backend,
                "status": status,
                "last_heartbeat": node.last_heartbeat,
                "models": [
                    {"id": str(m.get("id", "")), "revision": m.get("revision") or ""}
                    for m in (node.models_served or [])
                    if isinstance(m, dict)
                ],
                "samples_last_day": last_day,
                "samples_per_hour": round(last_day / THROUGHPUT_WINDOW_H, 1),
                "accepted": row.get("accepted", 0),
                "rejected": row.get("rejected", 0),
                "awaiting_disclosure": row.get("awaiting", 0),
                "total": row.get("total", 0),
            }
        )
    return rows


def user_tokens(*, user: Any) -> Any:
    """The caller's API tokens (a QuerySet of ApiToken), newest first; the page paginates."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-pk")


def token_for(*, user: Any, token_id: int) -> Any:
    """The caller's ApiToken of that id; another contributor's is not found."""
    token = ApiToken.objects.filter(pk=token_id, user=user).first()
    if token is None:
        raise Http404
    return token

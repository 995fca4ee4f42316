"""Reads for the crowd side. Every lookup by id is scoped to its owner: another contributor's
node, lease or sample is simply not found."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from django.core.cache import cache
from django.db.models import Count, F, Q
from django.http import Http404
from django.utils import timezone

from contributors.models import ComputeNode, Lease, LeaseItem, LeaseState, Profile
from scoring import counters, disclosure
from scoring.models import Prompt, PromptModelStats, PromptSet, Sample, SampleStatus

logger = logging.getLogger(__name__)


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
        "counted": sample.counted,
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

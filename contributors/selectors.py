"""Reads for the crowd side. Every lookup by id is scoped to its owner: another contributor's
node, lease or sample is simply not found."""

from __future__ import annotations

from typing import Any, cast

from django.core.cache import cache
from django.db.models import Count, Sum
from django.http import Http404
from django.utils import timezone

from contributors.models import ComputeNode, Lease, LeaseItem, LeaseState, Profile, Slot
from scoring.models import PromptSet, Sample


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


def lease_items(*, lease: Lease) -> list[LeaseItem]:
    return list(
        LeaseItem.objects.filter(lease=lease)
        .select_related("slot__prompt__prompt_set")
        .order_by("pk")
    )


def sample_for(*, user: Any, sample_id: int) -> Sample:
    sample = (
        Sample.objects.filter(pk=sample_id, contributor=user).prefetch_related("verdicts").first()
    )
    if sample is None:
        raise Http404
    return sample


STATS_CACHE_S = 30


def public_stats() -> dict[str, Any]:
    """Totals for everyone. Cached: the page and the public endpoint must not put full-table
    aggregates on the database for every anonymous request."""
    stats = cache.get_or_set("thinkpool:public-stats", _compute_stats, STATS_CACHE_S)
    return cast(dict[str, Any], stats)


def _compute_stats() -> dict[str, Any]:
    by_status = dict(
        Sample.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    slots = Slot.objects.aggregate(target=Sum("target"), filled=Sum("filled"))
    return {
        "prompt_sets": PromptSet.objects.filter(is_active=True).count(),
        "prompts": PromptSet.objects.filter(is_active=True).aggregate(n=Count("prompts"))["n"],
        "samples": sum(by_status.values()),
        "samples_by_status": by_status,
        "contributors": Profile.objects.filter(user__samples__isnull=False).distinct().count(),
        "live_leases": Lease.objects.filter(
            state=LeaseState.LIVE, deadline__gt=timezone.now()
        ).count(),
        "slots": {"target": slots["target"] or 0, "filled": slots["filled"] or 0},
    }

"""Reads for the crowd side. Every lookup by id is scoped to its owner: another contributor's
node, lease or sample is simply not found."""

from __future__ import annotations

from typing import Any, cast

from django.core.cache import cache
from django.db.models import Count, Sum
from django.http import Http404
from django.utils import timezone

from contributors.models import ComputeNode, Lease, LeaseItem, LeaseState, Profile, Slot
from scoring import disclosure
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
    sample = sample_for(user=user, sample_id=sample_id)
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
        **disclosure.contributor_view(sample),
    }


def sample_summary(*, user: Any) -> dict[str, Any]:
    """A contributor's own counts: by real status only for samples of closed prompts
    (`disclosed`); samples of open prompts are one number."""
    counts = disclosure.status_counts(Sample.objects.filter(contributor=user))
    awaiting = counts.pop(disclosure.AWAITING_DISCLOSURE)
    return {
        "total": awaiting + sum(counts.values()),
        "awaiting_disclosure": awaiting,
        "disclosed": counts,
    }


STATS_CACHE_S = 30


def public_stats() -> dict[str, Any]:
    """Totals for everyone. Cached: the page and the public endpoint must not put full-table
    aggregates on the database for every anonymous request."""
    stats = cache.get_or_set("thinkpool:public-stats", _compute_stats, STATS_CACHE_S)
    return cast(dict[str, Any], stats)


def _compute_stats() -> dict[str, Any]:
    # By status only over closed prompts: per-status totals over open ones would let a lone
    # contributor upload one guess and watch which total moves (scoring.disclosure).
    by_status = disclosure.status_counts(Sample.objects.all())
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

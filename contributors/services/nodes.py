"""Compute nodes: registration and heartbeats."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from contributors.models import ComputeNode, Lease, LeaseState
from contributors.services import model_policy


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
    after a restart keeps its id). Model ids were validated by the API; here they are checked
    against what maintainers blocked, and new ones recorded (services.model_policy)."""
    model_policy.admit_names(user=owner, model_ids=[m["id"] for m in models_served])
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


def delete_node(*, node: ComputeNode) -> int:
    """Deletes a node and its lease history; its live leases are released first, each through
    the ledger (so their slots go back), and any lease made meanwhile the same way. Returns how
    many samples went back to the pool."""
    from contributors.services.errors import ServiceError
    from contributors.services.leasing import release_lease

    returned = 0
    while True:
        live = list(Lease.objects.filter(node=node, state=LeaseState.LIVE).order_by("pk"))
        for lease in live:
            # ServiceError: closed meanwhile (expired, done), nothing left to give back.
            with contextlib.suppress(ServiceError):
                returned += release_lease(lease=lease)
        with transaction.atomic():
            # The node's row, locked: a lease request for it waits, then finds it gone.
            if not ComputeNode.objects.select_for_update().filter(pk=node.pk).exists():
                return returned
            if Lease.objects.filter(node=node, state=LeaseState.LIVE).exists():
                continue  # a lease was made while we released: release it too
            Lease.objects.filter(node=node).delete()
            ComputeNode.objects.filter(pk=node.pk).delete()
            return returned


@transaction.atomic
def heartbeat(*, node: ComputeNode, lease_ids: Sequence[int] = ()) -> tuple[int, list[Lease]]:
    """Records a heartbeat and pushes forward the deadlines of the leases the worker names
    (live ones of this node). Only named ones: a lease whose creation answer the worker never
    saw (a lost response) is not extended by a worker that does not know it, so it expires and
    its slots go back. Returns how many were extended and the named leases as they now are."""
    now = timezone.now()
    ComputeNode.objects.filter(pk=node.pk).update(last_heartbeat=now)
    node.last_heartbeat = now
    if not lease_ids:
        return 0, []
    # A heartbeat keeps a lease alive, but not forever: past MAX_LEASE_LIFETIME_S from its
    # creation the lease expires like any other, so a node that only heartbeats cannot hoard.
    lifetime = timedelta(seconds=settings.THINKPOOL["MAX_LEASE_LIFETIME_S"])
    named = list(
        Lease.objects.select_for_update().filter(node=node, pk__in=set(lease_ids)).order_by("pk")
    )
    extended = []
    for lease in named:
        if lease.state != LeaseState.LIVE or lease.deadline <= now:
            continue
        new_deadline = min(
            now + timedelta(seconds=lease.lease_seconds), lease.created_at + lifetime
        )
        if new_deadline > lease.deadline:
            lease.deadline = new_deadline
            extended.append(lease)
    Lease.objects.bulk_update(extended, ["deadline"])
    return len(extended), named

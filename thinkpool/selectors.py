"""Reads that span the packages: the staff's queue-health page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

from contributors.models import ComputeNode, Lease, LeaseState
from scoring.models import Release, ReleaseState, Sample, SampleStatus, ScoringOutbox
from scoring.pipeline import POISON_PREFIX


@dataclass(frozen=True)
class Waiting:
    status: str
    count: int
    oldest: datetime | None


@dataclass(frozen=True)
class QueueHealth:
    waiting: list[Waiting]  # samples not judged yet, per status, with the oldest change
    retry_pending: int  # a transient verifier error, due for another try
    poison: int  # failed every attempt: a maintainer looks at them
    outbox: int  # scoring messages not known to have reached the broker
    outbox_oldest: datetime | None
    overdue_leases: int  # live past their deadline: the sweep has not expired them yet
    lost_nodes: int  # no heartbeat for LOST_AFTER_MISSED_HEARTBEATS intervals
    unpublished_releases: list[Release]


def queue_health() -> QueueHealth:
    """Each number is one indexed query (samples by status, leases by state and deadline);
    nodes are few."""
    now = timezone.now()
    waiting = [
        Waiting(row["status"], row["n"], row["oldest"])
        for row in Sample.objects.filter(status__in=[SampleStatus.RECEIVED, SampleStatus.SCORING])
        .values("status")
        .annotate(n=Count("pk"), oldest=Min("status_changed_at"))
        .order_by("status")
    ]
    errors = Sample.objects.filter(status=SampleStatus.ERROR)
    outbox = ScoringOutbox.objects.aggregate(n=Count("pk"), oldest=Min("created_at"))
    cfg = settings.THINKPOOL
    lost_after = timedelta(
        seconds=cfg["HEARTBEAT_INTERVAL_S"] * cfg["LOST_AFTER_MISSED_HEARTBEATS"]
    )
    return QueueHealth(
        waiting=waiting,
        retry_pending=errors.filter(next_attempt_at__isnull=False).count(),
        poison=errors.filter(status_reason__startswith=POISON_PREFIX).count(),
        outbox=outbox["n"],
        outbox_oldest=outbox["oldest"],
        overdue_leases=Lease.objects.filter(state=LeaseState.LIVE, deadline__lt=now).count(),
        lost_nodes=ComputeNode.objects.filter(last_heartbeat__lt=now - lost_after).count(),
        unpublished_releases=list(
            Release.objects.exclude(state=ReleaseState.PUBLISHED).order_by("repo_id")
        ),
    )

from __future__ import annotations

from celery import shared_task

from contributors import services


@shared_task(
    name="contributors.expire_overdue_leases", queue="maintenance", acks_late=True, time_limit=300
)
def expire_overdue_leases() -> int:
    return services.expire_overdue_leases()

"""The Celery app. One queue per kind of work, so each can get its own workers at scale."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkpool.settings")

app = Celery("thinkpool")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every task names its queue in its decorator; this list is what a default worker consumes.
app.conf.task_queues = [
    Queue(name) for name in ("verify", "sandbox", "gpu", "publish", "maintenance")
]
app.conf.beat_schedule = {
    "expire-overdue-leases": {"task": "contributors.expire_overdue_leases", "schedule": 30.0},
    "sweep-stuck-samples": {"task": "scoring.sweep_stuck_samples", "schedule": 60.0},
}
app.autodiscover_tasks(["contributors", "scoring"])

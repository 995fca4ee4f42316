"""The Celery app. One queue per kind of work, so each can get its own workers at scale."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery, signals
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkpool.settings")

logger = logging.getLogger(__name__)

app = Celery("thinkpool")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every task names its queue in its decorator; this list is what a default worker consumes.
app.conf.task_queues = [
    Queue(name) for name in ("verify", "sandbox", "gpu", "publish", "maintenance")
]
app.conf.beat_schedule = {
    "expire-overdue-leases": {"task": "contributors.expire_overdue_leases", "schedule": 30.0},
    # Bounties (contributors.services.bounties): data bounties are recounted on commit of every
    # change of disclosed verdicts; this catches up with the rest (bans, quarantines, a lost
    # message). Deadlines are checked every minute.
    "refresh-bounties": {"task": "contributors.refresh_bounties", "schedule": 300.0},
    "expire-bounties": {"task": "contributors.expire_bounties", "schedule": 60.0},
    # Also publishes the scoring outbox's messages that never reached the broker (after a
    # minute: a broker outage, or a web process killed between commit and publish, costs a
    # minute or two, not SWEEP_AFTER_S) and re-queues samples whose transient verifier error
    # is due for another try.
    "sweep-stuck-samples": {"task": "scoring.sweep_stuck_samples", "schedule": 60.0},
    # Settles trust for closed prompts whose samples changed lately (a lost message costs
    # minutes), and deletes daily lease counts older than a week: contributors.services.trust.
    "sweep-trust": {"task": "contributors.sweep_trust", "schedule": 600.0},
    # Credit (contributors.services.credit): the leaderboard's rows every minute; and closed
    # prompts whose samples changed status lately are settled again (a lost message).
    "refresh-leaderboard": {"task": "contributors.refresh_leaderboard", "schedule": 60.0},
    "sweep-credit": {"task": "contributors.sweep_credit", "schedule": 600.0},
}
app.autodiscover_tasks(["contributors", "scoring"])

# Every wait on a Redis broker is bounded. Without these, a publish to a Redis that accepts
# connections but never answers (a hung server, a half-open connection after a failover) waits
# for ever, and an upload's request with it (scoring.tasks.enqueue_on_commit publishes on
# commit; what it cannot send stays in the outbox for the minute sweep).
# The worker's consumer is unaffected (its reads are driven by the event loop; kombu checks
# that connection itself). Settings' CELERY_BROKER_TRANSPORT_OPTIONS may override each.
REDIS_TIMEOUTS = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
REDIS_SCHEMES = ("redis", "rediss", "sentinel")


def bounded_transport_options(
    broker_url: str, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`options` with the bounded waits added where the broker is Redis."""
    bounded = dict(options or {})
    if broker_url.split("://", 1)[0] in REDIS_SCHEMES:
        for key, value in REDIS_TIMEOUTS.items():
            bounded.setdefault(key, value)
    return bounded


@app.on_after_configure.connect
def _bound_broker_waits(sender: Any, source: Any, **kwargs: Any) -> None:
    source.broker_transport_options = bounded_transport_options(
        str(source.broker_url or ""), source.broker_transport_options
    )


def worker_startup_problems(queues: Iterable[str]) -> list[str]:
    """Why a worker that consumes `queues` must not start (empty: it may).

    Every worker: scoring's timing relations (scoring/checks.py). Celery runs Django's system
    checks at start-up but ignores what they find, so they are asked again here.
    A worker of the `sandbox` queue: the sandbox must work here, or every code sample it takes
    would end `error` (or, worse, be judged with no isolation). THINKPOOL_UNSAFE_NO_SANDBOX=1
    lets it start anyway, for development, with a loud warning.
    """
    from scoring import sandbox
    from scoring.checks import timing_problems

    problems = [f"{check_id}: {message}" for check_id, message in timing_problems()]
    if "sandbox" in set(queues):
        unsafe = os.environ.get(sandbox.UNSAFE_ENV, "") == "1"
        reason = sandbox.check_available()
        if unsafe:
            logger.warning(
                "%s=1: this worker runs untrusted code WITHOUT a sandbox (development only)%s",
                sandbox.UNSAFE_ENV,
                f"; the sandbox does not work here: {reason}" if reason else "",
            )
        elif reason:
            problems.append(f"the sandbox does not work here: {reason}")
        # The lead is adding capabilities(): what isolation and limits this host provides.
        capabilities = getattr(sandbox, "capabilities", None)
        if callable(capabilities):
            try:
                logger.info("sandbox capabilities: %s", capabilities())
            except Exception:
                logger.exception("sandbox capabilities could not be read")
    return problems


@signals.worker_init.connect
def refuse_to_start_unsoundly(sender: Any = None, **kwargs: Any) -> None:
    """Runs in the worker's main process before its pool starts or any message is taken."""
    worker_app = getattr(sender, "app", None)
    if worker_app is None or getattr(worker_app, "main", None) != app.main:
        return
    queues = list(worker_app.amqp.queues.consume_from)
    problems = worker_startup_problems(queues)
    if problems:
        for problem in problems:
            logger.critical("refusing to start this worker: %s", problem)
        # SystemExit, not an exception: Celery logs and swallows exceptions of signal handlers.
        raise SystemExit("refusing to start this worker: " + "; ".join(problems))

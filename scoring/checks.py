"""Start-up checks of the timing relations that make scoring's failure paths sound.

Registered with Django's system checks (scoring/apps.py), so `manage.py check`, `migrate` and
`runserver` refuse a bad configuration; the Celery worker runs them too, and refuses to start
(thinkpool/celery.py), since Celery itself runs the checks but ignores what they find.

* Each scoring task's soft time limit is below its hard one: the soft limit is what lets a
  task retry itself (and go on with its chunk) before the hard limit kills the process.
* SWEEP_AFTER_S is longer than the longest scoring task may run: the sweeper re-queues a
  `scoring` sample only once no task can still hold it, and a stale claim may be taken over.
* Each verifier's worst case on one sample (`max_seconds`, 60 s where a verifier names none) is
  below the soft time limit of the task that runs it: a retry always gets at least one more
  verdict written (settled verdicts are reused), so a retried chunk makes progress.
* A broker visibility timeout (Redis, SQS) is longer than the longest scoring task: otherwise
  the broker hands a running task's message out again, with the same task id, and that copy
  would re-claim the sample beside the run that still holds it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

DEFAULT_VERIFIER_MAX_S = 60.0


def timing_problems() -> list[tuple[str, str]]:
    """(check id, message) for each timing relation the configuration breaks."""
    # Imported here: checks are registered while apps load, before tasks may be imported.
    from scoring.tasks import SCORING_TASKS, task_for
    from scoring.verifiers import DOMAIN_DEFAULTS, REGISTRY

    problems: list[tuple[str, str]] = []
    hard_limits: list[float] = []
    for task in SCORING_TASKS:
        soft, hard = task.soft_time_limit, task.time_limit
        if soft is None or hard is None:
            problems.append(
                ("scoring.E001", f"task {task.name} needs both soft_time_limit and time_limit.")
            )
            continue
        hard_limits.append(hard)
        if soft >= hard:
            problems.append(
                (
                    "scoring.E001",
                    f"task {task.name}: soft_time_limit ({soft} s) must be below time_limit "
                    f"({hard} s), or the task is killed before it can retry.",
                )
            )
    longest = max(hard_limits, default=0)
    sweep_after = settings.THINKPOOL["SWEEP_AFTER_S"]
    if sweep_after <= longest:
        problems.append(
            (
                "scoring.E002",
                f"THINKPOOL_SWEEP_AFTER_S ({sweep_after} s) must be longer than the longest "
                f"scoring task time_limit ({longest} s), or the sweeper re-queues samples that "
                "a running task still holds.",
            )
        )
    seen: set[tuple[str, str]] = set()
    for domain, names in DOMAIN_DEFAULTS.items():
        task = task_for(domain)
        soft = task.soft_time_limit
        if soft is None:
            continue
        for name in names:
            if (task.name, name) in seen:
                continue
            seen.add((task.name, name))
            worst = float(getattr(REGISTRY[name], "max_seconds", DEFAULT_VERIFIER_MAX_S))
            if worst >= soft:
                problems.append(
                    (
                        "scoring.E003",
                        f"verifier {name} may take {worst:g} s on one sample, not below the "
                        f"soft_time_limit ({soft} s) of {task.name}, which runs it for "
                        f"{domain} prompt sets: a retried chunk would make no progress.",
                    )
                )
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    visibility = options.get("visibility_timeout")
    if visibility is not None and float(visibility) <= longest:
        problems.append(
            (
                "scoring.E004",
                f"the broker's visibility_timeout ({visibility} s) must be longer than the "
                f"longest scoring task time_limit ({longest} s), or a running task's message "
                "is delivered again and judged twice.",
            )
        )
    return problems


@register("scoring")
def check_scoring_timing(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [Error(message, id=check_id) for check_id, message in timing_problems()]


@register("scoring")
def check_releases(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A release licence the publisher cannot reason about would make every release fail; a
    release a live task still builds must never look abandoned (its broker message can be
    delivered again while it runs: the copy must find it claimed)."""
    from scoring.publishing import licenses
    from scoring.tasks import publish_release

    problems: list[CheckMessage] = []
    stale_after = settings.THINKPOOL_RELEASE["stale_after_s"]
    if publish_release.time_limit is None or stale_after <= publish_release.time_limit:
        problems.append(
            Error(
                f"THINKPOOL_RELEASE_STALE_AFTER_S ({stale_after} s) must be longer than the "
                f"publish task's time_limit ({publish_release.time_limit} s), or a release "
                "still being published may be taken over and built twice.",
                id="scoring.E011",
            )
        )
    license_id = settings.THINKPOOL_RELEASE["license"]
    if licenses.is_known_release_license(license_id):
        return problems
    return [
        *problems,
        Error(
            f"THINKPOOL_RELEASE_LICENSE={license_id!r} is not a licence releases know how to mix "
            "sources under.",
            hint="Use a Hub licence id such as apache-2.0, mit, cc-by-4.0, cc-by-sa-4.0 or "
            "cc-by-nc-4.0 (scoring/publishing/licenses.py).",
            id="scoring.E010",
        ),
    ]

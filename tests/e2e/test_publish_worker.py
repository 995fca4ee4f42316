"""A release published by a real Celery worker on the `publish` queue (on PostgreSQL, the build
runs in its own REPEATABLE READ, read-only transaction: not inside a test's)."""

from __future__ import annotations

import subprocess

from scoring.models import Release
from scoring.publishing.service import start_release
from scoring.tasks import publish_release
from tests.e2e.conftest import wait_for
from tests.scoring.publishing.conftest import make_dataset


def test_a_real_worker_publishes_a_release_once(start_worker, tmp_path):
    make_dataset(prompts=2)
    folder = tmp_path / "release"
    release = start_release(target="local", repo_id="org/name", path=folder)
    start_worker(queues="publish")
    # Sent twice, as a redelivery would: one claims it, the other finds it taken or done.
    publish_release.delay(release.pk)
    publish_release.delay(release.pk)

    done = wait_for(
        lambda: Release.objects.filter(pk=release.pk, state="published").first(),
        timeout=120,
        what="the release to be published",
    )
    assert done.row_counts == {"sft": 4, "preference": 2, "rl": 2, "raw": 6}
    assert done.attempts == 1
    log = subprocess.run(
        ["git", "log", "--format=%s", "main"], cwd=folder, capture_output=True, text=True
    ).stdout.split("\n")
    assert log[0] == "Release v1" and len([line for line in log if line]) == 1

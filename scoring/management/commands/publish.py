"""`manage.py publish`: builds a release from the current selections and publishes it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from scoring.models import ReleaseState, ReleaseTarget
from scoring.publishing.service import ReleaseError, run_release, start_release


class Command(BaseCommand):
    help = (
        "Publish the next release of the dataset (configs sft, preference, rl, raw as parquet "
        "shards and a dataset card) to a local folder laid out like the Hub repository (a git "
        "repository whose tags are the versions) or to the Hugging Face Hub (HF_TOKEN). An "
        "unpublished release of the repository (one that failed) is retried under its number."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", choices=ReleaseTarget.values, default="local")
        parser.add_argument("--repo", required=True, help="ORG/NAME, as on the Hub.")
        parser.add_argument(
            "--path", help="The local target's folder (default var/releases/ORG/NAME)."
        )
        parser.add_argument(
            "--max-shard-bytes", type=int, help="Cut shards at this size (default 500 MB)."
        )
        parser.add_argument(
            "--async",
            dest="background",
            action="store_true",
            help="Queue it on the publish queue instead of running it here.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            release = start_release(
                target=options["target"], repo_id=options["repo"], path=options["path"]
            )
        except ReleaseError as exc:
            raise CommandError(str(exc)) from exc
        if options["background"]:
            from scoring.tasks import queue_release

            transaction.on_commit(lambda: queue_release(release.pk))
            self.stdout.write(f"{release.repo_id} {release.tag}: queued (release {release.pk}).")
            return
        try:
            release = run_release(release_id=release.pk, max_shard_bytes=options["max_shard_bytes"])
        except Exception as exc:
            raise CommandError(
                f"{release.repo_id} {release.tag} failed: {exc}. It stays unpublished; run the "
                "same command again to retry it."
            ) from exc
        for warning in release.warnings:
            self.stderr.write(f"warning: {warning}")
        if release.state != ReleaseState.PUBLISHED:
            raise CommandError(
                f"{release.repo_id} {release.tag} is {release.state} (another worker is "
                "publishing it?)."
            )
        counts = ", ".join(f"{config} {n:,}" for config, n in release.ordered_row_counts())
        self.stdout.write(
            f"Published {release.repo_id} {release.tag} to {release.location} at "
            f"{release.commit_id[:12]}: {counts}."
        )

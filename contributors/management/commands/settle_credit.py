"""`manage.py settle_credit (--all | --prompt ID ...) [--leaderboard]`: settles contributors'
credit from the rows (contributors.services.credit), a repair for messages that were lost."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from contributors.services import credit


class Command(BaseCommand):
    help = (
        "Recompute contributors' credit for closed prompts from their samples and write the "
        "differences to the credit ledger (nothing when it is up to date). --all: every closed "
        "prompt; --prompt: the ones named. --leaderboard: then rebuild the leaderboard."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--all", action="store_true", help="Settle every closed prompt.")
        which.add_argument(
            "--prompt", type=int, action="append", default=[], help="A prompt id (repeatable)."
        )
        parser.add_argument(
            "--leaderboard", action="store_true", help="Rebuild the leaderboard afterwards."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["all"]:
            prompts, entries = credit.settle_all()
        elif options["prompt"]:
            ids = options["prompt"]
            prompts = len(set(ids))
            entries = sum(
                credit.settle_prompts(prompt_ids=chunk)
                for chunk in credit.chunked(sorted(set(ids)))
            )
        elif options["leaderboard"]:
            prompts = entries = 0
        else:
            raise CommandError("Name the prompts to settle: --all or --prompt ID.")
        if prompts:
            self.stdout.write(f"{prompts} prompts settled: {entries} credit entries written.")
        if options["leaderboard"]:
            rows = credit.refresh_leaderboard()
            self.stdout.write(
                "Leaderboard rebuilt: "
                + ", ".join(f"{period} {n} rows" for period, n in rows.items())
                + "."
            )

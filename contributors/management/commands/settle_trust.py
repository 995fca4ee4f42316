"""`manage.py settle_trust [--replay]`: counts the disclosed verdicts that no settling counted yet
toward contributors' trust and quotas (contributors.services.trust), a repair for messages that
were lost; `--replay` then recomputes every contributor's (and their nodes') reputation from the
ledger, a repair for rows that drifted from it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from contributors.services import trust


class Command(BaseCommand):
    help = (
        "Settle trust for every closed prompt: judged samples not yet counted move their "
        "contributors' and nodes' trust, streak and daily quota (nothing when it is up to date). "
        "--replay: then recompute every contributor with reputation events from the ledger."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--replay",
            action="store_true",
            help="Also recompute each contributor's reputation from the ledger (one "
            "transaction per contributor).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        prompts, samples = trust.settle_all()
        self.stdout.write(f"{prompts} closed prompts settled: {samples} samples counted.")
        if options["replay"]:
            replayed, changed = trust.replay_all()
            self.stdout.write(
                f"{replayed} contributors replayed from the ledger: {changed} changed."
            )

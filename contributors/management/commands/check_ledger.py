"""`manage.py check_ledger [--repair]`: recomputes the slot ledger from its rows."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from contributors.services import ledger
from scoring import progress

SHOWN = 20


class Command(BaseCommand):
    help = (
        "Recompute every slot's filled/outstanding and every lease item's received from the "
        "rows (samples, live lease items) and report what differs. With --repair, set them "
        "right under the same row locks uploads take, and rebuild the public counters and "
        "the prompt sets' progress. "
        "Exits 1 if the ledger was wrong and not repaired."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="Fix what differs.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = ledger.check(repair=options["repair"])
        # The prompt sets' progress (scoring/progress.py) is rebuilt with the counters.
        progress_wrong = len(progress.recompute()) if report.repaired else 0
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "slots_checked": report.slots_checked,
                        "slots_wrong": report.slots_wrong,
                        "items_wrong": report.items_wrong,
                        "repaired": report.repaired,
                        "progress_cells_wrong": progress_wrong,
                    }
                )
            )
        else:
            self.stdout.write(
                f"{report.slots_checked} slots checked: {len(report.slots_wrong)} slots and "
                f"{len(report.items_wrong)} lease items differ from their rows."
            )
            for row in report.items_wrong[:SHOWN]:
                self.stdout.write(f"  item {row}")
            for row in report.slots_wrong[:SHOWN]:
                self.stdout.write(f"  slot {row}")
            if report.repaired:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Repaired; counters and set progress rebuilt ({progress_wrong} "
                        "progress cells differed)."
                    )
                )
        if not report.clean and not report.repaired:
            raise CommandError("The slot ledger differs from its rows: run with --repair.")

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Exists, OuterRef, Q

from scoring.models import PromptSet, Sample, Verdict
from scoring.pipeline import SETTLED_VERDICTS
from scoring.tasks import queue_scoring
from scoring.verifiers import REGISTRY, verifiers_for


class Command(BaseCommand):
    help = (
        "Judge again the samples that lack a verdict at a verifier's current version (after a "
        "verifier's version changed, or a prompt set's verifier settings did)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--set", dest="set_name", help="Only this prompt set")
        parser.add_argument("--verifier", choices=sorted(REGISTRY), help="Only this verifier")
        parser.add_argument("--dry-run", action="store_true", help="Count, queue nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        sets = PromptSet.objects.all()
        if opts["set_name"]:
            sets = sets.filter(name=opts["set_name"])
            if not sets.exists():
                raise CommandError(f"No prompt set {opts['set_name']!r}.")
        total = 0
        for prompt_set in sets:
            verifiers = verifiers_for(prompt_set.domain, prompt_set.verifier_config)
            if opts["verifier"]:
                verifiers = [v for v in verifiers if v.name == opts["verifier"]]
            if not verifiers:
                continue
            # Stale: some verifier of its set has no settled verdict (pass, fail, skipped) at
            # its current version; an `error` or `timeout` verdict is tried again.
            stale: Q = Q()
            for verifier in verifiers:
                stale |= Q(
                    ~Exists(
                        Verdict.objects.filter(
                            sample=OuterRef("pk"),
                            verifier=verifier.name,
                            version=verifier.version,
                            status__in=SETTLED_VERDICTS,
                        )
                    )
                )
            ids = list(
                Sample.objects.filter(prompt__prompt_set=prompt_set, quarantined=False)
                .filter(stale)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            total += len(ids)
            if ids and not opts["dry_run"]:
                queue_scoring(ids, rescore=True)
            self.stdout.write(f"{prompt_set.name}: {len(ids)} samples to judge again")
        self.stdout.write(f"total: {total}{' (dry run)' if opts['dry_run'] else ' queued'}")

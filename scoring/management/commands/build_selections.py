"""`manage.py build_selections`: rebuilds every prompt's selections from scratch."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from scoring import stats
from scoring.models import Prompt
from scoring.selection import configured_policy, rebuild_prompt


class Command(BaseCommand):
    help = (
        "Recompute the SFT selections, preference pairs and RL prompts of every prompt with "
        "samples (or of one set), under the default ranking policy. With --stats, rebuild the "
        "per (prompt, model) statistics from the samples first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--set", dest="prompt_set", help="Only the prompts of this set.")
        parser.add_argument("--stats", action="store_true", help="Rebuild the stats first.")

    def handle(self, *args: Any, **options: Any) -> None:
        prompts = Prompt.objects.filter(samples__isnull=False).distinct()
        if options["prompt_set"]:
            prompts = prompts.filter(prompt_set__name=options["prompt_set"])
        ids = list(prompts.order_by("pk").values_list("pk", flat=True))
        if options["stats"]:
            stats.recompute(prompt_ids=ids)
        policy = configured_policy()
        sft = pairs = rl = 0
        for prompt_id in ids:
            picks = rebuild_prompt(prompt_id=prompt_id, policy=policy)
            sft, pairs, rl = (
                sft + len(picks.sft),
                pairs + len(picks.pairs),
                rl + len(picks.rl_models),
            )
        self.stdout.write(
            f"{len(ids)} prompts under {policy.label} v{policy.version}: {sft} SFT samples, "
            f"{pairs} preference pairs, {rl} RL (prompt, model) pairs."
        )

"""Demo data for a newcomer's first minute. Safe to run any number of times."""

from __future__ import annotations

import json
import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from contributors.models import ApiToken, Bounty
from contributors.services import ensure_profile, issue_token
from scoring.generators import generate
from scoring.models import DEFAULT_INSTRUCTION, Domain, PromptSet
from scoring.prompt_io import RawRow
from scoring.services import import_prompts

DEMO_SET = "demo-generated-math"


class Command(BaseCommand):
    help = "Create an admin, a demo contributor with a token, a bounty and a generated math set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--prompts", type=int, default=300)
        parser.add_argument("--seed", type=int, default=0)

    @transaction.atomic
    def handle(self, *args: Any, **opts: Any) -> None:
        if not settings.DEBUG:
            # The demo superuser's password is public (README, `make run`'s banner): on a
            # server reachable by anyone it would be the admin's front door.
            raise CommandError(
                "seed_demo creates the superuser admin with a well-known password, so it runs "
                "only with DEBUG=1 (development). On a real deployment create the admin with "
                "`manage.py createsuperuser`."
            )
        User = get_user_model()
        admin_password = os.environ.get("THINKPOOL_DEMO_ADMIN_PASSWORD", "thinkpool")
        admin, created = User.objects.get_or_create(  # created: set the demo password once
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(admin_password)
            admin.save()
        ensure_profile(user=admin)

        demo, _ = User.objects.get_or_create(username="demo")
        ensure_profile(user=demo)
        # The raw token cannot be read back from its hash, so the demo keeps it in var/ to print
        # it on every `make run`.
        token_file = settings.VAR_DIR / "demo-token"
        raw = token_file.read_text().strip() if token_file.exists() else ""
        if not raw or not ApiToken.objects.live().filter(user=demo, prefix=raw[:10]).exists():
            _, raw = issue_token(user=demo, name="demo")
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.write_text(raw + "\n")
            token_file.chmod(0o600)

        prompt_set, _ = PromptSet.objects.get_or_create(
            name=DEMO_SET,
            defaults={
                "description": "Procedurally generated word problems with exact answers.",
                "domain": Domain.MATH,
                "license": "CC0-1.0",
                "instruction_template": DEFAULT_INSTRUCTION,
            },
        )
        rows = (
            RawRow(line=i + 1, data=row)
            for i, row in enumerate(generate(opts["prompts"], seed=opts["seed"]))
        )
        report = import_prompts(prompt_set=prompt_set, rows=rows)
        Bounty.objects.get_or_create(
            title="Cover the generated math set with small open models",
            defaults={
                "description": "4 samples per prompt at temperature 0.6 from any open model.",
                "prompt_set": prompt_set,
                "target_verified": 4 * max(opts["prompts"], 1),
                "reward_points": 1000,
            },
        )
        self.stdout.write(
            json.dumps(
                {
                    "admin": {
                        "username": "admin",
                        "password": admin_password
                        if admin.check_password(admin_password)
                        else "(changed)",
                    },
                    "demo_token": raw,
                    "prompt_set": prompt_set.name,
                    "prompts_added": report.created,
                }
            )
        )

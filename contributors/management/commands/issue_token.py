from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from contributors.services import issue_token


class Command(BaseCommand):
    help = "Print a new API token for USERNAME, alone on stdout (it is shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="Create the user if missing")
        parser.add_argument("--name", default="", help="A label for the token")

    def handle(self, *args: Any, **opts: Any) -> None:
        User = get_user_model()
        user = User.objects.filter(username=opts["username"]).first()
        if user is None:
            if not opts["create"]:
                raise CommandError(f"No user {opts['username']!r} (pass --create to make one).")
            user = User.objects.create_user(username=opts["username"])
        _, raw = issue_token(user=user, name=opts["name"])
        self.stdout.write(raw)

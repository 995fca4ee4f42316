"""Accounts and API tokens."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from contributors.models import ApiToken, Profile, hash_token


@transaction.atomic
def ensure_profile(*, user: Any) -> Profile:
    profile, _ = Profile.objects.get_or_create(
        user=user, defaults={"handle": user.get_username()[:64]}
    )
    return profile


@transaction.atomic
def issue_token(*, user: Any, name: str = "") -> tuple[ApiToken, str]:
    """Returns the row and the raw token. The raw token is shown once and never stored."""
    ensure_profile(user=user)
    raw = ApiToken.generate()
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:10], digest=hash_token(raw))
    return token, raw


def revoke_token(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())

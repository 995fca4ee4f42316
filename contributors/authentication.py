"""`Authorization: Bearer tp_…` for the API. Tokens are looked up by their SHA-256 digest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from contributors.models import ApiToken, hash_token
from contributors.throttling import FailedAuthLimiter

# last_used is refreshed at most this often: a write per request would double the API's
# database load for a column that is only read by people.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        # Authentication runs before the throttles, so failures are limited here, per client
        # address, before the token is even looked up: guessing tokens costs no queries.
        limiter = FailedAuthLimiter(request)
        if limiter.over_limit():
            raise exceptions.Throttled(
                wait=limiter.retry_after,
                detail="Too many failed authentications from this address.",
            )
        try:
            return self._authenticate(header)
        except exceptions.AuthenticationFailed:
            limiter.record_failure()
            raise

    def _authenticate(self, header: list[bytes]) -> tuple[Any, ApiToken]:
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Bearer <token>'."
            )
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = (
            ApiToken.objects.select_related("user", "user__profile")
            .filter(digest=hash_token(raw))
            .first()
        )
        if token is None or not token.is_live:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        user = token.user
        if not user.is_active or (hasattr(user, "profile") and user.profile.banned):
            raise exceptions.AuthenticationFailed("This account is disabled.")
        now = timezone.now()
        if token.last_used is None or now - token.last_used > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular how the API authenticates, for the schema and Swagger UI."""

    target_class = "contributors.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "tp_…"}

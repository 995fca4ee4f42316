from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads
    from rest_framework.views import APIView


class TokenRateThrottle(SimpleRateThrottle):
    """Per API token when authenticated (`request.auth` is the token row), per client address
    otherwise."""

    scope = "token"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if request.auth is not None:
            return self.cache_format % {"scope": "token", "ident": request.auth.pk}
        return self.cache_format % {"scope": "anon", "ident": self.get_ident(request)}

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.scope = "token" if request.auth is not None else "anon"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

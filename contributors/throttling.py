"""Request limits for the API, and the one client address that every limit agrees on.

Limits fail open. Their counters live in the cache, which in production is the same Redis as
the Celery broker: when it is down, uploads must still be stored (their scoring is queued once
the broker is back), so a limit that cannot count lets the request through, with a warning in
the log, instead of answering 500 to everything.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _cache_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [OSError]  # socket errors, timeouts, refused connections
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - redis is installed with the server extra
        pass
    else:
        # redis-py's ConnectionError and TimeoutError are RedisErrors, not OSErrors.
        errors.append(RedisError)
    return tuple(errors)


CACHE_ERRORS = _cache_errors()


class CacheGuard:
    """Runs the cache calls of limits, and skips them while the cache is known to be down.

    After a failure the cache is left alone for `retry_after_s`: an unreachable Redis (a
    timeout, not a refused connection) then costs one socket timeout per interval and process,
    not one per request. The warning is logged at most once per `log_every_s`, with how many
    calls were skipped since, so an outage does not flood the log.
    """

    def __init__(self, *, retry_after_s: float = 5.0, log_every_s: float = 60.0) -> None:
        self.retry_after_s = retry_after_s
        self.log_every_s = log_every_s
        self.reset()

    def reset(self) -> None:
        self._down_until = 0.0
        self._last_log = -float("inf")
        self._skipped = 0

    def call(self, what: str, fn: Callable[[], T], *, fallback: T) -> T:
        now = time.monotonic()
        if now < self._down_until:
            self._skipped += 1
            return fallback
        try:
            return fn()
        except CACHE_ERRORS as exc:
            self._down_until = now + self.retry_after_s
            self._skipped += 1
            if now - self._last_log >= self.log_every_s:
                logger.warning(
                    "The cache is unreachable (%s: %s): %s not enforced while it is down "
                    "(%d checks skipped since the last warning).",
                    type(exc).__name__,
                    exc,
                    what,
                    self._skipped,
                )
                self._last_log = now
                self._skipped = 0
            return fallback


cache_guard = CacheGuard()


def client_address(request: HttpRequest | Request) -> str | None:
    """The client, as the API throttles, the failed-authentication counter and the admin login
    lockout (AXES_CLIENT_IP_CALLABLE) all see it: REMOTE_ADDR, or with
    REST_FRAMEWORK["NUM_PROXIES"] = N the address the outermost of N trusted proxies saw.
    X-Forwarded-For is read only then; otherwise any client could be anyone.

    An IPv6 client is its /64 (returned as the network's address): one subscriber usually holds
    a whole /64, and would otherwise be 2**64 clients to every limit. None when the address is
    not an IP address (django-axes stores it in an address column)."""
    ident = BaseThrottle().get_ident(request)  # type: ignore[arg-type]
    try:
        address = ipaddress.ip_address((ident or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address)
    return str(address)


class TokenRateThrottle(SimpleRateThrottle):
    """Per API token when authenticated (`request.auth` is the token row), per client address
    otherwise."""

    scope = "token"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if request.auth is not None:
            return self.cache_format % {"scope": "token", "ident": request.auth.pk}
        return self.cache_format % {"scope": "anon", "ident": client_address(request) or "unknown"}

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.scope = "token" if request.auth is not None else "anon"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return cache_guard.call(
            "the API rate limit",
            lambda: super(TokenRateThrottle, self).allow_request(request, view),
            fallback=True,
        )


class FailedAuthLimiter(SimpleRateThrottle):
    """Failed token authentications per client address, in fixed windows of the
    "auth_failure" rate. Checked before the token lookup, so a client guessing tokens is
    answered 429 without a query once over the limit; only failures count."""

    scope = "auth_failure"
    num_requests: int
    duration: int

    def __init__(self, request: Request) -> None:
        super().__init__()  # reads the rate: self.num_requests per self.duration seconds
        now = self.timer()
        window = int(now // self.duration)
        self.retry_after = max(1, int((window + 1) * self.duration - now))
        address = client_address(request) or "unknown"
        self.key = f"throttle_auth_failure_{address}_{window}"

    def over_limit(self) -> bool:
        failures = cache_guard.call(
            "the failed-authentication limit", lambda: self.cache.get(self.key, 0), fallback=0
        )
        return int(failures) >= self.num_requests

    def record_failure(self) -> None:
        def incr() -> None:
            # add() starts the window's counter with its expiry; incr() is atomic in Redis.
            self.cache.add(self.key, 0, timeout=self.duration + 1)
            # ValueError: the key expired in between, so its window is over anyway.
            with contextlib.suppress(ValueError):
                self.cache.incr(self.key)

        cache_guard.call("the failed-authentication limit", incr, fallback=None)


def allow(scope: str, key: str, *, limit: int, window_s: int) -> bool:
    """Counts one more `scope` action by `key` (a client address, an email address) in the
    current fixed window of `window_s` seconds; False once `limit` were counted in it. For the
    site's forms that cost us something per use (a mail sent, an account made), which
    django-axes (logins) and the API throttles do not cover. Fails open like every limit here."""
    from django.core.cache import cache

    window = int(time.time()) // window_s
    name = f"thinkpool:limit:{scope}:{window}:{key}"

    def count() -> int:
        # add() makes the key with its expiry once; incr() is atomic on Redis and locmem.
        cache.add(name, 0, timeout=window_s + 1)
        return int(cache.incr(name))

    return cache_guard.call(f"the {scope} limit", count, fallback=0) <= limit

"""HTTP: the worker's single httpx client, retry with back-off, and the Thinkpool API client.

One ``httpx.Client`` serves both the Thinkpool server and the OpenAI-compatible backend (one
connection pool, one set of timeouts and one User-Agent); requests pass absolute URLs and their
own auth headers, so the two never share credentials.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import httpx

from . import __version__
from .errors import ApiError, AuthError, ServerUnreachable

log = logging.getLogger("thinkpool.worker")

USER_AGENT = f"thinkpool-worker/{__version__}"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# What a server that doesn't advertise its limits (GET /api/v1/me/ "limits") is assumed to take:
# the server's own defaults.
MAX_SAMPLES_PER_UPLOAD = 256
MAX_BODY_BYTES = 32 * 1024 * 1024


def encode_json(value: Any) -> bytes:
    """JSON exactly as the worker sends it (what httpx's ``json=`` does), so sizes add up."""
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class ServerLimits:
    """What the server accepts, from ``GET /api/v1/me/``; an older server's defaults if absent."""

    max_samples_per_upload: int = MAX_SAMPLES_PER_UPLOAD
    max_body_bytes: int = MAX_BODY_BYTES
    max_completion_chars: int | None = None
    max_prompts_per_lease: int | None = None

    @classmethod
    def from_me(cls, me: Any) -> ServerLimits:
        raw = me.get("limits") if isinstance(me, dict) else None
        if not isinstance(raw, dict):
            return cls()
        found: dict[str, int] = {}
        for f in fields(cls):
            value = raw.get(f.name)
            # bool is an int; a server sending true/false or 0 for a limit is not to be trusted.
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                found[f.name] = value
        return cls(**found)


def make_http_client(
    pool_size: int = 8,
    timeout_s: float = 30.0,
    mounts: dict[str, httpx.BaseTransport] | None = None,
) -> httpx.Client:
    limits = httpx.Limits(max_connections=pool_size + 4, max_keepalive_connections=pool_size + 4)
    return httpx.Client(
        mounts=mounts,
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        limits=limits,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,  # a redirect would drop the Authorization header; fail loudly
    )


@dataclass
class RetryPolicy:
    """Exponential back-off with full jitter: wait ~U(0, min(cap, base * 2**attempt))."""

    base_s: float = 0.5
    cap_s: float = 60.0
    max_attempts: int | None = None  # None: retry until max_elapsed_s (or forever)
    max_elapsed_s: float | None = None
    # A Retry-After longer than this is clamped, so a misconfigured proxy can't park us for days.
    max_retry_after_s: float = 600.0
    # Checked before each wait: True gives up at once (the worker is shutting down).
    abort: Callable[[], bool] | None = None
    # How to wait; an Event's wait() makes the wait interruptible.
    sleep: Callable[[float], object] | None = None

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**attempt))
        return (rng or random).uniform(0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable(exc_or_resp: BaseException | httpx.Response) -> bool:
    if isinstance(exc_or_resp, httpx.Response):
        return exc_or_resp.status_code in RETRY_STATUSES
    return isinstance(exc_or_resp, httpx.TransportError)


def send_with_retry(
    send: Callable[[], httpx.Response],
    policy: RetryPolicy,
    *,
    what: str,
    sleep: Callable[[float], object] | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[str, float], None] | None = None,
) -> httpx.Response:
    """Call ``send`` until it returns a non-retryable response, with back-off in between.

    Retries connection errors, timeouts, 408/429/5xx. A ``Retry-After`` header is honoured as a
    floor for the wait. Returns the last response (the caller interprets 4xx); raises the last
    transport error when attempts run out.
    """
    sleep = sleep or policy.sleep or time.sleep
    started = time.monotonic()
    attempt = 0
    while True:
        reason: str
        retry_after: float | None = None
        response: httpx.Response | None = None
        last_exc: httpx.TransportError | None = None
        try:
            answer = send()
        except httpx.TransportError as exc:
            last_exc = exc
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if not is_retryable(answer):
                return answer
            response = answer
            reason = f"HTTP {answer.status_code}"
            retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        attempt += 1
        elapsed = time.monotonic() - started
        out_of_attempts = policy.max_attempts is not None and attempt >= policy.max_attempts
        out_of_time = policy.max_elapsed_s is not None and elapsed >= policy.max_elapsed_s
        aborted = policy.abort is not None and policy.abort()
        if out_of_attempts or out_of_time or aborted:
            if last_exc is not None:
                raise last_exc
            assert response is not None
            return response
        wait = policy.delay(attempt - 1, rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, policy.max_retry_after_s))
        if policy.max_elapsed_s is not None:
            wait = min(wait, max(0.0, policy.max_elapsed_s - elapsed))
        log.info("%s failed (%s); retrying in %.1fs", what, reason, wait)
        if on_retry is not None:
            on_retry(reason, wait)
        sleep(wait)


def error_from_response(response: httpx.Response) -> ApiError:
    """An ``ApiError`` (``AuthError`` for 401/403) from the server's ``{"error": {...}}`` body."""
    code, message, fields = f"http_{response.status_code}", response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or message)
        fields = err.get("fields") if isinstance(err.get("fields"), dict) else None
    elif isinstance(body, dict) and "detail" in body:  # a DRF default error slipped through
        message = str(body["detail"])
    cls = AuthError if response.status_code in (401, 403) else ApiError
    return cls(response.status_code, code, message, fields)


class ServerClient:
    """The Thinkpool API, as the worker uses it."""

    def __init__(
        self,
        http: httpx.Client,
        server: str,
        token: str,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.http = http
        self.base = server.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.policy = policy or RetryPolicy()
        # Called with (reason, wait_s) on every retry, for the progress display.
        self.on_retry: Callable[[str, float], None] | None = None
        self._lock = threading.Lock()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        policy: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        url = f"{self.base}{path}"
        kwargs: dict[str, Any] = {"headers": self.headers}
        if json is not None:
            kwargs["content"] = encode_json(json)
            kwargs["headers"] = {**self.headers, "Content-Type": "application/json"}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            return send_with_retry(
                lambda: self.http.request(method, url, **kwargs),
                policy or self.policy,
                what=f"{method} {path}",
                on_retry=self.on_retry,
            )
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the Thinkpool server at {self.base} ({type(exc).__name__}: "
                f"{exc}); check --server / THINKPOOL_SERVER and your network"
            ) from exc

    def _json(self, response: httpx.Response, ok: tuple[int, ...] = (200, 201)) -> Any:
        if response.status_code not in ok:
            raise error_from_response(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code,
                "bad_response",
                f"the server at {self.base} did not answer JSON; is this a Thinkpool server?",
            ) from exc

    # --- endpoints -------------------------------------------------------------------------

    def me(self, policy: RetryPolicy | None = None) -> dict[str, Any]:
        return self._json(self._request("GET", "/api/v1/me/", policy=policy))

    def limits(self, policy: RetryPolicy | None = None) -> ServerLimits:
        return ServerLimits.from_me(self.me(policy=policy))

    def register_node(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._request("POST", "/api/v1/nodes/", json=payload))

    def heartbeat(self, node_id: str, policy: RetryPolicy | None = None) -> dict[str, Any]:
        return self._json(
            self._request("POST", f"/api/v1/nodes/{node_id}/heartbeat/", json={}, policy=policy)
        )

    def lease(
        self, node_id: str, model: str, max_prompts: int, policy: RetryPolicy | None = None
    ) -> dict[str, Any] | None:
        response = self._request(
            "POST",
            "/api/v1/leases/",
            json={"node": _as_id(node_id), "model": model, "max_prompts": max_prompts},
            policy=policy,
        )
        if response.status_code == 204:
            return None
        return self._json(response)

    def get_lease(self, lease_id: str, policy: RetryPolicy | None = None) -> dict[str, Any]:
        return self._json(self._request("GET", f"/api/v1/leases/{lease_id}/", policy=policy))

    def release_lease(self, lease_id: str, policy: RetryPolicy | None = None) -> dict[str, Any]:
        return self._json(self._request("DELETE", f"/api/v1/leases/{lease_id}/", policy=policy))

    def upload_lease_samples(
        self, lease_id: str, samples: list[dict[str, Any]], policy: RetryPolicy | None = None
    ) -> dict[str, Any]:
        return self._json(
            self._request(
                "POST",
                f"/api/v1/leases/{lease_id}/samples/",
                json={"samples": samples},
                policy=policy,
            )
        )

    def upload_samples(
        self, samples: list[dict[str, Any]], policy: RetryPolicy | None = None
    ) -> dict[str, Any]:
        return self._json(
            self._request("POST", "/api/v1/samples/", json={"samples": samples}, policy=policy)
        )

    def get_sample(self, sample_id: str) -> dict[str, Any]:
        return self._json(self._request("GET", f"/api/v1/samples/{sample_id}/"))


def _as_id(value: str | int) -> str | int:
    return int(value) if isinstance(value, str) and value.isdigit() else value

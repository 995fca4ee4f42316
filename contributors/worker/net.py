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
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from . import __version__
from .errors import ApiError, AuthError, ConfigError, ServerUnreachable

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
    text = f"the server answered {response.status_code} {code}: {message}"
    if fields:
        # "The request is not valid." says nothing; the field messages say what to change.
        text += f" ({field_messages(fields)})"
    return cls(response.status_code, code, message, fields, text=text)


def field_messages(fields: Any, limit: int = 400) -> str:
    """``{"models": [{"id": ["..."]}]}`` as ``models.0.id: ...``, cut at ``limit`` characters."""
    out: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                if key == "code":  # DRF's full details: {"message", "code"}
                    continue
                walk(sub, path if key == "message" else f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                nested = isinstance(sub, dict | list) and not _is_detail(sub)
                walk(sub, f"{path}.{i}" if nested else path)
        elif value not in (None, ""):
            out.append(f"{path}: {value}" if path else str(value))

    walk(fields, "")
    text = "; ".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_detail(value: Any) -> bool:
    return isinstance(value, dict) and "message" in value


def ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error (httpx -> httpcore -> ssl), if there is one."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def with_scheme(url: str, scheme: str) -> str:
    """``url`` with another scheme, same host and the same port (made explicit when it was
    implied): a port that speaks the other protocol is still that port."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.port is None and parts.hostname:
        netloc = f"{netloc}:{443 if parts.scheme == 'https' else 80}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


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
        # Whether an http:// server that cut a connection was asked if it speaks https: once
        # per client, since a cut connection is far more often an outage than a wrong scheme.
        self._probed_https = False

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

        def send() -> httpx.Response:
            try:
                return self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                # A wrong scheme or an untrusted certificate is not an outage: retrying can't
                # fix it, so it ends the command at once with the address to use.
                hint = self._wrong_scheme(exc)
                if hint is not None:
                    raise ConfigError(hint) from exc
                raise

        try:
            return send_with_retry(
                send,
                policy or self.policy,
                what=f"{method} {path}",
                on_retry=self.on_retry,
            )
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the Thinkpool server at {self.base} ({type(exc).__name__}: "
                f"{exc}); check --server / THINKPOOL_SERVER and your network"
            ) from exc

    # --- telling a wrong address from an outage --------------------------------------------

    def _wrong_scheme(self, exc: httpx.TransportError) -> str | None:
        """What to do when ``exc`` means the address is wrong rather than the server down."""
        scheme = urlsplit(self.base).scheme
        tls = ssl_error(exc)
        if scheme == "https" and tls is not None:
            if isinstance(tls, ssl.SSLCertVerificationError):
                return (
                    f"the server at {self.base} presents a TLS certificate this machine does not "
                    f"trust ({tls.verify_message or tls}); check the address, or if the server "
                    "uses a private certificate authority, point SSL_CERT_FILE at its certificate"
                )
            plain = with_scheme(self.base, "http")
            if self._answers_http(plain):
                return (
                    f"the server at {self.base} speaks plain http, not https: use {plain} "
                    f"(`thinkpool-worker login --server {plain} --token tp_...`)"
                )
            return (
                f"the TLS handshake with {self.base} failed ({tls}); check the address and "
                "whether the server speaks https or plain http"
            )
        if (
            scheme == "http"
            and isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError)
            and not self._probed_https
        ):
            self._probed_https = True
            secure = with_scheme(self.base, "https")
            if self._speaks_tls(secure):
                return (
                    f"the server at {self.base} speaks https, not plain http: use {secure} "
                    f"(`thinkpool-worker login --server {secure} --token tp_...`)"
                )
        return None

    def _answers_http(self, url: str) -> bool:
        try:
            self.http.get(url, timeout=5.0)
        except httpx.HTTPError:
            return False
        return True

    def _speaks_tls(self, url: str) -> bool:
        try:
            self.http.get(url, timeout=5.0)
        except httpx.TransportError as exc:
            # Getting as far as the certificate proves the port speaks TLS.
            return isinstance(ssl_error(exc), ssl.SSLCertVerificationError)
        return True

    def explain_not_found(self) -> str:
        """Why ``GET /api/v1/me/`` answered 404, and the address to use instead."""
        parts = urlsplit(self.base)
        path = parts.path.rstrip("/")
        for suffix in ("/api/v1", "/api"):
            if path.endswith(suffix):
                root = urlunsplit((parts.scheme, parts.netloc, path[: -len(suffix)], "", ""))
                return (
                    f"{self.base} is the API's address, not the site's: use --server {root} "
                    "(the worker adds /api/v1 itself)"
                )
        served = self._served_models()
        if served is not None:
            v1 = self.base if path.endswith("/v1") else f"{self.base}/v1"
            names = ", ".join(served[:5]) or "no models"
            return (
                f"{self.base} is an OpenAI-compatible model server (it serves {names}), not the "
                f"Thinkpool server: give it to `thinkpool-worker register --base-url {v1}`, and "
                "give --server the Thinkpool site's address (its home page shows the login "
                "command)"
            )
        return (
            f"{self.base} has no Thinkpool API (GET {self.base}/api/v1/me/ answered 404): "
            "--server is the Thinkpool site's address, as its home page shows it in "
            "`thinkpool-worker login --server ...`"
        )

    def _served_models(self) -> list[str] | None:
        """The model ids, if ``self.base`` is an OpenAI-compatible server (``/v1/models``)."""
        path = urlsplit(self.base).path.rstrip("/")
        url = f"{self.base}/models" if path.endswith("/v1") else f"{self.base}/v1/models"
        try:
            # No Authorization: the Thinkpool token is not for this server.
            response = self.http.get(url, timeout=5.0)
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return None
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

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
        response = self._request("GET", "/api/v1/me/", policy=policy)
        if response.status_code == 404:
            # Every Thinkpool server has /api/v1/me/: the address is not a Thinkpool server's.
            raise ConfigError(self.explain_not_found())
        return self._json(response)

    def limits(self, policy: RetryPolicy | None = None) -> ServerLimits:
        return ServerLimits.from_me(self.me(policy=policy))

    def register_node(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._request("POST", "/api/v1/nodes/", json=payload))

    def heartbeat(
        self, node_id: str, leases: Iterable[str] = (), policy: RetryPolicy | None = None
    ) -> dict[str, Any]:
        """Liveness, extending only the ``leases`` named: a lease this worker doesn't know it
        holds (its answer was lost) is never kept alive by it."""
        body = {"leases": [_as_id(x) for x in leases]}
        return self._json(
            self._request("POST", f"/api/v1/nodes/{node_id}/heartbeat/", json=body, policy=policy)
        )

    def lease(
        self,
        node_id: str,
        model: str,
        max_prompts: int,
        policy: RetryPolicy | None = None,
        *,
        key: str | None = None,
    ) -> dict[str, Any] | None:
        """A new lease, or None (204: no work). With ``key``, every retry of the request asks
        for the same lease: the server answers the lease that key already made, if any."""
        body: dict[str, Any] = {"node": _as_id(node_id), "model": model, "max_prompts": max_prompts}
        if key is not None:
            body["key"] = key
        response = self._request("POST", "/api/v1/leases/", json=body, policy=policy)
        if response.status_code == 204:
            return None
        return self._json(response)

    def list_leases(
        self, node_id: str, state: str | None = "live", policy: RetryPolicy | None = None
    ) -> list[dict[str, Any]]:
        """The node's leases as the server knows them (newest first, at most 100)."""
        query: dict[str, str] = {"node": str(node_id)}
        if state is not None:
            query["state"] = state
        body = self._json(
            self._request("GET", f"/api/v1/leases/?{urlencode(query)}", policy=policy)
        )
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            return []
        return [x for x in results if isinstance(x, dict) and "id" in x]

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

    def list_samples(
        self, page_size: int = 20, policy: RetryPolicy | None = None
    ) -> list[dict[str, Any]]:
        """The account's latest samples, newest first, as the server discloses them."""
        query = urlencode({"page_size": page_size})
        body = self._json(self._request("GET", f"/api/v1/samples/?{query}", policy=policy))
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            return []
        return [x for x in results if isinstance(x, dict)]


def _as_id(value: str | int) -> str | int:
    return int(value) if isinstance(value, str) and value.isdigit() else value

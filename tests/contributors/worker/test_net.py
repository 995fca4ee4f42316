import email.utils
import time

import httpx
import pytest

from contributors.worker.errors import ApiError, AuthError, ServerUnreachable
from contributors.worker.net import (
    RetryPolicy,
    ServerClient,
    error_from_response,
    parse_retry_after,
    send_with_retry,
)


class Script:
    """Answers a scripted sequence; an Exception instance in the script is raised instead."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def resp(status, headers=None, json=None):
    return httpx.Response(status, headers=headers or {}, json=json)


def test_parse_retry_after_seconds_date_and_garbage():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_retries_5xx_and_connection_errors_then_succeeds():
    slept = []
    send = Script(
        httpx.ConnectError("refused"), resp(503), resp(502), httpx.ReadTimeout("slow"), resp(200)
    )
    r = send_with_retry(send, RetryPolicy(base_s=1, cap_s=8), what="t", sleep=slept.append)
    assert r.status_code == 200 and send.calls == 5
    # Full jitter under an exponential ceiling: 1, 2, 4, 8.
    assert all(0 <= s <= c for s, c in zip(slept, [1, 2, 4, 8], strict=True))


def test_429_waits_at_least_retry_after():
    slept = []
    send = Script(resp(429, {"Retry-After": "7"}), resp(200))
    send_with_retry(send, RetryPolicy(base_s=0.1, cap_s=0.2), what="t", sleep=slept.append)
    assert slept == [pytest.approx(7.0)]


def test_retry_after_is_clamped():
    slept = []
    send = Script(resp(503, {"Retry-After": "86400"}), resp(200))
    policy = RetryPolicy(base_s=0.1, max_retry_after_s=30)
    send_with_retry(send, policy, what="t", sleep=slept.append)
    assert slept == [30]


def test_4xx_is_not_retried():
    send = Script(resp(400), resp(200))
    assert send_with_retry(send, RetryPolicy(), what="t", sleep=lambda s: None).status_code == 400
    assert send.calls == 1


def test_gives_up_after_max_attempts_with_the_last_error():
    send = Script(*[httpx.ConnectError("refused")] * 3)
    with pytest.raises(httpx.ConnectError):
        send_with_retry(send, RetryPolicy(max_attempts=3), what="t", sleep=lambda s: None)
    assert send.calls == 3
    send = Script(resp(503), resp(503))
    r = send_with_retry(send, RetryPolicy(max_attempts=2), what="t", sleep=lambda s: None)
    assert r.status_code == 503


def test_abort_stops_retrying_at_once():
    send = Script(httpx.ConnectError("refused"), resp(200))
    with pytest.raises(httpx.ConnectError):
        send_with_retry(send, RetryPolicy(abort=lambda: True), what="t", sleep=lambda s: None)
    assert send.calls == 1


def test_error_body_becomes_typed_errors():
    err = error_from_response(
        resp(401, json={"error": {"code": "invalid_token", "message": "Token revoked."}})
    )
    assert isinstance(err, AuthError) and err.code == "invalid_token"
    err = error_from_response(
        resp(400, json={"error": {"code": "invalid", "message": "bad", "fields": {"n": ["x"]}}})
    )
    assert type(err) is ApiError and err.fields == {"n": ["x"]}
    assert error_from_response(httpx.Response(502, text="<html>")).code == "http_502"


def test_server_client_lease_204_and_unreachable():
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path, request.headers["authorization"]))
        return httpx.Response(204)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = ServerClient(http, "http://tp/", "tp_x")
    assert client.lease("3", "m", 4) is None
    assert seen == [("POST", "/api/v1/leases/", "Bearer tp_x")]

    def down(request):
        raise httpx.ConnectError("refused")

    client = ServerClient(
        httpx.Client(transport=httpx.MockTransport(down)),
        "http://tp",
        "tp_x",
        policy=RetryPolicy(max_attempts=2, base_s=0),
    )
    with pytest.raises(ServerUnreachable, match="cannot reach the Thinkpool server at http://tp"):
        client.me()


def test_parse_nvidia_smi():
    from contributors.worker.hardware import detect_hardware, parse_nvidia_smi

    out = "NVIDIA H100 80GB HBM3, 81559\nNVIDIA GeForce RTX 4090, 24564\n"
    assert parse_nvidia_smi(out) == [
        {"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559},
        {"name": "NVIDIA GeForce RTX 4090", "memory_mb": 24564},
    ]
    hw = detect_hardware()
    assert hw["cpu_count"] >= 1 and hw["ram_mb"] > 0 and hw["os"]

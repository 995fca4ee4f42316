"""Hostile clients: bodies built to crash the parser, forged proxy headers, token guessing, and
a dead cache. Each gets a clear answer (4xx, 429, or service as usual), never a 500, and
changes nothing."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.http import HttpRequest
from rest_framework.test import APIClient

from contributors.api.parsers import (
    MAX_JSON_DEPTH,
    InvalidUnicode,
    LimitedJSONParser,
    NestedTooDeeply,
)
from contributors.models import ApiToken, ComputeNode, Lease, LeaseItem, Slot
from contributors.throttling import (
    CacheGuard,
    FailedAuthLimiter,
    TokenRateThrottle,
    cache_guard,
    client_address,
)
from scoring.models import Sample
from tests.factories import sample_payload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache_guard() -> Iterator[None]:
    # The guard is process-wide: a test that finds the cache dead must not leave later tests
    # running without limits.
    cache_guard.reset()
    yield
    cache_guard.reset()
    cache_guard.retry_after_s = 5.0


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A local port where nothing listens: bound but never listening, so every connection is
    refused at once, and no other process can take the port during the test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def dead_cache(settings, dead_port: int) -> str:
    """The default cache is a real Redis client pointed at the dead port."""
    url = f"redis://127.0.0.1:{dead_port}/0"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    return url


def snapshot() -> tuple:
    return (
        ComputeNode.objects.count(),
        Lease.objects.count(),
        LeaseItem.objects.count(),
        Sample.objects.count(),
        tuple(Slot.objects.order_by("pk").values_list("filled", "outstanding")),
    )


def error(response) -> dict:
    return response.json()["error"]


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def node_body(**overrides: object) -> dict:
    body: dict = {"name": "box2", "backend": "openai", "models": [{"id": "org/model-a"}]}
    body.update(overrides)
    return body


def post_raw(client: APIClient, url: str, text: str):
    return client.generic("POST", url, text, content_type="application/json")


# --- Deeply nested JSON ---------------------------------------------------------------------


def parse(text: str) -> object:
    return LimitedJSONParser().parse(io.BytesIO(text.encode("utf-8")))


def test_parser_accepts_the_depth_bound_and_refuses_one_more():
    # nested(d) is d objects, one inside the other: the outermost is level 1.
    assert parse(json.dumps(nested(MAX_JSON_DEPTH))) == nested(MAX_JSON_DEPTH)
    with pytest.raises(NestedTooDeeply):
        parse(json.dumps(nested(MAX_JSON_DEPTH + 1)))
    assert parse("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    lists = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(NestedTooDeeply):
        parse(lists)


def test_many_brackets_inside_strings_are_not_depth():
    text = json.dumps({"completion": "[" * 10_000 + "{" * 10_000})
    assert parse(text) == {"completion": "[" * 10_000 + "{" * 10_000}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 400, 100_000])
def test_deep_hardware_is_400_and_registers_nothing(api, depth):
    # 400 levels was a RecursionError (500); 100,000 is past the C decoder's own guard.
    before = snapshot()
    text = json.dumps(node_body(hardware={"gpu": "x"}))
    text = text.replace('"x"', '{"a": ' * depth + "1" + "}" * depth)
    response = post_raw(api, "/api/v1/nodes/", text)
    assert response.status_code == 400
    assert error(response)["code"] == "nested_too_deeply"
    assert str(MAX_JSON_DEPTH) in error(response)["message"]
    if depth < 1000:  # found by the walk, which names where (the decoder's guard cannot)
        # The body is level 1, so the first container past the bound, level 65, is here:
        assert error(response)["path"] == "$.hardware.gpu" + ".a" * (MAX_JSON_DEPTH - 2)
    assert snapshot() == before


def test_deep_sampling_in_an_upload_is_400_and_stores_nothing(api, lease):
    before = snapshot()
    sample = sample_payload(lease["items"][0]["id"], sampling=nested(300))
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": [sample]}, "json")
    assert response.status_code == 400
    assert error(response)["code"] == "nested_too_deeply"
    assert snapshot() == before


# --- Lone surrogates ------------------------------------------------------------------------


def test_parser_refuses_lone_surrogates_anywhere_and_names_where():
    with pytest.raises(InvalidUnicode, match=r"string at \$\.a\[1\]\.b holds a lone surrogate"):
        parse(json.dumps({"a": [1, {"b": "ok \ud800 ok"}]}))
    with pytest.raises(InvalidUnicode, match=r"key at \$\.a\.x\\udfff holds"):
        parse(json.dumps({"a": {"x\udfff": 1}}))
    with pytest.raises(InvalidUnicode):
        parse('"\\uDC00\\uD800"')  # low before high: two lone halves, not a pair
    # The first in document order is named.
    with pytest.raises(InvalidUnicode) as raised:
        parse(json.dumps({"samples": [{"a": "ok"}, {"b": "\ud800", "c": "\udc00"}, "\ud800"]}))
    assert raised.value.path == "$.samples[1].b"


def test_parser_keeps_valid_surrogate_pairs():
    # ensure_ascii JSON (Python's default) writes astral characters as escaped pairs.
    assert parse(json.dumps({"text": "🙂 ok"})) == {"text": "🙂 ok"}
    assert parse('{"text": "\\\\ud800"}') == {"text": "\\ud800"}  # an escaped backslash


def test_lone_surrogate_in_a_node_is_400_and_registers_nothing(api):
    before = snapshot()
    response = post_raw(api, "/api/v1/nodes/", json.dumps(node_body(hardware={"gpu": "\ud800"})))
    assert response.status_code == 400
    assert error(response)["code"] == "invalid_unicode"
    assert error(response)["path"] == "$.hardware.gpu"
    assert "$.hardware.gpu" in error(response)["message"]
    assert snapshot() == before


def test_lone_surrogate_in_an_upload_is_400_and_stores_nothing(api, lease):
    before = snapshot()
    items = lease["items"]
    samples = [
        sample_payload(items[0]["id"]),
        sample_payload(items[1]["id"], completion="<think>x</think> \udbff \\boxed{4}"),
    ]
    text = json.dumps({"samples": samples})
    response = post_raw(api, f"/api/v1/leases/{lease['id']}/samples/", text)
    assert response.status_code == 400
    assert error(response)["code"] == "invalid_unicode"
    # The path lets a client set that one sample aside and send the others again.
    assert error(response)["path"] == "$.samples[1].completion"
    assert snapshot() == before


def test_valid_astral_text_is_stored_and_read_back(api):
    response = post_raw(api, "/api/v1/nodes/", json.dumps(node_body(hardware={"gpu": "🙂"})))
    assert response.status_code == 201, response.content
    assert ComputeNode.objects.get(name="box2").hardware == {"gpu": "🙂"}


# --- X-Forwarded-For ------------------------------------------------------------------------


@pytest.fixture
def anon_rate_3(monkeypatch) -> None:
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/min", "anon": "3/min"})


def stats(client: APIClient, **meta: Any) -> int:
    return client.get("/api/v1/stats/", **meta).status_code


def test_without_proxies_a_new_forwarded_for_per_request_is_the_same_client(anon_rate_3):
    client = APIClient()
    codes = [stats(client, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}") for i in range(4)]
    assert codes == [200, 200, 200, 429]
    # Another REMOTE_ADDR is another client.
    assert stats(client, REMOTE_ADDR="192.0.2.9") == 200


def test_behind_one_proxy_the_address_it_appended_is_the_client(settings, anon_rate_3):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    # The client forges what it sends; the proxy appends the address it saw, 203.0.113.7.
    forged = [
        stats(client, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7", **proxy)
        for i in range(4)
    ]
    assert forged == [200, 200, 200, 429]
    # Two clients behind the same proxy are two clients.
    assert stats(client, HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy) == 200


@pytest.mark.parametrize(
    ("proxies", "meta", "expected"),
    [
        (0, {"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}, "192.0.2.1"),
        (
            1,
            {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.9"},
            "203.0.113.9",
        ),
        (
            2,
            {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1,203.0.113.9, 10.0.0.2"},
            "203.0.113.9",
        ),
        (1, {"REMOTE_ADDR": "10.0.0.1"}, "10.0.0.1"),
        # An IPv6 client is its /64; an IPv4 one mapped into IPv6 is that IPv4 address.
        (0, {"REMOTE_ADDR": "2001:DB8:0:7:aaaa::1"}, "2001:db8:0:7::"),
        (0, {"REMOTE_ADDR": "::ffff:192.0.2.4"}, "192.0.2.4"),
        (1, {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "<script>"}, None),
        (0, {}, None),
    ],
)
def test_client_address_trusts_exactly_the_configured_proxies(settings, proxies, meta, expected):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}
    request = HttpRequest()
    request.META.update(meta)
    assert client_address(request) == expected


# --- Failed token authentication ------------------------------------------------------------


@pytest.fixture
def auth_failures_3(monkeypatch) -> None:
    monkeypatch.setattr(FailedAuthLimiter, "THROTTLE_RATES", {"auth_failure": "3/min"})


def me(client: APIClient, token: str, **meta: Any):
    return client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {token}", **meta)


def test_failed_authentications_are_throttled_per_address(
    user, auth_failures_3, django_assert_num_queries
):
    from contributors.services import issue_token

    _, good = issue_token(user=user)
    client = APIClient()
    assert [me(client, f"tp_guess{i}").status_code for i in range(3)] == [401, 401, 401]
    with django_assert_num_queries(0):  # refused before the token is looked up
        response = me(client, "tp_guess4")
    assert response.status_code == 429
    assert error(response)["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60
    # The address is held back, whatever token it brings, until the window ends...
    assert me(client, good).status_code == 429
    # ...while another address is not.
    assert me(client, good, REMOTE_ADDR="192.0.2.50").status_code == 200
    assert me(client, "tp_other", REMOTE_ADDR="192.0.2.50").status_code == 401


def test_addresses_of_one_ipv6_64_share_the_failure_count(auth_failures_3):
    client = APIClient()
    codes = [me(client, "tp_x", REMOTE_ADDR=f"2001:db8:0:7::{i}").status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]
    assert me(client, "tp_x", REMOTE_ADDR="2001:db8:0:8::1").status_code == 401


def test_successful_authentications_do_not_count(user, auth_failures_3):
    from contributors.services import issue_token

    _, good = issue_token(user=user)
    client = APIClient()
    assert [me(client, good).status_code for _ in range(5)] == [200] * 5
    assert [me(client, "tp_bad").status_code for _ in range(3)] == [401] * 3
    assert me(client, "tp_bad").status_code == 429


def test_malformed_headers_and_revoked_tokens_count_as_failures(user, auth_failures_3):
    from contributors.services import issue_token, revoke_token

    token, raw = issue_token(user=user)
    revoke_token(token=token)
    client = APIClient()
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION="Bearer a b").status_code == 401
    assert me(client, raw).status_code == 401
    assert me(client, "tp_x").status_code == 401
    assert me(client, raw).status_code == 429
    assert ApiToken.objects.get(pk=token.pk).last_used is None


# --- A dead cache: limits fail open ---------------------------------------------------------


def test_api_serves_with_the_cache_down_and_warns_once(api, dead_cache, caplog):
    cache_guard.retry_after_s = 0  # try the dead cache on every request
    with caplog.at_level(logging.WARNING, logger="contributors.throttling"):
        codes = [api.get("/api/v1/me/").status_code for _ in range(5)]
    assert codes == [200] * 5
    warnings = [r for r in caplog.records if r.name == "contributors.throttling"]
    assert len(warnings) == 1
    assert "The cache is unreachable (ConnectionError" in warnings[0].getMessage()


def test_failed_auth_limit_fails_open_with_the_cache_down(dead_cache, auth_failures_3):
    client = APIClient()
    assert [me(client, f"tp_guess{i}").status_code for i in range(5)] == [401] * 5


def test_uploads_are_stored_with_the_cache_down(api, lease, settings, dead_port):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{dead_port}/0",
        }
    }
    sample = sample_payload(lease["items"][0]["id"])
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": [sample]}, "json")
    assert response.status_code == 200, response.content
    assert Sample.objects.filter(client_id=sample["client_id"]).count() == 1


def test_cache_guard_skips_a_dead_cache_for_a_while_and_logs_again_later(monkeypatch, caplog):
    now = [1000.0]
    monkeypatch.setattr("contributors.throttling.time.monotonic", lambda: now[0])
    guard = CacheGuard(retry_after_s=5, log_every_s=60)
    calls = []

    def dead() -> bool:
        calls.append(now[0])
        raise ConnectionRefusedError("refused")

    with caplog.at_level(logging.WARNING, logger="contributors.throttling"):
        assert guard.call("x", dead, fallback=True) is True
        now[0] += 4  # within retry_after_s: not even tried
        assert guard.call("x", dead, fallback=True) is True
        now[0] += 2
        assert guard.call("x", dead, fallback=True) is True
        now[0] += 60
        assert guard.call("x", dead, fallback=True) is True
        assert guard.call("x", lambda: False, fallback=True) is True  # still skipped
        now[0] += 5
        assert guard.call("x", lambda: False, fallback=True) is False  # the cache is back
    assert calls == [1000.0, 1006.0, 1066.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "(1 checks skipped since the last warning)" in messages[0]
    assert "(3 checks skipped since the last warning)" in messages[1]

"""Bad input against every endpoint: a clear 4xx with a machine-readable error, and nothing
changed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from contributors.models import ApiToken, ComputeNode, Lease, LeaseItem, Slot
from contributors.services import expire_overdue_leases
from scoring.models import Sample
from tests.factories import NodeFactory, sample_payload

pytestmark = pytest.mark.django_db


def snapshot() -> tuple:
    return (
        ComputeNode.objects.count(),
        Lease.objects.count(),
        LeaseItem.objects.count(),
        Sample.objects.count(),
        tuple(Slot.objects.order_by("pk").values_list("filled", "outstanding")),
        tuple(Lease.objects.order_by("pk").values_list("state", flat=True)),
    )


def error_code(response) -> str:
    return response.json()["error"]["code"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "x", "backend": "openai", "models": []}, "models"),
        ({"name": "x", "backend": "openai", "models": "Qwen"}, "models"),
        ({"name": "x", "backend": "openai", "models": [{"id": 5.5j if False else None}]}, "models"),
        ({"name": "bad\x00name", "backend": "openai", "models": [{"id": "m"}]}, "name"),
        ({"name": "<script>", "backend": "openai", "models": [{"id": "m"}]}, "name"),
        ({"name": "x", "backend": "o" * 33, "models": [{"id": "m"}]}, "backend"),
        ({"name": "x", "backend": "openai", "models": [{"id": "m"}], "hardware": [1]}, "hardware"),
        (
            {
                "name": "x",
                "backend": "openai",
                "models": [{"id": "m"}],
                "hardware": {"a": "b" * 9000},
            },
            "hardware",
        ),
    ],
)
def test_register_node_rejects_bad_fields(api, body, field):
    before = snapshot()
    response = api.post("/api/v1/nodes/", body, format="json")
    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert field in response.json()["error"]["fields"]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "org/model-a"}, "node"),
        ({"node": "one", "model": "org/model-a"}, "node"),
        ({"node": 1, "model": "org/model-a", "max_prompts": 0}, "max_prompts"),
        ({"node": 1, "model": "org/model-a", "max_prompts": 100000}, "max_prompts"),
        ({"node": 1, "model": ["x"]}, "model"),
    ],
)
def test_lease_rejects_bad_fields(api, node, prompt_set, body, field):
    before = snapshot()
    response = api.post("/api/v1/leases/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert snapshot() == before


def test_lease_for_a_model_the_node_did_not_register(api, node, prompt_set):
    before = snapshot()
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "other/model", "max_prompts": 2},
        format="json",
    )
    assert response.status_code == 400
    assert error_code(response) == "model_not_served"
    assert snapshot() == before


def test_lease_on_another_contributors_node_is_not_found(api, other_user, prompt_set):
    theirs = NodeFactory(owner=other_user)
    before = snapshot()
    response = api.post(
        "/api/v1/leases/",
        {"node": theirs.pk, "model": "org/model-a", "max_prompts": 2},
        format="json",
    )
    assert response.status_code == 404
    assert error_code(response) == "not_found"
    assert api.post(f"/api/v1/nodes/{theirs.pk}/heartbeat/", {}, format="json").status_code == 404
    assert snapshot() == before


def test_upload_to_another_contributors_lease_is_not_found(other_api, lease):
    before = snapshot()
    payload = {"samples": [sample_payload(lease["items"][0]["id"])]}
    response = other_api.post(f"/api/v1/leases/{lease['id']}/samples/", payload, format="json")
    assert response.status_code == 404
    assert other_api.delete(f"/api/v1/leases/{lease['id']}/").status_code == 404
    assert other_api.get(f"/api/v1/leases/{lease['id']}/").status_code == 404
    assert snapshot() == before


def test_another_contributors_sample_is_not_found(api, other_api, lease):
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(lease["items"][0]["id"])]},
        format="json",
    )
    sample_id = response.json()["accepted"][0]["id"]
    assert other_api.get(f"/api/v1/samples/{sample_id}/").status_code == 404


def test_releasing_an_expired_lease_is_a_conflict(api, lease):
    Lease.objects.filter(pk=lease["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    expire_overdue_leases()
    before = snapshot()
    response = api.delete(f"/api/v1/leases/{lease['id']}/")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "lease_not_live",
        "message": "This lease is already expired.",
    }
    assert snapshot() == before


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"client_id": "not-a-uuid"}, "client_id"),
        ({"completion": 42}, "completion"),
        ({"completion": None}, "completion"),
        ({"completion": "nul\x00byte"}, "completion"),
        ({"reasoning": "nul\x00"}, "reasoning"),
        ({"model": None}, "model"),
        ({"sampling": "hot"}, "sampling"),
        ({"sampling": {"top_p": 0.9}}, "sampling"),
        ({"sampling": {"temperature": -1}}, "sampling"),
        ({"finish_reason": None}, "finish_reason"),
        ({"prompt_tokens": -3}, "prompt_tokens"),
        ({"prompt_tokens": 10**20}, "prompt_tokens"),
        ({"completion_tokens": 2**31}, "completion_tokens"),
        ({"item": 10**20}, "item"),
        ({"generation_ms": "fast"}, "generation_ms"),
        ({"item": "first"}, "item"),
    ],
)
def test_upload_rejects_each_bad_sample_with_its_field(api, lease, override, field):
    before = snapshot()
    bad = {**sample_payload(lease["items"][0]["id"]), **override}
    # json.dumps escapes a lone surrogate as \ud800, which is what a client on the wire sends.
    raw = json.dumps({"samples": [bad]})
    response = api.generic(
        "POST", f"/api/v1/leases/{lease['id']}/samples/", raw, content_type="application/json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == [] and body["duplicates"] == []
    [rejected] = body["rejected"]
    assert rejected["error"]["code"] == "invalid"
    assert field in rejected["error"]["fields"]
    assert snapshot() == before


def test_upload_rejects_an_oversized_completion(api, lease, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_COMPLETION_CHARS": 1000}
    before = snapshot()
    bad = sample_payload(lease["items"][0]["id"], completion="x" * 1001)
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": [bad]}, format="json")
    [rejected] = response.json()["rejected"]
    assert rejected["error"]["fields"]["completion"][0]["code"] == "max_length"
    assert snapshot() == before


def test_upload_rejects_an_unknown_item(api, lease):
    before = snapshot()
    bad = sample_payload(999999)
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": [bad]}, format="json")
    assert response.json()["rejected"] == [
        {
            "client_id": bad["client_id"],
            "error": {"code": "unknown_item", "message": "No such item in this lease."},
        }
    ]
    assert snapshot() == before


def test_upload_rejects_an_item_of_another_lease(api, node, prompt_set, lease):
    second = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 1},
        format="json",
    ).json()
    before = snapshot()
    bad = sample_payload(second["items"][0]["id"])
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": [bad]}, format="json")
    assert response.json()["rejected"][0]["error"]["code"] == "unknown_item"
    assert snapshot() == before


def test_upload_rejects_a_client_id_owned_by_someone_else(
    api, other_api, other_user, lease, prompt_set
):
    mine = sample_payload(lease["items"][0]["id"])
    api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": [mine]}, format="json")
    theirs_node = NodeFactory(owner=other_user)
    theirs = other_api.post(
        "/api/v1/leases/",
        {"node": theirs_node.pk, "model": "org/model-a", "max_prompts": 1},
        format="json",
    ).json()
    before = snapshot()
    replay = sample_payload(theirs["items"][0]["id"], client_id=mine["client_id"])
    response = other_api.post(
        f"/api/v1/leases/{theirs['id']}/samples/", {"samples": [replay]}, format="json"
    )
    assert response.json()["rejected"][0]["error"]["code"] == "client_id_conflict"
    assert snapshot() == before


def test_upload_rejects_the_same_client_id_twice_in_one_request(api, lease):
    sample = sample_payload(lease["items"][0]["id"])
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": [sample, sample]}, format="json"
    )
    body = response.json()
    assert len(body["accepted"]) == 1
    assert body["rejected"][0]["error"]["code"] == "client_id_repeated"
    assert Sample.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"samples": []}, {"samples": "all"}, [1, 2], {"samples": None}],
)
def test_upload_envelope_must_be_a_non_empty_list(api, lease, body):
    before = snapshot()
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", body, format="json")
    assert response.status_code == 400
    assert snapshot() == before


def test_upload_with_more_samples_than_allowed(api, lease, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_SAMPLES_PER_UPLOAD": 3}
    before = snapshot()
    samples = [sample_payload(lease["items"][0]["id"]) for _ in range(4)]
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json"
    )
    assert response.status_code == 400
    assert "samples" in response.json()["error"]["fields"]
    assert snapshot() == before


def test_upload_non_objects_are_rejected_per_item(api, lease):
    good = sample_payload(lease["items"][0]["id"])
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": [good, "junk", 7]}, format="json"
    )
    body = response.json()
    assert len(body["accepted"]) == 1
    assert [r["error"]["code"] for r in body["rejected"]] == ["invalid", "invalid"]


def test_oversized_body_is_413(api, lease, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    before = snapshot()
    samples = [sample_payload(lease["items"][0]["id"], completion="y" * 3000)]
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json"
    )
    assert response.status_code == 413
    assert error_code(response) == "body_too_large"
    assert snapshot() == before


def test_invalid_utf8_body_is_400(api, lease):
    before = snapshot()
    body = json.dumps({"samples": [sample_payload(lease["items"][0]["id"])]}).encode()
    body = body.replace(b"2+2", b"2\xff\xfe2")
    response = api.generic(
        "POST", f"/api/v1/leases/{lease['id']}/samples/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert error_code(response) == "parse_error"
    assert snapshot() == before


@pytest.mark.parametrize("raw", [b"{not json", b'{"samples": [NaN]}', b""])
def test_malformed_json_is_400(api, node, raw):
    before = snapshot()
    response = api.generic("POST", "/api/v1/nodes/", raw, content_type="application/json")
    assert response.status_code == 400
    assert snapshot() == before


def test_wrong_content_type_is_415(api):
    response = api.generic(
        "POST", "/api/v1/nodes/", b"name=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/me/"),
        ("post", "/api/v1/nodes/"),
        ("post", "/api/v1/nodes/1/heartbeat/"),
        ("post", "/api/v1/leases/"),
        ("post", "/api/v1/leases/1/samples/"),
        ("delete", "/api/v1/leases/1/"),
        ("post", "/api/v1/samples/"),
        ("get", "/api/v1/samples/1/"),
    ],
)
def test_revoked_and_missing_tokens_are_401(api, user, client, method, path):
    ApiToken.objects.filter(user=user).update(revoked_at=timezone.now())
    before = snapshot()
    for caller in (api, client):
        response = getattr(caller, method)(path, {}, content_type="application/json")
        assert response.status_code == 401
        assert response.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
    assert snapshot() == before


def test_a_garbage_token_is_401(client):
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION="Bearer tp_nope")
    assert response.status_code == 401


def test_banned_contributor_is_401(api, user):
    user.profile.banned = True
    user.profile.save()
    assert api.get("/api/v1/me/").status_code == 401


def test_throttled_requests_get_429_with_retry_after(api, monkeypatch):
    from contributors.throttling import TokenRateThrottle

    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/min", "anon": "3/min"})
    codes = [api.get("/api/v1/me/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = api.get("/api/v1/me/")
    assert int(response["Retry-After"]) > 0
    assert error_code(response) == "throttled"


def test_unknown_api_path_is_json_404(api):
    response = api.get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"samples": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested_too_deeply"),
        (
            b'{"name": "x", "backend": "openai", "models": [{"id": "o/m"}], '
            b'"hardware": {"x": 1e400}}',
            "parse_error",
        ),
    ],
)
def test_deep_nesting_and_infinite_numbers_are_400(api, raw, code):
    before = snapshot()
    response = api.generic("POST", "/api/v1/nodes/", raw, content_type="application/json")
    assert response.status_code == 400
    assert error_code(response) == code
    assert snapshot() == before


def test_nul_inside_json_fields_is_400_not_a_database_error(api, lease):
    before = snapshot()
    node = {
        "name": "x",
        "backend": "openai",
        "models": [{"id": "m"}],
        "hardware": {"gpu": "a\x00b"},
    }
    response = api.post("/api/v1/nodes/", node, format="json")
    assert response.status_code == 400
    assert "hardware" in response.json()["error"]["fields"]
    bad = sample_payload(lease["items"][0]["id"])
    bad["sampling"] = {**bad["sampling"], "stop": ["\x00"]}
    upload = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": [bad]}, format="json")
    assert "sampling" in upload.json()["rejected"][0]["error"]["fields"]
    assert snapshot() == before

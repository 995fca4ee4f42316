"""The happy paths of the work-distribution API, with exact values and side effects."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from contributors.models import ComputeNode, Lease, LeaseItem, LeaseState, SampleOrigin, Slot
from contributors.services import expire_overdue_leases
from scoring.models import Sample
from tests.factories import NodeFactory, PromptFactory, PromptSetFactory, sample_payload

pytestmark = pytest.mark.django_db


def test_me_answers_with_the_token_owner_and_the_servers_limits(api, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_SAMPLES_PER_UPLOAD": 64}
    response = api.get("/api/v1/me/")
    assert response.status_code == 200
    body = response.json()
    assert (body["username"], body["handle"], body["public_attribution"]) == (
        "alice",
        "alice",
        True,
    )
    assert body["limits"]["max_samples_per_upload"] == 64
    assert body["limits"]["max_body_bytes"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert body["samples"] == {
        "total": 0,
        "awaiting_disclosure": 0,
        "disclosed": {"received": 0, "scoring": 0, "verified": 0, "rejected": 0, "error": 0},
        "top_reasons": [],
    }


def test_register_node_then_reregister_keeps_the_id(api, user):
    body = {
        "name": "rig-1",
        "backend": "openai",
        "models": [{"id": "Qwen/Qwen3-8B", "revision": "main"}],
        "hardware": {"gpus": [{"name": "RTX 4090", "memory_mb": 24564}], "cpu_count": 16},
        "worker_version": "0.1.0",
    }
    first = api.post("/api/v1/nodes/", body, format="json")
    assert first.status_code == 201
    assert first.json()["models"] == [{"id": "Qwen/Qwen3-8B", "revision": "main"}]
    body["models"].append({"id": "Qwen/Qwen3-14B"})
    again = api.post("/api/v1/nodes/", body, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert ComputeNode.objects.filter(owner=user).count() == 1
    assert len(ComputeNode.objects.get(owner=user).models_served) == 2


def test_heartbeat_extends_the_live_leases_it_names(api, node, lease):
    Lease.objects.filter(pk=lease["id"]).update(deadline=timezone.now() + timedelta(seconds=30))
    response = api.post(
        f"/api/v1/nodes/{node.pk}/heartbeat/", {"leases": [lease["id"]]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["leases_extended"] == 1
    assert Lease.objects.get(pk=lease["id"]).deadline > timezone.now() + timedelta(minutes=50)


def test_lease_hands_out_short_slots_with_the_plan(api, node, prompt_set, lease):
    assert lease["model"] == "org/model-a"
    assert len(lease["items"]) == 3
    item = lease["items"][0]
    assert item["sampling"] == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768, "n": 2}
    assert set(item["prompt"]) == {"id", "messages"}
    slots = Slot.objects.filter(prompt_set=prompt_set, model="org/model-a")
    assert sorted(s.outstanding for s in slots if s.outstanding) == [2, 2, 2]


def test_lease_applies_the_instruction_template(api, node):
    prompt_set = PromptSetFactory(instruction_template="{prompt}\n\nThink, then box it.")
    PromptFactory(prompt_set=prompt_set, messages=[{"role": "user", "content": "1+1?"}])
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 1},
        format="json",
    )
    assert response.json()["items"][0]["prompt"]["messages"] == [
        {"role": "user", "content": "1+1?\n\nThink, then box it."}
    ]


def test_lease_prefers_higher_priority_sets(api, node):
    low = PromptSetFactory(priority=0)
    high = PromptSetFactory(priority=5)
    PromptFactory.create_batch(2, prompt_set=low)
    high_prompts = PromptFactory.create_batch(2, prompt_set=high)
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 2},
        format="json",
    )
    assert sorted(i["prompt"]["id"] for i in response.json()["items"]) == sorted(
        p.pk for p in high_prompts
    )


def test_lease_skips_sets_whose_plan_excludes_the_model(api, node):
    other = PromptSetFactory(models_allowed=["meta-llama/*"])
    PromptFactory(prompt_set=other)
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 4},
        format="json",
    )
    assert response.status_code == 204
    assert Lease.objects.count() == 0


def test_no_work_is_204_and_creates_nothing(api, node):
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 4},
        format="json",
    )
    assert response.status_code == 204
    assert response.content == b""
    assert Lease.objects.count() == 0


def test_upload_stores_counts_and_closes_the_lease(api, user, node, lease):
    samples = [
        sample_payload(item["id"]) for item in lease["items"] for _ in range(item["sampling"]["n"])
    ]
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert len(body["accepted"]) == 6 and body["duplicates"] == [] and body["rejected"] == []
    assert Sample.objects.filter(contributor=user).count() == 6
    assert Lease.objects.get(pk=lease["id"]).state == LeaseState.DONE
    for slot in Slot.objects.filter(lease_items__lease_id=lease["id"]):
        assert (slot.filled, slot.outstanding) == (2, 0)
    origin = SampleOrigin.objects.get(sample_id=body["accepted"][0]["id"])
    assert origin.node_id == node.pk and origin.lease_item.lease_id == lease["id"]
    stored = Sample.objects.get(pk=body["accepted"][0]["id"])
    assert (stored.model, stored.model_revision, stored.temperature) == (
        "org/model-a",
        "abc123",
        0.6,
    )


def test_retried_upload_is_a_duplicate_not_a_second_row(api, lease):
    samples = [sample_payload(lease["items"][0]["id"])]
    first = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json")
    again = api.post(f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json")
    assert again.status_code == 200
    assert again.json()["accepted"] == []
    assert again.json()["duplicates"] == first.json()["accepted"]
    assert Sample.objects.count() == 1
    assert Slot.objects.get(lease_items__id=lease["items"][0]["id"]).filled == 1


def test_partial_acceptance_keeps_the_good_samples(api, lease):
    good = sample_payload(lease["items"][0]["id"])
    bad = sample_payload(lease["items"][0]["id"], sampling={"temperature": 1.3})
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": [good, bad]}, format="json"
    )
    body = response.json()
    assert [a["client_id"] for a in body["accepted"]] == [good["client_id"]]
    assert body["rejected"] == [
        {
            "client_id": bad["client_id"],
            "error": {
                "code": "sampling_mismatch",
                "message": "This item asks for temperature 0.6.",
            },
        }
    ]
    assert Sample.objects.count() == 1


def test_samples_beyond_what_the_item_asked_are_rejected(api, lease):
    item = lease["items"][0]
    samples = [sample_payload(item["id"]) for _ in range(item["sampling"]["n"] + 1)]
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json"
    ).json()
    assert len(response["accepted"]) == 2
    assert response["rejected"] == [
        {
            "client_id": samples[-1]["client_id"],
            "error": {"code": "item_full", "message": "This item asked for 2 samples."},
        }
    ]
    slot = Slot.objects.get(lease_items__id=item["id"])
    assert (slot.filled, slot.outstanding, slot.target) == (2, 0, 2)
    assert Sample.objects.count() == 2


def test_a_sample_of_another_model_is_rejected(api, lease):
    bad = sample_payload(lease["items"][0]["id"], model="someone/else")
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": [bad]}, format="json"
    ).json()
    assert response["rejected"][0]["error"]["code"] == "model_mismatch"
    assert Sample.objects.count() == 0


def test_heartbeats_cannot_keep_a_lease_forever(api, node, lease, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_LEASE_LIFETIME_S": 600}
    now = timezone.now()
    created = now - timedelta(seconds=590)
    Lease.objects.filter(pk=lease["id"]).update(
        created_at=created, deadline=now + timedelta(seconds=5)
    )
    assert (
        api.post(
            f"/api/v1/nodes/{node.pk}/heartbeat/", {"leases": [lease["id"]]}, format="json"
        ).json()["leases_extended"]
        == 1
    )
    # Extended to the lifetime's end (10 s away), not by a whole lease length (an hour).
    assert Lease.objects.get(pk=lease["id"]).deadline == created + timedelta(seconds=600)


def test_temperatures_are_matched_after_rounding(api, lease):
    near = sample_payload(lease["items"][0]["id"], temperature=0.6000000001)
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": [near]}, format="json"
    ).json()
    assert len(response["accepted"]) == 1


def test_release_returns_unfinished_slots_to_the_pool(api, lease):
    api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(lease["items"][0]["id"])]},
        format="json",
    )
    response = api.delete(f"/api/v1/leases/{lease['id']}/")
    assert response.status_code == 200
    assert response.json() == {"id": lease["id"], "state": "released", "released": 5}
    assert sum(Slot.objects.values_list("outstanding", flat=True)) == 0
    assert sum(Slot.objects.values_list("filled", flat=True)) == 1


def test_expiry_returns_slots_and_late_uploads_still_count_while_short(api, node, lease):
    Lease.objects.filter(pk=lease["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    assert expire_overdue_leases() == 1
    assert Lease.objects.get(pk=lease["id"]).state == LeaseState.EXPIRED
    assert sum(Slot.objects.values_list("outstanding", flat=True)) == 0
    late = sample_payload(lease["items"][0]["id"])
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": [late]}, format="json"
    )
    assert len(response.json()["accepted"]) == 1
    assert Sample.objects.get().counted is True
    assert Slot.objects.get(lease_items__id=lease["items"][0]["id"]).filled == 1


def test_late_upload_for_a_slot_already_full_is_kept_as_extra(
    api, other_api, node, other_user, lease
):
    item_id = lease["items"][0]["id"]
    Lease.objects.filter(pk=lease["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    expire_overdue_leases()
    slot = Slot.objects.get(lease_items__id=item_id)
    Slot.objects.filter(pk=slot.pk).update(filled=slot.target)
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(item_id)]},
        format="json",
    )
    assert len(response.json()["accepted"]) == 1
    assert Sample.objects.get().counted is False
    assert Slot.objects.get(pk=slot.pk).filled == slot.target


def test_offline_upload_by_prompt_id_counts_towards_a_short_slot(api, node, lease):
    item = LeaseItem.objects.select_related("slot").get(pk=lease["items"][0]["id"])
    api.delete(f"/api/v1/leases/{lease['id']}/")
    payload = sample_payload(0, prompt=item.slot.prompt_id)
    del payload["item"]
    response = api.post("/api/v1/samples/", {"samples": [payload]}, format="json")
    assert len(response.json()["accepted"]) == 1
    assert Slot.objects.get(pk=item.slot_id).filled == 1


def test_sample_detail_shows_status_without_gold(api, lease):
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(lease["items"][0]["id"])]},
        format="json",
    )
    sample_id = response.json()["accepted"][0]["id"]
    detail = api.get(f"/api/v1/samples/{sample_id}/")
    assert detail.status_code == 200
    body = detail.json()
    assert body["id"] == sample_id
    # The prompt is open: the gold-free checks, and no word on correctness yet.
    assert (body["disclosed"], body["status"], body["status_reason"]) == (
        False,
        "accepted",
        "correctness is disclosed when the prompt closes",
    )
    assert [v["verifier"] for v in body["verdicts"]] == [
        "format",
        "language",
        "repetition",
        "truncation",
    ]
    assert "SECRET-GOLD-42" not in detail.content.decode()


def test_lease_caps_per_node(api, node, prompt_set, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_LIVE_LEASES_PER_NODE": 1}
    body = {"node": node.pk, "model": "org/model-a", "max_prompts": 1}
    assert api.post("/api/v1/leases/", body, format="json").status_code == 201
    second = api.post("/api/v1/leases/", body, format="json")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "too_many_live_leases"
    assert Lease.objects.count() == 1


def test_lease_caps_per_contributor_across_nodes(api, user, prompt_set, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_LIVE_LEASES_PER_CONTRIBUTOR": 2}
    nodes = [NodeFactory(owner=user) for _ in range(3)]
    codes = [
        api.post(
            "/api/v1/leases/",
            {"node": n.pk, "model": "org/model-a", "max_prompts": 1},
            format="json",
        ).status_code
        for n in nodes
    ]
    assert codes == [201, 201, 409]


def test_stats_are_public_and_count(api, lease, client):
    api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(lease["items"][0]["id"])]},
        format="json",
    )
    response = client.get("/api/v1/stats/")
    assert response.status_code == 200
    body = response.json()
    assert body["prompts"] == 5 and body["samples"] == 1 and body["slots"]["filled"] == 1


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/leases/{lease_id}/samples/" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_unknown_client_ids_in_two_requests_never_double_count(api, lease):
    item = lease["items"][0]
    ids = [str(uuid.uuid4()) for _ in range(2)]
    for client_id in ids + ids:
        api.post(
            f"/api/v1/leases/{lease['id']}/samples/",
            {"samples": [sample_payload(item["id"], client_id=client_id)]},
            format="json",
        )
    assert Sample.objects.count() == 2
    assert Slot.objects.get(lease_items__id=item["id"]).filled == 2


def test_daily_quota_rejects_what_does_not_fit(api, user, lease):
    user.profile.quota_samples_per_day = 3
    user.profile.save()
    item = lease["items"][0]["id"]
    first = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(item) for _ in range(2)]},
        format="json",
    ).json()
    assert len(first["accepted"]) == 2
    second = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(lease["items"][1]["id"]) for _ in range(2)]},
        format="json",
    ).json()
    assert len(second["accepted"]) == 1
    assert [r["error"]["code"] for r in second["rejected"]] == ["quota_exceeded"]
    assert Sample.objects.filter(contributor=user).count() == 3

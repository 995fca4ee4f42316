"""Idempotent lease creation, the node's lease list, and heartbeats that extend only the
leases a worker names: a lease whose answer was lost cannot hold its slots."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from contributors.models import Lease, LeaseState, Slot
from contributors.services import expire_overdue_leases
from tests.factories import NodeFactory

pytestmark = pytest.mark.django_db


def _lease(api, node, key=None, model="org/model-a", max_prompts=2):
    body = {"node": node.pk, "model": model, "max_prompts": max_prompts}
    if key is not None:
        body["key"] = key
    return api.post("/api/v1/leases/", body, format="json")


def _outstanding(prompt_set) -> int:
    return sum(Slot.objects.filter(prompt_set=prompt_set).values_list("outstanding", flat=True))


def test_the_same_key_returns_the_same_lease_and_books_nothing_twice(api, node, prompt_set):
    first = _lease(api, node, key="k-1")
    assert first.status_code == 201
    booked = _outstanding(prompt_set)
    again = _lease(api, node, key="k-1")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["key"] == "k-1"
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in first.json()["items"]]
    assert Lease.objects.count() == 1
    assert _outstanding(prompt_set) == booked == 4


def test_a_new_key_makes_a_new_lease(api, node, prompt_set):
    a = _lease(api, node, key="k-1").json()
    b = _lease(api, node, key="k-2").json()
    assert a["id"] != b["id"]
    assert Lease.objects.count() == 2


def test_a_key_reused_for_another_model_is_a_conflict(api, user, prompt_set):
    node = NodeFactory(owner=user, models_served=[{"id": "org/model-a"}, {"id": "org/model-b"}])
    assert _lease(api, node, key="k-1").status_code == 201
    response = _lease(api, node, key="k-1", model="org/model-b")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_key_conflict"
    assert Lease.objects.count() == 1


def test_keys_are_per_node(api, user, node, prompt_set):
    other_node = NodeFactory(owner=user, name="box-2")
    a = _lease(api, node, key="same").json()
    b = _lease(api, other_node, key="same").json()
    assert a["id"] != b["id"]


def test_a_key_of_a_closed_lease_returns_it_closed_with_no_open_items(api, node, prompt_set):
    first = _lease(api, node, key="k-1").json()
    assert api.delete(f"/api/v1/leases/{first['id']}/").status_code == 200
    again = _lease(api, node, key="k-1")
    assert again.status_code == 200
    assert again.json()["state"] == "released"
    assert again.json()["items"] == []
    assert _outstanding(prompt_set) == 0


@pytest.mark.parametrize("key", ["", "a" * 65, "has space", "semi;colon", 42])
def test_bad_keys_are_refused_and_lease_nothing(api, node, prompt_set, key):
    response = _lease(api, node, key=key)
    assert response.status_code == 400
    assert "key" in response.json()["error"]["fields"]
    assert Lease.objects.count() == 0
    assert _outstanding(prompt_set) == 0


def test_list_shows_the_nodes_leases_newest_first_with_open_items(api, node, prompt_set):
    a = _lease(api, node, key="a").json()
    b = _lease(api, node, key="b").json()
    api.delete(f"/api/v1/leases/{a['id']}/")
    response = api.get(f"/api/v1/leases/?node={node.pk}")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(r["id"], r["key"], r["state"], r["items_open"]) for r in rows] == [
        (b["id"], "b", "live", 2),
        (a["id"], "a", "released", 0),
    ]
    live = api.get(f"/api/v1/leases/?node={node.pk}&state=live").json()["results"]
    assert [r["id"] for r in live] == [b["id"]]


def test_list_of_another_users_node_is_not_found(api, other_api, node, prompt_set):
    _lease(api, node)
    response = other_api.get(f"/api/v1/leases/?node={node.pk}")
    assert response.status_code == 404


@pytest.mark.parametrize("query", ["", "?node=x", "?node=1&state=bogus"])
def test_list_with_bad_query_is_a_400(api, node, query):
    assert api.get(f"/api/v1/leases/{query}").status_code == 400


def test_heartbeat_extends_only_the_named_leases(api, node, prompt_set):
    known = _lease(api, node, key="known").json()
    orphan = _lease(api, node, key="orphan").json()
    soon = timezone.now() + timedelta(seconds=30)
    Lease.objects.update(deadline=soon)
    response = api.post(
        f"/api/v1/nodes/{node.pk}/heartbeat/", {"leases": [known["id"]]}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["leases_extended"] == 1
    assert [(row["id"], row["state"]) for row in body["leases"]] == [(known["id"], "live")]
    assert Lease.objects.get(pk=known["id"]).deadline > soon + timedelta(minutes=30)
    assert Lease.objects.get(pk=orphan["id"]).deadline == soon


def test_an_unnamed_orphan_expires_and_its_slots_go_back(api, node, prompt_set):
    _lease(api, node, key="orphan", max_prompts=5)
    assert _outstanding(prompt_set) == 10
    api.post(f"/api/v1/nodes/{node.pk}/heartbeat/", {}, format="json")
    api.post(f"/api/v1/nodes/{node.pk}/heartbeat/", {"leases": []}, format="json")
    later = timezone.now() + timedelta(hours=2)
    assert expire_overdue_leases(now=later) == 1
    assert Lease.objects.get().state == LeaseState.EXPIRED
    assert _outstanding(prompt_set) == 0


def test_heartbeat_ignores_leases_of_other_nodes_and_reports_expired_ones(
    api, other_api, user, other_user, node, prompt_set
):
    other_node = NodeFactory(owner=other_user, name="theirs")
    theirs = _lease(other_api, other_node).json()
    mine = _lease(api, node).json()
    Lease.objects.filter(pk=mine["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    response = api.post(
        f"/api/v1/nodes/{node.pk}/heartbeat/",
        {"leases": [theirs["id"], mine["id"], 999999]},
        format="json",
    )
    body = response.json()
    assert body["leases_extended"] == 0
    assert [(row["id"], row["state"]) for row in body["leases"]] == [(mine["id"], "expired")]
    assert Lease.objects.get(pk=theirs["id"]).deadline > timezone.now()


@pytest.mark.parametrize(
    "body", [{"leases": "1"}, {"leases": [0]}, {"leases": ["x"]}, {"leases": list(range(1, 66))}]
)
def test_heartbeat_with_bad_lease_list_is_a_400(api, node, body):
    response = api.post(f"/api/v1/nodes/{node.pk}/heartbeat/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"

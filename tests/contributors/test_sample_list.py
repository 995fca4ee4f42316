"""`GET /api/v1/samples/`: the caller's own samples, filtered and paginated, within the
disclosure policy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from contributors.models import SampleOrigin
from scoring.models import Prompt, Sample, SampleStatus
from tests.factories import NodeFactory, sample_payload

pytestmark = pytest.mark.django_db


def _upload(api, lease, n):
    samples = [sample_payload(item["id"]) for item in lease["items"][:n]]
    body = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json"
    ).json()
    return [row["id"] for row in body["accepted"]]


def test_lists_only_my_samples_newest_first(api, other_api, lease):
    ids = _upload(api, lease, 3)
    Sample.objects.filter(pk=ids[0]).update(received_at=timezone.now() - timedelta(hours=1))
    body = api.get("/api/v1/samples/").json()
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == [ids[2], ids[1], ids[0]]
    assert body["next"] is None and body["previous"] is None
    assert set(body["results"][0]) >= {"id", "client_id", "status", "disclosed", "verdicts"}
    assert other_api.get("/api/v1/samples/").json()["count"] == 0


def test_pages_link_to_each_other(api, lease):
    _upload(api, lease, 3)
    first = api.get("/api/v1/samples/?page_size=2").json()
    assert (first["count"], len(first["results"])) == (3, 2)
    assert "page=2" in first["next"] and first["previous"] is None
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    assert "page=1" in second["previous"]


def test_filters_by_node_and_since(api, user, lease):
    ids = _upload(api, lease, 2)
    other = NodeFactory(owner=user, name="other")
    SampleOrigin.objects.filter(sample_id=ids[0]).update(node=other)
    assert [r["id"] for r in api.get(f"/api/v1/samples/?node={other.pk}").json()["results"]] == [
        ids[0]
    ]
    Sample.objects.filter(pk=ids[0]).update(received_at=timezone.now() - timedelta(days=2))
    since = (timezone.now() - timedelta(days=1)).isoformat()
    response = api.get("/api/v1/samples/", {"since": since})
    assert [r["id"] for r in response.json()["results"]] == [ids[1]]


def test_a_status_filter_never_sees_past_the_disclosure_policy(api, lease):
    ids = _upload(api, lease, 2)
    Sample.objects.filter(pk__in=ids).update(status=SampleStatus.VERIFIED)
    # Both verified, but their prompts are open: a status filter must not find them (it would
    # tell which guesses were right).
    assert api.get("/api/v1/samples/?status=verified").json()["count"] == 0
    assert api.get("/api/v1/samples/?status=awaiting_disclosure").json()["count"] == 2
    Prompt.objects.filter(samples__pk=ids[0]).update(closed_at=timezone.now())
    verified = api.get("/api/v1/samples/?status=verified").json()
    assert [r["id"] for r in verified["results"]] == [ids[0]]
    assert verified["results"][0]["disclosed"] is True


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "page=0", "page_size=501", "since=yesterday", "node=x", "page=abc"],
)
def test_bad_queries_are_a_400(api, query):
    response = api.get(f"/api/v1/samples/?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_the_list_costs_the_same_queries_for_one_or_many_disclosed(
    api, lease, django_assert_max_num_queries
):
    ids = _upload(api, lease, 3)
    Prompt.objects.update(closed_at=timezone.now())
    with django_assert_max_num_queries(8):
        body = api.get("/api/v1/samples/").json()
    assert len(body["results"]) == len(ids)

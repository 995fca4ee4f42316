"""Deleting leases and samples keeps the slot ledger right (counters cannot drift).

The pre_delete receiver (services.ledger._give_back_deleted) gives back what a deleted item of a
live lease still promises at the moment of deletion, not the `pending` the deletion Collector
loaded in `collect()`: it locks the item's lease (the lock an upload holds) and reads the item
again under it. The race: an upload that commits between `collect()` and the delete itself. The
test runs the upload at exactly that point (the Collector's `delete()` step), as a concurrent
request would.
"""

from __future__ import annotations

import pytest
from django.db.models.deletion import Collector

from contributors.models import Lease, Slot
from contributors.services import ledger
from scoring.models import Sample
from tests.conftest import client_for
from tests.factories import NodeFactory, PromptFactory, PromptSetFactory, sample_payload

pytestmark = pytest.mark.django_db


def _lease(api, node, max_prompts=1):
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": max_prompts},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_deleting_a_node_while_its_lease_takes_an_upload_keeps_the_books(
    api, node, other_user, monkeypatch
):
    # One prompt, target 4: alice's lease promises 2, bob's the other 2.
    prompt_set = PromptSetFactory(samples_per_prompt=2, replication=2)
    PromptFactory(prompt_set=prompt_set)
    mine = _lease(api, node)
    bob_node = NodeFactory(owner=other_user, name="bob-box")
    _lease(client_for(other_user), bob_node)
    slot = Slot.objects.get(prompt_set=prompt_set)
    assert (slot.filled, slot.outstanding) == (0, 4)

    original = Collector.delete
    ran: list[bool] = []

    def upload_then_delete(self):  # type: ignore[no-untyped-def]
        if not ran:
            ran.append(True)
            body = api.post(
                f"/api/v1/leases/{mine['id']}/samples/",
                {"samples": [sample_payload(mine["items"][0]["id"])]},
                format="json",
            ).json()
            assert len(body["accepted"]) == 1
        return original(self)

    monkeypatch.setattr(Collector, "delete", upload_then_delete)
    # Nodes are PROTECTed from a raw cascade (services.nodes.delete_node releases first); the
    # lease itself can still be deleted directly, which runs the pre_delete receiver.
    Lease.objects.filter(pk=mine["id"]).delete()

    slot.refresh_from_db()
    # Truth: 1 sample filled it; bob's lease still promises 2.
    assert (slot.filled, slot.outstanding) == (1, 2)
    assert ledger.check().clean


def test_deleting_a_sample_in_the_admin_keeps_the_books(admin_client, api, lease, prompt_set):
    """The sample admin refuses deletion (a stored sample is counted in its slot, the
    contributor's per-prompt cap and the public counters; it is quarantined instead): a delete
    request posted to it leaves the sample stored and the ledger clean."""
    body = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(lease["items"][0]["id"])]},
        format="json",
    ).json()
    sample_id = body["accepted"][0]["id"]
    admin_client.post(f"/admin/scoring/sample/{sample_id}/delete/", {"post": "yes"})
    report = ledger.check()
    assert report.clean, (Sample.objects.filter(pk=sample_id).exists(), report.slots_wrong)

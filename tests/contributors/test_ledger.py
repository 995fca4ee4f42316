"""The slot ledger: deletions that cascade give back what they promised, and
`manage.py check_ledger [--repair]` recomputes the books from the rows."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import ProtectedError

from contributors.models import ComputeNode, Lease, LeaseItem, Slot
from contributors.services import delete_node
from scoring import counters
from scoring.models import Sample
from tests.factories import sample_payload

pytestmark = pytest.mark.django_db


def _books(prompt_set):
    return sorted(
        Slot.objects.filter(prompt_set=prompt_set).values_list("pk", "filled", "outstanding")
    )


def _check(*args):
    out = StringIO()
    call_command("check_ledger", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def _upload(api, lease, n):
    samples = [sample_payload(item["id"]) for item in lease["items"][:n]]
    body = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": samples}, format="json"
    ).json()
    assert len(body["accepted"]) == n
    return body


def test_a_clean_ledger_checks_clean(api, lease, prompt_set):
    _upload(api, lease, 2)
    report = _check()
    assert (report["slots_wrong"], report["items_wrong"]) == ([], [])
    assert report["slots_checked"] == Slot.objects.count() == 5


def test_check_finds_drift_and_exits_nonzero_without_repair(api, lease, prompt_set):
    _upload(api, lease, 1)
    slot = Slot.objects.get(pk=LeaseItem.objects.get(pk=lease["items"][0]["id"]).slot_id)
    Slot.objects.filter(pk=slot.pk).update(filled=0, outstanding=0)
    with pytest.raises(CommandError):
        call_command("check_ledger", stdout=StringIO())
    # Nothing was changed by looking.
    assert Slot.objects.get(pk=slot.pk).filled == 0


def test_repair_puts_filled_outstanding_and_received_back(api, lease, prompt_set):
    _upload(api, lease, 2)
    right = _books(prompt_set)
    items_right = sorted(LeaseItem.objects.values_list("pk", "received", "returned"))
    Slot.objects.update(filled=0, outstanding=0)
    LeaseItem.objects.update(received=0)
    report = _check("--repair")
    assert report["repaired"] is True
    assert len(report["slots_wrong"]) == 3  # the three slots the lease touched
    assert len(report["items_wrong"]) == 2  # the two items with samples
    assert _books(prompt_set) == right
    assert sorted(LeaseItem.objects.values_list("pk", "received", "returned")) == items_right
    assert _check()["slots_wrong"] == []


def test_repair_rebuilds_the_counters(api, lease, prompt_set):
    _upload(api, lease, 2)
    before = counters.read()
    assert before[counters.SAMPLES] == 2
    assert before[counters.SLOTS_FILLED] == 2
    from scoring.models import Counter

    Counter.objects.update(value=12345)
    _check("--repair")
    assert counters.read() == before


def test_items_of_a_closed_lease_that_still_owe_are_repaired(api, lease, prompt_set):
    Lease.objects.filter(pk=lease["id"]).update(state="expired")  # closed behind the ledger's back
    report = _check("--repair")
    assert len(report["items_wrong"]) == 3
    assert all(i.pending == 0 for i in LeaseItem.objects.all())
    assert sum(s.outstanding for s in Slot.objects.all()) == 0


def test_deleting_a_node_gives_its_live_leases_slots_back(api, node, lease, prompt_set):
    assert sum(o for _, _, o in _books(prompt_set)) == 6
    assert delete_node(node=node) == 6
    assert not ComputeNode.objects.filter(pk=node.pk).exists()
    assert Lease.objects.count() == 0
    assert sum(o for _, _, o in _books(prompt_set)) == 0
    assert _check()["slots_wrong"] == []


def test_the_admin_deletes_nodes_through_the_service(admin_client, node, lease, prompt_set):
    response = admin_client.post(
        "/admin/contributors/computenode/",
        {"action": "delete_selected", "_selected_action": [node.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not ComputeNode.objects.filter(pk=node.pk).exists()
    assert sum(o for _, _, o in _books(prompt_set)) == 0


def test_a_raw_cascade_cannot_strand_slots(node, lease, prompt_set):
    """Code that deletes a node directly is refused while it has leases (PROTECT), instead of
    deleting live leases without giving their slots back."""
    with pytest.raises(ProtectedError):
        ComputeNode.objects.filter(pk=node.pk).delete()
    assert Lease.objects.count() == 1
    assert sum(o for _, _, o in _books(prompt_set)) == 6


def test_deleting_a_live_lease_directly_gives_its_slots_back(lease, prompt_set):
    Lease.objects.filter(pk=lease["id"]).delete()
    assert sum(o for _, _, o in _books(prompt_set)) == 0
    assert _check()["slots_wrong"] == []


def test_deleting_a_node_keeps_what_its_samples_filled(api, node, lease, prompt_set):
    _upload(api, lease, 1)
    delete_node(node=node)
    assert Sample.objects.count() == 1
    assert [(f, o) for _, f, o in _books(prompt_set) if f or o] == [(1, 0)]
    assert _check()["slots_wrong"] == []


def test_the_admin_cannot_edit_add_or_delete_lease_items(admin_client, lease):
    url = f"/admin/contributors/lease/{lease['id']}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b'name="items-0-n"' not in page.content
    item = LeaseItem.objects.order_by("pk").first()
    admin_client.post(
        url,
        {
            "items-TOTAL_FORMS": "1",
            "items-INITIAL_FORMS": "1",
            "items-0-id": str(item.pk),
            "items-0-lease": str(lease["id"]),
            "items-0-n": "99",
            "items-0-DELETE": "on",
        },
    )
    assert LeaseItem.objects.get(pk=item.pk).n == item.n
    assert LeaseItem.objects.count() == 3

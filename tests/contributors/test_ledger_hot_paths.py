"""Leasing a slot costs the same however many slots of closed prompts its set has.

The partial index `slot_open_by_coverage` holds only slots short of their target. Closing
prompts to collection (close_prompts, retire, twins of a closed text) shrinks their slots'
targets to what they have and are promised (ledger._close_slots), which takes them out of the
index, and materialise gives a prompt born closed no slot. Otherwise such slots would stay in the
index with filled = outstanding = 0, sort first, and `take()` would walk every one of them,
joining each to its prompt to throw it away, before reaching an open slot.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction

from contributors.models import Slot
from contributors.services import ledger
from scoring.models import Prompt
from scoring.services import close_prompts
from tests.factories import PromptFactory, PromptSetFactory


def _slot_rows_read(queryset) -> int:  # type: ignore[no-untyped-def]
    """Rows the plan read from the slot table (EXPLAIN ANALYZE: actual rows x loops)."""
    plan = json.loads(queryset.explain(analyze=True, format="json"))[0]["Plan"]
    read, stack = 0, [plan]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == Slot._meta.db_table:
            read += node["Actual Rows"] * node["Actual Loops"]
        stack.extend(node.get("Plans", []))
    return read


@pytest.mark.postgres
@pytest.mark.django_db
def test_taking_a_slot_does_not_read_the_slots_of_closed_prompts(api, node, settings):
    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "initial_quota": 1000}
    prompt_set = PromptSetFactory(samples_per_prompt=1)
    PromptFactory.create_batch(200, prompt_set=prompt_set)
    lease = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 200},
        format="json",
    ).json()
    assert len(lease["items"]) == 200
    api.delete(f"/api/v1/leases/{lease['id']}/")
    open_prompt = Prompt.objects.filter(prompt_set=prompt_set).order_by("-seq").first()
    close_prompts(
        prompt_ids=Prompt.objects.filter(prompt_set=prompt_set)
        .exclude(pk=open_prompt.pk)
        .values_list("pk", flat=True),
        twins=False,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with transaction.atomic():
        # The plan the table has at scale: an ordered walk of the partial index (a seq scan of
        # 200 rows reads them all, whatever the index holds).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
        # The query ledger.take() runs, without its row locks.
        query = ledger.open_slots(prompt_set, "org/model-a").order_by(
            "filled", "outstanding", "prompt_id", "temperature"
        )[:1]
        read = _slot_rows_read(query)
        taken = ledger.take(prompt_set, "org/model-a", 1)
    assert [s.prompt_id for s in taken] == [open_prompt.pk]
    assert read <= 5, f"{read} slot rows read to lease one slot"

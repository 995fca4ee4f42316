"""The data migrations on an existing database reach the prompts the old frontiers skipped.

Before contributors 0003 a frontier stood at a prompt id, and slots were made for prompts with
a higher id only, so a prompt whose (lower) id committed after the frontier passed it had no
slot. contributors 0003 (frontiers_to_seq) moves each frontier to just below the first prompt
of its set, at or below its id, that has no slot for the frontier's model and temperature: the
next lease makes that prompt's slot, and the slots that exist are kept.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from contributors.models import Slot
from tests.conftest import client_for
from tests.factories import NodeFactory, UserFactory

OLD = [
    ("contributors", "0002_lease_seconds_and_slot_frontier"),
    ("scoring", "0002_sample_claims_prompt_closed"),
]


def _migrate(targets):  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_prompts_the_old_id_frontier_skipped_get_slots_after_the_migration():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        apps = _migrate(OLD)
        PromptSet = apps.get_model("scoring", "PromptSet")
        Prompt = apps.get_model("scoring", "Prompt")
        OldSlot = apps.get_model("contributors", "Slot")
        SlotFrontier = apps.get_model("contributors", "SlotFrontier")
        prompt_set = PromptSet.objects.create(
            name="old", domain="math", license="MIT", temperatures=[0.6], samples_per_prompt=1
        )
        prompts = [
            Prompt.objects.create(
                prompt_set=prompt_set,
                messages=[{"role": "user", "content": f"q{i}"}],
                text_hash=f"{i:064d}",
            )
            for i in range(3)
        ]
        # p1 committed late: the old frontier had passed its id when it became visible.
        for p in (prompts[0], prompts[2]):
            OldSlot.objects.create(
                prompt=p, prompt_set=prompt_set, model="org/model-a", temperature=0.6, target=1
            )
        SlotFrontier.objects.create(
            prompt_set=prompt_set,
            model="org/model-a",
            temperature=0.6,
            last_prompt_id=prompts[2].pk,
        )
    finally:
        _migrate(latest)

    user = UserFactory(username="migrated")
    node = NodeFactory(owner=user)
    response = client_for(user).post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 16},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Slot.objects.filter(prompt_id=prompts[1].pk, model="org/model-a").exists()
    assert {i["prompt"]["id"] for i in response.json()["items"]} == {p.pk for p in prompts}

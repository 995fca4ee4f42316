"""`PromptSet.last_prompt_seq` and `Prompt.seq` survive the ordinary ways a set or a prompt is
saved or edited: no two prompts of a set collide on seq, and every open prompt gets its slots."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from contributors.models import Slot
from scoring.models import Prompt, PromptSet
from tests.factories import PromptFactory, PromptSetFactory

pytestmark = pytest.mark.django_db


def _lease(api, node, max_prompts=50):
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": max_prompts},
        format="json",
    )
    assert response.status_code in (201, 204), response.content
    return response.json() if response.status_code == 201 else {"items": []}


def test_saving_a_set_loaded_before_an_import_keeps_its_last_seq():
    """A save of the set loaded before an import (an admin change form, any code holding a stale
    instance) leaves `last_prompt_seq` as the import left it: PromptSet.save() writes every other
    column, and only next_seqs, under the set's row lock, writes that one."""
    prompt_set = PromptSetFactory()
    stale = PromptSet.objects.get(pk=prompt_set.pk)
    PromptFactory.create_batch(3, prompt_set=prompt_set)
    stale.priority = 5
    stale.save()
    assert PromptSet.objects.get(pk=prompt_set.pk).last_prompt_seq == 3


def test_prompts_imported_after_a_stale_set_save_get_new_seqs_and_slots(api, node):
    prompt_set = PromptSetFactory(samples_per_prompt=1)
    stale = PromptSet.objects.get(pk=prompt_set.pk)
    first = PromptFactory.create_batch(3, prompt_set=prompt_set)
    stale.description = "edited in the admin while the import ran"
    stale.save()
    try:
        with transaction.atomic():
            late = PromptFactory(prompt_set=prompt_set)
    except IntegrityError as exc:
        pytest.fail(f"a new prompt collided on (prompt_set, seq): {exc}")
    leased = {i["prompt"]["id"] for i in _lease(api, node)["items"]}
    assert leased == {p.pk for p in first} | {late.pk}


def test_a_prompt_moved_to_another_set_in_the_admin_gets_slots_there(admin_client, api, node):
    """A change form that posts another `prompt_set` does not move the prompt: the prompt
    admin keeps the field read-only on change, since a prompt's seq is its place in its set. The
    attack is a prompt carried into set b with a's seq, at or below b's frontier: it would never
    get a slot there, and the next import into b would collide with it."""
    a = PromptSetFactory(samples_per_prompt=1)
    b = PromptSetFactory(samples_per_prompt=1)
    PromptFactory.create_batch(3, prompt_set=a)
    PromptFactory(prompt_set=b)
    _lease(api, node)  # slots for every prompt so far; b's frontier is at seq 1
    moving = Prompt.objects.get(prompt_set=a, seq=2)
    response = admin_client.post(
        f"/admin/scoring/prompt/{moving.pk}/change/",
        {
            "prompt_set": b.pk,
            "external_id": moving.external_id,
            "messages": '[{"role": "user", "content": "moved"}]',
            "text_hash": moving.text_hash,
            "metadata": "{}",
            "gold-TOTAL_FORMS": "1",
            "gold-INITIAL_FORMS": "1",
            "gold-MIN_NUM_FORMS": "0",
            "gold-MAX_NUM_FORMS": "1",
            "gold-0-id": moving.gold.pk,
            "gold-0-prompt": moving.pk,
            "gold-0-answer": "SECRET-GOLD-42",
            "gold-0-tests": "null",
        },
    )
    assert response.status_code in (200, 302)
    moving.refresh_from_db()
    try:
        with transaction.atomic():
            PromptFactory(prompt_set=b)
    except IntegrityError as exc:
        pytest.fail(f"the next prompt of set b collided on seq: {exc}")
    _lease(api, node)
    # Whatever set it ended up in, an open prompt of an active set has a slot for the model.
    assert Slot.objects.filter(
        prompt=moving, prompt_set=moving.prompt_set, model="org/model-a"
    ).exists()

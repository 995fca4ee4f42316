"""Slots are made along each set's prompt seq, for every temperature of the plan, and leased
least covered first across temperatures."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import IntegrityError, transaction

from contributors.models import Slot
from scoring.models import Prompt, PromptSet
from tests.factories import PromptFactory, PromptSetFactory

pytestmark = pytest.mark.django_db


def _lease(api, node, max_prompts):
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": max_prompts},
        format="json",
    )
    assert response.status_code in (201, 204), response.content
    return response.json() if response.status_code == 201 else None


def test_every_temperature_of_the_plan_is_leased_from_the_start(api, node):
    prompt_set = PromptSetFactory(temperatures=[0.6, 1.0], samples_per_prompt=1)
    PromptFactory.create_batch(10, prompt_set=prompt_set)
    lease = _lease(api, node, 6)
    temps = Counter(item["sampling"]["temperature"] for item in lease["items"])
    assert temps == {0.6: 3, 1.0: 3}
    # Prompt by prompt: the same three prompts at both temperatures.
    by_temp = {
        t: sorted(i["prompt"]["id"] for i in lease["items"] if i["sampling"]["temperature"] == t)
        for t in (0.6, 1.0)
    }
    assert by_temp[0.6] == by_temp[1.0]


def test_a_temperature_whose_slots_are_untouched_does_not_hold_back_another(api, node):
    """The old check counted untouched slots over all temperatures: with 0.6 already made,
    1.0 was never made until 0.6 ran out."""
    prompt_set = PromptSetFactory(temperatures=[0.6], samples_per_prompt=1)
    PromptFactory.create_batch(8, prompt_set=prompt_set)
    _lease(api, node, 1)  # makes the 0.6 slots
    PromptSet.objects.filter(pk=prompt_set.pk).update(temperatures=[0.6, 1.0])
    lease = _lease(api, node, 4)
    temps = Counter(item["sampling"]["temperature"] for item in lease["items"])
    assert temps[1.0] >= 2
    assert Slot.objects.filter(prompt_set=prompt_set, temperature=1.0).count() == 8


def test_prompts_get_seqs_in_order_per_set():
    a = PromptSetFactory()
    b = PromptSetFactory()
    pa = PromptFactory.create_batch(3, prompt_set=a)
    pb = PromptFactory.create_batch(2, prompt_set=b)
    assert [p.seq for p in pa] == [1, 2, 3]
    assert [p.seq for p in pb] == [1, 2]
    assert PromptSet.objects.get(pk=a.pk).last_prompt_seq == 3


def test_a_prompt_whose_lower_id_becomes_visible_late_still_gets_slots(api, node):
    """Ids do not commit in order (PostgreSQL sequences): a prompt with a lower id can become
    visible after slots were made past it. Slots follow the set's seq, which commits in order."""
    prompt_set = PromptSetFactory(samples_per_prompt=1)
    reserved = PromptFactory(prompt_set=prompt_set)
    low_pk, messages, text_hash = reserved.pk, reserved.messages, reserved.text_hash
    reserved.delete()
    first = PromptFactory.create_batch(2, prompt_set=prompt_set)
    lease = _lease(api, node, 10)
    assert {i["prompt"]["id"] for i in lease["items"]} == {p.pk for p in first}
    # Now the lower id commits (as a slow concurrent import would).
    late = Prompt(pk=low_pk, prompt_set=prompt_set, messages=messages, text_hash=text_hash)
    late.save()
    assert late.pk < min(p.pk for p in first)
    again = _lease(api, node, 10)
    assert again is not None
    assert [i["prompt"]["id"] for i in again["items"]] == [low_pk]


def test_prompts_made_without_a_seq_fail_loudly():
    prompt_set = PromptSetFactory()
    # IntegrityError on NOT NULL, whatever the backend calls it.
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.bulk_create([Prompt(prompt_set=prompt_set, messages=[], text_hash="x" * 64)])
    assert Prompt.objects.count() == 0


def test_a_filled_higher_priority_set_is_passed_over(api, node):
    full = PromptSetFactory(priority=10, samples_per_prompt=1)
    PromptFactory.create_batch(5, prompt_set=full)
    open_set = PromptSetFactory(priority=0, samples_per_prompt=1)
    PromptFactory.create_batch(3, prompt_set=open_set)
    first = _lease(api, node, 5)
    assert {i["prompt"]["id"] for i in first["items"]} == set(
        full.prompts.values_list("pk", flat=True)
    )
    lease = _lease(api, node, 5)
    assert {i["prompt"]["id"] for i in lease["items"]} == set(
        open_set.prompts.values_list("pk", flat=True)
    )

"""Model names are not free-form table growth: the cap on the unreviewed names one contributor
introduces, and the cap on the slots one unreviewed model opens."""

from __future__ import annotations

import contextlib
import threading

import pytest
from django.db import connection

from contributors.models import KnownModel, ModelStatus, Slot
from contributors.services import ServiceError, register_node
from scoring import counters
from tests.factories import PromptFactory, PromptSetFactory, UserFactory


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_cannot_pass_the_unreviewed_names_cap(settings, monkeypatch):
    """Two registrations at once (two nodes, two threads) cannot both pass the cap on
    unreviewed names: admit_names holds the contributor's profile row (SELECT ... FOR UPDATE,
    in register_node's transaction) while it counts and records, so the second waits, then
    counts the first one's names and is refused. The barrier on KnownModel.objects.create
    forces the count-then-insert interleaving: without the lock both threads meet there having
    counted room for their names; with it the first waits out the barrier's timeout alone."""
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_UNREVIEWED_MODELS_PER_USER": 2}
    user = UserFactory(username="namer")
    barrier = threading.Barrier(2, timeout=3)
    manager = KnownModel.objects
    original = manager.create

    def create_after_the_other_counted(**kwargs):  # type: ignore[no-untyped-def]
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return original(**kwargs)

    monkeypatch.setattr(manager, "create", create_after_the_other_counted)
    outcomes: list[str] = []

    def register(i: int) -> None:
        try:
            register_node(
                owner=user,
                name=f"node-{i}",
                backend="openai",
                models_served=[{"id": f"org/m{i}-a"}, {"id": f"org/m{i}-b"}],
                hardware={},
                worker_version="",
            )
            outcomes.append("ok")
        except ServiceError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=register, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    unreviewed = KnownModel.objects.filter(introduced_by=user, status=ModelStatus.UNREVIEWED)
    assert unreviewed.count() <= 2, (outcomes, list(unreviewed.values_list("model_id", flat=True)))
    assert sorted(outcomes) == ["ok", "too_many_unreviewed_models"]


@pytest.mark.django_db
def test_slots_that_already_existed_are_not_charged_to_the_allowance_or_counters(
    api, node, settings
):
    """materialise charges the unreviewed model's allowance (slot_allowance) and the public
    SLOTS_TARGET counter only for the slots it inserts. Slots that already exist beyond the
    frontier (an older database; a frontier the 0003 migration moved back to reach skipped
    prompts) are kept as they are and charged to neither, so they cannot use up the allowance
    without opening anything, nor make the public target drift."""
    settings.THINKPOOL = {**settings.THINKPOOL, "UNREVIEWED_MODEL_MAX_SLOTS": 5}
    prompt_set = PromptSetFactory(samples_per_prompt=1)
    old = PromptFactory.create_batch(5, prompt_set=prompt_set)
    # Slots made before frontiers existed: no SlotFrontier row for them.
    Slot.objects.bulk_create(
        [
            Slot(prompt=p, prompt_set=prompt_set, model="org/model-a", temperature=0.6, target=1)
            for p in old
        ]
    )
    counters.recompute()
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 16},
        format="json",
    )
    assert response.status_code == 201
    assert KnownModel.objects.get(model_id="org/model-a").slots_opened == 0
    assert counters.read([counters.SLOTS_TARGET])[counters.SLOTS_TARGET] == 5
    # Five new prompts: the allowance (5) is untouched, so they get slots.
    new = PromptFactory.create_batch(5, prompt_set=prompt_set)
    api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 16},
        format="json",
    )
    assert Slot.objects.filter(prompt__in=new, model="org/model-a").count() == 5


@pytest.mark.django_db
def test_names_a_node_registered_before_the_policy_count_towards_the_names_cap(api, user, settings):
    """A node whose names KnownModel never recorded (up to 64 of them; contributors 0003
    records those of the nodes that existed then) is no way around the cap on unreviewed names:
    model_for_leasing records each such name at lease time as introduced by the node's owner,
    and refuses a new one once the owner has MAX_UNREVIEWED_MODELS_PER_USER names waiting, so
    at most that many get slots, each with its own UNREVIEWED_MODEL_MAX_SLOTS."""
    from contributors.models import ComputeNode

    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_UNREVIEWED_MODELS_PER_USER": 2}
    prompt_set = PromptSetFactory(samples_per_prompt=1)
    PromptFactory.create_batch(2, prompt_set=prompt_set)
    names = [f"org/legacy-{i}" for i in range(5)]
    # As a registration before contributors 0003 stored it (no KnownModel rows).
    node = ComputeNode.objects.create(
        owner=user, name="legacy", backend="openai", models_served=[{"id": n} for n in names]
    )
    leased = 0
    for name in names:
        response = api.post(
            "/api/v1/leases/", {"node": node.pk, "model": name, "max_prompts": 1}, format="json"
        )
        leased += response.status_code == 201
    unreviewed = KnownModel.objects.filter(model_id__in=names, status=ModelStatus.UNREVIEWED)
    assert leased <= 2
    assert Slot.objects.filter(model__in=names).values("model").distinct().count() <= 2
    assert unreviewed.exclude(introduced_by=user).count() == 0

"""16+ leasers at once on PostgreSQL: no slot is ever leased beyond its target, and every slot
ends up filled exactly."""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.db import connection, connections

from contributors.models import Slot
from scoring.models import Sample
from tests.conftest import client_for
from tests.factories import (
    NodeFactory,
    PromptFactory,
    PromptSetFactory,
    UserFactory,
    sample_payload,
)

LEASERS = 16


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_leasers_never_over_assign_and_fill_every_slot(settings):
    settings.THINKPOOL = {
        **settings.THINKPOOL,
        "MAX_LIVE_LEASES_PER_NODE": 2,
        "MAX_LIVE_LEASES_PER_CONTRIBUTOR": 64,
    }
    # Leases given up are leased again: more prompts a day than a new account's quota.
    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "initial_quota": 1000}
    prompt_set = PromptSetFactory(temperatures=[0.6, 1.0], samples_per_prompt=3, replication=1)
    PromptFactory.create_batch(60, prompt_set=prompt_set)
    expected_slots, target = 60 * 2, 3

    workers = []
    for index in range(LEASERS):
        user = UserFactory(username=f"leaser{index % 4}")
        workers.append((client_for(user), NodeFactory(owner=user)))

    errors: list[str] = []
    over_assigned: list[tuple] = []
    done = threading.Event()

    def watch() -> None:
        # Reads the invariant from outside the leasers' transactions while they run.
        try:
            while not done.is_set():
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT id, filled, outstanding, target FROM contributors_slot "
                        "WHERE filled + outstanding > target"
                    )
                    over_assigned.extend(cursor.fetchall())
                time.sleep(0.01)
        finally:
            connection.close()

    def lease_and_upload(api, node, seed: int) -> None:
        rng = random.Random(seed)
        try:
            idle = 0
            while idle < 20:
                response = api.post(
                    "/api/v1/leases/",
                    {"node": node.pk, "model": "org/model-a", "max_prompts": rng.randint(1, 6)},
                    format="json",
                )
                if response.status_code == 204:
                    idle += 1
                    time.sleep(0.02)
                    continue
                if response.status_code != 201:
                    errors.append(f"lease: {response.status_code} {response.content[:200]!r}")
                    return
                idle = 0
                lease = response.json()
                give_up = rng.random() < 0.15
                samples = []
                for item in lease["items"]:
                    n = item["sampling"]["n"]
                    count = rng.randint(0, n - 1) if give_up else n
                    samples += [
                        sample_payload(item["id"], temperature=item["sampling"]["temperature"])
                        for _ in range(count)
                    ]
                if samples:
                    up = api.post(
                        f"/api/v1/leases/{lease['id']}/samples/",
                        {"samples": samples},
                        format="json",
                    )
                    body = up.json()
                    if (
                        up.status_code != 200
                        or body["rejected"]
                        or len(body["accepted"]) != len(samples)
                    ):
                        errors.append(f"upload: {up.status_code} {body}")
                        return
                if give_up:
                    api.delete(f"/api/v1/leases/{lease['id']}/")
        except Exception as exc:  # surfaced below, with the thread's failure
            errors.append(repr(exc))
        finally:
            connections.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [
        threading.Thread(target=lease_and_upload, args=(api, node, i))
        for i, (api, node) in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    done.set()
    watcher.join()

    assert errors == []
    assert over_assigned == []
    slots = list(
        Slot.objects.filter(prompt_set=prompt_set).values_list("filled", "outstanding", "target")
    )
    assert len(slots) == expected_slots
    assert set(slots) == {(target, 0, target)}
    assert Sample.objects.filter(counted=True).count() == expected_slots * target
    assert Sample.objects.filter(counted=False).count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_lease_requests_cannot_pass_the_per_node_cap_together(settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_LIVE_LEASES_PER_NODE": 2}
    PromptFactory.create_batch(40, prompt_set=PromptSetFactory())
    user = UserFactory(username="hoarder")
    node = NodeFactory(owner=user)
    clients = [client_for(user) for _ in range(10)]
    barrier = threading.Barrier(len(clients))
    codes: list[int] = []

    def lease(api) -> None:  # type: ignore[no-untyped-def]
        try:
            barrier.wait()
            body = {"node": node.pk, "model": "org/model-a", "max_prompts": 1}
            codes.append(api.post("/api/v1/leases/", body, format="json").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=lease, args=(api,)) for api in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(codes) == [201, 201] + [409] * 8


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_make_one_lease():
    """A client that retries a lease request (its answer was lost) while the first is still
    running: every answer names the same lease, and the slots are booked once."""
    from contributors.models import Lease

    prompt_set = PromptSetFactory(samples_per_prompt=2)
    PromptFactory.create_batch(20, prompt_set=prompt_set)
    user = UserFactory(username="retrier")
    node = NodeFactory(owner=user)
    answers: list[tuple[int, int]] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        try:
            api = client_for(user)
            barrier.wait()
            response = api.post(
                "/api/v1/leases/",
                {"node": node.pk, "model": "org/model-a", "max_prompts": 5, "key": "once"},
                format="json",
            )
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(code for code, _ in answers) == [200] * 7 + [201]
    assert len({lease_id for _, lease_id in answers}) == 1
    assert Lease.objects.count() == 1
    assert sum(Slot.objects.values_list("outstanding", flat=True)) == 10

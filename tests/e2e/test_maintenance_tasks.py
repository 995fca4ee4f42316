"""The periodic maintenance tasks, run by a real Celery worker."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from contributors.models import Lease, LeaseState, Slot
from contributors.services import create_lease
from contributors.tasks import expire_overdue_leases
from tests.e2e.conftest import wait_for
from tests.factories import NodeFactory, PromptFactory, PromptSetFactory


def test_a_real_worker_expires_overdue_leases_and_frees_their_slots(start_worker):
    prompt_set = PromptSetFactory(samples_per_prompt=2)
    PromptFactory.create_batch(3, prompt_set=prompt_set)
    node = NodeFactory()
    lease, _ = create_lease(node=node, model="org/model-a", max_prompts=3)
    assert lease is not None
    keep, _ = create_lease(node=NodeFactory(), model="org/model-a", max_prompts=3)
    assert keep is None  # everything is out on the first lease
    Lease.objects.filter(pk=lease.pk).update(deadline=timezone.now() - timedelta(seconds=5))

    start_worker(queues="maintenance")
    expire_overdue_leases.delay()

    wait_for(
        lambda: Lease.objects.get(pk=lease.pk).state == LeaseState.EXPIRED,
        what="the lease to expire",
    )
    assert list(Slot.objects.values_list("outstanding", flat=True)) == [0, 0, 0]

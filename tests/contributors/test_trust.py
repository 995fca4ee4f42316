"""Trust and daily quotas (contributors/services/trust.py): the rules with exact values,
settling disclosed verdicts once, open prompts moving nothing, expired leases as hoarding, the
quota enforced by leasing, and what the contributor sees."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from contributors.models import (
    Lease,
    LeaseDay,
    LeaseItem,
    NodeReputation,
    Reputation,
    ReputationEvent,
    SampleOrigin,
    Slot,
)
from contributors.services import expire_overdue_leases, release_lease, trust
from scoring import stats
from scoring.models import Flag, Prompt, Sample, SampleStatus
from scoring.services import close_prompts
from tests import factories
from tests.factories import sample_payload

PromptFactory: Any = factories.PromptFactory
UserFactory: Any = factories.UserFactory
NodeFactory: Any = factories.NodeFactory

VERIFIED, REJECTED = SampleStatus.VERIFIED, SampleStatus.REJECTED
RIGHT = "<think>2+2 is 4, since two and two make four.</think> The answer is \\boxed{4}."
WRONG = "<think>2+2 is 5, since two and two make five.</think> The answer is \\boxed{5}."

_texts = itertools.count()


@pytest.fixture(autouse=True)
def _trust_settings(settings: Any) -> None:
    settings.THINKPOOL_TRUST = {
        **settings.THINKPOOL_TRUST,
        "initial_quota": 50,
        "min_quota": 5,
        "max_quota": 5000,
        "grow": 2,
        "cut": 0.5,
        "trust_streak": 10,
    }


def new_prompt() -> Prompt:
    return PromptFactory(
        messages=[{"role": "user", "content": f"What is 2+2? ({next(_texts)})"}], gold="4"
    )


def add(prompt: Prompt, user: Any, status: str, *, node: Any = None, **fields: Any) -> Sample:
    sample = Sample.objects.create(
        prompt=prompt,
        contributor=user,
        model="org/m",
        temperature=0.6,
        completion=RIGHT if status == VERIFIED else WRONG,
        finish_reason="stop",
        status=status,
        **fields,
    )
    if node is not None:
        SampleOrigin.objects.create(sample=sample, node=node)
    return sample


def close(*prompts: Prompt) -> None:
    ids = [p.pk for p in prompts]
    stats.recompute(prompt_ids=ids)
    close_prompts(prompt_ids=ids)


def rep(user: Any) -> Reputation:
    return Reputation.objects.get(contributor=user)


def numbers(row: Any) -> tuple[int, int, int, int, int, float]:
    return (row.streak, row.valid, row.invalid, row.expired, row.daily_quota, row.trust)


# --- the rules --------------------------------------------------------------------------------


def fresh(quota: int = 50) -> Reputation:
    return Reputation(daily_quota=quota)


def test_valid_grows_the_quota_and_the_streak_invalid_halves_and_resets():
    r = fresh()
    trust.apply(r, "valid")
    assert numbers(r) == (1, 1, 0, 0, 52, 0.1)
    trust.apply(r, "valid")
    assert numbers(r) == (2, 2, 0, 0, 54, 0.2)
    trust.apply(r, "invalid")
    assert numbers(r) == (0, 2, 1, 0, 27, 0.0)  # floor(54 * 0.5)
    trust.apply(r, "expired")
    assert numbers(r) == (0, 2, 1, 1, 13, 0.0)  # floor(27 * 0.5)
    trust.apply(r, "valid")
    # streak 1 of 10, 2 bad of 5 counted: 0.1 * (1 - 2/5)
    assert r.streak == 1 and r.daily_quota == 15 and r.trust == pytest.approx(0.06)


def test_the_quota_stays_between_min_and_max():
    r = fresh(6)
    trust.apply(r, "invalid")
    assert r.daily_quota == 5
    trust.apply(r, "invalid")
    assert r.daily_quota == 5
    r = fresh(4999)
    trust.apply(r, "valid")
    assert r.daily_quota == 5000
    trust.apply(r, "valid")
    assert r.daily_quota == 5000


def test_trust_is_the_streak_ramp_times_the_good_share():
    assert trust.trust_of(streak=0, valid=0, invalid=0, expired=0) == 0.0
    assert trust.trust_of(streak=10, valid=10, invalid=0, expired=0) == 1.0
    assert trust.trust_of(streak=25, valid=25, invalid=0, expired=0) == 1.0
    assert trust.trust_of(streak=5, valid=9, invalid=1, expired=0) == pytest.approx(0.45)
    assert trust.trust_of(streak=10, valid=18, invalid=1, expired=1) == pytest.approx(0.9)
    r = fresh()
    for _ in range(10):
        trust.apply(r, "valid")
    assert (r.streak, r.daily_quota, r.trust) == (10, 70, 1.0)


def test_the_parameters_are_settings(settings):
    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "grow": 1, "cut": 0.25}
    r = fresh(40)
    trust.apply(r, "valid")
    assert r.daily_quota == 41
    trust.apply(r, "invalid")
    assert r.daily_quota == 10


# --- settling disclosed verdicts ----------------------------------------------------------------


@pytest.mark.django_db
def test_settling_counts_each_judged_sample_of_a_closed_prompt_once_in_order():
    alice, bob = UserFactory(), UserFactory()
    box = NodeFactory(owner=alice)
    prompt = new_prompt()
    for status in (VERIFIED, VERIFIED, VERIFIED, REJECTED, VERIFIED):
        add(prompt, alice, status, node=box)
    add(prompt, bob, VERIFIED)
    close(prompt)  # outside on_commit capture: nothing queued runs; settle by hand
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 6
    # 50 +2 +2 +2 = 56, then floor(56 / 2) = 28, then +2 = 30; streak 1; 4 good of 5.
    assert numbers(rep(alice))[:5] == (1, 4, 1, 0, 30)
    assert rep(alice).trust == pytest.approx(0.1 * 4 / 5)
    node_rep = NodeReputation.objects.get(node=box)
    assert numbers(node_rep)[:5] == (1, 4, 1, 0, 30)
    assert numbers(rep(bob))[:5] == (1, 1, 0, 0, 52)

    # Settling again (a duplicate message, the sweep, a repair) moves nothing.
    before = [numbers(rep(alice)), numbers(rep(bob)), numbers(node_rep)]
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 0
    assert trust.settle_all() == (1, 0)
    node_rep.refresh_from_db()
    assert [numbers(rep(alice)), numbers(rep(bob)), numbers(node_rep)] == before
    assert ReputationEvent.objects.count() == 6

    # A later rescore of a counted sample does not count it again.
    Sample.objects.filter(contributor=alice, status=REJECTED).update(status=VERIFIED)
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 0
    assert numbers(rep(alice)) == before[0]


@pytest.mark.django_db
def test_open_prompts_move_nothing_whatever_their_verdicts():
    alice = UserFactory()
    prompt = new_prompt()
    add(prompt, alice, VERIFIED)
    add(prompt, alice, REJECTED)
    add(prompt, alice, REJECTED, status_reason="format: fail")  # a gold-free failure too
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 0
    assert trust.settle_all() == (0, 0)
    assert not Reputation.objects.exists() and not ReputationEvent.objects.exists()
    assert trust.standing(user=alice)["daily_quota"] == 50
    assert trust.standing(user=alice)["trust"] == 0.0


@pytest.mark.django_db
def test_held_duplicate_and_unfinished_samples_do_not_count_until_they_are_judged():
    alice = UserFactory()
    prompt = new_prompt()
    original = add(prompt, alice, VERIFIED)
    held = add(prompt, alice, VERIFIED, quarantined=True)
    add(prompt, alice, VERIFIED, duplicate_of=original)
    add(prompt, alice, SampleStatus.ERROR)
    add(prompt, alice, SampleStatus.RECEIVED)
    close(prompt)
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 1
    assert numbers(rep(alice))[:5] == (1, 1, 0, 0, 52)
    # The hold lifted: counted by the next settling, once.
    Sample.objects.filter(pk=held.pk).update(quarantined=False)
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 1
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 0
    assert numbers(rep(alice))[:5] == (2, 2, 0, 0, 54)


@pytest.mark.django_db
def test_closing_a_prompt_queues_settling_on_commit(django_capture_on_commit_callbacks):
    alice = UserFactory()
    prompt, still_open = new_prompt(), new_prompt()
    add(prompt, alice, VERIFIED)
    add(still_open, alice, REJECTED)
    stats.recompute(prompt_ids=[prompt.pk])
    with django_capture_on_commit_callbacks(execute=True):
        close_prompts(prompt_ids=[prompt.pk])
        assert not Reputation.objects.exists()  # nothing before the commit
    # CELERY_TASK_ALWAYS_EAGER in tests: the queued settle_trust ran.
    assert numbers(rep(alice))[:5] == (1, 1, 0, 0, 52)
    assert ReputationEvent.objects.filter(sample__prompt=still_open).count() == 0


@pytest.mark.django_db
def test_settling_is_queued_in_chunks_and_a_refusing_broker_fails_nothing(
    monkeypatch, django_capture_on_commit_callbacks
):
    from contributors import tasks

    sent: list[list[int]] = []
    monkeypatch.setattr(
        tasks.settle_trust, "apply_async", lambda args, **kwargs: sent.append(args[0])
    )
    monkeypatch.setattr(trust, "SETTLE_CHUNK", 2)
    with django_capture_on_commit_callbacks(execute=True):
        trust._settle_disclosed(sender=Prompt, prompt_ids=[5, 3, 1, 3, 4])
        assert sent == []
    assert sent == [[1, 3], [4, 5]]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(tasks.settle_trust, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        trust.schedule_settle([1, 2])


@pytest.mark.django_db
def test_the_sweep_queues_recently_changed_closed_prompts(monkeypatch):
    queued: list[list[int]] = []
    monkeypatch.setattr(trust, "schedule_settle", lambda ids: queued.append(sorted(ids)))
    alice = UserFactory()
    moved, still_open = new_prompt(), new_prompt()
    add(moved, alice, VERIFIED)
    add(still_open, alice, VERIFIED)
    Prompt.objects.filter(pk=moved.pk).update(closed_at=timezone.now())
    assert trust.sweep() == 1
    assert queued == [[moved.pk]]


# --- hoarding: expired lease items ------------------------------------------------------------


def _lease(api: Any, node: Any, n: int = 3, key: str | None = None) -> Any:
    body: dict[str, Any] = {"node": node.pk, "model": "org/model-a", "max_prompts": n}
    if key is not None:
        body["key"] = key
    return api.post("/api/v1/leases/", body, format="json")


@pytest.mark.django_db
def test_items_of_an_expired_lease_still_owing_samples_count_as_hoarding(api, user, node, lease):
    # One of the three items is delivered in full; the other two expire owing samples.
    first = lease["items"][0]
    payload = [sample_payload(first["id"]) for _ in range(first["sampling"]["n"])]
    uploaded = api.post(
        f"/api/v1/leases/{lease['id']}/samples/", {"samples": payload}, format="json"
    )
    assert uploaded.status_code == 200, uploaded.content
    Lease.objects.filter(pk=lease["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    assert expire_overdue_leases() == 1
    # Two items counted, one lease, one cut: floor(50 / 2) = 25. Not waiting for any closing.
    assert numbers(rep(user))[:5] == (0, 0, 0, 2, 25)
    assert numbers(NodeReputation.objects.get(node=node))[:5] == (0, 0, 0, 2, 25)
    assert ReputationEvent.objects.filter(kind="expired").count() == 2
    assert expire_overdue_leases() == 0
    assert numbers(rep(user))[:5] == (0, 0, 0, 2, 25)
    assert not Flag.objects.exists()  # 2 items: below hoard_flag_after (3)


@pytest.mark.django_db
def test_a_release_in_time_costs_nothing_one_after_the_deadline_counts(api, user, node, lease):
    assert api.delete(f"/api/v1/leases/{lease['id']}/").status_code == 200
    assert not ReputationEvent.objects.exists()
    late = _lease(api, node, 2)
    assert late.status_code == 201, late.content
    Lease.objects.filter(pk=late.json()["id"]).update(
        deadline=timezone.now() - timedelta(seconds=1)
    )
    release_lease(lease=Lease.objects.get(pk=late.json()["id"]))
    assert numbers(rep(user))[:5] == (0, 0, 0, 2, 25)


@pytest.mark.django_db
def test_a_lease_kept_alive_past_its_period_then_released_untouched_is_hoarding(
    api, user, node, lease
):
    # One item delivered; the lease is then held by heartbeats past one lease period.
    first = lease["items"][0]
    payload = [sample_payload(first["id"]) for _ in range(first["sampling"]["n"])]
    assert (
        api.post(
            f"/api/v1/leases/{lease['id']}/samples/", {"samples": payload}, format="json"
        ).status_code
        == 200
    )
    held = Lease.objects.get(pk=lease["id"])
    Lease.objects.filter(pk=held.pk).update(
        created_at=timezone.now() - timedelta(seconds=held.lease_seconds + 1),
        deadline=timezone.now() + timedelta(minutes=5),
    )
    release_lease(lease=Lease.objects.get(pk=held.pk))
    # The two untouched items count as expired (one cut for the lease); the delivered one not.
    assert numbers(rep(user))[:5] == (0, 0, 0, 2, 25)


@pytest.mark.django_db
def test_record_expired_counts_an_item_once():
    alice = UserFactory()
    box = NodeFactory(owner=alice)
    prompt = new_prompt()
    slot = Slot.objects.create(
        prompt=prompt, prompt_set=prompt.prompt_set, model="org/model-a", temperature=0.6, target=2
    )
    lease = Lease.objects.create(
        node=box, contributor=alice, model="org/model-a", deadline=timezone.now()
    )
    item = LeaseItem.objects.create(lease=lease, slot=slot, n=1, returned=1)
    assert trust.record_expired([(item.pk, alice.pk, box.pk)]) == 1
    assert trust.record_expired([(item.pk, alice.pk, box.pk)]) == 0
    assert rep(alice).expired == 1


def expiring(user: Any, node: Any, items: int) -> list[tuple[int, int, int | None]]:
    """A lease of `items` items (one slot each, of new prompts) owing samples, as leasing's
    expiry hands it to record_expired."""
    lease = Lease.objects.create(
        node=node, contributor=user, model="org/model-a", deadline=timezone.now()
    )
    made = []
    for _ in range(items):
        prompt = new_prompt()
        slot = Slot.objects.create(
            prompt=prompt,
            prompt_set=prompt.prompt_set,
            model="org/model-a",
            temperature=0.6,
            target=2,
        )
        made.append(LeaseItem.objects.create(lease=lease, slot=slot, n=2))
    return [(item.pk, user.pk, node.pk if node else None) for item in made]


@pytest.mark.django_db
def test_one_expired_lease_cuts_the_quota_once_however_many_items_it_had():
    alice = UserFactory()
    box = NodeFactory(owner=alice)
    big = expiring(alice, box, 50)
    assert trust.record_expired(big) == 50
    # 50 items counted, the quota halved once (not 50 times down to min_quota).
    assert numbers(rep(alice))[:5] == (0, 0, 0, 50, 25)
    assert numbers(NodeReputation.objects.get(node=box))[:5] == (0, 0, 0, 50, 25)
    assert rep(alice).trust == 0.0
    # Each item still has its own event (idempotency), the first of the lease cut.
    assert ReputationEvent.objects.filter(kind="expired").count() == 50
    assert trust.record_expired(big) == 0
    assert rep(alice).daily_quota == 25

    # Two more leases expiring in one call: two more cuts, 25 -> 12 -> 6.
    assert trust.record_expired(expiring(alice, box, 3) + expiring(alice, box, 2)) == 5
    assert numbers(rep(alice))[:5] == (0, 0, 0, 55, 6)
    # A valid sample between them moves as usual.
    prompt = new_prompt()
    add(prompt, alice, VERIFIED, node=box)
    close(prompt)
    assert trust.settle_prompts(prompt_ids=[prompt.pk]) == 1
    assert numbers(rep(alice))[:5] == (1, 1, 0, 55, 8)

    # An item of an already cut lease, counted later (the lease's last item, retried): no cut.
    rest = expiring(alice, box, 2)
    assert trust.record_expired(rest[:1]) == 1
    assert numbers(rep(alice))[:5] == (0, 1, 0, 56, 5)  # floor(8 / 2) = 4, at least 5
    Reputation.objects.filter(contributor=alice).update(daily_quota=40)
    assert trust.record_expired(rest[1:]) == 1
    assert numbers(rep(alice))[:5] == (0, 1, 0, 57, 40)


@pytest.mark.django_db
def test_replay_gives_what_recording_gave():
    alice = UserFactory()
    box, spare = NodeFactory(owner=alice), NodeFactory(owner=alice, name="spare")
    prompt = new_prompt()
    for status in (VERIFIED, VERIFIED, VERIFIED):
        add(prompt, alice, status, node=box)
    close(prompt)
    trust.settle_prompts(prompt_ids=[prompt.pk])  # 56
    trust.record_expired(expiring(alice, box, 50))  # 28
    trust.record_expired(expiring(alice, spare, 4) + expiring(alice, box, 3))  # 14, 7
    recorded = numbers(rep(alice))
    nodes = {r.node_id: numbers(r) for r in NodeReputation.objects.all()}
    assert recorded[:5] == (0, 3, 0, 57, 7)
    assert nodes == {
        box.pk: (0, 3, 0, 53, 14, 0.0),  # 56 -> 28 -> 14
        spare.pk: (0, 0, 0, 4, 25, 0.0),
    }
    with transaction.atomic():
        assert trust.replay(contributor_id=alice.pk) is False
    assert numbers(rep(alice)) == recorded
    assert {r.node_id: numbers(r) for r in NodeReputation.objects.all()} == nodes

    # A drifted row is put back.
    Reputation.objects.filter(contributor=alice).update(daily_quota=999, expired=0)
    with transaction.atomic():
        assert trust.replay(contributor_id=alice.pk) is True
    assert numbers(rep(alice)) == recorded


@pytest.mark.django_db
def test_replay_of_items_whose_lease_is_gone_is_still_exact():
    """A deleted node's lease history goes with it (its events keep no lease item): each event
    recorded whether it cut, so replay gives what recording did all the same."""
    alice = UserFactory()
    box = NodeFactory(owner=alice)
    trust.record_expired(expiring(alice, box, 3) + expiring(alice, box, 2))
    assert numbers(rep(alice))[:5] == (0, 0, 0, 5, 12)
    assert list(ReputationEvent.objects.order_by("pk").values_list("cuts", flat=True)) == [
        True,
        False,
        False,
        True,
        False,
    ]
    # What deleting the node does to its events (SET_NULL both; its leases and its own
    # reputation go with it).
    assert ReputationEvent.objects.update(lease_item=None, node=None) == 5
    NodeReputation.objects.filter(node=box).delete()
    with transaction.atomic():
        assert trust.replay(contributor_id=alice.pk) is False
    assert numbers(rep(alice))[:5] == (0, 0, 0, 5, 12)


# --- hoarding: the flag for maintainers -------------------------------------------------------


def hoarding_flags(user: Any) -> list[Flag]:
    return list(Flag.objects.filter(contributor=user, kind="hoarding").order_by("pk"))


@pytest.mark.django_db
def test_a_hoarder_is_flagged_once_expired_items_reach_the_threshold_within_a_day(settings):
    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "hoard_flag_after": 3}
    alice, bob = UserFactory(), UserFactory()
    box = NodeFactory(owner=alice)
    first = expiring(alice, box, 2)
    trust.record_expired(first)
    trust.record_expired(expiring(bob, NodeFactory(owner=bob), 2))
    assert not Flag.objects.exists()

    second = expiring(alice, box, 1)
    trust.record_expired(second)
    [flag] = hoarding_flags(alice)
    assert flag.sample_id is None and flag.cleared_at is None
    at_of = dict(
        ReputationEvent.objects.filter(contributor=alice).values_list("lease_item_id", "at")
    )
    assert flag.evidence == {
        "expired_items": 3,
        "leases": 2,
        # newest first (ids ascend within one expiry)
        "lease_item_ids": [second[0][0], first[1][0], first[0][0]],
        "first_expired_at": at_of[first[0][0]].isoformat(),
        "last_expired_at": at_of[second[0][0]].isoformat(),
        "window_s": 24 * 3600,
        "threshold": 3,
    }
    assert not hoarding_flags(bob)
    # The flag is for maintainers: the items counted once already, the flag not again.
    assert rep(alice).flagged == 0 and rep(alice).expired == 3
    assert not ReputationEvent.objects.filter(kind="flagged").exists()

    # Counting the same items again raises nothing new and leaves the evidence alone.
    trust.record_expired(first + second)
    assert hoarding_flags(alice) == [flag]
    flag.refresh_from_db()
    assert flag.evidence["expired_items"] == 3

    # More expired work: the open flag's evidence is refreshed, no second flag.
    third = expiring(alice, box, 2)
    trust.record_expired(third)
    [again] = hoarding_flags(alice)
    assert again.pk == flag.pk
    assert (again.evidence["expired_items"], again.evidence["leases"]) == (5, 3)
    assert again.evidence["lease_item_ids"][:2] == [third[1][0], third[0][0]]
    assert rep(alice).flagged == 0


@pytest.mark.django_db
def test_the_hoarding_window_is_a_day_and_a_cleared_flag_is_not_raised_on_what_was_seen(settings):
    from scoring.flags import clear_flags

    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "hoard_flag_after": 3}
    alice = UserFactory()
    box = NodeFactory(owner=alice)
    trust.record_expired(expiring(alice, box, 2))
    # A day and a bit later, those two no longer count toward the flag.
    ReputationEvent.objects.update(at=timezone.now() - timedelta(hours=25))
    trust.record_expired(expiring(alice, box, 2))
    assert not hoarding_flags(alice)
    trust.record_expired(expiring(alice, box, 1))
    [flag] = hoarding_flags(alice)
    assert flag.evidence["expired_items"] == 3

    # A maintainer looks and clears it: what they saw does not raise it again...
    maintainer = UserFactory(is_staff=True)
    assert clear_flags(flag_ids=[flag.pk], by=maintainer, reason="a power cut") == [flag.pk]
    trust.record_expired(expiring(alice, box, 2))
    assert [f.pk for f in hoarding_flags(alice)] == [flag.pk]
    # ...but as many again after the clearing does: a new flag, counting only those.
    later = expiring(alice, box, 1)
    trust.record_expired(later)
    old, new = hoarding_flags(alice)
    assert old.pk == flag.pk and old.cleared_at is not None
    assert new.cleared_at is None
    assert (new.evidence["expired_items"], new.evidence["leases"]) == (3, 2)
    assert new.evidence["lease_item_ids"][0] == later[0][0]
    # Clearing a hoarding flag takes nothing back: it never counted.
    assert rep(alice).expired == 8 and rep(alice).flagged == 0


@pytest.mark.django_db
def test_expiry_through_leasing_raises_the_hoarding_flag(api, user, node, lease, settings):
    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "hoard_flag_after": 3}
    Lease.objects.filter(pk=lease["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    assert expire_overdue_leases() == 1
    [flag] = hoarding_flags(user)
    assert flag.evidence["expired_items"] == 3 and flag.evidence["leases"] == 1
    assert sorted(flag.evidence["lease_item_ids"]) == sorted(i["id"] for i in lease["items"])
    assert numbers(rep(user))[:5] == (0, 0, 0, 3, 25)


# --- daily lease counts: pruning -----------------------------------------------------------------


@pytest.mark.django_db
def test_old_daily_lease_counts_are_pruned_in_bounded_batches(user, node):
    from contributors import tasks

    today = trust.utc_day()
    for age in range(11):  # today and the ten days before, for the account and the node
        day = today - timedelta(days=age)
        LeaseDay.objects.create(contributor=user, node=None, day=day, prompts=age + 1)
        LeaseDay.objects.create(contributor=user, node=node, day=day, prompts=age + 1)
    # 8, 9 and 10 days old: six rows; two batches of two per run.
    assert trust.prune_lease_days(batch=2, max_batches=2) == 4
    assert LeaseDay.objects.count() == 18
    assert trust.prune_lease_days(batch=2, max_batches=2) == 2
    assert trust.prune_lease_days(batch=2, max_batches=2) == 0
    kept = sorted({(today - d).days for d in LeaseDay.objects.values_list("day", flat=True)})
    assert kept == list(range(8))  # 7 days back is kept
    # The sweep does it too (and today's count is still what leasing reads).
    LeaseDay.objects.filter(day=today - timedelta(days=7)).update(day=today - timedelta(days=30))
    assert tasks.sweep_trust() == {"queued": 0, "lease_days_deleted": 2}
    assert tasks.sweep_trust() == {"queued": 0, "lease_days_deleted": 0}
    assert trust.quota_room(node) == 50 - 1


# --- the repair command -------------------------------------------------------------------------


@pytest.mark.django_db
def test_settle_trust_counts_what_was_missed_and_replays_on_request():
    alice, bob = UserFactory(), UserFactory()
    box = NodeFactory(owner=alice)
    prompt, still_open = new_prompt(), new_prompt()
    add(prompt, alice, VERIFIED, node=box)
    add(prompt, alice, REJECTED, node=box)
    add(prompt, bob, VERIFIED)
    add(still_open, bob, REJECTED)
    close(prompt)  # settling's message lost (nothing queued runs here)

    out = StringIO()
    call_command("settle_trust", stdout=out)
    assert out.getvalue() == "1 closed prompts settled: 3 samples counted.\n"
    assert numbers(rep(alice))[:5] == (0, 1, 1, 0, 26)
    assert numbers(rep(bob))[:5] == (1, 1, 0, 0, 52)

    # Nothing left to count; a drifted row is put back by --replay, only that one.
    Reputation.objects.filter(contributor=bob).update(daily_quota=7, streak=9)
    out = StringIO()
    call_command("settle_trust", "--replay", stdout=out)
    assert out.getvalue() == (
        "1 closed prompts settled: 0 samples counted.\n"
        "2 contributors replayed from the ledger: 1 changed.\n"
    )
    assert numbers(rep(bob))[:5] == (1, 1, 0, 0, 52)
    assert numbers(rep(alice))[:5] == (0, 1, 1, 0, 26)
    assert numbers(NodeReputation.objects.get(node=box))[:5] == (0, 1, 1, 0, 26)


# --- the quota in leasing ---------------------------------------------------------------------


@pytest.mark.django_db
def test_leasing_stops_at_the_daily_quota_with_a_clear_429(api, user, node, prompt_set):
    Reputation.objects.create(contributor=user, daily_quota=5)
    first = _lease(api, node, 3)
    assert first.status_code == 201 and len(first.json()["items"]) == 3
    # Two left today: a request for three gets two.
    second = _lease(api, node, 3)
    assert second.status_code == 201 and len(second.json()["items"]) == 2
    assert LeaseDay.objects.get(contributor=user, node__isnull=True).prompts == 5
    assert LeaseDay.objects.get(contributor=user, node=node).prompts == 5
    # Released work still counts for the day.
    assert api.delete(f"/api/v1/leases/{first.json()['id']}/").status_code == 200

    refused = _lease(api, node, 1)
    assert refused.status_code == 429
    error = refused.json()["error"]
    tomorrow = (timezone.now().astimezone(UTC) + timedelta(days=1)).date()
    assert error["code"] == "quota_exceeded"
    assert (error["scope"], error["quota"], error["used"]) == ("account", 5, 5)
    assert error["resets_at"] == f"{tomorrow.isoformat()}T00:00:00Z"
    assert "5 prompts a day" in error["message"]
    assert 0 < int(refused["Retry-After"]) <= 24 * 3600
    assert Lease.objects.count() == 2

    # A new UTC day starts a new count.
    LeaseDay.objects.update(day=trust.utc_day() - timedelta(days=1))
    assert _lease(api, node, 1).status_code == 201


@pytest.mark.django_db
def test_a_node_has_its_own_quota(api, user, node, prompt_set):
    NodeReputation.objects.create(node=node, daily_quota=5)
    first = _lease(api, node, 3)
    assert len(first.json()["items"]) == 3
    assert len(_lease(api, node, 3).json()["items"]) == 2
    refused = _lease(api, node, 1)
    assert refused.status_code == 429
    assert (refused.json()["error"]["scope"], refused.json()["error"]["quota"]) == ("node", 5)
    # Another node of the same contributor is not held by it.
    assert api.delete(f"/api/v1/leases/{first.json()['id']}/").status_code == 200
    other = NodeFactory(owner=user, name="second")
    assert _lease(api, other, 1).status_code == 201


@pytest.mark.django_db
def test_a_retried_keyed_lease_is_answered_even_at_the_quota(api, user, node, prompt_set):
    Reputation.objects.create(contributor=user, daily_quota=5)
    first = _lease(api, node, 5, key="k1")
    assert first.status_code == 201 and len(first.json()["items"]) == 5
    again = _lease(api, node, 5, key="k1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert LeaseDay.objects.get(contributor=user, node__isnull=True).prompts == 5
    assert _lease(api, node, 1, key="k2").status_code == 429


@pytest.mark.django_db
def test_the_quota_room_is_per_utc_day(user, node):
    now = datetime(2030, 5, 6, 23, 59, tzinfo=UTC)
    assert trust.utc_day(now).isoformat() == "2030-05-06"
    assert trust.resets_at(now) == datetime(2030, 5, 7, tzinfo=UTC)
    trust.count_leased(node, 50, now=now)
    with pytest.raises(trust.ServiceError) as refused:
        trust.quota_room(node, now=now)
    assert refused.value.status == 429 and refused.value.retry_after == 60
    assert trust.quota_room(node, now=now + timedelta(minutes=1)) == 50


# --- what the contributor sees ------------------------------------------------------------------


@pytest.mark.django_db
def test_me_shows_trust_quota_streak_and_use_today(api, user, node, lease):
    prompt = new_prompt()
    add(prompt, user, VERIFIED, node=node)
    close(prompt)
    trust.settle_prompts(prompt_ids=[prompt.pk])
    body = api.get("/api/v1/me/").json()["reputation"]
    tomorrow = (timezone.now().astimezone(UTC) + timedelta(days=1)).date()
    assert {k: v for k, v in body.items() if k != "nodes"} == {
        "trust": 0.1,
        "streak": 1,
        "valid": 1,
        "invalid": 0,
        "expired": 0,
        "flagged": 0,
        "daily_quota": 52,
        "leased_today": 3,
        "left_today": 49,
        "resets_at": f"{tomorrow.isoformat()}T00:00:00Z",
    }
    assert [
        (n["id"], n["name"], n["streak"], n["daily_quota"], n["leased_today"])
        for n in body["nodes"]
    ] == [(node.pk, "box", 1, 52, 3)]


@pytest.mark.django_db
def test_the_profile_page_shows_them(client, user, node, lease):
    client.force_login(user)
    page = client.get(reverse("profile"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Trust and daily quota" in text
    assert "3 of 50 prompts leased today" in text


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_leases_of_one_contributor_cannot_pass_the_quota_together(settings):
    import threading

    from django.db import connections

    from tests.conftest import client_for
    from tests.factories import PromptSetFactory

    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_LIVE_LEASES_PER_NODE": 64}
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_LIVE_LEASES_PER_CONTRIBUTOR": 64}
    PromptFactory.create_batch(40, prompt_set=PromptSetFactory())
    user = UserFactory(username="eager")
    node = NodeFactory(owner=user)
    Reputation.objects.create(contributor=user, daily_quota=5)
    clients = [client_for(user) for _ in range(10)]
    barrier = threading.Barrier(len(clients))
    codes: list[int] = []

    def lease(api: Any) -> None:
        try:
            barrier.wait()
            codes.append(_lease(api, node, 1).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=lease, args=(api,)) for api in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(codes) == [201] * 5 + [429] * 5
    assert LeaseDay.objects.get(contributor=user, node__isnull=True).prompts == 5
    assert LeaseItem.objects.count() == 5


# --- flags ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_flags_raised_together_cut_once_and_hold_their_samples_back_until_cleared(
    admin_user, django_capture_on_commit_callbacks
):
    from scoring.flags import clear_flags, raise_flags

    alice = UserFactory()
    prompts = [new_prompt() for _ in range(3)]
    samples = [add(p, alice, VERIFIED) for p in prompts]
    flags = raise_flags(
        kind="attestation", evidence={s.pk: {"pool": "failed"} for s in samples[:2]}
    )
    # Two flags, one finding: flagged twice, one cut (50 -> 25).
    assert numbers(rep(alice))[:5] == (0, 0, 0, 0, 25)
    assert rep(alice).flagged == 2
    assert sorted(
        ReputationEvent.objects.filter(kind="flagged").values_list("cuts", flat=True)
    ) == [False, True]
    # At close, the two flagged verified samples are held back; the third counts valid.
    close(*prompts)
    trust.settle_prompts(prompt_ids=[p.pk for p in prompts])
    assert numbers(rep(alice))[:5] == (1, 1, 0, 0, 27)
    # A maintainer finds the flags unfounded: their cut goes, and the samples count now.
    with django_capture_on_commit_callbacks(execute=True):
        clear_flags(flag_ids=[f.pk for f in flags], by=admin_user, reason="calibration")
    assert numbers(rep(alice))[:5] == (3, 3, 0, 0, 56)
    assert rep(alice).flagged == 0


@pytest.mark.django_db
def test_uploads_outside_a_lease_take_prompts_from_the_same_daily_quota(api, user, settings):
    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "initial_quota": 5, "min_quota": 1}
    prompts = [new_prompt() for _ in range(4)]
    for p in prompts:
        p.prompt_set.models_allowed = []
        p.prompt_set.save()
    LeaseDay.objects.create(contributor=user, day=trust.utc_day(), prompts=3)  # leased today

    def offline(prompt: Prompt) -> dict[str, Any]:
        payload = sample_payload(0, prompt=prompt.pk)
        del payload["item"]
        return payload

    body = api.post(
        "/api/v1/samples/",
        {
            "samples": [
                offline(prompts[0]),
                offline(prompts[0]),
                offline(prompts[1]),
                offline(prompts[2]),
            ]
        },
        format="json",
    ).json()
    # Two prompts left today: the first two prompts' three samples in, the third prompt's out.
    assert len(body["accepted"]) == 3
    assert [r["error"]["code"] for r in body["rejected"]] == ["quota_exceeded"]
    assert LeaseDay.objects.get(contributor=user, node__isnull=True).prompts == 5
    again = api.post("/api/v1/samples/", {"samples": [offline(prompts[3])]}, format="json").json()
    assert not again["accepted"] and again["rejected"][0]["error"]["code"] == "quota_exceeded"

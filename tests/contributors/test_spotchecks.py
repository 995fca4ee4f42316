"""Spot-check replication (contributors/services/spotchecks.py): which items are checked, who
may replicate them, replicas counting towards nothing, comparing once closed, and persistent
disagreement flagged and counted against trust."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from contributors.models import (
    LeaseItem,
    PromptCredit,
    Reputation,
    Slot,
    SpotCheck,
    SpotCheckState,
)
from contributors.services import credit, expire_overdue_leases, ledger, spotchecks
from scoring import selection
from scoring.models import Flag, Prompt, Sample, SampleStatus
from scoring.services import close_prompts
from tests import factories
from tests.conftest import client_for
from tests.factories import sample_payload

PromptFactory: Any = factories.PromptFactory
PromptSetFactory: Any = factories.PromptSetFactory
UserFactory: Any = factories.UserFactory
NodeFactory: Any = factories.NodeFactory

RIGHT = "<think>2+2 is 4, since two and two make four.</think> The answer is \\boxed{4}."
RIGHT_TOO = "<think>Two and two: one, two, three, four. So four.</think> It is \\boxed{4}."
WRONG = "<think>2+2 is 5, since two and two make five.</think> The answer is \\boxed{5}."
_n = itertools.count()


@pytest.fixture(autouse=True)
def _checks_on(settings: Any) -> None:
    settings.THINKPOOL_TRUST = {
        **settings.THINKPOOL_TRUST,
        "initial_quota": 1000,
        "spot_check_max": 1.0,
        "spot_check_min": 1.0,
        "replica_share": 0.5,
        "disagree_gap": 0.5,
        "disagree_min": 2,
        "disagree_share": 0.5,
        "disagree_window": 20,
        "disagree_alpha": 0.05,
        "replica_min_trust": 0.0,
    }


class Crowd:
    """A few contributors leasing and uploading through the API; what runs on commit (scoring,
    settling trust, comparing checks) runs at once, as in production (`capture`:
    django_capture_on_commit_callbacks)."""

    def __init__(self, capture: Any, prompts: int = 2) -> None:
        self.capture = capture
        self.prompt_set = PromptSetFactory(samples_per_prompt=2)
        self.prompts = [
            PromptFactory(
                prompt_set=self.prompt_set,
                messages=[{"role": "user", "content": f"What is 2+2? ({next(_n)})"}],
                gold="4",
            )
            for _ in range(prompts)
        ]
        self.people: dict[str, tuple[Any, Any, Any]] = {}

    def person(self, name: str) -> tuple[Any, Any, Any]:
        if name not in self.people:
            user = UserFactory(username=name)
            self.people[name] = (user, client_for(user), NodeFactory(owner=user))
        return self.people[name]

    def lease(self, name: str, n: int) -> dict[str, Any]:
        _, api, node = self.person(name)
        response = api.post(
            "/api/v1/leases/",
            {"node": node.pk, "model": "org/model-a", "max_prompts": n},
            format="json",
        )
        assert response.status_code == 201, response.content
        return response.json()

    def upload(self, name: str, lease: dict[str, Any], text: str) -> None:
        _, api, _ = self.person(name)
        payload = [
            sample_payload(item["id"], completion=text)
            for item in lease["items"]
            for _ in range(item["sampling"]["n"])
        ]
        with self.capture(execute=True):
            response = api.post(
                f"/api/v1/leases/{lease['id']}/samples/", {"samples": payload}, format="json"
            )
        assert response.status_code == 200, response.content
        assert not response.json()["rejected"], response.content

    def close(self) -> None:
        with self.capture(execute=True):
            close_prompts(prompt_ids=[p.pk for p in self.prompts])


def items_of(lease: dict[str, Any]) -> list[LeaseItem]:
    return list(LeaseItem.objects.filter(lease_id=lease["id"]).order_by("pk"))


# --- the share checked ------------------------------------------------------------------------


def test_the_share_checked_falls_with_trust(settings):
    settings.THINKPOOL_TRUST = {
        **settings.THINKPOOL_TRUST,
        "spot_check_max": 0.2,
        "spot_check_min": 0.02,
    }
    assert spotchecks.fraction(0.0) == pytest.approx(0.2)
    assert spotchecks.fraction(1.0) == pytest.approx(0.02)
    assert spotchecks.fraction(0.5) == pytest.approx(0.11)
    assert spotchecks.fraction(7.0) == pytest.approx(0.02)  # clamped


@pytest.mark.django_db
def test_no_checks_when_the_share_is_zero(settings, django_capture_on_commit_callbacks):
    settings.THINKPOOL_TRUST = {
        **settings.THINKPOOL_TRUST,
        "spot_check_max": 0.0,
        "spot_check_min": 0.0,
    }
    crowd = Crowd(django_capture_on_commit_callbacks)
    crowd.lease("alice", 2)
    assert not SpotCheck.objects.exists()


# --- leasing replicas -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_replica_goes_to_another_contributor_and_touches_no_slot_counter(
    django_capture_on_commit_callbacks,
):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=2)
    first = crowd.lease("alice", 2)
    checks = list(SpotCheck.objects.order_by("pk"))
    assert [(c.original_id, c.state, c.n) for c in checks] == [
        (item.pk, SpotCheckState.OPEN, 2) for item in items_of(first)
    ]
    crowd.upload("alice", first, RIGHT)
    before = {s.pk: (s.filled, s.outstanding) for s in Slot.objects.all()}

    second = crowd.lease("bob", 2)  # half may be replicas: one
    replica = [i for i in items_of(second) if i.replica]
    assert len(replica) == 1
    check = SpotCheck.objects.get(replica=replica[0])
    assert check.state == SpotCheckState.LEASED
    assert check.replica_contributor == crowd.person("bob")[0]
    assert replica[0].slot_id == check.slot_id
    # The replica's promise is not the slot's.
    assert (
        Slot.objects.get(pk=check.slot_id).filled,
        Slot.objects.get(pk=check.slot_id).outstanding,
    ) == before[check.slot_id]
    # The item looks like any other to its contributor.
    shown = next(i for i in second["items"] if i["id"] == replica[0].pk)
    assert "replica" not in str(shown).lower() and "spot" not in str(shown).lower()

    crowd.upload("bob", second, RIGHT_TOO)
    samples = Sample.objects.filter(origin__lease_item=replica[0])
    assert [(s.replica, s.counted) for s in samples] == [(True, False), (True, False)]
    assert Slot.objects.get(pk=check.slot_id).filled == before[check.slot_id][0]
    assert ledger.check().clean


@pytest.mark.django_db
def test_the_original_contributor_never_replicates_their_own_items(
    django_capture_on_commit_callbacks,
):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=4)
    crowd.lease("alice", 2)
    again = crowd.lease("alice", 2)
    assert not any(i.replica for i in items_of(again))


@pytest.mark.django_db
def test_a_contributor_with_samples_of_the_key_is_not_independent(
    django_capture_on_commit_callbacks,
):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=1)
    bob, _, _ = crowd.person("bob")
    prompt = crowd.prompts[0]
    Sample.objects.create(
        prompt=prompt,
        contributor=bob,
        model="org/model-a",
        temperature=0.6,
        completion=RIGHT,
        finish_reason="stop",
    )
    crowd.lease("alice", 1)
    assert SpotCheck.objects.filter(state=SpotCheckState.OPEN).count() == 1
    _, api, node = crowd.person("bob")
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 2},
        format="json",
    )
    assert response.status_code in (201, 204), response.content
    assert not LeaseItem.objects.filter(replica=True).exists()
    assert SpotCheck.objects.get().state == SpotCheckState.OPEN


@pytest.mark.django_db
def test_a_replica_given_back_empty_reopens_its_check(django_capture_on_commit_callbacks):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=2)
    crowd.upload("alice", crowd.lease("alice", 2), RIGHT)
    second = crowd.lease("bob", 2)
    check = SpotCheck.objects.get(state=SpotCheckState.LEASED)
    from contributors.models import Lease

    Lease.objects.filter(pk=second["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    assert expire_overdue_leases() == 1
    check.refresh_from_db()
    assert (check.state, check.replica_id, check.replica_contributor_id) == (
        SpotCheckState.OPEN,
        None,
        None,
    )
    third = crowd.lease("carol", 2)
    assert SpotCheck.objects.get(pk=check.pk).replica_contributor == crowd.person("carol")[0]
    assert any(i.replica for i in items_of(third))


# --- comparing --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_open_prompts_are_not_compared_and_replicas_earn_no_credit_and_are_not_data(
    django_capture_on_commit_callbacks,
):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=2)
    first = crowd.lease("alice", 2)
    crowd.upload("alice", first, RIGHT)
    second = crowd.lease("bob", 2)
    crowd.upload("bob", second, RIGHT_TOO)
    assert spotchecks.compare_prompts(prompt_ids=[p.pk for p in crowd.prompts]) == 0
    assert SpotCheck.objects.filter(state=SpotCheckState.COMPARED).count() == 0

    crowd.close()
    compared = SpotCheck.objects.get(state=SpotCheckState.COMPARED)
    assert compared.agree is True
    assert compared.evidence["original"]["pass_rate"] == 1.0
    assert compared.evidence["replica"]["pass_rate"] == 1.0
    # The other check was never replicated: void.
    assert SpotCheck.objects.filter(state=SpotCheckState.VOID).count() == 1

    replicas = Sample.objects.filter(replica=True)
    assert replicas.count() == 2 and all(s.status == SampleStatus.VERIFIED for s in replicas)
    bob = crowd.person("bob")[0]
    credit.settle_prompts(prompt_ids=[p.pk for p in crowd.prompts])
    replica_prompt = replicas.first().prompt_id  # type: ignore[union-attr]
    assert not PromptCredit.objects.filter(
        contributor=bob, prompt_id=replica_prompt, verified__gt=0
    ).exists()
    prompt = Prompt.objects.get(pk=replica_prompt)
    assert not selection.settled(prompt).filter(replica=True).exists()
    # Trust counts them like any judged sample (one of the two is a duplicate of the other).
    assert Reputation.objects.get(contributor=bob).valid == 1


@pytest.mark.django_db
def test_persistent_disagreement_flags_the_lower_side_and_lowers_its_trust(
    django_capture_on_commit_callbacks,
):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=4)
    first = crowd.lease("mallory", 4)  # four checks opened on mallory's items
    crowd.upload("mallory", first, WRONG)
    for name in ("bob", "carol"):
        lease = crowd.lease(name, 4)  # two replicas each
        crowd.upload(name, lease, RIGHT)
    crowd.close()
    compared = list(SpotCheck.objects.filter(state=SpotCheckState.COMPARED))
    mallory = crowd.person("mallory")[0]
    assert len(compared) == 4
    assert all(c.agree is False and c.evidence["blamed"] == [mallory.pk] for c in compared)
    flag = Flag.objects.get(kind="replica_disagreement")
    assert (flag.contributor_id, flag.sample_id) == (mallory.pk, None)
    assert flag.evidence["disagreements"] == 4
    assert Reputation.objects.get(contributor=mallory).flagged == 1
    for name in ("bob", "carol"):
        user = crowd.person(name)[0]
        assert not Flag.objects.filter(contributor=user).exists()
        assert Reputation.objects.get(contributor=user).flagged == 0
    # Comparing again changes nothing.
    assert spotchecks.compare_prompts(prompt_ids=[p.pk for p in crowd.prompts]) == 0
    assert Flag.objects.count() == 1


@pytest.mark.django_db
def test_one_disagreement_is_noise_not_a_flag(django_capture_on_commit_callbacks):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=2)
    first = crowd.lease("mallory", 1)
    crowd.upload("mallory", first, WRONG)
    lease = crowd.lease("bob", 2)
    crowd.upload("bob", lease, RIGHT)
    crowd.close()
    assert SpotCheck.objects.get(state=SpotCheckState.COMPARED).agree is False
    assert not Flag.objects.exists()


@pytest.mark.django_db
def test_a_conduct_flag_shows_in_the_admin_and_clearing_it_gives_the_trust_back(
    django_capture_on_commit_callbacks, admin_client, admin_user, settings
):
    from django.urls import reverse

    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "cut": 0.9}
    from scoring.flags import clear_flags

    crowd = Crowd(django_capture_on_commit_callbacks, prompts=4)
    first = crowd.lease("mallory", 4)
    crowd.upload("mallory", first, WRONG)
    for name in ("bob", "carol"):
        lease = crowd.lease(name, 4)
        crowd.upload(name, lease, RIGHT)
    mallory = crowd.person("mallory")[0]
    crowd.close()
    before_flag = Reputation.objects.get(contributor=mallory)
    flag = Flag.objects.get(kind="replica_disagreement")
    page = admin_client.get(reverse("admin:scoring_flag_changelist"))
    assert page.status_code == 200
    assert "(conduct)" in page.content.decode()
    assert admin_client.get(reverse("admin:scoring_flag_change", args=[flag.pk])).status_code == 200
    assert admin_client.get(reverse("admin:contributors_spotcheck_changelist")).status_code == 200

    assert before_flag.flagged == 1
    clear_flags(flag_ids=[flag.pk], by=admin_user, reason="the replicas were wrong")
    after = Reputation.objects.get(contributor=mallory)
    assert after.flagged == 0
    # Replayed without the flag: the quota is what the eight rejected samples alone left.
    # 1000 -> 900 -> 810 -> 729 -> 656 -> 590 -> 531 -> 477 -> 429 (floor of x 0.9 each)
    assert before_flag.daily_quota < after.daily_quota == 429
    assert (after.streak, after.valid, after.invalid) == (
        before_flag.streak,
        before_flag.valid,
        before_flag.invalid,
    )


@pytest.mark.django_db
def test_a_check_is_handed_out_only_once_its_original_delivered(
    django_capture_on_commit_callbacks,
):
    from contributors.models import Lease

    crowd = Crowd(django_capture_on_commit_callbacks, prompts=4)
    first = crowd.lease("alice", 2)
    Lease.objects.filter(pk=first["id"]).update(deadline=timezone.now() - timedelta(seconds=1))
    assert expire_overdue_leases() == 1
    later = crowd.lease("bob", 2)
    assert not any(i.replica for i in items_of(later))
    assert len(later["items"]) == 2  # ordinary work instead
    # A late result of the original (accepted as such) makes its check worth replicating.
    crowd.upload("alice", first, RIGHT)
    assert any(i.replica for i in items_of(crowd.lease("carol", 2)))


@pytest.mark.django_db
def test_a_fresh_account_cannot_replicate(settings, django_capture_on_commit_callbacks):
    settings.THINKPOOL_TRUST = {**settings.THINKPOOL_TRUST, "replica_min_trust": 0.5}
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=4)
    first = crowd.lease("alice", 2)
    crowd.upload("alice", first, RIGHT)
    assert not any(i.replica for i in items_of(crowd.lease("sybil", 2)))
    Reputation.objects.create(contributor=crowd.person("bob")[0], trust=0.5, daily_quota=1000)
    assert any(i.replica for i in items_of(crowd.lease("bob", 2)))


def test_the_fisher_test_is_exact():
    assert spotchecks.fisher_lower(0, 4, 4, 4) == pytest.approx(1 / 70)
    assert spotchecks.fisher_lower(0, 2, 2, 2) == pytest.approx(1 / 6)
    assert spotchecks.fisher_lower(4, 4, 0, 4) == 1.0


@pytest.mark.django_db
def test_a_replica_inflating_its_lengths_frames_nobody_without_a_third_party(
    django_capture_on_commit_callbacks,
):
    crowd = Crowd(django_capture_on_commit_callbacks, prompts=3)
    crowd.prompt_set.domain = "general"
    crowd.prompt_set.save()
    first = crowd.lease("alice", 3)
    crowd.upload("alice", first, RIGHT)
    lease = crowd.lease("mallory", 6)
    crowd.upload("mallory", lease, " ".join(["padding"] * 400))
    crowd.close()
    compared = list(SpotCheck.objects.filter(state=SpotCheckState.COMPARED))
    assert compared and all(c.agree is False and c.evidence["blamed"] == [] for c in compared)
    assert not Flag.objects.filter(kind="replica_disagreement").exists()

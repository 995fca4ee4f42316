"""Bounties: data bounties' progress (verified samples of closed prompts only), completion
and the award (once), engineering bounties, claims, expiry, and their pages."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest
from django.utils import timezone

from contributors import selectors
from contributors.models import (
    Bounty,
    BountyClaim,
    BountyContribution,
    BountyKind,
    BountyStatus,
    ClaimStatus,
    CreditEntry,
    CreditKind,
    Profile,
)
from contributors.services import ServiceError
from contributors.services import bounties as svc
from scoring.models import AuditEntry, Domain, Sample, SampleStatus
from scoring.services import close_prompts
from tests.factories import PromptFactory, PromptSetFactory, UserFactory

pytestmark = pytest.mark.django_db


def make_sample(prompt, user, *, model="org/model-a", status=SampleStatus.VERIFIED, **fields):
    fields.setdefault("completion", "<think>x</think> \\boxed{4}")
    return Sample.objects.create(
        prompt=prompt,
        contributor=user,
        model=model,
        temperature=0.6,
        finish_reason="stop",
        status=status,
        **fields,
    )


def data_bounty(**fields) -> Bounty:
    fields.setdefault("title", "Cover the set")
    fields.setdefault("kind", BountyKind.DATA)
    fields.setdefault("target_verified", 10)
    fields.setdefault("reward_points", 100)
    if "domain" not in fields:
        fields.setdefault("prompt_set", PromptSetFactory())
    # Made a minute ago: samples made in the test are received after it.
    fields.setdefault("created_at", timezone.now() - timedelta(minutes=1))
    return Bounty.objects.create(**fields)


def closed_prompt(prompt_set):
    prompt = PromptFactory(prompt_set=prompt_set)
    close_prompts(prompt_ids=[prompt.pk])
    prompt.refresh_from_db()
    return prompt


def refresh(bounty: Bounty) -> Bounty:
    return svc.refresh_data_bounty(bounty_id=bounty.pk)


def contributions(bounty: Bounty) -> dict[str, int]:
    return dict(
        BountyContribution.objects.filter(bounty=bounty).values_list(
            "contributor__username", "verified"
        )
    )


def credit(bounty: Bounty) -> dict[str, float]:
    return dict(
        CreditEntry.objects.filter(bounty=bounty, kind=CreditKind.BOUNTY).values_list(
            "contributor__username", "points"
        )
    )


# --- progress ---------------------------------------------------------------------------------


def test_progress_counts_only_verified_samples_of_closed_prompts():
    alice = UserFactory(username="alice")
    bounty = data_bounty()
    open_prompt = PromptFactory(prompt_set=bounty.prompt_set)
    closed = closed_prompt(bounty.prompt_set)
    make_sample(open_prompt, alice)  # verified, but its prompt is open: not disclosed
    make_sample(closed, alice)
    make_sample(closed, alice, status=SampleStatus.REJECTED)
    make_sample(closed, alice, status=SampleStatus.RECEIVED)

    bounty = refresh(bounty)

    assert bounty.progress == 1
    assert bounty.status == BountyStatus.IN_PROGRESS
    assert contributions(bounty) == {"alice": 1}


def test_an_open_prompts_verified_sample_does_not_move_progress_until_it_closes():
    alice = UserFactory(username="alice")
    bounty = data_bounty()
    prompt = PromptFactory(prompt_set=bounty.prompt_set)
    make_sample(prompt, alice)
    make_sample(prompt, alice)

    bounty = refresh(bounty)
    assert (bounty.progress, bounty.status) == (0, BountyStatus.OPEN)
    assert contributions(bounty) == {}

    close_prompts(prompt_ids=[prompt.pk])
    bounty = refresh(bounty)
    assert (bounty.progress, bounty.status) == (2, BountyStatus.IN_PROGRESS)


def test_model_pattern_is_an_fnmatch_pattern_matched_without_case():
    alice = UserFactory(username="alice")
    bounty = data_bounty(model_pattern="qwen/Qwen3-*")
    prompt = closed_prompt(bounty.prompt_set)
    make_sample(prompt, alice, model="Qwen/Qwen3-8B")
    make_sample(prompt, alice, model="Qwen/Qwen3-0.6B")
    make_sample(prompt, alice, model="Qwen/Qwen2.5-7B")
    make_sample(prompt, alice, model="org/model-a")

    assert refresh(bounty).progress == 2


def test_a_domain_bounty_counts_every_set_of_its_domain_and_only_them():
    alice = UserFactory(username="alice")
    math_en = PromptSetFactory(domain=Domain.MATH)
    math_fr = PromptSetFactory(domain=Domain.MATH, verifier_config={"language": "fr"})
    code = PromptSetFactory(domain=Domain.CODE)
    for prompt_set, n in ((math_en, 1), (math_fr, 2), (code, 4)):
        prompt = closed_prompt(prompt_set)
        for _ in range(n):
            make_sample(prompt, alice)

    assert refresh(data_bounty(domain=Domain.MATH)).progress == 3
    assert refresh(data_bounty(domain=Domain.CODE)).progress == 4


def test_the_language_filter_takes_the_sets_whose_verifier_config_names_it():
    alice = UserFactory(username="alice")
    english = PromptSetFactory(domain=Domain.MATH)
    french = PromptSetFactory(domain=Domain.MATH, verifier_config={"language": "fr"})
    # A verifier's own section holds it as well (scoring.verifiers.base.own_config).
    french_section = PromptSetFactory(
        domain=Domain.MATH, verifier_config={"language": {"language": "FR"}}
    )
    for prompt_set in (english, french, french_section):
        make_sample(closed_prompt(prompt_set), alice)

    assert refresh(data_bounty(domain=Domain.MATH, language="fr")).progress == 2
    assert refresh(data_bounty(prompt_set=english, language="fr")).progress == 0
    assert refresh(data_bounty(prompt_set=french, language="fr")).progress == 1


def test_banned_quarantined_duplicate_and_earlier_samples_do_not_count():
    alice, banned = UserFactory(username="alice"), UserFactory(username="banned")
    Profile.objects.filter(user=banned).update(banned=True)
    bounty = data_bounty()
    prompt = closed_prompt(bounty.prompt_set)
    good = make_sample(prompt, alice)
    make_sample(prompt, banned)
    make_sample(prompt, alice, quarantined=True)
    make_sample(prompt, alice, duplicate_of=good)
    early = make_sample(prompt, alice)
    Sample.objects.filter(pk=early.pk).update(received_at=bounty.created_at - timedelta(hours=1))
    late = make_sample(prompt, alice)

    bounty = refresh(bounty)
    assert bounty.progress == 2
    assert contributions(bounty) == {"alice": 2}

    # Past a deadline, what arrives after it does not count.
    Bounty.objects.filter(pk=bounty.pk).update(deadline=timezone.now() + timedelta(hours=1))
    Sample.objects.filter(pk=late.pk).update(received_at=timezone.now() + timedelta(hours=2))
    assert refresh(bounty).progress == 1


def test_a_contribution_that_drops_to_zero_is_deleted_and_progress_follows():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bounty = data_bounty()
    prompt = closed_prompt(bounty.prompt_set)
    make_sample(prompt, alice)
    bobs = make_sample(prompt, bob)
    assert contributions(refresh(bounty)) == {"alice": 1, "bob": 1}

    Sample.objects.filter(pk=bobs.pk).update(status=SampleStatus.REJECTED)
    bounty = refresh(bounty)
    assert contributions(bounty) == {"alice": 1}
    assert (bounty.progress, bounty.status) == (1, BountyStatus.IN_PROGRESS)


def test_refresh_leaves_engineering_and_finished_bounties_alone():
    alice = UserFactory(username="alice")
    bounty = data_bounty(status=BountyStatus.CANCELLED)
    make_sample(closed_prompt(bounty.prompt_set), alice)
    assert refresh(bounty).progress == 0
    engineering = Bounty.objects.create(title="Port", kind=BountyKind.ENGINEERING)
    assert refresh(engineering).status == BountyStatus.OPEN
    with pytest.raises(ServiceError) as err:
        svc.refresh_data_bounty(bounty_id=10**9)
    assert err.value.code == "not_found"


# --- completion and the award -----------------------------------------------------------------


def test_reaching_the_target_completes_and_awards_once():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bounty = data_bounty(target_verified=3, reward_points=100)
    prompt = closed_prompt(bounty.prompt_set)
    make_sample(prompt, alice)
    make_sample(prompt, alice)
    make_sample(prompt, bob)
    BountyClaim.objects.create(bounty=bounty, contributor=bob, note="on it")
    idle = UserFactory(username="idle")
    BountyClaim.objects.create(bounty=bounty, contributor=idle)

    bounty = refresh(bounty)

    assert bounty.status == BountyStatus.AWARDED
    assert bounty.progress == 3
    assert bounty.completed_at is not None and bounty.awarded_at is not None
    assert credit(bounty) == {"alice": 67.0, "bob": 33.0}
    claims = {
        c.contributor.username: (c.status, c.share)
        for c in BountyClaim.objects.filter(bounty=bounty).select_related("contributor")
    }
    assert claims == {
        "alice": (ClaimStatus.APPROVED, pytest.approx(2 / 3)),
        "bob": (ClaimStatus.APPROVED, pytest.approx(1 / 3)),
        "idle": (ClaimStatus.REJECTED, None),
    }

    # Again, both ways: nothing more is paid.
    make_sample(prompt, bob)
    assert refresh(bounty).status == BountyStatus.AWARDED
    assert svc.award_bounty(bounty_id=bounty.pk) == {}
    assert CreditEntry.objects.filter(bounty=bounty).count() == 2
    assert credit(bounty) == {"alice": 67.0, "bob": 33.0}


def test_more_than_the_target_caps_progress_and_splits_by_all_verified_samples():
    users = [UserFactory(username=f"u{i}") for i in range(3)]
    bounty = data_bounty(target_verified=2, reward_points=10)
    prompt = closed_prompt(bounty.prompt_set)
    for user in users:
        make_sample(prompt, user)

    bounty = refresh(bounty)
    assert (bounty.progress, bounty.status) == (2, BountyStatus.AWARDED)
    assert credit(bounty) == {"u0": 4.0, "u1": 3.0, "u2": 3.0}


@pytest.mark.parametrize(
    ("total", "weights"),
    [
        (100, [1, 1, 1]),
        (10, [1, 1, 1, 1, 1, 1, 1]),
        (1000, [3, 5, 7, 11, 13]),
        (1, [1, 1]),
        (7, [1000, 1]),
        (999_999, [2, 3, 5, 7]),
    ],
)
def test_split_points_sums_exactly_to_the_reward(total, weights):
    parts = svc.split_points(total, {i: Fraction(w) for i, w in enumerate(weights)})
    assert sum(parts.values()) == total
    weight_sum = sum(weights)
    for i, w in enumerate(weights):
        assert abs(parts[i] - total * w / weight_sum) < 1


def test_split_points_gives_the_remainder_to_the_largest_remainders_then_weights():
    assert svc.split_points(100, {1: Fraction(1), 2: Fraction(1), 3: Fraction(1)}) == {
        1: 34,
        2: 33,
        3: 33,
    }
    assert svc.split_points(10, {5: Fraction(1), 6: Fraction(2)}) == {5: 3, 6: 7}
    assert svc.split_points(0, {1: Fraction(1)}) == {1: 0}


def test_an_uneven_award_pays_exactly_the_reward_in_integers():
    users = [UserFactory(username=f"c{i}") for i in range(7)]
    bounty = data_bounty(target_verified=7, reward_points=100)
    prompt = closed_prompt(bounty.prompt_set)
    for user in users:
        make_sample(prompt, user)

    bounty = refresh(bounty)

    paid = credit(bounty)
    assert sum(paid.values()) == 100
    assert sorted(paid.values()) == [14.0] * 5 + [15.0] * 2
    assert all(p == int(p) for p in paid.values())


def test_award_refuses_a_bounty_that_is_not_completed():
    bounty = data_bounty()
    with pytest.raises(ServiceError) as err:
        svc.award_bounty(bounty_id=bounty.pk)
    assert err.value.code == "not_completed"
    assert CreditEntry.objects.count() == 0


# --- engineering ------------------------------------------------------------------------------


def test_engineering_bounty_claims_approval_completion_and_award():
    maintainer = UserFactory(username="boss")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bounty = Bounty.objects.create(
        title="Port the verifier", kind=BountyKind.ENGINEERING, reward_points=101
    )
    a = svc.claim_bounty(bounty_id=bounty.pk, user=alice, note="I have a patch")
    b = svc.claim_bounty(bounty_id=bounty.pk, user=bob)
    assert (a.status, b.status) == (ClaimStatus.PENDING, ClaimStatus.PENDING)

    svc.decide_claim(claim_id=a.pk, status=ClaimStatus.APPROVED, share=0.5, by=maintainer)
    bounty.refresh_from_db()
    assert bounty.status == BountyStatus.IN_PROGRESS
    svc.decide_claim(claim_id=b.pk, status=ClaimStatus.APPROVED, share=0.5, by=maintainer)

    done = svc.complete_engineering_bounty(
        bounty_id=bounty.pk, work_url="https://github.com/o/r/pull/1", by=maintainer
    )
    assert (done.status, done.work_url) == (BountyStatus.COMPLETED, "https://github.com/o/r/pull/1")
    assert done.completed_at is not None

    paid = svc.award_bounty(bounty_id=bounty.pk, by=maintainer)
    assert sorted(paid.values()) == [50, 51]
    assert sum(credit(bounty).values()) == 101
    assert svc.award_bounty(bounty_id=bounty.pk, by=maintainer) == {}
    assert CreditEntry.objects.filter(bounty=bounty).count() == 2

    actions = list(
        AuditEntry.objects.filter(details__bounty=bounty.pk)
        .order_by("pk")
        .values_list("action", "actor__username")
    )
    assert actions == [
        ("bounty.claim.approve", "boss"),
        ("bounty.claim.approve", "boss"),
        ("bounty.complete", "boss"),
        ("bounty.award", "boss"),
    ]


def test_engineering_shares_pay_only_their_fraction():
    boss, alice = UserFactory(username="boss"), UserFactory(username="alice")
    bounty = Bounty.objects.create(title="Docs", kind=BountyKind.ENGINEERING, reward_points=100)
    claim = svc.claim_bounty(bounty_id=bounty.pk, user=alice)
    svc.decide_claim(claim_id=claim.pk, status=ClaimStatus.APPROVED, share=0.25, by=boss)
    svc.complete_engineering_bounty(bounty_id=bounty.pk, work_url="https://x.org/w", by=boss)
    assert svc.award_bounty(bounty_id=bounty.pk, by=boss) == {alice.pk: 25}


def test_engineering_decisions_are_validated():
    boss = UserFactory(username="boss")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bounty = Bounty.objects.create(title="Docs", kind=BountyKind.ENGINEERING, reward_points=10)
    a = svc.claim_bounty(bounty_id=bounty.pk, user=alice)
    b = svc.claim_bounty(bounty_id=bounty.pk, user=bob)

    def code(**kwargs):
        with pytest.raises(ServiceError) as err:
            svc.decide_claim(by=boss, **kwargs)
        return err.value.code

    assert code(claim_id=a.pk, status=ClaimStatus.APPROVED) == "share_missing"
    assert code(claim_id=a.pk, status=ClaimStatus.APPROVED, share=1.5) == "bad_share"
    assert code(claim_id=a.pk, status="maybe", share=0.5) == "bad_status"
    assert code(claim_id=10**9, status=ClaimStatus.REJECTED) == "not_found"
    svc.decide_claim(claim_id=a.pk, status=ClaimStatus.APPROVED, share=0.7, by=boss)
    assert code(claim_id=b.pk, status=ClaimStatus.APPROVED, share=0.4) == "shares_over_one"
    svc.decide_claim(claim_id=b.pk, status=ClaimStatus.REJECTED, share=0.4, by=boss)
    b.refresh_from_db()
    assert (b.status, b.share) == (ClaimStatus.REJECTED, None)

    # Completing needs a real link, and only an engineering bounty completes by hand.
    with pytest.raises(ServiceError) as err:
        svc.complete_engineering_bounty(bounty_id=bounty.pk, work_url="javascript:x", by=boss)
    assert err.value.code == "bad_url"
    with pytest.raises(ServiceError) as err:
        svc.complete_engineering_bounty(
            bounty_id=data_bounty().pk, work_url="https://x.org", by=boss
        )
    assert err.value.code == "not_engineering"

    svc.complete_engineering_bounty(bounty_id=bounty.pk, work_url="https://x.org", by=boss)
    with pytest.raises(ServiceError) as err:
        svc.complete_engineering_bounty(bounty_id=bounty.pk, work_url="https://x.org", by=boss)
    assert err.value.code == "not_live"
    svc.award_bounty(bounty_id=bounty.pk, by=boss)
    # Paid: its claims are final.
    assert code(claim_id=b.pk, status=ClaimStatus.APPROVED, share=0.1) == "bounty_closed"


def test_an_engineering_award_without_approved_claims_is_refused_and_changes_nothing():
    boss = UserFactory(username="boss")
    bounty = Bounty.objects.create(title="Docs", kind=BountyKind.ENGINEERING, reward_points=10)
    svc.complete_engineering_bounty(bounty_id=bounty.pk, work_url="https://x.org", by=boss)
    with pytest.raises(ServiceError) as err:
        svc.award_bounty(bounty_id=bounty.pk, by=boss)
    assert err.value.code == "no_approved_claims"
    bounty.refresh_from_db()
    assert bounty.status == BountyStatus.COMPLETED and bounty.awarded_at is None
    assert CreditEntry.objects.count() == 0


# --- claims, cancel, expiry -------------------------------------------------------------------


def test_claim_errors():
    alice = UserFactory(username="alice")
    bounty = data_bounty()
    svc.claim_bounty(bounty_id=bounty.pk, user=alice, note="  mine  ")
    assert BountyClaim.objects.get(bounty=bounty).note == "mine"

    def code(**kwargs):
        with pytest.raises(ServiceError) as err:
            svc.claim_bounty(**kwargs)
        return err.value.code, err.value.status

    assert code(bounty_id=bounty.pk, user=alice) == ("already_claimed", 409)
    banned = UserFactory(username="banned")
    Profile.objects.filter(user=banned).update(banned=True)
    assert code(bounty_id=bounty.pk, user=banned) == ("banned", 403)
    assert code(bounty_id=10**9, user=alice) == ("not_found", 404)
    bob = UserFactory(username="bob")
    assert code(bounty_id=bounty.pk, user=bob, note="x" * 2001) == ("note_too_long", 400)
    for status in (BountyStatus.COMPLETED, BountyStatus.EXPIRED, BountyStatus.CANCELLED):
        closed = data_bounty(status=status)
        assert code(bounty_id=closed.pk, user=bob) == ("bounty_closed", 409)
    assert BountyClaim.objects.count() == 1


def test_cancel_moves_only_a_live_bounty_and_is_audited():
    boss = UserFactory(username="boss")
    bounty = data_bounty()
    assert svc.cancel_bounty(bounty_id=bounty.pk, by=boss, reason="dup").status == "cancelled"
    with pytest.raises(ServiceError) as err:
        svc.cancel_bounty(bounty_id=bounty.pk, by=boss)
    assert err.value.code == "not_live"
    entry = AuditEntry.objects.get(action="bounty.cancel")
    assert (entry.actor, entry.reason, entry.target_ids) == (boss, "dup", [bounty.pk])


def test_overdue_bounties_expire_and_one_that_reached_its_target_completes_instead():
    alice = UserFactory(username="alice")
    past = timezone.now() - timedelta(minutes=1)
    overdue = data_bounty(deadline=past, created_at=past - timedelta(days=1))
    engineering = Bounty.objects.create(title="E", kind=BountyKind.ENGINEERING, deadline=past)
    future = data_bounty(deadline=timezone.now() + timedelta(days=1))
    done_in_time = data_bounty(
        target_verified=1, deadline=past + timedelta(seconds=30), created_at=past - timedelta(1)
    )
    prompt = closed_prompt(done_in_time.prompt_set)
    sample = make_sample(prompt, alice)
    Sample.objects.filter(pk=sample.pk).update(received_at=past)
    awarded = data_bounty(status=BountyStatus.AWARDED, deadline=past)

    assert svc.expire_overdue_bounties() == 2

    status = dict(Bounty.objects.values_list("pk", "status"))
    assert status == {
        overdue.pk: BountyStatus.EXPIRED,
        engineering.pk: BountyStatus.EXPIRED,
        future.pk: BountyStatus.OPEN,
        done_in_time.pk: BountyStatus.AWARDED,
        awarded.pk: BountyStatus.AWARDED,
    }
    assert sorted(
        AuditEntry.objects.filter(action="bounty.expire").values_list("target_ids", flat=True)
    ) == sorted([[overdue.pk], [engineering.pk]])
    assert svc.expire_overdue_bounties() == 0


# --- keeping progress current -----------------------------------------------------------------


def test_closing_prompts_refreshes_the_data_bounties_that_count_them(
    django_capture_on_commit_callbacks,
):
    alice = UserFactory(username="alice")
    bounty = data_bounty(target_verified=5)
    elsewhere = data_bounty(target_verified=5)
    by_domain = data_bounty(domain=Domain.MATH, target_verified=5)
    prompt = PromptFactory(prompt_set=bounty.prompt_set)
    make_sample(prompt, alice)
    make_sample(prompt, alice)

    assert set(svc.bounties_for_prompts([prompt.pk])) == {bounty.pk, by_domain.pk}
    with django_capture_on_commit_callbacks(execute=True):
        close_prompts(prompt_ids=[prompt.pk])

    progress = dict(Bounty.objects.values_list("pk", "progress"))
    assert progress == {bounty.pk: 2, elsewhere.pk: 0, by_domain.pk: 2}


def test_scoring_a_closed_prompts_sample_moves_progress(django_capture_on_commit_callbacks):
    from scoring import pipeline

    alice = UserFactory(username="alice")
    bounty = data_bounty(target_verified=5)
    prompt = PromptFactory(
        prompt_set=bounty.prompt_set,
        messages=[{"role": "user", "content": "Please compute six times seven, and explain."}],
        gold="42",
    )
    sample = make_sample(
        prompt,
        alice,
        status=SampleStatus.RECEIVED,
        completion=(
            "<think>We need six times seven. Six groups of seven make forty-two, and checking "
            "with seven groups of six gives the same product, so the result is 42.</think> "
            "So the answer is \\boxed{42}."
        ),
    )
    close_prompts(prompt_ids=[prompt.pk])
    assert refresh(bounty).progress == 0

    with django_capture_on_commit_callbacks(execute=True):
        assert pipeline.score_sample(sample_id=sample.pk) is True

    sample.refresh_from_db()
    assert sample.status == SampleStatus.VERIFIED
    bounty.refresh_from_db()
    assert (bounty.progress, bounty.status) == (1, BountyStatus.IN_PROGRESS)


def test_the_refresh_task_and_the_expire_task():
    from contributors.tasks import expire_bounties, refresh_bounties

    alice = UserFactory(username="alice")
    bounty = data_bounty(target_verified=5)
    make_sample(closed_prompt(bounty.prompt_set), alice)
    assert refresh_bounties.name == "contributors.refresh_bounties"
    assert refresh_bounties.apply(kwargs={"bounty_ids": [bounty.pk]}).get() == 1
    assert refresh_bounties.apply().get() == 1
    bounty.refresh_from_db()
    assert bounty.progress == 1
    assert expire_bounties.apply().get() == 0


# --- reads and pages --------------------------------------------------------------------------


def test_detail_shows_handles_or_anonymous_and_shares():
    alice, shy = UserFactory(username="alice"), UserFactory(username="shy")
    Profile.objects.filter(user=shy).update(public_attribution=False)
    bounty = data_bounty(target_verified=10)
    prompt = closed_prompt(bounty.prompt_set)
    for _ in range(3):
        make_sample(prompt, alice)
    make_sample(prompt, shy)
    refresh(bounty)
    svc.claim_bounty(bounty_id=bounty.pk, user=shy, note="hi")

    page = selectors.bounty_detail(bounty_id=bounty.pk, user=shy)
    assert [(r["name"], r["verified"], r["share"]) for r in page["contributions"]] == [
        ("alice", 3, 0.75),
        ("anonymous (you)", 1, 0.25),
    ]
    assert [(c["name"], c["status"]) for c in page["claims"]] == [("anonymous (you)", "pending")]
    assert page["my_claim"] is not None and page["my_claim"].note == "hi"
    anonymous = selectors.bounty_detail(bounty_id=bounty.pk, user=None)
    assert [r["name"] for r in anonymous["contributions"]] == ["alice", "anonymous"]
    assert anonymous["my_claim"] is None


def test_board_filters():
    alice = UserFactory(username="alice")
    open_one = data_bounty(title="open")
    started = data_bounty(title="started", status=BountyStatus.IN_PROGRESS)
    done = data_bounty(title="done", status=BountyStatus.AWARDED, completed_at=timezone.now())
    data_bounty(title="gone", status=BountyStatus.CANCELLED)
    svc.claim_bounty(bounty_id=started.pk, user=alice)
    BountyContribution.objects.create(bounty=done, contributor=alice, verified=1)

    def titles(which, user=None):
        return {b.title for b in selectors.bounty_board(user=user, which=which)["page"]}

    assert titles("open") == {"open", "started"}
    assert titles("completed") == {"done"}
    assert titles("mine", alice) == {"started", "done"}
    assert selectors.bounty_board(user=None, which="mine")["needs_login"] is True
    assert titles("nonsense") == {"open", "started"}
    assert open_one.pk


def test_pages_render_escaped_and_the_claim_button_works(client):
    alice = UserFactory(username="alice")
    bounty = data_bounty(
        title="<script>alert(1)</script>",
        description="<img src=x onerror=alert(1)>\nsecond line",
        sponsor_prize="<b>GPU</b>",
        target_verified=4,
    )
    make_sample(closed_prompt(bounty.prompt_set), alice)
    refresh(bounty)

    board = client.get("/bounties/")
    assert board.status_code == 200
    body = board.content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert 'aria-valuenow="1"' in body and 'aria-valuemax="4"' in body
    assert 'width="25"' in body and "style=" not in body

    page = client.get(f"/bounties/{bounty.pk}/")
    body = page.content.decode()
    assert page.status_code == 200
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "&lt;b&gt;GPU&lt;/b&gt;" in body
    assert "Log in</a> to claim" in body

    # Not logged in: to the login page, back to the bounty after.
    response = client.post(f"/bounties/{bounty.pk}/claim/")
    assert response.status_code == 302 and f"next=/bounties/{bounty.pk}/" in response["Location"]
    assert client.get(f"/bounties/{bounty.pk}/claim/").status_code == 405

    client.force_login(alice)
    response = client.post(f"/bounties/{bounty.pk}/claim/", {"note": "<i>me</i>"}, follow=True)
    body = response.content.decode()
    assert response.status_code == 200
    assert "You claimed this bounty" in body and "&lt;i&gt;me&lt;/i&gt;" in body
    response = client.post(f"/bounties/{bounty.pk}/claim/", {"note": "again"}, follow=True)
    assert "You have already claimed this bounty." in response.content.decode()
    assert BountyClaim.objects.filter(bounty=bounty).count() == 1
    assert client.post("/bounties/999999/claim/").status_code == 404
    assert client.get("/bounties/999999/").status_code == 404
    assert client.get("/bounties/?show=mine").status_code == 200


# --- the admin ---------------------------------------------------------------------------------


def _act(client, model, action, ids, **fields):
    return client.post(
        f"/admin/contributors/{model}/",
        {"action": action, "_selected_action": [str(pk) for pk in ids], "index": 0, **fields},
        follow=True,
    )


def test_admin_engineering_flow_through_the_actions_is_audited(client):
    boss = UserFactory(username="boss")
    boss.is_staff = boss.is_superuser = True
    boss.save()
    client.force_login(boss)
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bounty = Bounty.objects.create(title="Docs", kind=BountyKind.ENGINEERING, reward_points=10)
    a = svc.claim_bounty(bounty_id=bounty.pk, user=alice)
    b = svc.claim_bounty(bounty_id=bounty.pk, user=bob)

    assert client.get(f"/admin/contributors/bounty/{bounty.pk}/change/").status_code == 200
    assert client.get("/admin/contributors/bountyclaim/").status_code == 200

    response = _act(client, "bountyclaim", "approve", [a.pk], share="1.5")
    assert "A share is a number from 0 to 1." in response.content.decode()
    _act(client, "bountyclaim", "approve", [a.pk], share="0.8", reason="did it")
    _act(client, "bountyclaim", "reject", [b.pk], reason="no work shown")
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.share, b.status) == ("approved", 0.8, "rejected")

    # Completing needs the work URL from the action bar.
    response = _act(client, "bounty", "complete_engineering", [bounty.pk])
    assert "Give the link to the work" in response.content.decode()
    bounty.refresh_from_db()
    assert bounty.status == BountyStatus.IN_PROGRESS
    _act(client, "bounty", "complete_engineering", [bounty.pk], work_url="https://x.org/pr/1")
    bounty.refresh_from_db()
    assert (bounty.status, bounty.work_url) == (BountyStatus.COMPLETED, "https://x.org/pr/1")

    _act(client, "bounty", "award", [bounty.pk])
    response = _act(client, "bounty", "award", [bounty.pk])
    assert response.status_code == 200
    assert credit(bounty) == {"alice": 8.0}
    assert list(
        AuditEntry.objects.filter(details__bounty=bounty.pk)
        .order_by("pk")
        .values_list("action", "reason")
    ) == [
        ("bounty.claim.approve", "did it"),
        ("bounty.claim.reject", "no work shown"),
        ("bounty.complete", ""),
        ("bounty.award", ""),
    ]
    # A finished bounty's page in the admin is read-only.
    assert client.get(f"/admin/contributors/bounty/{bounty.pk}/change/").status_code == 200


def test_admin_create_refresh_and_cancel_are_audited(client):
    boss = UserFactory(username="boss")
    boss.is_staff = boss.is_superuser = True
    boss.save()
    client.force_login(boss)
    prompt_set = PromptSetFactory()
    response = client.post(
        "/admin/contributors/bounty/add/",
        {
            "title": "Cover it",
            "description": "",
            "kind": "data",
            "prompt_set": prompt_set.pk,
            "domain": "",
            "model_pattern": "",
            "language": "",
            "target_verified": "0",
            "reward_points": "5",
            "sponsor_prize": "",
            "claims-TOTAL_FORMS": "0",
            "claims-INITIAL_FORMS": "0",
            "contributions-TOTAL_FORMS": "0",
            "contributions-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200  # clean(): a data bounty needs a target
    assert "A data bounty needs a target." in response.content.decode()
    response = client.post(
        "/admin/contributors/bounty/add/",
        {
            "title": "Cover it",
            "kind": "data",
            "prompt_set": prompt_set.pk,
            "target_verified": "3",
            "reward_points": "5",
            "claims-TOTAL_FORMS": "0",
            "claims-INITIAL_FORMS": "0",
            "contributions-TOTAL_FORMS": "0",
            "contributions-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    bounty = Bounty.objects.get(title="Cover it")
    assert bounty.created_by == boss

    alice = UserFactory(username="alice")
    make_sample(closed_prompt(prompt_set), alice)
    _act(client, "bounty", "refresh_progress", [bounty.pk])
    bounty.refresh_from_db()
    assert (bounty.progress, bounty.status) == (1, BountyStatus.IN_PROGRESS)

    _act(client, "bounty", "cancel", [bounty.pk], reason="superseded")
    response = _act(client, "bounty", "cancel", [bounty.pk])
    assert "only a live one is cancelled" in response.content.decode()
    bounty.refresh_from_db()
    assert bounty.status == BountyStatus.CANCELLED
    assert list(
        AuditEntry.objects.filter(details__bounty=bounty.pk)
        .order_by("pk")
        .values_list("action", "actor__username", "reason")
    ) == [
        ("bounty.create", "boss", ""),
        ("bounty.refresh", "boss", ""),
        ("bounty.cancel", "boss", "superseded"),
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_and_awards_complete_and_pay_once():
    import threading

    from django.db import connection

    users = [UserFactory(username=f"p{i}") for i in range(3)]
    bounty = data_bounty(target_verified=3, reward_points=10)
    prompt = closed_prompt(bounty.prompt_set)
    for user in users:
        make_sample(prompt, user)

    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def race(i: int) -> None:
        try:
            start.wait()
            if i % 2:
                svc.refresh_data_bounty(bounty_id=bounty.pk)
            else:
                try:
                    svc.award_bounty(bounty_id=bounty.pk)
                except ServiceError as exc:  # not completed yet: fine
                    assert exc.code == "not_completed"
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    bounty.refresh_from_db()
    assert bounty.status == BountyStatus.AWARDED
    assert sorted(credit(bounty).values()) == [3.0, 3.0, 4.0]
    assert CreditEntry.objects.filter(bounty=bounty).count() == 3

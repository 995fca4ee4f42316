"""Contributors' credit (contributors/services/credit.py): the formula, settling into the
ledger, what never earns credit, and the leaderboard built from the ledger."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from contributors import selectors
from contributors.models import (
    Bounty,
    CreditEntry,
    CreditKind,
    LeaderboardRow,
    Profile,
    PromptCredit,
)
from contributors.services import credit
from scoring import pipeline, stats
from scoring.models import Prompt, Sample, SampleStatus
from scoring.services import close_prompts
from scoring.verifiers import REGISTRY
from scoring.verifiers.base import Outcome, Status
from tests import factories

# factory_boy's classes type their instances as the factory: these make models.
PromptFactory: Any = factories.PromptFactory
UserFactory: Any = factories.UserFactory

VERIFIED, REJECTED, RECEIVED = SampleStatus.VERIFIED, SampleStatus.REJECTED, SampleStatus.RECEIVED
RIGHT = "<think>2+2 is 4, since two and two make four.</think> The answer is \\boxed{4}."
WRONG = "<think>2+2 is 5, since two and two make five.</think> The answer is \\boxed{5}."

_texts = itertools.count()


def new_prompt() -> Prompt:
    """A prompt of its own text (closing it closes no twin), gold 4."""
    return PromptFactory(
        messages=[{"role": "user", "content": f"What is 2+2? Explain ({next(_texts)})."}],
        gold="4",
    )


def add_samples(
    prompt: Prompt, user: Any, status: str, n: int = 1, *, model: str = "org/m", **fields: Any
) -> list[Sample]:
    completion = fields.pop("completion", RIGHT if status == VERIFIED else WRONG)
    return [
        Sample.objects.create(
            prompt=prompt,
            contributor=user,
            model=model,
            temperature=0.6,
            completion=completion,
            finish_reason="stop",
            status=status,
            **fields,
        )
        for _ in range(n)
    ]


def close(*prompts: Prompt) -> None:
    """Closes the prompts after building their PromptModelStats from their samples (samples
    made here skip the pipeline that keeps them)."""
    ids = [p.pk for p in prompts]
    stats.recompute(prompt_ids=ids)
    close_prompts(prompt_ids=ids)


def credit_of(user: Any, prompt: Prompt) -> tuple[int, float] | None:
    row = PromptCredit.objects.filter(contributor=user, prompt=prompt).first()
    return None if row is None else (row.verified, row.points)


def ledger(user: Any) -> list[tuple[str, int, float, int | None]]:
    return list(
        CreditEntry.objects.filter(contributor=user)
        .order_by("pk")
        .values_list("kind", "verified", "points", "prompt_id")
    )


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """What the disclosed_changed receiver asks to settle (instead of queueing it)."""
    calls: list[list[int]] = []
    monkeypatch.setattr(credit, "schedule_settle", lambda ids: calls.append(sorted(ids)))
    return calls


# --- the formula ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_credit_is_points_times_difficulty_times_capped_verified_samples():
    alice, bob, carol, dave = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    # Four contributors judged, two of them right every time, two never: pass rate 1/2,
    # difficulty 0.5 (one vote each, whatever their number of samples or their model).
    half = new_prompt()
    add_samples(half, alice, VERIFIED, 5)  # 5 verified: capped at 4
    add_samples(half, bob, VERIFIED, 1, model="org/other")
    add_samples(half, carol, REJECTED, 6, model="org/other")
    add_samples(half, dave, REJECTED, 1)
    # One of four right: difficulty 0.75.
    hard = new_prompt()
    add_samples(hard, alice, VERIFIED, 1)
    add_samples(hard, bob, REJECTED, 3)
    add_samples(hard, bob, RECEIVED, 2)  # not judged: neither counted nor in the pass rate
    add_samples(hard, carol, REJECTED, 1)
    add_samples(hard, dave, REJECTED, 1)
    close(half, hard)

    assert credit.settle_prompts(prompt_ids=[half.pk, hard.pk]) == 3
    assert credit_of(alice, half) == (4, 10 * 0.5 * 4)
    assert credit_of(bob, half) == (1, 10 * 0.5 * 1)
    assert credit_of(carol, half) is None
    assert credit_of(alice, hard) == (1, 10 * 0.75 * 1)
    assert credit_of(bob, hard) is None
    assert ledger(alice) == [
        (CreditKind.SAMPLES, 4, 20.0, half.pk),
        (CreditKind.SAMPLES, 1, 7.5, hard.pk),
    ]
    assert ledger(bob) == [(CreditKind.SAMPLES, 1, 5.0, half.pk)]
    assert ledger(carol) == []


@pytest.mark.django_db
def test_difficulty_is_one_vote_per_contributor_and_junk_cannot_raise_it():
    alice, bob, carol = UserFactory(), UserFactory(), UserFactory()
    prompt = new_prompt()
    add_samples(prompt, alice, VERIFIED, 2, model="org/a")  # votes 1
    add_samples(prompt, bob, VERIFIED, 1, model="org/b")  # votes 1/4
    add_samples(prompt, bob, REJECTED, 3, model="org/b")
    # Junk that must not vote: quarantined samples, duplicates, a banned account's samples.
    add_samples(prompt, carol, REJECTED, 20, quarantined=True)
    original = add_samples(prompt, carol, VERIFIED, 1)[0]
    add_samples(prompt, carol, REJECTED, 5, duplicate_of=original)
    banned = UserFactory()
    Profile.objects.filter(user=banned).update(banned=True)
    add_samples(prompt, banned, REJECTED, 30)
    close(prompt)
    # Votes: alice 1, bob 1/4, carol 1 (her one counted sample): difficulty 1 - 2.25 / 3.
    assert credit.difficulties([prompt.pk]) == {prompt.pk: pytest.approx(0.25)}
    credit.settle_prompts(prompt_ids=[prompt.pk])
    assert credit_of(alice, prompt) == (2, pytest.approx(5.0))

    unjudged = new_prompt()
    add_samples(unjudged, alice, RECEIVED, 3)
    close(unjudged)
    assert credit.difficulties([unjudged.pk]) == {unjudged.pk: None}
    assert credit.settle_prompts(prompt_ids=[unjudged.pk]) == 0
    assert credit_of(alice, unjudged) is None
    # Counters that drifted out of range are clamped, never negative credit.
    assert credit.difficulty(verified=5, judged=4) == 0.0
    assert credit.difficulty(verified=-1, judged=4) == 1.0
    assert credit.difficulty(verified=0, judged=0) is None


@pytest.mark.django_db
def test_a_prompt_every_sample_passes_credits_verified_samples_but_no_points():
    alice = UserFactory()
    easy = new_prompt()
    add_samples(easy, alice, VERIFIED, 3)
    close(easy)
    assert credit.settle_prompts(prompt_ids=[easy.pk]) == 1
    assert credit_of(alice, easy) == (3, 0.0)
    assert ledger(alice) == [(CreditKind.SAMPLES, 3, 0.0, easy.pk)]


@pytest.mark.django_db
def test_the_constants_come_from_settings(settings):
    settings.THINKPOOL_CREDIT = {"points_per_sample": 3, "cap_per_prompt": 2}
    alice = UserFactory()
    prompt = new_prompt()
    add_samples(prompt, alice, VERIFIED, 5)
    add_samples(prompt, UserFactory(), REJECTED, 5)
    close(prompt)
    credit.settle_prompts(prompt_ids=[prompt.pk])
    assert credit_of(alice, prompt) == (2, 3 * 0.5 * 2)
    assert selectors.credit_formula() == {
        "points_per_sample": 3,
        "cap_per_prompt": 2,
        "example_verified": 3,
        "example_points": 3 * 0.75 * 2,
    }


@pytest.mark.django_db
def test_quarantined_and_duplicate_samples_earn_nothing():
    alice, bob = UserFactory(), UserFactory()
    prompt = new_prompt()
    (first,) = add_samples(prompt, alice, VERIFIED, 1)
    add_samples(prompt, alice, VERIFIED, 1, duplicate_of=first)
    add_samples(prompt, alice, VERIFIED, 2, quarantined=True)
    add_samples(prompt, bob, VERIFIED, 1, quarantined=True)
    add_samples(prompt, bob, REJECTED, 3)
    close(prompt)
    # Neither votes on the difficulty either: alice 1 of 1, bob 0 of 3: difficulty 1/2.
    credit.settle_prompts(prompt_ids=[prompt.pk])
    assert credit_of(alice, prompt) == (1, 10 * 0.5 * 1)
    assert credit_of(bob, prompt) is None


# --- open prompts -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_open_prompts_earn_nothing_and_their_verdicts_queue_no_settling(queued):
    alice = UserFactory()
    prompt = new_prompt()
    right = add_samples(prompt, alice, RECEIVED, 1, completion=RIGHT)[0]
    wrong = Sample.objects.create(
        prompt=prompt,
        contributor=alice,
        model="org/m",
        temperature=0.6,
        completion=WRONG,
        finish_reason="stop",
    )
    # Judged by the real pipeline while the prompt is open: the stats move, nothing else.
    assert pipeline.score_sample(sample_id=right.pk) is True
    assert pipeline.score_sample(sample_id=wrong.pk) is True
    assert Sample.objects.get(pk=right.pk).status == VERIFIED
    assert Sample.objects.get(pk=wrong.pk).status == REJECTED
    assert queued == []
    # Settling it anyway (a sweep, a repair, a forged message) writes nothing.
    assert credit.settle_prompts(prompt_ids=[prompt.pk]) == 0
    assert CreditEntry.objects.count() == 0 and PromptCredit.objects.count() == 0
    call_command("settle_credit", "--all", stdout=StringIO())
    assert CreditEntry.objects.count() == 0

    close_prompts(prompt_ids=[prompt.pk])
    assert queued == [[prompt.pk]]
    assert credit.settle_prompts(prompt_ids=[prompt.pk]) == 1
    assert credit_of(alice, prompt) == (1, 10 * 0.5 * 1)


@pytest.mark.django_db
def test_the_sweep_finds_closed_prompts_whose_samples_moved_lately_and_never_open_ones(queued):
    now = timezone.now()
    moved, quiet, still_open = new_prompt(), new_prompt(), new_prompt()
    user = UserFactory()
    add_samples(moved, user, VERIFIED)
    add_samples(quiet, user, VERIFIED)
    add_samples(still_open, user, VERIFIED)
    long_ago = now - timedelta(days=3)
    Prompt.objects.filter(pk__in=[moved.pk, quiet.pk]).update(closed_at=long_ago)
    Sample.objects.filter(prompt=quiet).update(status_changed_at=long_ago)
    assert credit.recently_changed_prompts(since=now - timedelta(minutes=20)) == [moved.pk]
    assert credit.sweep(now=now) == 1
    assert queued == [[moved.pk]]
    # A prompt closed lately counts whatever its samples did (its close message was lost).
    Prompt.objects.filter(pk=quiet.pk).update(closed_at=now - timedelta(minutes=5))
    assert credit.recently_changed_prompts(since=now - timedelta(minutes=20)) == [
        moved.pk,
        quiet.pk,
    ]


# --- settling again ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_settling_twice_writes_nothing_the_second_time():
    alice, bob = UserFactory(), UserFactory()
    prompts = [new_prompt() for _ in range(3)]
    for k, prompt in enumerate(prompts):
        add_samples(prompt, alice, VERIFIED, k + 1)
        add_samples(prompt, bob, REJECTED, 2)
    close(*prompts)
    ids = [p.pk for p in prompts]
    assert credit.settle_prompts(prompt_ids=ids) == 3
    before = list(CreditEntry.objects.values_list("pk", "points"))
    credits = list(PromptCredit.objects.values_list("pk", "verified", "points", "settled_at"))
    assert credit.settle_prompts(prompt_ids=ids) == 0
    assert credit.settle_prompts(prompt_ids=ids + ids) == 0
    assert call_command("settle_credit", "--all", stdout=StringIO()) is None
    assert list(CreditEntry.objects.values_list("pk", "points")) == before
    assert (
        list(PromptCredit.objects.values_list("pk", "verified", "points", "settled_at")) == credits
    )


@pytest.mark.django_db
def test_a_rescore_after_the_close_writes_the_difference(queued, monkeypatch):
    alice, bob, carol, dave = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    prompt = new_prompt()
    samples = [
        *add_samples(prompt, alice, RECEIVED, 2, completion=RIGHT),
        *add_samples(prompt, bob, RECEIVED, 1, completion=RIGHT),
    ]
    wrong = [
        Sample.objects.create(
            prompt=prompt,
            contributor=user,
            model="org/m",
            temperature=0.6,
            completion=f"{WRONG} ({user.pk})",
            finish_reason="stop",
        )
        for user in (carol, dave)
    ]
    for sample in [*samples, *wrong]:
        assert pipeline.score_sample(sample_id=sample.pk) is True
    close_prompts(prompt_ids=[prompt.pk])
    assert queued == [[prompt.pk]]
    credit.settle_prompts(prompt_ids=[prompt.pk])
    # Two of four contributors right: difficulty 0.5.
    assert credit_of(alice, prompt) == (2, 10.0)
    assert credit_of(bob, prompt) == (1, 5.0)

    # A new math verifier judges bob's sample wrong: the pipeline sends disclosed_changed.
    monkeypatch.setattr(type(REGISTRY["math"]), "version", REGISTRY["math"].version + 1)
    monkeypatch.setattr(type(REGISTRY["math"]), "verify", lambda *args: Outcome(Status.FAIL, 0.0))
    bobs = samples[2]
    assert pipeline.score_sample(sample_id=bobs.pk, rescore=True) is True
    assert Sample.objects.get(pk=bobs.pk).status == REJECTED
    # Twice: verified -> scoring (the rescore's claim), scoring -> rejected.
    assert queued == [[prompt.pk], [prompt.pk], [prompt.pk]]
    assert credit.settle_prompts(prompt_ids=queued[-1]) == 2
    # One of four right: difficulty 0.75. Alice's credit grows, bob's goes.
    assert credit_of(alice, prompt) == (2, 15.0)
    assert credit_of(bob, prompt) is None
    assert ledger(alice) == [
        (CreditKind.SAMPLES, 2, 10.0, prompt.pk),
        (CreditKind.SAMPLES, 0, 5.0, prompt.pk),
    ]
    assert ledger(bob) == [
        (CreditKind.SAMPLES, 1, 5.0, prompt.pk),
        (CreditKind.SAMPLES, -1, -5.0, prompt.pk),
    ]
    assert credit.settle_prompts(prompt_ids=[prompt.pk]) == 0


@pytest.mark.django_db
def test_settling_is_queued_on_commit_in_chunks(monkeypatch, django_capture_on_commit_callbacks):
    from contributors import tasks

    sent: list[list[int]] = []
    monkeypatch.setattr(
        tasks.settle_credit, "apply_async", lambda args, **kwargs: sent.append(args[0])
    )
    monkeypatch.setattr(credit, "SETTLE_CHUNK", 2)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        credit._settle_disclosed(sender=Prompt, prompt_ids=[5, 3, 1, 3, 4])
        assert sent == []  # nothing before the commit
    assert len(callbacks) == 1
    assert sent == [[1, 3], [4, 5]]


@pytest.mark.django_db
def test_a_broker_that_refuses_the_message_fails_nothing(
    monkeypatch, django_capture_on_commit_callbacks
):
    from contributors import tasks

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(tasks.settle_credit, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        credit.schedule_settle([1, 2])  # logged; the sweep catches up


@pytest.mark.django_db
def test_the_tasks_settle_and_refresh():
    from contributors import tasks
    from thinkpool.celery import app

    alice = UserFactory()
    prompt = new_prompt()
    add_samples(prompt, alice, VERIFIED, 1)
    add_samples(prompt, UserFactory(), REJECTED, 1)
    close(prompt)
    assert tasks.settle_credit([prompt.pk]) == 1
    assert tasks.refresh_leaderboard() == {"week": 1, "month": 1, "all": 1}
    assert getattr(tasks.settle_credit, "queue", None) == "maintenance"
    assert tasks.settle_credit.acks_late
    assert tasks.refresh_leaderboard.time_limit == 60
    beat = app.conf.beat_schedule
    assert beat["refresh-leaderboard"] == {
        "task": "contributors.refresh_leaderboard",
        "schedule": 60.0,
    }
    assert beat["sweep-credit"]["task"] == "contributors.sweep_credit"
    assert beat["sweep-credit"]["schedule"] == credit.SWEEP_EVERY_S


@pytest.mark.django_db
def test_the_command_needs_prompts_and_settles_the_ones_named():
    from django.core.management.base import CommandError

    alice = UserFactory()
    one, two = new_prompt(), new_prompt()
    for prompt in (one, two):
        add_samples(prompt, alice, VERIFIED, 1)
        add_samples(prompt, alice, REJECTED, 1)
    close(one, two)
    with pytest.raises(CommandError):
        call_command("settle_credit", stdout=StringIO())
    out = StringIO()
    call_command("settle_credit", "--prompt", str(one.pk), "--leaderboard", stdout=out)
    assert "1 prompts settled: 1 credit entries written." in out.getvalue()
    assert "Leaderboard rebuilt: week 1 rows, month 1 rows, all 1 rows." in out.getvalue()
    assert credit_of(alice, one) == (1, 5.0) and credit_of(alice, two) is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_settlers_of_one_prompt_write_its_credit_once(monkeypatch, queued):
    # Each settler dawdles between taking its locks and reading: without the prompts' locks
    # they would all read "nothing settled" and write the same credit four times.
    difficulties = credit.difficulties

    def slow(ids: Any) -> Any:
        time.sleep(0.3)
        return difficulties(ids)

    monkeypatch.setattr(credit, "difficulties", slow)
    alice, bob = UserFactory(), UserFactory()
    prompts = [new_prompt() for _ in range(4)]
    for prompt in prompts:
        add_samples(prompt, alice, VERIFIED, 2)
        add_samples(prompt, bob, REJECTED, 2)
    close(*prompts)  # settles nothing (`queued`: the tasks run eagerly in tests)
    assert CreditEntry.objects.count() == 0
    ids = [p.pk for p in prompts]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def settle(order: list[int]) -> None:
        try:
            barrier.wait()
            credit.settle_prompts(prompt_ids=order)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=settle, args=(order,))
        for order in (ids, ids[::-1], ids[1:], ids[:2])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert connection.vendor == "postgresql"
    assert CreditEntry.objects.count() == 4
    assert sorted(CreditEntry.objects.values_list("prompt_id", "verified", "points")) == [
        (pk, 2, 10.0) for pk in ids
    ]


# --- the leaderboard --------------------------------------------------------------------------


def entry(user: Any, points: float, *, verified: int = 0, age: timedelta = timedelta(0), **f: Any):
    return CreditEntry.objects.create(
        contributor=user,
        kind=f.pop("kind", CreditKind.SAMPLES),
        points=points,
        verified=verified,
        at=timezone.now() - age,
        **f,
    )


def board(period: str) -> list[tuple[int, str, float, int]]:
    return list(
        LeaderboardRow.objects.filter(period=period)
        .order_by("rank")
        .values_list("rank", "handle", "points", "verified")
    )


@pytest.mark.django_db
def test_periods_sum_the_entries_in_them():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    entry(alice, 5.0, verified=1)
    entry(alice, 30.0, verified=3, age=timedelta(days=10))  # month and all, not week
    entry(bob, 20.0, verified=2, age=timedelta(days=2))
    entry(bob, 100.0, verified=9, age=timedelta(days=40))  # all only
    assert credit.refresh_leaderboard() == {"week": 2, "month": 2, "all": 2}
    assert board("week") == [(1, "bob", 20.0, 2), (2, "alice", 5.0, 1)]
    assert board("month") == [(1, "alice", 35.0, 4), (2, "bob", 20.0, 2)]
    assert board("all") == [(1, "bob", 120.0, 11), (2, "alice", 35.0, 4)]
    computed = set(LeaderboardRow.objects.values_list("computed_at", flat=True))
    assert len(computed) == 1


@pytest.mark.django_db
def test_bounty_awards_count_and_a_refresh_replaces_the_board():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bounty = Bounty.objects.create(title="Hard geometry", reward_points=50)
    entry(alice, 10.0, verified=1)
    credit.refresh_leaderboard()
    assert board("week") == [(1, "alice", 10.0, 1)]
    entry(bob, 50.0, kind=CreditKind.BOUNTY, bounty=bounty)
    credit.refresh_leaderboard()
    assert board("week") == [(1, "bob", 50.0, 0), (2, "alice", 10.0, 1)]
    assert LeaderboardRow.objects.count() == 6


@pytest.mark.django_db
def test_banned_contributors_are_left_out_and_private_ones_are_anonymous():
    alice, bob, carol = (UserFactory(username=n) for n in ("alice", "bob", "carol"))
    Profile.objects.filter(user=bob).update(banned=True)
    Profile.objects.filter(user=carol).update(public_attribution=False)
    for user in (alice, bob, carol):
        entry(user, 10.0 if user != carol else 12.0, verified=1)
    credit.refresh_leaderboard()
    assert board("week") == [(1, "anonymous", 12.0, 1), (2, "alice", 10.0, 1)]
    assert LeaderboardRow.objects.filter(contributor=bob).count() == 0


@pytest.mark.django_db
def test_ties_go_to_who_reached_the_total_first_then_the_lower_user_id():
    first, second, third = UserFactory(), UserFactory(), UserFactory()
    # Same totals. `second` and `third` reached theirs at the same moment.
    at = timezone.now() - timedelta(hours=1)
    CreditEntry.objects.create(contributor=third, kind="samples", points=7.5, verified=1, at=at)
    CreditEntry.objects.create(contributor=second, kind="samples", points=7.5, verified=1, at=at)
    entry(first, 2.5, verified=1, age=timedelta(hours=5))
    entry(first, 5.0, verified=1, age=timedelta(hours=3))
    # Sums that differ only in float rounding are a tie too (0.1 + 0.2 != 0.3).
    fourth, fifth = UserFactory(), UserFactory()
    entry(fourth, 0.1, age=timedelta(hours=2))
    entry(fourth, 0.2, verified=1, age=timedelta(hours=2))
    entry(fifth, 0.3, verified=1, age=timedelta(hours=3))
    credit.refresh_leaderboard()
    ranked = list(
        LeaderboardRow.objects.filter(period="week").order_by("rank").values_list("contributor")
    )
    assert [pk for (pk,) in ranked] == [first.pk, second.pk, third.pk, fifth.pk, fourth.pk]
    assert second.pk < third.pk


@pytest.mark.django_db
def test_nothing_earned_or_credit_taken_back_in_a_period_is_not_listed():
    alice, bob, carol = UserFactory(), UserFactory(), UserFactory()
    entry(alice, 10.0, verified=1, age=timedelta(days=20))
    entry(alice, -4.0, verified=-1)  # a rescore this week: negative in the week
    entry(bob, 5.0, verified=1)
    entry(bob, -5.0, verified=-1)  # credited and taken back: nothing
    entry(carol, 0.0, verified=2)  # verified samples of prompts every sample passes
    credit.refresh_leaderboard()
    assert [r[1:] for r in board("week")] == [(carol.username, 0.0, 2)]
    assert [r[1:] for r in board("all")] == [(alice.username, 6.0, 0), (carol.username, 0.0, 2)]


@pytest.mark.django_db
def test_the_board_is_at_most_its_size():
    users = [UserFactory() for _ in range(5)]
    for k, user in enumerate(users):
        entry(user, float(k + 1), verified=1)
    top = credit.standings(period="week", limit=3)
    assert [s.contributor_id for s in top] == [users[4].pk, users[3].pk, users[2].pk]


# --- reads and pages --------------------------------------------------------------------------


@pytest.mark.django_db
def test_credit_history_totals_ranks_and_pages(client, monkeypatch):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bounty = Bounty.objects.create(title="<b>Proofs</b> wanted", reward_points=50)
    entry(alice, 10.0, verified=2, age=timedelta(days=10))
    entry(alice, 2.5, verified=1)
    entry(alice, 50.0, kind=CreditKind.BOUNTY, bounty=bounty, age=timedelta(days=40))
    entry(bob, 100.0, verified=5)
    credit.refresh_leaderboard()
    assert selectors.credit_totals(user=alice) == {
        "week": {"points": 2.5, "verified": 1},
        "month": {"points": 12.5, "verified": 3},
        "all": {"points": 62.5, "verified": 3},
    }
    assert selectors.credit_ranks(user=alice) == {"week": 2, "month": 2, "all": 2}
    assert selectors.credit_ranks(user=UserFactory()) == {"week": None, "month": None, "all": None}

    url = reverse("credit-history")
    assert url == "/leaderboard/me/"
    response = client.get(url)
    assert response.status_code == 302 and "login" in response["Location"]
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert "&lt;b&gt;Proofs&lt;/b&gt; wanted" in body and "<b>Proofs</b>" not in body
    assert f'href="/bounties/{bounty.pk}/"' in body
    assert "+62.50" not in body and "62.50" in body
    rows = response.context["entries"]
    assert [(r["entry"].points, r["entry"].kind) for r in rows] == [
        (2.5, "samples"),
        (10.0, "samples"),
        (50.0, "bounty"),
    ]
    assert "bob" not in body  # only one's own entries

    monkeypatch.setattr(selectors, "HISTORY_PAGE_SIZE", 2)
    second = client.get(url, {"page": 2})
    assert [r["entry"].points for r in second.context["entries"]] == [50.0]
    assert [r["entry"].points for r in client.get(url, {"page": 99}).context["entries"]] == [50.0]


@pytest.mark.django_db
def test_the_leaderboard_page_reads_the_precomputed_rows(
    client, settings, django_assert_num_queries
):
    settings.THINKPOOL_CREDIT = {"points_per_sample": 7, "cap_per_prompt": 3}
    alice = UserFactory(username="alice")
    Profile.objects.filter(user=alice).update(handle="<script>x</script>")
    entry(alice, 12.345, verified=2)
    entry(alice, 1.0, verified=1, age=timedelta(days=10))
    credit.refresh_leaderboard()
    with django_assert_num_queries(1):
        response = client.get(reverse("leaderboard"))
    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("leaderboard") == "/leaderboard/"
    assert response.context["period"] == "week"
    assert '<span id="points-per-sample">7</span>' in body
    assert '<span id="cap-per-prompt">3</span>' in body
    assert "&lt;script&gt;x&lt;/script&gt;" in body and "<script>x" not in body
    assert "12.35" in body
    month = client.get(reverse("leaderboard"), {"period": "month"})
    assert month.context["period"] == "month" and "13.35" in month.content.decode()
    assert client.get(reverse("leaderboard"), {"period": "year"}).context["period"] == "week"
    # The ledger is never read for the board.
    CreditEntry.objects.all().delete()
    assert "13.35" in client.get(reverse("leaderboard"), {"period": "all"}).content.decode()


@pytest.mark.django_db
def test_a_copy_flagged_after_the_close_is_settled_again(queued):
    from scoring.selection import mark_duplicates

    alice, mallory = UserFactory(), UserFactory()
    prompt = new_prompt()
    add_samples(prompt, alice, VERIFIED, 1)
    add_samples(prompt, mallory, VERIFIED, 1)  # the same text: a copy of alice's
    add_samples(prompt, UserFactory(), REJECTED, 1)
    close(prompt)
    queued.clear()
    credit.settle_prompts(prompt_ids=[prompt.pk])
    assert credit_of(mallory, prompt) is not None

    assert mark_duplicates(prompt) == 1
    assert queued == [[prompt.pk]]  # the flag moved: the prompt is settled again
    credit.settle_prompts(prompt_ids=queued[-1])
    assert credit_of(mallory, prompt) is None
    assert credit_of(alice, prompt) == (1, 5.0)
    # Flagging again changes nothing and asks for nothing.
    assert mark_duplicates(prompt) == 1
    assert queued == [[prompt.pk]]

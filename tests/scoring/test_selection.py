"""Ranking and selection rules, with exact expected selections on small hand-built data."""

from __future__ import annotations

import itertools

import pytest

from contributors.models import Profile
from scoring import stats
from scoring.models import (
    PreferencePair,
    PromptModelStats,
    RewardScore,
    Sample,
    SampleStatus,
    Selection,
    SelectionKind,
)
from scoring.selection import Candidate, Policy, pick, rank_key, rebuild_prompt
from tests.factories import PromptFactory, UserFactory

V, R = SampleStatus.VERIFIED, SampleStatus.REJECTED
_ids = itertools.count(1)


def c(status: str, *, tokens: int = 100, reward: float | None = None, model: str = "o/a"):
    return Candidate(id=next(_ids), model=model, status=status, tokens=tokens, reward=reward)


def test_rank_correct_first_then_reward_then_fewer_tokens_then_older():
    wrong_high = c(R, reward=9.0)
    right_low = c(V, reward=1.0)
    right_high_long = c(V, reward=2.0, tokens=500)
    right_high_short = c(V, reward=2.0, tokens=50)
    right_none = c(V, reward=None, tokens=10)
    ranked = sorted(
        [wrong_high, right_none, right_low, right_high_long, right_high_short], key=rank_key
    )
    assert ranked == [right_high_short, right_high_long, right_low, right_none, wrong_high]


def test_sft_takes_up_to_k_verified_best_first():
    samples = [c(V, tokens=t) for t in (300, 100, 200)] + [c(R, tokens=10)]
    picks = pick(samples, {}, Policy(sft_k=2))
    assert [s.tokens for s in picks.sft] == [100, 200]


def test_no_verified_sample_means_no_sft_and_no_pair():
    picks = pick([c(R), c(R)], {"o/a": 0.0}, Policy())
    assert (picks.sft, picks.pairs) == ([], [])


def test_pair_rejects_the_worst_incorrect_sample_of_the_same_model_when_there_is_one():
    best = c(V, tokens=10)
    other_model_wrong = c(R, tokens=1, model="o/b")
    wrong_short = c(R, tokens=20)
    wrong_long = c(R, tokens=900)
    picks = pick([best, other_model_wrong, wrong_short, wrong_long], {}, Policy())
    assert picks.pairs == [(best, wrong_long, 1.0)]


def test_pair_falls_back_to_another_models_incorrect_sample():
    best = c(V)
    other = c(R, model="o/b")
    assert pick([best, other], {}, Policy()).pairs == [(best, other, 1.0)]


def test_pair_without_incorrect_samples_uses_the_lowest_reward_and_its_margin():
    best = c(V, reward=1.5)
    mid = c(V, reward=0.5)
    low = c(V, reward=-1.0)
    picks = pick([mid, low, best], {}, Policy(reward_model="rm"))
    assert picks.pairs == [(best, low, 2.5)]


def test_rl_prompts_have_pass_rates_strictly_between_the_bounds():
    rates = {"o/easy": 1.0, "o/top": 0.9, "o/mid": 0.5, "o/low": 0.1, "o/hard": 0.0, "o/none": None}
    assert pick([], rates, Policy()).rl_models == ["o/mid"]
    assert pick([], rates, Policy(rl_low=0.0, rl_high=1.0)).rl_models == ["o/low", "o/mid", "o/top"]


def test_the_policy_says_when_it_ranks_without_a_reward_model():
    assert Policy().label == "r1-rejection-no-reward"
    assert Policy(reward_model="Skywork/Skywork-Reward-V2-Qwen3-0.6B").label == "r1-rejection"


# --- against the database ---------------------------------------------------------------------


def _sample(prompt, status, *, model="o/a", tokens=100, **fields) -> Sample:
    return Sample.objects.create(
        prompt=prompt,
        contributor=fields.pop("contributor", None) or UserFactory(),
        model=model,
        temperature=0.6,
        completion="x" * tokens,
        completion_tokens=tokens,
        finish_reason="stop",
        status=status,
        **fields,
    )


@pytest.mark.django_db
def test_rebuild_stores_exact_selections_and_pairs_and_best_sample():
    prompt = PromptFactory()
    a1 = _sample(prompt, V, tokens=50)
    a2 = _sample(prompt, V, tokens=80)
    a3 = _sample(prompt, R, tokens=30)
    b1 = _sample(prompt, R, model="o/b")
    stats.recompute(prompt_ids=[prompt.pk])
    policy = Policy(sft_k=4)
    rebuild_prompt(prompt_id=prompt.pk, policy=policy)
    sft = Selection.objects.filter(kind=SelectionKind.SFT).order_by("rank")
    assert [(s.sample_id, s.rank, s.policy, s.policy_version) for s in sft] == [
        (a1.pk, 0, "r1-rejection-no-reward", 1),
        (a2.pk, 1, "r1-rejection-no-reward", 1),
    ]
    # o/a passes 2 of 3 (0.67: it still teaches); o/b 0 of 1.
    rl = Selection.objects.filter(kind=SelectionKind.RL)
    assert list(rl.values_list("model", "sample")) == [("o/a", None)]
    assert list(PreferencePair.objects.values_list("chosen", "rejected", "margin")) == [
        (a1.pk, a3.pk, 1.0)
    ]
    best = dict(PromptModelStats.objects.values_list("model", "best_sample"))
    assert best == {"o/a": a1.pk, "o/b": None}
    # Rebuilding changes nothing, and stores nothing twice.
    rebuild_prompt(prompt_id=prompt.pk, policy=policy)
    assert Selection.objects.count() == 3 and PreferencePair.objects.count() == 1
    assert b1.pk not in set(Selection.objects.values_list("sample", flat=True))


@pytest.mark.django_db
def test_held_back_samples_leave_every_selection():
    prompt = PromptFactory()
    banned_user = UserFactory()
    keep = _sample(prompt, V, tokens=90)
    quarantined = _sample(prompt, V, tokens=10, quarantined=True)
    duplicate = _sample(prompt, V, tokens=20)
    Sample.objects.filter(pk=duplicate.pk).update(completion=keep.completion)
    banned = _sample(prompt, V, tokens=30, contributor=banned_user)
    Profile.objects.filter(user=banned_user).update(banned=True)
    rebuild_prompt(prompt_id=prompt.pk, policy=Policy())
    assert list(Selection.objects.filter(kind="sft").values_list("sample", flat=True)) == [keep.pk]
    assert {quarantined.pk, duplicate.pk, banned.pk}.isdisjoint(
        set(Selection.objects.values_list("sample", flat=True))
    )


@pytest.mark.django_db
def test_a_rejudged_sample_moves_out_of_the_selection_on_rebuild():
    prompt = PromptFactory()
    first = _sample(prompt, V, tokens=10)
    second = _sample(prompt, V, tokens=20)
    rebuild_prompt(prompt_id=prompt.pk, policy=Policy())
    Sample.objects.filter(pk=first.pk).update(status=R)
    rebuild_prompt(prompt_id=prompt.pk, policy=Policy())
    assert list(Selection.objects.filter(kind="sft").values_list("sample", flat=True)) == [
        second.pk
    ]
    assert list(PreferencePair.objects.values_list("chosen", "rejected")) == [(second.pk, first.pk)]


@pytest.mark.django_db
def test_a_contaminated_prompt_is_in_no_selection():
    prompt = PromptFactory()
    _sample(prompt, V)
    _sample(prompt, R)
    prompt.contaminated = True
    prompt.save(update_fields=["contaminated"])
    stats.recompute(prompt_ids=[prompt.pk])
    picks = rebuild_prompt(prompt_id=prompt.pk, policy=Policy())
    assert (picks.sft, picks.pairs, picks.rl_models) == ([], [], [])
    assert Selection.objects.count() == PreferencePair.objects.count() == 0


@pytest.mark.django_db
def test_rewards_of_the_policys_model_and_version_order_the_picks():
    prompt = PromptFactory()
    short = _sample(prompt, V, tokens=10)
    long = _sample(prompt, V, tokens=500)
    RewardScore.objects.create(sample=short, reward_model="rm", version=1, raw=0.1, normalised=-1.0)
    RewardScore.objects.create(sample=long, reward_model="rm", version=1, raw=0.9, normalised=1.0)
    # Another version's scores are not used.
    RewardScore.objects.create(sample=short, reward_model="rm", version=2, raw=9, normalised=9)
    picks = rebuild_prompt(prompt_id=prompt.pk, policy=Policy(reward_model="rm", reward_version=1))
    assert [p.id for p in picks.sft] == [long.pk, short.pk]
    assert [(c.id, r.id, m) for c, r, m in picks.pairs] == [(long.pk, short.pk, 2.0)]


@pytest.mark.django_db
def test_stats_move_with_every_status_change_and_match_a_recompute():
    prompt = PromptFactory()
    s1 = _sample(prompt, SampleStatus.RECEIVED)
    s2 = _sample(prompt, SampleStatus.RECEIVED)
    stats.samples_stored([(prompt.pk, "o/a"), (prompt.pk, "o/a")])
    stats.record_moves([(s1.pk, "received", "scoring"), (s1.pk, "scoring", "verified")])
    stats.record_moves([(s2.pk, "scoring", "rejected")])
    row = PromptModelStats.objects.get(prompt=prompt, model="o/a")
    assert (row.samples, row.judged, row.verified, row.pass_rate) == (2, 2, 1, 0.5)
    assert row.difficulty == 0.5
    # Re-judged: rejected -> received -> verified.
    stats.record_moves([(s2.pk, "rejected", "received"), (s2.pk, "received", "verified")])
    Sample.objects.filter(pk=s1.pk).update(status=V)
    Sample.objects.filter(pk=s2.pk).update(status=V)
    row.refresh_from_db()
    assert (row.samples, row.judged, row.verified) == (2, 2, 2)
    stats.recompute(prompt_ids=[prompt.pk])
    row.refresh_from_db()
    assert (row.samples, row.judged, row.verified) == (2, 2, 2)


@pytest.mark.django_db
def test_build_selections_rebuilds_stats_and_selections_from_scratch():
    from io import StringIO

    from django.core.management import call_command

    prompt = PromptFactory()
    a = _sample(prompt, V, tokens=5)
    _sample(prompt, R)
    out = StringIO()
    call_command("build_selections", "--stats", stdout=out)
    assert "1 prompts under r1-rejection-no-reward v1: 1 SFT samples, 1 preference pairs, " in (
        out.getvalue()
    )
    assert list(Selection.objects.filter(kind="sft").values_list("sample", flat=True)) == [a.pk]
    assert PromptModelStats.objects.get(prompt=prompt).pass_rate == 0.5


@pytest.mark.django_db
def test_difficulty_is_shown_in_the_api_only_once_the_prompt_is_closed(api):
    from django.utils import timezone

    prompt = PromptFactory()
    _sample(prompt, V)
    _sample(prompt, R)
    _sample(prompt, R)
    stats.recompute(prompt_ids=[prompt.pk])
    body = api.get(f"/api/v1/prompts/{prompt.pk}/difficulty/").json()
    assert body == {"prompt": prompt.pk, "disclosed": False, "models": []}
    prompt.closed_at = timezone.now()
    prompt.save(update_fields=["closed_at"])
    body = api.get(f"/api/v1/prompts/{prompt.pk}/difficulty/").json()
    assert body["disclosed"] is True
    (row,) = body["models"]
    assert (row["model"], row["judged"], row["verified"]) == ("o/a", 3, 1)
    assert row["pass_rate"] == pytest.approx(1 / 3)
    assert row["difficulty"] == pytest.approx(2 / 3)
    assert api.get("/api/v1/prompts/999999/difficulty/").status_code == 404


@pytest.mark.django_db
def test_a_settling_sample_schedules_one_debounced_rebuild_which_rebuilds(
    monkeypatch, django_capture_on_commit_callbacks
):
    from scoring import tasks

    sent: list[tuple] = []
    monkeypatch.setattr(
        tasks.rebuild_selections, "apply_async", lambda args, **kw: sent.append((args, kw))
    )
    prompt = PromptFactory()
    sample = _sample(prompt, SampleStatus.SCORING)
    with django_capture_on_commit_callbacks(execute=True):
        stats.record_moves([(sample.pk, "scoring", "verified")])
    with django_capture_on_commit_callbacks(execute=True):
        stats.record_moves([(sample.pk, "verified", "rejected")])
    assert [(args, kw["countdown"]) for args, kw in sent] == [
        ((prompt.pk,), tasks.REBUILD_DEBOUNCE_S)
    ]
    Sample.objects.filter(pk=sample.pk).update(status=V)
    assert tasks.rebuild_selections(prompt.pk) == 1
    assert list(Selection.objects.values_list("sample", flat=True)) == [sample.pk]
    # The task cleared the key: the next change schedules again.
    with django_capture_on_commit_callbacks(execute=True):
        stats.record_moves([(sample.pk, "verified", "rejected")])
    assert len(sent) == 2


@pytest.mark.django_db
def test_sft_messages_put_the_reasoning_in_a_think_block_before_the_answer():
    from scoring.selection import sft_messages

    prompt = PromptFactory(messages=[{"role": "user", "content": "2+2?"}])
    split = _sample(prompt, V, reasoning="  two and two  ")
    split.completion = "It is \\boxed{4}."
    inline = _sample(prompt, V)
    inline.completion = "<think>2+2</think> \\boxed{4}"
    assert sft_messages(split) == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\ntwo and two\n</think>\n\nIt is \\boxed{4}."},
    ]
    # However the server returned the reasoning (inline, or only the closing tag because the
    # chat template opened the block), the record has one shape.
    assert sft_messages(inline)[-1] == {
        "role": "assistant",
        "content": "<think>\n2+2\n</think>\n\n\\boxed{4}",
    }
    inline.completion = "2+2</think>\\boxed{4}"
    assert sft_messages(inline)[-1]["content"] == "<think>\n2+2\n</think>\n\n\\boxed{4}"


SOLUTION = (
    "We pair the numbers from both ends of the list so that each pair sums to one hundred "
    "and one, and there are fifty such pairs in total, which gives the answer five thousand "
    "and fifty after multiplying the pair sum by the number of pairs we have formed here."
)


@pytest.mark.django_db
def test_copies_of_an_earlier_sample_leave_the_selection_and_the_first_stays():
    prompt = PromptFactory()
    first = _sample(prompt, V, tokens=60)
    exact = _sample(prompt, V, tokens=10)
    near = _sample(prompt, V, tokens=20)
    own = _sample(prompt, V, tokens=30)
    Sample.objects.filter(pk=first.pk).update(completion=SOLUTION)
    Sample.objects.filter(pk=exact.pk).update(completion="  " + SOLUTION.upper() + "\n")
    Sample.objects.filter(pk=near.pk).update(completion=SOLUTION.replace("formed", "made"))
    Sample.objects.filter(pk=own.pk).update(
        completion="By induction, the sum of the first n integers is n(n+1)/2, so 5050."
    )
    picks = rebuild_prompt(prompt_id=prompt.pk, policy=Policy())
    assert sorted(p.id for p in picks.sft) == sorted([first.pk, own.pk])
    assert dict(Sample.objects.filter(prompt=prompt).values_list("pk", "duplicate_of")) == {
        first.pk: None,
        exact.pk: first.pk,
        near.pk: first.pk,
        own.pk: None,
    }
    # The first is quarantined: its copies are judged again, the earliest of them now kept.
    Sample.objects.filter(pk=first.pk).update(quarantined=True)
    picks = rebuild_prompt(prompt_id=prompt.pk, policy=Policy())
    assert sorted(p.id for p in picks.sft) == sorted([exact.pk, own.pk])
    assert Sample.objects.get(pk=near.pk).duplicate_of_id == exact.pk


@pytest.mark.django_db
def test_banning_in_the_admin_schedules_the_rebuild_of_the_contributors_prompts(
    admin_client, monkeypatch, django_capture_on_commit_callbacks
):
    from scoring import tasks

    sent: list[int] = []
    monkeypatch.setattr(
        tasks.rebuild_selections, "apply_async", lambda args, **kw: sent.append(args[0])
    )
    user = UserFactory()
    prompts = [PromptFactory(), PromptFactory()]
    for prompt in prompts:
        _sample(prompt, V, contributor=user)
    profile = Profile.objects.get(user=user)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/contributors/profile/{profile.pk}/change/",
            {
                "user": user.pk,
                "handle": profile.handle,
                "hf_username": "",
                "public_attribution": "on",
                "banned": "on",
            },
        )
    assert response.status_code == 302, response.content[:500]
    assert sorted(sent) == sorted(p.pk for p in prompts)


@pytest.mark.django_db
def test_rl_pass_rates_count_only_samples_that_may_be_published():
    prompt = PromptFactory()
    _sample(prompt, V, tokens=10)
    _sample(prompt, R, tokens=20)
    # A banned contributor's wrong answers would pull o/a's rate to 1/8 (below the band): they
    # must not decide whose gold goes out as an RL prompt.
    banned = UserFactory()
    for tokens in range(30, 36):
        _sample(prompt, R, tokens=tokens, contributor=banned)
    Profile.objects.filter(user=banned).update(banned=True)
    stats.recompute(prompt_ids=[prompt.pk])
    assert PromptModelStats.objects.get(prompt=prompt).pass_rate == 1 / 8
    picks = rebuild_prompt(prompt_id=prompt.pk, policy=Policy())
    assert picks.rl_models == ["o/a"]

"""Reward scores in the dataset: configured models, stored raw and per-prompt normalised
scores, and the ranking that uses them (with a tiny reward model built locally)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from scoring import tasks
from scoring.models import RewardScore, Sample, SampleStatus, Selection
from scoring.rewards import service
from scoring.selection import configured_policy
from tests.factories import PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def reward_model(settings):
    pytest.importorskip("torch")
    from tests.fixtures.tiny_reward_model import tiny_reward_model_dir

    path = str(tiny_reward_model_dir())
    settings.THINKPOOL_REWARD_MODELS = [f"{path}@3"]
    return path


def _sample(prompt, status, text: str) -> Sample:
    return Sample.objects.create(
        prompt=prompt,
        contributor=UserFactory(),
        model="o/a",
        temperature=0.6,
        completion=text,
        completion_tokens=len(text.split()),
        finish_reason="stop",
        status=status,
    )


def test_configured_models_are_model_at_version(settings):
    settings.THINKPOOL_REWARD_MODELS = ["org/rm@2", "/models/local-rm@10"]
    assert service.configured() == [
        service.RewardModelRef("org/rm", 2),
        service.RewardModelRef("/models/local-rm", 10),
    ]
    settings.THINKPOOL_REWARD_MODELS = ["org/rm"]
    with pytest.raises(ImproperlyConfigured):
        service.configured()


def test_without_reward_models_the_policy_says_it_ranks_without_one(settings):
    settings.THINKPOOL_REWARD_MODELS = []
    assert configured_policy().label == "r1-rejection-no-reward"


def test_rewards_are_stored_normalised_per_prompt_and_used_by_the_ranking(
    reward_model, monkeypatch
):
    rebuilt: list[int] = []
    monkeypatch.setattr(
        tasks.rebuild_selections, "apply_async", lambda args, **kw: rebuilt.append(args[0])
    )
    prompt = PromptFactory()
    samples = [
        _sample(prompt, SampleStatus.VERIFIED, text)
        for text in ("The answer is 4.", "Two plus two: four, so \\boxed{4}.", "It is 4")
    ]
    ids = [s.pk for s in samples]
    # The rebuild asks for scores first (the gpu queue), and rebuilds nothing yet.
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.score_rewards, "apply_async", lambda args, **kw: sent.append(args))
    assert tasks.rebuild_selections(prompt.pk) == 0
    assert sent == [(ids, reward_model, 3)]
    assert tasks.score_rewards(ids, reward_model, 3) == 1
    assert rebuilt == [prompt.pk]
    rows = RewardScore.objects.filter(sample_id__in=ids, reward_model=reward_model, version=3)
    assert rows.count() == 3
    normalised = sorted(rows.values_list("normalised", flat=True))
    assert sum(normalised) == pytest.approx(0.0, abs=1e-9)
    # Scored again: nothing new, nothing twice.
    assert tasks.score_rewards(ids, reward_model, 3) == 0
    assert RewardScore.objects.count() == 3
    # With every sample scored, the rebuild ranks by the reward.
    assert tasks.rebuild_selections(prompt.pk) == 3
    best = max(rows, key=lambda r: r.normalised)
    top = Selection.objects.get(kind="sft", rank=0)
    assert (top.sample_id, top.policy) == (best.sample_id, "r1-rejection")

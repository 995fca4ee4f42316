"""Reward scores in the dataset: which reward models are configured, scoring samples with them
(RewardScore rows), and the per-prompt normalised values the ranking uses.

Configured by THINKPOOL_REWARD_MODELS: `model@version` entries (a Hugging Face id or a local
path; e.g. `Skywork/Skywork-Reward-V2-Qwen3-0.6B@1`). The first is the one the ranking policy
uses; none (the embedded default) means ranking by correctness and length alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from scoring.models import RewardScore, Sample


@dataclass(frozen=True)
class RewardModelRef:
    model: str
    version: int


def configured() -> list[RewardModelRef]:
    refs = []
    for entry in getattr(settings, "THINKPOOL_REWARD_MODELS", []):
        model, _, version = str(entry).rpartition("@")
        if not model or not version.isdigit():
            raise ImproperlyConfigured(
                f"THINKPOOL_REWARD_MODELS: {entry!r} is not `model@version` (e.g. org/rm@1)."
            )
        refs.append(RewardModelRef(model=model, version=int(version)))
    return refs


def unscored(sample_ids: Sequence[int], ref: RewardModelRef) -> list[int]:
    done = set(
        RewardScore.objects.filter(
            sample_id__in=sample_ids, reward_model=ref.model, version=ref.version
        ).values_list("sample_id", flat=True)
    )
    return [pk for pk in sample_ids if pk not in done]


def score_samples(*, sample_ids: Sequence[int], ref: RewardModelRef) -> list[int]:
    """Scores the samples not yet scored by `ref` (the model loads once per process), stores
    the raw scores, and renormalises their prompts. Returns the prompts touched."""
    from scoring.rewards.scorer import RewardInput, RewardScorer

    todo = unscored(sample_ids, ref)
    samples = list(
        Sample.objects.filter(pk__in=todo).select_related("prompt__prompt_set").order_by("pk")
    )
    if not samples:
        return []
    scorer = RewardScorer(ref.model, version=ref.version)
    results = scorer.score(
        RewardInput(
            key=s.pk,
            messages=s.prompt.prompt_set.render_messages(s.prompt.messages),
            response=s.completion,
            reasoning=s.reasoning or None,
        )
        for s in samples
    )
    prompts = {s.pk: s.prompt_id for s in samples}
    with transaction.atomic():
        RewardScore.objects.bulk_create(
            [
                RewardScore(
                    sample_id=int(r.key),  # type: ignore[call-overload]
                    reward_model=ref.model,
                    version=ref.version,
                    raw=r.raw,
                    tokens=r.tokens,
                    truncated=r.truncated,
                )
                for r in results
            ],
            update_conflicts=True,
            unique_fields=["sample", "reward_model", "version"],
            update_fields=["raw", "tokens", "truncated"],
        )
        touched = sorted(set(prompts.values()))
        normalise(prompt_ids=touched, ref=ref)
    return touched


def normalise(*, prompt_ids: Sequence[int], ref: RewardModelRef) -> None:
    """Recomputes the per-prompt normalised values of `ref`'s scores for these prompts
    (O(samples of the prompt): raw scores compare only within a prompt)."""
    from scoring.rewards.scorer import normalise_per_prompt

    rows = RewardScore.objects.filter(
        sample__prompt_id__in=prompt_ids, reward_model=ref.model, version=ref.version
    ).values_list("pk", "sample__prompt_id", "raw")
    by_prompt: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for pk, prompt_id, raw in rows:
        by_prompt[prompt_id].append((pk, raw))
    values = normalise_per_prompt({p: [raw for _, raw in v] for p, v in by_prompt.items()})
    for prompt_id, entries in by_prompt.items():
        for (pk, _), value in zip(entries, values[prompt_id], strict=True):
            RewardScore.objects.filter(pk=pk).update(normalised=value)

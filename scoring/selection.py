"""Ranking and selection: which samples are best, which prompts still teach.

Per prompt, samples are ranked (Policy.rank_key): rule-based correctness first (verified),
then the reward (per-prompt normalised score of the policy's reward model, when one is
configured and has scored the sample), then fewer completion tokens, then the earlier sample.
With no reward model the ranking falls back to correctness and length, and the policy name
says so (`…-no-reward`).

From the ranking, per prompt:
- SFT: best-of-n rejection sampling: up to `sft_k` verified samples;
- preference pairs: chosen = the best verified sample; rejected = the worst incorrect one
  (status rejected), else, with rewards, the lowest-reward sample below it; the rejected one is
  taken from the chosen one's model when it has one, else from any model;
- RL prompts: each (prompt, model) whose pass rate lies strictly between `rl_low` and
  `rl_high` (open-r1's pass-rate filter): those still teach.

Never eligible: samples quarantined, from a banned contributor, duplicates of another sample
(`duplicate_of`), or of a contaminated prompt (the whole prompt is left out). A re-judged
sample moves with its new status the next time its prompt is rebuilt (`rebuild_prompt`, run
after each status change, debounced, and by `manage.py build_selections`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Q

from scoring.models import (
    PreferencePair,
    Prompt,
    PromptModelStats,
    RewardScore,
    Sample,
    SampleStatus,
    Selection,
    SelectionKind,
)
from scoring.signals import disclosed_changed

# The first key of the advisory locks rebuild_prompt takes (the second is the prompt id).
REBUILD_LOCK_CLASS = 0x7470  # "tp"


@dataclass(frozen=True)
class Policy:
    name: str = "r1-rejection"
    version: int = 1
    sft_k: int = 4
    rl_low: float = 0.1
    rl_high: float = 0.9
    reward_model: str | None = None
    reward_version: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.reward_model else f"{self.name}-no-reward"


def configured_policy() -> Policy:
    """The policy the settings name (THINKPOOL_SELECTION), over the defaults above."""
    from django.conf import settings

    from scoring.rewards.service import configured

    overrides: dict[str, Any] = dict(getattr(settings, "THINKPOOL_SELECTION", {}))
    rewards = configured()
    if rewards:
        overrides.setdefault("reward_model", rewards[0].model)
        overrides.setdefault("reward_version", rewards[0].version)
    return Policy(**overrides)


@dataclass(frozen=True)
class Candidate:
    """What the ranking needs of one sample."""

    id: int
    model: str
    status: str
    tokens: int
    reward: float | None = None

    @property
    def correct(self) -> bool:
        return self.status == SampleStatus.VERIFIED


def rank_key(c: Candidate) -> tuple[Any, ...]:
    """Sorts best first: correct, higher reward (none counts as lowest), fewer tokens, older."""
    reward = c.reward if c.reward is not None else -math.inf
    return (not c.correct, -reward, c.tokens, c.id)


@dataclass
class PromptPicks:
    sft: list[Candidate] = field(default_factory=list)
    pairs: list[tuple[Candidate, Candidate, float]] = field(default_factory=list)
    rl_models: list[str] = field(default_factory=list)


def pick(
    candidates: Sequence[Candidate], pass_rates: dict[str, float | None], policy: Policy
) -> PromptPicks:
    """The selections of one prompt from its eligible, settled candidates and its per-model
    pass rates. Pure: the exact rules, tested on hand-built data."""
    ranked = sorted(candidates, key=rank_key)
    picks = PromptPicks()
    picks.sft = [c for c in ranked if c.correct][: policy.sft_k]
    if picks.sft:
        chosen = picks.sft[0]
        wrong = [c for c in ranked if c.status == SampleStatus.REJECTED]
        below = [
            c
            for c in ranked
            if c.id != chosen.id
            and c.reward is not None
            and chosen.reward is not None
            and c.reward < chosen.reward
        ]
        for pool in (wrong, below):
            same_model = [c for c in pool if c.model == chosen.model]
            source = same_model or pool
            if source:
                rejected = source[-1]  # the worst of them
                picks.pairs.append((chosen, rejected, _margin(chosen, rejected)))
                break
    picks.rl_models = sorted(
        model
        for model, rate in pass_rates.items()
        if rate is not None and policy.rl_low < rate < policy.rl_high
    )
    return picks


def _margin(chosen: Candidate, rejected: Candidate) -> float:
    if chosen.reward is not None and rejected.reward is not None:
        return chosen.reward - rejected.reward
    return 1.0  # correct over incorrect, with no reward to say by how much


def settled_q(prefix: str = "", *, replicas: bool = False) -> Q:
    """A sample (reached by `prefix`, e.g. "sample__") that is judged and not held back
    (quarantined, banned or deactivated contributor) and is data (not a spot check's replica,
    unless `replicas`): what selections and releases are made of."""
    data = Q() if replicas else Q(**{f"{prefix}replica": False})
    return (
        Q(**{f"{prefix}status__in": [SampleStatus.VERIFIED, SampleStatus.REJECTED]})
        & Q(**{f"{prefix}quarantined": False})
        & data
        & ~Q(**{f"{prefix}contributor__profile__banned": True})
        & ~Q(**{f"{prefix}contributor__is_active": False})
    )


def settled_samples(samples: Any) -> Any:
    """Of `samples`, the settled ones (settled_q)."""
    return samples.filter(settled_q())


def settled(prompt: Prompt) -> Any:
    """The prompt's judged samples that are not held back (quarantined, banned contributor)."""
    return settled_samples(Sample.objects.filter(prompt=prompt))


def eligible(prompt: Prompt) -> Any:
    """The prompt's samples that may be selected: settled, not held back, not a duplicate."""
    return settled(prompt).filter(duplicate_of__isnull=True)


def mark_duplicates(prompt: Prompt) -> int:
    """Flags the prompt's settled samples that copy an earlier one, exactly or nearly
    (scoring.dedup: MinHash over 5-word shingles, Jaccard 0.8); the earliest stored sample of a
    cluster is kept. Recomputed from the samples each time, so a kept sample that leaves (a
    quarantine, a ban) lets its copies be judged again. Returns how many are flagged.

    A duplicate whose kept original belongs to another contributor is also a copy: it gets a
    `copy` Flag with the evidence (scoring/flags.py: raised once, refreshed while open, marked
    resolved when it no longer holds). A duplicate of one's own sample is only a duplicate."""
    from scoring.dedup import NearDuplicateIndex, text_signature
    from scoring.flags import sync_copy_flags

    index: NearDuplicateIndex[int] = NearDuplicateIndex()
    wanted: dict[int, int | None] = {}
    current: dict[int, int | None] = {}
    kept: dict[int, tuple[Any, int, str, float]] = {}  # signature, contributor, model, temp
    copies: dict[int, dict[str, Any]] = {}
    # Spot checks' replicas are checked too (a replica copying its original would agree with
    # it), after every data sample: a replica is never the kept original a data sample is a
    # duplicate of, which would leave the data sample out of every selection.
    for pk, completion, reasoning, duplicate_of, contributor, model, temperature in (
        Sample.objects.filter(settled_q(replicas=True), prompt=prompt)
        .order_by("replica", "pk")
        .values_list(
            "pk",
            "completion",
            "reasoning",
            "duplicate_of",
            "contributor_id",
            "model",
            "temperature",
        )
    ):
        signature = text_signature(completion, reasoning=reasoning or None)
        original = index.add_signature(pk, signature)
        wanted[pk] = original
        current[pk] = duplicate_of
        if original is None:
            kept[pk] = (signature, contributor, model, temperature)
            continue
        source, source_contributor, source_model, source_temperature = kept[original]
        if (
            source_contributor != contributor
            and is_long_enough_to_copy(completion, reasoning)
            and not _same_greedy_run(model, temperature, source_model, source_temperature)
        ):
            copies[pk] = _copy_evidence(
                original, source_contributor, source, signature, index.settings.num_perm
            ) | {
                "model": model,
                "temperature": temperature,
                "original_model": source_model,
                "original_temperature": source_temperature,
            }
    changed = False
    for pk, original in wanted.items():
        if current[pk] != original:
            Sample.objects.filter(pk=pk).update(duplicate_of_id=original)
            changed = True
    sync_copy_flags(checked=wanted, copies=copies)
    if changed and Prompt.objects.filter(pk=prompt.pk, closed_at__isnull=False).exists():
        # A copy earns no credit and counts toward no bounty: what is built on a closed
        # prompt's disclosed verdicts settles it again.
        disclosed_changed.send(sender=Sample, prompt_ids=[prompt.pk])
    return sum(1 for original in wanted.values() if original is not None)


def is_long_enough_to_copy(completion: str, reasoning: str | None) -> bool:
    """Whether a text is long enough for its likeness to another contributor's to mean
    copying. One model writes the same short answer for anyone who asks it ("The answer is
    4."): below COPY_MIN_WORDS words that is a duplicate (left out of selections), not
    evidence against its contributor, whose trust a copy flag lowers."""
    from scoring.flags import COPY_MIN_WORDS

    return len(completion.split()) + len((reasoning or "").split()) >= COPY_MIN_WORDS


def _same_greedy_run(model: str, temperature: float, other_model: str, other: float) -> bool:
    """Two samples of one model at (near) temperature 0: greedy decoding writes the same text
    for anyone who runs it, so likeness is no evidence of copying (a duplicate only)."""
    from scoring.flags import GREEDY_TEMPERATURE

    return model == other_model and max(temperature, other) <= GREEDY_TEMPERATURE


def _copy_evidence(
    original: int, contributor: int, source: Any, copy: Any, num_perm: int
) -> dict[str, Any]:
    """What a copy flag shows: the original, its contributor, and how alike the two are
    (exact after normalisation, else the MinHash estimate of their Jaccard similarity)."""
    exact = source.exact == copy.exact
    if exact:
        jaccard = 1.0
    elif source.minhash is not None and copy.minhash is not None:
        jaccard = round(float((source.minhash == copy.minhash).sum()) / num_perm, 3)
    else:
        jaccard = None
    return {
        "original_sample": original,
        "original_contributor": contributor,
        "match": "exact" if exact else "near",
        "jaccard": jaccard,
    }


def candidates_of(prompt: Prompt, policy: Policy) -> list[Candidate]:
    rows = list(
        eligible(prompt).values_list("pk", "model", "status", "completion_tokens", "completion")
    )
    rewards: dict[int, float | None] = {}
    if policy.reward_model and policy.reward_version is not None:
        rewards = dict(
            RewardScore.objects.filter(
                sample_id__in=[r[0] for r in rows],
                reward_model=policy.reward_model,
                version=policy.reward_version,
            ).values_list("sample_id", "normalised")
        )
    return [
        Candidate(
            id=pk,
            model=model,
            status=status,
            # Without a token count, characters stand in (only ties among equals use it).
            tokens=tokens if tokens is not None else len(text),
            reward=rewards.get(pk),
        )
        for pk, model, status, tokens, text in rows
    ]


def pass_rates(candidates: Sequence[Candidate]) -> dict[str, float | None]:
    """Per model, the share of its eligible samples that are verified: what decides RL
    prompts. Over the samples that may be published, not every stored one (PromptModelStats):
    a banned contributor's or a copied sample must not pick whose gold goes out."""
    judged: dict[str, list[int]] = {}
    for c in candidates:
        counts = judged.setdefault(c.model, [0, 0])
        counts[0] += 1
        counts[1] += c.correct
    return {model: ok / n for model, (n, ok) in judged.items()}


@transaction.atomic
def rebuild_prompt(*, prompt_id: int, policy: Policy) -> PromptPicks:
    """Replaces the prompt's selections and pairs under `policy` with what its samples give
    now. Two rebuilds of one prompt take turns on a transaction-scoped advisory lock (on
    PostgreSQL; SQLite serialises writers anyway): not the prompt's row, which uploads and
    scoring reference and must not wait on while duplicates are computed."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [REBUILD_LOCK_CLASS, prompt_id])
    prompt = Prompt.objects.get(pk=prompt_id)
    Selection.objects.filter(prompt=prompt, policy=policy.label).delete()
    PreferencePair.objects.filter(prompt=prompt, policy=policy.label).delete()
    if prompt.contaminated:
        return PromptPicks()
    mark_duplicates(prompt)
    candidates = candidates_of(prompt, policy)
    picks = pick(candidates, pass_rates(candidates), policy)
    common = {"prompt": prompt, "policy": policy.label, "policy_version": policy.version}
    Selection.objects.bulk_create(
        [
            Selection(kind=SelectionKind.SFT, model=c.model, sample_id=c.id, rank=i, **common)
            for i, c in enumerate(picks.sft)
        ]
        + [
            Selection(kind=SelectionKind.RL, model=model, sample=None, **common)
            for model in picks.rl_models
        ]
    )
    PreferencePair.objects.bulk_create(
        [
            PreferencePair(chosen_id=c.id, rejected_id=r.id, margin=m, **common)
            for c, r, m in picks.pairs
        ]
    )
    best = {}
    for c in sorted(picks.sft, key=rank_key, reverse=True):
        best[c.model] = c.id  # the last written per model is its best
    PromptModelStats.objects.filter(prompt=prompt).update(best_sample=None)
    for model, sample_id in best.items():
        PromptModelStats.objects.filter(prompt=prompt, model=model).update(best_sample_id=sample_id)
    return picks


def sft_messages(sample: Sample) -> list[dict[str, str]]:
    """A selected sample as an SFT record's chat, in the format R1 distillation uses: the
    prompt's messages as the model was sent them, then one assistant message with the
    reasoning inside <think>…</think> followed by the answer. A completion that kept its think
    block inline is used as it is."""
    prompt = sample.prompt
    reasoning, response = reasoning_and_response(sample.completion, sample.reasoning)
    return [
        *chat_messages(prompt.prompt_set.render_messages(prompt.messages)),
        assistant_message(reasoning, response),
    ]


def chat_messages(messages: Any) -> list[dict[str, str]]:
    """Stored chat messages as plain {role, content} strings (a prompt's JSON may hold more)."""
    return [
        {"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in messages
    ]


def reasoning_and_response(completion: str, reasoning: str | None) -> tuple[str, str]:
    """A sample's reasoning and final response, however its server returned them: a separate
    reasoning field, <think>…</think> in the completion, or only </think> (the chat template
    opened the block). The verifiers split them the same way."""
    from scoring.verifiers.base import Candidate
    from scoring.verifiers.text import split_reasoning

    return split_reasoning(Candidate(completion=completion, reasoning=reasoning or None))


def assistant_message(reasoning: str, response: str) -> dict[str, str]:
    """The assistant turn as R1 distillation data writes it: the reasoning inside
    <think>…</think>, then the response."""
    if reasoning:
        return {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{response}"}
    return {"role": "assistant", "content": response}

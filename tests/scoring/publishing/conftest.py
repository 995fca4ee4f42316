"""A small published-ready dataset: closed prompts with judged samples, verdicts, selections."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.utils import timezone

from scoring import stats
from scoring.models import Prompt, PromptSet, Sample, SampleStatus, Verdict
from scoring.selection import configured_policy, rebuild_prompt
from tests.factories import PromptFactory, PromptSetFactory, UserFactory

V, R = SampleStatus.VERIFIED, SampleStatus.REJECTED


@dataclass
class Dataset:
    prompt_set: PromptSet
    prompts: list[Prompt] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


def add_sample(prompt, status, *, contributor, model="org/model-a", tokens=40, text=None, **fields):
    sample = Sample.objects.create(
        prompt=prompt,
        contributor=contributor,
        model=model,
        model_revision="rev1",
        temperature=0.6,
        sampling={"temperature": 0.6, "top_p": 0.95, "max_tokens": 512},
        completion=text or f"<think>{contributor.username} adds it up for {prompt.pk}</think>So 4.",
        completion_tokens=tokens,
        prompt_tokens=12,
        finish_reason="stop",
        status=status,
        **fields,
    )
    Verdict.objects.create(
        sample=sample,
        verifier="math",
        version=3,
        status="pass" if status == V else "fail",
        score=1.0 if status == V else 0.0,
    )
    return sample


def make_dataset(*, prompts=3, closed=True, name=None, license="MIT", **set_fields) -> Dataset:
    """`prompts` prompts, each with 2 verified and 1 rejected sample of org/model-a (pass rate
    2/3: an RL prompt) by two contributors: `alice` (credited) and `bob` (anonymous). Per
    prompt that is 3 raw rows, 2 sft, 1 preference pair and 1 rl row."""
    from contributors.models import Profile

    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    Profile.objects.filter(user=alice).update(public_attribution=True)
    Profile.objects.filter(user=bob).update(public_attribution=False)
    prompt_set = PromptSetFactory(
        license=license,
        source="https://example.org/src",
        **({"name": name} if name else {}),
        **set_fields,
    )
    data = Dataset(prompt_set)
    for i in range(prompts):
        prompt = PromptFactory(prompt_set=prompt_set, gold=f"GOLD-{i}")
        data.prompts.append(prompt)
        data.samples += [
            add_sample(
                prompt,
                V,
                contributor=alice,
                tokens=30 + i,
                text=f"<think>Alice: {i} plus {i}, carry nothing, gives {2 * i}.</think>"
                f"The answer is \\boxed{{{2 * i}}}.",
            ),
            add_sample(
                prompt,
                V,
                contributor=bob,
                tokens=60 + i,
                text=f"<think>Bob counts up from {i} by {i} and lands on {2 * i}</think>"
                f"So it is {2 * i}.",
            ),
            add_sample(
                prompt,
                R,
                contributor=bob,
                tokens=90 + i,
                text=f"Without thinking: it is {2 * i + 7}.",
            ),
        ]
    ids = [p.pk for p in data.prompts]
    stats.recompute(prompt_ids=ids)
    if closed:
        Prompt.objects.filter(pk__in=ids).update(closed_at=timezone.now())
    policy = configured_policy()
    for pk in ids:
        rebuild_prompt(prompt_id=pk, policy=policy)
    return data


@pytest.fixture
def release_dirs(tmp_path, settings):
    settings.THINKPOOL_RELEASE = {
        **settings.THINKPOOL_RELEASE,
        "local_root": tmp_path / "releases",
        "staging_root": tmp_path / "staging",
        "retry_base_s": 0.0,
    }
    return tmp_path

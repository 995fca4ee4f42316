"""The rows of a release: what each config holds, its columns, and how they are read.

One pass over the published prompts, in chunks, feeds the four configs at once:

* `raw`: every settled sample (judged, not quarantined, contributor not banned) with its
  verdicts, reward and provenance, duplicates included and marked;
* `sft`: the samples selected for SFT under the ranking policy (best-of-n), as chat messages;
* `preference`: chosen/rejected pairs, in TRL's conversational shape (prompt, chosen, rejected);
* `rl`: the (prompt, model) pairs whose pass rate says the prompt still teaches, with the gold
  answer (and hidden tests) a reward function needs.

A prompt is published only when it is closed to collection (its gold and every verdict may be
disclosed then, DESIGN.md), not contaminated, its set is admitted (licences.py), and no twin of
it (the same text in another set, or a near-duplicate) is still open: publishing its gold would
answer the open one. Samples
come from the same settled set for every config, so a selection that went stale since its
prompt's last rebuild (a sample quarantined since) cannot bring a held-back sample in.

Rows are ordered by (first release of the prompt, prompt id, sample id): rows of prompts new in
this release come last, so the shards of earlier releases keep their bytes while nothing in them
changes. Every chunk is a bounded number of prompts; memory does not grow with the release.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from django.db.models import Exists, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from scoring.models import (
    PreferencePair,
    Prompt,
    PromptGold,
    PromptModelStats,
    PromptSet,
    ReleasedPrompt,
    RewardScore,
    Sample,
    SampleStatus,
    Selection,
    SelectionKind,
    Verdict,
)
from scoring.publishing.attribution import Attribution
from scoring.selection import (
    Policy,
    assistant_message,
    chat_messages,
    reasoning_and_response,
    settled_samples,
)

CONFIGS = ("sft", "preference", "rl", "raw")
# Prompts read per chunk: a few thousand samples of a few KB each.
PROMPTS_PER_CHUNK = 256

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
VERDICT = pa.struct(
    [
        ("verifier", pa.string()),
        ("version", pa.int32()),
        ("status", pa.string()),
        ("score", pa.float64()),
    ]
)

PROMPT_FIELDS = [
    pa.field("prompt_id", pa.int64(), nullable=False),
    pa.field("source", pa.string()),  # the prompt set
    pa.field("source_id", pa.string()),  # the prompt's id in its source
    pa.field("source_url", pa.string()),
    pa.field("license", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("release", pa.int32()),  # the release that first published the prompt
]
SAMPLE_FIELDS = [
    pa.field("sample_id", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("model_revision", pa.string()),
    pa.field("temperature", pa.float64()),
    pa.field("top_p", pa.float64()),
    pa.field("max_tokens", pa.int64()),
    pa.field("sampling", pa.string()),  # every sampling parameter, as JSON
    pa.field("finish_reason", pa.string()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("status", pa.string()),
    pa.field("verified", pa.bool_()),
    pa.field("verdicts", pa.list_(VERDICT)),
    pa.field("reward_model", pa.string()),
    pa.field("reward", pa.float64()),  # normalised within the prompt (z-score)
    pa.field("reward_raw", pa.float64()),
    pa.field("contributor", pa.string()),  # handle, or "anonymous"
]
TEXT_FIELDS = [
    pa.field("messages", MESSAGES),
    pa.field("reasoning", pa.string()),
    pa.field("response", pa.string()),
]


def _prefixed(prefix: str, fields: Sequence[pa.Field]) -> list[pa.Field]:
    return [f.with_name(prefix + f.name) for f in fields]


SCHEMAS: dict[str, pa.Schema] = {
    "sft": pa.schema([*PROMPT_FIELDS, *TEXT_FIELDS, *SAMPLE_FIELDS, pa.field("rank", pa.int32())]),
    "raw": pa.schema(
        [*PROMPT_FIELDS, *TEXT_FIELDS, *SAMPLE_FIELDS, pa.field("duplicate_of", pa.int64())]
    ),
    "preference": pa.schema(
        [
            *PROMPT_FIELDS,
            pa.field("prompt", MESSAGES),
            pa.field("chosen", MESSAGES),
            pa.field("rejected", MESSAGES),
            pa.field("margin", pa.float64()),
            *_prefixed("chosen_", SAMPLE_FIELDS),
            *_prefixed("rejected_", SAMPLE_FIELDS),
        ]
    ),
    "rl": pa.schema(
        [
            *PROMPT_FIELDS,
            pa.field("prompt", MESSAGES),
            pa.field("answer", pa.string()),  # the gold answer
            pa.field("tests", pa.string()),  # the hidden tests of a code prompt, as JSON
            pa.field("model", pa.string()),
            pa.field("pass_rate", pa.float64()),
            pa.field("samples", pa.int64()),  # judged
            pa.field("verified", pa.int64()),
        ]
    ),
}


@dataclass(frozen=True)
class Scope:
    """What a release publishes: the admitted sets, under one policy, as version `version` of
    one repository (which fixes each prompt's first release)."""

    version: int
    target: str
    repo_id: str
    policy: Policy
    set_ids: tuple[int, ...]


@dataclass
class Stats:
    """What the dataset card says, gathered from the raw rows as they stream."""

    rows: Counter[str] = field(default_factory=Counter)
    prompts: int = 0
    prompts_per_source: Counter[str] = field(default_factory=Counter)
    samples_per_domain: Counter[str] = field(default_factory=Counter)
    # (model, temperature) -> [samples, verified]
    per_model: dict[tuple[str, float], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    verified: int = 0
    verifier_versions: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    contributor_rows: Counter[str] = field(default_factory=Counter)
    new_prompts: int = 0


class _Columns:
    """Column lists of one record batch."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.data: dict[str, list[Any]] = {name: [] for name in schema.names}

    def add(self, **values: Any) -> None:
        for name, column in self.data.items():
            column.append(values.get(name))

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    def batch(self) -> pa.RecordBatch:
        batch = pa.RecordBatch.from_pydict(self.data, schema=self.schema)
        for column in self.data.values():
            column.clear()
        return batch


@dataclass(frozen=True)
class _SetInfo:
    name: str
    source_url: str
    license: str
    domain: str
    set: PromptSet


def open_twin() -> Q:
    """A prompt with a twin still open to collection: the same normalised text in another
    set, or a near-duplicate either way (scoring/dedup.py). Its gold and judged samples would
    answer the open one, so it waits until the twin closes too."""
    open_prompts = Prompt.objects.filter(closed_at__isnull=True)
    return (
        Q(Exists(open_prompts.filter(text_hash=OuterRef("text_hash"))))
        | Q(near_duplicate_of__isnull=False, near_duplicate_of__closed_at__isnull=True)
        | Q(Exists(open_prompts.filter(near_duplicate_of=OuterRef("pk"))))
    )


def publishable(set_ids: Sequence[int]) -> Any:
    """The prompts of the admitted sets a release may hold: closed, not contaminated, and no
    twin of an open one."""
    return Prompt.objects.filter(
        prompt_set_id__in=set_ids, closed_at__isnull=False, contaminated=False
    ).exclude(open_twin())


def published_prompts(scope: Scope) -> Any:
    """The prompts a release of `scope` holds, each with the release that first published it
    (this one for a prompt new in it), in row order."""
    first = ReleasedPrompt.objects.filter(
        target=scope.target, repo_id=scope.repo_id, prompt=OuterRef("pk")
    ).values("version")[:1]
    return (
        publishable(scope.set_ids)
        .annotate(
            first_release=Coalesce(
                Subquery(first, output_field=IntegerField()), Value(scope.version)
            )
        )
        .order_by("first_release", "pk")
        .values_list("pk", "first_release")
    )


def _chunks(scope: Scope, size: int) -> Iterator[list[tuple[int, int]]]:
    chunk: list[tuple[int, int]] = []
    for row in published_prompts(scope).iterator(chunk_size=size * 4):
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class RowReader:
    """Reads the published rows of a scope, chunk by chunk, as record batches per config."""

    def __init__(
        self, scope: Scope, *, attribution: Attribution | None = None, chunk: int = 0
    ) -> None:
        self.scope = scope
        self.attribution = attribution or Attribution()
        self.chunk = chunk or PROMPTS_PER_CHUNK
        self.stats = Stats()
        self._sets = {
            s.pk: _SetInfo(s.name, s.source, s.license, s.domain, s)
            for s in PromptSet.objects.filter(pk__in=scope.set_ids)
        }

    def batches(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        columns = {config: _Columns(SCHEMAS[config]) for config in CONFIGS}
        for chunk in _chunks(self.scope, self.chunk):
            self._read_chunk(chunk, columns)
            for config, cols in columns.items():
                if len(cols):
                    self.stats.rows[config] += len(cols)
                    yield config, cols.batch()

    # ------------------------------------------------------------------ one chunk

    def _read_chunk(self, chunk: list[tuple[int, int]], out: dict[str, _Columns]) -> None:
        policy = self.scope.policy
        ids = [pk for pk, _ in chunk]
        prompts = {
            pk: (set_id, external_id, messages)
            for pk, set_id, external_id, messages in Prompt.objects.filter(pk__in=ids).values_list(
                "pk", "prompt_set_id", "external_id", "messages"
            )
        }
        samples: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        sample_ids: list[int] = []
        contributors: set[int] = set()
        for row in (
            settled_samples(Sample.objects.filter(prompt_id__in=ids))
            .order_by("prompt_id", "pk")
            .values_list(
                "pk",
                "prompt_id",
                "contributor_id",
                "model",
                "model_revision",
                "temperature",
                "sampling",
                "completion",
                "reasoning",
                "finish_reason",
                "prompt_tokens",
                "completion_tokens",
                "status",
                "duplicate_of_id",
            )
        ):
            samples[row[1]].append(row)
            sample_ids.append(row[0])
            contributors.add(row[2])
        verdicts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for sample_id, verifier, version, status, score in (
            Verdict.objects.filter(sample_id__in=sample_ids)
            .order_by("sample_id", "verifier", "version")
            .values_list("sample_id", "verifier", "version", "status", "score")
        ):
            verdicts[sample_id].append(
                {"verifier": verifier, "version": version, "status": status, "score": score}
            )
        rewards: dict[int, tuple[float, float | None]] = {}
        if policy.reward_model and policy.reward_version is not None:
            rewards = {
                sample_id: (raw, normalised)
                for sample_id, raw, normalised in RewardScore.objects.filter(
                    sample_id__in=sample_ids,
                    reward_model=policy.reward_model,
                    version=policy.reward_version,
                ).values_list("sample_id", "raw", "normalised")
            }
        names = self.attribution.names(contributors)
        selections = Selection.objects.filter(
            prompt_id__in=ids, policy=policy.label, policy_version=policy.version
        )
        sft: dict[int, list[tuple[int, int]]] = defaultdict(list)
        rl: dict[int, list[str]] = defaultdict(list)
        for prompt_id, kind, sample_id, model, rank in selections.order_by(
            "prompt_id", "rank", "model"
        ).values_list("prompt_id", "kind", "sample_id", "model", "rank"):
            if kind == SelectionKind.SFT:
                sft[prompt_id].append((sample_id, rank))
            else:
                rl[prompt_id].append(model)
        pairs: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
        for prompt_id, chosen, rejected, margin in (
            PreferencePair.objects.filter(
                prompt_id__in=ids, policy=policy.label, policy_version=policy.version
            )
            .order_by("prompt_id", "pk")
            .values_list("prompt_id", "chosen_id", "rejected_id", "margin")
        ):
            pairs[prompt_id].append((chosen, rejected, margin))
        rl_ids = [pk for pk in ids if rl.get(pk)]
        gold = {
            prompt_id: (answer, tests)
            for prompt_id, answer, tests in PromptGold.objects.filter(
                prompt_id__in=rl_ids
            ).values_list("prompt_id", "answer", "tests")
        }
        pass_rates = {
            (prompt_id, model): (judged, verified)
            for prompt_id, model, judged, verified in PromptModelStats.objects.filter(
                prompt_id__in=rl_ids
            ).values_list("prompt_id", "model", "judged", "verified")
        }

        stats = self.stats
        for prompt_id, first_release in chunk:
            set_id, external_id, stored_messages = prompts[prompt_id]
            info = self._sets[set_id]
            prompt_cols = {
                "prompt_id": prompt_id,
                "source": info.name,
                "source_id": external_id,
                "source_url": info.source_url,
                "license": info.license,
                "domain": info.domain,
                "release": first_release,
            }
            stats.prompts += 1
            stats.prompts_per_source[info.name] += 1
            if first_release == self.scope.version:
                stats.new_prompts += 1
            prompt_messages = chat_messages(info.set.render_messages(stored_messages))
            by_id: dict[int, dict[str, Any]] = {}
            texts: dict[int, tuple[str, str]] = {}
            duplicates: set[int] = set()
            for row in samples.get(prompt_id, ()):
                (pk, _, contributor_id, model, revision, temperature, sampling, completion) = row[
                    :8
                ]
                reasoning, finish_reason, prompt_tokens, completion_tokens, status, dup = row[8:]
                sampling = sampling if isinstance(sampling, dict) else {}
                reward = rewards.get(pk)
                meta = {
                    "sample_id": pk,
                    "model": model,
                    "model_revision": revision,
                    "temperature": temperature,
                    "top_p": _number(sampling.get("top_p")),
                    "max_tokens": _integer(sampling.get("max_tokens")),
                    "sampling": json.dumps(sampling, sort_keys=True),
                    "finish_reason": finish_reason,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "status": status,
                    "verified": status == SampleStatus.VERIFIED,
                    "verdicts": verdicts.get(pk, []),
                    "reward_model": policy.reward_model if reward else None,
                    "reward": reward[1] if reward else None,
                    "reward_raw": reward[0] if reward else None,
                    "contributor": names[contributor_id],
                }
                by_id[pk] = meta
                if dup is not None:
                    duplicates.add(pk)
                texts[pk] = reasoning_and_response(completion, reasoning)
                think, response = texts[pk]
                out["raw"].add(
                    **prompt_cols,
                    **meta,
                    messages=[*prompt_messages, assistant_message(think, response)],
                    reasoning=think,
                    response=response,
                    duplicate_of=dup,
                )
                stats.samples_per_domain[info.domain] += 1
                counts = stats.per_model[(model, temperature)]
                counts[0] += 1
                if meta["verified"]:
                    counts[1] += 1
                    stats.verified += 1
                for v in meta["verdicts"]:
                    stats.verifier_versions[v["verifier"]].add(v["version"])
                stats.contributor_rows[meta["contributor"]] += 1
            for sample_id, rank in sft.get(prompt_id, ()):
                selected = by_id.get(sample_id)
                # Only an eligible sample: settled (above) and no duplicate.
                if selected is None or not selected["verified"] or sample_id in duplicates:
                    continue
                think, response = texts[sample_id]
                out["sft"].add(
                    **prompt_cols,
                    **selected,
                    messages=[*prompt_messages, assistant_message(think, response)],
                    reasoning=think,
                    response=response,
                    rank=rank,
                )
            for chosen, rejected, margin in pairs.get(prompt_id, ()):
                if not {chosen, rejected} <= by_id.keys() or {chosen, rejected} & duplicates:
                    continue
                out["preference"].add(
                    **prompt_cols,
                    prompt=prompt_messages,
                    chosen=[assistant_message(*texts[chosen])],
                    rejected=[assistant_message(*texts[rejected])],
                    margin=margin,
                    **{f"chosen_{k}": v for k, v in by_id[chosen].items()},
                    **{f"rejected_{k}": v for k, v in by_id[rejected].items()},
                )
            for model in rl.get(prompt_id, ()):
                judged, verified = pass_rates.get((prompt_id, model), (0, 0))
                answer, tests = gold.get(prompt_id, ("", None))
                out["rl"].add(
                    **prompt_cols,
                    prompt=prompt_messages,
                    answer=answer,
                    tests=None if tests is None else json.dumps(tests, sort_keys=True),
                    model=model,
                    pass_rate=verified / judged if judged else None,
                    samples=judged,
                    verified=verified,
                )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

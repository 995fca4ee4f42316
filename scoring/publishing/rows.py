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
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db.models import Exists, IntegerField, OuterRef, Q, Subquery, TextField, Value
from django.db.models.functions import Cast, Coalesce

from scoring.attesting import VERIFIER as ATTESTATION_VERIFIER
from scoring.models import (
    RELEASE_CONFIGS,
    PreferencePair,
    Prompt,
    PromptGold,
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
from scoring.publishing.chat import (
    MESSAGES,
    assistant_content,
    conversations,
    single_turns,
    split_reasoning,
)
from scoring.publishing.fetch import Fetcher, JsonNumber, register_lookups
from scoring.selection import Policy, chat_messages, settled_q, settled_samples

CONFIGS = RELEASE_CONFIGS
# Prompts read per chunk: a few thousand samples of a few KB each.
PROMPTS_PER_CHUNK = 512

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
    """Reads the published rows of a scope, chunk by chunk, as record batches per config.

    Each chunk is a handful of queries whose results arrive as Arrow tables (fetch.py), and
    every column is computed on whole columns (chat.py, Arrow compute, numpy): no Python code
    runs per row, so a build keeps up with the database and the parquet writer."""

    def __init__(
        self,
        scope: Scope,
        *,
        attribution: Attribution | None = None,
        chunk: int = 0,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.scope = scope
        self.attribution = attribution or Attribution()
        self.chunk = chunk or PROMPTS_PER_CHUNK
        self.fetcher = fetcher or Fetcher()
        self.stats = Stats()
        # The prompts this release publishes first (ReleasedPrompt rows, once it is confirmed):
        # 8 bytes each.
        self.new_prompts: array[int] = array("q")
        self._sets = {s.pk: s for s in PromptSet.objects.filter(pk__in=scope.set_ids)}

    def batches(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        for chunk, data in self._fetched(_chunks(self.scope, self.chunk)):
            yield from self._emit(self._assemble(chunk, data))

    def _fetched(
        self, chunks: Iterator[list[tuple[int, int]]]
    ) -> Iterator[tuple[list[tuple[int, int]], _ChunkData]]:
        """Each chunk with its query results. With the ADBC fetcher the next chunk's queries run
        in a thread while this one is assembled (the driver lets go of the GIL while the
        database works and while it decodes)."""
        if not self.fetcher.adbc:
            for chunk in chunks:
                yield chunk, self._fetch(chunk)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="release-fetch") as pool:
            ahead: tuple[list[tuple[int, int]], Future[_ChunkData]] | None = None
            for chunk in chunks:
                submitted = (chunk, pool.submit(self._fetch, chunk))
                if ahead is not None:
                    yield ahead[0], ahead[1].result()
                ahead = submitted
            if ahead is not None:
                yield ahead[0], ahead[1].result()

    def _emit(self, tables: dict[str, pa.Table]) -> Iterator[tuple[str, pa.RecordBatch]]:
        for config, table in tables.items():
            if table.num_rows:
                self.stats.rows[config] += table.num_rows
                for batch in table.to_batches():
                    yield config, batch

    # ------------------------------------------------------------------ one chunk

    def _fetch(self, chunk: list[tuple[int, int]]) -> _ChunkData:
        """Every query of one chunk, through the fetcher only (it may run in another thread,
        which must not touch Django's connection)."""
        policy = self.scope.policy
        ids = [pk for pk, _ in chunk]
        by_ids = self.fetcher.by_ids
        data = _ChunkData(
            prompts=by_ids(
                "prompts",
                lambda ids: (
                    Prompt.objects.filter(pk__any_of=ids)
                    .annotate(messages_text=Cast("messages", TextField()))
                    .order_by()
                    .values_list("pk", "prompt_set_id", "external_id", "messages_text")
                ),
                ids,
                _PROMPT_QUERY,
            ),
            samples=by_ids(
                "samples",
                lambda ids: (
                    settled_samples(Sample.objects.filter(prompt_id__any_of=ids))
                    .annotate(
                        top_p_value=JsonNumber("sampling", "top_p"),
                        max_tokens_value=JsonNumber("sampling", "max_tokens"),
                        sampling_text=Cast("sampling", TextField()),
                    )
                    .order_by()
                    .values_list(*_SAMPLE_QUERY.names)
                ),
                ids,
                _SAMPLE_QUERY,
            ),
            verdicts=by_ids(
                "verdicts",
                lambda ids: (
                    Verdict.objects.filter(settled_q("sample__"), sample__prompt_id__any_of=ids)
                    # Attestation judges the contributor's claim, not the sample, and which
                    # samples were drawn and how they fared stays private (scoring.disclosure).
                    .exclude(verifier=ATTESTATION_VERIFIER)
                    .order_by("sample_id", "verifier", "version")
                    .values_list(*_VERDICT_QUERY.names)
                ),
                ids,
                _VERDICT_QUERY,
            ),
            rewards=by_ids(
                "rewards",
                lambda ids: RewardScore.objects.filter(
                    settled_q("sample__"),
                    sample__prompt_id__any_of=ids,
                    reward_model=policy.reward_model,
                    version=policy.reward_version or 0,
                ).values_list(*_REWARD_QUERY.names),
                ids,
                _REWARD_QUERY,
            )
            if policy.reward_model and policy.reward_version is not None
            else _REWARD_QUERY.empty_table(),
            selections=by_ids(
                "selections",
                lambda ids: (
                    Selection.objects.filter(
                        prompt_id__any_of=ids, policy=policy.label, policy_version=policy.version
                    )
                    .order_by()
                    .values_list("prompt_id", "kind", "sample_id", "model", "rank")
                ),
                ids,
                _SELECTION_QUERY,
            ),
            pairs=by_ids(
                "pairs",
                lambda ids: (
                    PreferencePair.objects.filter(
                        prompt_id__any_of=ids, policy=policy.label, policy_version=policy.version
                    )
                    .order_by("pk")
                    .values_list("prompt_id", "chosen_id", "rejected_id", "margin")
                ),
                ids,
                _PAIR_QUERY,
            ),
        )
        rl_prompts = sorted(
            set(
                data.selections.filter(pc.equal(data.selections["kind"], SelectionKind.RL.value))[
                    "prompt_id"
                ].to_pylist()
            )
        )
        data.gold = (
            by_ids(
                "gold",
                lambda ids: (
                    PromptGold.objects.filter(prompt_id__any_of=ids)
                    .annotate(tests_text=Cast("tests", TextField()))
                    .order_by()
                    .values_list("prompt_id", "answer", "tests_text")
                ),
                rl_prompts,
                _GOLD_QUERY,
            )
            if rl_prompts
            else _GOLD_QUERY.empty_table()
        )
        return data

    def _assemble(self, chunk: list[tuple[int, int]], data: _ChunkData) -> dict[str, pa.Table]:
        policy = self.scope.policy
        ids = [pk for pk, _ in chunk]
        position = {pk: i for i, pk in enumerate(ids)}

        # Prompt-level columns, in chunk order (a chunk is a few hundred prompts).
        prompt_rows = {
            pk: (set_id, external_id, messages)
            for pk, set_id, external_id, messages in zip(
                *(data.prompts[name].to_pylist() for name in _PROMPT_QUERY.names), strict=True
            )
        }
        infos = [self._sets[prompt_rows[pk][0]] for pk in ids]
        prompt_cols = {
            "prompt_id": pa.array(ids, pa.int64()),
            "source": pa.array([i.name for i in infos], pa.string()),
            "source_id": pa.array([prompt_rows[pk][1] for pk in ids], pa.string()),
            "source_url": pa.array([i.source for i in infos], pa.string()),
            "license": pa.array([i.license for i in infos], pa.string()),
            "domain": pa.array([i.domain for i in infos], pa.string()),
            "release": pa.array([first for _, first in chunk], pa.int32()),
        }
        prompt_messages = pa.array(
            [
                chat_messages(info.render_messages(json.loads(prompt_rows[pk][2])))
                for pk, info in zip(ids, infos, strict=True)
            ],
            MESSAGES,
        )

        # Samples, in row order: the chunk's prompt order, then sample id.
        samples = data.samples
        chunk_ids = pa.array(ids, pa.int64())
        samples = samples.rename_columns(_SAMPLE_COLUMNS)
        samples = samples.append_column(
            "ppos", pc.index_in(samples["prompt_id"], value_set=chunk_ids).cast(pa.int64())
        ).sort_by([("ppos", "ascending"), ("pk", "ascending")])
        n = samples.num_rows
        ppos = samples["ppos"].to_numpy()
        pks = samples["pk"].combine_chunks()

        verdicts = _arrays(data.verdicts)
        vpos = pc.index_in(verdicts["sample_id"], value_set=pks).to_numpy(zero_copy_only=False)
        order = pa.array(np.argsort(vpos, kind="stable"))
        voffsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(vpos, minlength=n), out=voffsets[1:])
        verdict_lists = pa.ListArray.from_arrays(
            pa.array(voffsets),
            pa.StructArray.from_arrays(
                [
                    verdicts["verifier"].take(order),
                    verdicts["version"].cast(pa.int32()).take(order),
                    verdicts["status"].take(order),
                    verdicts["score"].take(order),
                ],
                fields=list(VERDICT),
            ),
        )

        rewards = _arrays(data.rewards)
        widx = pc.index_in(pks, value_set=rewards["sample_id"])
        reward_model = pc.if_else(
            pc.is_valid(widx),
            pa.scalar(policy.reward_model, pa.string()),
            pa.scalar(None, pa.string()),
        )

        columns = _arrays(samples)
        unique = pc.unique(columns["contributor_id"])
        names = self.attribution.names(unique.to_pylist())
        contributor = pa.array([names[uid] for uid in unique.to_pylist()], pa.string()).take(
            pc.index_in(columns["contributor_id"], value_set=unique)
        )

        think, response = split_reasoning(columns["completion"], columns["reasoning"])
        reply = assistant_content(think, response)
        verified = pc.equal(columns["status"], SampleStatus.VERIFIED.value)
        duplicate_of = columns["duplicate_of"]
        meta = {
            **{name: columns[name] for name in _SAMPLE_PASSED_ON},
            "sample_id": pks,
            "max_tokens": _whole(columns["max_tokens"]),
            "verified": verified,
            "verdicts": verdict_lists,
            "reward_model": reward_model,
            "reward": rewards["normalised"].take(widx),
            "reward_raw": rewards["raw"].take(widx),
            "contributor": contributor,
        }
        at_prompt = pa.array(ppos)
        per_sample_prompt = {name: col.take(at_prompt) for name, col in prompt_cols.items()}
        raw = {
            **per_sample_prompt,
            "messages": conversations(prompt_messages, ppos, reply),
            "reasoning": think,
            "response": response,
            **meta,
            "duplicate_of": duplicate_of,
        }
        out: dict[str, pa.Table] = {"raw": pa.table(raw, schema=SCHEMAS["raw"])}
        eligible = pc.and_(verified, pc.is_null(duplicate_of))
        original = pc.is_null(duplicate_of)

        # SFT: the selected samples that are still eligible, by prompt then rank.
        selections = data.selections
        sft = selections.filter(pc.equal(selections["kind"], SelectionKind.SFT.value)).select(
            ["prompt_id", "sample_id", "rank"]
        )
        sidx = pc.index_in(sft["sample_id"].combine_chunks(), value_set=pks)
        keep = pc.fill_null(pc.array_take(eligible, sidx), False)
        sft = sft.append_column("at", sidx).filter(keep)
        sft = sft.append_column("ppos", pc.index_in(sft["prompt_id"], value_set=chunk_ids)).sort_by(
            [("ppos", "ascending"), ("rank", "ascending")]
        )
        at = sft["at"].combine_chunks()
        out["sft"] = pa.table(
            {
                **{name: col.take(at) for name, col in raw.items() if name != "duplicate_of"},
                "rank": sft["rank"].combine_chunks().cast(pa.int32()),
            },
            schema=SCHEMAS["sft"],
        )

        # Preference pairs whose two samples are both published and neither a copy.
        pairs = data.pairs
        cidx = pc.index_in(pairs["chosen_id"].combine_chunks(), value_set=pks)
        ridx = pc.index_in(pairs["rejected_id"].combine_chunks(), value_set=pks)
        keep = pc.and_(
            pc.fill_null(pc.array_take(original, cidx), False),
            pc.fill_null(pc.array_take(original, ridx), False),
        )
        pairs = pairs.append_column("c", cidx).append_column("r", ridx).filter(keep)
        pairs = pairs.append_column(
            "ppos", pc.index_in(pairs["prompt_id"], value_set=chunk_ids)
        ).sort_by("ppos")
        c = pairs["c"].combine_chunks()
        r = pairs["r"].combine_chunks()
        at_pair = pairs["ppos"].combine_chunks()
        out["preference"] = pa.table(
            {
                **{name: col.take(at_pair) for name, col in prompt_cols.items()},
                "prompt": prompt_messages.take(at_pair),
                "chosen": single_turns(reply.take(c)),
                "rejected": single_turns(reply.take(r)),
                "margin": pairs["margin"].combine_chunks(),
                **{f"chosen_{name}": col.take(c) for name, col in meta.items()},
                **{f"rejected_{name}": col.take(r) for name, col in meta.items()},
            },
            schema=SCHEMAS["preference"],
        )

        # RL: (prompt, model) pairs, with the pass rate over the published, original samples.
        rl_selected = selections.filter(pc.equal(selections["kind"], SelectionKind.RL.value))
        rl = list(
            zip(
                rl_selected["prompt_id"].to_pylist(),
                rl_selected["model"].to_pylist(),
                strict=True,
            )
        )
        rl.sort(key=lambda pm: (position[pm[0]], pm[1]))
        counts: dict[tuple[int, str], tuple[int, int]] = {}
        if rl:
            judged = (
                pa.table(
                    {
                        "prompt_id": samples["prompt_id"],
                        "model": samples["model"],
                        "verified": verified.cast(pa.int64()),
                    }
                )
                .filter(original)
                .group_by(["prompt_id", "model"])
                .aggregate([("verified", "sum"), ("verified", "count")])
            )
            counts = {
                (p, m): (total, ok)
                for p, m, ok, total in zip(
                    judged["prompt_id"].to_pylist(),
                    judged["model"].to_pylist(),
                    judged["verified_sum"].to_pylist(),
                    judged["verified_count"].to_pylist(),
                    strict=True,
                )
            }
        gold = {
            prompt_id: (answer, None if tests is None else json.loads(tests))
            for prompt_id, answer, tests in zip(
                *(data.gold[name].to_pylist() for name in _GOLD_QUERY.names), strict=True
            )
        }
        rl_rows = [
            (position[p], m, *counts.get((p, m), (0, 0)), *gold.get(p, ("", None))) for p, m in rl
        ]
        rl_rows = [row for row in rl_rows if row[2]]  # a pass rate needs published samples
        at_rl = pa.array([row[0] for row in rl_rows], pa.int64())
        out["rl"] = pa.table(
            {
                **{name: col.take(at_rl) for name, col in prompt_cols.items()},
                "prompt": prompt_messages.take(at_rl),
                "answer": pa.array([row[4] for row in rl_rows], pa.string()),
                "tests": pa.array(
                    [
                        None if row[5] is None else json.dumps(row[5], sort_keys=True)
                        for row in rl_rows
                    ],
                    pa.string(),
                ),
                "model": pa.array([row[1] for row in rl_rows], pa.string()),
                "pass_rate": pa.array([row[3] / row[2] for row in rl_rows], pa.float64()),
                "samples": pa.array([row[2] for row in rl_rows], pa.int64()),
                "verified": pa.array([row[3] for row in rl_rows], pa.int64()),
            },
            schema=SCHEMAS["rl"],
        )

        self._count(chunk, infos, samples, data.verdicts, verified, contributor, rl_rows)
        return out

    def _count(
        self,
        chunk: list[tuple[int, int]],
        infos: list[PromptSet],
        samples: pa.Table,
        verdicts: pa.Table,
        verified: pa.Array,
        contributor: pa.Array,
        rl_rows: list[tuple[Any, ...]],
    ) -> None:
        """The card's statistics, from this chunk's published rows."""
        stats = self.stats
        with_rows = set(samples["ppos"].to_pylist()) | {row[0] for row in rl_rows}
        for i in sorted(with_rows):
            pk, first = chunk[i]
            stats.prompts += 1
            stats.prompts_per_source[infos[i].name] += 1
            if first == self.scope.version:
                stats.new_prompts += 1
                self.new_prompts.append(pk)
        if not samples.num_rows:
            return
        domains = pa.array([infos[i].domain for i in range(len(infos))], pa.string())
        for domain, n in _value_counts(domains.take(samples["ppos"].combine_chunks())):
            stats.samples_per_domain[domain] += n
        per_model = (
            pa.table(
                {
                    "model": samples["model"],
                    "temperature": samples["temperature"],
                    "verified": verified.cast(pa.int64()),
                }
            )
            .group_by(["model", "temperature"])
            .aggregate([("verified", "sum"), ("verified", "count")])
        )
        for model, temperature, ok, n in zip(
            per_model["model"].to_pylist(),
            per_model["temperature"].to_pylist(),
            per_model["verified_sum"].to_pylist(),
            per_model["verified_count"].to_pylist(),
            strict=True,
        ):
            counts = stats.per_model[(model, temperature)]
            counts[0] += n
            counts[1] += ok
        stats.verified += int(pc.sum(verified.cast(pa.int64())).as_py() or 0)
        pairs = verdicts.group_by(["verifier", "version"]).aggregate([])
        for verifier, version in zip(
            pairs["verifier"].to_pylist(), pairs["version"].to_pylist(), strict=True
        ):
            stats.verifier_versions[verifier].add(version)
        for name, n in _value_counts(contributor):
            stats.contributor_rows[name] += n


def _arrays(table: pa.Table) -> dict[str, pa.Array]:
    """A table's columns, each as one array (compute on them returns arrays, not chunks)."""
    return {name: table[name].combine_chunks() for name in table.column_names}


def _whole(values: pa.Array) -> pa.Array:
    """Whole numbers as int64, anything else null (max_tokens read as a JSON number)."""
    whole = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
    return pc.if_else(
        whole, pc.cast(pc.if_else(whole, values, 0.0), pa.int64()), pa.scalar(None, pa.int64())
    )


def _value_counts(values: pa.Array) -> list[tuple[Any, int]]:
    counted = pc.value_counts(values)
    return list(
        zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
    )


def _query(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, type_) for name, type_ in fields])


# The columns each query reads, in values_list order, with the Arrow type each comes back as.
_SAMPLE_QUERY = _query(
    ("pk", pa.int64()),
    ("prompt_id", pa.int64()),
    ("contributor_id", pa.int64()),
    ("model", pa.string()),
    ("model_revision", pa.string()),
    ("temperature", pa.float64()),
    ("top_p_value", pa.float64()),
    ("max_tokens_value", pa.float64()),
    ("sampling_text", pa.string()),
    ("completion", pa.string()),
    ("reasoning", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("status", pa.string()),
    ("duplicate_of_id", pa.int64()),
)
# The sample columns a row carries as they were read.
_SAMPLE_PASSED_ON = (
    "model",
    "model_revision",
    "temperature",
    "top_p",
    "sampling",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "status",
)
# Their names in the rows.
_SAMPLE_COLUMNS = [
    {"top_p_value": "top_p", "max_tokens_value": "max_tokens", "sampling_text": "sampling"}.get(
        name, name.removesuffix("_id") if name == "duplicate_of_id" else name
    )
    for name in _SAMPLE_QUERY.names
]
_VERDICT_QUERY = _query(
    ("sample_id", pa.int64()),
    ("verifier", pa.string()),
    ("version", pa.int64()),
    ("status", pa.string()),
    ("score", pa.float64()),
)
_REWARD_QUERY = _query(
    ("sample_id", pa.int64()), ("raw", pa.float64()), ("normalised", pa.float64())
)
_SELECTION_QUERY = _query(
    ("prompt_id", pa.int64()),
    ("kind", pa.string()),
    ("sample_id", pa.int64()),
    ("model", pa.string()),
    ("rank", pa.int64()),
)
_PROMPT_QUERY = _query(
    ("pk", pa.int64()),
    ("prompt_set_id", pa.int64()),
    ("external_id", pa.string()),
    ("messages_text", pa.string()),
)
_GOLD_QUERY = _query(
    ("prompt_id", pa.int64()), ("answer", pa.string()), ("tests_text", pa.string())
)


@dataclass
class _ChunkData:
    """What one chunk's queries return."""

    prompts: pa.Table
    samples: pa.Table
    verdicts: pa.Table
    rewards: pa.Table
    selections: pa.Table
    pairs: pa.Table
    gold: pa.Table = field(default_factory=_GOLD_QUERY.empty_table)


register_lookups(
    [
        Prompt._meta.get_field("id"),
        Sample._meta.get_field("prompt"),
        Selection._meta.get_field("prompt"),
        PreferencePair._meta.get_field("prompt"),
        PromptGold._meta.get_field("prompt"),
    ]
)
_PAIR_QUERY = _query(
    ("prompt_id", pa.int64()),
    ("chosen_id", pa.int64()),
    ("rejected_id", pa.int64()),
    ("margin", pa.float64()),
)

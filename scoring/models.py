"""The dataset: prompt sets, prompts with their hidden gold, and samples.

Gold (reference answers, hidden tests) sits in its own table so that no query that builds a
contributor-facing response ever loads it by accident.
"""

from __future__ import annotations

import fnmatch
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

DEFAULT_INSTRUCTION = (
    "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
)


class Domain(models.TextChoices):
    MATH = "math", "Math"
    CODE = "code", "Code"
    MCQ = "mcq", "Multiple choice"
    STRING = "string", "Short string answer"
    GENERAL = "general", "General"


def default_temperatures() -> list[float]:
    return [0.6]


class PromptSet(models.Model):
    """A named collection of prompts and the sampling plan that says how to cover them."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    domain = models.CharField(max_length=16, choices=Domain.choices)
    license = models.CharField(max_length=64, help_text="SPDX identifier, e.g. MIT or CC-BY-4.0.")
    source = models.URLField(max_length=500, blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive sets are never leased.")
    created_at = models.DateTimeField(auto_now_add=True)

    # --- sampling plan (DeepSeek's recommended R1 sampling by default) ---
    models_allowed = models.JSONField(
        default=list,
        blank=True,
        help_text='Hugging Face ids or fnmatch patterns ("Qwen/Qwen3-*"). Empty: any model.',
    )
    temperatures = models.JSONField(default=default_temperatures)
    samples_per_prompt = models.PositiveIntegerField(
        default=4, help_text="Samples per prompt, per model, per temperature."
    )
    top_p = models.FloatField(default=0.95)
    max_tokens = models.PositiveIntegerField(default=32768)
    instruction_template = models.TextField(
        blank=True,
        help_text="Applied to the last user message; {prompt} stands for it. Empty: none.",
    )
    priority = models.IntegerField(default=0, help_text="Higher sets are leased first.")
    lease_seconds = models.PositiveIntegerField(default=3600)
    replication = models.PositiveSmallIntegerField(
        default=1, help_text="How many times each slot's samples are collected (cross-checks)."
    )
    verifier_config = models.JSONField(default=dict, blank=True)
    # Whether the set's licence lets us publish its prompts (and the gold of closed ones). A
    # set that may not be redistributed is still collected and scored, never released.
    redistributable = models.BooleanField(
        default=True,
        help_text="Its prompts may go into public releases (the licence allows redistribution).",
    )
    # The last `Prompt.seq` handed out in this set (see Prompt.seq). Only ever grows.
    last_prompt_seq = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(domain__in=[d.value for d in Domain]), name="promptset_domain_valid"
            ),
            models.CheckConstraint(
                condition=Q(replication__gte=1), name="promptset_replication_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(samples_per_prompt__gte=1), name="promptset_samples_per_prompt_gte_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # `last_prompt_seq` is written only by `next_seqs`, under the row lock: a save of a
        # set loaded before an import (the admin's change form) must not write it back.
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name != "last_prompt_seq"
            ]
        super().save(*args, **kwargs)

    def clean(self) -> None:
        # A typo in the verifier settings must fail here, in the admin form, not later in
        # every scoring task of the set.
        from scoring.verifiers import verifiers_for

        if not isinstance(self.verifier_config, dict):
            raise ValidationError({"verifier_config": "Must be a JSON object."})
        try:
            verifiers_for(self.domain, self.verifier_config)
        except ValueError as exc:
            raise ValidationError({"verifier_config": str(exc)}) from None
        if (
            not isinstance(self.temperatures, list)
            or not self.temperatures
            or not all(isinstance(t, int | float) and 0 <= t <= 10 for t in self.temperatures)
        ):
            raise ValidationError({"temperatures": "A non-empty list of numbers from 0 to 10."})
        if not isinstance(self.models_allowed, list) or not all(
            isinstance(m, str) for m in self.models_allowed
        ):
            raise ValidationError({"models_allowed": "A list of model ids or patterns."})

    def admits_model(self, model_id: str) -> bool:
        if not self.models_allowed:
            return True
        return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.models_allowed)

    @staticmethod
    def next_seqs(prompt_set_id: int, count: int) -> range:
        """Hands out `count` prompt seqs of the set. Locks the set's row until the caller's
        transaction ends: imports into one set take turns, so their seqs commit in order."""
        assert transaction.get_connection().in_atomic_block, "call inside the inserting transaction"
        last = (
            PromptSet.objects.select_for_update()
            .filter(pk=prompt_set_id)
            .values_list("last_prompt_seq", flat=True)
            .get()
        )
        PromptSet.objects.filter(pk=prompt_set_id).update(last_prompt_seq=last + count)
        # Every prompt is made through here (save() and the import's bulk insert): the public
        # prompt count (scoring/counters.py) is kept in the same transaction.
        from scoring import counters

        counters.add({counters.prompts_in_set(prompt_set_id): count})
        return range(last + 1, last + count + 1)

    @property
    def slot_target(self) -> int:
        return self.samples_per_prompt * self.replication

    def render_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages a model is sent: the prompt's own, with the instruction template applied
        to the last user message. The worker sends these as they are."""
        if not self.instruction_template:
            return messages
        rendered = [dict(m) for m in messages]
        for message in reversed(rendered):
            if message.get("role") == "user":
                message["content"] = self.instruction_template.replace(
                    "{prompt}", str(message.get("content", ""))
                )
                break
        return rendered


class Prompt(models.Model):
    # No index of its own: the set's unique (set, seq) and (set, text_hash) indexes serve every
    # lookup by set, and a plain one tempts PostgreSQL's planner, for a set imported since the
    # last ANALYZE, into reading all its prompts and sorting them instead of walking (set, seq).
    prompt_set = models.ForeignKey(
        PromptSet, on_delete=models.CASCADE, related_name="prompts", db_index=False
    )
    external_id = models.CharField(max_length=200, blank=True)
    messages = models.JSONField(help_text="Chat messages: [{role, content}, ...].")
    text_hash = models.CharField(max_length=64, help_text="sha256 of the normalised text.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Position in its set, 1, 2, 3, …: handed out by `PromptSet.next_seqs` under the set's row
    # lock, so within a set prompts become visible in seq order (ids do not: concurrent imports
    # commit in any order). Slots are made along it (contributors.models.SlotFrontier).
    seq = models.BigIntegerField(editable=False)
    # Closed to collection: never leased or judged for credit again, and only now may its gold
    # (and the per-sample verdicts that depend on it) be disclosed. See scoring/disclosure.py.
    closed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Shares a word 8-gram with a benchmark problem (scoring/decontam.py): kept, but never in a
    # selection or a release. `contamination` names the matches ([{benchmark, id, ngram}]).
    contaminated = models.BooleanField(default=False, db_index=True)
    contamination = models.JSONField(default=list, blank=True)
    # A near-duplicate (MinHash, scoring/dedup.py) of a prompt imported earlier, in any set.
    near_duplicate_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prompt_set", "text_hash"], name="prompt_unique_text"),
            models.UniqueConstraint(fields=["prompt_set", "seq"], name="prompt_unique_seq"),
        ]
        indexes = [
            models.Index(fields=["prompt_set", "external_id"]),
            # Twins across sets (same normalised text): a release holds back a closed prompt
            # whose twin is still open (scoring/publishing/rows.py).
            models.Index(fields=["text_hash"], name="prompt_text_hash"),
        ]

    def __str__(self) -> str:
        return f"{self.prompt_set.name}/{self.external_id or self.pk}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Every way of making a prompt gets its seq from the set (bulk_create, which skips
        # save(), fails on the NOT NULL column instead of making a prompt no slot will reach).
        if self.seq is None:
            with transaction.atomic():
                (self.seq,) = PromptSet.next_seqs(self.prompt_set_id, 1)
                super().save(*args, **kwargs)
            return
        super().save(*args, **kwargs)

    @property
    def text(self) -> str:
        return "\n\n".join(str(m.get("content", "")) for m in self.messages)


class PromptGold(models.Model):
    """Hidden reference for a prompt. Never serialised into a contributor-facing response."""

    prompt = models.OneToOneField(Prompt, on_delete=models.CASCADE, related_name="gold")
    answer = models.TextField(blank=True)
    tests = models.JSONField(null=True, blank=True)

    class Meta:
        verbose_name = "prompt gold"

    def __str__(self) -> str:
        return f"gold for {self.prompt_id}"


class SampleStatus(models.TextChoices):
    RECEIVED = "received"
    SCORING = "scoring"
    VERIFIED = "verified"
    REJECTED = "rejected"
    ERROR = "error"


class Sample(models.Model):
    """One generation uploaded by a contributor. Unique by the client's UUID."""

    client_id = models.UUIDField(unique=True, default=uuid.uuid4)
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="samples")
    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="samples"
    )
    model = models.CharField(max_length=200)
    model_revision = models.CharField(max_length=100, blank=True)
    temperature = models.FloatField()
    sampling = models.JSONField(default=dict)
    completion = models.TextField()
    reasoning = models.TextField(blank=True, help_text="Empty when the model did not split it out.")
    finish_reason = models.CharField(max_length=32)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    generation_ms = models.PositiveIntegerField(null=True, blank=True)
    # Counted towards its slot's target (False: late or beyond what was asked, kept as extra).
    counted = models.BooleanField(default=True)
    # Uploaded for a spot check (contributors.services.spotchecks): a second contributor's
    # samples of a slot already served, asked only to compare with the first. A check, not
    # data: counted towards no target, credit, bounty or progress, and never selected.
    replica = models.BooleanField(default=False)
    status = models.CharField(
        max_length=16, choices=SampleStatus.choices, default=SampleStatus.RECEIVED
    )
    status_reason = models.CharField(max_length=500, blank=True)
    quarantined = models.BooleanField(default=False)
    # When it was last quarantined (scoring.services.quarantine_samples; null: never, or before
    # this was kept). A release lists a published row as withdrawn only when the quarantine
    # came after the prompt was first published (scoring/publishing/service.py).
    quarantined_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    # The scoring claim (scoring/pipeline.py): every claim adds one to `attempts`; the task that
    # holds it is `claim_key` (its Celery task id, which a retry and a redelivery keep), and
    # finishing is conditional on both. Past THINKPOOL["MAX_SCORING_ATTEMPTS"] the sample ends
    # `error` with reason "poison".
    attempts = models.PositiveSmallIntegerField(default=0)
    claim_key = models.CharField(max_length=64, blank=True)
    # sha256 of the normalised text (scoring/dedup.py); `duplicate_of` is the first stored
    # sample of the same prompt it is an exact or near copy of: left out of every selection.
    text_hash = models.CharField(max_length=64, blank=True)
    duplicate_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # A transient verifier error is judged again, with back-off, from this time on.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A maintainer's decision (approve: verified, reject: rejected) that overrides the
    # verifiers: scoring again keeps it (scoring.pipeline). Who and why: the audit trail.
    override = models.CharField(
        max_length=16,
        blank=True,
        choices=[(SampleStatus.VERIFIED, "approved"), (SampleStatus.REJECTED, "rejected")],
    )

    class Meta:
        indexes = [
            models.Index(fields=["status", "status_changed_at"]),
            models.Index(fields=["prompt", "model", "temperature"]),
            models.Index(fields=["contributor", "-received_at"]),
            models.Index(fields=["status", "next_attempt_at"]),
        ]

    def __str__(self) -> str:
        return str(self.client_id)


class ScoringOutbox(models.Model):
    """One scoring message not yet known to have reached the broker (a transactional outbox).

    An upload writes its rows in its own transaction, so they commit with its samples or not
    at all; on commit each row is published and deleted (scoring.tasks.enqueue_on_commit). A
    row that outlives that (the broker was away, the process died between commit and publish)
    is published by the minute sweep once it is tasks.UNQUEUED_AFTER_S old. Samples are never
    rewritten to say they were queued: a row here is the whole record, and the table holds
    only messages in flight or undelivered, a handful of rows however many samples there are.
    """

    sample_ids = models.JSONField(help_text="Ids of one message, at most tasks.QUEUE_CHUNK.")
    # Which task takes them: the sandbox's queue (score_code_samples) or the cheap verifiers'.
    sandbox = models.BooleanField(default=False)
    rescore = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "scoring outbox message"

    def __str__(self) -> str:
        queue = "sandbox" if self.sandbox else "verify"
        return (
            f"{len(self.sample_ids)} samples for {queue} since {self.created_at:%Y-%m-%d %H:%M:%S}"
        )


class VerdictStatus(models.TextChoices):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


class VerdictQuerySet(models.QuerySet["Verdict"]):
    def upsert(self, verdicts: list[Verdict]) -> None:
        """One statement for all of `verdicts`: a verdict already stored for its (sample,
        verifier, version) is overwritten (a retry's, or the same task run twice)."""
        if verdicts:
            self.bulk_create(
                verdicts,
                update_conflicts=True,
                unique_fields=["sample", "verifier", "version"],
                update_fields=["status", "score", "details", "duration_ms", "created_at"],
            )


class Verdict(models.Model):
    """One verifier's judgement of one sample. Unique by (sample, verifier, version), so a
    task that runs twice upserts instead of adding a second row (`Verdict.objects.upsert`)."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="verdicts")
    verifier = models.CharField(max_length=32)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=VerdictStatus.choices)
    score = models.FloatField(default=0.0)
    details = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now=True)

    objects = VerdictQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sample", "verifier", "version"], name="verdict_unique_per_version"
            ),
        ]
        indexes = [models.Index(fields=["verifier", "version"])]

    def __str__(self) -> str:
        return f"{self.verifier} v{self.version}: {self.status}"


class RewardScore(models.Model):
    """One reward model's score of one sample (scoring/rewards/). Raw scores are comparable
    only within a prompt: `normalised` is the per-prompt value the ranking uses."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="rewards")
    reward_model = models.CharField(max_length=200)
    version = models.PositiveIntegerField()
    raw = models.FloatField()
    normalised = models.FloatField(null=True, blank=True)
    tokens = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sample", "reward_model", "version"], name="reward_unique_per_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reward_model} v{self.version}: {self.raw:.4f}"


class PromptModelStats(models.Model):
    """Per (prompt, model): samples stored, samples judged right or wrong, and verified ones,
    kept as statuses change (scoring/stats.py), never by scanning samples."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="model_stats")
    model = models.CharField(max_length=200)
    # Signed: they move by deltas, and a sample put in a status some other way than the
    # pipeline (a hand edit, a test) must not make a status change fail; `build_selections
    # --stats` recomputes them from the rows.
    samples = models.IntegerField(default=0)
    judged = models.IntegerField(default=0)
    verified = models.IntegerField(default=0)
    best_sample = models.ForeignKey(
        Sample, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "prompt model stats"
        constraints = [
            models.UniqueConstraint(fields=["prompt", "model"], name="promptmodelstats_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.prompt_id} / {self.model}: {self.verified}/{self.judged}"

    @property
    def pass_rate(self) -> float | None:
        return self.verified / self.judged if self.judged else None

    @property
    def difficulty(self) -> float | None:
        rate = self.pass_rate
        return None if rate is None else 1.0 - rate


class SetProgress(models.Model):
    """Progress of a prompt set per (model, temperature), kept as work happens
    (scoring/progress.py) so that no page counts samples. `submitted`: samples stored, any
    status. `verified` / `rejected`: samples of *closed* prompts only, by their status now:
    per-status numbers over open prompts would tell a lone contributor whether their guess was
    right (scoring.disclosure). Sharded like Counter: concurrent uploads of one cell do not
    queue on one row lock; a read sums the shards."""

    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="progress")
    model = models.CharField(max_length=200)
    temperature = models.FloatField()
    shard = models.PositiveSmallIntegerField(default=0)
    # Signed: they move by deltas (see PromptModelStats); `check_ledger --repair` recomputes.
    submitted = models.BigIntegerField(default=0)
    verified = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "set progress"
        constraints = [
            models.UniqueConstraint(
                fields=["prompt_set", "model", "temperature", "shard"],
                name="setprogress_unique_cell",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prompt_set_id} / {self.model} @ {self.temperature}"


class SelectionKind(models.TextChoices):
    SFT = "sft", "SFT (best-of-n)"
    RL = "rl", "RL prompt"


class Selection(models.Model):
    """A sample chosen for SFT (`rank` among the prompt's picks), or a (prompt, model) chosen
    as an RL prompt (no sample), under a ranking policy and its version."""

    kind = models.CharField(max_length=8, choices=SelectionKind.choices)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="selections")
    model = models.CharField(max_length=200)
    sample = models.ForeignKey(
        Sample, on_delete=models.CASCADE, null=True, blank=True, related_name="selections"
    )
    rank = models.PositiveSmallIntegerField(default=0)
    policy = models.CharField(max_length=64)
    policy_version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "policy", "sample"],
                condition=Q(sample__isnull=False),
                name="selection_unique_sample",
            ),
            models.UniqueConstraint(
                fields=["kind", "policy", "prompt", "model"],
                condition=Q(sample__isnull=True),
                name="selection_unique_prompt_model",
            ),
        ]
        indexes = [models.Index(fields=["kind", "prompt"])]

    def __str__(self) -> str:
        return f"{self.kind}: prompt {self.prompt_id} / {self.model} #{self.rank}"


class PreferencePair(models.Model):
    """Chosen over rejected, two samples of one prompt, under a policy version."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="pairs")
    chosen = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="+")
    margin = models.FloatField()
    policy = models.CharField(max_length=64)
    policy_version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["chosen", "rejected", "policy", "policy_version"], name="pair_unique"
            ),
        ]
        indexes = [models.Index(fields=["prompt"])]

    def __str__(self) -> str:
        return f"{self.chosen_id} > {self.rejected_id} ({self.margin:+.3f})"


class Counter(models.Model):
    """A running total for the public stats (scoring/counters.py), kept as work happens so no
    page aggregates whole tables. Sharded: each writer adds to one of a few rows picked at
    random, so concurrent uploads do not queue on one row lock; a read sums the shards."""

    name = models.CharField(max_length=64)
    shard = models.PositiveSmallIntegerField()
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "shard"], name="counter_unique_shard"),
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.shard}] = {self.value}"


class ReleaseTarget(models.TextChoices):
    LOCAL = "local", "Local folder (a git repository laid out like the Hub's)"
    HUB = "hub", "Hugging Face Hub"


class ReleaseState(models.TextChoices):
    PENDING = "pending"
    BUILDING = "building"
    PUBLISHED = "published"
    FAILED = "failed"


# The configs of a release, in the order the card, the admin and the command list them.
RELEASE_CONFIGS = ("sft", "preference", "rl", "raw")


class Release(models.Model):
    """One numbered version of the dataset at one target (scoring/publishing/).

    `version` counts per (target, repo_id) and is tagged `v<version>` there. A release is
    `published` only once the target has confirmed its commit and tag; until then it is the
    repository's one open release (a constraint), so a failed or interrupted publish is retried
    under the same number and never makes a second release.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    target = models.CharField(max_length=8, choices=ReleaseTarget.choices)
    repo_id = models.CharField(max_length=200, help_text="ORG/NAME on the Hub.")
    location = models.CharField(
        max_length=500, blank=True, help_text="The local folder, or the Hub endpoint."
    )
    version = models.PositiveIntegerField()
    state = models.CharField(
        max_length=16, choices=ReleaseState.choices, default=ReleaseState.PENDING
    )
    policy = models.CharField(max_length=64, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    row_counts = models.JSONField(default=dict, blank=True, help_text="Rows per config.")
    # Path in the repository -> sha256 of every file the release consists of.
    files = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    commit_id = models.CharField(max_length=64, blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by each attempt's claim (scoring.publishing.service): a worker killed mid-build
    # leaves `building`, which another attempt may take over once it is this old.
    started_at = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(max_length=64, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    published_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["target", "repo_id", "version"], name="release_unique_version"
            ),
            models.UniqueConstraint(
                fields=["target", "repo_id"],
                condition=~Q(state="published"),
                name="release_one_open_per_repo",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repo_id} {self.tag} ({self.target}, {self.state})"

    @property
    def tag(self) -> str:
        return f"v{self.version}"

    def ordered_row_counts(self) -> list[tuple[str, int]]:
        """(config, rows) in RELEASE_CONFIGS order (PostgreSQL's jsonb keeps its own key
        order), then anything else by name."""
        counts = self.row_counts if isinstance(self.row_counts, dict) else {}
        rank = {name: i for i, name in enumerate(RELEASE_CONFIGS)}
        return sorted(counts.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


class ReleasedPrompt(models.Model):
    """The release of a repository that first published a prompt: every row of the prompt
    carries that version (`release`), so a row that does not change keeps its bytes and its
    shard need not be uploaded again. Written when a release is confirmed published."""

    target = models.CharField(max_length=8, choices=ReleaseTarget.choices)
    repo_id = models.CharField(max_length=200)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["target", "repo_id", "prompt"], name="releasedprompt_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repo_id} v{self.version}: prompt {self.prompt_id}"


class AuditEntry(models.Model):
    """One maintainer decision: who, when, what, on which records and why (scoring/audit.py).
    Written by the action that decides, in its transaction; never edited or deleted."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    # The records it acted on: "app_label.model" and their ids (a bulk action's can be many).
    target_type = models.CharField(max_length=64)
    target_ids = models.JSONField(default=list)
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit trail"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} ({len(self.target_ids)})"


class FlagKind(models.TextChoices):
    COPY = "copy", "Copy of another contributor's sample"
    ATTESTATION = "attestation", "Claimed model not attested"
    REPLICA_DISAGREEMENT = "replica_disagreement", "Disagrees with its spot-check replica"
    HOARDING = "hoarding", "Leases hoarded"


class Flag(models.Model):
    """An automatic suspicion about one sample, or about a contributor's conduct (no sample),
    for a maintainer to look at (scoring/flags.py): what was found (`kind`) and why
    (`evidence`, JSON: for a copy, the original sample, its contributor, the similarity). One
    per (sample, kind), or one open per (contributor, kind) for conduct: raising it again
    updates the evidence. A flag is open until a maintainer clears it (who, when, why); a
    cleared flag is never raised again by the same check, and one whose condition went away
    stays as it is (`evidence.resolved` says since when) for a maintainer to clear. A flag
    counts against its contributor's trust (contributors.services.trust) until cleared;
    quarantine and bans stay maintainers' decisions."""

    # The sample it is about; none for a flag about the contributor's conduct as a whole
    # (hoarding leases, persistent disagreement with spot checks).
    sample = models.ForeignKey(
        Sample, on_delete=models.CASCADE, null=True, blank=True, related_name="flags"
    )
    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flags"
    )
    kind = models.CharField(max_length=32, choices=FlagKind.choices)
    evidence = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    cleared_at = models.DateTimeField(null=True, blank=True)
    clear_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["sample", "kind"],
                condition=Q(sample__isnull=False),
                name="flag_unique_sample_kind",
            ),
            # One open flag per contributor and kind about their conduct: raising it again
            # updates its evidence; once cleared, a new one may be raised.
            models.UniqueConstraint(
                fields=["contributor", "kind"],
                condition=Q(sample__isnull=True, cleared_at__isnull=True),
                name="flag_unique_open_conduct",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=[k.value for k in FlagKind]), name="flag_kind_valid"
            ),
        ]
        indexes = [
            # The maintainers' queue: open flags, newest first, by kind.
            models.Index(
                fields=["kind", "-created_at"],
                condition=Q(cleared_at__isnull=True),
                name="flag_open",
            ),
        ]

    def __str__(self) -> str:
        state = "cleared" if self.cleared_at else "open"
        about = f"sample {self.sample_id}" if self.sample_id else f"user {self.contributor_id}"
        return f"{self.kind} on {about} ({state})"

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None

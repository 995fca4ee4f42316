from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet, Sum
from django.http import HttpRequest

from scoring.models import (
    PreferencePair,
    Prompt,
    PromptGold,
    PromptModelStats,
    PromptSet,
    RewardScore,
    Sample,
    SampleStatus,
    Selection,
    Verdict,
)
from scoring.pipeline import POISON_PREFIX


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "domain",
        "license",
        "is_active",
        "priority",
        "prompt_count",
        "contaminated_count",
        "progress",
        "temperatures",
        "samples_per_prompt",
    ]
    list_filter = ["domain", "is_active", "license"]
    search_fields = ["name", "description", "source"]
    fieldsets = [
        (None, {"fields": ["name", "description", "domain", "license", "source", "is_active"]}),
        (
            "Sampling plan",
            {
                "fields": [
                    "models_allowed",
                    "temperatures",
                    "samples_per_prompt",
                    "top_p",
                    "max_tokens",
                    "instruction_template",
                    "priority",
                    "lease_seconds",
                    "replication",
                ]
            },
        ),
        ("Verifiers", {"fields": ["verifier_config"]}),
    ]
    actions = ["retire"]

    @admin.display(description="prompts")
    def prompt_count(self, obj: PromptSet) -> int:
        return obj.prompts.count()

    @admin.display(description="contaminated")
    def contaminated_count(self, obj: PromptSet) -> int:
        # Prompts sharing an 8-gram with a benchmark: kept, flagged, in no selection.
        return obj.prompts.filter(contaminated=True).count()

    @admin.display(description="slots filled / target")
    def progress(self, obj: PromptSet) -> str:
        totals = obj.slots.aggregate(filled=Sum("filled"), target=Sum("target"))
        filled, target = totals["filled"] or 0, totals["target"] or 0
        share = f" ({100 * filled / target:.0f}%)" if target else ""
        return f"{filled} / {target}{share}"

    @admin.action(description="Retire: close all prompts to collection")
    def retire(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        from scoring.services import retire_prompt_set

        sets = list(queryset)
        closed = sum(retire_prompt_set(prompt_set=ps) for ps in sets)
        self.message_user(
            request,
            f"{len(sets)} sets retired (inactive); {closed} prompts closed to collection "
            "(copies of the same text in other sets included). Their verdicts are now shown "
            "to contributors and their gold may be published.",
        )


class PromptGoldInline(admin.StackedInline):
    model = PromptGold
    can_delete = False


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "prompt_set",
        "external_id",
        "short_text",
        "contaminated",
        "created_at",
        "closed_at",
    ]
    list_filter = ["prompt_set", "contaminated", ("closed_at", admin.EmptyFieldListFilter)]
    search_fields = ["external_id", "text_hash"]
    list_select_related = ["prompt_set"]
    readonly_fields = ["closed_at", "contaminated", "contamination", "near_duplicate_of"]
    inlines = [PromptGoldInline]
    actions = ["close_to_collection"]

    def get_readonly_fields(self, request: HttpRequest, obj: Prompt | None = None) -> list[str]:
        # A prompt's set never changes: its seq is its place in that set, and its slots are
        # made along that set's seqs (contributors.services.ledger).
        if obj is not None:
            return [*self.readonly_fields, "prompt_set"]
        return list(self.readonly_fields)

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return obj.text[:120]

    @admin.action(description="Close to collection")
    def close_to_collection(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> None:
        from scoring.services import close_prompts

        closed = close_prompts(prompt_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request,
            f"{closed} prompts closed to collection (copies of the same text in other sets "
            "included). Their verdicts are now shown to contributors and their gold may be "
            "published.",
        )


class VerdictInline(admin.TabularInline):
    model = Verdict
    extra = 0
    readonly_fields = [
        "verifier",
        "version",
        "status",
        "score",
        "details",
        "duration_ms",
        "created_at",
    ]


class ScoringTroubleFilter(admin.SimpleListFilter):
    """Samples whose scoring went wrong: poison (crashed or timed out its task every attempt),
    a transient error waiting for its next try, or judged more than once."""

    title = "scoring trouble"
    parameter_name = "trouble"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("poison", "poison"),
            ("retry", "error, retry pending"),
            ("gave_up", "error, not retried"),
            ("several", "more than one attempt"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Sample]) -> QuerySet[Sample]:
        error = queryset.filter(status=SampleStatus.ERROR)
        match self.value():
            case "poison":
                return error.filter(status_reason__startswith=POISON_PREFIX)
            case "retry":
                return error.filter(next_attempt_at__isnull=False)
            case "gave_up":
                return error.filter(next_attempt_at__isnull=True)
            case "several":
                return queryset.filter(attempts__gt=1)
        return queryset


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "client_id",
        "contributor",
        "model",
        "temperature",
        "status",
        "attempts",
        "short_reason",
        "counted",
        "quarantined",
        "finish_reason",
        "completion_tokens",
        "received_at",
    ]
    list_filter = [
        "status",
        ScoringTroubleFilter,
        "quarantined",
        "counted",
        "finish_reason",
        "model",
    ]
    search_fields = ["=client_id", "model", "contributor__username"]
    list_select_related = ["contributor"]
    raw_id_fields = ["prompt", "contributor"]
    # Written by the scoring claim only (scoring/pipeline.py): an edit by hand would break it.
    readonly_fields = ["attempts", "claim_key", "next_attempt_at", "status_changed_at"]
    inlines = [VerdictInline]
    actions = ["quarantine", "release_from_quarantine", "score_again"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # A stored sample is counted in its slot, the contributor's per-prompt cap and the
        # public counters: it is quarantined, never deleted.
        return False

    @admin.display(description="reason", ordering="status_reason")
    def short_reason(self, obj: Sample) -> str:
        return obj.status_reason[:80]

    @admin.action(description="Quarantine (hold from releases)")
    def quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        from scoring.tasks import schedule_rebuilds

        prompt_ids = list(queryset.values_list("prompt_id", flat=True).distinct())
        n = queryset.update(quarantined=True)
        schedule_rebuilds(prompt_ids)  # a quarantined sample leaves every selection
        self.message_user(request, f"{n} samples quarantined.")

    @admin.action(description="Release from quarantine (back to scoring)")
    def release_from_quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        from scoring.pipeline import requeue
        from scoring.tasks import queue_scoring

        # A maintainer's fresh start: its attempts start over (the public counters move with it).
        ids = requeue(
            sample_ids=list(queryset.filter(quarantined=True).values_list("pk", flat=True)),
            release=True,
        )
        queue_scoring(ids)
        self.message_user(request, f"{len(ids)} samples released and queued for scoring.")

    @admin.action(description="Score again (samples in error, poison included)")
    def score_again(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        from scoring.pipeline import requeue
        from scoring.tasks import queue_scoring

        # Only samples still `error`: one a task claimed meanwhile is left to it.
        ids = requeue(
            sample_ids=list(queryset.values_list("pk", flat=True)),
            only_status=SampleStatus.ERROR,
        )
        queue_scoring(ids)
        self.message_user(request, f"{len(ids)} samples queued for scoring again.")


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ["sample", "verifier", "version", "status", "score", "duration_ms", "created_at"]
    list_filter = ["verifier", "status", "version"]
    raw_id_fields = ["sample"]


class _ReadOnly(admin.ModelAdmin):
    """Derived records: written by scoring.stats / scoring.selection, never by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(PromptModelStats)
class PromptModelStatsAdmin(_ReadOnly):
    list_display = [
        "prompt",
        "model",
        "samples",
        "judged",
        "verified",
        "shown_pass_rate",
        "shown_difficulty",
        "best_sample",
    ]
    list_filter = ["model"]
    search_fields = ["model", "prompt__external_id"]
    list_select_related = ["prompt__prompt_set"]
    raw_id_fields = ["prompt", "best_sample"]

    @admin.display(description="pass rate")
    def shown_pass_rate(self, obj: PromptModelStats) -> str:
        return "-" if obj.pass_rate is None else f"{obj.pass_rate:.2f}"

    @admin.display(description="difficulty")
    def shown_difficulty(self, obj: PromptModelStats) -> str:
        return "-" if obj.difficulty is None else f"{obj.difficulty:.2f}"


@admin.register(Selection)
class SelectionAdmin(_ReadOnly):
    list_display = ["kind", "prompt", "model", "sample", "rank", "policy", "policy_version"]
    list_filter = ["kind", "policy", "model"]
    raw_id_fields = ["prompt", "sample"]


@admin.register(PreferencePair)
class PreferencePairAdmin(_ReadOnly):
    list_display = ["prompt", "chosen", "rejected", "margin", "policy", "policy_version"]
    list_filter = ["policy"]
    raw_id_fields = ["prompt", "chosen", "rejected"]


@admin.register(RewardScore)
class RewardScoreAdmin(_ReadOnly):
    list_display = ["sample", "reward_model", "version", "raw", "normalised", "truncated"]
    list_filter = ["reward_model", "version", "truncated"]
    raw_id_fields = ["sample"]

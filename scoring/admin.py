from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone

from scoring.models import Prompt, PromptGold, PromptSet, Sample, SampleStatus, Verdict


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "domain",
        "license",
        "is_active",
        "priority",
        "prompt_count",
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

    @admin.display(description="prompts")
    def prompt_count(self, obj: PromptSet) -> int:
        return obj.prompts.count()

    @admin.display(description="slots filled / target")
    def progress(self, obj: PromptSet) -> str:
        totals = obj.slots.aggregate(filled=Sum("filled"), target=Sum("target"))
        filled, target = totals["filled"] or 0, totals["target"] or 0
        share = f" ({100 * filled / target:.0f}%)" if target else ""
        return f"{filled} / {target}{share}"


class PromptGoldInline(admin.StackedInline):
    model = PromptGold
    can_delete = False


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt_set", "external_id", "short_text", "created_at"]
    list_filter = ["prompt_set"]
    search_fields = ["external_id", "text_hash"]
    list_select_related = ["prompt_set"]
    inlines = [PromptGoldInline]

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return obj.text[:120]


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


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "client_id",
        "contributor",
        "model",
        "temperature",
        "status",
        "counted",
        "quarantined",
        "finish_reason",
        "completion_tokens",
        "received_at",
    ]
    list_filter = ["status", "quarantined", "counted", "finish_reason", "model"]
    search_fields = ["=client_id", "model", "contributor__username"]
    list_select_related = ["contributor"]
    raw_id_fields = ["prompt", "contributor"]
    inlines = [VerdictInline]
    actions = ["quarantine", "release_from_quarantine"]

    @admin.action(description="Quarantine (hold from releases)")
    def quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        self.message_user(request, f"{queryset.update(quarantined=True)} samples quarantined.")

    @admin.action(description="Release from quarantine (back to scoring)")
    def release_from_quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        from scoring.tasks import queue_scoring

        ids = list(queryset.filter(quarantined=True).values_list("pk", flat=True))
        Sample.objects.filter(pk__in=ids).update(
            quarantined=False, status=SampleStatus.RECEIVED, status_changed_at=timezone.now()
        )
        queue_scoring(ids)
        self.message_user(request, f"{len(ids)} samples released and queued for scoring.")


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ["sample", "verifier", "version", "status", "score", "duration_ms", "created_at"]
    list_filter = ["verifier", "status", "version"]
    raw_id_fields = ["sample"]

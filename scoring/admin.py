from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from pathlib import PurePath
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from scoring import audit
from scoring.models import (
    AuditEntry,
    PreferencePair,
    Prompt,
    PromptGold,
    PromptModelStats,
    PromptSet,
    Release,
    ReleasedPrompt,
    ReleaseState,
    ReleaseTarget,
    RewardScore,
    Sample,
    SampleStatus,
    Selection,
    Verdict,
    VerdictStatus,
)
from scoring.pipeline import POISON_PREFIX


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "domain",
        "license",
        "redistributable",
        "is_active",
        "priority",
        "prompt_count",
        "contaminated_count",
        "progress",
        "temperatures",
        "samples_per_prompt",
    ]
    list_filter = ["domain", "is_active", "license", "redistributable"]
    search_fields = ["name", "description", "source"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "description",
                    "domain",
                    "license",
                    "redistributable",
                    "source",
                    "is_active",
                ]
            },
        ),
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
        with transaction.atomic():
            closed = sum(retire_prompt_set(prompt_set=ps) for ps in sets)
            audit.record(
                actor=request.user,
                action="promptset.retire",
                model=PromptSet,
                ids=[ps.pk for ps in sets],
                details={"prompts_closed": closed},
            )
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

        ids = list(queryset.values_list("pk", flat=True))
        with transaction.atomic():
            closed = close_prompts(prompt_ids=ids)
            audit.record(
                actor=request.user,
                action="prompt.close",
                model=Prompt,
                ids=ids,
                details={"prompts_closed": closed},
            )
        self.message_user(
            request,
            f"{closed} prompts closed to collection (copies of the same text in other sets "
            "included). Their verdicts are now shown to contributors and their gold may be "
            "published.",
        )


class VerdictInline(admin.TabularInline):
    model = Verdict
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    readonly_fields = [
        "verifier",
        "version",
        "status",
        "score",
        "details",
        "duration_ms",
        "created_at",
    ]


class VerifierResultFilter(admin.SimpleListFilter):
    """Samples with a verdict of one verifier and result (of any of its versions)."""

    title = "verifier result"
    parameter_name = "verdict"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from scoring.verifiers import REGISTRY

        return [
            (f"{name}:{status}", f"{name}: {status}")
            for name in sorted(REGISTRY)
            for status in (VerdictStatus.PASS, VerdictStatus.FAIL, VerdictStatus.ERROR)
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Sample]) -> QuerySet[Sample]:
        value = self.value()
        if not value or ":" not in value:
            return queryset
        verifier, _, status = value.partition(":")
        return queryset.filter(
            Exists(Verdict.objects.filter(sample=OuterRef("pk"), verifier=verifier, status=status))
        )


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
        VerifierResultFilter,
        ScoringTroubleFilter,
        "quarantined",
        "counted",
        "prompt__prompt_set__domain",
        "prompt__prompt_set",
        "finish_reason",
        "model",
        "received_at",
    ]
    date_hierarchy = "received_at"
    # Exact matches, so a search never scans completions: the prompt's id, the sample's
    # client id, the contributor's name, a model id.
    search_fields = ["=prompt__id", "=client_id", "model", "=contributor__username"]
    list_select_related = ["contributor"]
    raw_id_fields = ["prompt", "contributor"]
    # A sample is evidence: nothing of it is edited by hand. It changes only through the
    # actions below, each kept in the audit trail with who and why.
    readonly_fields = [
        "shown_prompt",
        "shown_reasoning",
        "shown_response",
        "shown_gold",
        "shown_rewards",
        "shown_selections",
        *(f.name for f in Sample._meta.concrete_fields if not f.primary_key),
    ]
    inlines = [VerdictInline]
    actions = ["quarantine", "release_from_quarantine", "score_again"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # A stored sample is counted in its slot, the contributor's per-prompt cap and the
        # public counters: it is quarantined, never deleted.
        return False

    @admin.display(description="reason", ordering="status_reason")
    def short_reason(self, obj: Sample) -> str:
        return obj.status_reason[:80]

    # The sample page: what was asked, what came back, how it was judged and ranked. All of
    # it is untrusted text, shown escaped (format_html). Gold is shown: the admin is staff only.

    @admin.display(description="prompt (as the model was sent it)")
    def shown_prompt(self, obj: Sample) -> str:
        messages = obj.prompt.prompt_set.render_messages(obj.prompt.messages)
        return format_html_join(
            "",
            "<p><strong>{}</strong></p><pre style='white-space: pre-wrap'>{}</pre>",
            ((str(m.get("role", "")), str(m.get("content", ""))) for m in messages),
        )

    def _split(self, obj: Sample) -> tuple[str, str]:
        from scoring.selection import reasoning_and_response

        return reasoning_and_response(obj.completion, obj.reasoning)

    @admin.display(description="reasoning")
    def shown_reasoning(self, obj: Sample) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", self._split(obj)[0])

    @admin.display(description="answer")
    def shown_response(self, obj: Sample) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", self._split(obj)[1])

    @admin.display(description="gold (staff only)")
    def shown_gold(self, obj: Sample) -> str:
        gold = PromptGold.objects.filter(prompt_id=obj.prompt_id).first()
        if gold is None:
            return "-"
        tests = "" if gold.tests is None else json.dumps(gold.tests, indent=1)[:20000]
        return format_html("<pre style='white-space: pre-wrap'>{}\n{}</pre>", gold.answer, tests)

    @admin.display(description="reward scores")
    def shown_rewards(self, obj: Sample) -> str:
        rows = obj.rewards.order_by("reward_model", "version")
        return (
            format_html_join(
                "",
                "<p>{} v{}: raw {}, normalised {}</p>",
                ((r.reward_model, r.version, r.raw, r.normalised) for r in rows),
            )
            or "-"
        )

    @admin.display(description="selections")
    def shown_selections(self, obj: Sample) -> str:
        rows = obj.selections.order_by("kind", "policy")
        return (
            format_html_join(
                "",
                "<p>{} under {} v{}, rank {}</p>",
                ((s.kind, s.policy, s.policy_version, s.rank) for s in rows),
            )
            or "-"
        )

    @admin.action(description="Quarantine (hold from releases)")
    def quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        from scoring.tasks import schedule_rebuilds

        prompt_ids = list(queryset.values_list("prompt_id", flat=True).distinct())
        with transaction.atomic():
            ids = list(queryset.filter(quarantined=False).values_list("pk", flat=True))
            n = Sample.objects.filter(pk__in=ids).update(quarantined=True)
            audit.record(actor=request.user, action="sample.quarantine", model=Sample, ids=ids)
        schedule_rebuilds(prompt_ids)  # a quarantined sample leaves every selection
        self.message_user(request, f"{n} samples quarantined.")

    @admin.action(description="Release from quarantine (back to scoring)")
    def release_from_quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        from scoring.pipeline import requeue
        from scoring.tasks import queue_scoring

        # A maintainer's fresh start: its attempts start over (the public counters move with it).
        with transaction.atomic():
            ids = requeue(
                sample_ids=list(queryset.filter(quarantined=True).values_list("pk", flat=True)),
                release=True,
            )
            audit.record(actor=request.user, action="sample.release", model=Sample, ids=ids)
        queue_scoring(ids)
        self.message_user(request, f"{len(ids)} samples released and queued for scoring.")

    @admin.action(description="Score again (samples in error, poison included)")
    def score_again(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        from scoring.pipeline import requeue
        from scoring.tasks import queue_scoring

        # Only samples still `error`: one a task claimed meanwhile is left to it.
        with transaction.atomic():
            ids = requeue(
                sample_ids=list(queryset.values_list("pk", flat=True)),
                only_status=SampleStatus.ERROR,
            )
            audit.record(actor=request.user, action="sample.rescore", model=Sample, ids=ids)
        queue_scoring(ids)
        self.message_user(request, f"{len(ids)} samples queued for scoring again.")


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


# --- releases (scoring/publishing/) ---------------------------------------------------------
# The publishing code (pyarrow, huggingface_hub) is imported only when a release is started,
# never when the admin loads.


def _stale(release: Release) -> bool:
    """A `building` release whose worker is gone: the next attempt may take it over."""
    after = timedelta(seconds=settings.THINKPOOL_RELEASE["stale_after_s"])
    return release.started_at is None or release.started_at < timezone.now() - after


def _retryable(release: Release) -> bool:
    if release.state in (ReleaseState.PENDING, ReleaseState.FAILED):
        return True
    return release.state == ReleaseState.BUILDING and _stale(release)


def _queue_publish(release_id: int) -> None:
    # Never raises: with the broker away the release stays pending and the sweep sends it.
    from scoring.tasks import queue_release

    queue_release(release_id)


def _named(releases: list[Release]) -> str:
    return ", ".join(f"{r.repo_id} {r.tag} ({r.target}, {r.state})" for r in releases)


class PublishForm(forms.Form):
    target = forms.ChoiceField(choices=ReleaseTarget.choices, initial=ReleaseTarget.LOCAL)
    repo_id = forms.CharField(
        label="Repository", max_length=200, help_text="ORG/NAME, as on the Hub."
    )
    path = forms.CharField(
        required=False,
        max_length=500,
        help_text="Local target only: an absolute folder. Empty: var/releases/ORG/NAME.",
    )

    def clean_repo_id(self) -> str:
        from scoring.publishing.service import ReleaseError, validate_repo_id

        repo_id: str = self.cleaned_data["repo_id"]
        try:
            return validate_repo_id(repo_id)
        except ReleaseError as exc:
            raise ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        folder = cleaned.get("path") or ""
        if folder and cleaned.get("target") != ReleaseTarget.LOCAL:
            self.add_error("path", "A path is for the local target only.")
        elif folder and not PurePath(folder).is_absolute():
            # The worker that publishes runs elsewhere: a relative path would be its own.
            self.add_error("path", "An absolute path, please.")
        return cleaned


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    """Releases are made and moved on by the publisher only (scoring.publishing.service): every
    field is read-only. A published release is never deleted (its number is tagged at the
    target); an unpublished one may be, which is how a maintainer abandons a stuck number."""

    list_display = [
        "shown_tag",
        "repo_id",
        "target",
        "state",
        "shown_row_counts",
        "short_commit",
        "published_at",
        "triggered_by",
        "attempts",
    ]
    list_display_links = ["shown_tag"]
    list_filter = ["target", "state"]
    search_fields = ["repo_id"]
    list_select_related = ["triggered_by"]
    _record = (
        "repo_id",
        "tag",
        "target",
        "location",
        "state",
        "attempts",
        "triggered_by",
        "created_at",
        "started_at",
        "published_at",
        "commit_id",
        "uid",
    )
    _contents = ("shown_row_counts", "policy", "policy_version", "shown_warnings", "files_manifest")
    fieldsets = [
        (None, {"fields": _record}),
        ("Contents", {"fields": _contents}),
        ("Last error", {"fields": ["shown_error"]}),
    ]
    readonly_fields = [*_record, *_contents, "shown_error"]
    actions = ["retry"]

    # --- permissions: the publisher writes releases, the admin only looks and starts them

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # started with "Publish a release" (publish_view), never made by hand

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        if not super().has_delete_permission(request, obj):
            return False
        if isinstance(obj, Release):
            # Not a published one, nor one a worker is building right now (the bulk delete
            # asks this of each selected release too).
            if obj.state == ReleaseState.PUBLISHED:
                return False
            if obj.state == ReleaseState.BUILDING and not _stale(obj):
                return False
        return True

    def has_publish_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.add_{self.opts.model_name}")

    # --- list and detail

    @admin.display(description="version", ordering="version")
    def shown_tag(self, obj: Release) -> str:
        return obj.tag

    @admin.display(description="rows")
    def shown_row_counts(self, obj: Release) -> str:
        return " · ".join(f"{config} {n:,}" for config, n in obj.ordered_row_counts()) or "-"

    @admin.display(description="commit", ordering="commit_id")
    def short_commit(self, obj: Release) -> str:
        return obj.commit_id[:12] or "-"

    @admin.display(description="warnings")
    def shown_warnings(self, obj: Release) -> str:
        warnings = obj.warnings if isinstance(obj.warnings, list) else [obj.warnings]
        if not warnings:
            return "-"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((str(w),) for w in warnings))
        )

    @admin.display(description="error")
    def shown_error(self, obj: Release) -> str:
        if not obj.error:
            return "-"
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.error)

    @admin.display(description="files (path → sha256)")
    def files_manifest(self, obj: Release) -> str:
        files = obj.files if isinstance(obj.files, dict) else {}
        if not files:
            return "-"
        return format_html(
            "<table><thead><tr><th>path</th><th>sha256</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                ((str(p), str(digest)) for p, digest in sorted(files.items())),
            ),
        )

    # --- starting and retrying

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "publish/",
                self.admin_site.admin_view(self.publish_view),
                name="{}_{}_publish".format(*info),
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "has_publish_permission": self.has_publish_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def publish_view(self, request: HttpRequest) -> HttpResponse:
        """A form that starts the next release of a repository (or retries its unpublished
        one) and queues it on the publish queue once the release's row is committed."""
        if not self.has_publish_permission(request):
            raise PermissionDenied
        form = PublishForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            from scoring.publishing.service import ReleaseError, start_release

            data = form.cleaned_data
            try:
                with transaction.atomic():
                    release = start_release(
                        target=data["target"],
                        repo_id=data["repo_id"],
                        path=data["path"] or None,
                        triggered_by=request.user,
                    )
                    transaction.on_commit(partial(_queue_publish, release.pk))
            except ReleaseError as exc:
                form.add_error(None, str(exc))
            else:
                retried = (
                    ""
                    if release.state == ReleaseState.PENDING
                    else (f" (it was {release.state}: retried under its number)")
                )
                self.message_user(
                    request,
                    f"Queued {release.tag} of {release.repo_id} to {release.target}{retried}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Publish a release",
            "form": form,
        }
        return TemplateResponse(request, "admin/scoring/release/publish.html", context)

    @admin.action(description="Retry the selected unpublished releases", permissions=["publish"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        queued: list[Release] = []
        skipped: list[Release] = []
        for release in queryset.order_by("repo_id", "target", "version"):
            (queued if _retryable(release) else skipped).append(release)
        for release in queued:
            transaction.on_commit(partial(_queue_publish, release.pk))
        if queued:
            self.message_user(request, f"Queued {len(queued)}: {_named(queued)}.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"Skipped {len(skipped)} (published, or being built): {_named(skipped)}.",
                messages.WARNING,
            )


@admin.register(ReleasedPrompt)
class ReleasedPromptAdmin(_ReadOnly):
    """Which release of a repository first published each prompt (written on publish)."""

    list_display = ["prompt", "repo_id", "target", "version"]
    list_filter = ["target"]
    search_fields = ["repo_id", "=prompt__external_id"]
    list_select_related = ["prompt__prompt_set"]
    raw_id_fields = ["prompt"]
    show_full_result_count = False


@admin.register(Verdict)
class VerdictAdmin(_ReadOnly):
    """Verdicts are evidence: written by the verifiers only, never added or edited by hand."""

    list_display = ["sample", "verifier", "version", "status", "score", "duration_ms", "created_at"]
    list_filter = ["verifier", "status", "version"]
    raw_id_fields = ["sample"]


@admin.register(AuditEntry)
class AuditEntryAdmin(_ReadOnly):
    list_display = ["at", "actor", "action", "target_type", "target_count", "reason"]
    list_filter = ["action", "target_type"]
    search_fields = ["action", "reason", "actor__username"]
    list_select_related = ["actor"]

    @admin.display(description="records")
    def target_count(self, obj: AuditEntry) -> int:
        return len(obj.target_ids) if isinstance(obj.target_ids, list) else 0

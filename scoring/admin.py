from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from datetime import timedelta
from functools import partial
from pathlib import Path, PurePath
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from scoring import audit
from scoring.admin_actions import (
    InputFilter,
    ReasonActionForm,
    action_reason,
    confirm_with_reason,
)
from scoring.models import (
    DEFAULT_INSTRUCTION,
    AuditEntry,
    Domain,
    Flag,
    FlagKind,
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

# --- importing a prompt file (PromptSetAdmin.import_view) ------------------------------------

IMPORT_FORMATS = (".jsonl", ".json", ".csv", ".parquet")  # what scoring.prompt_io reads
# Files up to this size are imported inside the request; larger ones are stored under
# VAR_DIR/uploads and imported by a task (scoring.import_prompt_file) on `maintenance`.
IMPORT_INLINE_BYTES = 2 * 1024 * 1024
IMPORT_MAX_BYTES = 512 * 1024 * 1024
# Bad rows listed on the report page.
REPORT_ROWS = 1000


def _import_limits() -> tuple[int, int]:
    return (
        int(getattr(settings, "THINKPOOL_ADMIN_IMPORT_INLINE_BYTES", IMPORT_INLINE_BYTES)),
        int(getattr(settings, "THINKPOOL_ADMIN_IMPORT_MAX_BYTES", IMPORT_MAX_BYTES)),
    )


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


class ImportPromptsForm(forms.Form):
    prompt_set = forms.ModelChoiceField(
        queryset=PromptSet.objects.order_by("name"),
        required=False,
        label="Into the set",
        empty_label="(a new set: name, domain, licence and source below)",
    )
    name = forms.SlugField(label="New set's name", required=False, max_length=100)
    domain = forms.ChoiceField(
        label="New set's domain", required=False, choices=[("", "---------"), *Domain.choices]
    )
    license = forms.CharField(
        label="New set's licence",
        required=False,
        max_length=64,
        help_text="SPDX identifier, e.g. MIT or CC-BY-4.0.",
    )
    source = forms.URLField(
        label="New set's source", required=False, max_length=500, assume_scheme="https"
    )
    file = forms.FileField(label="File")
    field_map = forms.CharField(
        label="Field map",
        required=False,
        max_length=500,
        help_text="ours=theirs, comma-separated, e.g. prompt=question,answer=solution.",
    )
    skip_invalid = forms.BooleanField(
        label="Import the valid rows, skip the invalid ones",
        required=False,
        help_text="Otherwise one invalid row imports nothing.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _, most = _import_limits()
        self.fields["file"].help_text = (
            f"{', '.join(IMPORT_FORMATS)}; at most {_megabytes(most)}. One prompt per row: "
            "prompt (or messages), answer (math, mcq, string), tests (code), id, metadata."
        )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        suffix = PurePath(upload.name or "").suffix.lower()
        if suffix not in IMPORT_FORMATS:
            raise ValidationError(
                f"Unknown format {suffix or '(none)'}: use {', '.join(IMPORT_FORMATS)}."
            )
        _, most = _import_limits()
        if upload.size > most:
            raise ValidationError(
                f"The file is {_megabytes(upload.size)}; at most {_megabytes(most)}. Larger "
                "files: manage.py import_prompts."
            )
        return upload

    def clean_field_map(self) -> dict[str, str]:
        from scoring.prompt_io import PromptFileError, parse_field_map

        try:
            return parse_field_map(self.cleaned_data.get("field_map") or "")
        except PromptFileError as exc:
            raise ValidationError(str(exc).replace("--field-map", "Field map")) from None

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("prompt_set") is None:
            for field in ("name", "domain", "license"):
                if not cleaned.get(field) and field not in self.errors:
                    self.add_error(field, "Required for a new set (or pick an existing set).")
            name = cleaned.get("name")
            if name and PromptSet.objects.filter(name=name).exists():
                self.add_error("name", "A set of this name exists: pick it above instead.")
        return cleaned

    def new_set(self) -> PromptSet:
        """The set to make (unsaved), validated like the admin's own form."""
        data = self.cleaned_data
        prompt_set = PromptSet(
            name=data["name"],
            domain=data["domain"],
            license=data["license"],
            source=data.get("source") or "",
            # As `manage.py import_prompts` does: the R1 instruction for math, none otherwise.
            instruction_template=DEFAULT_INSTRUCTION if data["domain"] == Domain.MATH else "",
        )
        prompt_set.full_clean(exclude=["last_prompt_seq"])
        return prompt_set


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
    actions = ["retire", "build_selections"]

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

    @admin.action(description="Build selections (SFT, preference pairs, RL prompts)")
    def build_selections(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        from scoring.tasks import queue_set_selections

        ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        with transaction.atomic():
            audit.record(
                actor=request.user,
                action="promptset.build_selections",
                model=PromptSet,
                ids=ids,
                reason=action_reason(request),
            )
            queue_set_selections(ids)
        self.message_user(
            request,
            f"Queued the selections of {len(ids)} sets on the maintenance queue; they are "
            "rebuilt in the background (as manage.py build_selections --set does).",
            messages.SUCCESS,
        )

    # --- importing a file

    def has_import_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scoring.add_prompt") and request.user.has_perm(
            "scoring.add_promptset"
        )

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="{}_{}_import".format(*info),
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "has_import_permission": self.has_import_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Imports prompts from an uploaded file into an existing set or a new one. Small
        files are imported here and their report shown; large ones are stored under
        VAR_DIR/uploads and imported by a task, whose report goes to the audit trail."""
        from scoring.services import import_from_file

        if not self.has_import_permission(request):
            raise PermissionDenied
        posted = request.method == "POST"
        form = ImportPromptsForm(
            request.POST if posted else None, request.FILES if posted else None
        )
        outcome = None
        prompt_set: PromptSet | None = None
        if posted and form.is_valid():
            data = form.cleaned_data
            prompt_set = data["prompt_set"]
            new = prompt_set is None
            try:
                if prompt_set is None:
                    prompt_set = form.new_set()
                    with transaction.atomic():
                        prompt_set.save()
            except ValidationError as exc:
                form.add_error(None, exc)
            except IntegrityError:
                form.add_error("name", "A set of this name exists: pick it above instead.")
            else:
                upload = data["file"]
                inline, _ = _import_limits()
                suffix = PurePath(upload.name).suffix.lower()
                if upload.size > inline:
                    return self._queue_import(request, upload, suffix, prompt_set, new, data)
                with tempfile.TemporaryDirectory(prefix="thinkpool-import-") as folder:
                    local = Path(folder) / f"upload{suffix}"
                    with local.open("wb") as out:
                        for piece in upload.chunks():
                            out.write(piece)
                    outcome = import_from_file(
                        prompt_set_id=prompt_set.pk,
                        path=str(local),
                        by=request.user,
                        skip_invalid=data["skip_invalid"],
                        field_map=data["field_map"],
                        file_name=upload.name,
                        new_set=new,
                    )
                if outcome.result == "imported":
                    self.message_user(
                        request,
                        f"Imported {outcome.report.created} prompts into {prompt_set.name}.",
                        messages.SUCCESS,
                    )
                    # The next file goes into this set by default (the new set exists now).
                    form = ImportPromptsForm(initial={"prompt_set": prompt_set.pk})
                else:
                    self.message_user(
                        request,
                        "Nothing was imported"
                        + (" and the new set was not kept" if outcome.set_removed else "")
                        + ": see the report below.",
                        messages.ERROR,
                    )
        report = outcome.report if outcome is not None else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import prompts from a file",
            "form": form,
            "outcome": outcome,
            "report": report,
            "prompt_set": prompt_set if outcome and not outcome.set_removed else None,
            "invalid_rows": report.invalid[:REPORT_ROWS] if report else [],
            "invalid_more": max(0, len(report.invalid) - REPORT_ROWS) if report else 0,
        }
        return TemplateResponse(request, "admin/scoring/promptset/import.html", context)

    def _queue_import(
        self,
        request: HttpRequest,
        upload: Any,
        suffix: str,
        prompt_set: PromptSet,
        new: bool,
        data: dict[str, Any],
    ) -> HttpResponse:
        """Stores a large upload under VAR_DIR/uploads and queues its import."""
        from scoring.tasks import import_prompt_file

        folder = Path(settings.VAR_DIR) / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        stored = folder / f"{uuid.uuid4().hex}{suffix}"
        with stored.open("wb") as out:
            for piece in upload.chunks():
                out.write(piece)
        actor_id = request.user.pk
        try:
            import_prompt_file.apply_async(
                args=(str(stored), prompt_set.pk),
                kwargs={
                    "actor_id": actor_id,
                    "skip_invalid": data["skip_invalid"],
                    "field_map": data["field_map"],
                    "file_name": upload.name,
                    "new_set": new,
                },
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0},
            )
        except Exception as exc:
            stored.unlink(missing_ok=True)
            if new and not prompt_set.prompts.exists():
                prompt_set.delete()
            self.message_user(
                request,
                f"Could not queue the import ({type(exc).__name__}): is the broker running? "
                "Nothing was imported.",
                messages.ERROR,
            )
            return HttpResponseRedirect(request.get_full_path())
        audit.record(
            actor=request.user,
            action="promptset.import.queued",
            model=PromptSet,
            ids=[prompt_set.pk],
            details={"file": upload.name, "bytes": upload.size, "new_set": new},
        )
        self.message_user(
            request,
            f"Queued the import of {upload.name} ({_megabytes(upload.size)}) into "
            f"{prompt_set.name}; it runs in the background on the maintenance queue. Its "
            "report (created, duplicates, rejected rows) goes to the audit trail.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
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


def _contributor_ids(term: str) -> list[int]:
    """Users whose username or handle (contributors' Profile, by its reverse name) is
    `term`, in any letter case: a small indexed read of the users, never a join of samples."""
    users = get_user_model().objects.filter(
        Q(username__iexact=term) | Q(profile__handle__iexact=term)
    )
    return list(users.values_list("pk", flat=True)[:50])


class ContributorFilter(InputFilter):
    """Samples of one contributor, by username or handle: typed, so the filter never lists
    (or loads) every user."""

    title = "contributor"
    label = "Username or handle"
    parameter_name = "contributor"

    def lookup(
        self, request: HttpRequest, queryset: QuerySet[Sample], value: str
    ) -> QuerySet[Sample]:
        return queryset.filter(contributor_id__in=_contributor_ids(value))


class ModelFilter(InputFilter):
    """Samples of one model id (exact): typed, since listing the models would read every
    sample (SELECT DISTINCT)."""

    title = "model"
    label = "Model id, e.g. Qwen/Qwen3-8B"
    parameter_name = "model"

    def lookup(
        self, request: HttpRequest, queryset: QuerySet[Sample], value: str
    ) -> QuerySet[Sample]:
        return queryset.filter(model=value)


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "client_id",
        "prompt_id",
        "contributor",
        "model",
        "temperature",
        "status",
        "override",
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
        "override",
        VerifierResultFilter,
        ScoringTroubleFilter,
        "quarantined",
        "counted",
        "prompt__prompt_set__domain",
        "prompt__prompt_set",
        ModelFilter,
        ContributorFilter,
        "finish_reason",
        "received_at",
    ]
    date_hierarchy = "received_at"
    # Exact matches only (get_search_results), so a search never scans completions: the
    # prompt's id, the sample's client id, the contributor's username or handle.
    search_fields = ["=prompt__id", "=client_id", "=contributor__username"]
    search_help_text = (
        "A prompt id, a sample's client id, or a contributor's username or handle (exact)."
    )
    list_select_related = ["contributor"]
    # One COUNT per page (the filtered one), not a second over the whole table.
    show_full_result_count = False
    action_form = ReasonActionForm
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
        "shown_flags",
        *(f.name for f in Sample._meta.concrete_fields if not f.primary_key),
    ]
    inlines = [VerdictInline]
    actions = [
        "approve",
        "reject",
        "clear_override",
        "quarantine",
        "release_from_quarantine",
        "score_again",
    ]

    class Media:
        css = {"all": ["scoring/admin.css"]}

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Sample], search_term: str
    ) -> tuple[QuerySet[Sample], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(contributor_id__in=_contributor_ids(term))
        if term.isdigit():
            match |= Q(prompt_id=int(term))
        with contextlib.suppress(ValueError):
            match |= Q(client_id=uuid.UUID(term))
        return queryset.filter(match), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # samples come from uploads only

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
            "<p><strong>{}</strong></p><pre class='tp-pre'>{}</pre>",
            ((str(m.get("role", "")), str(m.get("content", ""))) for m in messages),
        )

    def _split(self, obj: Sample) -> tuple[str, str]:
        from scoring.selection import reasoning_and_response

        return reasoning_and_response(obj.completion, obj.reasoning)

    @admin.display(description="reasoning")
    def shown_reasoning(self, obj: Sample) -> str:
        return format_html("<pre class='tp-pre'>{}</pre>", self._split(obj)[0])

    @admin.display(description="answer")
    def shown_response(self, obj: Sample) -> str:
        return format_html("<pre class='tp-pre'>{}</pre>", self._split(obj)[1])

    @admin.display(description="gold (staff only)")
    def shown_gold(self, obj: Sample) -> str:
        gold = PromptGold.objects.filter(prompt_id=obj.prompt_id).first()
        if gold is None:
            return "-"
        tests = "" if gold.tests is None else json.dumps(gold.tests, indent=1)[:20000]
        return format_html("<pre class='tp-pre'>{}\n{}</pre>", gold.answer, tests)

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

    @admin.display(description="open flags")
    def shown_flags(self, obj: Sample) -> str:
        rows = obj.flags.filter(cleared_at__isnull=True).order_by("kind")[:20]
        return (
            format_html_join(
                "",
                "<p><a href='{}'>{}</a>: <code>{}</code></p>",
                (
                    (
                        reverse("admin:scoring_flag_change", args=[f.pk]),
                        f.get_kind_display(),
                        _evidence_line(f.evidence),
                    )
                    for f in rows
                ),
            )
            or "-"
        )

    # --- maintainers' decisions. Each goes through scoring.services (audited there, with the
    # reason from the action bar or the confirmation page), in the request for up to
    # THINKPOOL_ADMIN_SYNC_LIMIT samples, else as tasks on the `maintenance` queue
    # (scoring.tasks.dispatch_sample_action), a select-across included.

    _done = {
        "approve": "approved (verified, whatever the verifiers said)",
        "reject": "rejected (whatever the verifiers said)",
        "clear_override": "no longer overridden, and back to scoring",
        "quarantine": "quarantined",
        "release": "released and queued for scoring",
        "rescore": "queued for scoring again",
    }

    def _dispatch(
        self, request: HttpRequest, queryset: QuerySet[Sample], action: str, reason: str
    ) -> None:
        from scoring.tasks import dispatch_sample_action

        done = dispatch_sample_action(
            action=action, queryset=queryset, by=request.user, reason=reason
        )
        if not done.queued:
            self.message_user(request, f"{done.changed} samples {self._done[action]}.")
            return
        audit.record(
            actor=request.user,
            action=f"sample.{action}.queued",
            model=Sample,
            ids=[],
            reason=reason,
            details={
                "count": done.count,
                "chunks": done.chunks,
                "filters": request.GET.urlencode()[:2000],
            },
        )
        if done.unsent:
            self.message_user(
                request,
                f"Queued {done.sent} of {done.chunks} tasks for {done.count} samples; the "
                "rest could not reach the broker (is it running?). Run the "
                "action again for them: samples already done are left as they are.",
                messages.WARNING,
            )
            return
        self.message_user(
            request,
            f"Queued {done.count} samples in {done.chunks} tasks; it runs in the background "
            "on the maintenance queue. Each task keeps its part in the audit trail.",
            messages.SUCCESS,
        )

    def _confirm(
        self,
        request: HttpRequest,
        queryset: QuerySet[Sample],
        action: str,
        *,
        title: str,
        intro: str,
        button: str,
    ) -> tuple[str | None, HttpResponse | None]:
        return confirm_with_reason(
            self,
            request,
            queryset.select_related("contributor").order_by("pk"),
            action=action,
            title=title,
            intro=intro,
            button=button,
            columns=["sample", "prompt", "contributor", "model", "status", "override", "reason"],
            row=lambda s: (
                s.pk,
                s.prompt_id,
                s.contributor.get_username(),
                s.model,
                s.status,
                s.get_override_display() or "-",
                s.status_reason[:80],
            ),
        )

    @admin.action(
        description="Approve: verified, overriding the verifiers…", permissions=["change"]
    )
    def approve(self, request: HttpRequest, queryset: QuerySet[Sample]) -> HttpResponse | None:
        reason, page = self._confirm(
            request,
            queryset,
            "approve",
            title="Approve samples",
            intro="These samples become verified whatever the verifiers said, and stay so "
            "when they are scored again, until the override is cleared. The counters and "
            "selections move with them.",
            button="Approve",
        )
        if page is not None:
            return page
        self._dispatch(request, queryset, "approve", reason or "")
        return None

    @admin.action(description="Reject: rejected, overriding the verifiers…", permissions=["change"])
    def reject(self, request: HttpRequest, queryset: QuerySet[Sample]) -> HttpResponse | None:
        reason, page = self._confirm(
            request,
            queryset,
            "reject",
            title="Reject samples",
            intro="These samples become rejected whatever the verifiers said, and stay so "
            "when they are scored again, until the override is cleared. Their contributors "
            "see the reason on closed prompts.",
            button="Reject",
        )
        if page is not None:
            return page
        self._dispatch(request, queryset, "reject", reason or "")
        return None

    @admin.action(
        description="Clear the override (the next scoring decides)", permissions=["change"]
    )
    def clear_override(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        self._dispatch(request, queryset, "clear_override", action_reason(request))

    @admin.action(description="Quarantine (hold from releases)", permissions=["change"])
    def quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        self._dispatch(request, queryset, "quarantine", action_reason(request))

    @admin.action(description="Release from quarantine (back to scoring)", permissions=["change"])
    def release_from_quarantine(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        # A maintainer's fresh start: its attempts start over (the public counters move with it).
        self._dispatch(request, queryset, "release", action_reason(request))

    @admin.action(
        description="Score again (samples in error, poison included)", permissions=["change"]
    )
    def score_again(self, request: HttpRequest, queryset: QuerySet[Sample]) -> None:
        # Only samples still `error`: one a task claimed meanwhile is left to it.
        self._dispatch(request, queryset, "rescore", action_reason(request))


def _evidence_line(evidence: Any, limit: int = 300) -> str:
    """A flag's evidence on one line (escaped where it is shown: format_html)."""
    text = json.dumps(evidence, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FlagStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("cleared", "Cleared")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Flag]) -> QuerySet[Flag]:
        if self.value() == "open":
            return queryset.filter(cleared_at__isnull=True)
        if self.value() == "cleared":
            return queryset.filter(cleared_at__isnull=False)
        return queryset


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    """Automatic flags (scoring/flags.py) with their evidence. Written by the checks only; a
    maintainer clears them with a reason (audited), or acts on the sample (quarantine) or its
    contributor (ban)."""

    list_display = [
        "id",
        "kind",
        "sample_link",
        "contributor",
        "short_evidence",
        "created_at",
        "is_open",
        "cleared_by",
        "cleared_at",
    ]
    list_filter = ["kind", FlagStateFilter, "created_at"]
    list_select_related = ["sample", "contributor", "cleared_by"]
    search_fields = ["=sample__id", "contributor__username", "contributor__profile__handle"]
    search_help_text = "A sample id (exact), or a contributor's username or handle."
    show_full_result_count = False
    action_form = ReasonActionForm
    _shown = (
        "kind",
        "sample_link",
        "contributor",
        "shown_evidence",
        "created_at",
        "cleared_by",
        "cleared_at",
        "clear_reason",
    )
    fields = _shown
    readonly_fields = _shown
    actions = ["clear"]

    class Media:
        css = {"all": ["scoring/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # raised by the checks only

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # evidence: cleared, never deleted

    @admin.display(description="sample", ordering="sample_id")
    def sample_link(self, obj: Flag) -> str:
        if obj.sample_id is None:
            return "— (conduct)"
        return format_html(
            "<a href='{}'>{}</a>",
            reverse("admin:scoring_sample_change", args=[obj.sample_id]),
            obj.sample_id,
        )

    @admin.display(description="contributor", ordering="contributor__username")
    def contributor(self, obj: Flag) -> str:
        return obj.contributor.get_username()

    @admin.display(description="open", boolean=True)
    def is_open(self, obj: Flag) -> bool:
        return obj.cleared_at is None

    @admin.display(description="evidence")
    def short_evidence(self, obj: Flag) -> str:
        return _evidence_line(obj.evidence, limit=120)

    @admin.display(description="evidence")
    def shown_evidence(self, obj: Flag) -> str:
        text = json.dumps(obj.evidence, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        original = obj.evidence.get("original_sample") if isinstance(obj.evidence, dict) else None
        link = (
            format_html(
                "<p>Original: <a href='{}'>sample {}</a></p>",
                reverse("admin:scoring_sample_change", args=[original]),
                original,
            )
            if obj.kind == FlagKind.COPY and isinstance(original, int)
            else ""
        )
        return format_html("{}<pre class='tp-pre'>{}</pre>", link, text)

    @admin.action(description="Clear, with a reason…", permissions=["change"])
    def clear(self, request: HttpRequest, queryset: QuerySet[Flag]) -> HttpResponse | None:
        from scoring.flags import clear_flags

        open_flags = queryset.filter(cleared_at__isnull=True)
        reason, page = confirm_with_reason(
            self,
            request,
            open_flags.select_related("sample", "contributor").order_by("pk"),
            action="clear",
            title="Clear flags",
            intro="These flags are closed as looked at: who, when and why are kept on each "
            "flag and in the audit trail. The same check does not raise a cleared flag again. "
            "What the flag took from its contributor's trust is given back (their reputation "
            "is replayed without it); nothing else is done to the samples or contributors.",
            button="Clear",
            columns=["flag", "kind", "sample", "contributor", "evidence"],
            row=lambda f: (
                f.pk,
                f.kind,
                f.sample_id or "—",
                f.contributor.get_username(),
                _evidence_line(f.evidence, limit=120),
            ),
        )
        if page is not None:
            return page
        cleared = clear_flags(
            flag_ids=open_flags.values_list("pk", flat=True), by=request.user, reason=reason or ""
        )
        self.message_user(request, f"{len(cleared)} flags cleared.")
        return None


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

    class Media:
        css = {"all": ["scoring/admin.css"]}

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
        return format_html('<pre class="tp-pre">{}</pre>', obj.error)

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
                    audit.record(
                        actor=request.user,
                        action="release.publish",
                        model=Release,
                        ids=[release.pk],
                        details={
                            "repo_id": release.repo_id,
                            "target": release.target,
                            "tag": release.tag,
                            "state": release.state,
                        },
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
        if queued:
            audit.record(
                actor=request.user,
                action="release.retry",
                model=Release,
                ids=[r.pk for r in queued],
                details={"releases": _named(queued)},
            )
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

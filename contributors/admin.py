from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from contributors import services
from contributors.models import (
    BOUNTY_LIVE,
    ApiToken,
    Bounty,
    BountyClaim,
    BountyContribution,
    BountyKind,
    ClaimStatus,
    ComputeNode,
    CreditEntry,
    KnownModel,
    Lease,
    LeaseItem,
    LeaseState,
    ModelStatus,
    NodeReputation,
    Profile,
    Reputation,
    ReputationEvent,
    Slot,
    SpotCheck,
)
from contributors.services import bounties as bounty_services
from contributors.services.errors import ServiceError


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = [
        "handle",
        "user",
        "hf_username",
        "public_attribution",
        "reputation_trust",
        "banned",
        "created_at",
    ]
    list_filter = ["banned", "public_attribution"]
    search_fields = ["handle", "user__username", "hf_username"]
    list_select_related = ["user", "user__reputation"]
    actions = ["ban", "unban"]

    @admin.display(description="trust", ordering="user__reputation__trust")
    def reputation_trust(self, obj: Profile) -> float | None:
        # contributors.services.trust keeps it in Reputation (none before anything counted).
        reputation = getattr(obj.user, "reputation", None)
        return None if reputation is None else round(reputation.trust, 4)

    # A ban goes through contributors.services.accounts.ban_contributor (tokens revoked, live
    # leases released, unpublished samples quarantined, audited with the reason), from the
    # "Ban" action below or by ticking "banned" on the profile's page.

    def save_model(self, request: HttpRequest, obj: Profile, form: Any, change: bool) -> None:
        from contributors.services.accounts import ban_contributor, unban_contributor
        from scoring import audit

        banning = change and "banned" in form.changed_data
        wanted = obj.banned
        others = sorted(f for f in form.changed_data if f != "banned") if change else []
        with transaction.atomic():
            if banning:
                obj.banned = not wanted  # the service sets it, with the rest of the ban
            super().save_model(request, obj, form, change)
            if others:
                audit.record(
                    actor=request.user,
                    action="profile.change",
                    model=Profile,
                    ids=[obj.pk],
                    details={"changed": others},
                )
            if banning and wanted:
                outcome = ban_contributor(
                    profile=obj,
                    by=request.user,
                    reason="ticked 'banned' on the contributor's page",
                )
            elif banning:
                unban_contributor(profile=obj, by=request.user)
        obj.banned = wanted
        if banning and wanted:
            self.message_user(request, self._banned_message(obj, outcome), messages.SUCCESS)
        elif banning:
            self.message_user(request, self._unbanned_message(1), messages.SUCCESS)

    @staticmethod
    def _banned_message(profile: Profile, outcome: Any) -> str:
        samples = (
            f"{outcome.queued} unpublished samples are being quarantined in the background"
            if outcome.queued
            else f"{outcome.quarantined} unpublished samples quarantined"
        )
        return (
            f"{profile.handle} banned: {outcome.tokens_revoked} tokens revoked, "
            f"{outcome.leases_released} live leases released, {samples}."
        )

    @staticmethod
    def _unbanned_message(count: int) -> str:
        return (
            f"{count} contributors unbanned. Their quarantined samples stay quarantined "
            "(release them from the samples list) and their revoked tokens stay revoked."
        )

    @admin.action(
        description="Ban: revoke tokens, release leases, quarantine unpublished samples…",
        permissions=["change"],
    )
    def ban(self, request: HttpRequest, queryset: QuerySet[Profile]) -> Any:
        from contributors.services.accounts import ban_contributor
        from scoring.admin_actions import confirm_with_reason

        reason, page = confirm_with_reason(
            self,
            request,
            queryset.select_related("user").order_by("pk"),
            action="ban",
            title="Ban contributors",
            intro="A banned contributor's tokens are revoked and their live leases released; "
            "their samples of prompts no release has published yet are quarantined, and "
            "their samples leave every selection. Unbanning does not undo the quarantine.",
            button="Ban",
            columns=["handle", "username", "banned", "joined"],
            row=lambda p: (p.handle, p.user.get_username(), p.banned, p.created_at),
        )
        if page is not None:
            return page
        for profile in queryset.order_by("pk"):
            outcome = ban_contributor(profile=profile, by=request.user, reason=reason or "")
            self.message_user(request, self._banned_message(profile, outcome), messages.SUCCESS)
        return None

    @admin.action(
        description="Unban (quarantined samples stay quarantined)", permissions=["change"]
    )
    def unban(self, request: HttpRequest, queryset: QuerySet[Profile]) -> None:
        from contributors.services.accounts import unban_contributor
        from scoring.admin_actions import action_reason

        lifted = sum(
            unban_contributor(profile=profile, by=request.user, reason=action_reason(request))
            for profile in queryset.filter(banned=True).order_by("pk")
        )
        self.message_user(request, self._unbanned_message(lifted), messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "user__username", "name"]
    readonly_fields = ["prefix", "digest", "created_at", "last_used", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A token is made by `manage.py issue_token` or the contributor, who sees it once.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        from scoring import audit

        with transaction.atomic():
            tokens = list(queryset)
            for token in tokens:
                services.revoke_token(token=token)
            audit.record(
                actor=request.user,
                action="token.revoke",
                model=ApiToken,
                ids=[t.pk for t in tokens],
            )
        self.message_user(request, "Tokens revoked.", messages.SUCCESS)


@admin.register(ComputeNode)
class ComputeNodeAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "owner",
        "backend",
        "worker_version",
        "status",
        "last_heartbeat",
        "registered_at",
    ]
    list_filter = ["backend"]
    search_fields = ["name", "owner__username"]

    # Through the service: a node's live leases are released (their slots go back) before it
    # and its lease history go. Leases are PROTECTed against a raw cascade, so the confirmation
    # page would call them "protected"; here they are the service's to handle.
    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        deleted, counts, perms_needed, _protected = super().get_deleted_objects(objs, request)
        return deleted, counts, perms_needed - {"lease"}, []

    def delete_model(self, request: HttpRequest, obj: ComputeNode) -> None:
        services.delete_node(node=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ComputeNode]) -> None:
        for node in queryset:
            services.delete_node(node=node)


class ReadOnlyInline(admin.TabularInline):
    """Rows kept by the services (ledgers, claims, contributions): shown, never edited here."""

    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class LeaseItemInline(ReadOnlyInline):
    # Read-only: an item's counts are the slot ledger's (contributors.services.ledger).
    model = LeaseItem
    extra = 0
    fields = ("slot", "n", "received", "returned")
    readonly_fields = fields


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["id", "node", "contributor", "model", "state", "created_at", "deadline"]
    list_filter = ["state", "model"]
    search_fields = ["contributor__username", "node__name", "model"]
    list_select_related = ["node", "contributor"]
    inlines = [LeaseItemInline]
    # State and counters change only through the services, which keep the slots' books:
    # an edited state or a deleted lease would strand its outstanding samples for good.
    readonly_fields = [
        "node",
        "contributor",
        "model",
        "state",
        "created_at",
        "lease_seconds",
        "deadline",
        "closed_at",
    ]
    actions = ["release"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Release selected live leases (their slots go back to the pool)")
    def release(self, request: HttpRequest, queryset: QuerySet[Lease]) -> None:
        from scoring import audit

        released = []
        for lease in queryset.filter(state=LeaseState.LIVE):
            services.release_lease(lease=lease)
            released.append(lease.pk)
        if released:
            audit.record(actor=request.user, action="lease.release", model=Lease, ids=released)
        self.message_user(request, f"{len(released)} leases released.", messages.SUCCESS)


@admin.register(Slot)
class SlotAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "prompt_set",
        "prompt",
        "model",
        "temperature",
        "filled",
        "outstanding",
        "target",
    ]
    list_filter = ["prompt_set", "model", "temperature"]
    readonly_fields = [
        "prompt",
        "prompt_set",
        "model",
        "temperature",
        "target",
        "filled",
        "outstanding",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(KnownModel)
class KnownModelAdmin(admin.ModelAdmin):
    """Model names nodes registered. Unreviewed ones open a bounded number of slots; allow the
    ones you want collected at scale, block the ones you never want."""

    list_display = ["model_id", "status", "slots_opened", "introduced_by", "first_seen"]
    list_filter = ["status"]
    search_fields = ["model_id"]
    readonly_fields = ["model_id", "slots_opened", "introduced_by", "first_seen"]
    fields = ["model_id", "status", "note", "slots_opened", "introduced_by", "first_seen"]
    actions = ["allow", "block"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # The row holds the name's allowance and counts towards its contributor's names.
        return False

    @admin.action(description="Allow selected models (no slot cap)")
    def allow(self, request: HttpRequest, queryset: QuerySet[KnownModel]) -> None:
        n = queryset.update(status=ModelStatus.ALLOWED)
        self.message_user(request, f"{n} models allowed.", messages.SUCCESS)

    @admin.action(description="Block selected models (no leases, uploads refused)")
    def block(self, request: HttpRequest, queryset: QuerySet[KnownModel]) -> None:
        n = queryset.update(status=ModelStatus.BLOCKED)
        self.message_user(request, f"{n} models blocked.", messages.SUCCESS)


class BountyActionForm(ActionForm):
    """The action bar of bounties: "complete" takes the link to the work; every action may
    carry a reason for the audit trail."""

    # Plain text fields: an invalid value in the action bar would make Django drop the action
    # with "No action selected."; the service says what is wrong instead.
    work_url = forms.CharField(label="Work URL (complete)", required=False, max_length=500)
    reason = forms.CharField(label="Reason", required=False, max_length=500)


class BountyClaimInline(ReadOnlyInline):
    # Decided through BountyClaimAdmin's actions (audited), never edited here.
    model = BountyClaim
    extra = 0
    fields = ("contributor", "status", "share", "note", "created_at", "decided_at")
    readonly_fields = fields
    show_change_link = True


class BountyContributionInline(ReadOnlyInline):
    # Counted by contributors.services.bounties from verified samples of closed prompts.
    model = BountyContribution
    extra = 0
    fields = ("contributor", "verified")
    readonly_fields = fields
    ordering = ("-verified",)


@admin.register(Bounty)
class BountyAdmin(admin.ModelAdmin):
    """Bounties. Status, progress and the award move only through the actions (each one
    conditional UPDATE in contributors.services.bounties, recorded in the audit trail): data
    bounties count their progress themselves and complete and pay when they reach the target;
    an engineering bounty is completed here with the link to the work, then awarded to its
    approved claims (BountyClaim's actions)."""

    list_display = [
        "title",
        "kind",
        "status",
        "target",
        "progress",
        "target_verified",
        "reward_points",
        "deadline",
        "created_at",
    ]
    list_filter = ["kind", "status", "prompt_set", "domain", "deadline", "created_at"]
    search_fields = ["title", "description", "sponsor_prize"]
    list_select_related = ["prompt_set"]
    date_hierarchy = "created_at"
    inlines = [BountyClaimInline, BountyContributionInline]
    action_form = BountyActionForm
    actions = ["refresh_progress", "complete_engineering", "award", "cancel"]
    fieldsets = [
        (None, {"fields": ["title", "description", "kind"]}),
        (
            "Target (data bounties)",
            {
                "fields": [
                    "prompt_set",
                    "domain",
                    "model_pattern",
                    "language",
                    "target_verified",
                ]
            },
        ),
        ("Reward", {"fields": ["reward_points", "sponsor_prize", "deadline"]}),
        (
            "What happened",
            {
                "fields": [
                    "status",
                    "progress",
                    "work_url",
                    "created_by",
                    "created_at",
                    "completed_at",
                    "awarded_at",
                ]
            },
        ),
    ]
    _happened = [
        "status",
        "progress",
        "work_url",
        "created_by",
        "created_at",
        "completed_at",
        "awarded_at",
    ]

    @admin.display(description="target")
    def target(self, obj: Bounty) -> str:
        if obj.kind != BountyKind.DATA:
            return "-"
        where = f"set {obj.prompt_set}" if obj.prompt_set_id else f"domain {obj.domain or '?'}"
        extra = [x for x in (obj.model_pattern, obj.language) if x]
        return where + (f" ({', '.join(extra)})" if extra else "")

    def get_readonly_fields(self, request: HttpRequest, obj: Bounty | None = None) -> Any:
        if obj is not None and obj.status not in BOUNTY_LIVE:
            # Completed, paid, expired or cancelled: the record of what was asked stays.
            return [f.name for f in Bounty._meta.fields if f.name != "id"]
        return self._happened

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # cancel instead: claims, contributions and credit refer to it

    def save_model(self, request: HttpRequest, obj: Bounty, form: Any, change: bool) -> None:
        from scoring import audit

        with transaction.atomic():
            if not change:
                obj.created_by = request.user  # type: ignore[assignment]
            super().save_model(request, obj, form, change)
            audit.record(
                actor=request.user,
                action="bounty.change" if change else "bounty.create",
                model=Bounty,
                ids=[obj.pk],
                details={"bounty": obj.pk, "fields": sorted(form.changed_data)},
            )
            if obj.kind == BountyKind.DATA and obj.status in BOUNTY_LIVE:
                # Its target may have changed: recount once this commits.
                pk = obj.pk
                transaction.on_commit(lambda: bounty_services.queue_refresh([pk]), robust=True)

    def _reason(self, request: HttpRequest) -> str:
        return str(request.POST.get("reason", "")).strip()[:500]

    def _each(self, request: HttpRequest, queryset: QuerySet[Bounty], verb: str, do: Any) -> None:
        done, failed = [], []
        for bounty in queryset.order_by("pk"):
            try:
                do(bounty)
                done.append(bounty.pk)
            except ServiceError as exc:
                failed.append(f"{bounty}: {exc.message}")
        if done:
            self.message_user(request, f"{len(done)} bounties {verb}.", messages.SUCCESS)
        for problem in failed:
            self.message_user(request, problem, messages.ERROR)

    @admin.action(description="Refresh progress of selected data bounties (queued)")
    def refresh_progress(self, request: HttpRequest, queryset: QuerySet[Bounty]) -> None:
        from contributors.tasks import refresh_bounties

        ids = list(
            queryset.filter(kind=BountyKind.DATA, status__in=BOUNTY_LIVE).values_list(
                "pk", flat=True
            )
        )
        if not ids:
            self.message_user(request, "No live data bounty selected.", messages.WARNING)
            return
        bounty_services.record_refresh(bounty_ids=ids, by=request.user)
        refresh_bounties.delay(bounty_ids=ids)
        self.message_user(request, f"A recount of {len(ids)} bounties is queued.", messages.SUCCESS)

    @admin.action(description="Complete selected engineering bounties (give the work URL)")
    def complete_engineering(self, request: HttpRequest, queryset: QuerySet[Bounty]) -> None:
        work_url = str(request.POST.get("work_url", "")).strip()
        if not work_url:
            self.message_user(
                request,
                "Give the link to the work in the 'Work URL' field next to the action.",
                messages.ERROR,
            )
            return
        reason = self._reason(request)
        self._each(
            request,
            queryset,
            "completed",
            lambda b: bounty_services.complete_engineering_bounty(
                bounty_id=b.pk, work_url=work_url, by=request.user, reason=reason
            ),
        )

    @admin.action(description="Award selected completed bounties (pays their points)")
    def award(self, request: HttpRequest, queryset: QuerySet[Bounty]) -> None:
        self._each(
            request,
            queryset,
            "awarded",
            lambda b: bounty_services.award_bounty(bounty_id=b.pk, by=request.user),
        )

    @admin.action(description="Cancel selected open or in-progress bounties")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Bounty]) -> None:
        reason = self._reason(request)
        self._each(
            request,
            queryset,
            "cancelled",
            lambda b: bounty_services.cancel_bounty(bounty_id=b.pk, by=request.user, reason=reason),
        )


class BountyClaimActionForm(ActionForm):
    share = forms.CharField(label="Share (approve, 0..1)", required=False, max_length=20)
    reason = forms.CharField(label="Reason", required=False, max_length=500)


@admin.register(BountyClaim)
class BountyClaimAdmin(admin.ModelAdmin):
    """Contributors' claims. Approve (with the share of the points, for an engineering
    bounty) or reject with the actions; each decision is in the audit trail."""

    list_display = ["bounty", "contributor", "status", "share", "created_at", "decided_at"]
    list_filter = ["status", "bounty__kind", "bounty__status"]
    search_fields = ["bounty__title", "contributor__username", "contributor__profile__handle"]
    list_select_related = ["bounty", "contributor"]
    readonly_fields = [
        "bounty",
        "contributor",
        "status",
        "share",
        "note",
        "created_at",
        "decided_at",
    ]
    action_form = BountyClaimActionForm
    actions = ["approve", "reject"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # contributors claim on the bounty's page

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def _decide(self, request: HttpRequest, queryset: QuerySet[BountyClaim], status: str) -> None:
        raw = str(request.POST.get("share", "")).strip()
        try:
            share = float(raw) if raw else None
        except ValueError:
            share = -1.0
        if share is not None and not 0 <= share <= 1:
            self.message_user(request, "A share is a number from 0 to 1.", messages.ERROR)
            return
        reason = str(request.POST.get("reason", "")).strip()[:500]
        done, failed = 0, []
        for claim in queryset.order_by("pk"):
            try:
                bounty_services.decide_claim(
                    claim_id=claim.pk, status=status, share=share, by=request.user, reason=reason
                )
                done += 1
            except ServiceError as exc:
                failed.append(f"{claim}: {exc.message}")
        if done:
            self.message_user(request, f"{done} claims {status}.", messages.SUCCESS)
        for problem in failed:
            self.message_user(request, problem, messages.ERROR)

    @admin.action(description="Approve selected claims (with the share given)")
    def approve(self, request: HttpRequest, queryset: QuerySet[BountyClaim]) -> None:
        self._decide(request, queryset, ClaimStatus.APPROVED)

    @admin.action(description="Reject selected claims")
    def reject(self, request: HttpRequest, queryset: QuerySet[BountyClaim]) -> None:
        self._decide(request, queryset, ClaimStatus.REJECTED)


@admin.register(CreditEntry)
class CreditEntryAdmin(admin.ModelAdmin):
    """The credit ledger, read-only: entries are written by contributors.services.credit
    (settling) and the bounty service (awards), never by hand; a wrong balance is fixed by
    settling again (`manage.py settle_credit`), which writes the difference."""

    list_display = ["at", "contributor", "kind", "points", "verified", "prompt_id", "bounty"]
    list_filter = ["kind", "at"]
    search_fields = ["contributor__username", "contributor__profile__handle"]
    list_select_related = ["contributor", "bounty"]
    date_hierarchy = "at"
    ordering = ["-at", "-pk"]
    show_full_result_count = False
    raw_id_fields = ["contributor", "prompt", "bounty"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Written by contributors.services.trust only: a wrong number is fixed by settling again
    (trust.settle_all), never by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


_REPUTATION_COLUMNS = [
    "trust",
    "streak",
    "valid",
    "invalid",
    "expired",
    "flagged",
    "daily_quota",
    "updated_at",
]


@admin.register(Reputation)
class ReputationAdmin(_ReadOnlyAdmin):
    """Trust and daily quota per contributor (contributors.services.trust)."""

    list_display = ["contributor", *_REPUTATION_COLUMNS]
    search_fields = ["contributor__username", "contributor__profile__handle"]
    list_select_related = ["contributor"]
    ordering = ["trust", "pk"]
    show_full_result_count = False


@admin.register(NodeReputation)
class NodeReputationAdmin(_ReadOnlyAdmin):
    """Trust and daily quota per node (contributors.services.trust)."""

    list_display = ["node", *_REPUTATION_COLUMNS]
    search_fields = ["node__name", "node__owner__username"]
    list_select_related = ["node", "node__owner"]
    ordering = ["trust", "pk"]
    show_full_result_count = False


@admin.register(ReputationEvent)
class ReputationEventAdmin(_ReadOnlyAdmin):
    """The reputation ledger: what moved each contributor's trust and quota, once each."""

    list_display = ["at", "contributor", "node", "kind", "sample_id", "lease_item_id", "flag_id"]
    list_filter = ["kind", "at"]
    search_fields = ["contributor__username", "contributor__profile__handle"]
    list_select_related = ["contributor", "node"]
    date_hierarchy = "at"
    ordering = ["-at", "-pk"]
    show_full_result_count = False
    raw_id_fields = ["contributor", "node", "sample", "lease_item", "flag"]


@admin.register(SpotCheck)
class SpotCheckAdmin(_ReadOnlyAdmin):
    """Spot checks (contributors.services.spotchecks): an item asked again of a second
    contributor, and how the two compared once the prompt closed (the evidence)."""

    list_display = [
        "pk",
        "state",
        "agree",
        "model",
        "contributor",
        "replica_contributor",
        "n",
        "created_at",
        "compared_at",
    ]
    list_filter = ["state", "agree", "created_at"]
    search_fields = [
        "contributor__username",
        "replica_contributor__username",
        "contributor__profile__handle",
        "replica_contributor__profile__handle",
    ]
    list_select_related = ["contributor", "replica_contributor"]
    ordering = ["-created_at", "-pk"]
    show_full_result_count = False
    raw_id_fields = ["original", "replica", "slot", "contributor", "replica_contributor"]

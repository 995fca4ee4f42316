from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from contributors import services
from contributors.models import (
    ApiToken,
    Bounty,
    ComputeNode,
    KnownModel,
    Lease,
    LeaseItem,
    LeaseState,
    ModelStatus,
    Profile,
    Slot,
)


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = [
        "handle",
        "user",
        "hf_username",
        "public_attribution",
        "trust",
        "banned",
        "created_at",
    ]
    list_filter = ["banned", "public_attribution"]
    search_fields = ["handle", "user__username", "hf_username"]

    def save_model(self, request: HttpRequest, obj: Profile, form: Any, change: bool) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if change and form.changed_data:
                from scoring import audit

                audit.record(
                    actor=request.user,
                    action="profile.ban"
                    if "banned" in form.changed_data and obj.banned
                    else "profile.unban"
                    if "banned" in form.changed_data
                    else "profile.change",
                    model=Profile,
                    ids=[obj.pk],
                    details={"changed": sorted(form.changed_data)},
                )
        if change and "banned" in form.changed_data:
            # A banned contributor's samples leave every selection (and come back if lifted).
            from scoring.models import Sample
            from scoring.tasks import schedule_rebuilds

            schedule_rebuilds(
                list(
                    Sample.objects.filter(contributor_id=obj.user_id)
                    .values_list("prompt_id", flat=True)
                    .distinct()
                )
            )


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


class LeaseItemInline(admin.TabularInline):
    # Read-only: an item's counts are the slot ledger's (contributors.services.ledger).
    model = LeaseItem
    extra = 0
    fields = ("slot", "n", "received", "returned")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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
        released = 0
        for lease in queryset.filter(state=LeaseState.LIVE):
            services.release_lease(lease=lease)
            released += 1
        self.message_user(request, f"{released} leases released.", messages.SUCCESS)


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


@admin.register(Bounty)
class BountyAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "prompt_set",
        "kind",
        "status",
        "progress",
        "target_verified",
        "reward_points",
        "deadline",
    ]
    list_filter = ["kind", "status"]
    search_fields = ["title", "description"]

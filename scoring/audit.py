"""The audit trail of maintainer decisions: one place that writes it.

Every admin action that changes records by hand (quarantine, release, rescore, close, retire,
ban, publish, ...) calls `record` in the same transaction as the change, so a decision is
kept exactly when it took effect. Entries are read-only in the admin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models

from scoring.models import AuditEntry


def record(
    *,
    actor: Any,
    action: str,
    model: type[models.Model],
    ids: Iterable[int],
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEntry.objects.create(
        actor=user,
        action=action,
        target_type=model._meta.label_lower,
        target_ids=sorted({int(pk) for pk in ids}),
        reason=reason,
        details=details or {},
    )

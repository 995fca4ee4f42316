"""Which models may make slots. Contributors name their models, so a name is untrusted input:
it is validated (contributors.models.model_id_problem), recorded once (KnownModel), and a name
no maintainer has reviewed opens a bounded number of slots. Maintainers allow or block names in
the admin."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Lower

from contributors.models import KnownModel, ModelStatus, Profile
from contributors.services.errors import ServiceError
from scoring.models import PromptSet


def blocked_message(model_id: str) -> str:
    return f"Model {model_id!r} is not accepted here (a maintainer blocked it)."


def _known(model_ids: Iterable[str]) -> dict[str, KnownModel]:
    """The rows of these names, by lowercased id (the Hub's ids are case-insensitive)."""
    lowered = {m.lower() for m in model_ids}
    rows = KnownModel.objects.annotate(lower_id=Lower("model_id")).filter(lower_id__in=lowered)
    return {row.model_id.lower(): row for row in rows}


def _check_spelling(model_id: str, row: KnownModel) -> None:
    if row.model_id != model_id:
        raise ServiceError(
            "model_id_spelling",
            f"{model_id!r} is known here as {row.model_id!r}; use that spelling.",
            status=400,
        )
    if row.status == ModelStatus.BLOCKED:
        raise ServiceError("model_blocked", blocked_message(model_id), status=403)


def admit_names(*, user: Any, model_ids: Iterable[str]) -> None:
    """Records the names a node registers. A blocked name refuses the registration; new names
    are recorded as unreviewed, at most THINKPOOL["MAX_UNREVIEWED_MODELS_PER_USER"] introduced by
    one contributor, so names cannot grow the table (or the slots) without bound. The caller's
    transaction holds the contributor's profile for the count (two registrations at once cannot
    both fit in the same room)."""
    wanted = sorted(set(model_ids))
    Profile.objects.select_for_update().filter(user=user).first()
    known = _known(wanted)
    for model_id in wanted:
        row = known.get(model_id.lower())
        if row is not None:
            _check_spelling(model_id, row)
    new = [m for m in wanted if m.lower() not in known]
    if not new:
        return
    cap = settings.THINKPOOL["MAX_UNREVIEWED_MODELS_PER_USER"]
    introduced = KnownModel.objects.filter(
        introduced_by=user, status=ModelStatus.UNREVIEWED
    ).count()
    if introduced + len(new) > cap:
        raise ServiceError(
            "too_many_unreviewed_models",
            f"This account has introduced {introduced} models no maintainer has reviewed yet; "
            f"at most {cap} may wait for review. Register models already known here, or ask "
            "a maintainer to review yours.",
            status=400,
        )
    for model_id in new:
        # A concurrent registration by someone else may record the same name first: theirs.
        with contextlib.suppress(IntegrityError), transaction.atomic():
            KnownModel.objects.create(model_id=model_id, introduced_by=user)


def model_for_leasing(model_id: str, *, owner_id: int) -> KnownModel:
    """The model's row; refuses a blocked model. A name on a node registered before names were
    recorded (or a row made some other way) is recorded here, introduced by the node's owner."""
    row = _known([model_id]).get(model_id.lower())
    if row is None:
        # The same cap as at registration: a name that skipped it is not a way around it.
        cap = settings.THINKPOOL["MAX_UNREVIEWED_MODELS_PER_USER"]
        if (
            KnownModel.objects.filter(
                introduced_by_id=owner_id, status=ModelStatus.UNREVIEWED
            ).count()
            >= cap
        ):
            raise ServiceError(
                "too_many_unreviewed_models",
                f"Model {model_id!r} is not known here and this account already has {cap} "
                "names waiting for review; register the node again with known models.",
                status=400,
            )
        try:
            with transaction.atomic():
                row = KnownModel.objects.create(model_id=model_id, introduced_by_id=owner_id)
        except IntegrityError:  # recorded meanwhile by a concurrent request
            row = _known([model_id])[model_id.lower()]
    _check_spelling(model_id, row)
    return row


def blocked_among(model_ids: Iterable[str]) -> set[str]:
    """Which of these names are blocked (spelled any way)."""
    ids = set(model_ids)
    blocked = {m for m, row in _known(ids).items() if row.status == ModelStatus.BLOCKED}
    return {m for m in ids if m.lower() in blocked}


def slot_allowance(*, model: KnownModel, prompt_set: PromptSet, wanted: int) -> int:
    """How many of `wanted` new slots of the set the model may open now, and takes them from
    its allowance. A set that names the model exactly, or a model a maintainer allowed: all of
    them. An unreviewed model in a set that takes it by a pattern or takes any model: what is
    left of THINKPOOL["UNREVIEWED_MODEL_MAX_SLOTS"], taken with a conditional UPDATE so that
    concurrent leasers cannot overrun it."""
    if model.status == ModelStatus.ALLOWED or model.model_id in prompt_set.models_allowed:
        return wanted
    if model.status == ModelStatus.BLOCKED:
        return 0
    cap = settings.THINKPOOL["UNREVIEWED_MODEL_MAX_SLOTS"]
    while True:
        opened = KnownModel.objects.filter(pk=model.pk).values_list("slots_opened", flat=True).get()
        grant = min(wanted, cap - opened)
        if grant <= 0:
            return 0
        took = KnownModel.objects.filter(pk=model.pk, slots_opened=opened).update(
            slots_opened=F("slots_opened") + grant
        )
        if took:
            model.slots_opened = opened + grant
            return grant
        # Another leaser took some meanwhile: read again.


def remaining_allowance(model: KnownModel) -> int | None:
    """Slots the model may still open in sets that do not name it: None for no limit."""
    if model.status == ModelStatus.ALLOWED:
        return None
    if model.status == ModelStatus.BLOCKED:
        return 0
    return max(settings.THINKPOOL["UNREVIEWED_MODEL_MAX_SLOTS"] - model.slots_opened, 0)

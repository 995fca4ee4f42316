"""Accounts and API tokens."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from contributors.models import ApiToken, Profile, hash_token
from contributors.services.errors import ServiceError


@transaction.atomic
def ensure_profile(*, user: Any) -> Profile:
    profile, _ = Profile.objects.get_or_create(
        user=user, defaults={"handle": user.get_username()[:64]}
    )
    return profile


@transaction.atomic
def issue_token(*, user: Any, name: str = "") -> tuple[ApiToken, str]:
    """Returns the row and the raw token. The raw token is shown once and never stored."""
    ensure_profile(user=user)
    raw = ApiToken.generate()
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:10], digest=hash_token(raw))
    return token, raw


def revoke_token(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- Sign-up and profile (the site's account pages) ------------------------------------------

# A handle is printed in releases and on public pages: letters, digits, `-` and `_`.
HANDLE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Releases print "anonymous" for unattributed rows; the others would pass for the project.
RESERVED_HANDLES = frozenset({"anonymous", "admin", "staff", "thinkpool"})
# A Hugging Face username, as the Hub takes it: letters, digits, `-`, `_` and `.`, starting
# and ending with a letter or digit, no `--` or `..`, at most 96 characters.
HF_USERNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")


def handle_problem(handle: str) -> str | None:
    """Why `handle` cannot be a handle (whoever holds it), or None."""
    if not HANDLE_RE.fullmatch(handle):
        return "Use 1 to 64 letters, digits, '-' or '_'."
    if handle.lower() in RESERVED_HANDLES:
        return "This handle is reserved; choose another."
    return None


def hf_username_problem(name: str) -> str | None:
    """Why `name` is not a Hugging Face username, or None ("" is none given: fine)."""
    if not name:
        return None
    if not HF_USERNAME_RE.fullmatch(name) or "--" in name or ".." in name:
        return (
            "A Hugging Face username is letters, digits, '-', '_' and '.', starting and ending "
            "with a letter or digit."
        )
    return None


def handle_taken(handle: str, *, exclude_user: Any = None) -> bool:
    """Whether another contributor holds `handle`, in any letter case."""
    holders = Profile.objects.filter(handle__iexact=handle)
    if exclude_user is not None:
        holders = holders.exclude(user=exclude_user)
    return holders.exists()


def _check_profile_fields(*, handle: str, hf_username: str, user: Any = None) -> None:
    problem = handle_problem(handle)
    if problem is not None:
        raise ServiceError("invalid_handle", problem, status=400)
    problem = hf_username_problem(hf_username)
    if problem is not None:
        raise ServiceError("invalid_hf_username", problem, status=400)
    if handle_taken(handle, exclude_user=user):
        raise ServiceError("handle_taken", "This handle is taken; choose another.")


@transaction.atomic
def sign_up(
    *,
    username: str,
    email: str,
    password: str,
    handle: str,
    hf_username: str = "",
    public_attribution: bool = True,
) -> Any:
    """Creates a user and their profile together, or nothing. The password was validated by
    the caller (the sign-up form runs Django's password validators against the new user).
    Raises ServiceError: `username_taken`, `handle_taken` (in any letter case),
    `invalid_handle`, `invalid_hf_username`."""
    user_model = get_user_model()
    _check_profile_fields(handle=handle, hf_username=hf_username)
    if user_model.objects.filter(username__iexact=username).exists():
        raise ServiceError("username_taken", "This username is taken; choose another.")
    try:
        # A savepoint: a concurrent sign-up that took the name first fails the insert here.
        with transaction.atomic():
            user = user_model.objects.create_user(username=username, email=email, password=password)
            Profile.objects.create(
                user=user,
                handle=handle,
                hf_username=hf_username,
                public_attribution=public_attribution,
            )
    except IntegrityError as exc:
        if user_model.objects.filter(username__iexact=username).exists():
            raise ServiceError("username_taken", "This username is taken; choose another.") from exc
        raise ServiceError("handle_taken", "This handle is taken; choose another.") from exc
    return user


@transaction.atomic
def update_profile(
    *, user: Any, handle: str, hf_username: str, public_attribution: bool
) -> Profile:
    """Changes the contributor's handle, Hugging Face username and attribution choice. Raises
    ServiceError as `sign_up` does for the handle and the Hugging Face username."""
    ensure_profile(user=user)
    profile = Profile.objects.select_for_update().get(user=user)
    _check_profile_fields(handle=handle, hf_username=hf_username, user=user)
    profile.handle = handle
    profile.hf_username = hf_username
    profile.public_attribution = public_attribution
    try:
        with transaction.atomic():
            profile.save(update_fields=["handle", "hf_username", "public_attribution"])
    except IntegrityError as exc:
        raise ServiceError("handle_taken", "This handle is taken; choose another.") from exc
    return profile


# --- Bans (the maintainers' admin) -------------------------------------------------------------


@dataclass
class BanOutcome:
    """What a ban did: tokens revoked, live leases released, and the contributor's unpublished
    samples quarantined (`quarantined`, done now) or sent to tasks (`queued` samples)."""

    tokens_revoked: int = 0
    leases_released: int = 0
    quarantined: int = 0
    queued: int = 0


@transaction.atomic
def ban_contributor(*, profile: Profile, by: Any, reason: str) -> BanOutcome:
    """Bans a contributor: `banned` is set (their tokens stop authenticating, their samples
    leave every selection and release), their live tokens are revoked, their live leases
    released (the slots go back to the pool), and their unpublished samples (of prompts no
    release has published, and not quarantined already) quarantined: now when they are few,
    else by tasks on the `maintenance` queue once this commits (scoring.tasks). Kept in the
    audit trail with the reason. Raises ServiceError `reason_required` without one."""
    from contributors.models import Lease, LeaseState
    from contributors.services.leasing import release_lease
    from scoring import audit
    from scoring.models import ReleasedPrompt, Sample
    from scoring.tasks import dispatch_sample_action, schedule_rebuilds

    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("reason_required", "Say why the contributor is banned.", status=400)
    profile = Profile.objects.select_for_update().get(pk=profile.pk)
    was_banned = profile.banned
    Profile.objects.filter(pk=profile.pk).update(banned=True)
    profile.banned = True
    outcome = BanOutcome()
    outcome.tokens_revoked = ApiToken.objects.filter(
        user_id=profile.user_id, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    for lease in Lease.objects.filter(contributor_id=profile.user_id, state=LeaseState.LIVE):
        try:
            release_lease(lease=lease)
        except ServiceError:
            continue  # closed meanwhile (expired, released by its node)
        outcome.leases_released += 1
    unpublished = Sample.objects.filter(contributor_id=profile.user_id, quarantined=False).exclude(
        prompt_id__in=ReleasedPrompt.objects.values("prompt_id")
    )
    done = dispatch_sample_action(
        action="quarantine",
        queryset=unpublished,
        by=by,
        reason=f"contributor {profile.handle} banned: {reason}",
    )
    if done.queued:
        outcome.queued = done.count
    else:
        outcome.quarantined = done.changed
    audit.record(
        actor=by,
        action="profile.ban",
        model=Profile,
        ids=[profile.pk],
        reason=reason,
        details={**asdict(outcome), "already_banned": was_banned},
    )
    # Their published samples leave the selections too (selection.settled_q).
    schedule_rebuilds(
        list(
            Sample.objects.filter(contributor_id=profile.user_id)
            .values_list("prompt_id", flat=True)
            .distinct()
        )
    )
    return outcome


@transaction.atomic
def unban_contributor(*, profile: Profile, by: Any, reason: str = "") -> bool:
    """Lifts a ban. Their quarantined samples stay quarantined (a maintainer releases them
    from the samples list), and their revoked tokens stay revoked. Kept in the audit trail.
    Returns whether the contributor was banned."""
    from scoring import audit
    from scoring.models import Sample
    from scoring.tasks import schedule_rebuilds

    lifted = Profile.objects.filter(pk=profile.pk, banned=True).update(banned=False)
    profile.banned = False
    if lifted:
        audit.record(
            actor=by,
            action="profile.unban",
            model=Profile,
            ids=[profile.pk],
            reason=(reason or "").strip(),
        )
        schedule_rebuilds(
            list(
                Sample.objects.filter(contributor_id=profile.user_id)
                .values_list("prompt_id", flat=True)
                .distinct()
            )
        )
    return bool(lifted)

from __future__ import annotations

from celery import shared_task

from contributors import services


@shared_task(
    name="contributors.settle_credit",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
)
def settle_credit(prompt_ids: list[int]) -> int:
    """Settles the credit of these prompts (contributors.services.credit); idempotent."""
    from contributors.services import credit

    return credit.settle_prompts(prompt_ids=prompt_ids)


@shared_task(
    name="contributors.refresh_leaderboard",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=50,
    time_limit=60,
)
def refresh_leaderboard() -> dict[str, int]:
    """Every minute (beat): the leaderboard's rows, from the credit ledger."""
    from contributors.services import credit

    return credit.refresh_leaderboard()


@shared_task(
    name="contributors.sweep_credit",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
)
def sweep_credit() -> int:
    """Every ten minutes (beat): queues settling of closed prompts whose samples changed status
    lately, so a lost settle message costs minutes. Returns how many prompts it queued."""
    from contributors.services import credit

    return credit.sweep()


@shared_task(
    name="contributors.settle_trust",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
)
def settle_trust(prompt_ids: list[int]) -> int:
    """Counts the disclosed verdicts of these prompts toward trust and quotas
    (contributors.services.trust); idempotent."""
    from contributors.services import trust

    return trust.settle_prompts(prompt_ids=prompt_ids)


@shared_task(
    name="contributors.compare_spot_checks",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
)
def compare_spot_checks(prompt_ids: list[int]) -> int:
    """Compares the spot checks of these prompts once closed and judged
    (contributors.services.spotchecks); idempotent."""
    from contributors.services import spotchecks

    return spotchecks.compare_prompts(prompt_ids=prompt_ids)


@shared_task(
    name="contributors.sweep_trust",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
)
def sweep_trust() -> dict[str, int]:
    """Every ten minutes (beat): queues settling of trust for closed prompts whose samples
    changed status lately, so a lost settle message costs minutes; and deletes daily lease
    counts older than trust.LEASE_DAY_KEEP_DAYS, in bounded batches (only today's is read).
    Idempotent."""
    from contributors.services import trust

    return {"queued": trust.sweep(), "lease_days_deleted": trust.prune_lease_days()}


@shared_task(
    name="contributors.expire_overdue_leases", queue="maintenance", acks_late=True, time_limit=300
)
def expire_overdue_leases() -> int:
    return services.expire_overdue_leases()


# --- bounties (contributors.services.bounties) ---


@shared_task(
    name="contributors.refresh_bounties",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=840,
    time_limit=900,
)
def refresh_bounties(bounty_ids: list[int] | None = None) -> int:
    """Recounts data bounties' progress (these, or every live one: beat, every five minutes),
    completing and awarding those that reached their target; idempotent."""
    from contributors.services import bounties

    return bounties.refresh_data_bounties(bounty_ids=bounty_ids)


@shared_task(
    name="contributors.expire_bounties",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
)
def expire_bounties() -> int:
    """Every minute (beat): live bounties past their deadline expire; idempotent."""
    from contributors.services import bounties

    return bounties.expire_overdue_bounties()

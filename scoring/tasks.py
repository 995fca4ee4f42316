"""Celery tasks for scoring. Each takes ids, fetches fresh rows, calls a service, and is safe
to run twice (the service claims work with a conditional UPDATE and upserts verdicts).

Failure paths of a scoring task, and where each sample of its chunk ends up:

* A verifier's own failure is an `error` verdict (pipeline._run), never a crashed task.
* The soft time limit, or a database error (pipeline.InfrastructureError), propagates out of
  the sample being judged: the task retries itself (same task id) with back-off, from that
  sample on. The retry re-claims that sample at once (same claim key) and goes on with the
  rest of the chunk; samples already settled are not judged again.
* A killed worker process (OOM killer, segfault, SIGKILL): `acks_late` and
  `reject_on_worker_lost` put the message back, and its redelivery (same task id) re-claims
  the sample the dead process held at once. Every claim counts an attempt; a sample that keeps
  killing its worker ends `error`, "poison", once THINKPOOL["MAX_SCORING_ATTEMPTS"] are spent.
* Anything else (a bug of ours on one sample) ends that sample `error`, retried later with
  back-off, and the rest of the chunk goes on.
* A lost message, or a worker killed where no redelivery comes (the whole worker on the
  filesystem broker, or before Redis's visibility timeout): the sweeper re-queues samples stuck
  beyond SWEEP_AFTER_S, which scoring/checks.py keeps longer than any task's time limit.

And before a task runs: a message that never reached the broker. Uploads queue scoring through
a transactional outbox (`enqueue_on_commit`): a ScoringOutbox row per message, written in the
upload's transaction and deleted once the message is published on commit. The broker was down,
or the web process died between commit and publish: the row stays, and the minute sweep
publishes it once it is UNQUEUED_AFTER_S old (`publish_outbox`), not after SWEEP_AFTER_S. A
direct publish (`queue_scoring`: sweeps, the admin, rescore) that fails writes the same rows.
Sample rows are never rewritten to record that they were queued.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from scoring import pipeline
from scoring.models import Domain, PromptSet, Sample, ScoringOutbox

logger = logging.getLogger(__name__)

# Uploads queue scoring in chunks of this many ids: one broker message per chunk keeps the
# broker out of the ingest hot path, while a chunk stays small enough to finish in seconds.
QUEUE_CHUNK = 64

# Publishing a chunk tries the broker twice at most, at once (the second try opens a fresh
# connection, which mends one that a broker restart closed): an upload's request must not
# wait on a broker that is away. Each try is bounded by the socket timeouts that
# thinkpool/celery.py sets. Messages not sent stay in the outbox for the minute sweep.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}

# An outbox row this old was not published on commit (broker away, process killed): the minute
# sweep publishes it. Longer than any publish on commit may take (two tries, each bounded by
# the transport timeouts of thinkpool/celery.py), so the sweep rarely races one in flight;
# when it does, the second message is harmless (see `publish_outbox`).
UNQUEUED_AFTER_S = 60
# The sweep takes outbox rows in batches of this many (one transaction, rows locked, each
# published and the sent ones deleted), and starts no new batch after this long: a backlog
# left by a long outage drains over a few sweeps, well inside the task's time limit.
OUTBOX_BATCH = 100
OUTBOX_BUDGET_S = 120

# Retries of a chunk (soft time limit, database errors): exponential with full jitter, at most
# this long apart.
RETRY_BACKOFF_MAX_S = 300
RETRYABLE = (SoftTimeLimitExceeded, *pipeline.InfrastructureError)

_SCORING_TASK: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": 8,
}


@shared_task(
    name="scoring.score_samples",
    queue="verify",
    soft_time_limit=600,
    time_limit=660,
    **_SCORING_TASK,
)
def score_samples(self: Task, sample_ids: list[int], rescore: bool = False) -> int:
    return _score_all(self, sample_ids, rescore)


# Code runs in the sandbox: its own queue, so its workers can be few (bounded concurrency)
# and never hold up the cheap verifiers.
@shared_task(
    name="scoring.score_code_samples",
    queue="sandbox",
    soft_time_limit=1800,
    time_limit=1900,
    **_SCORING_TASK,
)
def score_code_samples(self: Task, sample_ids: list[int], rescore: bool = False) -> int:
    return _score_all(self, sample_ids, rescore)


# The scoring tasks, and which judges the samples of a domain (scoring/checks.py holds the
# verifiers of each domain to the soft time limit of its task).
SCORING_TASKS = (score_samples, score_code_samples)
SANDBOX_DOMAINS = frozenset({Domain.CODE})


def task_for(domain: str) -> Any:
    return score_code_samples if domain in SANDBOX_DOMAINS else score_samples


def runs_code(domain: str, config: Any) -> bool:
    """Whether a set's samples need the sandbox: its domain is code, or its verifier_config
    enables the code verifier (the sandbox never runs on the `verify` queue)."""
    if domain in SANDBOX_DOMAINS:
        return True
    from scoring.verifiers import verifiers_for

    try:
        return any(v.name == "code" for v in verifiers_for(domain, config or {}))
    except ValueError:
        return False  # a typo in the config: the pipeline marks the sample `error` at once


def _score_all(task: Task, sample_ids: list[int], rescore: bool) -> int:
    # The claim key is the task id: a retry (task.retry) and a redelivery after a lost worker
    # keep it, so they re-claim the sample the cut-short run left `scoring`; a duplicate
    # message has another id and leaves it alone. Called directly there is no id: a fresh key.
    key = task.request.id or f"call-{uuid.uuid4().hex}"
    judged = 0
    pending = list(sample_ids)  # this sample and those after it
    try:
        while pending:
            pk = pending[0]
            try:
                judged += pipeline.score_sample(sample_id=pk, claim_key=key, rescore=rescore)
            except RETRYABLE:
                raise  # never swallowed here: the whole task retries (below)
            except Exception as exc:
                # One sample's bug must not hold up the rest of the chunk.
                logger.exception("scoring sample %s failed", pk)
                pipeline.give_up(sample_id=pk, claim_key=key, error=exc)
            pending.pop(0)
    except RETRYABLE as exc:
        # Out of time, or the database is away: try again later from this sample on (those
        # before it are settled; with `rescore` they must not be judged again).
        logger.warning(
            "scoring task %s stopped at sample %s (%s); retrying",
            key,
            pending[0],
            type(exc).__name__,
        )
        countdown = get_exponential_backoff_interval(
            factor=1,
            retries=task.request.retries,
            maximum=RETRY_BACKOFF_MAX_S,
            full_jitter=True,
        )
        raise task.retry(args=(pending, rescore), exc=exc, countdown=countdown) from exc
    return judged


@shared_task(
    name="scoring.sweep_stuck_samples", queue="maintenance", acks_late=True, time_limit=300
)
def sweep_stuck_samples() -> int:
    """Every minute (beat): outbox messages that never reached the broker (after a minute),
    samples stuck before a verdict (after SWEEP_AFTER_S), and samples whose transient error is
    due for another try are queued for scoring; releases nobody is publishing are queued again.
    Returns how many samples it sent or found."""
    unsent = publish_outbox()
    stuck = pipeline.stuck_sample_ids()
    due = pipeline.due_retry_ids()
    queue_scoring(stuck + due)
    _requeue_releases()
    if unsent:
        logger.info("queued %d samples whose message had not reached the broker", unsent)
    if stuck:
        logger.info("re-queued %d samples stuck before a verdict", len(stuck))
    if due:
        logger.info("re-queued %d samples whose verifier error is due for another try", len(due))
    return unsent + len(stuck) + len(due)


def enqueue_on_commit(
    sample_ids: Sequence[int], *, sandbox_ids: Iterable[int] | None = None, rescore: bool = False
) -> None:
    """Queues scoring of `sample_ids` once the caller's transaction commits: call it inside
    the transaction that stores them (outside one, it publishes at once).

    Writes one ScoringOutbox row per message (QUEUE_CHUNK ids, one queue) in the transaction,
    in one INSERT: the rows commit with the samples or not at all. On commit they are
    published and deleted (one DELETE), and nothing else is written: no sample row is
    touched. If the broker is away, or the process dies before it publishes, the rows stay
    and the minute sweep publishes them (`publish_outbox`).

    `sandbox_ids`: those of `sample_ids` that go to the sandbox's queue, when the caller
    knows (an upload does, per prompt set: `runs_code(set.domain, set.verifier_config)`);
    ids in it that are not in `sample_ids` are ignored. None: read from the database."""
    ids = list(dict.fromkeys(sample_ids))
    if not ids:
        return
    if sandbox_ids is None:
        messages = _messages(ids, rescore=rescore)
    else:
        code = set(sandbox_ids)
        messages = _chunked(
            [pk for pk in ids if pk not in code], [pk for pk in ids if pk in code], rescore=rescore
        )
    rows = ScoringOutbox.objects.bulk_create(messages)
    transaction.on_commit(lambda: _send_and_delete(rows))


def queue_scoring(sample_ids: Sequence[int], *, rescore: bool = False) -> int:
    """Sends ids to the scoring queues now; returns how many were sent. Never raises. For
    samples already stored (the sweeps, the admin's requeue, rescore); an upload uses
    `enqueue_on_commit`.

    Once a publish fails, the call sends nothing more (the broker is away: nobody waits on it
    twice), and the messages not sent are written to the outbox, which the minute sweep
    publishes once the broker is back."""
    ids = list(dict.fromkeys(sample_ids))
    if not ids:
        return 0
    try:
        messages = _messages(ids, rescore=rescore)
    except Exception:
        logger.exception("could not read %d samples to queue; the sweeper will", len(ids))
        return 0
    sent = _publish(messages)
    unsent = messages[len(sent) :]
    if unsent:
        try:
            ScoringOutbox.objects.bulk_create(unsent)
        except Exception:
            # The database is away too: the samples wait for the SWEEP_AFTER_S sweep.
            logger.exception("could not keep %d unsent scoring messages", len(unsent))
    return _count(sent)


def publish_outbox(*, older_than_s: float = UNQUEUED_AFTER_S, batch: int = OUTBOX_BATCH) -> int:
    """Publishes outbox rows older than `older_than_s` and deletes those sent; returns how
    many samples they held. Stops at the first publish that fails (the broker is away: the
    rows stay for the next minute) and after OUTBOX_BUDGET_S.

    Rows are taken with FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite's transactions take
    turns): a second sweeper skips the rows the first one holds, so the two do not both send
    them. A second message for the same samples is harmless anyway (a sweeper killed between
    publish and commit, a publish on commit slower than a minute): its task has another id, so
    it does not claim a sample that the first one holds, nor one already settled
    (pipeline.claim); at most it claims a `received` sample first, and the other leaves it."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    deadline = time.monotonic() + OUTBOX_BUDGET_S
    total = 0
    while time.monotonic() < deadline:
        with transaction.atomic():
            rows = list(
                ScoringOutbox.objects.select_for_update(skip_locked=True)
                .filter(created_at__lt=cutoff)
                .order_by("created_at", "pk")[:batch]
            )
            sent = _publish(rows)
            if sent:
                _delete(sent)
        total += _count(sent)
        if len(sent) < batch:  # the last batch, or the broker is away
            break
    return total


def _send_and_delete(rows: list[ScoringOutbox]) -> None:
    """On commit of an upload: publishes its outbox rows; deletes those sent."""
    sent = _publish(rows)
    if sent:
        try:
            _delete(sent)
        except Exception:
            # Sent, yet the row stays: the minute sweep sends it again, which is harmless.
            logger.exception("could not delete %d sent outbox rows", len(sent))


def _publish(messages: list[ScoringOutbox]) -> list[ScoringOutbox]:
    """Publishes each message in order; returns those sent. Stops at the first failure."""
    for done, message in enumerate(messages):
        task = score_code_samples if message.sandbox else score_samples
        try:
            task.apply_async(
                args=(list(message.sample_ids), message.rescore),
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
        except Exception as exc:
            logger.error(
                "could not queue %d samples for scoring (%s: %s); their outbox messages are "
                "sent by the minute sweep",
                _count(messages[done:]),
                type(exc).__name__,
                exc,
            )
            return messages[:done]
    return messages


def _delete(rows: list[ScoringOutbox]) -> None:
    # One statement, no transaction of its own (QuerySet.delete() would add one): the
    # happy path of an upload pays one DELETE by primary key for its scoring.
    ScoringOutbox.objects.filter(pk__in=[row.pk for row in rows])._raw_delete(
        ScoringOutbox.objects.db
    )


def _count(messages: list[ScoringOutbox]) -> int:
    return sum(len(message.sample_ids) for message in messages)


def _messages(ids: list[int], *, rescore: bool) -> list[ScoringOutbox]:
    """The messages (unsaved outbox rows) that queue `ids`, in their order: the sandbox's
    samples to its own queue. Ids of samples that no longer exist are left out."""
    rows = list(Sample.objects.filter(pk__in=ids).values_list("pk", "prompt__prompt_set_id"))
    sets = {
        pk: runs_code(domain, config)
        for pk, domain, config in PromptSet.objects.filter(
            pk__in={set_id for _, set_id in rows}
        ).values_list("pk", "domain", "verifier_config")
    }
    code_ids = {pk for pk, set_id in rows if sets[set_id]}
    known = {pk for pk, _ in rows}
    return _chunked(
        [pk for pk in ids if pk in known and pk not in code_ids],
        [pk for pk in ids if pk in code_ids],
        rescore=rescore,
    )


def _chunked(plain: list[int], code: list[int], *, rescore: bool) -> list[ScoringOutbox]:
    return [
        ScoringOutbox(sample_ids=ids[start : start + QUEUE_CHUNK], sandbox=sandbox, rescore=rescore)
        for sandbox, ids in ((False, plain), (True, code))
        for start in range(0, len(ids), QUEUE_CHUNK)
    ]


# --- selections -------------------------------------------------------------------------------

# A prompt whose samples keep settling is rebuilt at most once per this many seconds.
REBUILD_DEBOUNCE_S = 30


def schedule_rebuilds(prompt_ids: Sequence[int]) -> None:
    """Asks for the prompts' selections to be rebuilt after the current transaction commits,
    at most one pending rebuild per prompt (a cache key held until the task starts). Never
    raises: selections catch up at the next change or with `manage.py build_selections`."""
    from django.core.cache import cache
    from django.db import transaction

    def send() -> None:
        for prompt_id in sorted(set(prompt_ids)):
            try:
                if cache.add(f"thinkpool:rebuild:{prompt_id}", 1, timeout=REBUILD_DEBOUNCE_S * 4):
                    rebuild_selections.apply_async(
                        (prompt_id,),
                        countdown=REBUILD_DEBOUNCE_S,
                        retry=True,
                        retry_policy=PUBLISH_RETRY_POLICY,
                    )
            except Exception:
                logger.warning("could not schedule the selections of prompt %s", prompt_id)

    transaction.on_commit(send)


@shared_task(
    name="scoring.rebuild_selections",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=120,
    time_limit=180,
)
def rebuild_selections(prompt_id: int) -> int:
    """Rebuilds one prompt's selections under the configured policy (safe to run twice: it
    replaces them). Returns how many samples were selected for SFT."""
    from django.core.cache import cache

    from scoring.models import Prompt
    from scoring.rewards import service as rewards
    from scoring.selection import configured_policy, rebuild_prompt, settled

    # From here on a new change schedules a new rebuild, which will see it.
    cache.delete(f"thinkpool:rebuild:{prompt_id}")
    prompt = Prompt.objects.filter(pk=prompt_id).first()
    if prompt is None or not Sample.objects.filter(prompt=prompt).exists():
        return 0
    for ref in rewards.configured():
        missing = rewards.unscored(list(settled(prompt).values_list("pk", flat=True)), ref)
        if missing:
            # Scored first, on the gpu queue; that task rebuilds this prompt when done.
            score_rewards.apply_async((missing, ref.model, ref.version))
            return 0
    return len(rebuild_prompt(prompt_id=prompt_id, policy=configured_policy()).sft)


@shared_task(
    name="scoring.score_rewards",
    queue="gpu",
    acks_late=True,
    soft_time_limit=1800,
    time_limit=1900,
)
def score_rewards(sample_ids: list[int], model: str, version: int) -> int:
    """Scores samples with one reward model (loaded once per worker process; a GPU when the
    worker has one, else the CPU), then rebuilds their prompts' selections. Safe to run twice:
    samples already scored by that model and version are skipped."""
    from scoring.rewards import service as rewards

    ref = rewards.RewardModelRef(model=model, version=version)
    touched = rewards.score_samples(sample_ids=sample_ids, ref=ref)
    for prompt_id in touched:
        rebuild_selections.apply_async((prompt_id,), retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    return len(touched)


@shared_task(
    name="scoring.attest_samples",
    queue="gpu",
    acks_late=True,
    soft_time_limit=1800,
    time_limit=1900,
)
def attest_samples(sample_ids: list[int]) -> int:
    """Model attestation (scoring/attesting.py): one teacher-forced forward pass of each
    sample's claimed model (loaded once per worker process; a GPU when the worker has one),
    an `attestation` verdict per sample, then the contributor's pooled check, which may flag.
    Safe to run twice: samples attested at this version are not attested again, and raising
    the same flags again changes nothing. Returns how many verdicts it stored."""
    from scoring import attesting

    return attesting.attest_samples(sample_ids=sample_ids)


def queue_attestation(sample_ids: Sequence[int]) -> bool:
    """Sends samples to the attestation task now. Never raises: attestation is a sampled
    check, so a message the broker did not take is logged and the samples go unattested."""
    try:
        attest_samples.apply_async(
            (list(sample_ids),), retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
    except Exception:
        logger.warning("could not queue %d samples for attestation", len(sample_ids), exc_info=True)
        return False
    return True


@shared_task(
    name="scoring.publish_release",
    queue="publish",
    acks_late=True,
    # A release of a million rows builds in under a minute, and uploads at the link's speed.
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
)
def publish_release(release_id: int) -> str:
    """Builds and publishes one release (scoring/publishing/service.py). Safe to run twice and
    to redeliver: only one attempt claims the release, and a published one is left as it is.
    Returns the release's final state."""
    from scoring.publishing.service import run_release

    return run_release(release_id=release_id).state


def queue_release(release_id: int) -> bool:
    """Sends a release to the publish queue now. Never raises: a release whose message did not
    go out stays pending, and the minute sweep sends it again."""
    try:
        publish_release.apply_async((release_id,), retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except Exception:
        logger.warning("could not queue release %s; the sweep will", release_id, exc_info=True)
        return False
    return True


def _requeue_releases() -> None:
    from scoring.publishing.service import releases_to_requeue

    try:
        ids = releases_to_requeue()
    except Exception:
        logger.exception("could not read the releases to queue again")
        return
    for release_id in ids:
        if not queue_release(release_id):
            return  # the broker is away: the next sweep tries again
    if ids:
        logger.info("queued again %d releases nobody was publishing", len(ids))


# --- the admin's bulk decisions, imports and builds -------------------------------------------
# A maintainer's action on more samples than THINKPOOL_ADMIN_SYNC_LIMIT is not done inside the
# request: the ids go, BULK_CHUNK at a time, to `bulk_samples_action` on the `maintenance`
# queue. Each decision (scoring.services) changes only the samples it still applies to, so a
# redelivered chunk changes nothing twice, and each chunk keeps its own audit entry.

BULK_CHUNK = 1000
SAMPLE_ACTIONS = ("approve", "reject", "clear_override", "quarantine", "release", "rescore")


def sync_limit() -> int:
    from django.conf import settings

    return int(getattr(settings, "THINKPOOL_ADMIN_SYNC_LIMIT", 500))


def apply_sample_action(*, action: str, sample_ids: Sequence[int], by: Any, reason: str) -> int:
    """Takes one decision on `sample_ids` now (scoring.services); returns how many samples it
    changed. Samples sent back to scoring are queued right after the decision commits: call
    it outside a transaction for those (the admin and the task do)."""
    from scoring import services
    from scoring.models import SampleStatus

    ids = list(sample_ids)
    rescored: list[int] = []
    if action == "approve":
        changed = services.override_samples(
            sample_ids=ids, status=SampleStatus.VERIFIED, reason=reason, by=by
        )
    elif action == "reject":
        changed = services.override_samples(
            sample_ids=ids, status=SampleStatus.REJECTED, reason=reason, by=by
        )
    elif action == "quarantine":
        changed = services.quarantine_samples(sample_ids=ids, by=by, reason=reason)
    elif action == "clear_override":
        changed = rescored = services.clear_overrides(sample_ids=ids, by=by, reason=reason)
    elif action == "release":
        changed = rescored = services.release_samples(sample_ids=ids, by=by, reason=reason)
    elif action == "rescore":
        changed = rescored = services.score_again(sample_ids=ids, by=by, reason=reason)
    else:
        raise ValueError(f"unknown sample action {action!r} (known: {list(SAMPLE_ACTIONS)})")
    if rescored:
        queue_scoring(rescored)
    return len(changed)


@shared_task(
    name="scoring.bulk_samples_action",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=300,
    time_limit=360,
)
def bulk_samples_action(
    action: str, sample_ids: list[int], actor_id: int | None = None, reason: str = ""
) -> int:
    """One chunk (at most BULK_CHUNK ids) of a maintainer's bulk decision. Safe to run twice:
    a decision changes only the samples it still applies to."""
    from django.contrib.auth import get_user_model

    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    return apply_sample_action(action=action, sample_ids=sample_ids, by=actor, reason=reason)


@dataclass
class Dispatched:
    """What `dispatch_sample_action` did: `count` samples selected; done now (`changed` of
    them changed) or queued as `chunks` tasks. The tasks are sent once the caller's
    transaction commits (at once outside one): then `sent` of them reached the broker and
    `unsent` did not."""

    count: int = 0
    queued: bool = False
    changed: int = 0
    chunks: int = 0
    sent: int = 0
    unsent: int = 0


def dispatch_sample_action(
    *, action: str, queryset: QuerySet[Sample], by: Any, reason: str, limit: int | None = None
) -> Dispatched:
    """Takes a decision on the samples of `queryset`: now, when they are at most `limit`
    (THINKPOOL_ADMIN_SYNC_LIMIT), else as `bulk_samples_action` tasks of at most BULK_CHUNK
    ids, sent once the caller's transaction commits. The ids are streamed from the database
    (an iterator over `values_list`), never all held at once outside a transaction."""
    if action not in SAMPLE_ACTIONS:
        raise ValueError(f"unknown sample action {action!r} (known: {list(SAMPLE_ACTIONS)})")
    limit = sync_limit() if limit is None else limit
    ordered = queryset.order_by("pk").values_list("pk", flat=True)
    first = list(ordered[: limit + 1])
    if len(first) <= limit:
        changed = apply_sample_action(action=action, sample_ids=first, by=by, reason=reason)
        return Dispatched(count=len(first), changed=changed)
    actor_id = by.pk if getattr(by, "is_authenticated", False) else None
    outcome = Dispatched(queued=True)

    def send(chunk: list[int]) -> None:
        if outcome.unsent:  # the broker is away: nobody waits on it twice
            outcome.unsent += 1
            return
        try:
            bulk_samples_action.apply_async(
                args=(action, chunk, actor_id, reason),
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
        except Exception:
            logger.exception("could not queue %d samples for %s", len(chunk), action)
            outcome.unsent += 1
        else:
            outcome.sent += 1

    def plan(chunk: list[int]) -> None:
        outcome.chunks += 1
        outcome.count += len(chunk)
        transaction.on_commit(partial(send, chunk))

    chunk: list[int] = []
    for pk in ordered.iterator(chunk_size=BULK_CHUNK):
        chunk.append(pk)
        if len(chunk) == BULK_CHUNK:
            plan(chunk)
            chunk = []
    if chunk:
        plan(chunk)
    return outcome


# Building a set's selections: prompts in id order, for at most this long per task, which then
# queues itself for the rest.
BUILD_BUDGET_S = 240


@shared_task(
    name="scoring.build_set_selections",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=540,
    time_limit=600,
)
def build_set_selections(prompt_set_id: int, after_prompt_id: int = 0) -> int:
    """Rebuilds the selections of the set's prompts that have samples (as `manage.py
    build_selections --set` does, via `rebuild_selections`, which scores rewards first when
    reward models are configured), from the prompt after `after_prompt_id` on. Safe to run
    twice: a prompt's selections are replaced. Returns how many prompts it rebuilt."""
    from django.db.models import Exists, OuterRef

    from scoring.models import Prompt

    deadline = time.monotonic() + BUILD_BUDGET_S
    prompts = (
        Prompt.objects.filter(prompt_set_id=prompt_set_id, pk__gt=after_prompt_id)
        .filter(Exists(Sample.objects.filter(prompt=OuterRef("pk"))))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    done = 0
    for prompt_id in prompts.iterator(chunk_size=500):
        if time.monotonic() > deadline:
            build_set_selections.apply_async(
                (prompt_set_id, prompt_id - 1), retry=True, retry_policy=PUBLISH_RETRY_POLICY
            )
            break
        rebuild_selections(prompt_id)
        done += 1
    return done


def queue_set_selections(prompt_set_ids: Sequence[int]) -> int:
    """Queues `build_set_selections` for each set once the caller's transaction commits;
    returns how many were sent (when not in a transaction) or will be."""
    for set_id in prompt_set_ids:
        transaction.on_commit(
            partial(
                build_set_selections.apply_async,
                (set_id, 0),
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
        )
    return len(prompt_set_ids)


@shared_task(
    name="scoring.import_prompt_file",
    queue="maintenance",
    acks_late=True,
    soft_time_limit=3000,
    time_limit=3300,
)
def import_prompt_file(
    path: str,
    prompt_set_id: int,
    actor_id: int | None = None,
    skip_invalid: bool = False,
    field_map: dict[str, str] | None = None,
    file_name: str = "",
    new_set: bool = False,
) -> dict[str, Any]:
    """Imports a prompt file the admin stored under VAR_DIR/uploads (too large to import
    inside the request), keeps the report in the audit trail, and removes the file. Safe to
    run twice: an import drops the prompts already in the set, and a file already gone (the
    first run finished) imports nothing."""
    from pathlib import Path

    from django.contrib.auth import get_user_model

    from scoring.services import import_from_file

    file = Path(path)
    if not file.exists():
        logger.info("prompt file %s is gone (imported already); nothing to do", path)
        return {"result": "gone"}
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    outcome = import_from_file(
        prompt_set_id=prompt_set_id,
        path=str(file),
        by=actor,
        skip_invalid=skip_invalid,
        field_map=field_map or {},
        file_name=file_name or file.name,
        new_set=new_set,
    )
    file.unlink(missing_ok=True)
    return outcome.summary()

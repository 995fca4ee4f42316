"""Building and publishing releases: the one place a release changes state.

    start_release()  the repository's open release (a failed or interrupted one is retried
                     under its own number), or a new one numbered after the last published;
    run_release()    claims it (a conditional UPDATE, so two workers never build one release),
                     builds its shards and card from one snapshot of the database, commits them
                     on top of the target's head, tags `vN`, and only then marks it published.

A release is recorded as published only after the target confirmed both commit and tag. A
failure anywhere leaves it `failed` with the error, and the next attempt publishes it once:
work that reached the target before the failure (a commit, a tag) is recognised by the
release's marker in its message and not done again.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import uuid
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, OuterRef, Q, Subquery
from django.utils import timezone

from scoring.models import (
    Prompt,
    PromptSet,
    Release,
    ReleasedPrompt,
    ReleaseState,
    ReleaseTarget,
    Sample,
    SampleStatus,
)
from scoring.publishing import licenses
from scoring.publishing.attribution import Attribution
from scoring.publishing.card import WITHDRAWN_SHOWN, CardInput, Source, build_card
from scoring.publishing.fetch import open_fetcher
from scoring.publishing.rows import CONFIGS, SCHEMAS, RowReader, Scope, Stats, open_twin
from scoring.publishing.shards import ShardWriter, background, file_digests
from scoring.publishing.targets import (
    ConcurrentPublish,
    HubTarget,
    LocalTarget,
    PublishError,
    Target,
)
from scoring.selection import Policy, configured_policy

logger = logging.getLogger(__name__)

# The full list of withdrawn rows (see withdrawn_samples), beside the card when there are any.
WITHDRAWN_FILE = "withdrawn.csv"

# The Hub's rule for a repository id: namespace/name, letters, digits, "-", "_", ".".
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class ReleaseError(Exception):
    """A release cannot be started (bad input, a target that does not exist)."""


def release_settings() -> dict[str, Any]:
    return dict(settings.THINKPOOL_RELEASE)


def validate_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise ReleaseError(f"{repo_id!r} is not a Hub repository id (ORG/NAME).")
    return repo_id


def default_path(repo_id: str) -> Path:
    return Path(release_settings()["local_root"]) / repo_id


def start_release(
    *,
    target: str,
    repo_id: str,
    path: str | Path | None = None,
    triggered_by: Any = None,
) -> Release:
    """The release to publish next to (target, repo): its open one, else a new one."""
    if target not in ReleaseTarget.values:
        raise ReleaseError(f"Unknown target {target!r}: local or hub.")
    validate_repo_id(repo_id)
    if target == ReleaseTarget.LOCAL:
        # Absolute: a worker on the publish queue runs in a folder of its own.
        location = str(Path(path or default_path(repo_id)).resolve())
    else:
        if path:
            raise ReleaseError("--path is for the local target.")
        location = release_settings()["hub_endpoint"] or "https://huggingface.co"
    for _ in range(3):
        existing = (
            Release.objects.filter(target=target, repo_id=repo_id)
            .exclude(state=ReleaseState.PUBLISHED)
            .first()
        )
        if existing is not None:
            if existing.location != location:
                raise ReleaseError(
                    f"{repo_id} has an unpublished release v{existing.version} for "
                    f"{existing.location}; publish or delete it first."
                )
            return existing
        last = (
            Release.objects.filter(target=target, repo_id=repo_id).aggregate(v=Max("version"))["v"]
            or 0
        )
        try:
            with transaction.atomic():
                return Release.objects.create(
                    target=target,
                    repo_id=repo_id,
                    location=location,
                    version=last + 1,
                    triggered_by=triggered_by,
                )
        except IntegrityError:
            # Someone started one at the same moment: theirs is the open release; take it.
            continue
    raise ReleaseError(f"Could not start a release of {repo_id}: too many concurrent starts.")


# A release still pending this long after it was started has lost its queue message (the
# broker was away, the process died before it sent it): the minute sweep sends it again. A
# copy of a message that was not lost is harmless: only one attempt claims a release.
PENDING_REQUEUE_AFTER = timedelta(minutes=10)


def releases_to_requeue() -> list[int]:
    """Releases nobody is working on that should be: pending for a while, or left `building`
    by a worker that died (stale)."""
    now = timezone.now()
    stale = now - timedelta(seconds=release_settings()["stale_after_s"])
    return list(
        Release.objects.filter(
            Q(state=ReleaseState.PENDING, created_at__lt=now - PENDING_REQUEUE_AFTER)
            | Q(state=ReleaseState.BUILDING, started_at__lt=stale)
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def make_target(release: Release) -> Target:
    conf = release_settings()
    if release.target == ReleaseTarget.LOCAL:
        return LocalTarget(Path(release.location))
    return HubTarget(
        release.repo_id,
        endpoint=conf["hub_endpoint"],
        private=conf["hub_private"],
        retry_base=conf.get("retry_base_s", 1.0),
    )


# --------------------------------------------------------------------------- building


@dataclass
class Build:
    """What one attempt built: files in the staging folder and what the record keeps."""

    root: Path
    files: dict[str, tuple[Path, str, str]] = field(default_factory=dict)  # sha256, git oid
    row_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    policy: Policy | None = None
    new_prompts: array = field(default_factory=lambda: array("q"))


def admitted_sets(release_license: str) -> tuple[list[PromptSet], list[tuple[str, str]]]:
    """The prompt sets a release under `release_license` may hold, and those left out (with
    the reason) that have closed prompts to publish."""
    admitted, left_out = [], []
    for prompt_set in PromptSet.objects.order_by("name"):
        decision = licenses.admits(
            release_license=release_license,
            source_license=prompt_set.license,
            redistributable=prompt_set.redistributable,
        )
        if decision.included:
            admitted.append(prompt_set)
        elif Prompt.objects.filter(prompt_set=prompt_set, closed_at__isnull=False).exists():
            left_out.append((prompt_set.name, decision.reason))
    return admitted, left_out


def build_release(
    release: Release, root: Path, *, max_shard_bytes: int | None = None, chunk: int = 0
) -> Build:
    """Writes the release's shards and card into `root`, from one snapshot of the database."""
    conf = release_settings()
    release_license = conf["license"]
    if not licenses.is_known_release_license(release_license):
        raise PublishError(f"THINKPOOL_RELEASE_LICENSE {release_license!r} is not a known licence.")
    build = Build(root=root)
    # The card says when the release was started, not when this attempt ran: a retry of
    # unchanged data builds the same bytes, and finds its earlier commit already made.
    built_at = release.created_at
    root.mkdir(parents=True, exist_ok=True)
    with reading(release, chunk=chunk) as read:
        scope, sets, left_out, reader = read.scope, read.sets, read.left_out, read.rows
        policy = build.policy = scope.policy
        for name, reason in left_out:
            message = f"prompt set {name} left out: {reason}"
            logger.warning("release %s v%s: %s", release.repo_id, release.version, message)
            build.warnings.append(message)
        writers = {
            config: ShardWriter(
                root,
                config,
                SCHEMAS[config],
                max_bytes=max_shard_bytes or conf["max_shard_bytes"],
            )
            for config in CONFIGS
        }
        # Parquet encoding and compression (which let go of the GIL) run beside the reading.
        with background(writers) as write:
            for config, batch in reader.batches():
                write(config, batch)
        shards = {config: writer.close() for config, writer in writers.items()}
        build.new_prompts = reader.new_prompts
        held_back = (
            Prompt.objects.filter(
                prompt_set_id__in=scope.set_ids, closed_at__isnull=False, contaminated=False
            )
            .filter(open_twin())
            .count()
        )
        if held_back:
            message = f"{held_back} closed prompts held back: a twin of each is still open"
            logger.warning("release %s v%s: %s", release.repo_id, release.version, message)
            build.warnings.append(message)
        withdrawn, withdrawn_shown = write_withdrawn(release, root / WITHDRAWN_FILE)
        if withdrawn:
            message = (
                f"{withdrawn} rows published earlier are withdrawn (quarantined samples, "
                "banned contributors): listed in the card"
                + (f" and {WITHDRAWN_FILE}" if withdrawn > WITHDRAWN_SHOWN else "")
            )
            logger.warning("release %s v%s: %s", release.repo_id, release.version, message)
            build.warnings.append(message)
        contamination: Counter[str] = Counter()
        contaminated = 0
        for (matches,) in (
            Prompt.objects.filter(
                prompt_set_id__in=scope.set_ids, closed_at__isnull=False, contaminated=True
            )
            .values_list("contamination")
            .iterator(chunk_size=2000)
        ):
            contaminated += 1
            for benchmark in {m.get("benchmark", "?") for m in matches if isinstance(m, dict)}:
                contamination[str(benchmark)] += 1
    stats: Stats = reader.stats
    build.row_counts = {config: writers[config].rows for config in CONFIGS}
    if not any(build.row_counts.values()):
        raise PublishError(
            "Nothing to publish: no closed, uncontaminated prompt of an admitted set has judged "
            "samples yet."
        )
    for config_shards in shards.values():
        for shard in config_shards:
            build.files[shard.path] = (shard.local, shard.sha256, shard.git_oid)
    card = build_card(
        CardInput(
            repo_id=release.repo_id,
            version=release.version,
            license=release_license,
            built_at=built_at,
            policy=policy,
            stats=stats,
            files={
                config: [s.path for s in shards[config]] for config in CONFIGS if shards[config]
            },
            sources=[
                Source(s.name, s.license, s.source, stats.prompts_per_source[s.name])
                for s in sets
                if stats.prompts_per_source[s.name]
            ],
            left_out=left_out,
            contamination=dict(contamination),
            contaminated_prompts=contaminated,
            held_back=held_back,
            withdrawn=withdrawn,
            withdrawn_rows=withdrawn_shown,
            withdrawn_file=WITHDRAWN_FILE if withdrawn > WITHDRAWN_SHOWN else None,
        )
    )
    readme = root / "README.md"
    readme.write_text(str(card), encoding="utf-8")
    sha256, oid, _ = file_digests(readme)
    build.files["README.md"] = (readme, sha256, oid)
    if withdrawn > WITHDRAWN_SHOWN:
        listed = root / WITHDRAWN_FILE
        sha256, oid, _ = file_digests(listed)
        build.files[WITHDRAWN_FILE] = (listed, sha256, oid)
    return build


def withdrawn_samples(release: Release) -> Any:
    """(prompt id, sample id) of the rows an earlier release of this repository published
    that this one no longer holds by a maintainer's decision, in row order: judged samples of
    prompts first published before this version that are now quarantined (after that first
    publication: one quarantined before it was never published; one quarantined before
    `quarantined_at` was kept counts), or of a banned or deactivated contributor and not
    quarantined (a ban quarantines the samples of unpublished prompts, contributors'
    ban_contributor, and leaves the published ones as they were).

    Cumulative: a row stays listed in every later release while it is held back, so the list
    says what an older copy holds that the dataset no longer does. Scoring keeps no ban time:
    a banned contributor's sample of a prompt first published after the ban (never in a
    release) is listed too, unless the ban quarantined it."""
    scope = {"target": release.target, "repo_id": release.repo_id}
    earlier = ReleasedPrompt.objects.filter(**scope, version__lt=release.version)
    first_version = Subquery(
        ReleasedPrompt.objects.filter(**scope, prompt_id=OuterRef("prompt_id")).values("version")[
            :1
        ]
    )
    published_at = Subquery(
        Release.objects.filter(
            **scope, state=ReleaseState.PUBLISHED, version=OuterRef("first_version")
        ).values("published_at")[:1]
    )
    return (
        Sample.objects.filter(
            prompt_id__in=earlier.values("prompt_id"),
            status__in=[SampleStatus.VERIFIED, SampleStatus.REJECTED],
        )
        .annotate(first_version=first_version)
        .annotate(first_published_at=published_at)
        .filter(
            Q(
                quarantined=True,
                quarantined_at__isnull=True,
            )
            | Q(quarantined=True, quarantined_at__gt=F("first_published_at"))
            | Q(quarantined=False, contributor__profile__banned=True)
            | Q(quarantined=False, contributor__is_active=False)
        )
        .order_by("prompt_id", "pk")
        .values_list("prompt_id", "pk")
    )


def write_withdrawn(release: Release, path: Path) -> tuple[int, list[tuple[int, int]]]:
    """Writes every withdrawn row (withdrawn_samples) to `path` as CSV when there are more
    than the card lists (card.WITHDRAWN_SHOWN); returns their count and the first
    WITHDRAWN_SHOWN of them. Streams: memory does not grow with the list."""
    count = 0
    shown: list[tuple[int, int]] = []
    path.unlink(missing_ok=True)
    handle = None
    try:
        for prompt_id, sample_id in withdrawn_samples(release).iterator(chunk_size=5000):
            if handle is None:
                handle = path.open("w", encoding="utf-8", newline="")
                writer = csv.writer(handle)
                writer.writerow(["prompt_id", "sample_id"])
            writer.writerow([prompt_id, sample_id])
            count += 1
            if len(shown) < WITHDRAWN_SHOWN:
                shown.append((prompt_id, sample_id))
    finally:
        if handle is not None:
            handle.close()
    if count <= WITHDRAWN_SHOWN:
        path.unlink(missing_ok=True)  # the card lists them all
    return count, shown


@dataclass
class Reading:
    """What a release reads: its scope (the admitted sets, the policy) and the rows of it."""

    scope: Scope
    sets: list[PromptSet]
    left_out: list[tuple[str, str]]  # (set, reason) for sets with closed prompts kept out
    rows: RowReader


@contextmanager
def reading(release: Release, *, chunk: int = 0) -> Iterator[Reading]:
    """The release's rows and everything counted beside them, from one consistent view of the
    database, so counts, card and rows agree. On PostgreSQL a read-only REPEATABLE READ
    transaction whose snapshot is exported, so the Arrow fetcher's own connection reads the same
    data (fetch.py). Inside a caller's transaction (tests) it reads in that one, through
    Django's cursor: another connection would not see its uncommitted rows."""
    outer = connection.in_atomic_block
    with transaction.atomic():
        snapshot = None
        if connection.vendor == "postgresql" and not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute("SELECT pg_export_snapshot()")
                (snapshot,) = cursor.fetchone()
        fetcher = open_fetcher(snapshot)
        try:
            sets, left_out = admitted_sets(release_settings()["license"])
            scope = Scope(
                version=release.version,
                target=release.target,
                repo_id=release.repo_id,
                policy=configured_policy(),
                set_ids=tuple(s.pk for s in sets),
            )
            rows = RowReader(scope, attribution=Attribution(), chunk=chunk, fetcher=fetcher)
            yield Reading(scope, sets, left_out, rows)
        finally:
            fetcher.close()


# --------------------------------------------------------------------------- publishing


def marker(release: Release) -> str:
    return f"Thinkpool-Release: {release.uid}"


def commit_message(release: Release, build: Build) -> str:
    counts = ", ".join(f"{config} {n:,}" for config, n in build.row_counts.items())
    return f"Release {release.tag}\n\nRows: {counts}.\n\n{marker(release)}"


def publish_to(target: Target, release: Release, build: Build) -> str:
    """Commits the build on top of the target's head and tags it; returns the commit. Work an
    earlier attempt of this release already did there is recognised and not repeated."""
    target.prepare()
    target.validate_card(build.files["README.md"][0].read_text(encoding="utf-8"))
    mark = marker(release)
    message = commit_message(release, build)
    tagged = target.tag_commit(release.tag)
    if tagged is not None:
        if mark in target.message(tagged):
            if _holds(target, tagged, build):
                return tagged  # tagged by an earlier attempt, which failed before recording
            raise PublishError(
                f"{release.tag} at {target.location} was made by an earlier attempt of this "
                "release from other data, and a published tag is not moved: delete the tag "
                "there to publish this build under it."
            )
        raise PublishError(
            f"{release.tag} already exists at {target.location} and is not this release: the "
            "database and the target disagree about which versions exist."
        )
    head = target.head()
    remote = target.files(head) if head is not None else {}
    adds = [
        (path, local)
        for path, (local, sha256, oid) in build.files.items()
        if not (path in remote and remote[path].same_as(sha256, oid))
    ]
    # data/ (and the withdrawn list) are the releases' own: a file the new build no longer
    # has goes.
    deletes = sorted(
        p for p in remote if (p.startswith("data/") or p == WITHDRAWN_FILE) and p not in build.files
    )
    if head is not None and not adds and not deletes and mark in target.message(head):
        # An earlier attempt committed exactly this build, then failed before tagging. (If
        # the data changed since, the new build is committed on top and that is tagged.)
        commit = head
    else:
        try:
            commit = target.commit(adds=adds, deletes=deletes, message=message, parent=head)
        except ConcurrentPublish:
            # A commit the target took although its answer was lost, then retried.
            now = target.head()
            if now is None or mark not in target.message(now) or not _holds(target, now, build):
                raise
            commit = now
    try:
        target.tag(tag=release.tag, revision=commit, message=message)
    except Exception:
        if target.tag_commit(release.tag) != commit:
            raise
    return commit


def _holds(target: Target, revision: str, build: Build) -> bool:
    """Whether the target's files at `revision` are exactly the build's (data/ and card)."""
    files = target.files(revision)
    ours = {p for p in files if p.startswith("data/") or p in ("README.md", WITHDRAWN_FILE)}
    return ours == set(build.files) and all(
        files[path].same_as(sha256, oid) for path, (_, sha256, oid) in build.files.items()
    )


def run_release(*, release_id: int, max_shard_bytes: int | None = None, chunk: int = 0) -> Release:
    """Builds and publishes one release, once. Returns it in its final state; re-raises what
    made it fail (after recording it). A release someone else is building, or one already
    published, is returned as it is."""
    conf = release_settings()
    claim = uuid.uuid4().hex
    now = timezone.now()
    stale = now - timedelta(seconds=conf["stale_after_s"])
    claimed = (
        Release.objects.filter(pk=release_id)
        .filter(
            Q(state__in=[ReleaseState.PENDING, ReleaseState.FAILED])
            | Q(state=ReleaseState.BUILDING, started_at__lt=stale)
        )
        .update(
            state=ReleaseState.BUILDING,
            claim=claim,
            started_at=now,
            attempts=F("attempts") + 1,
            error="",
        )
    )
    release = Release.objects.get(pk=release_id)
    if not claimed:
        return release
    staging = Path(conf["staging_root"]) / str(release.uid)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build = build_release(release, staging, max_shard_bytes=max_shard_bytes, chunk=chunk)
        commit = publish_to(make_target(release), release, build)
    except BaseException as exc:
        Release.objects.filter(pk=release_id, claim=claim).update(
            state=ReleaseState.FAILED, error=f"{type(exc).__name__}: {exc}"[:5000]
        )
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        _record_published(release, claim, commit, build)
    except BaseException as exc:
        # The target has the release; recording it failed (the database went away). The
        # next attempt finds commit and tag by their marker and records them.
        Release.objects.filter(pk=release_id, claim=claim).update(
            state=ReleaseState.FAILED, error=f"recording: {type(exc).__name__}: {exc}"[:5000]
        )
        raise
    release.refresh_from_db()
    return release


@transaction.atomic
def _record_published(release: Release, claim: str, commit: str, build: Build) -> None:
    policy = build.policy
    done = Release.objects.filter(pk=release.pk, claim=claim, state=ReleaseState.BUILDING).update(
        state=ReleaseState.PUBLISHED,
        commit_id=commit,
        published_at=timezone.now(),
        row_counts=build.row_counts,
        files={path: sha256 for path, (_, sha256, _) in build.files.items()},
        warnings=build.warnings,
        policy=policy.label if policy else "",
        policy_version=policy.version if policy else None,
    )
    if not done:
        # Taken over as stale while we worked: the target has our commit; the other attempt
        # recognises it by the marker and records it.
        logger.warning("release %s lost its claim before it was recorded", release.pk)
        return
    for start in range(0, len(build.new_prompts), 5000):
        ReleasedPrompt.objects.bulk_create(
            [
                ReleasedPrompt(
                    target=release.target,
                    repo_id=release.repo_id,
                    prompt_id=pk,
                    version=release.version,
                )
                for pk in build.new_prompts[start : start + 5000]
            ],
            ignore_conflicts=True,
        )

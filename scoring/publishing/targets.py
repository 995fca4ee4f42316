"""Where releases go: a local git repository laid out like the Hub's, or the Hub itself.

Both speak one small protocol, so the publisher (service.py) decides what to commit the same way
for both: a release is one commit on `main` whose parent is the head the publisher read (so two
publishers cannot overwrite each other: the second one's commit is refused), and a tag `vN`.
Every commit and tag message carries the release's marker, which is how a retry recognises
work an earlier attempt finished before it failed: a commit that landed, or a tag.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from huggingface_hub.hf_api import GitRefs

logger = logging.getLogger(__name__)

T = TypeVar("T")

BRANCH = "main"
# The Hub's recommendation: fewer than 100 files per commit
# (https://huggingface.co/docs/hub/repositories-recommendations).
MAX_OPERATIONS_PER_COMMIT = 99


class PublishError(Exception):
    """The target refused the release; the release stays unpublished and can be retried."""


class ConcurrentPublish(PublishError):
    """Someone else committed to the target since we read its head."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    git_oid: str  # the git blob id
    sha256: str | None  # of the content, for files in LFS (the Hub's large files)

    def same_as(self, sha256: str, git_oid: str) -> bool:
        return self.sha256 == sha256 if self.sha256 else self.git_oid == git_oid


class Target(Protocol):
    kind: str
    location: str

    def prepare(self) -> None:
        """Creates the repository if it does not exist."""

    def head(self) -> str | None:
        """The commit `main` points at, None for an empty repository."""

    def message(self, revision: str) -> str:
        """The full message of a commit."""

    def tag_commit(self, tag: str) -> str | None:
        """The commit the tag points at, or None."""

    def files(self, revision: str) -> dict[str, RemoteFile]:
        """Every file at the revision, by path."""

    def commit(
        self, *, adds: list[tuple[str, Path]], deletes: list[str], message: str, parent: str | None
    ) -> str:
        """One commit on `main` on top of `parent` (ConcurrentPublish if `main` moved since);
        returns its id."""

    def tag(self, *, tag: str, revision: str, message: str) -> None: ...

    def validate_card(self, text: str) -> None:
        """Raises PublishError when the target would refuse the dataset card's metadata."""


# --------------------------------------------------------------------------- local git folder


class LocalTarget:
    """A folder that is exactly the Hub repository's tree, and a git repository whose tags are
    the releases. `datasets.load_dataset(<folder>)` reads it as it would the Hub repository."""

    kind = "local"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    def _git(
        self,
        *args: str,
        check: bool = True,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        done = subprocess.run(
            [
                "git",
                "-c",
                "user.name=Thinkpool",
                "-c",
                "user.email=releases@thinkpool.invalid",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "tag.gpgsign=false",
                *args,
            ],
            cwd=self.path,
            capture_output=True,
            text=True,
            input=input_text,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
        )
        if check and done.returncode != 0:
            raise PublishError(f"git {args[0]} failed in {self.path}: {done.stderr.strip()}")
        return done.stdout.strip() if done.returncode == 0 else ""

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / ".git").exists():
            self._git("init", "-q", "-b", BRANCH)

    def head(self) -> str | None:
        return (
            self._git("rev-parse", "-q", "--verify", f"refs/heads/{BRANCH}^{{commit}}", check=False)
            or None
        )

    def message(self, revision: str) -> str:
        return self._git("log", "-1", "--format=%B", revision)

    def tag_commit(self, tag: str) -> str | None:
        return (
            self._git("rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False)
            or None
        )

    def files(self, revision: str) -> dict[str, RemoteFile]:
        out: dict[str, RemoteFile] = {}
        for line in self._git("ls-tree", "-r", "-z", revision).split("\0"):
            if not line:
                continue
            meta, path = line.split("\t", 1)
            _, kind, oid = meta.split()
            if kind == "blob":
                out[path] = RemoteFile(path, oid, None)
        return out

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One publisher at a time in this folder; the parent check below catches anyone who
        # committed between our reading the head and taking the lock.
        with open(self.path / ".git" / "thinkpool-publish.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def commit(
        self, *, adds: list[tuple[str, Path]], deletes: list[str], message: str, parent: str | None
    ) -> str:
        """Builds the commit with git's plumbing, in a private index, from `parent`'s tree:
        nothing a killed attempt left in the folder's index or work tree, nor a HEAD someone
        detached, can get into it. `main` moves by compare-and-swap (`update-ref NEW OLD`);
        the work tree follows afterwards."""
        with self._locked():
            if self.head() != parent:
                raise ConcurrentPublish(f"{self.path}: {BRANCH} moved since the release started")
            index = self.path / ".git" / f"thinkpool-index-{os.getpid()}"
            env = {"GIT_INDEX_FILE": str(index)}
            try:
                if parent is None:
                    self._git("read-tree", "--empty", env=env)
                else:
                    self._git("read-tree", parent, env=env)
                if deletes:
                    self._git("rm", "-q", "--cached", "--ignore-unmatch", "--", *deletes, env=env)
                if adds:
                    oids = self._git(
                        "hash-object",
                        "-w",
                        "--no-filters",
                        "--stdin-paths",
                        input_text="".join(f"{local}\n" for _, local in adds),
                    ).split("\n")
                    entries = "".join(
                        f"100644 {oid}\t{path}\n" for (path, _), oid in zip(adds, oids, strict=True)
                    )
                    self._git("update-index", "--add", "--index-info", input_text=entries, env=env)
                tree = self._git("write-tree", env=env)
                parents = ["-p", parent] if parent else []
                commit = self._git("commit-tree", tree, *parents, "-F", "-", input_text=message)
                # Compare-and-swap: refused if main is no longer `parent` (zeros: no main yet).
                self._git(
                    "update-ref", f"refs/heads/{BRANCH}", commit, parent or "0" * 40, check=False
                )
                if self.head() != commit:
                    raise ConcurrentPublish(f"{self.path}: {BRANCH} moved while committing")
            finally:
                index.unlink(missing_ok=True)
            # The folder shows the release: HEAD on main, the work tree as its tree.
            self._git("symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
            self._git("reset", "-q", "--hard", BRANCH)
            return commit

    def tag(self, *, tag: str, revision: str, message: str) -> None:
        self._git("tag", "-a", tag, "-m", message, revision)

    def validate_card(self, text: str) -> None:
        # Offline: the metadata must at least parse (the Hub's own check needs the Hub).
        from huggingface_hub import DatasetCard

        try:
            DatasetCard(text, ignore_metadata_errors=False)
        except ValueError as exc:
            raise PublishError(f"The dataset card's metadata does not parse: {exc}") from exc


# --------------------------------------------------------------------------- Hugging Face Hub

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def retrying(call: Callable[[], T], *, what: str, attempts: int = 6, base: float = 1.0) -> T:
    """Runs `call`, retrying rate limits (429, honouring Retry-After), server errors and lost
    connections with exponential back-off and jitter. Anything else is raised at once."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except HfHubHTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else None
            if status not in RETRY_STATUSES or attempt == attempts:
                raise
            wait = _retry_after(response) if status == 429 else None
        except (httpx.TransportError, ConnectionError, TimeoutError):
            if attempt == attempts:
                raise
            wait = None
        delay = wait if wait is not None else base * 2 ** (attempt - 1) * (0.5 + random.random())
        logger.warning("%s failed (attempt %d/%d); again in %.1f s", what, attempt, attempts, delay)
        time.sleep(min(delay, 60.0))
    raise AssertionError("unreachable")


def _retry_after(response: object) -> float | None:
    value = getattr(response, "headers", {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class HubTarget:
    """A dataset repository on the Hub (or any server that speaks its API: `endpoint`)."""

    kind = "hub"

    def __init__(
        self,
        repo_id: str,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        private: bool = False,
        retry_base: float = 1.0,
    ) -> None:
        from huggingface_hub import HfApi, get_token

        token = token or get_token()
        if not token:
            raise PublishError("Set HF_TOKEN to a token that may write to the repository.")
        self.repo_id = repo_id
        self.private = private
        self.api = HfApi(endpoint=endpoint, token=token)
        self.location = self.api.endpoint
        self.retry_base = retry_base

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return retrying(call, what=f"{what} on {self.repo_id}", base=self.retry_base)

    def prepare(self) -> None:
        self._call(
            "create_repo",
            lambda: self.api.create_repo(
                self.repo_id, repo_type="dataset", exist_ok=True, private=self.private
            ),
        )

    def _refs(self) -> GitRefs:
        return self._call(
            "list_repo_refs", lambda: self.api.list_repo_refs(self.repo_id, repo_type="dataset")
        )

    def head(self) -> str | None:
        for branch in self._refs().branches:
            if branch.name == BRANCH:
                return str(branch.target_commit)
        return None

    def message(self, revision: str) -> str:
        commits = self._call(
            "list_repo_commits",
            lambda: self.api.list_repo_commits(
                self.repo_id, repo_type="dataset", revision=revision
            ),
        )
        if not commits:
            return ""
        return f"{commits[0].title}\n\n{commits[0].message}"

    def tag_commit(self, tag: str) -> str | None:
        for ref in self._refs().tags:
            if ref.name == tag:
                return str(ref.target_commit)
        return None

    def files(self, revision: str) -> dict[str, RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        entries = self._call(
            "list_repo_tree",
            lambda: list(
                self.api.list_repo_tree(
                    self.repo_id, repo_type="dataset", revision=revision, recursive=True
                )
            ),
        )
        out: dict[str, RemoteFile] = {}
        for entry in entries:
            if isinstance(entry, RepoFile):
                lfs = entry.lfs
                sha256 = lfs.sha256 if lfs is not None else None
                out[entry.path] = RemoteFile(entry.path, entry.blob_id, sha256)
        return out

    def commit(
        self, *, adds: list[tuple[str, Path]], deletes: list[str], message: str, parent: str | None
    ) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        # New files first, then deletions, the card last: if a chain of commits breaks
        # between parts, `main` still has every old shard its card names.
        files = [(p, f) for p, f in adds if p != "README.md"]
        card = [(p, f) for p, f in adds if p == "README.md"]
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            *(CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in files),
            *(CommitOperationDelete(path_in_repo=path) for path in deletes),
            *(CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in card),
        ]
        # Under the Hub's files-per-commit recommendation: a large release is a chain of
        # commits, each on top of the last; only the last carries the release's message, so a
        # retry after a break in the chain starts again from what is there.
        groups = [
            operations[i : i + MAX_OPERATIONS_PER_COMMIT]
            for i in range(0, max(len(operations), 1), MAX_OPERATIONS_PER_COMMIT)
        ]
        title, _, description = message.partition("\n")
        for i, group in enumerate(groups, start=1):
            last = i == len(groups)
            summary = title if last else f"{title} (part {i} of {len(groups)})"
            details = description.strip() if last else ""

            def create(
                group: list[Any] = group,
                summary: str = summary,
                details: str = details,
                parent: str | None = parent,
            ) -> Any:
                return self.api.create_commit(
                    self.repo_id,
                    repo_type="dataset",
                    operations=group,
                    commit_message=summary,
                    commit_description=details,
                    parent_commit=parent,
                    revision=BRANCH,
                )

            try:
                info = self._call("create_commit", create)
            except HfHubHTTPError as exc:
                if exc.response is not None and exc.response.status_code in (409, 412):
                    raise ConcurrentPublish(f"{self.repo_id}: {exc}") from exc
                raise
            parent = info.oid
        assert parent is not None
        return parent

    def tag(self, *, tag: str, revision: str, message: str) -> None:
        self._call(
            "create_tag",
            lambda: self.api.create_tag(
                self.repo_id, repo_type="dataset", tag=tag, revision=revision, tag_message=message
            ),
        )

    def validate_card(self, text: str) -> None:
        """The Hub's own check of the card's YAML (what DatasetCard.push_to_hub does), against
        this target's endpoint, before anything is committed."""
        from huggingface_hub.utils import get_session, hf_raise_for_status

        def call() -> None:
            response = get_session().post(
                f"{self.api.endpoint}/api/validate-yaml",
                json={"repoType": "dataset", "content": text},
                headers={"Accept": "text/plain"},
            )
            if response.status_code == 400:
                raise PublishError(f"The Hub refused the dataset card: {response.text[:2000]}")
            hf_raise_for_status(response)

        self._call("validate-yaml", call)

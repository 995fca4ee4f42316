"""Releases to the `hub` target: the real huggingface_hub client publishes to a test server on
127.0.0.1 that speaks the Hub's API and writes each commit into a real git repository
(tests/fixtures/hub_server.py, whose docstring says what it does not cover: real auth, LFS/Xet
transfer, server-side limits).

These tests lift HF_HUB_OFFLINE, for themselves only, through the `hub_server` fixture.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from datasets import load_dataset

from scoring.models import Release
from scoring.publishing import targets
from scoring.publishing.service import run_release, start_release
from tests.fixtures.hub_server import hub_server_fixture  # noqa: F401
from tests.scoring.publishing.conftest import make_dataset

CONFIGS = ["sft", "preference", "rl", "raw"]
REPO = "thinkpool/r1-traces"


@pytest.fixture
def hub(hub_server, release_dirs, settings, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    settings.THINKPOOL_RELEASE = {**settings.THINKPOOL_RELEASE, "hub_endpoint": hub_server.url}
    return hub_server


def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def export(git_dir: Path, revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "--git-dir", str(git_dir), "archive", "--format=tar", revision],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def publish_hub(**kwargs) -> Release:
    release = start_release(target="hub", repo_id=REPO)
    return run_release(release_id=release.pk, **kwargs)


@pytest.mark.django_db
def test_publish_to_the_hub_commits_tags_and_loads_back(hub, tmp_path):
    make_dataset(prompts=3)
    release = publish_hub(max_shard_bytes=1, chunk=1)
    git_dir = hub.git_dir(REPO)

    assert release.state == "published" and release.location == hub.url
    assert release.commit_id == git(git_dir, "rev-parse", "v1^{commit}") == hub.head(REPO)
    files = set(git(git_dir, "ls-tree", "-r", "--name-only", "v1").split("\n"))
    assert files == {".gitattributes", "README.md"} | {
        f"data/{c}/train-0000{i}-of-00003.parquet"
        for c in ("sft", "raw", "preference", "rl")
        for i in range(3)
    }
    assert f"Thinkpool-Release: {release.uid}" in git(git_dir, "log", "-1", "--format=%B", "v1")
    # One commit for the release on top of the repository's initial one.
    assert git(git_dir, "rev-list", "--count", "main") == "2"
    # The card was checked by the Hub's validate-yaml before the commit.
    paths = [p for _, p in hub.requests]
    assert paths.index("/api/validate-yaml") < max(
        i for i, p in enumerate(paths) if p.startswith(f"/api/datasets/{REPO}/commit/")
    )

    # Read back from the server by repository id and tag, as a consumer would from the Hub.
    def load(config):
        return load_dataset(
            REPO, config, split="train", revision="v1", cache_dir=str(tmp_path / f"c-{config}")
        )

    counts = {c: load(c).num_rows for c in CONFIGS}
    assert counts == release.row_counts == {"sft": 6, "preference": 3, "rl": 3, "raw": 9}
    sft = load("sft")
    assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant"]
    assert sft[0]["messages"][1]["content"].startswith("<think>\n")
    # The tag holds exactly the files the release recorded.
    folder = export(git_dir, "v1", tmp_path / "v1")
    for path, sha256 in release.files.items():
        assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == sha256


@pytest.mark.django_db
def test_a_second_release_uploads_only_what_changed(hub):
    data = make_dataset(prompts=2)
    publish_hub(max_shard_bytes=1, chunk=1)
    before = len(hub.requests)
    from scoring.models import Sample
    from scoring.selection import configured_policy, rebuild_prompt

    Sample.objects.filter(pk=data.samples[-2].pk).update(quarantined=True)
    rebuild_prompt(prompt_id=data.prompts[-1].pk, policy=configured_policy())
    second = publish_hub(max_shard_bytes=1, chunk=1)
    git_dir = hub.git_dir(REPO)
    changed = git(git_dir, "diff", "--name-only", "v1", "v2").split("\n")
    assert changed == [
        "README.md",
        "data/raw/train-00001-of-00002.parquet",
        "data/rl/train-00001-of-00002.parquet",
        "data/sft/train-00001-of-00002.parquet",
    ]
    assert second.version == 2
    # Only the changed files were offered to the Hub (preupload lists what a commit sends).
    assert (
        sum(1 for _, p in hub.requests[before:] if p.startswith(f"/api/datasets/{REPO}/commit/"))
        == 1
    )


@pytest.mark.django_db
def test_transient_hub_errors_are_retried_and_publish_once(hub):
    make_dataset(prompts=1)
    hub.fail_next("commit", status=503, times=2)
    hub.fail_next("tag", status=429, times=1)
    release = publish_hub()
    assert release.state == "published" and release.attempts == 1
    git_dir = hub.git_dir(REPO)
    assert git(git_dir, "rev-list", "--count", "main") == "2"
    assert git(git_dir, "tag", "--list") == "v1"


@pytest.mark.django_db
def test_a_failed_commit_leaves_the_release_unpublished_and_a_retry_publishes_once(hub):
    make_dataset(prompts=1)
    hub.fail_next("commit", status=500, times=50)
    release = start_release(target="hub", repo_id=REPO)
    with pytest.raises(Exception, match="500"):
        run_release(release_id=release.pk)
    release.refresh_from_db()
    git_dir = hub.git_dir(REPO)
    assert release.state == "failed" and "500" in release.error
    assert not Release.objects.filter(state="published").exists()
    assert git(git_dir, "tag", "--list") == ""
    assert git(git_dir, "rev-list", "--count", "main") == "1"  # the initial commit only

    hub.clear_failures()
    retried = run_release(release_id=start_release(target="hub", repo_id=REPO).pk)
    assert (retried.pk, retried.state, retried.version) == (release.pk, "published", 1)
    assert git(git_dir, "rev-list", "--count", "main") == "2"
    assert git(git_dir, "tag", "--list") == "v1"
    assert Release.objects.count() == 1


@pytest.mark.django_db
def test_a_commit_that_landed_before_the_failure_is_not_made_again(hub, monkeypatch):
    make_dataset(prompts=1)
    hub.fail_next("tag", status=500, times=50)
    release = start_release(target="hub", repo_id=REPO)
    with pytest.raises(Exception, match="500"):
        run_release(release_id=release.pk)
    git_dir = hub.git_dir(REPO)
    assert git(git_dir, "rev-list", "--count", "main") == "2"

    hub.clear_failures()
    published = run_release(release_id=release.pk)
    assert published.state == "published"
    assert git(git_dir, "rev-list", "--count", "main") == "2"
    assert published.commit_id == git(git_dir, "rev-parse", "v1^{commit}")


@pytest.mark.django_db
def test_another_publisher_committing_first_is_not_overwritten(hub, monkeypatch):
    make_dataset(prompts=1)
    from huggingface_hub import CommitOperationAdd, HfApi

    real_commit = targets.HubTarget.commit

    def race(self, **kwargs):
        HfApi(endpoint=hub.url, token="other").create_commit(
            REPO,
            repo_type="dataset",
            operations=[CommitOperationAdd("theirs.txt", b"theirs")],
            commit_message="theirs",
        )
        return real_commit(self, **kwargs)

    monkeypatch.setattr(targets.HubTarget, "commit", race)
    release = start_release(target="hub", repo_id=REPO)
    with pytest.raises(targets.ConcurrentPublish):
        run_release(release_id=release.pk)
    git_dir = hub.git_dir(REPO)
    assert git(git_dir, "log", "-1", "--format=%s", "main") == "theirs"
    assert Release.objects.get().state == "failed"


@pytest.mark.django_db
def test_no_token_is_a_clear_error(hub, monkeypatch):
    make_dataset(prompts=1)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    release = start_release(target="hub", repo_id=REPO)
    with pytest.raises(targets.PublishError, match="HF_TOKEN"):
        run_release(release_id=release.pk)
    assert Release.objects.get().state == "failed"


@pytest.mark.django_db
def test_a_card_the_hub_refuses_is_never_committed(hub, monkeypatch):
    make_dataset(prompts=1)
    from scoring.publishing import card

    real = card.build_card

    def broken_card(data):
        built = real(data)
        built.data.configs = "not a list"
        return built

    monkeypatch.setattr("scoring.publishing.service.build_card", broken_card)
    release = start_release(target="hub", repo_id=REPO)
    with pytest.raises(targets.PublishError, match="refused the dataset card"):
        run_release(release_id=release.pk)
    assert git(hub.git_dir(REPO), "rev-list", "--count", "main") == "1"


@pytest.mark.django_db
def test_a_release_past_the_files_per_commit_limit_is_a_chain_ending_in_the_card(hub, monkeypatch):
    make_dataset(prompts=5)
    monkeypatch.setattr(targets, "MAX_OPERATIONS_PER_COMMIT", 4)
    release = publish_hub(max_shard_bytes=1, chunk=1)
    git_dir = hub.git_dir(REPO)
    subjects = git(git_dir, "log", "--format=%s", "main").split("\n")
    # 20 shards and the card in chains of 4: 6 commits on top of the initial one.
    assert subjects[:6] == ["Release v1"] + [f"Release v1 (part {i} of 6)" for i in (5, 4, 3, 2, 1)]
    assert git(git_dir, "diff", "--name-only", "main~1", "main") == "README.md"
    assert release.commit_id == git(git_dir, "rev-parse", "v1^{commit}")

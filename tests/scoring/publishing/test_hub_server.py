"""Tests of the local Hub test server (tests/fixtures/hub_server.py) with the real client.

No database: these tests only talk to a ThreadingHTTPServer on 127.0.0.1 and to git.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    HfApi,
    constants,
    hf_hub_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fixtures.hub_server import (
    AUTHOR_NAME,
    INITIAL_GITATTRIBUTES,
    HubTestServer,
    hub_server_fixture,  # noqa: F401  (provides the `hub_server` fixture)
    online_hub,
)

REPO = "org/name"
CARD = (
    "---\n"
    "license: mit\n"
    "configs:\n"
    "- config_name: default\n"
    "  data_files:\n"
    "  - split: train\n"
    "    path: data/train.jsonl\n"
    "---\n"
    "# Release\n"
)


def _git(hub: HubTestServer, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={hub.git_dir(REPO)}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _api(hub: HubTestServer, token: str | bool = "hf_test") -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def _add(path: str, content: bytes) -> CommitOperationAdd:
    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=content)


def _files(api: HfApi, revision: str | None = None) -> dict[str, int]:
    return {
        entry.path: entry.size
        for entry in api.list_repo_tree(
            REPO, repo_type="dataset", recursive=True, revision=revision
        )
        if entry.__class__.__name__ == "RepoFile"
    }


def _first_commit(api: HfApi) -> str:
    return api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[
            _add("README.md", CARD.encode()),
            _add("data/train.jsonl", b'{"x": 1}\n'),
            _add("data/old.jsonl", b'{"x": 0}\n'),
        ],
        commit_message="Release v1",
        commit_description="First release.",
    ).oid


def test_create_repo_twice(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    url = api.create_repo(REPO, repo_type="dataset")
    assert url == f"{hub_server.url}/datasets/{REPO}"
    assert (url.repo_type, url.repo_id) == ("dataset", REPO)

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(REPO, repo_type="dataset")
    assert excinfo.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True) == url

    # A new repo holds the Hub's "initial commit" with a .gitattributes file.
    info = api.repo_info(REPO, repo_type="dataset")
    assert info.id == REPO
    assert info.sha == hub_server.head(REPO)
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert _git(hub_server, "log", "--format=%an|%s", "main") == f"{AUTHOR_NAME}|initial commit\n"
    assert _git(hub_server, "show", "main:.gitattributes") == INITIAL_GITATTRIBUTES.decode()
    assert _git(hub_server, "rev-parse", "--is-bare-repository") == "true\n"


def test_repo_info_of_missing_repo_and_revision(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(REPO, repo_type="dataset")
    api.create_repo(REPO, repo_type="dataset")
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(REPO, repo_type="dataset", revision="nope")


def test_commit_add_replace_delete(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    initial = hub_server.head(REPO)

    first = _first_commit(api)
    assert first == hub_server.head(REPO)
    assert _git(hub_server, "rev-parse", f"{first}^") == f"{initial}\n"
    assert _git(hub_server, "log", "-1", "--format=%an <%ae>%n%B", first) == (
        "hub-test-server <hub-test-server@localhost>\nRelease v1\n\nFirst release.\n\n"
    )
    assert _files(api) == {
        ".gitattributes": len(INITIAL_GITATTRIBUTES),
        "README.md": len(CARD),
        "data/old.jsonl": 9,
        "data/train.jsonl": 9,
    }

    second = api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[
            _add("data/train.jsonl", b'{"x": 1}\n{"x": 2}\n'),
            CommitOperationDelete("data/old.jsonl"),
            _add("notes/a.txt", b"a"),
            _add("notes/b.txt", b"b"),
        ],
        commit_message="Release v2",
        parent_commit=first,
    ).oid
    assert _git(hub_server, "rev-parse", f"{second}^") == f"{first}\n"
    assert _git(hub_server, "show", f"{second}:data/train.jsonl") == '{"x": 1}\n{"x": 2}\n'
    assert _git(hub_server, "show", f"{first}:data/train.jsonl") == '{"x": 1}\n'
    assert sorted(_files(api)) == [
        ".gitattributes",
        "README.md",
        "data/train.jsonl",
        "notes/a.txt",
        "notes/b.txt",
    ]

    api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[CommitOperationDelete("notes/")],
        commit_message="Drop notes",
    )
    assert sorted(_files(api)) == [".gitattributes", "README.md", "data/train.jsonl"]
    info = api.repo_info(REPO, repo_type="dataset")
    assert info.sha == hub_server.head(REPO)
    assert [s.rfilename for s in info.siblings] == [
        ".gitattributes",
        "README.md",
        "data/train.jsonl",
    ]


def test_unchanged_file_is_not_committed_again(hub_server: HubTestServer) -> None:
    # Preupload answers the remote blob id, so the client drops the no-op and sends no commit.
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    first = _first_commit(api)
    before = len(hub_server.requests)
    info = api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[_add("data/train.jsonl", b'{"x": 1}\n')],
        commit_message="Same again",
    )
    assert info.oid == first == hub_server.head(REPO)
    assert ("POST", f"/api/datasets/{REPO}/commit/main") not in hub_server.requests[before:]


def test_parent_commit_mismatch_raises_and_commits_nothing(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    stale = hub_server.head(REPO)
    first = _first_commit(api)

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_commit(
            REPO,
            repo_type="dataset",
            operations=[_add("x.txt", b"x")],
            commit_message="Late",
            parent_commit=stale,
        )
    assert excinfo.value.response.status_code == 412
    assert "A commit has happened since" in str(excinfo.value)
    assert hub_server.head(REPO) == first


def test_deleting_a_missing_file_raises_entry_not_found(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    head = hub_server.head(REPO)
    with pytest.raises(RemoteEntryNotFoundError):
        api.create_commit(
            REPO,
            repo_type="dataset",
            operations=[_add("a.txt", b"a"), CommitOperationDelete("missing.txt")],
            commit_message="Delete",
        )
    assert hub_server.head(REPO) == head


def test_tag_and_list_refs(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    first = _first_commit(api)
    api.create_tag(REPO, repo_type="dataset", tag="v1", revision=first, tag_message="Release v1")
    api.create_tag(REPO, repo_type="dataset", tag="latest")  # lightweight, on main

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_tag(REPO, repo_type="dataset", tag="v1", revision=first)
    assert excinfo.value.response.status_code == 409
    api.create_tag(REPO, repo_type="dataset", tag="v1", revision=first, exist_ok=True)
    with pytest.raises(RevisionNotFoundError):
        api.create_tag(REPO, repo_type="dataset", tag="v2", revision="no-such-branch")

    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [
        ("main", "refs/heads/main", first)
    ]
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [
        ("latest", "refs/tags/latest", first),
        ("v1", "refs/tags/v1", first),
    ]
    assert refs.converts == []
    assert _git(hub_server, "cat-file", "-t", "v1") == "tag\n"
    assert _git(hub_server, "cat-file", "-t", "latest") == "commit\n"
    assert _git(hub_server, "tag", "-l", "--format=%(contents)", "v1") == "Release v1\n"
    assert _git(hub_server, "show", "v1:README.md") == CARD

    # The tag stays on v1 while main moves on; the tagged tree can be exported with git.
    api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[_add("data/train.jsonl", b"changed\n")],
        commit_message="After the tag",
    )
    assert api.repo_info(REPO, repo_type="dataset", revision="v1").sha == first
    archive = subprocess.run(
        ["git", f"--git-dir={hub_server.git_dir(REPO)}", "archive", "--format=tar", "v1"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("data/train.jsonl")
        assert member is not None
        assert member.read() == b'{"x": 1}\n'


def test_list_repo_tree(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    _first_commit(api)

    recursive = list(api.list_repo_tree(REPO, repo_type="dataset", recursive=True))
    assert [(e.__class__.__name__, e.path) for e in recursive] == [
        ("RepoFile", ".gitattributes"),
        ("RepoFile", "README.md"),
        ("RepoFolder", "data"),
        ("RepoFile", "data/old.jsonl"),
        ("RepoFile", "data/train.jsonl"),
    ]
    readme = recursive[1]
    assert readme.size == len(CARD)
    assert readme.lfs is None
    assert readme.blob_id == _git(hub_server, "rev-parse", "main:README.md").strip()

    top = list(api.list_repo_tree(REPO, repo_type="dataset"))
    assert [e.path for e in top] == [".gitattributes", "README.md", "data"]
    sub = list(api.list_repo_tree(REPO, "data", repo_type="dataset"))
    assert [e.path for e in sub] == ["data/old.jsonl", "data/train.jsonl"]
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(REPO, "nope", repo_type="dataset"))

    infos = api.get_paths_info(REPO, ["README.md", "data", "missing"], repo_type="dataset")
    assert [(e.__class__.__name__, e.path) for e in infos] == [
        ("RepoFile", "README.md"),
        ("RepoFolder", "data"),
    ]


def test_fail_next_500_makes_commit_raise_and_commits_nothing(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    head = hub_server.head(REPO)
    hub_server.fail_next("commit", status=500)

    with pytest.raises(HfHubHTTPError) as excinfo:
        _first_commit(api)
    assert excinfo.value.response.status_code == 500
    assert hub_server.head(REPO) == head
    assert _git(hub_server, "rev-list", "--count", "main") == "1\n"
    assert hub_server.requests[-1] == ("POST", f"/api/datasets/{REPO}/commit/main")

    # Only one failure was asked for: the retry goes through.
    first = _first_commit(api)
    assert hub_server.head(REPO) == first


def test_fail_next_429_on_preupload_is_retried_by_the_client(hub_server: HubTestServer) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    hub_server.fail_next("preupload", status=429)
    first = _first_commit(api)
    assert hub_server.head(REPO) == first
    preuploads = [r for r in hub_server.requests if r[1].endswith("/preupload/main")]
    assert preuploads == [("POST", f"/api/datasets/{REPO}/preupload/main")] * 2


def test_fail_next_rejects_unknown_endpoint(tmp_path: Path) -> None:
    hub = HubTestServer(tmp_path)
    with pytest.raises(ValueError, match="unknown endpoint 'comit'"):
        hub.fail_next("comit")


def test_validate_yaml_ok_and_400(hub_server: HubTestServer) -> None:
    DatasetCard(CARD).validate(repo_type="dataset")

    with pytest.raises(ValueError) as excinfo:
        DatasetCard("---\nconfigs: default\n---\n").validate(repo_type="dataset")
    assert str(excinfo.value) == '"configs" must be an array'

    with pytest.raises(ValueError) as excinfo:
        DatasetCard("---\nconfigs:\n- data_files: a.csv\n---\n").validate(repo_type="dataset")
    assert str(excinfo.value) == '"configs[0]"."config_name" is required and must be a string'

    # The same check runs inside create_commit when README.md changes: nothing is committed.
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    head = hub_server.head(REPO)
    with pytest.raises(ValueError) as excinfo:
        api.create_commit(
            REPO,
            repo_type="dataset",
            operations=[_add("README.md", b"---\nconfigs: {}\n---\n")],
            commit_message="Bad card",
        )
    assert str(excinfo.value) == 'Invalid metadata in README.md.\n- "configs" must be an array'
    assert hub_server.head(REPO) == head


def test_writes_without_token_get_401(hub_server: HubTestServer) -> None:
    _api(hub_server).create_repo(REPO, repo_type="dataset")
    head = hub_server.head(REPO)
    anonymous = _api(hub_server, token=False)

    for call in (
        lambda: anonymous.create_repo("org/other", repo_type="dataset"),
        lambda: anonymous.create_commit(
            REPO, repo_type="dataset", operations=[_add("a.txt", b"a")], commit_message="x"
        ),
        lambda: anonymous.create_tag(REPO, repo_type="dataset", tag="v1"),
    ):
        with pytest.raises(HfHubHTTPError) as excinfo:
            call()
        assert excinfo.value.response.status_code == 401
    assert not hub_server.git_dir("org/other").exists()
    assert hub_server.head(REPO) == head
    # Reads need no token.
    assert anonymous.repo_info(REPO, repo_type="dataset").sha == head


def test_lfs_lines_and_unknown_endpoints_are_refused(hub_server: HubTestServer) -> None:
    _api(hub_server).create_repo(REPO, repo_type="dataset")
    lines = [
        {"key": "header", "value": {"summary": "lfs", "description": ""}},
        {"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": "0" * 64}},
    ]
    request = urllib.request.Request(
        f"{hub_server.url}/api/datasets/{REPO}/commit/main",
        data=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": "Bearer hf_test", "Content-Type": "application/x-ndjson"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request)
    assert excinfo.value.code == 400
    assert json.loads(excinfo.value.read()) == {
        "error": "hub-test-server does not cover LFS files (lfsFile)"
    }

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(f"{hub_server.url}/api/datasets/{REPO}/discussions")
    assert excinfo.value.code == 404


def test_hf_hub_download_through_resolve(hub_server: HubTestServer, tmp_path: Path) -> None:
    api = _api(hub_server)
    api.create_repo(REPO, repo_type="dataset")
    first = _first_commit(api)
    api.create_tag(REPO, repo_type="dataset", tag="v1", revision=first)
    api.create_commit(
        REPO,
        repo_type="dataset",
        operations=[_add("data/train.jsonl", b"changed\n")],
        commit_message="After the tag",
    )
    cache = tmp_path / "cache"
    old = hf_hub_download(
        REPO, "data/train.jsonl", repo_type="dataset", revision="v1", cache_dir=cache
    )
    new = hf_hub_download(REPO, "data/train.jsonl", repo_type="dataset", cache_dir=cache)
    assert Path(old).read_bytes() == b'{"x": 1}\n'
    assert Path(new).read_bytes() == b"changed\n"
    assert f"/snapshots/{first}/" in Path(old).as_posix()
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", repo_type="dataset", cache_dir=cache)


def test_online_hub_patches_and_restores_the_client_constants(tmp_path: Path) -> None:
    before = (constants.HF_HUB_OFFLINE, constants.ENDPOINT)
    patch = pytest.MonkeyPatch()
    try:
        online_hub(patch, "http://127.0.0.1:1/")
        assert constants.HF_HUB_OFFLINE is False
        assert constants.is_offline_mode() is False
        assert constants.ENDPOINT == "http://127.0.0.1:1"
        assert HfApi().endpoint == "http://127.0.0.1:1"
    finally:
        patch.undo()
    assert before == (constants.HF_HUB_OFFLINE, constants.ENDPOINT)

"""Releases to the local target: what is published, read back with `datasets`, and how a
release is numbered, retried and made incremental."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import get_dataset_config_names, load_dataset
from django.core.management import CommandError, call_command
from django.utils import timezone

from contributors.models import Profile
from scoring.models import (
    Prompt,
    Release,
    ReleasedPrompt,
    ReleaseState,
    Sample,
)
from scoring.publishing import targets
from scoring.publishing.service import ReleaseError, run_release, start_release
from scoring.selection import configured_policy, rebuild_prompt
from tests.factories import PromptFactory, PromptSetFactory, UserFactory
from tests.scoring.publishing.conftest import V, add_sample, make_dataset

CONFIGS = ["sft", "preference", "rl", "raw"]


def git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=path, capture_output=True, text=True, check=True
    ).stdout.strip()


def load(path: Path, config: str, tmp_path: Path):
    # datasets would otherwise reuse what it built from an earlier release of the same folder
    # (or an earlier test's folder of the same name): a fresh cache for every read.
    cache = tmp_path / f"hf-cache-{uuid.uuid4().hex}"
    return load_dataset(str(path), config, split="train", cache_dir=str(cache))


def publish(repo: str = "org/name", **kwargs) -> Release:
    release = start_release(target="local", repo_id=repo)
    return run_release(release_id=release.pk, **kwargs)


def repo_path(release_dirs: Path, repo: str = "org/name") -> Path:
    return release_dirs / "releases" / repo


@pytest.mark.django_db
def test_round_trip_reads_every_config_back_with_exact_rows_and_nested_messages(
    release_dirs, tmp_path
):
    data = make_dataset(prompts=3)
    release = publish(max_shard_bytes=1, chunk=1)
    path = repo_path(release_dirs)

    assert release.state == ReleaseState.PUBLISHED
    assert release.row_counts == {"sft": 6, "preference": 3, "rl": 3, "raw": 9}
    assert get_dataset_config_names(str(path)) == CONFIGS
    # One prompt per chunk and a 1-byte cap: a shard per prompt, named as push_to_hub does.
    assert sorted(p.name for p in (path / "data" / "raw").iterdir()) == [
        f"train-0000{i}-of-00003.parquet" for i in range(3)
    ]
    counts = {c: load(path, c, tmp_path).num_rows for c in CONFIGS}
    assert counts == release.row_counts

    sft = load(path, "sft", tmp_path)
    first = data.samples[0]
    row = next(r for r in sft if r["sample_id"] == first.pk)
    prompt = data.prompts[0]
    assert row["messages"] == [
        {"role": "user", "content": prompt.messages[0]["content"]},
        {
            "role": "assistant",
            "content": "<think>\nAlice: 0 plus 0, carry nothing, gives 0.\n</think>\n\n"
            "The answer is \\boxed{0}.",
        },
    ]
    assert row["reasoning"] == "Alice: 0 plus 0, carry nothing, gives 0."
    assert row["response"] == "The answer is \\boxed{0}."
    assert (row["prompt_id"], row["source"], row["source_id"], row["license"]) == (
        prompt.pk,
        data.prompt_set.name,
        prompt.external_id,
        "MIT",
    )
    assert (row["model"], row["model_revision"], row["temperature"], row["top_p"]) == (
        "org/model-a",
        "rev1",
        0.6,
        0.95,
    )
    assert (row["finish_reason"], row["prompt_tokens"], row["completion_tokens"]) == (
        "stop",
        12,
        30,
    )
    assert row["verdicts"] == [{"verifier": "math", "version": 3, "status": "pass", "score": 1.0}]
    assert (row["contributor"], row["release"], row["rank"]) == ("alice", 1, 0)
    assert json.loads(row["sampling"]) == {"max_tokens": 512, "temperature": 0.6, "top_p": 0.95}

    preference = load(path, "preference", tmp_path)[0]
    assert preference["prompt"] == [{"role": "user", "content": "What is 0 + 0?"}] or (
        preference["prompt"][0]["role"] == "user"
    )
    assert [m["role"] for m in preference["chosen"]] == ["assistant"]
    assert preference["rejected"] == [
        {"role": "assistant", "content": "Without thinking: it is 7."}
    ]
    assert (preference["chosen_status"], preference["rejected_status"]) == ("verified", "rejected")

    rl = load(path, "rl", tmp_path)
    assert sorted(rl["answer"]) == ["GOLD-0", "GOLD-1", "GOLD-2"]
    assert set(rl["pass_rate"]) == {2 / 3}

    raw = load(path, "raw", tmp_path)
    assert sorted(raw["sample_id"]) == sorted(s.pk for s in data.samples)
    assert sorted(raw["contributor"]) == ["alice"] * 3 + ["anonymous"] * 6


@pytest.mark.django_db
def test_release_is_a_tagged_commit_recorded_with_its_counts_and_files(release_dirs):
    make_dataset(prompts=2)
    user = UserFactory(username="maintainer")
    release = start_release(target="local", repo_id="org/name", triggered_by=user)
    release = run_release(release_id=release.pk)
    path = repo_path(release_dirs)

    assert (release.version, release.tag, release.triggered_by) == (1, "v1", user)
    assert (
        release.commit_id == git(path, "rev-parse", "v1^{commit}") == git(path, "rev-parse", "HEAD")
    )
    assert release.published_at is not None and release.attempts == 1
    assert f"Thinkpool-Release: {release.uid}" in git(path, "log", "-1", "--format=%B")
    tracked = set(git(path, "ls-files").split("\n"))
    assert (
        tracked
        == set(release.files)
        == {
            "README.md",
            *(f"data/{c}/train-00000-of-00001.parquet" for c in CONFIGS),
        }
    )
    for name, sha256 in release.files.items():
        assert (
            subprocess.run(
                ["sha256sum", str(path / name)], capture_output=True, text=True, check=True
            ).stdout.split()[0]
            == sha256
        )


@pytest.mark.django_db
def test_card_yaml_maps_configs_and_says_what_the_release_holds(release_dirs):
    make_dataset(prompts=2)
    publish()
    readme = (repo_path(release_dirs) / "README.md").read_text()
    from huggingface_hub import DatasetCard

    meta = DatasetCard(readme).data.to_dict()
    assert meta["configs"] == [
        {"config_name": c, "data_files": [{"split": "train", "path": f"data/{c}/train-*"}]}
        for c in CONFIGS
    ]
    assert (meta["license"], meta["size_categories"], meta["task_categories"]) == (
        "apache-2.0",
        ["n<1K"],
        ["text-generation"],
    )
    assert "| `raw` | 6 | 1 |" in readme
    assert "| org/model\\-a | 0.6 | 6 | 4 | 66.7% |" in readme
    assert "- alice (2)" in readme and "bob" not in readme
    assert "4 samples come from contributors who chose to stay anonymous" in readme


@pytest.mark.django_db
def test_only_closed_clean_admitted_prompts_are_published_and_no_other_gold(release_dirs, tmp_path):
    data = make_dataset(prompts=2)
    alice = UserFactory(username="alice")
    # Open: still collected, so neither its gold nor its samples may leave.
    open_prompt = PromptFactory(prompt_set=data.prompt_set, gold="GOLD-OPEN")
    add_sample(open_prompt, V, contributor=alice, text="<think>open</think> OPEN-SAMPLE")
    # Closed but contaminated.
    dirty = PromptFactory(prompt_set=data.prompt_set, gold="GOLD-DIRTY")
    add_sample(dirty, V, contributor=alice, text="DIRTY-SAMPLE")
    Prompt.objects.filter(pk=dirty.pk).update(
        closed_at=timezone.now(),
        contaminated=True,
        contamination=[{"benchmark": "gsm8k", "id": "7", "ngram": "a b c d e f g h"}],
    )
    # Closed, but from sets that may not go out: not redistributable, or a licence that
    # cannot be released under apache-2.0.
    for name, fields in [
        ("private-set", {"redistributable": False}),
        ("nc-set", {"license": "CC-BY-NC-4.0"}),
        ("odd-set", {"license": "proprietary"}),
    ]:
        kept_out = PromptFactory(
            prompt_set=PromptSetFactory(name=name, **fields), gold=f"GOLD-{name}"
        )
        add_sample(kept_out, V, contributor=alice, text=f"SAMPLE-{name}")
        Prompt.objects.filter(pk=kept_out.pk).update(closed_at=timezone.now())
    # A quarantined sample and a banned contributor's sample of a published prompt.
    published = data.prompts[0]
    add_sample(published, V, contributor=alice, text="QUARANTINED-SAMPLE", quarantined=True)
    mallory = UserFactory(username="mallory")
    add_sample(published, V, contributor=mallory, text="BANNED-SAMPLE")
    Profile.objects.filter(user=mallory).update(banned=True)

    release = publish()
    path = repo_path(release_dirs)

    everything = json.dumps(
        [load(path, c, tmp_path).to_list() for c in CONFIGS], ensure_ascii=False
    )
    for secret in [
        "GOLD-OPEN",
        "OPEN-SAMPLE",
        "GOLD-DIRTY",
        "DIRTY-SAMPLE",
        "QUARANTINED-SAMPLE",
        "BANNED-SAMPLE",
        "mallory",
        *(f"GOLD-{n}" for n in ("private-set", "nc-set", "odd-set")),
        *(f"SAMPLE-{n}" for n in ("private-set", "nc-set", "odd-set")),
    ]:
        assert secret not in everything, secret
    assert "GOLD-0" in everything and "GOLD-1" in everything
    assert release.row_counts == {"sft": 4, "preference": 2, "rl": 2, "raw": 6}
    assert release.warnings == [
        "prompt set nc-set left out: licence 'CC-BY-NC-4.0' cannot be released under apache-2.0",
        "prompt set odd-set left out: licence 'proprietary' is not one known to allow this",
        "prompt set private-set left out: marked not redistributable",
    ]
    readme = (path / "README.md").read_text()
    assert "Decontamination: 1 closed prompts were left out" in readme
    assert "- gsm8k: 1" in readme
    assert "- private\\-set: marked not redistributable" in readme


@pytest.mark.django_db
def test_a_stale_selection_cannot_bring_a_held_back_sample_in(release_dirs, tmp_path):
    data = make_dataset(prompts=1)
    best = data.samples[0]
    # Quarantined after its prompt's last rebuild: its Selection and pair rows still exist.
    Sample.objects.filter(pk=best.pk).update(quarantined=True)
    release = publish()
    path = repo_path(release_dirs)
    assert release.row_counts == {"sft": 1, "preference": 0, "rl": 1, "raw": 2}
    assert best.pk not in load(path, "sft", tmp_path)["sample_id"]
    # A config without rows has no files and is not in the card (datasets cannot load it).
    assert get_dataset_config_names(str(path)) == ["sft", "rl", "raw"]
    assert not (path / "data" / "preference").exists()


@pytest.mark.django_db
def test_nothing_to_publish_fails_the_release_and_makes_no_commit(release_dirs):
    make_dataset(prompts=1, closed=False)
    release = start_release(target="local", repo_id="org/name")
    with pytest.raises(targets.PublishError, match="Nothing to publish"):
        run_release(release_id=release.pk)
    assert Release.objects.get().state == "failed"
    assert not repo_path(release_dirs).exists()


@pytest.mark.django_db
def test_duplicates_are_marked_in_raw_and_left_out_of_sft(release_dirs, tmp_path):
    data = make_dataset(prompts=1)
    prompt = data.prompts[0]
    copy = add_sample(
        prompt, V, contributor=UserFactory(username="copier"), text=data.samples[0].completion
    )
    rebuild_prompt(prompt_id=prompt.pk, policy=configured_policy())
    publish()
    path = repo_path(release_dirs)
    raw = {r["sample_id"]: r for r in load(path, "raw", tmp_path)}
    assert raw[copy.pk]["duplicate_of"] == data.samples[0].pk
    assert copy.pk not in load(path, "sft", tmp_path)["sample_id"]


@pytest.mark.django_db
def test_attribution_is_the_choice_in_force_when_the_release_is_built(release_dirs, tmp_path):
    make_dataset(prompts=1)
    Profile.objects.filter(user__username="alice").update(public_attribution=False)
    Profile.objects.filter(user__username="bob").update(public_attribution=True)
    publish()
    raw = load(repo_path(release_dirs), "raw", tmp_path)
    assert sorted(raw["contributor"]) == ["anonymous", "bob", "bob"]


@pytest.mark.django_db
def test_versions_count_up_and_each_prompt_keeps_the_release_that_first_published_it(
    release_dirs, tmp_path
):
    data = make_dataset(prompts=2)
    first = publish()
    newcomer = PromptFactory(prompt_set=data.prompt_set, gold="GOLD-NEW")
    add_sample(newcomer, V, contributor=UserFactory(username="alice"), text="<think>n</think> 5")
    Prompt.objects.filter(pk=newcomer.pk).update(closed_at=timezone.now())
    second = publish()
    path = repo_path(release_dirs)

    assert (first.version, second.version) == (1, 2)
    assert git(path, "tag", "--list") == "v1\nv2"
    raw = load(path, "raw", tmp_path)
    releases = {r["prompt_id"]: r["release"] for r in raw}
    assert releases == {data.prompts[0].pk: 1, data.prompts[1].pk: 1, newcomer.pk: 2}
    # Rows of earlier prompts first: a new release appends.
    assert raw["prompt_id"][-1] == newcomer.pk
    assert set(ReleasedPrompt.objects.values_list("prompt_id", "version")) == {
        (data.prompts[0].pk, 1),
        (data.prompts[1].pk, 1),
        (newcomer.pk, 2),
    }


@pytest.mark.django_db
def test_a_new_release_rewrites_only_the_shards_that_changed(release_dirs):
    data = make_dataset(prompts=3)
    publish(max_shard_bytes=1, chunk=1)
    # Nothing changed: only the card (its version and date) is new.
    publish(max_shard_bytes=1, chunk=1)
    path = repo_path(release_dirs)
    assert git(path, "diff", "--name-only", "v1", "v2") == "README.md"

    # Bob's verified sample of the last prompt leaves: only that prompt's raw, sft and rl
    # (its pass rate, now 1 of 2) shards change; its pair, Alice's over the rejected one, stays.
    Sample.objects.filter(pk=data.samples[-2].pk).update(quarantined=True)
    rebuild_prompt(prompt_id=data.prompts[-1].pk, policy=configured_policy())
    publish(max_shard_bytes=1, chunk=1)
    assert git(path, "diff", "--name-only", "v2", "v3").split("\n") == [
        "README.md",
        "data/raw/train-00002-of-00003.parquet",
        "data/rl/train-00002-of-00003.parquet",
        "data/sft/train-00002-of-00003.parquet",
    ]


@pytest.mark.django_db
def test_a_failed_publish_leaves_no_published_release_and_a_retry_publishes_once(
    release_dirs, monkeypatch
):
    make_dataset(prompts=1)
    real_tag = targets.LocalTarget.tag
    calls = {"n": 0}

    def flaky_tag(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise targets.PublishError("the disk is full")
        return real_tag(self, **kwargs)

    monkeypatch.setattr(targets.LocalTarget, "tag", flaky_tag)
    release = start_release(target="local", repo_id="org/name")
    with pytest.raises(targets.PublishError):
        run_release(release_id=release.pk)
    release.refresh_from_db()
    path = repo_path(release_dirs)
    assert (release.state, release.error) == ("failed", "PublishError: the disk is full")
    assert not Release.objects.filter(state=ReleaseState.PUBLISHED).exists()
    assert ReleasedPrompt.objects.count() == 0
    assert git(path, "tag", "--list") == ""

    # The retry is the same release (no second number), and the commit the failed attempt
    # made is recognised: still one commit on main, now tagged.
    again = start_release(target="local", repo_id="org/name")
    assert again.pk == release.pk
    published = run_release(release_id=again.pk)
    assert (published.state, published.version, published.attempts) == ("published", 1, 2)
    assert git(path, "rev-list", "--count", "main") == "1"
    assert git(path, "rev-parse", "v1^{commit}") == published.commit_id
    assert Release.objects.count() == 1
    # Running it again does nothing.
    assert run_release(release_id=release.pk).attempts == 2


@pytest.mark.django_db
def test_a_build_that_fails_touches_nothing_at_the_target(release_dirs, monkeypatch):
    make_dataset(prompts=1)
    from scoring.publishing import service

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(service, "build_release", broken)
    release = start_release(target="local", repo_id="org/name")
    with pytest.raises(RuntimeError):
        run_release(release_id=release.pk)
    assert Release.objects.get().state == "failed"
    assert not repo_path(release_dirs).exists()
    assert not any((release_dirs / "staging").glob("*"))


@pytest.mark.django_db
def test_a_tag_that_exists_at_the_target_for_another_release_is_a_conflict(release_dirs):
    make_dataset(prompts=1)
    path = repo_path(release_dirs)
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(
        path,
        "-c",
        "user.name=x",
        "-c",
        "user.email=x@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    git(path, "tag", "v1")
    release = start_release(target="local", repo_id="org/name")
    with pytest.raises(targets.PublishError, match="v1 already exists"):
        run_release(release_id=release.pk)
    assert Release.objects.get().state == "failed"


@pytest.mark.django_db
def test_someone_committing_meanwhile_makes_the_release_fail_not_overwrite(
    release_dirs, monkeypatch
):
    make_dataset(prompts=1)
    path = repo_path(release_dirs)
    real_commit = targets.LocalTarget.commit

    def interloper(self, **kwargs):
        git(
            path,
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "theirs",
        )
        return real_commit(self, **kwargs)

    monkeypatch.setattr(targets.LocalTarget, "commit", interloper)
    release = start_release(target="local", repo_id="org/name")
    with pytest.raises(targets.ConcurrentPublish):
        run_release(release_id=release.pk)
    assert git(path, "log", "--format=%s") == "theirs"
    assert Release.objects.get().state == "failed"


@pytest.mark.django_db
def test_a_release_being_built_is_not_built_twice(release_dirs):
    make_dataset(prompts=1)
    release = start_release(target="local", repo_id="org/name")
    Release.objects.filter(pk=release.pk).update(state="building", started_at=timezone.now())
    assert run_release(release_id=release.pk).state == "building"
    assert not repo_path(release_dirs).exists()
    # Once stale (its worker died), another attempt takes it over.
    Release.objects.filter(pk=release.pk).update(
        started_at=timezone.now() - timezone.timedelta(days=1)
    )
    assert run_release(release_id=release.pk).state == "published"


@pytest.mark.django_db
def test_bad_repo_ids_and_targets_are_refused_before_anything_is_made(release_dirs):
    for repo in [
        "noslash",
        "a/b/c",
        "../etc",
        "org/..",
        "org/name.git",
        "-org/x",
        "",
        "o/" + "n" * 97,
    ]:
        with pytest.raises(ReleaseError):
            start_release(target="local", repo_id=repo)
    with pytest.raises(ReleaseError):
        start_release(target="s3", repo_id="org/name")
    with pytest.raises(ReleaseError):
        start_release(target="hub", repo_id="org/name", path="/tmp/x")
    assert Release.objects.count() == 0


@pytest.mark.django_db
def test_publish_command_and_task(release_dirs, tmp_path, capsys):
    make_dataset(prompts=1)
    target = tmp_path / "elsewhere"
    call_command("publish", "--target", "local", "--repo", "org/name", "--path", str(target))
    out = capsys.readouterr().out
    assert out.startswith("Published org/name v1 to ") and "raw 3" in out
    assert git(target, "tag", "--list") == "v1"
    with pytest.raises(CommandError, match="not a Hub repository id"):
        call_command("publish", "--repo", "bad")

    from scoring.tasks import publish_release

    second = start_release(target="local", repo_id="org/name", path=target)
    assert publish_release.delay(second.pk).get() == "published"
    assert git(target, "tag", "--list") == "v1\nv2"


@pytest.mark.django_db
def test_parquet_files_are_zstd_with_page_index(release_dirs):
    make_dataset(prompts=1)
    publish()
    meta = pq.ParquetFile(
        repo_path(release_dirs) / "data/raw/train-00000-of-00001.parquet"
    ).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.num_rows == 3


@pytest.mark.django_db
def test_a_closed_prompt_whose_twin_is_still_open_waits(release_dirs, tmp_path):
    data = make_dataset(prompts=3)
    exact, near, clean = data.prompts
    other_set = PromptSetFactory(name="other-set")
    # The same text, open in another set; and an open near-duplicate of the second prompt.
    open_twin = PromptFactory(prompt_set=other_set, messages=exact.messages, gold="GOLD-TWIN")
    open_near = PromptFactory(prompt_set=other_set, gold="GOLD-NEAR")
    Prompt.objects.filter(pk=open_near.pk).update(near_duplicate_of=near)

    release = publish()
    path = repo_path(release_dirs)
    assert set(load(path, "raw", tmp_path)["prompt_id"]) == {clean.pk}
    assert release.warnings == ["2 closed prompts held back: a twin of each is still open"]
    assert "2 closed prompts wait for a later release" in (path / "README.md").read_text()

    # Once the twins close, the next release has them.
    Prompt.objects.filter(pk__in=[open_twin.pk, open_near.pk]).update(closed_at=timezone.now())
    release = publish()
    assert set(load(path, "raw", tmp_path)["prompt_id"]) == {exact.pk, near.pk, clean.pk}
    assert release.warnings == []


@pytest.mark.django_db
def test_the_sweep_queues_releases_nobody_is_publishing(release_dirs, monkeypatch):
    from scoring import tasks

    sent: list[int] = []
    monkeypatch.setattr(
        tasks.publish_release, "apply_async", lambda args, **kwargs: sent.append(args[0])
    )
    old = timezone.now() - timezone.timedelta(hours=5)
    lost = Release.objects.create(target="local", repo_id="o/lost", version=1, location="/x")
    Release.objects.filter(pk=lost.pk).update(created_at=old)
    Release.objects.create(target="local", repo_id="o/fresh", version=1, location="/x")
    dead = Release.objects.create(
        target="local", repo_id="o/dead", version=1, location="/x", state="building"
    )
    Release.objects.filter(pk=dead.pk).update(started_at=old)
    live = Release.objects.create(
        target="local", repo_id="o/live", version=1, location="/x", state="building"
    )
    Release.objects.filter(pk=live.pk).update(started_at=timezone.now())
    Release.objects.create(
        target="local", repo_id="o/failed", version=1, location="/x", state="failed"
    )
    tasks.sweep_stuck_samples()
    assert sent == [lost.pk, dead.pk]


@pytest.mark.django_db
def test_queueing_a_release_with_the_broker_away_does_not_raise(release_dirs, monkeypatch):
    from scoring import tasks

    def away(*args, **kwargs):
        raise ConnectionError("broker away")

    monkeypatch.setattr(tasks.publish_release, "apply_async", away)
    assert tasks.queue_release(1) is False


@pytest.mark.django_db
def test_a_retry_after_the_data_changed_commits_the_new_build_and_records_it(
    release_dirs, monkeypatch, tmp_path
):
    data = make_dataset(prompts=1)
    real_tag = targets.LocalTarget.tag
    fail = {"once": True}

    def flaky_tag(self, **kwargs):
        if fail.pop("once", False):
            raise targets.PublishError("tag refused")
        return real_tag(self, **kwargs)

    monkeypatch.setattr(targets.LocalTarget, "tag", flaky_tag)
    release = start_release(target="local", repo_id="org/name")
    with pytest.raises(targets.PublishError):
        run_release(release_id=release.pk)
    # Meanwhile another prompt closes: the retry's build has it, and what is recorded is what
    # the tag points at.
    newcomer = PromptFactory(prompt_set=data.prompt_set, gold="GOLD-NEW")
    add_sample(newcomer, V, contributor=UserFactory(username="alice"), text="<think>n</think> 5")
    Prompt.objects.filter(pk=newcomer.pk).update(closed_at=timezone.now())
    published = run_release(release_id=release.pk)
    path = repo_path(release_dirs)
    assert published.row_counts["raw"] == 4
    assert git(path, "rev-parse", "v1^{commit}") == published.commit_id
    assert load(path, "raw", tmp_path).num_rows == 4
    assert git(path, "rev-list", "--count", "main") == "2"  # the first attempt's, then this
    assert set(ReleasedPrompt.objects.values_list("prompt_id", flat=True)) == {
        *(p.pk for p in data.prompts),
        newcomer.pk,
    }


@pytest.mark.django_db
def test_what_a_killed_attempt_left_in_the_folder_never_gets_into_a_release(release_dirs):
    make_dataset(prompts=1)
    publish()
    path = repo_path(release_dirs)
    # Leftovers: a staged file, a stray file in data/, and a HEAD someone detached.
    (path / "data" / "raw" / "train-00000-of-00009.parquet").write_bytes(b"junk")
    git(path, "add", "data/raw/train-00000-of-00009.parquet")
    (path / "data" / "stray.txt").write_text("stray")
    git(path, "checkout", "-q", "--detach", "v1")
    second = publish()
    assert git(path, "ls-tree", "-r", "--name-only", "v2").split("\n") == sorted(second.files)
    assert (
        git(path, "rev-parse", "v2^{commit}")
        == second.commit_id
        != git(path, "rev-parse", "v1^{commit}")
    )
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/main"


@pytest.mark.django_db
def test_a_local_commit_that_fails_leaves_main_and_the_release_as_they_were(
    release_dirs, monkeypatch
):
    make_dataset(prompts=1)
    first = publish()
    path = repo_path(release_dirs)
    real_git = targets.LocalTarget._git

    def no_commit_tree(self, *args, **kwargs):
        if args and args[0] == "commit-tree":
            raise targets.PublishError("git commit-tree failed: disk full")
        return real_git(self, *args, **kwargs)

    monkeypatch.setattr(targets.LocalTarget, "_git", no_commit_tree)
    release = start_release(target="local", repo_id="org/name")
    with pytest.raises(targets.PublishError, match="disk full"):
        run_release(release_id=release.pk)
    assert git(path, "rev-parse", "main") == first.commit_id
    assert Release.objects.get(pk=release.pk).state == "failed"
    assert not list((path / ".git").glob("thinkpool-index-*"))


@pytest.mark.django_db
def test_a_relative_path_is_kept_absolute(release_dirs, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    release = start_release(target="local", repo_id="org/name", path="rel/dir")
    assert release.location == str(tmp_path / "rel" / "dir")


@pytest.mark.django_db
def test_rows_carry_the_policys_reward_scores(release_dirs, settings, tmp_path):
    from scoring.models import RewardScore

    settings.THINKPOOL_REWARD_MODELS = ["org/rm@2"]
    data = make_dataset(prompts=1)
    scored = data.samples[:2]
    for i, sample in enumerate(scored):
        RewardScore.objects.create(
            sample=sample, reward_model="org/rm", version=2, raw=0.5 + i, normalised=i - 0.5
        )
    # Another version's score is not this policy's.
    RewardScore.objects.create(
        sample=data.samples[2], reward_model="org/rm", version=1, raw=9.0, normalised=9.0
    )
    rebuild_prompt(prompt_id=data.prompts[0].pk, policy=configured_policy())
    publish()
    raw = {r["sample_id"]: r for r in load(repo_path(release_dirs), "raw", tmp_path)}
    assert [
        (raw[s.pk]["reward_model"], raw[s.pk]["reward"], raw[s.pk]["reward_raw"])
        for s in data.samples
    ] == [("org/rm", -0.5, 0.5), ("org/rm", 0.5, 1.5), (None, None, None)]
    readme = (repo_path(release_dirs) / "README.md").read_text()
    assert "then reward model `org/rm` v2" in readme

"""Flags (scoring/flags.py): copies across contributors found by the dedup of each prompt, a
maintainer clearing them (audited), the admin pages, and published rows withdrawn after a
quarantine or a ban listed in the next release's card."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from contributors.models import Profile
from scoring.flags import FlagError, clear_flags, flags_raised, raise_flag
from scoring.models import AuditEntry, Flag, FlagKind, Prompt, Sample, SampleStatus
from scoring.publishing.card import WITHDRAWN_SHOWN, build_card
from scoring.publishing.service import run_release, start_release, withdrawn_samples
from scoring.selection import Policy, rebuild_prompt
from scoring.services import quarantine_samples
from tests.factories import PromptFactory, UserFactory

pytestmark = pytest.mark.django_db

V = SampleStatus.VERIFIED
TEXT = (
    "<think>First add the two numbers, two and two, which gives four; then check it by "
    "counting up from two twice: three, four. Another way to see it is to take two groups "
    "of two stones each, put them side by side on the table, and count every stone once, "
    "left to right, without skipping any of them or counting one twice. The count ends at "
    "four again, so both ways agree, and the sum of two and two is four, which is the "
    "number we were asked for in the question.</think> The answer is \\boxed{4}."
)
NEAR = TEXT.replace("then check it", "then verify it")
OTHER = (
    "<think>Two plus two: take two apples, add two more apples, count the apples on the "
    "table one by one and there are four of them.</think> So it is \\boxed{4}."
)
_n = itertools.count()


def sample(prompt: Prompt, contributor: Any, text: str, **fields: Any) -> Sample:
    return Sample.objects.create(
        prompt=prompt,
        contributor=contributor,
        model=fields.pop("model", "org/model-a"),
        temperature=fields.pop("temperature", 0.6),
        finish_reason="stop",
        completion=text,
        status=fields.pop("status", V),
        **fields,
    )


def rebuild(prompt: Prompt) -> None:
    rebuild_prompt(prompt_id=prompt.pk, policy=Policy())


def copy_flags() -> dict[int, Flag]:
    return {f.sample_id: f for f in Flag.objects.filter(kind=FlagKind.COPY)}


# --- copy detection -------------------------------------------------------------------------


def test_a_near_copy_of_another_contributors_sample_is_flagged_with_its_evidence():
    honest, copier = UserFactory(), UserFactory()
    prompt = PromptFactory()
    original = sample(prompt, honest, TEXT)
    exact = sample(prompt, copier, TEXT.upper(), model="org/model-b", temperature=1.0)
    near = sample(prompt, copier, NEAR)
    own = sample(prompt, honest, OTHER)
    rebuild(prompt)

    flags = copy_flags()
    assert set(flags) == {exact.pk, near.pk}
    assert flags[exact.pk].evidence == {
        "original_sample": original.pk,
        "original_contributor": honest.pk,
        "match": "exact",
        "jaccard": 1.0,
        "model": "org/model-b",
        "temperature": 1.0,
        "original_model": "org/model-a",
        "original_temperature": 0.6,
    }
    evidence = flags[near.pk].evidence
    assert (evidence["original_sample"], evidence["match"]) == (original.pk, "near")
    assert 0.8 <= evidence["jaccard"] < 1.0
    assert flags[near.pk].is_open
    # The copies are duplicates too (left out of selections); the honest one's samples are not.
    assert Sample.objects.get(pk=near.pk).duplicate_of_id == original.pk
    assert Sample.objects.get(pk=own.pk).duplicate_of_id is None


def test_a_duplicate_of_ones_own_sample_is_a_duplicate_not_a_copy():
    someone = UserFactory()
    prompt = PromptFactory()
    first = sample(prompt, someone, TEXT)
    again = sample(prompt, someone, NEAR)
    rebuild(prompt)
    assert Sample.objects.get(pk=again.pk).duplicate_of_id == first.pk
    assert not Flag.objects.exists()


def test_copy_flags_are_raised_once_and_signalled_once():
    honest, copier = UserFactory(), UserFactory()
    prompt = PromptFactory()
    sample(prompt, honest, TEXT)
    copy = sample(prompt, copier, NEAR)
    sent: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        sent.append({k: v for k, v in kwargs.items() if k != "signal"})

    flags_raised.connect(receiver)
    try:
        rebuild(prompt)
        first = Flag.objects.get()
        rebuild(prompt)
        rebuild(prompt)
    finally:
        flags_raised.disconnect(receiver)
    flag = Flag.objects.get()
    assert (flag.pk, flag.evidence, flag.created_at) == (first.pk, first.evidence, first.created_at)
    assert sent == [{"kind": "copy", "flag_ids": [flag.pk]}]
    assert (flag.sample_id, flag.contributor_id) == (copy.pk, copier.pk)


def test_a_flag_whose_copy_no_longer_holds_stays_open_marked_resolved_and_comes_back():
    honest, copier = UserFactory(), UserFactory()
    prompt = PromptFactory()
    original = sample(prompt, honest, TEXT)
    copy = sample(prompt, copier, NEAR)
    rebuild(prompt)
    # The original leaves (quarantined): the copy is kept now, not a copy of anything kept.
    Sample.objects.filter(pk=original.pk).update(quarantined=True)
    rebuild(prompt)
    flag = Flag.objects.get(sample=copy)
    assert flag.is_open and flag.evidence["original_sample"] == original.pk
    assert flag.evidence["resolved"].startswith("no longer a duplicate")
    assert "resolved_at" in flag.evidence
    Sample.objects.filter(pk=original.pk).update(quarantined=False)
    rebuild(prompt)
    flag.refresh_from_db()
    assert "resolved_at" not in flag.evidence and flag.evidence["match"] == "near"


def test_a_cleared_flag_is_not_raised_again_by_the_same_check(admin_user):
    honest, copier = UserFactory(), UserFactory()
    prompt = PromptFactory()
    sample(prompt, honest, TEXT)
    sample(prompt, copier, NEAR)
    rebuild(prompt)
    flag = Flag.objects.get()
    clear_flags(flag_ids=[flag.pk], by=admin_user, reason="same seed, same server: independent")
    rebuild(prompt)
    flag.refresh_from_db()
    assert not flag.is_open and Flag.objects.count() == 1


def test_raise_flag_upserts_and_leaves_a_cleared_flag_alone(admin_user):
    prompt = PromptFactory()
    s = sample(prompt, UserFactory(), TEXT)
    flag = raise_flag(sample_id=s.pk, kind=FlagKind.ATTESTATION, evidence={"mean_logprob": -4.2})
    again = raise_flag(sample_id=s.pk, kind=FlagKind.ATTESTATION, evidence={"mean_logprob": -5})
    assert again.pk == flag.pk and Flag.objects.get().evidence == {"mean_logprob": -5}
    clear_flags(flag_ids=[flag.pk], by=admin_user, reason="calibration bug")
    raise_flag(sample_id=s.pk, kind=FlagKind.ATTESTATION, evidence={"mean_logprob": -6})
    assert Flag.objects.get().evidence == {"mean_logprob": -5}
    with pytest.raises(FlagError):
        raise_flag(sample_id=s.pk, kind="made-up", evidence={})


# --- clearing -------------------------------------------------------------------------------


def test_clear_flags_needs_a_reason_and_is_audited(admin_user):
    prompt = PromptFactory()
    flags = [
        raise_flag(
            sample_id=sample(prompt, UserFactory(), f"{TEXT} {i}").pk, kind=kind, evidence={}
        )
        for i, kind in enumerate([FlagKind.COPY, FlagKind.HOARDING])
    ]
    ids = [f.pk for f in flags]
    with pytest.raises(FlagError):
        clear_flags(flag_ids=ids, by=admin_user, reason="  ")
    assert clear_flags(flag_ids=ids, by=admin_user, reason="looked at both") == sorted(ids)
    assert clear_flags(flag_ids=ids, by=admin_user, reason="again") == []
    for flag in Flag.objects.all():
        assert (flag.cleared_by, flag.clear_reason) == (admin_user, "looked at both")
        assert flag.cleared_at is not None
    entry = AuditEntry.objects.get(action="flag.clear")
    assert (entry.actor, entry.target_type, entry.target_ids, entry.reason) == (
        admin_user,
        "scoring.flag",
        sorted(ids),
        "looked at both",
    )
    assert entry.details == {"kinds": {"copy": 1, "hoarding": 1}}


# --- admin ----------------------------------------------------------------------------------

EVIL = "<script>alert('flag')</script>"


def evil_flag() -> Flag:
    prompt = PromptFactory()
    s = sample(prompt, UserFactory(), TEXT)
    return raise_flag(sample_id=s.pk, kind=FlagKind.COPY, evidence={"note": EVIL, "jaccard": 0.9})


def test_flag_admin_pages_show_the_evidence_escaped_and_link_the_sample(admin_client):
    flag = evil_flag()
    for url in (
        "/admin/scoring/flag/",
        "/admin/scoring/flag/?state=open&kind=copy",
        f"/admin/scoring/flag/{flag.pk}/change/",
        f"/admin/scoring/sample/{flag.sample_id}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert EVIL not in html, url
        assert "&lt;script&gt;" in html, url
    page = admin_client.get(f"/admin/scoring/flag/{flag.pk}/change/").content.decode()
    assert f"/admin/scoring/sample/{flag.sample_id}/change/" in page
    sample_page = admin_client.get(f"/admin/scoring/sample/{flag.sample_id}/change/")
    assert f"/admin/scoring/flag/{flag.pk}/change/" in sample_page.content.decode()
    cleared = admin_client.get("/admin/scoring/flag/?state=cleared").content.decode()
    assert f"/admin/scoring/flag/{flag.pk}/change/" not in cleared


def test_clearing_in_the_admin_asks_for_a_reason_then_clears(admin_client, admin_user):
    flag = evil_flag()
    post = {"action": "clear", "_selected_action": [flag.pk]}
    page = admin_client.post("/admin/scoring/flag/", post)
    assert page.status_code == 200 and b"Clear flags" in page.content
    assert EVIL.encode() not in page.content
    assert Flag.objects.get().is_open
    done = admin_client.post(
        "/admin/scoring/flag/", {**post, "apply": "1", "reason": "a known template answer"}
    )
    assert done.status_code == 302
    flag.refresh_from_db()
    assert (flag.is_open, flag.cleared_by, flag.clear_reason) == (
        False,
        admin_user,
        "a known template answer",
    )
    assert AuditEntry.objects.filter(action="flag.clear", target_ids=[flag.pk]).exists()


# --- releases: published rows withdrawn -----------------------------------------------------


@pytest.fixture
def release_dirs(tmp_path, settings):
    settings.THINKPOOL_RELEASE = {
        **settings.THINKPOOL_RELEASE,
        "local_root": tmp_path / "releases",
        "staging_root": tmp_path / "staging",
        "retry_base_s": 0.0,
    }
    return tmp_path


def publish() -> Any:
    release = start_release(target="local", repo_id="org/name")
    return run_release(release_id=release.pk)


def test_the_next_release_lists_published_rows_of_quarantined_samples_and_banned_contributors(
    release_dirs, admin_user
):
    from tests.scoring.publishing.conftest import make_dataset

    data = make_dataset(prompts=3)
    # Quarantined before any release: never published, never listed.
    early = data.samples[0]
    quarantine_samples(sample_ids=[early.pk], by=admin_user, reason="held from the start")
    publish()

    late = data.samples[3]  # alice's, prompt 1
    quarantine_samples(sample_ids=[late.pk], by=admin_user, reason="found a copy")
    bob = data.samples[1].contributor
    Profile.objects.filter(user=bob).update(banned=True)
    bobs = sorted((s.prompt_id, s.pk) for s in data.samples if s.contributor_id == bob.pk)
    expected = sorted([(late.prompt_id, late.pk), *bobs])
    assert list(withdrawn_samples(start_release(target="local", repo_id="org/name"))) == expected

    release = run_release(release_id=start_release(target="local", repo_id="org/name").pk)
    readme = (release_dirs / "releases" / "org/name" / "README.md").read_text()
    assert "## Withdrawn rows" in readme
    readme = readme.split("## Withdrawn rows")[1].split("## Contributors")[0]
    assert f"{len(expected)} rows published by an earlier release" in readme
    for prompt_id, sample_id in expected:
        assert f"| {prompt_id} | {sample_id} |" in readme
    assert f"| {early.prompt_id} | {early.pk} |" not in readme
    assert "withdrawn.csv" not in release.files  # the card lists them all
    assert any("withdrawn" in w for w in release.warnings)


def test_the_card_lists_a_bounded_number_of_withdrawn_rows_and_names_the_file():
    from tests.scoring.publishing.test_card import make_input

    rows = [(i // 3, i) for i in range(WITHDRAWN_SHOWN)]
    text = build_card(
        make_input(withdrawn=5000, withdrawn_rows=rows, withdrawn_file="withdrawn.csv")
    ).text
    assert "5,000 rows published by an earlier release" in text
    assert (
        "All of them are listed in `withdrawn.csv` (prompt_id, sample_id); "
        f"the first {WITHDRAWN_SHOWN:,}:" in text
    )
    assert text.count("| 0 | 1 |") == 1 and f"| {(WITHDRAWN_SHOWN - 1) // 3} |" in text
    assert "## Withdrawn rows" not in build_card(make_input()).text


def test_a_long_withdrawn_list_goes_into_withdrawn_csv_which_a_later_release_drops(
    release_dirs, monkeypatch
):
    from scoring.publishing import card, service
    from tests.scoring.publishing.conftest import make_dataset

    monkeypatch.setattr(card, "WITHDRAWN_SHOWN", 2)
    monkeypatch.setattr(service, "WITHDRAWN_SHOWN", 2)
    data = make_dataset(prompts=2)
    publish()
    bob = data.samples[1].contributor
    Profile.objects.filter(user=bob).update(banned=True)
    second = publish()
    repo = release_dirs / "releases" / "org/name"
    bobs = sorted((s.prompt_id, s.pk) for s in data.samples if s.contributor_id == bob.pk)
    assert len(bobs) == 4 and "withdrawn.csv" in second.files
    lines = (repo / "withdrawn.csv").read_text().splitlines()
    assert lines == ["prompt_id,sample_id", *(f"{p},{s}" for p, s in bobs)]
    assert (
        "listed in `withdrawn.csv` (prompt_id, sample_id); the first 2:"
        in (repo / "README.md").read_text()
    )

    Profile.objects.filter(user=bob).update(banned=False)
    third = publish()
    assert "withdrawn.csv" not in third.files and not (repo / "withdrawn.csv").exists()

"""Records are evidence in the admin: samples and verdicts are not edited by hand, and every
maintainer decision is kept in the audit trail (who, when, what, why)."""

from __future__ import annotations

import pytest

from contributors.models import ApiToken, Profile
from scoring.models import AuditEntry, Sample, SampleStatus, Verdict
from tests.factories import PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


def make_sample(**fields) -> Sample:
    fields.setdefault("status", SampleStatus.REJECTED)
    fields.setdefault("completion", "The answer is 3.")
    return Sample.objects.create(
        prompt=PromptFactory(),
        contributor=UserFactory(),
        model="org/model-a",
        temperature=0.6,
        finish_reason="stop",
        **fields,
    )


def test_a_samples_fields_cannot_be_changed_from_its_admin_page(admin_client):
    sample = make_sample()
    url = f"/admin/scoring/sample/{sample.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="completion"' not in page and 'name="status"' not in page
    admin_client.post(url, {"completion": "forged", "status": "verified", "quarantined": "on"})
    sample.refresh_from_db()
    assert (sample.completion, sample.status, sample.quarantined) == (
        "The answer is 3.",
        "rejected",
        False,
    )


def test_verdicts_cannot_be_added_changed_or_deleted_by_hand(admin_client):
    sample = make_sample()
    verdict = Verdict.objects.create(sample=sample, verifier="math", version=1, status="fail")
    assert admin_client.get("/admin/scoring/verdict/add/").status_code == 403
    url = f"/admin/scoring/verdict/{verdict.pk}/change/"
    assert admin_client.post(url, {"status": "pass"}).status_code == 403
    assert (
        admin_client.post(
            f"/admin/scoring/verdict/{verdict.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    verdict.refresh_from_db()
    assert verdict.status == "fail"
    # Nor through the sample's page: its verdict inline takes no new rows and no deletions.
    page = admin_client.get(f"/admin/scoring/sample/{sample.pk}/change/").content.decode()
    assert 'name="verdicts-MAX_NUM_FORMS" value="0"' in page
    admin_client.post(
        f"/admin/scoring/sample/{sample.pk}/change/",
        {
            "verdicts-TOTAL_FORMS": "2",
            "verdicts-INITIAL_FORMS": "1",
            "verdicts-0-id": verdict.pk,
            "verdicts-0-sample": sample.pk,
            "verdicts-0-DELETE": "on",
            "verdicts-1-sample": sample.pk,
            "verdicts-1-verifier": "math",
            "verdicts-1-version": "2",
            "verdicts-1-status": "pass",
        },
    )
    assert list(Verdict.objects.values_list("pk", "status")) == [(verdict.pk, "fail")]


def test_sample_actions_are_kept_in_the_audit_trail(admin_client, admin_user):
    first, second = make_sample(), make_sample()
    already = make_sample(quarantined=True)
    response = admin_client.post(
        "/admin/scoring/sample/",
        {"action": "quarantine", "_selected_action": [first.pk, second.pk, already.pk]},
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target_type, entry.target_ids) == (
        admin_user,
        "sample.quarantine",
        "scoring.sample",
        sorted([first.pk, second.pk]),
    )
    admin_client.post(
        "/admin/scoring/sample/",
        {"action": "release_from_quarantine", "_selected_action": [first.pk]},
    )
    assert list(AuditEntry.objects.values_list("action", "target_ids")) == [
        ("sample.release", [first.pk]),
        ("sample.quarantine", sorted([first.pk, second.pk])),
    ]


def test_a_ban_and_a_token_revocation_are_kept_in_the_audit_trail(admin_client, admin_user):
    user = UserFactory(username="mallory")
    profile = Profile.objects.get(user=user)
    admin_client.post(
        f"/admin/contributors/profile/{profile.pk}/change/",
        {
            "user": user.pk,
            "handle": "mallory",
            "hf_username": "",
            "public_attribution": "on",
            "banned": "on",
        },
    )
    assert Profile.objects.get(pk=profile.pk).banned
    from contributors.services import issue_token

    token, _ = issue_token(user=user, name="t")
    admin_client.post(
        "/admin/contributors/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert list(AuditEntry.objects.order_by("at", "id").values_list("action", "target_ids")) == [
        ("profile.ban", [profile.pk]),
        ("token.revoke", [token.pk]),
    ]
    assert set(AuditEntry.objects.values_list("actor", flat=True)) == {admin_user.pk}


def test_the_audit_trail_is_read_only(admin_client, admin_user):
    from scoring import audit

    entry = audit.record(actor=admin_user, action="sample.quarantine", model=Sample, ids=[3, 1])
    assert entry.target_ids == [1, 3]
    assert admin_client.get("/admin/scoring/auditentry/").status_code == 200
    assert admin_client.get("/admin/scoring/auditentry/add/").status_code == 403
    assert (
        admin_client.post(
            f"/admin/scoring/auditentry/{entry.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert AuditEntry.objects.count() == 1


def test_samples_filter_by_verifier_result_and_search_by_prompt_id(admin_client):
    passed = make_sample(status=SampleStatus.VERIFIED)
    failed = make_sample()
    Verdict.objects.create(sample=passed, verifier="math", version=3, status="pass")
    Verdict.objects.create(sample=failed, verifier="math", version=3, status="fail")

    def listed(query: str) -> set[int]:
        page = admin_client.get(f"/admin/scoring/sample/?{query}").content.decode()
        return {s.pk for s in (passed, failed) if f'value="{s.pk}"' in page}

    assert listed("verdict=math:fail") == {failed.pk}
    assert listed("verdict=math:pass") == {passed.pk}
    assert listed(f"q={passed.prompt_id}") == {passed.pk}
    assert listed("prompt__prompt_set__domain=math") == {passed.pk, failed.pk}


def test_the_sample_page_shows_prompt_reasoning_answer_gold_and_ranking_escaped(admin_client):
    from scoring.models import RewardScore, Selection

    sample = make_sample(
        status=SampleStatus.VERIFIED,
        completion="<think>step <img src=x onerror=alert(1)></think> <script>alert(2)</script> 4",
    )
    RewardScore.objects.create(
        sample=sample, reward_model="org/rm", version=1, raw=0.5, normalised=1.0
    )
    Selection.objects.create(
        kind="sft",
        prompt=sample.prompt,
        model=sample.model,
        sample=sample,
        rank=0,
        policy="r1-rejection",
        policy_version=1,
    )
    page = admin_client.get(f"/admin/scoring/sample/{sample.pk}/change/").content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt; 4" in page
    assert "<script>alert(2)" not in page and "<img src=x" not in page
    assert "SECRET-GOLD-42" in page  # staff see the gold here
    assert "org/rm v1: raw 0.5, normalised 1.0" in page
    assert "sft under r1-rejection v1, rank 0" in page

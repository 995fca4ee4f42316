"""The maintainers' decisions in the admin: approve / reject with a reason (an override the
verifiers cannot undo), quarantine, bulk actions that queue tasks, bans, imports from an
uploaded file, building selections and publishing, each kept in the audit trail."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Sum

from contributors.models import ApiToken, Lease, LeaseState, Profile
from contributors.services import issue_token
from scoring import counters, pipeline, tasks
from scoring.models import (
    AuditEntry,
    Prompt,
    PromptModelStats,
    PromptSet,
    ReleasedPrompt,
    Sample,
    SampleStatus,
    Selection,
    SetProgress,
    Verdict,
)
from scoring.services import DecisionError, close_prompts, override_samples
from scoring.signals import disclosed_changed
from tests.factories import PromptFactory, PromptSetFactory, UserFactory

pytestmark = pytest.mark.django_db

SAMPLES = "/admin/scoring/sample/"
RIGHT = "<think>2+2 is 4, since two and two make four.</think> The answer is \\boxed{4}."
WRONG = "<think>2+2 is 5, since two and two make five.</think> The answer is \\boxed{5}."

_texts = itertools.count()


def make_sample(*, completion: str = WRONG, prompt: Prompt | None = None, **fields: Any) -> Sample:
    if prompt is None:
        prompt = PromptFactory(
            prompt_set=fields.pop("prompt_set", None) or PromptSetFactory(),
            messages=[{"role": "user", "content": f"What is 2+2? Explain ({next(_texts)})."}],
            gold="4",
        )
    fields.setdefault("contributor", UserFactory())
    return Sample.objects.create(
        prompt=prompt,
        model=fields.pop("model", "org/model-a"),
        temperature=0.6,
        finish_reason="stop",
        completion=completion,
        **fields,
    )


def state(sample: Sample) -> tuple[str, str, str]:
    sample.refresh_from_db()
    return sample.status, sample.override, sample.status_reason


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def closed_counters() -> dict[str, int]:
    names = [counters.closed_samples(s) for s in SampleStatus.values]
    return {name: value for name, value in counters.read(names).items() if value}


def stats(prompt: Prompt) -> tuple[int, int, int]:
    row = PromptModelStats.objects.get(prompt=prompt, model="org/model-a")
    return row.samples, row.judged, row.verified


def progress(prompt_set: PromptSet) -> tuple[int, int]:
    sums = SetProgress.objects.filter(prompt_set=prompt_set).aggregate(
        v=Sum("verified"), r=Sum("rejected")
    )
    return sums["v"] or 0, sums["r"] or 0


def decide(client: Any, action: str, ids: list[int], reason: str | None, url: str = SAMPLES):
    """Runs a decision through its confirmation page: the action, then `apply` with the
    reason (None: only the first step)."""
    first = client.post(url, {"action": action, "_selected_action": ids, "index": 0})
    if reason is None:
        return first
    return client.post(
        url,
        {
            "action": action,
            "_selected_action": ids,
            "select_across": "0",
            "post": "yes",
            "apply": "1",
            "reason": reason,
        },
    )


# --- approve / reject ---------------------------------------------------------------------


def test_an_override_moves_the_counters_as_a_pipeline_move_and_survives_scoring_again(
    admin_client, admin_user, django_capture_on_commit_callbacks
):
    prompt_set = PromptSetFactory()
    wrong = make_sample(completion=WRONG, prompt_set=prompt_set)
    right = make_sample(completion=RIGHT, prompt_set=prompt_set)
    # Closed prompts: their per-status numbers are public (and move with every status change).
    close_prompts(prompt_ids=[wrong.prompt_id, right.prompt_id])
    assert pipeline.score_sample(sample_id=wrong.pk)
    assert pipeline.score_sample(sample_id=right.pk)
    assert (state(wrong)[0], state(right)[0]) == (SampleStatus.REJECTED, SampleStatus.VERIFIED)
    assert closed_counters() == {
        counters.closed_samples("verified"): 1,
        counters.closed_samples("rejected"): 1,
    }
    disclosed: list[list[int]] = []

    def heard(sender: Any, prompt_ids: list[int], **kwargs: Any) -> None:
        disclosed.append(list(prompt_ids))

    disclosed_changed.connect(heard, dispatch_uid="test-override-disclosed")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = decide(admin_client, "approve", [wrong.pk], "the verifier misread 4.0")
    finally:
        disclosed_changed.disconnect(dispatch_uid="test-override-disclosed")
    assert response.status_code == 302
    assert texts(response) == ["1 samples approved (verified, whatever the verifiers said)."]
    assert state(wrong) == ("verified", "verified", "maintainer: the verifier misread 4.0")
    # Exactly what the pipeline leaves for a verified sample (`right`): stats, public
    # counters, set progress; and the change of a closed prompt's sample is announced.
    assert stats(wrong.prompt) == stats(right.prompt) == (0, 1, 1)
    assert closed_counters() == {counters.closed_samples("verified"): 2}
    assert progress(prompt_set) == (2, 0)
    assert disclosed == [[wrong.prompt_id]]
    truth = counters.truth()
    assert closed_counters() == {
        name: value for name, value in truth.items() if name.startswith("samples_closed_") and value
    }
    entry = AuditEntry.objects.get(action="sample.approve")
    assert (entry.actor, entry.target_ids, entry.reason, entry.details) == (
        admin_user,
        [wrong.pk],
        "the verifier misread 4.0",
        {"status": "verified"},
    )

    # Scored again (manage.py rescore's path): the verifiers judge again and their verdicts
    # are stored as evidence, but the maintainer's decision stands, and nothing moves.
    Verdict.objects.filter(sample=wrong).delete()
    before = (closed_counters(), stats(wrong.prompt), progress(prompt_set))
    assert pipeline.score_sample(sample_id=wrong.pk, rescore=True)
    assert state(wrong) == ("verified", "verified", "maintainer: the verifier misread 4.0")
    assert Verdict.objects.get(sample=wrong, verifier="math").status == "fail"
    assert (closed_counters(), stats(wrong.prompt), progress(prompt_set)) == before
    # "Score again" takes samples in error only: the decision is left alone.
    admin_client.post(SAMPLES, {"action": "score_again", "_selected_action": [wrong.pk]})
    assert state(wrong)[:2] == ("verified", "verified")

    # Clearing the override (recorded) lets the next scoring decide: the verifiers reject it.
    response = admin_client.post(
        SAMPLES,
        {
            "action": "clear_override",
            "_selected_action": [wrong.pk],
            "index": 0,
            "reason": "second look",
        },
    )
    assert texts(response)[-1] == "1 samples no longer overridden, and back to scoring."
    assert state(wrong) == ("rejected", "", "math: fail")
    assert closed_counters() == {
        counters.closed_samples("verified"): 1,
        counters.closed_samples("rejected"): 1,
    }
    assert stats(wrong.prompt) == (0, 1, 0)
    assert list(
        AuditEntry.objects.filter(action="sample.clear_override").values_list(
            "target_ids", "reason"
        )
    ) == [([wrong.pk], "second look")]


def test_a_rejection_of_an_open_prompts_sample_moves_no_public_number(admin_client):
    right = make_sample(completion=RIGHT)
    assert pipeline.score_sample(sample_id=right.pk)
    response = decide(admin_client, "reject", [right.pk], "copied from a benchmark solution")
    assert response.status_code == 302
    assert state(right) == ("rejected", "rejected", "maintainer: copied from a benchmark solution")
    assert stats(right.prompt) == (0, 1, 0)
    assert closed_counters() == {}  # open prompt: no oracle
    assert progress(right.prompt.prompt_set) == (0, 0)


def test_an_override_outdates_a_claim_in_flight_and_survives_a_poisoned_scoring(settings):
    sample = make_sample(completion=RIGHT)
    held = pipeline.claim(sample_id=sample.pk, claim_key="task-1")
    assert held is not None
    override_samples(sample_ids=[sample.pk], status="rejected", reason="spam", by=None)
    # The claim settles nothing: the decision stands.
    assert not pipeline._finish(held, SampleStatus.VERIFIED, "")
    assert state(sample) == ("rejected", "rejected", "maintainer: spam")
    # A rescore whose task keeps dying ends poison, but keeps the maintainer's status.
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_SCORING_ATTEMPTS": 1}
    assert pipeline.claim(sample_id=sample.pk, claim_key="task-2", rescore=True) is not None
    # Its worker died (no settle): the redelivery finds its attempts spent.
    assert pipeline.claim(sample_id=sample.pk, claim_key="task-2") is None
    assert state(sample) == ("rejected", "rejected", "maintainer: spam")


def test_approve_asks_for_a_reason_on_a_confirmation_page_listing_the_selection(
    admin_client, admin_user
):
    first = make_sample(contributor=UserFactory(username="ann"), status=SampleStatus.REJECTED)
    second = make_sample(contributor=UserFactory(username="bob"), status=SampleStatus.REJECTED)
    response = decide(admin_client, "approve", [first.pk, second.pk], None)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Approve samples" in page and "2 selected" in page
    assert '<textarea name="reason"' in page
    for sample in (first, second):
        assert f'name="_selected_action" value="{sample.pk}"' in page
        assert f"<td>{sample.pk}</td>" in page
    assert "<td>ann</td>" in page and "<td>bob</td>" in page
    assert not AuditEntry.objects.exists()
    assert state(first)[:2] == ("rejected", "")

    # Confirmed without a reason: asked again, nothing done.
    response = decide(admin_client, "approve", [first.pk, second.pk], "   ")
    assert response.status_code == 200
    assert "Say why: a reason is required." in response.content.decode()
    assert state(first)[:2] == ("rejected", "")
    assert not AuditEntry.objects.exists()

    # The service refuses too.
    with pytest.raises(DecisionError):
        override_samples(sample_ids=[first.pk], status="verified", reason="", by=admin_user)
    with pytest.raises(DecisionError):
        override_samples(sample_ids=[first.pk], status="error", reason="why", by=admin_user)

    response = decide(admin_client, "approve", [first.pk, second.pk], "hand-checked")
    assert response.status_code == 302
    assert state(first)[:2] == state(second)[:2] == ("verified", "verified")
    assert list(AuditEntry.objects.values_list("actor", "action", "target_ids", "reason")) == [
        (admin_user.pk, "sample.approve", sorted([first.pk, second.pk]), "hand-checked")
    ]
    # Taken again, the same decision changes nothing and records nothing.
    decide(admin_client, "approve", [first.pk, second.pk], "hand-checked")
    assert AuditEntry.objects.count() == 1


def test_a_hostile_reason_and_handle_are_escaped_on_the_confirmation_page(admin_client):
    sample = make_sample(
        contributor=UserFactory(username="x<script>alert(1)</script>"),
        status_reason="<img src=x onerror=alert(2)>",
    )
    page = decide(admin_client, "reject", [sample.pk], None).content.decode()
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page


def test_only_staff_with_the_change_permission_may_decide(client):
    sample = make_sample(status=SampleStatus.REJECTED)
    outsider = UserFactory(username="outsider")
    outsider.set_password("pw-123456789")
    outsider.save()
    client.force_login(outsider)
    response = decide(client, "approve", [sample.pk], "because")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert response.wsgi_request.user == outsider

    viewer = UserFactory(username="viewer")
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_sample"))
    client.force_login(viewer)
    assert client.get(SAMPLES).status_code == 200
    for action in ("approve", "reject", "quarantine", "clear_override"):
        decide(client, action, [sample.pk], "because")
    assert state(sample)[:2] == ("rejected", "")
    assert not Sample.objects.get(pk=sample.pk).quarantined
    assert not AuditEntry.objects.exists()


# --- quarantine, filters and search ---------------------------------------------------------


def test_quarantine_takes_a_reason_from_the_action_bar(admin_client, admin_user):
    sample = make_sample()
    response = admin_client.post(
        SAMPLES,
        {"action": "quarantine", "_selected_action": [sample.pk], "index": 0, "reason": "spam"},
    )
    assert response.status_code == 302
    assert texts(response) == ["1 samples quarantined."]
    assert Sample.objects.get(pk=sample.pk).quarantined
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target_ids, entry.reason) == (
        admin_user,
        "sample.quarantine",
        [sample.pk],
        "spam",
    )
    page = admin_client.get(SAMPLES).content.decode()
    assert 'name="reason"' in page and "Reason (kept in the audit trail):" in page


def test_samples_filter_by_status_model_and_contributor_and_search_by_handle(admin_client):
    ann = UserFactory(username="ann")
    Profile.objects.filter(user=ann).update(handle="Annie")
    a = make_sample(contributor=ann, status=SampleStatus.REJECTED, model="org/model-a")
    b = make_sample(status=SampleStatus.VERIFIED, model="org/model-b")
    c = make_sample(status=SampleStatus.REJECTED, model="org/model-b")

    def listed(query: str) -> set[int]:
        response = admin_client.get(f"{SAMPLES}?{query}")
        assert response.status_code == 200, query
        page = response.content.decode()
        return {s.pk for s in (a, b, c) if f'name="_selected_action" value="{s.pk}"' in page}

    assert listed("status__exact=rejected") == {a.pk, c.pk}
    assert listed("model=org/model-b") == {b.pk, c.pk}
    assert listed("model=org/model-b&status__exact=rejected") == {c.pk}
    assert listed("contributor=ann") == {a.pk}
    assert listed("contributor=annie") == {a.pk}  # the handle, in any letter case
    assert listed("contributor=nobody") == set()
    assert listed("q=Annie") == {a.pk}
    assert listed("q=ann") == {a.pk}
    assert listed(f"q={b.prompt_id}") == {b.pk}
    assert listed(f"q={c.client_id}") == {c.pk}
    assert listed("q=org") == set()  # exact matches only: no scan of the samples
    # The typed filters keep the other parameters and render as labelled inputs.
    page = admin_client.get(f"{SAMPLES}?status__exact=rejected&contributor=ann").content.decode()
    assert '<label for="tp-filter-contributor">Username or handle</label>' in page
    assert 'name="status__exact" value="rejected"' in page
    assert 'name="contributor" value="ann"' in page


# --- bulk: more than THINKPOOL_ADMIN_SYNC_LIMIT samples go to tasks -----------------------


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """The bulk tasks sent (run eagerly, as CELERY_TASK_ALWAYS_EAGER does in tests)."""
    calls: list[tuple[str, list[int]]] = []
    original = tasks.bulk_samples_action.apply_async

    def spy(args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        calls.append((args[0], list(args[1])))
        return original(args=args, kwargs=kwargs, **options)

    monkeypatch.setattr(tasks.bulk_samples_action, "apply_async", spy)
    return calls


def test_a_select_across_over_the_limit_queues_chunked_tasks_and_says_so(
    admin_client, admin_user, settings, monkeypatch, sent, django_capture_on_commit_callbacks
):
    settings.THINKPOOL_ADMIN_SYNC_LIMIT = 2
    monkeypatch.setattr(tasks, "BULK_CHUNK", 2)
    rejected = [make_sample(status=SampleStatus.REJECTED) for _ in range(5)]
    verified = make_sample(status=SampleStatus.VERIFIED)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"{SAMPLES}?status__exact=rejected",
            {
                "action": "quarantine",
                "_selected_action": [rejected[0].pk],  # the page's selection…
                "select_across": "1",  # …"select all 5"
                "index": 0,
                "reason": "flood",
            },
        )
    assert response.status_code == 302
    assert texts(response) == [
        "Queued 5 samples in 3 tasks; it runs in the background on the maintenance queue. "
        "Each task keeps its part in the audit trail."
    ]
    ids = sorted(s.pk for s in rejected)
    assert sent == [("quarantine", ids[0:2]), ("quarantine", ids[2:4]), ("quarantine", ids[4:])]
    assert tasks.bulk_samples_action.queue == "maintenance"
    assert tasks.bulk_samples_action.acks_late is True
    assert tasks.bulk_samples_action.time_limit == 360
    assert set(Sample.objects.filter(quarantined=True).values_list("pk", flat=True)) == set(ids)
    assert not Sample.objects.get(pk=verified.pk).quarantined
    queued = AuditEntry.objects.get(action="sample.quarantine.queued")
    assert (queued.actor, queued.reason, queued.details["count"], queued.details["chunks"]) == (
        admin_user,
        "flood",
        5,
        3,
    )
    assert sorted(
        AuditEntry.objects.filter(action="sample.quarantine").values_list("target_ids", flat=True)
    ) == [ids[0:2], ids[2:4], ids[4:]]
    # A redelivered chunk changes nothing and records nothing.
    assert tasks.bulk_samples_action.apply(args=("quarantine", ids[:2], admin_user.pk)).get() == 0
    assert AuditEntry.objects.filter(action="sample.quarantine").count() == 3


def test_an_approval_over_the_limit_is_confirmed_then_queued(
    admin_client, settings, sent, django_capture_on_commit_callbacks
):
    settings.THINKPOOL_ADMIN_SYNC_LIMIT = 1
    samples = [make_sample(status=SampleStatus.REJECTED) for _ in range(3)]
    ids = sorted(s.pk for s in samples)
    page = admin_client.post(
        SAMPLES,
        {"action": "approve", "_selected_action": ids[:1], "select_across": "1", "index": 0},
    ).content.decode()
    assert "3 selected" in page and 'name="select_across" value="1"' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            SAMPLES,
            {
                "action": "approve",
                "_selected_action": ids[:1],
                "select_across": "1",
                "post": "yes",
                "apply": "1",
                "reason": "batch reviewed",
            },
        )
    assert texts(response)[0].startswith("Queued 3 samples in 1 tasks;")
    assert sent == [("approve", ids)]
    assert set(Sample.objects.values_list("status", "override")) == {("verified", "verified")}


def test_within_the_limit_the_action_runs_in_the_request(admin_client, settings, sent):
    settings.THINKPOOL_ADMIN_SYNC_LIMIT = 5
    samples = [make_sample() for _ in range(5)]
    response = admin_client.post(
        SAMPLES,
        {"action": "quarantine", "_selected_action": [s.pk for s in samples], "index": 0},
    )
    assert texts(response) == ["5 samples quarantined."]
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_away_is_reported(admin_client, settings, monkeypatch):
    settings.THINKPOOL_ADMIN_SYNC_LIMIT = 1

    def away(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(tasks.bulk_samples_action, "apply_async", away)
    samples = [make_sample() for _ in range(2)]
    response = admin_client.post(
        SAMPLES, {"action": "quarantine", "_selected_action": [s.pk for s in samples], "index": 0}
    )
    assert "could not reach the broker" in texts(response)[0]
    assert not Sample.objects.filter(quarantined=True).exists()


# --- bans -----------------------------------------------------------------------------------


def test_a_ban_revokes_tokens_releases_leases_and_quarantines_only_unpublished_samples(
    admin_client, admin_user, user, lease, django_capture_on_commit_callbacks
):
    profile = Profile.objects.get(user=user)
    issue_token(user=user, name="second")
    published = make_sample(contributor=user)
    ReleasedPrompt.objects.create(
        target="local", repo_id="org/data", prompt=published.prompt, version=1
    )
    unpublished = make_sample(contributor=user)
    already = make_sample(contributor=user, quarantined=True)
    someone_elses = make_sample()
    url = "/admin/contributors/profile/"

    page = admin_client.post(
        url, {"action": "ban", "_selected_action": [profile.pk], "index": 0}
    ).content.decode()
    assert "Ban contributors" in page and "<td>alice</td>" in page
    assert not Profile.objects.get(pk=profile.pk).banned
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url,
            {
                "action": "ban",
                "_selected_action": [profile.pk],
                "post": "yes",
                "apply": "1",
                "reason": "uploads copied answers",
            },
        )
    assert response.status_code == 302
    assert texts(response) == [
        "alice banned: 2 tokens revoked, 1 live leases released, 1 unpublished samples quarantined."
    ]
    assert Profile.objects.get(pk=profile.pk).banned
    assert not ApiToken.objects.filter(user=user, revoked_at__isnull=True).exists()
    assert Lease.objects.get(pk=lease["id"]).state == LeaseState.RELEASED
    quarantined = dict(Sample.objects.values_list("pk", "quarantined"))
    assert quarantined == {
        published.pk: False,
        unpublished.pk: True,
        already.pk: True,
        someone_elses.pk: False,
    }
    ban = AuditEntry.objects.get(action="profile.ban")
    assert (ban.actor, ban.target_ids, ban.reason) == (
        admin_user,
        [profile.pk],
        "uploads copied answers",
    )
    assert ban.details["tokens_revoked"] == 2 and ban.details["quarantined"] == 1
    hold = AuditEntry.objects.get(action="sample.quarantine")
    assert (hold.target_ids, hold.reason) == (
        [unpublished.pk],
        "contributor alice banned: uploads copied answers",
    )

    # Unbanning lifts the ban only: the quarantine stays, and the page says so.
    response = admin_client.post(
        url, {"action": "unban", "_selected_action": [profile.pk], "index": 0}
    )
    assert texts(response)[-1] == (
        "1 contributors unbanned. Their quarantined samples stay quarantined (release them "
        "from the samples list) and their revoked tokens stay revoked."
    )
    assert not Profile.objects.get(pk=profile.pk).banned
    assert Sample.objects.get(pk=unpublished.pk).quarantined
    assert AuditEntry.objects.filter(action="profile.unban", target_ids=[profile.pk]).exists()


def test_a_ban_needs_a_reason(admin_client, user):
    from contributors.services.accounts import ban_contributor
    from contributors.services.errors import ServiceError

    profile = Profile.objects.get(user=user)
    response = admin_client.post(
        "/admin/contributors/profile/",
        {"action": "ban", "_selected_action": [profile.pk], "post": "yes", "apply": "1"},
    )
    assert response.status_code == 200
    assert "Say why: a reason is required." in response.content.decode()
    assert not Profile.objects.get(pk=profile.pk).banned
    with pytest.raises(ServiceError):
        ban_contributor(profile=profile, by=None, reason=" ")
    assert not Profile.objects.get(pk=profile.pk).banned


def test_a_ban_of_a_prolific_contributor_quarantines_through_tasks(
    admin_user, settings, sent, django_capture_on_commit_callbacks
):
    from contributors.services.accounts import ban_contributor

    settings.THINKPOOL_ADMIN_SYNC_LIMIT = 2
    user = UserFactory(username="prolific")
    samples = [make_sample(contributor=user) for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        outcome = ban_contributor(
            profile=Profile.objects.get(user=user), by=admin_user, reason="bot"
        )
    assert (outcome.quarantined, outcome.queued) == (0, 3)
    assert sent == [("quarantine", sorted(s.pk for s in samples))]
    assert Sample.objects.filter(quarantined=True).count() == 3


# --- importing a prompt file ------------------------------------------------------------------

IMPORT = "/admin/scoring/promptset/import/"


def jsonl(*rows: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def upload(client: Any, content: bytes, filename: str = "prompts.jsonl", **fields: Any):
    data = {"name": "", "domain": "", "license": "", "source": "", "field_map": "", **fields}
    data["file"] = SimpleUploadedFile(filename, content)
    return client.post(IMPORT, data)


GOOD = [
    {"id": "a", "prompt": "What is 1+1?", "answer": "2"},
    {"id": "b", "prompt": "What is 2+2?", "answer": "4"},
    {"id": "c", "prompt": "What is 3+3?", "answer": "6"},
]


def test_the_prompt_set_list_links_to_the_import_form(admin_client):
    page = admin_client.get("/admin/scoring/promptset/").content.decode()
    assert f'href="{IMPORT}"' in page and "Import prompts from a file" in page
    form = admin_client.get(IMPORT).content.decode()
    assert 'enctype="multipart/form-data"' in form and '<label for="id_file">' in form


def test_an_import_into_a_new_set_creates_prompts_and_reports_duplicates(admin_client, admin_user):
    content = jsonl(*GOOD, {"id": "a2", "prompt": "what is  1+1?", "answer": "2"})
    response = upload(admin_client, content, domain="math", license="MIT", name="arith")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Imported 3 prompts into arith." in page
    prompt_set = PromptSet.objects.get(name="arith")
    assert sorted(prompt_set.prompts.values_list("external_id", flat=True)) == ["a", "b", "c"]
    assert '<th scope="row">prompts created</th><td>3</td>' in page
    assert "<td>1</td>" in page  # the duplicate
    entry = AuditEntry.objects.get(action="promptset.import")
    assert (entry.actor, entry.target_ids) == (admin_user, [prompt_set.pk])
    assert (entry.details["result"], entry.details["created"], entry.details["duplicates"]) == (
        "imported",
        3,
        1,
    )
    assert entry.details["file"] == "prompts.jsonl"
    # Again into the same set: every row is a duplicate, nothing new.
    response = upload(admin_client, content, prompt_set=prompt_set.pk)
    assert "Imported 0 prompts into arith." in response.content.decode()
    assert prompt_set.prompts.count() == 3


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(admin_client):
    prompt_set = PromptSetFactory(name="target")
    content = jsonl(GOOD[0], {"id": "x", "prompt": "No answer"}, "{not json", GOOD[1])
    response = upload(admin_client, content, prompt_set=prompt_set.pk)
    page = response.content.decode()
    assert "2 invalid rows: nothing was imported." in page
    assert "<tr><td>2</td><td>missing field: answer (required for domain math)</td></tr>" in page
    assert (
        "<tr><td>3</td><td>invalid JSON: Expecting property name enclosed in double quotes" in page
    )
    assert not prompt_set.prompts.exists()
    assert AuditEntry.objects.get(action="promptset.import").details["invalid_count"] == 2

    # With "skip the invalid ones": the good rows, and the bad ones still reported.
    response = upload(admin_client, content, prompt_set=prompt_set.pk, skip_invalid="on")
    page = response.content.decode()
    assert "Imported 2 prompts into target." in page
    assert "<tr><td>2</td><td>missing field: answer (required for domain math)</td></tr>" in page
    assert prompt_set.prompts.count() == 2


def test_an_unreadable_file_creates_nothing_not_even_its_new_set(admin_client):
    response = upload(
        admin_client,
        b'[{"prompt": "a", "answer": "1"},',
        "broken.json",
        name="fresh",
        domain="math",
        license="MIT",
    )
    page = response.content.decode()
    assert "The file could not be read: broken.json: not a valid JSON document" in page
    assert "Nothing was imported and the new set was not kept" in page
    assert not PromptSet.objects.filter(name="fresh").exists()
    assert not Prompt.objects.exists()
    entry = AuditEntry.objects.get(action="promptset.import")
    assert (entry.details["result"], entry.details["set_removed"]) == ("unreadable", True)

    # A file that is not Parquet at all, named .parquet.
    upload(
        admin_client,
        b"PAR1 but not really",
        "x.parquet",
        name="fresh",
        domain="math",
        license="MIT",
    )
    assert not PromptSet.objects.filter(name="fresh").exists()


def test_the_import_form_refuses_bad_formats_sizes_and_missing_set_fields(admin_client, settings):
    response = upload(
        admin_client, jsonl(*GOOD), "prompts.txt", name="s", domain="math", license="MIT"
    )
    assert "Unknown format .txt" in response.content.decode()
    response = upload(admin_client, jsonl(*GOOD))
    page = response.content.decode()
    assert page.count("Required for a new set (or pick an existing set).") == 3
    settings.THINKPOOL_ADMIN_IMPORT_MAX_BYTES = 10
    response = upload(admin_client, jsonl(*GOOD), name="s", domain="math", license="MIT")
    assert "at most 0.0 MB" in response.content.decode()
    assert not PromptSet.objects.exists()


def test_csv_and_parquet_files_are_imported(admin_client):
    import pyarrow as pa
    import pyarrow.parquet as pq

    upload(
        admin_client,
        b"id,prompt,answer\na,What is 1+1?,2\n",
        "p.csv",
        name="csvset",
        domain="math",
        license="MIT",
    )
    assert PromptSet.objects.get(name="csvset").prompts.count() == 1
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(GOOD), buffer)
    upload(admin_client, buffer.getvalue(), "p.parquet", name="pqset", domain="math", license="MIT")
    assert PromptSet.objects.get(name="pqset").prompts.count() == 3


def test_a_large_file_is_stored_and_imported_by_a_task(
    admin_client, admin_user, settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    settings.THINKPOOL_ADMIN_IMPORT_INLINE_BYTES = 10
    response = upload(admin_client, jsonl(*GOOD), name="big", domain="math", license="MIT")
    assert response.status_code == 302
    (message,) = texts(response)
    assert message.startswith("Queued the import of prompts.jsonl (0.0 MB) into big;")
    # Run eagerly here: imported, reported to the audit trail, and the file removed.
    assert PromptSet.objects.get(name="big").prompts.count() == 3
    assert list((tmp_path / "uploads").iterdir()) == []
    details = AuditEntry.objects.get(action="promptset.import").details
    assert (details["result"], details["created"]) == ("imported", 3)
    assert AuditEntry.objects.filter(action="promptset.import.queued").count() == 1
    assert tasks.import_prompt_file.queue == "maintenance"


def test_the_import_needs_the_permission_to_add_prompts(client):
    staff = UserFactory(username="staffer")
    staff.is_staff = True
    staff.save()
    staff.user_permissions.add(Permission.objects.get(codename="view_promptset"))
    client.force_login(staff)
    assert client.get(IMPORT).status_code == 403
    assert (
        "Import prompts from a file" not in client.get("/admin/scoring/promptset/").content.decode()
    )


# --- building selections, publishing ----------------------------------------------------------


def test_build_selections_queues_the_sets_build_and_is_audited(
    admin_client, admin_user, django_capture_on_commit_callbacks
):
    prompt_set = PromptSetFactory()
    sample = make_sample(completion=RIGHT, prompt_set=prompt_set)
    assert pipeline.score_sample(sample_id=sample.pk)
    Selection.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/scoring/promptset/",
            {"action": "build_selections", "_selected_action": [prompt_set.pk], "index": 0},
        )
    assert texts(response)[0].startswith("Queued the selections of 1 sets on the maintenance")
    assert Selection.objects.filter(sample=sample, kind="sft").exists()
    entry = AuditEntry.objects.get(action="promptset.build_selections")
    assert (entry.actor, entry.target_ids) == (admin_user, [prompt_set.pk])
    assert tasks.build_set_selections.queue == "maintenance"


def test_publishing_and_retrying_a_release_are_audited(
    admin_client, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    from scoring.models import Release

    monkeypatch.setattr(tasks.publish_release, "apply_async", lambda *a, **k: None)
    page = admin_client.get("/admin/scoring/release/").content.decode()
    assert 'href="/admin/scoring/release/publish/"' in page
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/scoring/release/publish/",
            {"target": "local", "repo_id": "org/data", "path": ""},
        )
    release = Release.objects.get()
    entry = AuditEntry.objects.get(action="release.publish")
    assert (entry.actor, entry.target_ids, entry.details["tag"]) == (
        admin_user,
        [release.pk],
        "v1",
    )
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/scoring/release/",
            {"action": "retry", "_selected_action": [release.pk], "index": 0},
        )
    assert AuditEntry.objects.get(action="release.retry").target_ids == [release.pk]

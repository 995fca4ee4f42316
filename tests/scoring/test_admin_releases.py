"""The admin side of releases: the "Publish a release" form, the retry action, read-only
release records that cannot be deleted once published, and PromptSet.redistributable.

No test publishes: `publish_release.apply_async` is replaced by a recorder, and the on-commit
callbacks that call it are captured (and run) explicitly.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from scoring.models import PromptSet, Release, ReleaseState
from tests.factories import PromptSetFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/scoring/release/"
PUBLISH = "/admin/scoring/release/publish/"


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from scoring import tasks

    sent: list[int] = []
    monkeypatch.setattr(
        tasks.publish_release, "apply_async", lambda args, **kwargs: sent.append(args[0])
    )
    return sent


def make_release(repo_id: str, state: str, *, version: int = 1, **fields: Any) -> Release:
    fields.setdefault("location", f"/srv/releases/{repo_id}")
    return Release.objects.create(
        target="local", repo_id=repo_id, version=version, state=state, **fields
    )


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- the publish form -----------------------------------------------------------------------


def test_the_changelist_links_to_the_publish_form_and_offers_no_add(admin_client):
    page = admin_client.get(CHANGELIST).content.decode()
    assert f'href="{PUBLISH}"' in page
    assert "Publish a release" in page
    assert "/admin/scoring/release/add/" not in page
    assert admin_client.get("/admin/scoring/release/add/").status_code == 403


def test_the_publish_form_starts_one_pending_release_and_queues_it_once(
    admin_client, admin_user, queued, django_capture_on_commit_callbacks
):
    page = admin_client.get(PUBLISH)
    assert page.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            PUBLISH, {"target": "local", "repo_id": "org/data", "path": ""}
        )
    assert response.status_code == 302
    assert response["Location"] == CHANGELIST
    release = Release.objects.get()
    assert (release.target, release.repo_id, release.version, release.state) == (
        "local",
        "org/data",
        1,
        ReleaseState.PENDING,
    )
    assert release.location == str(Path(settings.THINKPOOL_RELEASE["local_root"]) / "org/data")
    assert release.triggered_by == admin_user
    assert len(callbacks) == 1
    assert queued == [release.pk]
    assert texts(response) == ["Queued v1 of org/data to local."]


def test_the_publish_form_takes_an_absolute_local_path_and_numbers_after_the_last_release(
    admin_client, queued, django_capture_on_commit_callbacks
):
    make_release("org/data", ReleaseState.PUBLISHED, version=1, location="/srv/out")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            PUBLISH, {"target": "local", "repo_id": "org/data", "path": "/srv/out"}
        )
    assert response.status_code == 302
    release = Release.objects.get(state=ReleaseState.PENDING)
    assert (release.version, release.location) == (2, "/srv/out")
    assert queued == [release.pk]
    assert texts(response) == ["Queued v2 of org/data to local."]


def test_the_publish_form_retries_a_failed_release_under_its_number(
    admin_client, queued, django_capture_on_commit_callbacks
):
    failed = make_release("org/data", ReleaseState.FAILED, version=3, location="/srv/out")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            PUBLISH, {"target": "local", "repo_id": "org/data", "path": "/srv/out"}
        )
    assert response.status_code == 302
    assert list(Release.objects.values_list("pk", flat=True)) == [failed.pk]
    assert queued == [failed.pk]
    assert texts(response) == [
        "Queued v3 of org/data to local (it was failed: retried under its number)."
    ]


@pytest.mark.parametrize(
    "repo_id",
    ["noslash", "org/name/extra", "org/..", "org/name.git", "-org/name", "<script>x</script>/a"],
)
def test_the_publish_form_refuses_a_bad_repo_id_and_queues_nothing(
    admin_client, queued, django_capture_on_commit_callbacks, repo_id
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(PUBLISH, {"target": "hub", "repo_id": repo_id, "path": ""})
    assert response.status_code == 200
    page = response.content.decode()
    assert "is not a Hub repository id (ORG/NAME)." in page
    assert "<script>x</script>" not in page
    assert Release.objects.count() == 0
    assert callbacks == []
    assert queued == []


@pytest.mark.parametrize(
    ("target", "path", "error"),
    [
        ("hub", "/srv/out", "A path is for the local target only."),
        ("local", "relative/dir", "An absolute path, please."),
        ("nowhere", "", "Select a valid choice. nowhere is not one of the available choices."),
    ],
)
def test_the_publish_form_refuses_bad_targets_and_paths(
    admin_client, queued, django_capture_on_commit_callbacks, target, path, error
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            PUBLISH, {"target": target, "repo_id": "org/data", "path": path}
        )
    assert response.status_code == 200
    assert error in response.content.decode()
    assert Release.objects.count() == 0
    assert (callbacks, queued) == ([], [])


def test_the_publish_form_shows_what_start_release_refuses(
    admin_client, queued, django_capture_on_commit_callbacks
):
    # The repository's open release is for another folder: start_release raises ReleaseError.
    make_release("org/data", ReleaseState.FAILED, version=4, location="/srv/elsewhere")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            PUBLISH, {"target": "local", "repo_id": "org/data", "path": "/srv/out"}
        )
    assert response.status_code == 200
    assert (
        "org/data has an unpublished release v4 for /srv/elsewhere; publish or delete it first."
        in response.content.decode()
    )
    assert Release.objects.count() == 1
    assert (callbacks, queued) == ([], [])


def test_staff_without_the_add_permission_can_neither_publish_nor_retry(client, queued):
    staff = UserFactory(username="staffer", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_release"))
    client.force_login(staff)
    pending = make_release("org/data", ReleaseState.PENDING)

    assert client.get(PUBLISH).status_code == 403
    assert client.post(PUBLISH, {"target": "local", "repo_id": "org/new"}).status_code == 403
    page = client.get(CHANGELIST).content.decode()
    assert "Publish a release" not in page
    assert 'value="retry"' not in page
    client.post(CHANGELIST, {"action": "retry", "_selected_action": [pending.pk]})
    assert list(Release.objects.values_list("repo_id", flat=True)) == ["org/data"]
    assert queued == []


def test_a_non_staff_user_is_sent_to_the_login_page(client):
    client.force_login(UserFactory(username="plain"))
    response = client.get(PUBLISH)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_publish_form_is_csrf_protected(admin_user, queued):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(PUBLISH, {"target": "local", "repo_id": "org/data", "path": ""})
    assert response.status_code == 403
    assert Release.objects.count() == 0


# --- the changelist and the retry action ----------------------------------------------------


def test_the_changelist_shows_versions_counts_and_short_commits(admin_client):
    make_release(
        "org/data",
        ReleaseState.PUBLISHED,
        version=7,
        row_counts={"sft": 1200, "preference": 30, "rl": 0, "raw": 5000},
        commit_id="0123456789abcdef0123456789abcdef01234567",
        attempts=2,
    )
    page = admin_client.get(CHANGELIST).content.decode()
    assert ">v7</a>" in page
    assert "sft 1,200 · preference 30 · rl 0 · raw 5,000" in page
    assert "0123456789ab<" in page
    assert "0123456789abc<" not in page


def test_retry_queues_only_the_pending_failed_and_stale_releases(
    admin_client, queued, django_capture_on_commit_callbacks
):
    now = timezone.now()
    stale_s = settings.THINKPOOL_RELEASE["stale_after_s"]
    pending = make_release("org/a-pending", ReleaseState.PENDING)
    failed = make_release("org/b-failed", ReleaseState.FAILED, version=2)
    published = make_release("org/b-failed", ReleaseState.PUBLISHED)
    building = make_release("org/c-building", ReleaseState.BUILDING, started_at=now)
    stale = make_release(
        "org/d-stale", ReleaseState.BUILDING, started_at=now - timedelta(seconds=stale_s + 60)
    )
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            CHANGELIST,
            {
                "action": "retry",
                "_selected_action": [r.pk for r in (pending, failed, published, building, stale)],
            },
        )
    assert response.status_code == 302
    assert len(callbacks) == 3
    assert queued == [pending.pk, failed.pk, stale.pk]
    assert texts(response) == [
        "Queued 3: org/a-pending v1 (local, pending), org/b-failed v2 (local, failed), "
        "org/d-stale v1 (local, building).",
        "Skipped 2 (published, or being built): org/b-failed v1 (local, published), "
        "org/c-building v1 (local, building).",
    ]
    # The action only queues: no release changed state.
    assert sorted(Release.objects.values_list("state", flat=True)) == sorted(
        ["pending", "failed", "published", "building", "building"]
    )


def test_retry_of_only_published_releases_queues_nothing(
    admin_client, queued, django_capture_on_commit_callbacks
):
    published = make_release("org/data", ReleaseState.PUBLISHED)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            CHANGELIST, {"action": "retry", "_selected_action": [published.pk]}
        )
    assert (callbacks, queued) == ([], [])
    assert texts(response) == [
        "Skipped 1 (published, or being built): org/data v1 (local, published)."
    ]


# --- the change page: read-only, escaped, deletable only while unpublished ------------------


def test_the_change_page_is_read_only(admin_client):
    release = make_release("org/data", ReleaseState.FAILED, error="boom")
    url = f"/admin/scoring/release/{release.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert '<input type="text" name="repo_id"' not in page
    assert 'name="_save"' not in page
    assert "/srv/releases/org/data" in page

    response = admin_client.post(
        url, {"repo_id": "org/other", "state": "published", "version": "9", "error": ""}
    )
    assert response.status_code == 403
    release.refresh_from_db()
    assert (release.repo_id, release.state, release.version, release.error) == (
        "org/data",
        "failed",
        1,
        "boom",
    )


def test_hostile_text_in_a_release_is_escaped_on_its_change_page(admin_client):
    release = make_release(
        "org/data",
        ReleaseState.PUBLISHED,
        error="<script>alert('error')</script>",
        warnings=["prompt set <script>alert('w')</script> left out: licence"],
        files={"data/<script>x</script>.parquet": "<b>abc</b>", "README.md": "f" * 64},
        row_counts={"<script>c</script>": 1},
    )
    page = admin_client.get(f"/admin/scoring/release/{release.pk}/change/").content.decode()
    assert "<script>alert" not in page
    assert "<script>x</script>" not in page
    assert "<script>c</script>" not in page
    assert "<b>abc</b>" not in page
    assert "&lt;script&gt;alert(&#x27;error&#x27;)&lt;/script&gt;" in page
    assert "<li>prompt set &lt;script&gt;alert(&#x27;w&#x27;)&lt;/script&gt; left out" in page
    assert "<td>data/&lt;script&gt;x&lt;/script&gt;.parquet</td><td><code>&lt;b&gt;abc" in page
    assert f"<td>README.md</td><td><code>{'f' * 64}</code></td>" in page
    list_page = admin_client.get(CHANGELIST).content.decode()
    assert "<script>c</script>" not in list_page


def test_a_published_release_cannot_be_deleted(admin_client):
    release = make_release("org/data", ReleaseState.PUBLISHED)
    url = f"/admin/scoring/release/{release.pk}/delete/"
    change = admin_client.get(f"/admin/scoring/release/{release.pk}/change/").content.decode()
    assert url not in change
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Release.objects.filter(pk=release.pk).exists()
    # Nor through the bulk delete, which asks about each selected release.
    failed = make_release("org/other", ReleaseState.FAILED)
    response = admin_client.post(
        CHANGELIST,
        {"action": "delete_selected", "_selected_action": [release.pk, failed.pk], "post": "yes"},
    )
    assert response.status_code == 403
    assert Release.objects.count() == 2


def test_a_release_being_built_cannot_be_deleted(admin_client):
    release = make_release("org/data", ReleaseState.BUILDING, started_at=timezone.now())
    url = f"/admin/scoring/release/{release.pk}/delete/"
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Release.objects.filter(pk=release.pk).exists()


@pytest.mark.parametrize("state", [ReleaseState.FAILED, ReleaseState.PENDING])
def test_an_unpublished_release_can_be_deleted_to_abandon_its_number(admin_client, state):
    release = make_release("org/data", state)
    url = f"/admin/scoring/release/{release.pk}/delete/"
    change = admin_client.get(f"/admin/scoring/release/{release.pk}/change/").content.decode()
    assert url in change
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Release.objects.filter(pk=release.pk).exists()


# --- prompt sets: redistributable -----------------------------------------------------------


def test_redistributable_is_listed_filtered_and_editable_on_prompt_sets(admin_client):
    open_set = PromptSetFactory(name="open-set")
    closed_set = PromptSetFactory(name="closed-set", redistributable=False)
    page = admin_client.get("/admin/scoring/promptset/?redistributable__exact=0").content.decode()
    assert "column-redistributable" in page
    assert f"/admin/scoring/promptset/{closed_set.pk}/change/" in page
    assert f"/admin/scoring/promptset/{open_set.pk}/change/" not in page

    url = f"/admin/scoring/promptset/{open_set.pk}/change/"
    assert 'name="redistributable"' in admin_client.get(url).content.decode()
    response = admin_client.post(
        url,
        {
            "name": "open-set",
            "description": "",
            "domain": open_set.domain,
            "license": "MIT",
            "source": "",
            "is_active": "on",
            # redistributable left unticked
            "models_allowed": "[]",
            "temperatures": "[0.6]",
            "samples_per_prompt": "2",
            "top_p": "0.95",
            "max_tokens": "32768",
            "instruction_template": "",
            "priority": "0",
            "lease_seconds": "3600",
            "replication": "1",
            "verifier_config": "{}",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert PromptSet.objects.get(pk=open_set.pk).redistributable is False

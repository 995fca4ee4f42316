"""The contributor's pages: sign up, log in and out, password reset, profile, tokens, nodes and
their samples, through Django's test client."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone

from contributors.models import ApiToken, ComputeNode, Profile, SampleOrigin, hash_token
from contributors.selectors import node_overview
from contributors.services import ServiceError, accounts, issue_token, sign_up
from scoring.models import Prompt, Sample, SampleStatus, Verdict
from tests import factories

pytestmark = pytest.mark.django_db

# factory_boy classes: calling one returns a model instance, which mypy cannot tell.
NodeFactory: Any = factories.NodeFactory
PromptFactory: Any = factories.PromptFactory
UserFactory: Any = factories.UserFactory

PASSWORD = "correct horse battery staple 42"
XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def signup_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "username": "alice",
        "email": "alice@example.org",
        "password1": PASSWORD,
        "password2": PASSWORD,
        "handle": "alice-h",
        "hf_username": "alice.hf",
        "public_attribution": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def user_with_password(username: str = "alice", **fields: Any) -> Any:
    user = UserFactory(username=username, **fields)
    user.set_password(PASSWORD)
    user.save()
    return user


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(response: Any) -> str:
    """The page's HTML with runs of whitespace made one space."""
    return re.sub(r"\s+", " ", response.content.decode())


def main(response: Any) -> str:
    """The page's <main> (outside it, the header's logout form has a fresh CSRF token)."""
    page = text(response)
    return page[page.index('<main id="main">') : page.index("</main>")]


def field_errors(response: Any, field: str) -> list[str]:
    return list(response.context["form"].errors.get(field, []))


def make_sample(
    user: Any,
    prompt: Prompt,
    *,
    node: ComputeNode | None = None,
    status: str = SampleStatus.RECEIVED,
    status_reason: str = "",
    **fields: Any,
) -> Sample:
    values: dict[str, Any] = {
        "model": "org/model-a",
        "model_revision": "abc123",
        "temperature": 0.6,
        "completion": "<think>2+2</think> The answer is 4.",
        "finish_reason": "stop",
        **fields,
    }
    sample = Sample.objects.create(
        prompt=prompt, contributor=user, status=status, status_reason=status_reason, **values
    )
    SampleOrigin.objects.create(sample=sample, node=node)
    return sample


def closed_prompt(**fields: Any) -> Prompt:
    prompt = PromptFactory(**fields)
    Prompt.objects.filter(pk=prompt.pk).update(closed_at=timezone.now())
    prompt.refresh_from_db()
    return prompt


# --- sign up ---------------------------------------------------------------------------------


def test_sign_up_creates_the_user_and_profile_and_logs_in(client):
    response = client.post("/signup/", signup_data(public_attribution=None))
    assert response.status_code == 302
    assert response["Location"] == "/me/"
    user = get_user_model().objects.get(username="alice")
    assert user.email == "alice@example.org"
    assert user.check_password(PASSWORD)
    profile = Profile.objects.get(user=user)
    assert (profile.handle, profile.hf_username, profile.public_attribution) == (
        "alice-h",
        "alice.hf",
        False,
    )
    assert client.session["_auth_user_id"] == str(user.pk)
    page = text(client.get("/me/"))
    assert "<dt>Handle</dt><dd>alice-h</dd>" in page
    assert "<dt>In releases</dt><dd>anonymous</dd>" in page


def test_the_sign_up_form_has_labels_for_every_field(client):
    page = client.get("/signup/").content.decode()
    for field, label in [
        ("username", "Username"),
        ("email", "Email address"),
        ("password1", "Password"),
        ("password2", "Password confirmation"),
        ("handle", "Handle"),
        ("hf_username", "Hugging Face username"),
        ("public_attribution", "Credit me by name in releases"),
    ]:
        assert f'<label for="id_{field}">{label}:</label>' in page
    assert 'name="csrfmiddlewaretoken"' in page


def test_a_username_taken_in_any_case_is_refused_and_nothing_is_created(client):
    UserFactory(username="alice")
    users, profiles = get_user_model().objects.count(), Profile.objects.count()
    response = client.post("/signup/", signup_data(username="ALICE", handle="fresh"))
    assert response.status_code == 200
    assert field_errors(response, "username") == ["A user with that username already exists."]
    assert (get_user_model().objects.count(), Profile.objects.count()) == (users, profiles)
    assert "_auth_user_id" not in client.session


def test_a_handle_taken_in_any_case_is_refused_and_nothing_is_created(client):
    UserFactory(username="bob")  # the factory's profile: handle "bob"
    response = client.post("/signup/", signup_data(handle="BoB"))
    assert response.status_code == 200
    assert field_errors(response, "handle") == ["This handle is taken; choose another."]
    assert not get_user_model().objects.filter(username="alice").exists()
    assert Profile.objects.filter(handle__iexact="bob").count() == 1


@pytest.mark.parametrize("handle", ["anonymous", "Anonymous", "ADMIN", "staff", "ThinkPool"])
def test_reserved_handles_are_refused(client, handle):
    response = client.post("/signup/", signup_data(handle=handle))
    assert response.status_code == 200
    assert field_errors(response, "handle") == ["This handle is reserved; choose another."]
    assert not get_user_model().objects.filter(username="alice").exists()


@pytest.mark.parametrize("handle", ["has space", "a" * 65, "émile", "a.b", XSS])
def test_handles_outside_letters_digits_dash_underscore_are_refused(client, handle):
    response = client.post("/signup/", signup_data(handle=handle))
    assert response.status_code == 200
    assert field_errors(response, "handle") in (
        ["Use 1 to 64 letters, digits, '-' or '_'."],
        ["Ensure this value has at most 64 characters (it has 65)."],
    )
    assert not get_user_model().objects.filter(username="alice").exists()


@pytest.mark.parametrize("name", ["-lead", "trail.", "a..b", "a--b", "with space", XSS])
def test_a_bad_hugging_face_username_is_refused_and_echoed_as_text(client, name):
    response = client.post("/signup/", signup_data(hf_username=name))
    assert response.status_code == 200
    assert field_errors(response, "hf_username") == [
        "A Hugging Face username is letters, digits, '-', '_' and '.', starting and ending "
        "with a letter or digit."
    ]
    assert not get_user_model().objects.filter(username="alice").exists()
    page = response.content.decode()
    assert "<img src=x" not in page
    if name == XSS:
        assert XSS_ESCAPED in page


@pytest.mark.parametrize("name", ["", "user", "A.b-c_9", "x" * 96])
def test_good_hugging_face_usernames_are_taken(client, name):
    response = client.post("/signup/", signup_data(hf_username=name))
    assert response.status_code == 302
    assert Profile.objects.get(user__username="alice").hf_username == name


def test_passwords_that_differ_or_are_weak_are_refused(client):
    response = client.post("/signup/", signup_data(password2=PASSWORD + "x"))
    assert field_errors(response, "password2") == ["The two password fields didn\u2019t match."]
    response = client.post("/signup/", signup_data(password1="password", password2="password"))
    assert "This password is too common." in field_errors(response, "password2")
    assert not get_user_model().objects.filter(username="alice").exists()


def test_a_missing_email_is_refused(client):
    response = client.post("/signup/", signup_data(email=""))
    assert field_errors(response, "email") == ["This field is required."]
    assert not get_user_model().objects.filter(username="alice").exists()


def test_sign_up_creates_both_rows_or_neither(monkeypatch):
    # Another sign-up took the handle between the check and the insert: no user is left over.
    UserFactory(username="bob")
    monkeypatch.setattr(accounts, "handle_taken", lambda handle, exclude_user=None: False)
    with pytest.raises(ServiceError) as caught:
        sign_up(username="alice", email="a@example.org", password=PASSWORD, handle="bob")
    assert caught.value.code == "handle_taken"
    assert not get_user_model().objects.filter(username="alice").exists()


def test_the_sign_up_service_checks_what_the_form_checks():
    with pytest.raises(ServiceError) as caught:
        sign_up(username="alice", email="a@example.org", password=PASSWORD, handle="Admin")
    assert caught.value.code == "invalid_handle"
    with pytest.raises(ServiceError) as caught:
        sign_up(
            username="alice",
            email="a@example.org",
            password=PASSWORD,
            handle="ok",
            hf_username="a..b",
        )
    assert caught.value.code == "invalid_hf_username"
    UserFactory(username="Alice")
    with pytest.raises(ServiceError) as caught:
        sign_up(username="alice", email="a@example.org", password=PASSWORD, handle="ok")
    assert caught.value.code == "username_taken"
    assert not Profile.objects.filter(handle="ok").exists()


def test_a_logged_in_user_is_sent_from_sign_up_to_the_profile(client):
    client.force_login(UserFactory(username="alice"))
    assert client.get("/signup/")["Location"] == "/me/"


# --- log in, log out -------------------------------------------------------------------------


def test_log_in_and_log_out(client):
    user = user_with_password()
    page = client.get("/login/").content.decode()
    assert '<label for="id_username">Username:</label>' in page
    assert '<label for="id_password">Password:</label>' in page
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/me/"
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.get("/logout/").status_code == 405  # a link cannot log anyone out
    assert client.session["_auth_user_id"] == str(user.pk)
    response = client.post("/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "_auth_user_id" not in client.session
    assert client.get("/me/")["Location"] == "/login/?next=/me/"


def test_log_in_follows_next_within_the_site_only(client):
    user_with_password()
    response = client.post("/login/?next=/me/tokens/", {"username": "alice", "password": PASSWORD})
    assert response["Location"] == "/me/tokens/"
    client.post("/logout/")
    response = client.post(
        "/login/?next=https://evil.example/", {"username": "alice", "password": PASSWORD}
    )
    assert response["Location"] == "/me/"


def test_a_wrong_password_is_refused_with_the_form_again(client):
    user_with_password()
    response = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_login_page_locks_out_after_too_many_wrong_passwords(client, settings):
    user_with_password()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "alice", "password": "wrong"})
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


# --- password reset --------------------------------------------------------------------------


def test_password_reset_mails_a_link_that_sets_a_new_password(client):
    user = user_with_password(email="alice@example.org")
    page = client.get("/password-reset/").content.decode()
    assert '<label for="id_email">Email:</label>' in page
    response = client.post("/password-reset/", {"email": "alice@example.org"})
    assert response["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.org"]
    assert message.subject == "Reset your Thinkpool password"
    link = re.search(r"http://testserver(/reset/[^/\s]+/[^/\s]+/)", str(message.body))
    assert link is not None
    response = client.get(link.group(1))
    assert response.status_code == 302  # to the same page without the token in the URL
    form_url = response["Location"]
    assert form_url.endswith("/set-password/")
    assert "New password" in client.get(form_url).content.decode()
    new = "a brand new passphrase 77"
    response = client.post(form_url, {"new_password1": new, "new_password2": new})
    assert response["Location"] == "/reset/done/"
    user.refresh_from_db()
    assert user.check_password(new)
    # The link worked once.
    response = client.get(link.group(1), follow=True)
    assert "This link is not valid" in response.content.decode()


def test_password_reset_for_an_unknown_address_sends_nothing_and_says_the_same(client):
    user_with_password(email="alice@example.org")
    response = client.post("/password-reset/", {"email": "nobody@example.org"})
    assert response["Location"] == "/password-reset/sent/"
    assert mail.outbox == []


# --- profile ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/me/", "/me/tokens/", "/me/nodes/", "/me/samples/"])
def test_the_contributor_pages_need_a_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


def test_the_profile_is_edited_through_its_form():
    user = UserFactory(username="alice")
    client = logged_in(user)
    page = client.get("/me/").content.decode()
    assert 'value="alice"' in page  # the handle, filled in
    response = client.post("/me/", {"handle": "Alice_2", "hf_username": "alice-hf"})
    assert response["Location"] == "/me/"
    profile = Profile.objects.get(user=user)
    assert (profile.handle, profile.hf_username, profile.public_attribution) == (
        "Alice_2",
        "alice-hf",
        False,
    )
    # Only the letter case of one's own handle: still one's own.
    response = client.post("/me/", {"handle": "alice_2", "public_attribution": "on"})
    assert response["Location"] == "/me/"
    profile.refresh_from_db()
    assert (profile.handle, profile.hf_username, profile.public_attribution) == (
        "alice_2",
        "",
        True,
    )


def test_a_profile_cannot_take_another_handle_or_a_reserved_one():
    UserFactory(username="bob")
    user = UserFactory(username="alice")
    client = logged_in(user)
    response = client.post("/me/", {"handle": "BOB"})
    assert field_errors(response, "handle") == ["This handle is taken; choose another."]
    response = client.post("/me/", {"handle": "anonymous"})
    assert field_errors(response, "handle") == ["This handle is reserved; choose another."]
    response = client.post("/me/", {"handle": "ok", "hf_username": XSS})
    assert len(field_errors(response, "hf_username")) == 1
    assert XSS_ESCAPED in response.content.decode()
    assert "<img src=x" not in response.content.decode()
    assert Profile.objects.get(user=user).handle == "alice"


def test_the_profile_summary_splits_by_status_only_closed_prompts():
    user = UserFactory(username="alice")
    open_prompt, closed = PromptFactory(), closed_prompt()
    make_sample(user, open_prompt, status=SampleStatus.VERIFIED)
    make_sample(user, open_prompt, status=SampleStatus.REJECTED, status_reason="math: fail")
    make_sample(user, closed, status=SampleStatus.REJECTED, status_reason="format: fail")
    make_sample(user, closed, status=SampleStatus.VERIFIED)
    page = text(logged_in(user).get("/me/"))
    assert "4 samples uploaded" in page
    assert (
        '<th scope="row">awaiting disclosure (prompt still open)</th><td class="num">2</td>'
    ) in page
    assert '<th scope="row">verified</th><td class="num">1</td>' in page
    assert '<th scope="row">rejected</th><td class="num">1</td>' in page
    assert "format: fail: 1" in page
    assert "math: fail" not in page  # the open prompt's reason waits for the close


# --- tokens ----------------------------------------------------------------------------------


def new_token(client: Client, name: str = "gpu-box") -> tuple[Any, str]:
    response = client.post("/me/tokens/", {"name": name})
    assert response.status_code == 200
    found = re.search(r'<code id="new-token">([^<]+)</code>', response.content.decode())
    assert found is not None
    return response, found.group(1)


def test_a_new_token_is_shown_once_and_only_its_digest_is_stored():
    user = UserFactory(username="alice")
    client = logged_in(user)
    response, raw = new_token(client)
    page = response.content.decode()
    assert raw.startswith("tp_")
    assert 'data-copy="#new-token"' in page
    assert f"thinkpool-worker login --server http://testserver --token {raw}" in page
    assert response["Cache-Control"].startswith("max-age=0")
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(user=user)
    assert token.digest == hash_token(raw)
    assert (token.name, token.prefix) == ("gpu-box", raw[:10])
    stored = [str(v) for v in ApiToken.objects.values_list(flat=False).get()]
    assert raw not in stored
    assert all(raw not in str(value) for value in client.session.values())
    again = client.get("/me/tokens/").content.decode()
    assert raw not in again
    assert f"<code>{raw[:10]}…</code>" in again
    assert "gpu-box" in again


def test_the_new_token_works_on_the_api():
    client = logged_in(UserFactory(username="alice"))
    _, raw = new_token(client)
    response = Client().get("/api/v1/nodes/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    assert response.json() == []


def test_a_token_needs_a_name():
    user = UserFactory(username="alice")
    response = logged_in(user).post("/me/tokens/", {"name": ""})
    assert field_errors(response, "name") == ["This field is required."]
    assert 'id="new-token"' not in response.content.decode()
    assert not ApiToken.objects.filter(user=user).exists()


def test_a_token_name_renders_as_text():
    client = logged_in(UserFactory(username="alice"))
    new_token(client, name=XSS)
    page = client.get("/me/tokens/").content.decode()
    assert f'<td class="token-name">{XSS_ESCAPED}</td>' in page
    assert "<img src=x" not in page
    assert f"({XSS_ESCAPED})? Workers using it stop working." in page  # the confirm text


def test_the_token_list_shows_only_ones_own_tokens():
    user = UserFactory(username="alice")
    issue_token(user=UserFactory(username="mallory"), name="mallorys-token")
    issue_token(user=user, name="mine")
    page = logged_in(user).get("/me/tokens/").content.decode()
    assert "mine" in page
    assert "mallorys-token" not in page


def test_revoking_ones_own_token_and_again_is_harmless():
    user = UserFactory(username="alice")
    token, _ = issue_token(user=user, name="old")
    client = logged_in(user)
    assert client.get(f"/me/tokens/{token.pk}/revoke/").status_code == 405
    response = client.post(f"/me/tokens/{token.pk}/revoke/")
    assert response["Location"] == "/me/tokens/"
    token.refresh_from_db()
    revoked_at = token.revoked_at
    assert revoked_at is not None
    response = client.post(f"/me/tokens/{token.pk}/revoke/")
    assert response["Location"] == "/me/tokens/"
    token.refresh_from_db()
    assert token.revoked_at == revoked_at
    page = text(client.get("/me/tokens/"))
    assert '<span class="badge rejected">revoked</span>' in page
    assert f"/me/tokens/{token.pk}/revoke/" not in page


def test_another_users_token_cannot_be_revoked():
    token, raw = issue_token(user=UserFactory(username="mallory"), name="theirs")
    client = logged_in(UserFactory(username="alice"))
    assert client.post(f"/me/tokens/{token.pk}/revoke/").status_code == 404
    assert client.post("/me/tokens/999999/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.is_live
    response = Client().get("/api/v1/nodes/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200


# --- nodes -----------------------------------------------------------------------------------


def test_the_nodes_page_shows_only_own_nodes_with_disclosure_safe_counts():
    user = UserFactory(username="alice")
    box = NodeFactory(
        owner=user,
        name="box",
        models_served=[{"id": "org/model-a", "revision": "r1"}, {"id": "org/model-b"}],
        last_heartbeat=timezone.now(),
    )
    NodeFactory(owner=UserFactory(username="mallory"), name="mallory-box")
    open_prompt, closed = PromptFactory(), closed_prompt()
    make_sample(user, open_prompt, node=box, status=SampleStatus.VERIFIED)
    make_sample(user, open_prompt, node=box, status=SampleStatus.REJECTED)
    make_sample(user, closed, node=box, status=SampleStatus.VERIFIED)
    make_sample(user, closed, node=box, status=SampleStatus.VERIFIED)
    old = make_sample(user, closed, node=box, status=SampleStatus.REJECTED)
    Sample.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(hours=25))
    make_sample(user, closed, node=None, status=SampleStatus.REJECTED)  # from no node

    [row] = node_overview(user=user)
    assert {k: row[k] for k in row if k not in ("id", "last_heartbeat")} == {
        "name": "box",
        "backend": "openai",
        "status": "idle",
        "models": [
            {"id": "org/model-a", "revision": "r1"},
            {"id": "org/model-b", "revision": ""},
        ],
        "samples_last_day": 4,
        "samples_per_hour": 0.2,
        "accepted": 2,
        "rejected": 1,
        "awaiting_disclosure": 2,
        "total": 5,
    }
    page = text(logged_in(user).get("/me/nodes/"))
    assert '<th scope="row" class="node-name">box</th> <td>openai</td>' in page
    assert '<span class="badge node-idle">idle</span>' in page
    assert '<code>org/model-a</code> <span class="muted">@ r1</span>' in page
    assert (
        '<td class="num">0.2</td> <td class="num">2</td> <td class="num">1</td> '
        '<td class="num">2</td>'
    ) in page
    assert "mallory-box" not in page


def test_judging_an_open_prompts_sample_moves_no_number_on_the_nodes_page():
    user = UserFactory(username="alice")
    box = NodeFactory(owner=user, name="box")
    sample = make_sample(user, PromptFactory(), node=box, status=SampleStatus.RECEIVED)
    client = logged_in(user)
    before = main(client.get("/me/nodes/"))
    assert '<td class="num">1</td> </tr>' in before  # awaiting disclosure, the last column
    Sample.objects.filter(pk=sample.pk).update(status=SampleStatus.VERIFIED)
    assert main(client.get("/me/nodes/")) == before
    Sample.objects.filter(pk=sample.pk).update(status=SampleStatus.REJECTED)
    assert main(client.get("/me/nodes/")) == before


def test_a_node_without_heartbeat_or_samples_reads_never_and_zero():
    user = UserFactory(username="alice")
    NodeFactory(owner=user, name="fresh", last_heartbeat=None)
    page = text(logged_in(user).get("/me/nodes/"))
    assert '<span class="muted">never</span>' in page
    assert (
        '<td class="num">0.0</td> <td class="num">0</td> <td class="num">0</td> '
        '<td class="num">0</td>'
    ) in page


# --- my samples ------------------------------------------------------------------------------

GOLD = "QZX-7781-GOLD"


def test_my_samples_shows_awaiting_disclosure_for_open_prompts_and_never_the_gold():
    user = UserFactory(username="alice")
    open_prompt = PromptFactory(gold=GOLD)
    closed = closed_prompt(gold=GOLD)
    make_sample(user, open_prompt, status=SampleStatus.VERIFIED, status_reason="math: pass")
    rejected = make_sample(
        user, closed, status=SampleStatus.REJECTED, status_reason="math: wrong answer"
    )
    Verdict.objects.create(
        sample=rejected,
        verifier="math",
        version=1,
        status="fail",
        score=0.25,
        details={"expected": GOLD, "note": "VERDICT-DETAIL-TEXT"},
    )
    make_sample(user, PromptFactory(), status=SampleStatus.RECEIVED)
    make_sample(UserFactory(username="mallory"), open_prompt, model="org/mallorys-model")
    response = logged_in(user).get("/me/samples/")
    page = text(response)
    assert GOLD not in page
    assert "VERDICT-DETAIL-TEXT" not in page and "0.25" not in page
    assert "org/mallorys-model" not in page
    assert "3 samples." in page
    assert page.count('<span class="badge awaiting_disclosure">awaiting_disclosure</span>') == 2
    assert "math: pass" not in page  # the open prompt's real reason waits
    assert (
        f'<td>{closed.pk}</td> <td><code>org/model-a</code> <span class="muted">@ abc123</span>'
        '</td> <td class="num">0.6</td>'
    ) in page
    assert (
        '<span class="badge rejected">rejected</span></td> '
        '<td class="reason">math: wrong answer</td>'
    ) in page
    assert "correctness is disclosed when the prompt closes" in page


def test_my_samples_filters_by_status_within_the_disclosure_policy():
    user = UserFactory(username="alice")
    open_prompt, closed = PromptFactory(), closed_prompt()
    make_sample(user, open_prompt, status=SampleStatus.VERIFIED)
    make_sample(user, closed, status=SampleStatus.VERIFIED)
    make_sample(user, closed, status=SampleStatus.REJECTED)
    client = logged_in(user)
    assert "2 samples with status awaiting_disclosure" not in text(
        client.get("/me/samples/?status=awaiting_disclosure")
    )
    page = text(client.get("/me/samples/?status=awaiting_disclosure"))
    assert "1 sample with status awaiting_disclosure." in page
    page = text(client.get("/me/samples/?status=verified"))
    assert "1 sample with status verified." in page  # the open prompt's is not among them
    assert f"<td>{open_prompt.pk}</td>" not in page
    page = text(client.get("/me/samples/?status=rejected"))
    assert "1 sample with status rejected." in page
    response = client.get("/me/samples/?status=bogus")
    assert response.status_code == 200
    assert "3 samples." in text(response)
    assert "Select a valid choice." in text(response)


def test_my_samples_are_paginated_fifty_to_a_page():
    user = UserFactory(username="alice")
    prompt = PromptFactory()
    for _ in range(51):
        make_sample(user, prompt)
    client = logged_in(user)
    first = text(client.get("/me/samples/"))
    assert first.count('<td class="reason">') == 50
    assert "Page 1 of 2" in first and '<a href="?page=2" rel="next">Next</a>' in first
    second = text(client.get("/me/samples/?page=2"))
    assert second.count('<td class="reason">') == 1
    assert '<a href="?page=1" rel="prev">Previous</a>' in second
    assert client.get("/me/samples/?page=3").status_code == 404
    # A page past any a person pages through is refused before the database is asked.
    assert client.get("/me/samples/?page=2001").status_code == 404
    assert client.get("/me/samples/?page=99999999999999999999").status_code == 404
    assert text(client.get("/me/samples/?page=abc")).count('<td class="reason">') == 50
    filtered = text(client.get("/me/samples/?status=awaiting_disclosure"))
    assert '<a href="?status=awaiting_disclosure&amp;page=2" rel="next">Next</a>' in filtered


def test_my_samples_with_none_yet():
    page = text(logged_in(UserFactory(username="alice")).get("/me/samples/"))
    assert "0 samples." in page
    assert "<table" not in page


def test_password_reset_mails_one_address_at_most_three_times_an_hour(client):
    from django.core import mail

    UserFactory(username="victim", email="victim@example.org")
    for _ in range(5):
        response = client.post("/password-reset/", {"email": "Victim@example.org"})
        # The same answer whether or not a mail went: the page never tells.
        assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 3
    assert {m.to[0] for m in mail.outbox} == {"victim@example.org"}


def test_sign_ups_from_one_address_are_limited(client, monkeypatch):
    from django.contrib.auth import get_user_model

    from thinkpool.web import account

    monkeypatch.setattr(account, "SIGNUPS_PER_ADDRESS", 2)

    def form(n: int) -> dict[str, str]:
        return {
            "username": f"user{n}",
            "email": f"user{n}@example.org",
            "password1": "correct horse battery staple 42",
            "password2": "correct horse battery staple 42",
            "handle": f"user{n}",
            "hf_username": "",
        }

    for n in range(2):
        assert client.post("/signup/", form(n)).status_code == 302
        client.logout()
    refused = client.post("/signup/", form(2))
    assert refused.status_code == 429
    assert "Too many accounts" in refused.content.decode()
    assert not get_user_model().objects.filter(username="user2").exists()


def test_the_nodes_page_costs_the_same_queries_for_one_node_or_thirty():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = UserFactory(username="alice")
    client = logged_in(user)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/me/nodes/").status_code == 200
        return len(captured)

    NodeFactory(owner=user, name="box-0", last_heartbeat=timezone.now())
    one = queries()
    for n in range(1, 30):
        NodeFactory(owner=user, name=f"box-{n}", last_heartbeat=timezone.now())
    assert queries() == one

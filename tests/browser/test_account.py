"""A contributor's pages in a real browser: sign up, create a token, register a node with it
through the real API, see the node; every page checked by axe; untrusted text stays text."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from django.utils import timezone

from contributors.models import ApiToken, SampleOrigin, hash_token
from scoring.models import Prompt, Sample, SampleStatus
from tests import factories
from tests.browser.conftest import PASSWORD, assert_accessible, log_in

pytestmark = pytest.mark.django_db(transaction=True)

# factory_boy classes: calling one returns a model instance, which mypy cannot tell.
PromptFactory: Any = factories.PromptFactory
UserFactory: Any = factories.UserFactory

XSS = "<img src=x onerror=alert(1)>"


def sign_up(page: Any, live_server: Any, *, username: str, hf_username: str = "") -> None:
    page.goto(f"{live_server.url}/signup/")
    page.get_by_label("Username:", exact=True).fill(username)
    page.get_by_label("Email address:", exact=True).fill(f"{username}@example.org")
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation:", exact=True).fill(PASSWORD)
    page.get_by_label("Handle:", exact=True).fill(f"{username}-h")
    page.get_by_label("Hugging Face username:", exact=True).fill(hf_username)
    page.get_by_role("button", name="Sign up", exact=True).click()
    page.wait_for_load_state()


def test_sign_up_create_a_token_register_a_node_and_see_it(live_server, page):
    page.goto(f"{live_server.url}/signup/")
    assert_accessible(page, "account-signup")
    sign_up(page, live_server, username="alice", hf_username="alice-hf")
    assert page.url == f"{live_server.url}/me/"
    assert page.get_by_role("heading", name="Your profile", exact=True).is_visible()
    assert page.get_by_text("credited as alice-h").is_visible()

    # A token, shown once, with a copy button and the worker command.
    page.get_by_role("link", name="Tokens", exact=True).click()
    page.get_by_label("Token name:", exact=True).fill("gpu-box-1")
    page.get_by_role("button", name="Create token").click()
    page.wait_for_load_state()
    raw = page.locator("#new-token").inner_text().strip()
    assert re.fullmatch(r"tp_[A-Za-z0-9_-]{43}", raw)
    assert page.get_by_role("button", name="Copy token").get_attribute("data-copy") == "#new-token"
    assert f"--token {raw}" in page.locator("#worker-command").inner_text()
    assert ApiToken.objects.get(user__username="alice").digest == hash_token(raw)
    assert_accessible(page, "account-tokens")

    # The worker registers its node through the real API with that token.
    response = httpx.post(
        f"{live_server.url}/api/v1/nodes/",
        headers={"Authorization": f"Bearer {raw}"},
        json={
            "name": "gpu-box-1",
            "backend": "vllm",
            "models": [{"id": "Qwen/Qwen3-8B", "revision": "main"}],
            "hardware": {"gpus": 1},
            "worker_version": "0.1.0",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text

    page.get_by_role("link", name="Nodes", exact=True).click()
    page.wait_for_load_state()
    row = page.get_by_role("row").filter(has_text="gpu-box-1")
    assert row.count() == 1
    cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
    assert cells[:3] == ["gpu-box-1", "vllm", "idle"]
    assert cells[4] == "Qwen/Qwen3-8B @ main"
    assert cells[5:] == ["0.0", "0", "0", "0"]
    assert_accessible(page, "account-nodes")

    # Samples: one of an open prompt (awaiting disclosure), one of a closed one (its reason).
    user = ApiToken.objects.get(digest=hash_token(raw)).user
    closed = PromptFactory()
    Prompt.objects.filter(pk=closed.pk).update(closed_at=timezone.now())
    for prompt, status, reason in [
        (PromptFactory(), SampleStatus.VERIFIED, ""),
        (closed, SampleStatus.REJECTED, "math: wrong answer"),
    ]:
        sample = Sample.objects.create(
            prompt=prompt,
            contributor=user,
            model="Qwen/Qwen3-8B",
            temperature=0.6,
            completion="The answer is 4.",
            finish_reason="stop",
            status=status,
            status_reason=reason,
        )
        SampleOrigin.objects.create(sample=sample)
    page.get_by_role("link", name="My samples", exact=True).click()
    page.wait_for_load_state()
    statuses = page.locator("table.my-samples td .badge").all_inner_texts()
    assert statuses == ["rejected", "awaiting_disclosure"]
    assert page.get_by_text("math: wrong answer").is_visible()
    assert_accessible(page, "account-my-samples")

    page.get_by_role("link", name="alice", exact=True).click()
    page.wait_for_load_state()
    assert_accessible(page, "account-profile")

    # Revoke the token: the browser asks first, then the API refuses the token.
    page.goto(f"{live_server.url}/me/tokens/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=re.compile("^Revoke token")).click()
    page.wait_for_load_state()
    assert page.locator("table.tokens .badge").inner_text() == "revoked"
    refused = httpx.get(
        f"{live_server.url}/api/v1/nodes/", headers={"Authorization": f"Bearer {raw}"}
    )
    assert refused.status_code == 401

    # Log out (a POST from the header), then the login page and logging back in.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_load_state()
    assert page.url == f"{live_server.url}/"
    page.goto(f"{live_server.url}/login/")
    assert_accessible(page, "account-login")
    log_in(page, live_server, "alice")
    assert page.url == f"{live_server.url}/me/"


def test_a_revoke_dismissed_in_the_dialog_keeps_the_token(live_server, page):
    user = UserFactory(username="bob")
    user.set_password(PASSWORD)
    user.save()
    log_in(page, live_server, "bob")
    page.goto(f"{live_server.url}/me/tokens/")
    page.get_by_label("Token name:", exact=True).fill("keep-me")
    page.get_by_role("button", name="Create token").click()
    page.wait_for_load_state()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name=re.compile("^Revoke token")).click()
    assert page.locator("table.tokens .badge").inner_text() == "live"
    assert ApiToken.objects.get(user=user).is_live


def test_untrusted_names_render_as_text(live_server, page):
    dialogs: list[str] = []

    def refuse(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)

    # A Hugging Face username with markup: refused, and shown back as the text typed.
    sign_up(page, live_server, username="carol", hf_username=XSS)
    assert page.url == f"{live_server.url}/signup/"
    assert page.get_by_label("Hugging Face username:", exact=True).input_value() == XSS
    assert page.get_by_text("A Hugging Face username is letters").is_visible()

    # A token named with markup: listed as text, in the table and in the confirm message.
    sign_up(page, live_server, username="carol")
    page.goto(f"{live_server.url}/me/tokens/")
    page.get_by_label("Token name:", exact=True).fill(XSS)
    page.get_by_role("button", name="Create token").click()
    page.wait_for_load_state()
    assert page.locator("table.tokens td.token-name").inner_text() == XSS
    assert page.locator("table.tokens img").count() == 0
    assert XSS in page.locator("form[data-confirm]").get_attribute("data-confirm")
    assert dialogs == []

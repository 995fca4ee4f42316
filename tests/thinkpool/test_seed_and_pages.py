from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from contributors.models import ApiToken, Bounty
from scoring.models import Prompt, PromptSet
from tests.factories import PromptSetFactory

pytestmark = pytest.mark.django_db


def seed(settings, tmp_path) -> dict:
    settings.VAR_DIR = tmp_path
    settings.DEBUG = True  # seed_demo refuses to run without it
    out = StringIO()
    call_command("seed_demo", "--prompts", "30", stdout=out)
    return json.loads(out.getvalue())


def test_seed_demo_is_idempotent_and_its_token_works(settings, tmp_path, client):
    first = seed(settings, tmp_path)
    second = seed(settings, tmp_path)
    assert first["demo_token"] == second["demo_token"]
    assert first["prompts_added"] == 30 and second["prompts_added"] == 0
    assert Prompt.objects.count() == 30
    assert PromptSet.objects.count() == 1 and Bounty.objects.count() == 1
    assert ApiToken.objects.filter(user__username="demo").count() == 1
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {first['demo_token']}")
    assert response.json()["username"] == "demo"
    assert (tmp_path / "demo-token").stat().st_mode & 0o777 == 0o600


def test_admin_logs_in_with_the_seeded_password(settings, tmp_path, client):
    info = seed(settings, tmp_path)
    assert client.login(username="admin", password=info["admin"]["password"])
    assert client.get("/admin/scoring/promptset/").status_code == 200
    assert client.get("/admin/scoring/sample/").status_code == 200
    assert client.get("/admin/contributors/lease/").status_code == 200


def test_home_page_shows_progress(client, settings, tmp_path):
    seed(settings, tmp_path)
    response = client.get("/")
    assert response.status_code == 200
    assert b"<th>Prompts</th><td>30</td>" in response.content


def test_tokens_are_stored_hashed(settings, tmp_path):
    info = seed(settings, tmp_path)
    token = ApiToken.objects.get(user__username="demo")
    assert info["demo_token"] not in (token.digest, token.prefix)
    assert len(token.digest) == 64


def test_untrusted_names_are_escaped_in_admin(admin_client):
    PromptSetFactory(name="x", description="<script>alert(1)</script>")
    PromptSetFactory(name="y", license="<img src=x onerror=alert(1)>")
    response = admin_client.get("/admin/scoring/promptset/")
    assert b"<img src=x onerror" not in response.content
    assert b"&lt;img src=x onerror=alert(1)&gt;" in response.content

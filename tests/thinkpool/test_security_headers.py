"""The site's security headers: a Content-Security-Policy with no inline script or style on
every page, and the headers `check --deploy` asks for (their production values are checked by
test_first_hour's check --deploy test)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

PAGES = ["/", "/admin/login/", "/api/docs/", "/no-such-page/"]


def _directives(header: str) -> dict[str, list[str]]:
    parts = [p.strip().split() for p in header.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_a_policy_without_inline_script_or_style(client, path):
    response = client.get(path)
    policy = _directives(response.headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_api_docs_page_loads_its_setup_script_from_a_url_not_inline(client):
    page = client.get("/api/docs/").content.decode()
    # Every <script> has a src, and no <style> block is left.
    assert "<script>" not in page and "<style>" not in page
    assert "?script=" in page
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()

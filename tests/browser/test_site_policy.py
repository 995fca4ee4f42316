"""Pages the site does not template itself (Django's admin, Swagger UI) run under the
Content-Security-Policy too: the `page` fixture fails the test on any refused script or style."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_api_docs_render_their_operations_under_the_policy(live_server, page):
    page.goto(live_server.url + "/api/docs/")
    # Swagger UI builds the page from the schema with its script: the operations appear only
    # if that script ran.
    page.get_by_text("/api/v1/nodes/").first.wait_for(timeout=15000)


def test_admin_login_renders_under_the_policy(live_server, page):
    response = page.goto(live_server.url + "/admin/login/")
    assert response is not None and response.status == 200
    assert page.get_by_label("Username:").is_visible()

"""The public home page in a real browser."""

from __future__ import annotations

import pytest

from tests.browser.conftest import accessibility_problems, screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_home_renders_and_has_no_serious_accessibility_problems(live_server, page):
    response = page.goto(live_server.url + "/")
    assert response is not None and response.status == 200
    assert page.locator("h1").first.is_visible()
    assert screenshot(page, "home").stat().st_size > 0
    assert accessibility_problems(page) == []

"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium; Playwright's own
browser download cannot work here) against pytest-django's live server, with axe-core
(bundled by axe-playwright-python, no network) checking each page's accessibility.

Screenshots go to var/screenshots/ (THINKPOOL_SCREENSHOTS to move them) for review.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("THINKPOOL_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(
    os.environ.get("THINKPOOL_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / "var" / "screenshots"
)
# Headless, as root in CI, on a machine with no network: without the background-networking
# flags Chromium keeps trying (and failing) to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
SERIOUS = {"serious", "critical"}

# Playwright's sync API runs an event loop in this thread, which Django takes for an async
# context and then refuses database calls from it (the test's own setup and teardown). The
# live server answers requests in threads of its own, which this does not concern.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    # Every page must run under the Content-Security-Policy: a refused inline script or style
    # is a bug in the page, whichever test meets it.
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert refused == [], refused


def accessibility_problems(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page, as 'rule: target' lines."""
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {', '.join(str(n['target']) for n in v['nodes'])}"
        for v in result.response["violations"]
        if v.get("impact") in SERIOUS
    ]


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


PASSWORD = "correct horse battery staple 42"


def log_in(page: Any, live_server: Any, username: str, password: str = PASSWORD) -> None:
    """Logs `username` in through the site's login form (the real flow, not a cookie)."""
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def assert_accessible(page: Any, name: str) -> None:
    """Saves a screenshot of the page as `name` and asserts axe finds no serious or critical
    violation (and none at phone width either)."""
    screenshot(page, name)
    problems = accessibility_problems(page)
    assert problems == [], problems
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, f"{name}-phone")
    problems = accessibility_problems(page)
    page.set_viewport_size({"width": 1280, "height": 900})
    assert problems == [], problems

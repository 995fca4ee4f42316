"""The public dataset pages in a real browser: each is accessible (axe, also at phone width),
runs under the Content-Security-Policy, and a sample full of markup renders as inert text."""

from __future__ import annotations

from typing import Any

import pytest

from scoring.models import Prompt
from tests.browser.conftest import assert_accessible
from tests.thinkpool.test_dataset_pages import MATH_XSS, XSS, build_world

pytestmark = pytest.mark.django_db(transaction=True)

# Evaluated in the page: anything the payloads could have made live.
LIVE_MARKUP = """() => ({
  pwned: typeof window.__pwned,
  inlineScripts: [...document.querySelectorAll("script")].filter((s) => !s.src).length,
  images: document.querySelectorAll("img").length,
  handlers: [...document.querySelectorAll("*")].filter((el) =>
    [...el.attributes].some((a) => a.name.startsWith("on"))).length,
  svgs: [...document.querySelectorAll("svg")].filter((s) => !s.classList.contains("chart")).length,
})"""


def assert_inert(page: Any) -> None:
    assert page.evaluate(LIVE_MARKUP) == {
        "pwned": "undefined",
        "inlineScripts": 0,
        "images": 0,
        "handlers": 0,
        "svgs": 0,
    }


def test_every_dataset_page_is_accessible(live_server, page):
    world = build_world()
    pages = {
        "dataset-home": "/",
        "dataset-sets": "/sets/",
        "dataset-set": "/sets/arith/",
        "dataset-samples": "/samples/",
        "dataset-sample": f"/samples/{world.samples['s1'].pk}/",
        "dataset-releases": "/releases/",
    }
    for name, url in pages.items():
        response = page.goto(live_server.url + url)
        assert response is not None and response.status == 200, url
        assert page.locator("h1").first.is_visible()
        assert_accessible(page, name)
        assert_inert(page)


def test_the_home_page_shows_the_chart_and_progress(live_server, page):
    build_world()
    page.goto(live_server.url + "/")
    chart = page.get_by_role("img", name="Samples stored per day, last 30 days")
    assert chart.is_visible()
    assert page.locator("svg.chart rect.bar").count() == 30
    bar = page.get_by_label("arith: 4 of 16 verified")
    assert bar.get_attribute("value") == "4" and bar.get_attribute("max") == "16"
    page.get_by_role("link", name="arith").first.click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "arith"


def test_a_sample_full_of_markup_renders_as_visible_text(live_server, page):
    world = build_world()
    Prompt.objects.filter(pk=world.prompts["pub1"].pk).update(
        messages=[{"role": "user", "content": f"{XSS} {MATH_XSS}"}]
    )
    page.goto(live_server.url + "/samples/")
    assert_inert(page)
    snippet = page.locator(
        f"section[aria-labelledby='prompt-{world.prompts['pub1'].pk}'] p.snippet"
    )
    assert snippet.inner_text().startswith(f"{XSS} {MATH_XSS}"[:80])

    page.goto(f"{live_server.url}/samples/{world.samples['s1'].pk}/")
    assert_inert(page)
    # The reasoning is folded until asked for.
    reasoning = page.locator("details.reasoning")
    assert reasoning.get_attribute("open") is None
    page.get_by_text("Reasoning", exact=True).click()
    assert reasoning.get_attribute("open") == ""
    text = page.locator("main").inner_text()
    assert '<img src=x onerror="window.__pwned=1">' in text
    assert '"><svg onload=alert(1)>' in text
    assert r"$\text{<img src=x onerror=window.__pwned=1>}$" in text  # left as source
    # $$\frac{a}{b}$$ in the reasoning and $x^2$ in the answer; the rest stays source.
    assert page.locator("main math").count() == 2
    assert_inert(page)


def test_the_explorer_groups_samples_by_prompt_and_pages(live_server, page):
    world = build_world()
    p, s = world.prompts, world.samples
    page.goto(live_server.url + "/samples/")
    headings = page.locator("section.explorer-prompt h2").all_inner_texts()
    assert headings == [
        f"Prompt {p['snip'].pk} in snippets",
        f"Prompt {p['pub2'].pk} in arith",
        f"Prompt {p['pub1'].pk} in arith",
    ]
    group = page.get_by_role("region", name=f"Samples of prompt {p['pub1'].pk}")
    assert group.get_by_role("link").all_inner_texts() == [f"#{s['s1'].pk}", f"#{s['s2'].pk}"]
    page.get_by_label("Model").select_option("org/model-b")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    assert page.locator("section.explorer-prompt h2").all_inner_texts() == [
        f"Prompt {p['pub2'].pk} in arith"
    ]
    page.get_by_role("link", name=f"#{s['s7'].pk}").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == f"Sample {s['s7'].pk}"

"""The leaderboard and the credit history in a real browser: the order and the points on the
page are what the formula gives, computed here from the samples on their own."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from contributors.models import CreditEntry, Profile
from contributors.services import credit
from scoring import stats
from scoring.models import Prompt, Sample, SampleStatus
from scoring.services import close_prompts
from tests import factories
from tests.browser.conftest import PASSWORD, assert_accessible, log_in

# factory_boy's classes type their instances as the factory: these make models.
PromptFactory: Any = factories.PromptFactory
UserFactory: Any = factories.UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

V, R = SampleStatus.VERIFIED, SampleStatus.REJECTED
PEOPLE = ("alice", "bob", "carol", "dave")
# Per prompt: (who, status, how many, quarantined). "old" is credited ten days ago: in the
# month and all time, not in the week. "open" is never closed: it earns nothing.
PLAN: dict[str, list[tuple[str, str, int, bool]]] = {
    "p1": [
        ("alice", V, 5, False),
        ("bob", V, 2, False),
        ("carol", R, 3, False),
        ("dave", R, 2, False),
    ],
    "p2": [
        ("bob", V, 1, False),
        ("carol", V, 1, False),
        ("dave", V, 1, False),
        ("alice", R, 3, False),
    ],
    "old": [("carol", V, 4, False), ("dave", R, 6, False)],
    "p4": [
        ("dave", V, 2, False),
        ("dave", V, 1, True),
        ("alice", R, 1, False),
        ("bob", R, 2, False),
    ],
    "open": [("dave", V, 4, False), ("alice", V, 4, False)],
}
CLOSED = ("p1", "p2", "old", "p4")


def expected(prompts: tuple[str, ...]) -> dict[str, tuple[float, int]]:
    """Points and verified samples credited per person, from PLAN and the formula as the page
    states it: P * d * min(v, C), v without quarantined ones, d = 1 - the mean over the
    people who judged samples of the prompt of each one's own pass rate (quarantined left out)."""
    p, cap = (
        settings.THINKPOOL_CREDIT["points_per_sample"],
        settings.THINKPOOL_CREDIT["cap_per_prompt"],
    )
    totals = {who: (0.0, 0) for who in PEOPLE}
    for key in prompts:
        rows = PLAN[key]
        rates = []
        for who in PEOPLE:
            judged = sum(n for w, _, n, q in rows if w == who and not q)
            passed = sum(n for w, s, n, q in rows if w == who and s == V and not q)
            if judged:
                rates.append(passed / judged)
        difficulty = 1 - sum(rates) / len(rates)
        for who in PEOPLE:
            v = sum(n for w, s, n, q in rows if w == who and s == V and not q)
            points, verified = totals[who]
            totals[who] = (points + p * difficulty * min(v, cap), verified + min(v, cap))
    return totals


def shown(totals: dict[str, tuple[float, int]]) -> list[list[str]]:
    """The table the page should show: by points, dave as anonymous (his choice)."""
    ranked = sorted(
        ((who, pts, v) for who, (pts, v) in totals.items() if pts > 0 or v > 0),
        key=lambda row: -row[1],
    )
    return [
        [str(rank), "anonymous" if who == "dave" else who, f"{pts:.2f}", str(v)]
        for rank, (who, pts, v) in enumerate(ranked, start=1)
    ]


def build() -> dict[str, Any]:
    users = {who: UserFactory(username=who) for who in PEOPLE}
    for user in users.values():
        user.set_password(PASSWORD)
        user.save()
    Profile.objects.filter(user=users["dave"]).update(public_attribution=False)
    prompts: dict[str, Prompt] = {}
    for k, (key, rows) in enumerate(PLAN.items()):
        prompt = PromptFactory(messages=[{"role": "user", "content": f"Question {k}?"}], gold="4")
        prompts[key] = prompt
        for who, status, n, quarantined in rows:
            for _ in range(n):
                Sample.objects.create(
                    prompt=prompt,
                    contributor=users[who],
                    model="org/m",
                    temperature=0.6,
                    completion="The answer is \\boxed{4}.",
                    finish_reason="stop",
                    status=status,
                    quarantined=quarantined,
                )
    stats.recompute(prompt_ids=[p.pk for p in prompts.values()])
    close_prompts(prompt_ids=[prompts[key].pk for key in CLOSED])
    credit.settle_prompts(prompt_ids=[p.pk for p in prompts.values()])
    CreditEntry.objects.filter(prompt=prompts["old"]).update(at=timezone.now() - timedelta(days=10))
    credit.refresh_leaderboard()
    return users


def table(page: Any) -> list[list[str]]:
    rows = page.locator("table.leaderboard tbody tr")
    return [
        [cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


def test_the_leaderboard_order_and_points_follow_the_formula(live_server, page):
    build()
    week = shown(expected(("p1", "p2", "p4")))
    month = shown(expected(CLOSED))
    # The plan is built so that the old prompt changes the order.
    assert [row[1] for row in week] == ["alice", "anonymous", "bob", "carol"]
    assert [row[1] for row in month] == ["carol", "alice", "anonymous", "bob"]

    response = page.goto(f"{live_server.url}/leaderboard/")
    assert response is not None and response.status == 200
    assert page.get_by_role("heading", name="How credit is earned").is_visible()
    assert "min(" in page.locator("#formula").inner_text()
    assert page.locator("#points-per-sample").inner_text() == str(
        settings.THINKPOOL_CREDIT["points_per_sample"]
    )
    assert page.locator("#cap-per-prompt").inner_text() == str(
        settings.THINKPOOL_CREDIT["cap_per_prompt"]
    )
    assert page.locator("#computed-at").is_visible()
    assert page.get_by_role("link", name="Week").get_attribute("aria-current") == "page"
    assert table(page) == week
    assert_accessible(page, "leaderboard")

    page.get_by_role("link", name="Month").click()
    page.wait_for_load_state()
    assert page.url == f"{live_server.url}/leaderboard/?period=month"
    assert page.get_by_role("link", name="Month").get_attribute("aria-current") == "page"
    assert table(page) == month
    page.get_by_role("link", name="All time").click()
    page.wait_for_load_state()
    assert table(page) == month  # nothing older than a month


def test_a_contributor_sees_their_credit_history(live_server, page):
    build()
    week, month = expected(("p1", "p2", "p4")), expected(CLOSED)
    page.goto(f"{live_server.url}/leaderboard/me/")
    assert "/login/" in page.url  # login required
    log_in(page, live_server, "carol")
    page.goto(f"{live_server.url}/leaderboard/me/")
    assert page.get_by_role("heading", name="Your credit").is_visible()
    totals = page.locator("table.credit-totals tbody tr")
    assert [
        [c.strip() for c in totals.nth(i).locator("th, td").all_inner_texts()] for i in range(3)
    ] == [
        ["Week", f"{week['carol'][0]:.2f}", str(week["carol"][1]), "#4"],
        ["Month", f"{month['carol'][0]:.2f}", str(month["carol"][1]), "#1"],
        ["All time", f"{month['carol'][0]:.2f}", str(month["carol"][1]), "#1"],
    ]
    entries = page.locator("table.credit-history tbody tr")
    assert entries.count() == 2
    newest = [c.strip() for c in entries.nth(0).locator("td").all_inner_texts()]
    assert newest[1:] == ["Samples", newest[2], "+1", f"+{week['carol'][0]:.2f}"]
    assert newest[2].startswith("prompt ")
    assert_accessible(page, "credit-history")

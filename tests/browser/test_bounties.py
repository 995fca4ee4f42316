"""Bounties in a real browser: a data bounty's progress bar moves as samples of closed prompts
are verified (through the scoring pipeline and the disclosed_changed signal, as in production)
and the bounty completes and pays; the claim button; axe on the board and a bounty's page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from contributors.models import Bounty, BountyClaim, BountyKind, BountyStatus, CreditEntry
from scoring import pipeline
from scoring.models import Sample, SampleStatus
from scoring.services import close_prompts
from tests.browser.conftest import PASSWORD, assert_accessible, log_in
from tests.factories import PromptFactory, PromptSetFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Please compute six times seven, and explain it."}]
# Right answers in different words: copies of one text would be flagged as duplicates
# (scoring.selection.mark_duplicates), and duplicates never count toward a bounty.
RIGHT = [
    "<think>We need six times seven. Six groups of seven make forty-two, and checking with "
    "seven groups of six gives the same product, so the result is 42.</think> "
    "So the answer is \\boxed{42}.",
    "<think>Multiplication is repeated addition: adding seven to itself six times gives 7, "
    "14, 21, 28, 35 and finally 42, which settles it.</think> The product is \\boxed{42}.",
    "<think>Start from five sevens, which make thirty-five; one more seven brings the total "
    "to forty-two. Doubling three sevens (21) agrees.</think> Hence \\boxed{42}.",
]


def _sample(prompt: Any, user: Any, n: int = 0) -> Sample:
    return Sample.objects.create(
        prompt=prompt,
        contributor=user,
        model="org/model-a",
        temperature=0.6,
        completion=RIGHT[n],
        finish_reason="stop",
    )


def _bar(page: Any) -> Any:
    return page.get_by_role("progressbar", name="Progress: Verify the arithmetic set")


def _reload(page: Any) -> None:
    page.reload()
    page.wait_for_load_state()


def test_a_data_bounty_progress_bar_moves_as_samples_are_verified_and_it_completes(
    live_server, page
):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    prompt_set = PromptSetFactory(name="arith")
    bounty = Bounty.objects.create(
        title="Verify the arithmetic set",
        description="Three verified samples.\nAny model.",
        kind=BountyKind.DATA,
        prompt_set=prompt_set,
        target_verified=3,
        reward_points=90,
        sponsor_prize="a GPU-hour voucher",
        created_at=timezone.now() - timedelta(minutes=1),
    )
    still_open = PromptFactory(prompt_set=prompt_set, messages=QUESTION, gold="42")
    closed = PromptFactory(
        prompt_set=prompt_set,
        messages=[{"role": "user", "content": "Please compute seven times six, and explain it."}],
        gold="42",
    )
    samples = [_sample(closed, alice, 0), _sample(closed, alice, 1), _sample(closed, bob, 2)]
    open_sample = _sample(still_open, bob)
    close_prompts(prompt_ids=[closed.pk])

    page.goto(f"{live_server.url}/bounties/{bounty.pk}/")
    assert _bar(page).get_attribute("aria-valuenow") == "0"
    assert _bar(page).get_attribute("aria-valuemax") == "3"
    assert page.locator("#bounty-status").inner_text() == "open"

    # A verified sample of a prompt still open moves nothing: its verdict is not disclosed.
    assert pipeline.score_sample(sample_id=open_sample.pk) is True
    assert Sample.objects.get(pk=open_sample.pk).status == SampleStatus.VERIFIED
    _reload(page)
    assert _bar(page).get_attribute("aria-valuenow") == "0"

    # Each verdict on the closed prompt moves the bar (scoring -> disclosed_changed -> refresh).
    pipeline.score_sample(sample_id=samples[0].pk)
    _reload(page)
    assert _bar(page).get_attribute("aria-valuenow") == "1"
    assert page.locator("#bounty-status").inner_text() == "in progress"
    assert page.locator("svg.bar rect.verified").get_attribute("width") == "33"
    assert page.get_by_text("1 / 3 verified samples (33%)").is_visible()
    assert_accessible(page, "bounty-detail")

    pipeline.score_sample(sample_id=samples[1].pk)
    _reload(page)
    assert _bar(page).get_attribute("aria-valuenow") == "2"

    pipeline.score_sample(sample_id=samples[2].pk)
    _reload(page)
    assert _bar(page).get_attribute("aria-valuenow") == "3"
    assert page.locator("#bounty-status").inner_text() == "awarded"
    rows = page.locator("table.bounty-contributions tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").all_inner_texts() == ["alice", "2", "0.667", "60"]
    assert rows.nth(1).locator("td").all_inner_texts() == ["bob", "1", "0.333", "30"]
    history = page.locator("ol.bounty-history").inner_text()
    assert "completed" in history and "awarded" in history
    assert dict(
        CreditEntry.objects.filter(bounty=bounty).values_list("contributor__username", "points")
    ) == {"alice": 60.0, "bob": 30.0}
    assert_accessible(page, "bounty-detail-awarded")

    # The board lists it under "Completed" with a full bar.
    page.goto(f"{live_server.url}/bounties/")
    assert page.get_by_text("No open bounties right now.").is_visible()
    page.get_by_role("link", name="Completed", exact=True).click()
    page.wait_for_load_state()
    assert _bar(page).get_attribute("aria-valuenow") == "3"
    assert_accessible(page, "bounty-board-completed")


def test_a_contributor_claims_an_engineering_bounty(live_server, page):
    alice = UserFactory(username="alice")
    alice.set_password(PASSWORD)
    alice.save()
    Bounty.objects.create(
        title="Open data bounty",
        kind=BountyKind.DATA,
        prompt_set=PromptSetFactory(),
        target_verified=10,
        reward_points=5,
        deadline=timezone.now() + timedelta(days=3),
    )
    bounty = Bounty.objects.create(
        title="Port the <code> verifier",
        description="Make it <b>fast</b>.",
        kind=BountyKind.ENGINEERING,
        reward_points=500,
    )

    page.goto(f"{live_server.url}/bounties/")
    assert page.get_by_role("link", name="Port the <code> verifier").is_visible()
    assert_accessible(page, "bounty-board")
    page.get_by_role("link", name="Port the <code> verifier").click()
    page.wait_for_load_state()
    assert page.get_by_text("Make it <b>fast</b>.").is_visible()
    assert page.get_by_role("link", name="Log in").last.is_visible()
    assert page.get_by_role("button", name="Claim this bounty").count() == 0

    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/bounties/{bounty.pk}/")
    page.get_by_label("Note (optional)").fill("I have a <script>patch</script>")
    assert_accessible(page, "bounty-claim")
    page.get_by_role("button", name="Claim this bounty").click()
    page.wait_for_load_state()

    assert page.url == f"{live_server.url}/bounties/{bounty.pk}/"
    assert page.locator("#my-claim").inner_text() == "You claimed this bounty: pending."
    assert page.get_by_role("button", name="Claim this bounty").count() == 0
    assert page.get_by_role("cell", name="I have a <script>patch</script>").is_visible()
    claim = BountyClaim.objects.get(bounty=bounty)
    assert (claim.contributor, claim.status) == (alice, "pending")

    # "Mine" now lists it; the open data bounty is not theirs.
    page.goto(f"{live_server.url}/bounties/?show=mine")
    assert page.get_by_role("link", name="Port the <code> verifier").is_visible()
    assert page.get_by_role("link", name="Open data bounty").count() == 0
    assert Bounty.objects.get(pk=bounty.pk).status == BountyStatus.OPEN

"""The maintainers' admin in a real browser: a staff member logs in, filters the rejected
samples, quarantines one with a reason, and sees it quarantined (and the database agrees)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from scoring.models import AuditEntry, Sample, SampleStatus
from tests.browser.conftest import PASSWORD, SERIOUS, accessibility_problems, screenshot
from tests.factories import PromptFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def make_sample(status: str, completion: str) -> Sample:
    return Sample.objects.create(
        prompt=PromptFactory(),
        contributor=UserFactory(username=f"contrib-{status}"),
        model="org/model-a",
        temperature=0.6,
        finish_reason="stop",
        completion=completion,
        status=status,
        status_reason="math: fail" if status == SampleStatus.REJECTED else "",
    )


def test_a_maintainer_filters_rejected_samples_and_quarantines_one(live_server, page):
    get_user_model().objects.create_superuser("maintainer", "m@example.org", PASSWORD)
    rejected = make_sample(
        SampleStatus.REJECTED, "<think>2+2 is 5</think> <script>alert(1)</script> \\boxed{5}"
    )
    verified = make_sample(SampleStatus.VERIFIED, "<think>2+2 is 4</think> \\boxed{4}")

    page.goto(f"{live_server.url}/admin/")
    page.get_by_label("Username").fill("maintainer")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    page.get_by_role("link", name="Samples").first.click()
    page.wait_for_load_state()
    assert page.locator(f'input[name="_selected_action"][value="{verified.pk}"]').count() == 1

    # The status filter's link, in the sidebar.
    page.locator('details[data-filter-title="status"]').get_by_role("link", name="rejected").click()
    page.wait_for_load_state()
    assert "status__exact=rejected" in page.url
    assert page.locator(f'input[name="_selected_action"][value="{rejected.pk}"]').count() == 1
    assert page.locator(f'input[name="_selected_action"][value="{verified.pk}"]').count() == 0
    screenshot(page, "admin-samples-rejected")
    assert accessibility_problems(page) == []

    page.locator(f'input[name="_selected_action"][value="{rejected.pk}"]').check()
    page.locator('select[name="action"]').select_option("quarantine")
    page.get_by_label("Reason (kept in the audit trail):").fill("copied from a benchmark")
    page.get_by_role("button", name="Go").click()
    page.wait_for_load_state()
    assert page.get_by_text("1 samples quarantined.").is_visible()
    row = page.locator("#result_list tr", has=page.locator(f'input[value="{rejected.pk}"]'))
    assert row.locator("td.field-quarantined img[alt='True']").count() == 1
    screenshot(page, "admin-samples-quarantined")

    sample = Sample.objects.get(pk=rejected.pk)
    assert sample.quarantined
    assert not Sample.objects.get(pk=verified.pk).quarantined
    entry = AuditEntry.objects.get(action="sample.quarantine")
    assert (entry.actor.username, entry.target_ids, entry.reason) == (
        "maintainer",
        [rejected.pk],
        "copied from a benchmark",
    )

    # The sample's page: prompt, reasoning, answer and gold, the completion inert.
    page.goto(f"{live_server.url}/admin/scoring/sample/{rejected.pk}/change/")
    page.wait_for_load_state()
    assert page.get_by_text("<script>alert(1)</script>", exact=False).first.is_visible()
    assert page.get_by_text("SECRET-GOLD-42").first.is_visible()
    screenshot(page, "admin-sample-page")
    assert change_page_problems(page) == []


def change_page_problems(page: Any) -> list[str]:
    """axe's serious and critical violations, without its CSS preload: on a change form, the
    preload meets the @import of Django's forms.css and injects a <style> element, which the
    Content-Security-Policy refuses (axe's doing, not the page's)."""
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page, options={"preload": False})
    return [
        f"{v['id']} ({v['impact']}): {', '.join(str(n['target']) for n in v['nodes'])}"
        for v in result.response["violations"]
        if v.get("impact") in SERIOUS
    ]


def test_a_maintainer_rejects_a_sample_with_a_reason_on_the_confirmation_page(live_server, page):
    get_user_model().objects.create_superuser("maintainer", "m@example.org", PASSWORD)
    verified = make_sample(SampleStatus.VERIFIED, "<think>2+2 is 4</think> \\boxed{4}")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/scoring/sample/")
    page.get_by_label("Username").fill("maintainer")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()

    page.locator(f'input[name="_selected_action"][value="{verified.pk}"]').check()
    page.locator('select[name="action"]').select_option("reject")
    page.get_by_role("button", name="Go").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Reject samples").is_visible()
    assert page.get_by_role("cell", name="contrib-verified").is_visible()
    screenshot(page, "admin-reject-confirmation")
    assert accessibility_problems(page) == []
    # No reason: the browser asks for one before anything is sent (the server would too).
    page.get_by_role("button", name="Reject").click()
    assert page.get_by_label("Reason").evaluate("e => e.validity.valueMissing") is True
    assert Sample.objects.get(pk=verified.pk).status == "verified"
    page.get_by_label("Reason").fill("answer copied from the prompt's source")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_load_state()
    assert page.get_by_text("1 samples rejected (whatever the verifiers said).").is_visible()
    sample = Sample.objects.get(pk=verified.pk)
    assert (sample.status, sample.override, sample.status_reason) == (
        "rejected",
        "rejected",
        "maintainer: answer copied from the prompt's source",
    )


def test_a_maintainer_imports_a_prompt_file_and_reads_its_report(live_server, page, tmp_path):
    from scoring.models import PromptSet

    get_user_model().objects.create_superuser("maintainer", "m@example.org", PASSWORD)
    upload = tmp_path / "arith.jsonl"
    upload.write_text(
        '{"id": "a", "prompt": "What is 1+1?", "answer": "2"}\n'
        '{"id": "b", "prompt": "What is <b>2+2</b>?"}\n'
        "{broken\n"
    )
    page.goto(f"{live_server.url}/admin/login/?next=/admin/scoring/promptset/")
    page.get_by_label("Username").fill("maintainer")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    page.get_by_role("link", name="Import prompts from a file").click()
    page.wait_for_load_state()
    page.get_by_label("New set's name").fill("arith")
    page.get_by_label("New set's domain").select_option("math")
    page.get_by_label("New set's licence").fill("MIT")
    page.get_by_label("File").set_input_files(str(upload))
    page.get_by_label("Import the valid rows, skip the invalid ones").check()
    page.get_by_role("button", name="Import").click()
    page.wait_for_load_state()
    assert page.get_by_text("Imported 1 prompts into arith.").is_visible()
    rows = page.locator("#invalid-rows tbody tr")
    assert rows.all_inner_texts() == [
        "2\tmissing field: answer (required for domain math)",
        "3\tinvalid JSON: Expecting property name enclosed in double quotes",
    ]
    screenshot(page, "admin-import-report")
    assert accessibility_problems(page) == []
    assert list(
        PromptSet.objects.get(name="arith").prompts.values_list("external_id", flat=True)
    ) == ["a"]

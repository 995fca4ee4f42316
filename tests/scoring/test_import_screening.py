"""Import flags benchmark-contaminated prompts and near-duplicate prompts (never drops them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scoring.decontam import clear_benchmark_index_cache
from scoring.models import Prompt, PromptSet
from scoring.services import RawRow, import_prompts

BENCH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
pytestmark = pytest.mark.django_db


def rows(*texts: str) -> list[RawRow]:
    return [RawRow(line=i + 1, data={"prompt": t, "answer": "1"}) for i, t in enumerate(texts)]


def make_set(name: str) -> PromptSet:
    return PromptSet.objects.create(name=name, domain="math", license="MIT")


@pytest.fixture
def benchmarks(settings):
    if not (BENCH / "math500.jsonl").exists():
        pytest.skip("../shared/data/benchmarks is not here")
    settings.THINKPOOL_DECONTAM_BENCHMARKS = [str(BENCH / "math500.jsonl")]
    clear_benchmark_index_cache()
    yield json.loads((BENCH / "math500.jsonl").read_text().splitlines()[0])
    clear_benchmark_index_cache()


def test_a_benchmark_problem_is_imported_flagged_and_a_fresh_one_is_not(benchmarks):
    copied = "Solve this one. " + benchmarks["problem"].upper()
    fresh = "Tom has 3 apples and buys 17 more at the market; how many apples does Tom have?"
    report = import_prompts(prompt_set=make_set("s"), rows=rows(copied, fresh))
    assert (report.created, report.contaminated) == (2, 1)
    flagged = Prompt.objects.get(contaminated=True)
    assert flagged.messages[0]["content"] == copied
    assert flagged.contamination[0]["benchmark"] == "math500"
    assert flagged.contamination[0]["id"] == benchmarks["unique_id"]
    assert Prompt.objects.filter(contaminated=False).count() == 1


def test_with_no_benchmarks_configured_nothing_is_flagged(settings):
    settings.THINKPOOL_DECONTAM_BENCHMARKS = []
    clear_benchmark_index_cache()
    report = import_prompts(prompt_set=make_set("s"), rows=rows("What is 1 + 1?"))
    assert report.contaminated == 0
    assert not Prompt.objects.filter(contaminated=True).exists()


LONG = (
    "A farmer plants rows of corn in a rectangular field that is twelve rows wide and "
    "forty rows long, and each plant yields three ears of corn at harvest time in autumn"
)


def test_a_near_duplicate_of_a_prompt_in_another_set_is_flagged_with_its_original():
    import_prompts(prompt_set=make_set("a"), rows=rows(LONG))
    original = Prompt.objects.get()
    reworded = LONG.replace("autumn", "fall")
    other = "Compute the sum of the first one hundred positive integers using any method you like."
    report = import_prompts(prompt_set=make_set("b"), rows=rows(reworded, other))
    assert (report.created, report.near_duplicates) == (2, 1)
    copy = Prompt.objects.get(prompt_set__name="b", messages__0__content=reworded)
    assert copy.near_duplicate_of_id == original.pk
    assert (
        Prompt.objects.get(prompt_set__name="b", messages__0__content=other).near_duplicate_of
        is None
    )


def test_near_duplicates_within_one_import_point_at_the_earlier_prompt():
    reworded = LONG.replace("farmer", "grower")
    report = import_prompts(prompt_set=make_set("a"), rows=rows(LONG, reworded))
    assert report.near_duplicates == 1
    first = Prompt.objects.get(messages__0__content=LONG)
    second = Prompt.objects.get(messages__0__content=reworded)
    assert (first.near_duplicate_of_id, second.near_duplicate_of_id) == (None, first.pk)


def test_a_reworded_copy_of_a_closed_prompt_is_born_closed_even_from_a_retired_set():
    from scoring.services import retire_prompt_set

    old_set = make_set("published")
    import_prompts(prompt_set=old_set, rows=rows(LONG))
    retire_prompt_set(prompt_set=old_set)
    original = Prompt.objects.get()
    reworded = LONG.replace("autumn", "fall")
    fresh = "Compute the sum of the first one hundred positive integers using any method you like."
    import_prompts(prompt_set=make_set("new"), rows=rows(reworded, fresh))
    copy = Prompt.objects.get(messages__0__content=reworded)
    assert copy.near_duplicate_of_id == original.pk
    assert copy.closed_at == Prompt.objects.get(pk=original.pk).closed_at
    assert Prompt.objects.get(messages__0__content=fresh).closed_at is None


def test_closing_a_prompt_closes_its_near_duplicates_both_ways():
    from scoring.services import close_prompts

    import_prompts(prompt_set=make_set("a"), rows=rows(LONG))
    import_prompts(prompt_set=make_set("b"), rows=rows(LONG.replace("autumn", "fall")))
    import_prompts(prompt_set=make_set("c"), rows=rows("What is seven times eight, exactly?"))
    original = Prompt.objects.get(prompt_set__name="a")
    copy = Prompt.objects.get(prompt_set__name="b")
    unrelated = Prompt.objects.get(prompt_set__name="c")
    assert close_prompts(prompt_ids=[copy.pk]) == 2
    assert Prompt.objects.get(pk=original.pk).closed_at is not None
    assert Prompt.objects.get(pk=unrelated.pk).closed_at is None

from __future__ import annotations

import pytest

from scoring.verifiers import McqVerifier, StringVerifier
from scoring.verifiers.base import Gold, Status
from tests.scoring.verifiers.helpers import completion

MCQ = McqVerifier()
STRING = StringVerifier()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (r"\boxed{C}", Status.PASS),
        (r"\boxed{(C)}", Status.PASS),
        (r"\boxed{\text{C}}", Status.PASS),
        ("Answer: (C)", Status.PASS),
        ("The answer is C.", Status.PASS),
        ("**Answer:** c) 42", Status.PASS),
        (r"\boxed{B}", Status.FAIL),
        (r"First \boxed{C} then \boxed{D}", Status.FAIL),  # last box wins
    ],
)
def test_mcq(answer: str, expected: Status) -> None:
    assert MCQ.verify(completion(answer), Gold(answer="C"), {}).status is expected


def test_mcq_no_choice_and_bad_gold() -> None:
    out = MCQ.verify(completion("I think it is the carrots"), Gold(answer="C"), {})
    assert (out.status, out.details["reason"]) == (Status.FAIL, "no_choice")
    out = MCQ.verify(completion(r"\boxed{K}"), Gold(answer="K"), {"letters": "ABCD"})
    assert (out.status, out.details["reason"]) == (Status.SKIPPED, "gold_not_a_choice")


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        (r"\boxed{\text{Paris}}", "Paris", Status.PASS),
        ("Final answer: paris.", "Paris", Status.PASS),
        ("  New   York ", "new york", Status.PASS),
        (r"\boxed{\textbf{Mount Everest}}", "mount everest!", Status.PASS),
        (r"\boxed{London}", "Paris", Status.FAIL),
        ("Paris, I think, or maybe Lyon", "Paris", Status.FAIL),
    ],
)
def test_string(answer: str, gold: str, expected: Status) -> None:
    assert STRING.verify(completion(answer), Gold(answer=gold), {}).status is expected


def test_string_long_unboxed_answer_is_not_a_short_answer() -> None:
    out = STRING.verify(completion("Paris\nbecause it is the capital"), Gold(answer="Paris"), {})
    assert (out.status, out.details["reason"]) == (Status.FAIL, "no_answer")
    assert STRING.verify(completion("x"), Gold(answer=None), {}).status is Status.SKIPPED

"""The math verifier against answers written to pass when wrong (issue 7): each attack class
fails by construction (see the rules in `scoring/verifiers/math_answer.py`), and the honest
forms next to it keep passing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scoring.verifiers import REGISTRY, MathVerifier, McqVerifier, StringVerifier, math_answer
from scoring.verifiers.base import Candidate, Gold, Status
from scoring.verifiers.math_answer import gold_elements, read_value, shape, zero_denominator
from tests.scoring.verifiers.helpers import completion

V = MathVerifier()


def judge(answer: str, gold: str, **config: Any) -> tuple[Status, dict[str, Any]]:
    out = V.verify(completion(answer), Gold(answer=gold), config)
    return out.status, out.details


# --- the wrongly accepted examples of the issue -------------------------------------------


@pytest.mark.parametrize(
    ("answer", "gold", "reason"),
    [
        (r"It is either \boxed{7} or \boxed{5}", "5", "answer_set_mismatch"),
        ("The answer is 42. Wait, I answered too fast: the answer is 17.", "42", None),
        (r"\boxed{5\text{ is not the answer}}", "5", "text_in_answer"),
        (r"\boxed{5 is not the answer}", "5", "text_in_answer"),
        (r"\boxed{7 = 5}", "5", "equation_not_a_value"),
        (r"\boxed{S = \sum_{k=0}^{n} k}", r"S = \prod_{k=0}^{n} k", None),
    ],
)
def test_wrongly_accepted_examples_now_fail(answer: str, gold: str, reason: str | None) -> None:
    status, details = judge(answer, gold)
    assert (status, details.get("reason")) == (Status.FAIL, reason)


def test_a_retracted_answer_line_is_not_the_answer() -> None:
    text = "The answer is 42. Wait, I answered too fast: the answer is 17."
    assert judge(text, "17") == (
        Status.PASS,
        {"extracted": "17", "extracted_from": "line", "path": "fast"},
    )


# --- hedges and other ways to say two things at once --------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (r"\boxed{5} or maybe \boxed{7}", "answer_set_mismatch"),
        (r"\boxed{7}\boxed{5}", "answer_set_mismatch"),
        (r"\boxed{7 \text{ or } 5}", "text_in_answer"),
        (r"\boxed{7 \textbf{ or } 5}", "text_in_answer"),
        (r"\boxed{7 or 5}", "text_in_answer"),
        (r"\boxed{5 \text{ (wrong)}}", "text_in_answer"),
        (r"\boxed{\text{maybe } 5}", "text_in_answer"),
        (r"\boxed{7 \lor 5}", "relation_not_a_value"),
        (r"\boxed{7 \vee 5}", "relation_not_a_value"),
        (r"\boxed{7 \neq 5}", "relation_not_a_value"),
        (r"\boxed{7 \approx 5}", "relation_not_a_value"),
        (r"\boxed{7 \to 5}", "relation_not_a_value"),
        (r"\boxed{7 \implies 5}", "relation_not_a_value"),
        (r"\boxed{5 \pmod 7}", "relation_not_a_value"),
        (r"\boxed{\{7 = 5\}}", "relation_not_a_value"),
        (r"\boxed{7 \quad 5}", "not_an_expression"),
        (r"\boxed{7\,5}", "not_an_expression"),
        (r"\boxed{x = 7 = 5}", None),  # every part after the name must be the value
        (r"\boxed{7 = x = 5}", "equation_not_a_value"),
        (r"\boxed{\frac{7}{1} = 5}", "equation_not_a_value"),
        (r"\boxed{3x + 4y + 14 = 0}", "equation_not_a_value"),
        (r"\boxed{x = (7 = 5)}", "equation_not_a_value"),
        ("\\boxed{7 \u2260 5}", "relation_not_a_value"),  # Unicode relations are relations
        ("\\boxed{7 \u2248 5}", "relation_not_a_value"),
        ("\\boxed{7 \uff1d 5}", "equation_not_a_value"),
        (r"\boxed{\phantom{7}5}", "not_an_expression"),  # shows 5, reads as 12
        (r"\boxed{\textcolor{white}{7}5}", "not_an_expression"),
        (r"\boxed{\cancel{7}5}", "not_an_expression"),
        (r"\boxed{7 \tag{5}}", "not_an_expression"),
        (r"\boxed{\boxed{7}\boxed{5}}", "box_in_box"),
        (r"\boxed{5} and then \boxed{7", "unclosed_box"),
    ],
)
def test_hedges_fail(answer: str, reason: str | None) -> None:
    status, details = judge(answer, "5")
    assert (status, details.get("reason")) == (Status.FAIL, reason)


def test_relations_inside_a_tuple_are_not_values() -> None:
    status, details = judge(r"\boxed{(7 = 5, 2)}", "(5, 2)")
    assert (status, details["reason"]) == (Status.FAIL, "relation_not_a_value")
    assert judge(r"\boxed{(5, 2)}", "(5, 2)")[0] is Status.PASS


def test_units_are_dropped_where_they_are_not_cut_at_the_first_one() -> None:
    # math-verify cuts everything from the first \text{ to the end: 5 - 3 would read as 5.
    assert judge(r"\boxed{5\text{ cm} - 3\text{ cm}}", "5")[0] is Status.FAIL
    assert judge(r"\boxed{5\text{ cm} - 3\text{ cm}}", "2")[0] is Status.PASS
    assert judge(r"\boxed{5\text{ m}^2 + 2\text{ m}^2}", r"7\text{ m}^2")[0] is Status.PASS
    assert judge(r"\boxed{2\mathbf{v} + \mathbf{w}}", "2")[0] is Status.FAIL
    assert read_value(r"5\text{ cm}^2 - 3\text{ cm}^{2}").norm == "5-3"


# --- rule 2: answer sets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        (r"\boxed{1}, \boxed{2}, \boxed{3}", r"\{1, 2, 3\}", Status.PASS),
        (r"\boxed{1}, \boxed{2}, \boxed{3}", "1, 2, 3", Status.PASS),
        (r"\boxed{1}, \boxed{2}, \boxed{3}", "{1,2,3}", Status.PASS),
        (r"\boxed{3}, \boxed{1} and \boxed{2}", r"\left\{1, 2, 3\right\}", Status.PASS),
        (r"\boxed{x = 1} or \boxed{x = 2}", "1, 2", Status.PASS),
        (r"\boxed{\frac{1}{2}}, \boxed{-3}", r"-3, \frac12", Status.PASS),
        (r"\boxed{5} so the answer is \boxed{5}", "5", Status.PASS),  # a repeat is one answer
        (r"\boxed{5} and \boxed{5.0}", "5", Status.PASS),  # two forms of one value
        (r"\boxed{x = 5}, so \boxed{5}", "5", Status.PASS),
        (r"\boxed{1}, \boxed{1.0}, \boxed{2}", "1, 2", Status.PASS),
        (r"\boxed{1}, \boxed{2}, \boxed{3}", "1, 2", Status.FAIL),
        (r"\boxed{1}, \boxed{2}", "1, 2, 3", Status.FAIL),
        (r"\boxed{1}, \boxed{2}, \boxed{2}", "1, 2, 3", Status.FAIL),
        (r"\boxed{1}, \boxed{2}, \boxed{4}", "1, 2, 3", Status.FAIL),
        (r"\boxed{10}, \boxed{000}", "10,000", Status.FAIL),  # a thousands comma does not split
        (r"\boxed{10,000}", "10,000", Status.PASS),
        (r"\boxed{1}, \boxed{2}", "(1, 2)", Status.FAIL),  # a tuple is one answer
    ],
)
def test_several_boxes_are_one_answer_set(answer: str, gold: str, expected: Status) -> None:
    status, details = judge(answer, gold)
    assert status is expected, details
    if expected is Status.FAIL and "answers" in details:
        assert details["reason"] == "answer_set_mismatch"


def test_gold_elements() -> None:
    assert gold_elements(r"\{1, 2, 3\}") == ["1", "2", "3"]
    assert gold_elements(r"\left\{ (1,2), [3, 4) \right\}") == ["(1,2)", "[3, 4)"]
    assert gold_elements("10,000") == ["10,000"]
    assert gold_elements("1,000, 2,000") == ["1,000", "2,000"]
    assert gold_elements(r"\frac{1}{2}, \sqrt{2}") == [r"\frac{1}{2}", r"\sqrt{2}"]
    assert gold_elements(r"\{1\} \cup \{2\}") == [r"\{1\} \cup \{2\}"]


# --- rule 3: how a person reads numbers -----------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("4 4/9", r"\frac{40}{9}", Status.PASS),
        ("4 4/9", r"\frac{16}{9}", Status.FAIL),
        (r"4\frac{4}{9}", "40/9", Status.PASS),
        (r"-2\frac{1}{3}", r"-\frac{7}{3}", Status.PASS),
        (r"2\frac12", "2.5", Status.PASS),
        (r"\frac{9}{5}", r"1\frac{4}{5}", Status.PASS),
        ("44/9", r"\frac{44}{9}", Status.PASS),  # no space: not a mixed number
        ("1 000", "1000", Status.PASS),
        (r"1\,000", "1000", Status.PASS),
        (r"10{,}000", "10000", Status.PASS),
        ("1,000", "1000", Status.PASS),
        (r"1~000~000", "1000000", Status.PASS),
        (r"32,\!348", "32348", Status.PASS),
        ("1,234.5", "1234.5", Status.PASS),
        ("1, 000", "1000", Status.FAIL),  # a comma and a space: a list
        ("1, 2, 3", "123", Status.FAIL),
    ],
)
def test_mixed_numbers_and_digit_groups(answer: str, gold: str, expected: Status) -> None:
    status, details = judge(rf"\boxed{{{answer}}}", gold)
    assert status is expected, details


# --- rule 4: prose is not an expression, units and text golds are fine ----------------------


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        (r"18\text{ units}", "18"),
        (r"18 \text{ dollars}", "18"),
        (r"5\,\text{cm}", "5"),
        (r"5 \mathrm{cm}^2", "5"),
        (r"15\mbox{ cm}^2", r"15\mbox{ cm}^2"),
        (r"30^\circ", "30"),
        (r"30\text{ degrees}", "30"),
        (r"5^{\text{th}}", "5"),
        (r"12 \text{ km/h}", "12"),
        (r"125\textnormal{ miles}", "125"),
        (r"\text{(C)}", r"\text{(C)}"),
        (r"\text{C}", r"\text{(C)}"),
        (r"\text{Monday}", r"\text{Monday}"),
        ("Monday", r"\text{Monday}"),
        (r"\text{Evelyn}", "Evelyn"),
        ("2xy", "2yx"),
        (r"2\sin x \cos x", r"\sin 2x"),
        ("x+1", "1+x"),
    ],
)
def test_units_and_text_golds_keep_working(answer: str, gold: str) -> None:
    status, details = judge(rf"\boxed{{{answer}}}", gold)
    assert status is Status.PASS, details


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        (r"\text{Tuesday}", r"\text{Monday}"),
        (r"\text{Monday or Tuesday}", r"\text{Monday}"),
        (r"5 \text{ more}", "5"),
        (r"5 \text{ less}", "5"),
        ("5 less", "5"),
        ("5 ab", "5"),
        (r"5 \text{ apples and 3}", "5"),
    ],
)
def test_words_that_are_not_units_or_gold_words_fail(answer: str, gold: str) -> None:
    status, details = judge(rf"\boxed{{{answer}}}", gold)
    assert (status, details["reason"]) == (Status.FAIL, "text_in_answer")


# --- rule 5: equations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("x = 5", "5", Status.PASS),
        ("x=2+3=5", "5", Status.PASS),
        (r"\theta = 30^\circ", "30", Status.PASS),
        ("x_1 = 5", "5", Status.PASS),
        ("(x, y) = (1, 2)", "(1, 2)", Status.PASS),
        ("f(2) = 5", "5", Status.PASS),
        (r"x \in [1, 2]", "[1, 2]", Status.PASS),
        (r"\pi = 5", "5", Status.FAIL),  # \pi is a constant, not a name
        ("5", "x = 5", Status.PASS),
        ("x = 5", "x = 5", Status.PASS),
        ("y = 5", "x = 5", Status.FAIL),
        ("y = 3 + 2x", "y = 2x + 3", Status.PASS),
        ("2x - y + 3 = 0", "y = 2x + 3", Status.PASS),
        ("6x-2y+26=0", "3x-y+13=0", Status.PASS),
        ("3x+4y+14=0", "3x-y+13=0", Status.FAIL),
        (r"S = \sum_{k=0}^{n} k", r"S = \sum_{k=0}^{n} k", Status.PASS),
        (r"\sum_{k=0}^{n} \sum_{j=0}^{k} 1", r"\sum_{k=0}^{n} \sum_{j=0}^{k} 2", Status.FAIL),
        (r"\lim_{x \to 0} \frac{\sin x}{x}", "1", Status.PASS),
    ],
)
def test_equations_split_at_top_level(answer: str, gold: str, expected: Status) -> None:
    status, details = judge(rf"\boxed{{{answer}}}", gold)
    assert status is expected, details


def test_shape() -> None:
    assert shape(r"S = \sum_{k=0}^{n} k").parts == ("S", r"\sum_{k=0}^{n} k")
    assert shape(r"\lim_{x \to 0} x").relation is False
    assert shape(r"f(x = 1)").parts == ("f(x = 1)",)
    assert shape(r"f(x = 1)").relation is True
    assert shape(r"x = 2 + 3 = 5").parts == ("x", "2 + 3", "5")
    assert shape(r"\begin{cases} x = 1 \end{cases}").parts == (r"\begin{cases} x = 1 \end{cases}",)


# --- rule 6: undefined values -----------------------------------------------------------------


@pytest.mark.parametrize("answer", [r"\frac{4}{0}", r"\frac40", "4 0/0", r"1 \div 0", "3/(0)"])
def test_literal_zero_denominators_fail(answer: str) -> None:
    for _ in range(2):  # the same verdict every time: no sympy involved
        status, details = judge(rf"\boxed{{{answer}}}", "4")
        assert (status, details["reason"], details["path"]) == (
            Status.FAIL,
            "zero_denominator",
            "guard",
        )


def test_zero_denominator_reading() -> None:
    assert zero_denominator(r"\frac{1}{0.0}")
    assert zero_denominator(r"\frac{\frac{1}{2}}{0}")
    assert not zero_denominator(r"\frac{0}{1}")
    assert not zero_denominator("1/0.5")
    assert not zero_denominator("10/05")
    assert not zero_denominator(r"\frac{1}{10}")


@pytest.mark.parametrize("answer", [r"\frac{1}{1-1}", r"\infty - \infty", r"\frac{0}{2-2}"])
def test_undefined_values_fail_after_parsing(answer: str) -> None:
    status, details = judge(rf"\boxed{{{answer}}}", "4")
    assert (status, details["reason"], details["guard"]) == (
        Status.FAIL,
        "undefined_value",
        "undefined_value",
    )


# --- bounds ------------------------------------------------------------------------------------


def test_bounds_on_boxes_and_length() -> None:
    assert judge(r"\boxed{5}" * 17, "5") == (
        Status.FAIL,
        {"extracted_from": "boxed", "reason": "too_many_boxes"},
    )
    assert judge(r"\boxed{5}" * 16, "5")[0] is Status.PASS  # one answer, repeated
    long = "1+" * 500 + "1"
    assert judge(rf"\boxed{{{long}}}", "501") == (
        Status.FAIL,
        {"extracted_from": "boxed", "reason": "answer_too_long"},
    )
    assert judge("The answer is " + "9" * 1001, "5")[1]["reason"] == "answer_too_long"
    assert len(long) == math_answer.MAX_ANSWER_CHARS + 1


def test_several_hard_answers_share_one_budget() -> None:
    answers = r"\boxed{9^{9^{9^{9}}}}, \boxed{8^{8^{8^{8}}}}, \boxed{7^{7^{7^{7}}}}"
    status, details = judge(answers, "1, 2, 3", timeout_s=1)
    assert status is Status.TIMEOUT, details
    assert judge(r"\boxed{\frac{3}{6}}", "0.5")[0] is Status.PASS  # the worker is fine


# --- details, versions, time bound ------------------------------------------------------------


def test_details_never_carry_the_gold() -> None:
    gold = r"\frac{\sqrt{5}}{11}"  # not test_math's gold: its parse counts must stay its own
    for answer in (r"\sqrt{5}/11", r"\frac{5}{11}", r"\frac{\sqrt{5}}{11}"):
        details = judge(rf"\boxed{{{answer}}}", gold)[1]
        assert "gold" not in details
        assert gold not in json.dumps(details) or answer == gold
    reply = math_answer.worker().request({"op": "verify", "gold": "17", "answer": "3"}, 5)
    assert reply == {"answer": "3", "status": "fail"}
    assert math_answer.worker().request({"op": "gold", "gold": "17"}, 5) == {"status": "ok"}


def test_max_seconds_and_versions() -> None:
    assert MathVerifier.max_seconds == (
        math_answer.DEFAULT_TIMEOUT_S
        + math_answer.KILL_GRACE_S
        + math_answer.STARTUP_TIMEOUT_S
        + math_answer.PARENT_SLACK_S
    )
    assert getattr(REGISTRY["math"], "max_seconds", None) == 38.0
    versions = {name: v.version for name, v in REGISTRY.items()}
    assert {k: versions[k] for k in ("math", "mcq", "string", "language", "format")} == {
        "math": 3,
        "mcq": 2,
        "string": 2,
        "language": 2,
        "format": 2,
    }


def test_search_reasoning_uses_the_same_rules() -> None:
    hedge = Candidate(completion=r"<think>either \boxed{7} or \boxed{5}</think>I give up.")
    out = V.verify(hedge, Gold(answer="5"), {"search_reasoning": True})
    assert (out.status, out.details["reason"]) == (Status.FAIL, "answer_set_mismatch")


# --- the same attack on the short-answer verifiers -------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected", "reason"),
    [
        (r"\boxed{A} or \boxed{C}", Status.FAIL, "several_answers"),
        (r"\boxed{C} \boxed{(C)}", Status.PASS, None),
        ("The answer is C or A.", Status.FAIL, "no_choice"),
        ("The answer is (C), (D).", Status.FAIL, "no_choice"),
        ("The answer is C) a triangle.", Status.PASS, None),
        ("The answer is A. Wait, the answer is C.", Status.PASS, None),
        (r"\boxed{C}" * 17, Status.FAIL, "too_many_boxes"),
    ],
)
def test_mcq_hedges(answer: str, expected: Status, reason: str | None) -> None:
    out = McqVerifier().verify(completion(answer), Gold(answer="C"), {})
    assert (out.status, out.details.get("reason")) == (expected, reason)


def test_string_hedges() -> None:
    out = StringVerifier().verify(
        completion(r"\boxed{London} \boxed{Paris}"), Gold(answer="Paris"), {}
    )
    assert (out.status, out.details["reason"]) == (Status.FAIL, "several_answers")
    out = StringVerifier().verify(
        completion(r"\boxed{Paris} \boxed{\text{paris}}"), Gold(answer="Paris"), {}
    )
    assert out.status is Status.PASS
    out = StringVerifier().verify(completion(r"\boxed{" + "x" * 1001 + "}"), Gold("Paris"), {})
    assert (out.status, out.details["reason"]) == (Status.FAIL, "answer_too_long")

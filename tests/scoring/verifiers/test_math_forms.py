"""The math verifier's shortcuts through math-verify's own normalisation (`forms`): texts that
parse the same pass without a parse, and plain numbers as latex2sympy reads them are compared
as numbers. Each shortcut must give math-verify's verdict, or give none."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest
from math_verify import parse, verify

from scoring.verifiers import MathVerifier, _math_worker, math_answer
from scoring.verifiers._math_worker import EXTRACTION, boxed, form
from scoring.verifiers.base import Gold, Status
from scoring.verifiers.math_answer import (
    certainly_not_a_number,
    compare_numbers,
    latex2sympy_number,
)
from tests.scoring.verifiers.helpers import SHARED_DATA, completion

V = MathVerifier()


def judge(answer: str, gold: str) -> tuple[Status, dict[str, Any]]:
    out = V.verify(completion(rf"\boxed{{{answer}}}"), Gold(answer=gold), {})
    return out.status, out.details


def mv_verdict(gold: str, answer: str) -> bool:
    # math-verify warns that its own timeout is off; silenced for this call only.
    logging.disable(logging.WARNING)
    try:
        g = parse(boxed(gold), extraction_config=EXTRACTION, parsing_timeout=None)
        a = parse(boxed(answer), extraction_config=EXTRACTION, parsing_timeout=None)
        return bool(g) and bool(verify(g, a, timeout_seconds=None))
    finally:
        logging.disable(logging.NOTSET)


# --- same parse --------------------------------------------------------------------------------

# (gold, answer, the path the verifier takes): units are dropped before anything is compared
# (math_answer rule 4), so a number with a unit takes the fast path; the forms still agree.
_SAME = [
    (r"18", r"18\text{ units}", "fast"),  # math-verify drops a trailing \text{…}
    (r"5.4 \text{ cents}", r"5.4\text{ cents}", "fast"),
    (r"\frac{11+9a}{20}", r"\dfrac{11+9a}{20}", "same_parse"),
    (
        r"\left(\frac{3}{5},\frac{8}{3}\right]",
        r"\left(\dfrac{3}{5},\dfrac{8}{3}\right]",
        "same_parse",
    ),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)", "same_parse"),
    (
        r"\begin{pmatrix} -2 \\ -14 \\ -7 \end{pmatrix}",
        r"\begin{pmatrix} -2 \\ -14 \\ -7 \end{pmatrix}",
        "same_parse",
    ),
    (r"\text{Evelyn}", r"\text{Evelyn}", "same_parse"),
    (r"y = 2x + 3", r"y = 2x + 3", "same_parse"),
    (r"\frac 59", r"\dfrac 59", "same_parse"),
    (r"864 \mbox{ inches}^2", r"864 \mbox{ inches}^2", "fast"),
    (r"3 \pm 2 \sqrt{2}", r"3 \pm 2 \sqrt{2}", "same_parse"),
    (r"\$32,\!348", r"\$32,\!348", "same_parse"),
]


@pytest.mark.parametrize(("gold", "answer", "path"), _SAME)
def test_same_parse_passes_without_math_verify_and_math_verify_agrees(
    gold: str, answer: str, path: str
) -> None:
    g, a = form(gold), form(answer)
    assert g is not None and a is not None and g[0] == a[0]
    assert mv_verdict(gold, answer)
    status, details = judge(answer, gold)
    assert (status, details["path"]) == (Status.PASS, path)


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("x+1", "x + 1"),  # spaces survive math-verify's normalisation: not the same parse
        (r"\sqrt{2}", r"\sqrt{3}"),
        (r"(1,2)", r"[1,2]"),
        # A bare word made of the gold's letters is an answer to math-verify (rule 4).
        (r"\text{Evelyn}", "Evelyn"),
    ],
)
def test_different_forms_are_left_to_math_verify(gold: str, answer: str) -> None:
    g, a = form(gold), form(answer)
    assert g is None or a is None or g[0] != a[0]
    status, details = judge(answer, gold)
    assert details["path"] == "math_verify"
    assert (status is Status.PASS) == mv_verdict(gold, answer)


def test_form_is_unknown_where_parse_could_come_back_empty() -> None:
    assert form("\\boxed{") is None  # no match: math-verify's parse returns []
    assert form("") is None  # an empty first string
    # Two LaTeX groups (`$1$ and $2$`): math-verify builds a set outside its try.
    assert form("The final answer is $1$ and $2$") is None
    status, details = judge("x", "\\boxed{")
    assert (status, details["reason"]) == (Status.SKIPPED, "gold_unparsable")


def test_form_is_unknown_on_another_math_verify_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_math_worker, "_FORMS_OK", False)
    _math_worker.form.cache_clear()
    try:
        assert form("18") is None
    finally:
        _math_worker.form.cache_clear()


def test_forms_are_cached_per_text(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[str]] = []
    real = math_answer.worker().request

    def spy(req: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if req["op"] == "forms":
            sent.append(req["texts"])
        return real(req, timeout_s)

    monkeypatch.setattr(math_answer.worker(), "request", spy)
    gold = r"(7,\sqrt{13})"
    math_answer.forms((gold, r"(7, \sqrt{13})"), 5)
    math_answer.forms((gold, r"(7,\sqrt{14})"), 5)
    math_answer.forms((gold, r"(7,\sqrt{14})"), 5)
    assert sent == [[gold, r"(7, \sqrt{13})"], [r"(7,\sqrt{14})"]]


# --- numbers as latex2sympy reads them -------------------------------------------------------


def test_latex2sympy_numbers() -> None:
    assert latex2sympy_number(r"120^\circ") == (120, False)
    assert latex2sympy_number(r"-30^{\circ}") == (-30, False)
    assert latex2sympy_number(r"12.5^\circ") == (12.5, True)
    assert latex2sympy_number("204_5") == (204, False)  # math-verify drops the base
    assert latex2sympy_number("204_{5}") == (204, False)
    assert latex2sympy_number("58,500") == (58500, False)
    assert latex2sympy_number("-1,000.5") == (-1000.5, True)
    # Not plain numbers there: left to math-verify.
    for s in ("1,5", "0,500", "1,000^\\circ", "007", r"\frac{1}{2}^\circ", "1.5_2", "x^\\circ"):
        assert latex2sympy_number(s) is None, s


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("20", r"120^\circ", Status.FAIL),
        ("120", r"120^\circ", Status.PASS),
        (r"90^\circ", r"75^\circ", Status.FAIL),
        ("58500", r"\$58,500", Status.PASS),  # `58,500` alone is read here already (rule 3)
        ("27", "204_5", Status.FAIL),
    ],
)
def test_numbers_path(answer: str, gold: str, expected: Status) -> None:
    status, details = judge(answer, gold)
    assert (status, details["path"]) == (expected, "numbers")
    assert (expected is Status.PASS) == mv_verdict(gold, answer)


def _number_text(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 7, 12, 30, 90, 120, 204, 360, 1000, 58500, rng.randint(0, 10**7)])
    sign = rng.choice(["", "-"])
    kind = rng.choice(["int", "deg", "deg2", "sub", "sub2", "th", "dec", "decdeg", "frac"])
    return {
        "int": f"{sign}{n}",
        "deg": f"{sign}{n}^\\circ",
        "deg2": f"{sign}{n} ^{{\\circ}}",
        "sub": f"{sign}{n}_{rng.randint(2, 9)}",
        "sub2": f"{sign}{n}_{{{rng.randint(2, 16)}}}",
        "th": f"{sign}{n:,}",
        "dec": f"{sign}{n}.{rng.randint(0, 99)}",
        "decdeg": f"{sign}{n}.5^\\circ",
        "frac": f"{sign}\\frac{{{n}}}{{{rng.randint(1, 9)}}}",
    }[kind]


def test_numbers_agree_with_math_verify_on_many_forms() -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(300):
        gold = _number_text(rng)
        if rng.random() < 0.5:
            answer = _number_text(rng)
        else:  # the same value, written plainly
            answer = gold.replace("^{\\circ}", "").replace("^\\circ", "").replace(",", "")
        g, a = form(gold), form(answer)
        if not (g and a and g[1] and a[1]):
            continue
        gn, an = latex2sympy_number(g[1]), latex2sympy_number(a[1])
        if gn is None or an is None:
            continue
        verdict = compare_numbers(gn, an)
        if verdict is None:
            continue
        checked += 1
        assert (verdict is Status.PASS) == mv_verdict(gold, answer), (gold, answer)
    assert checked > 200


# --- shapes that can never equal a plain number ------------------------------------------------


def test_shape_shortcut_agrees_with_math_verify_on_math500_golds() -> None:
    rows = (SHARED_DATA / "benchmarks" / "math500.jsonl").read_text().splitlines()
    golds = [json.loads(row)["answer"] for row in rows]
    shaped = []
    for gold in golds:
        f = form(math_answer.read_value(gold).raw)
        if f is not None and f[1] is not None and certainly_not_a_number(f[1]):
            shaped.append(gold)
    assert len(shaped) > 30  # intervals, tuples, polynomials, words: a good share of MATH
    for gold in shaped:
        for number in ("0", "1", "-2", "3.5", r"\frac{1}{2}"):
            assert not mv_verdict(gold, number), (gold, number)
            status, details = judge(number, gold)
            assert status is Status.FAIL, (gold, number, details)


def test_shapes() -> None:
    for value in ("(2,4)", r"[1,2) \cup (3,4]", r"\{1,2\}", "3R^2", "p - q", r"\text{even}"):
        assert certainly_not_a_number(value), value
    for value in (r"\{5\}", "(1,2)+(3,4)", "6+9i", "e^2", r"\text{(E)}", r"\sqrt{2}", "2ab"):
        assert not certainly_not_a_number(value), value

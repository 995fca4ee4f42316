from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from math_verify import parse, verify

from scoring.verifiers import MathVerifier, math_answer
from scoring.verifiers.base import Candidate, Gold, Status
from scoring.verifiers.math_answer import MathWorker, fast_compare, normalise
from tests.scoring.verifiers.helpers import completion

V = MathVerifier()


def judge(answer: str, gold: str | None, **config: Any) -> tuple[Status, dict[str, Any]]:
    out = V.verify(completion(answer), Gold(answer=gold), config)
    return out.status, out.details


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        (r"\boxed{5\text{ cm}}", "5", Status.PASS),  # units
        (r"\boxed{5}", r"5 \text{ cm}", Status.PASS),
        (r"\boxed{\frac{1}{2}}", "1/2", Status.PASS),
        (r"\boxed{1/2}", r"\frac{1}{2}", Status.PASS),
        (r"\boxed{0.5}", r"\frac{1}{2}", Status.PASS),
        (r"\boxed{\dfrac12}", "0.5", Status.PASS),
        (r"\boxed{\tfrac{1}{3}}", r"\frac13", Status.PASS),
        (r"\boxed{0.33}", r"\frac{1}{3}", Status.FAIL),
        (r"\boxed{[1,2)}", "[1,2)", Status.PASS),  # intervals
        (r"\boxed{(1,2)}", "[1,2)", Status.FAIL),
        (r"\boxed{\{2, 1\}}", r"\{1,2\}", Status.PASS),  # sets
        (r"\boxed{\{1, 3\}}", r"\{1,2\}", Status.FAIL),
        (r"\boxed{50\%}", "50", Status.PASS),  # percent: math-verify reads 50% as 50 here
        (r"\boxed{50\%}", "0.5", Status.PASS),
        (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", Status.PASS),  # \text{}
        (r"\boxed{Evelyn}", r"\text{Evelyn}", Status.PASS),
        (r"\boxed{\text{Bob}}", r"\text{Evelyn}", Status.FAIL),
        (r"So she earns \boxed{18} dollars a day.", "18", Status.PASS),  # box inside text
        # Several boxes are one answer set (rule 2): a correction in the answer part is a hedge.
        (r"First \boxed{3}, no wait: \boxed{5}", "5", Status.FAIL),
        (r"First \boxed{5}, no wait: \boxed{3}", "5", Status.FAIL),
        ("Final answer: $12$", "12", Status.PASS),  # no box, answer line
        ("The answer is 13.", "12", Status.FAIL),
        (
            r"\boxed{\left( 3, \frac{\pi}{2} \right)}",
            r"\left( 3, \frac{\pi}{2} \right)",
            Status.PASS,
        ),
        (r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", Status.PASS),
        (r"\boxed{x+1}", "1+x", Status.PASS),
        (r"\boxed{1,000}", "1000", Status.PASS),
        (r"\boxed{-7}", "-7", Status.PASS),
        (r"\boxed{7}", "-7", Status.FAIL),
    ],
)
def test_math_tricky_answers(answer: str, gold: str, expected: Status) -> None:
    status, details = judge(answer, gold)
    assert status is expected, details


def test_math_no_answer_fails() -> None:
    assert judge("I am not sure what to do.", "5") == (Status.FAIL, {"reason": "no_answer"})


def test_math_box_only_in_reasoning_is_not_an_answer_unless_configured() -> None:
    c = Candidate(completion="<think>maybe \\boxed{5}</think>I give up.")
    assert V.verify(c, Gold(answer="5"), {}).status is Status.FAIL
    assert V.verify(c, Gold(answer="5"), {"search_reasoning": True}).status is Status.PASS


def test_math_fast_path_details() -> None:
    assert judge(r"\boxed{42}", "42") == (
        Status.PASS,
        {"extracted": "42", "extracted_from": "boxed", "path": "fast"},
    )
    status, details = judge(r"\boxed{41}", "42")
    assert (status, details["path"]) == (Status.FAIL, "fast")


def test_math_unparsable_or_missing_gold_is_skipped_never_pass() -> None:
    # open-r1 #86 / #293: gold that cannot be parsed must not reward anything.
    assert judge(r"\boxed{5}", None) == (Status.SKIPPED, {"reason": "no_gold"})
    assert judge(r"\boxed{5}", "   ") == (Status.SKIPPED, {"reason": "no_gold"})
    status, details = judge(r"\boxed{x}", "\\boxed{")
    assert (status, details["reason"]) == (Status.SKIPPED, "gold_unparsable")
    # Even an answer identical to the broken gold does not pass.
    status, details = judge(r"\boxed{\boxed{}", "\\boxed{")
    assert status is not Status.PASS


# --- math-verify's known false-positive classes (see the math_answer module docstring) -------


def test_math_plus_minus_is_not_the_positive_root() -> None:
    # math-verify #14: ±2021 vs 2021, both directions fail.
    assert judge(r"\boxed{2021}", r"\pm 2021")[0] is Status.FAIL
    assert judge(r"\boxed{\pm 2021}", "2021")[0] is Status.FAIL
    assert judge(r"\boxed{\pm 2021}", r"\pm 2021")[0] is Status.PASS


def test_math_equations_collapsing_to_zero_do_not_match() -> None:
    # math-verify #60: with default normalisation both sides reduce to `0` and verify equal.
    assert judge(r"\boxed{3x+4y+14=0}", "3x-y+13=0")[0] is Status.FAIL
    assert judge(r"\boxed{6x-2y+26=0}", "3x-y+13=0")[0] is Status.PASS
    status, details = judge(r"\boxed{3x + 4y + 14 = 0}", "0")
    assert (status, details["reason"]) == (Status.FAIL, "equation_not_a_value")
    assert judge(r"\boxed{x^2-x^2=0}", "5")[0] is Status.FAIL
    # An assignment to a lone variable is still an answer.
    assert judge(r"\boxed{x = 0}", "0")[0] is Status.PASS
    assert judge(r"\boxed{y=6}", "6")[0] is Status.PASS


def test_math_tiny_values_are_not_equal() -> None:
    # math-verify #14: 1/2004! and 1/2006! both evaluate to 0 at 15 digits.
    status, details = judge(r"\boxed{\frac{1}{2006!}}", r"\frac{1}{2004!}")
    assert (status, details["guard"]) == (Status.FAIL, "tiny_value")
    assert judge(r"\boxed{\frac{1}{2^{98}}}", r"\frac{1}{2^{99}}")[0] is Status.FAIL
    assert judge(r"\boxed{2^{-99}}", r"\frac{1}{2^{99}}")[0] is Status.PASS


# --- fast path -------------------------------------------------------------------------------

_PAIRS = [
    ("5", "5"),
    ("5", "6"),
    ("0.5", r"\frac{1}{2}"),
    (r"\frac{1}{2}", "0.5"),
    ("0.5", "0.50"),
    ("1/3", "0.333333"),
    ("1/3", "0.3333"),
    ("1/3", "0.33"),
    (r"\frac{2}{4}", r"\frac12"),
    ("-3", "3"),
    (r"-\frac{1}{2}", "-0.5"),
    ("0.1", r"\frac{1}{10}"),
    ("2", "2.0000001"),
    ("2", "2.001"),
    ("100", "100.0"),
    ("595", "{595}"),
    ("-10", "{ {-10} }"),
    ("3", "{1}{3}"),
    ("12345678901234567890", "12345678901234567891"),
    (r"\dfrac{3}{4}", "3/4"),
    ("7", "7."),
    ("0", "-0"),
    ("1.5", "3/2"),
    ("10", "10.000001"),
]


def mv_verdict(gold: str, answer: str) -> bool:
    from scoring.verifiers._math_worker import EXTRACTION, boxed

    # math-verify warns that its own timeout is off; silenced for this call only.
    logging.disable(logging.WARNING)
    try:
        g = parse(boxed(gold), extraction_config=EXTRACTION, parsing_timeout=None)
        a = parse(boxed(answer), extraction_config=EXTRACTION, parsing_timeout=None)
        return bool(verify(g, a, timeout_seconds=None))
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize(("gold", "answer"), _PAIRS)
def test_fast_path_agrees_with_math_verify_when_it_answers(gold: str, answer: str) -> None:
    fast = fast_compare(gold, answer)
    if fast is not None:
        assert (fast is Status.PASS) == mv_verdict(gold, answer)


def test_fast_path_answers_most_plain_numbers_and_defers_the_rest() -> None:
    answered = [p for p in _PAIRS if fast_compare(*p) is not None]
    assert len(answered) >= 15
    assert fast_compare("1/3", "0.333333") is None  # inside math-verify's rounding: defer
    assert fast_compare("2", "2.0000001") is None
    # Unit groups are dropped before reading (rule 4), so a number with a unit is a number.
    assert fast_compare("5", r"5\text{ cm}") is Status.PASS
    assert fast_compare("5", r"5\text{ apples and 3}") is None
    # Digit groups are one number (rule 3), as math-verify also reads them.
    assert fast_compare("1000", "1,000") is Status.PASS
    assert fast_compare("1000", "1, 000") is None  # a comma and a space: a list


def test_normalise_is_conservative() -> None:
    assert normalise(r"$\left( 3, \dfrac{\pi}{2} \right)$") == r"(3,\frac{\pi}{2})"
    assert normalise(r"\pi r") == r"\pi r"  # a space that separates a command from a letter
    assert normalise("1 000") == "1 000"
    assert normalise("{ {-10} }") == "-10"
    assert normalise(r"{1}{2}") == r"{1}{2}"
    assert normalise(r"\{1,2\}") == r"\{1,2\}"


# --- worker: cache, timeouts, threads, errors -----------------------------------------------


def test_gold_is_parsed_once_per_gold_text() -> None:
    w = math_answer.worker()
    gold = r"\frac{\sqrt{3}}{7}"
    before = w.request({"op": "cache_info", "gold": ""}, 5)
    # Three answers that each need math-verify (none parses the same as the gold).
    for answer in (r"\sqrt{3}/7", r"\frac{3}{7}", r"\sqrt{3} \cdot \frac{1}{7}"):
        assert judge(rf"\boxed{{{answer}}}", gold)[1]["path"] == "math_verify"
    after = w.request({"op": "cache_info", "gold": ""}, 5)
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 2


def test_math_timeout_is_reported() -> None:
    status, details = judge(r"\boxed{9^{9^{9^{9}}}}", "5", timeout_s=1)
    assert status is Status.TIMEOUT
    assert details["path"] == "math_verify"
    assert judge(r"\boxed{\frac{3}{6}}", "0.5")[0] is Status.PASS  # the worker is still fine


def test_worker_is_killed_when_stuck_beyond_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(math_answer, "KILL_GRACE_S", 0.3)
    w = MathWorker()
    try:
        reply = w.request({"op": "_test_stuck", "gold": "", "seconds": 60}, 0.2)
        assert reply == {"status": "timeout", "killed": True}
        assert w.restarts == 1
        assert w.request({"op": "verify", "gold": "2", "answer": "1+1"}, 5)["status"] == "pass"
    finally:
        w.close()


def test_math_verifier_works_outside_the_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()
    cases = [(r"\boxed{\sqrt{4}}", "2"), (r"\boxed{\frac{6}{4}}", "1.5"), (r"\boxed{3}", "2")]
    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = list(pool.map(lambda c: judge(*c)[0], cases))
    assert statuses == [Status.PASS, Status.PASS, Status.FAIL]


def test_broken_verifier_reports_error_never_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("worker exploded")

    monkeypatch.setattr(math_answer, "fast_compare", boom)
    out = V.verify(completion(r"\boxed{5}"), Gold(answer="5"), {})
    assert (out.status, out.score, out.details["error"]) == (Status.ERROR, 0.0, "RuntimeError")

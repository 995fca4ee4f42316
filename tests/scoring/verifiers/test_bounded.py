"""Every verifier finishes, with a definite status, on any input up to the upload caps
(completion and reasoning up to 524,288 characters each). The bounds here are hang detectors,
not timings: the machine is shared, so they are generous (an input that is quadratic in its
length takes hours at these sizes, a linear one a fraction of a second)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from scoring.verifiers import REGISTRY
from scoring.verifiers.base import Candidate, Gold, Outcome, Status
from scoring.verifiers.language import MAX_CHUNKS, chunks
from scoring.verifiers.text import answer_body, extract_answers, extract_code, last_boxed
from tests.scoring.sandbox_support import sandbox_problem

CAP = 524_288  # characters per uploaded field
HANG_S = 20.0
N = 20_000

# Each one was quadratic (or worse) somewhere before issue 7, or is a classic of the kind.
PATHOLOGICAL: dict[str, str] = {
    "nested braces": r"\boxed{" + "{" * N + "}" * N + "}",
    "open braces": r"\boxed{" + "{" * CAP,
    "boxes never closed": r"\boxed{" * 60_000,
    "boxes closed": r"\boxed{5}" * 60_000,
    "boxes before dollars": r"\boxed$" * 60_000,
    "boxes in boxes": r"\boxed{" * 60_000 + "5" + "}" * 60_000,
    "answer tags never closed": "<answer>" * 60_000,
    "answer tags closed": "<answer>5</answer>" * 30_000,
    "backticks": "`" * CAP,
    "fences never closed": "```python\n" * 50_000,
    "fences": "```python\nx = 1\n```\n" * 25_000,
    "answer words": "answer " * 80_000,
    "answer then newlines": "answer" + " " * 200_000 + "\n" * 200_000,
    "final then spaces": ("final" + " " * 50) * 9_000,
    "digits in a box": r"\boxed{" + "9" * CAP + "}",
    "digits on an answer line": "The answer is " + "9" * CAP,
    "deep fractions": r"\boxed{" + r"\frac{1}{" * 50_000 + "2" + "}" * 50_000 + "}",
    "deep text": r"\boxed{" + r"\text{" * 50_000 + "x" + "}" * 50_000 + "}",
    "emphasis": "The answer is " + "**" * 200_000 + "5" + "**" * 200_000,
    "dollars": "$" * CAP,
    "math openers": "\\(" * (CAP // 2),
    "display openers": "\\[" * (CAP // 2),
    "double dollars": "$$ a" * (CAP // 4),
    "commands": "\\a" * (CAP // 2),
    "cjk": "\u6211\u4eec" * (CAP // 2),
    "one word": "a " * (CAP // 2),
    "sentences": "Hello there. " * (CAP // 13),
    "think tags": "<think>" * (CAP // 7),
}

# Small enough to reach math-verify (at most 1000 characters): bounded by the worker's limit.
TO_THE_WORKER: dict[str, str] = {
    "a deep fraction": r"\boxed{" + r"\frac{1}{" * 80 + "2" + "}" * 80 + "}",
    "deep parentheses": r"\boxed{" + "(" * 450 + "x" + ")" * 450 + "}",
    "a power tower": r"\boxed{9^{9^{9^{9^{9}}}}}",
    "a long sum": r"\boxed{" + "1+" * 499 + "1}",
    "a long list": r"\boxed{" + "1," * 499 + "1}",
    "a long chain": r"\boxed{x" + "=5" * 499 + "}",
    "a huge factorial": r"\boxed{\frac{1}{100000!}}",
}

GOLDS = {
    "math": Gold(answer="5"),
    "mcq": Gold(answer="C"),
    "string": Gold(answer="Paris"),
    # Whatever program is extracted runs in the sandbox against a real test.
    "code": Gold(tests=[{"input": "", "output": "5"}]),
}
DEFINITE = {Status.PASS, Status.FAIL, Status.SKIPPED, Status.TIMEOUT}
NO_SANDBOX = sandbox_problem() is not None


def finishes(call: Callable[[], Any], seconds: float = HANG_S) -> Any:
    """The call's result, or a test failure if it has not returned after `seconds`."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return result[0]


def candidates(text: str) -> list[Candidate]:
    """The text as the answer part, as the reasoning, and both fields full at once."""
    return [
        Candidate(completion=("<think>r</think>" + text)[:CAP], prompt_text="What is 3 + 4?"),
        Candidate(completion=("<think>" + text)[:CAP] + "</think>\\boxed{5}"),
        Candidate(completion=text[:CAP], reasoning=text[:CAP], prompt_text="What is 3 + 4?"),
    ]


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_every_verifier_finishes_on_pathological_input(name: str) -> None:
    for candidate in candidates(PATHOLOGICAL[name]):
        for vname, verifier in REGISTRY.items():
            gold = GOLDS.get(vname, Gold(answer="5"))
            out: Outcome = finishes(lambda v=verifier, c=candidate, g=gold: v.verify(c, g, {}))
            # Without a sandbox here the code verifier answers `error`: bounded all the same.
            allowed = DEFINITE | {Status.ERROR} if vname == "code" and NO_SANDBOX else DEFINITE
            assert out.status in allowed, (vname, out)


@pytest.mark.parametrize("name", sorted(TO_THE_WORKER))
def test_math_finishes_on_answers_that_reach_math_verify(name: str) -> None:
    verifier = REGISTRY["math"]
    candidate = Candidate(completion="<think>r</think>" + TO_THE_WORKER[name])
    out = finishes(lambda: verifier.verify(candidate, Gold(answer="5"), {"timeout_s": 2}))
    assert out.status in DEFINITE, out
    assert out.status is not Status.PASS or name == "a long chain", out


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_text_readers_finish(name: str) -> None:
    text = PATHOLOGICAL[name][:CAP]
    finishes(lambda: extract_code(text))
    finishes(lambda: extract_answers(text))
    finishes(lambda: last_boxed(text))
    finishes(lambda: answer_body(text))


def test_pathological_answers_fail_with_a_reason() -> None:
    math = REGISTRY["math"]

    def reason(text: str) -> tuple[Status, str | None]:
        out = math.verify(Candidate(completion="<think>r</think>" + text), Gold(answer="5"), {})
        return out.status, out.details.get("reason")

    assert reason(PATHOLOGICAL["nested braces"]) == (Status.FAIL, "answer_too_long")
    assert reason(PATHOLOGICAL["open braces"]) == (Status.FAIL, "unclosed_box")
    assert reason(PATHOLOGICAL["boxes closed"]) == (Status.FAIL, "too_many_boxes")
    assert reason(PATHOLOGICAL["digits in a box"][:CAP]) == (Status.FAIL, "unclosed_box")
    assert reason(PATHOLOGICAL["digits on an answer line"]) == (Status.FAIL, "answer_too_long")
    assert reason(PATHOLOGICAL["answer words"]) == (Status.FAIL, "no_answer")
    assert reason(PATHOLOGICAL["backticks"]) == (Status.FAIL, "no_answer")


def test_language_detector_runs_a_bounded_number_of_times() -> None:
    text = "Hello there. " * (CAP // 13)
    pieces = finishes(lambda: chunks(text, 8))
    assert len(pieces) <= MAX_CHUNKS
    assert sum(words for _, words in pieces) == 2 * (CAP // 13)  # every word still counted

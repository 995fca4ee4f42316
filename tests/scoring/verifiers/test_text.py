from __future__ import annotations

from scoring.verifiers.base import Candidate
from scoring.verifiers.text import (
    answer_line,
    final_answer,
    last_boxed,
    parse_reasoning,
    split_reasoning,
)


def test_split_reasoning_with_both_tags() -> None:
    c = Candidate(completion="<think>\nstep one\n</think>\n\nThe answer is 4.")
    assert split_reasoning(c) == ("step one", "The answer is 4.")
    assert parse_reasoning(c).source == "tags"


def test_split_reasoning_when_template_opened_think_block() -> None:
    # DeepSeek-R1 / Qwen3 templates put "<think>\n" in the prompt (open-r1 #235, #256).
    c = Candidate(completion="step one\nstep two\n</think>\n\\boxed{4}")
    parts = parse_reasoning(c)
    assert (parts.reasoning, parts.answer, parts.source, parts.closed) == (
        "step one\nstep two",
        "\\boxed{4}",
        "template",
        True,
    )


def test_split_reasoning_leading_whitespace_before_think() -> None:
    c = Candidate(completion="\n\n  <think>x</think>y")
    assert split_reasoning(c) == ("x", "y")
    assert parse_reasoning(c).source == "tags"


def test_split_reasoning_uses_reasoning_field() -> None:
    c = Candidate(completion="\\boxed{4}", reasoning="  thought  ")
    assert split_reasoning(c) == ("thought", "\\boxed{4}")
    assert parse_reasoning(c).source == "field"


def test_split_reasoning_unclosed_and_absent() -> None:
    unclosed = parse_reasoning(Candidate(completion="<think>going on and on"))
    assert (unclosed.reasoning, unclosed.answer, unclosed.closed) == ("going on and on", "", False)
    plain = parse_reasoning(Candidate(completion="just 4"))
    assert (plain.reasoning, plain.answer, plain.source) == ("", "just 4", "none")


def test_last_boxed_nested_and_last_wins() -> None:
    assert last_boxed(r"\boxed{1} then \boxed{\frac{1}{\sqrt{2}}}") == r"\frac{1}{\sqrt{2}}"
    assert last_boxed(r"so \boxed 5.") == "5"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxed{\{1,2\}}") == r"\{1,2\}"
    assert last_boxed(r"cut off \boxed{\frac{1}{2") is None
    assert last_boxed("no box here") is None
    assert last_boxed(r"\boxedx{3}") is None


def test_answer_line_variants() -> None:
    assert answer_line("blah\nFinal answer: $\\frac{3}{4}$.") == "\\frac{3}{4}"
    assert answer_line("The answer is 12") == "12"
    assert answer_line("**Answer:** (C)") is not None
    assert answer_line("nothing") is None


def test_final_answer_prefers_box_and_answer_tags() -> None:
    assert final_answer("Final answer: 3, i.e. \\boxed{4}") == ("4", "boxed")
    assert final_answer("<answer>\\boxed{9}</answer> \\boxed{1}") == ("9", "boxed")
    assert final_answer("no answer") == (None, "none")

from __future__ import annotations

from scoring.verifiers.base import Candidate
from scoring.verifiers.text import (
    Extracted,
    answer_body,
    answer_line,
    extract_answers,
    final_answer,
    find_boxes,
    last_boxed,
    parse_reasoning,
    split_reasoning,
    strip_wrappers,
    unwrap_box,
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


def test_answer_line_is_the_last_answer_word_to_the_end_of_its_sentence() -> None:
    retracted = "The answer is 42. Wait, I answered too fast: the answer is 17."
    assert answer_line(retracted) == "17"
    assert answer_line("I answered 42.") is None  # "answered" is not the word
    assert answer_line("The answer is 3.5. Done.") == "3.5"  # a decimal point is no end
    assert answer_line("The answer is 3.5") == "3.5"
    assert answer_line("Final answer: 12\nbecause of the above") == "12"
    assert answer_line("**Final Answer**\n\n$42$") == "42"
    assert answer_line("The answer was 7 or 8.") == "7 or 8"
    assert answer_line("The answer is 5. Let me check the answer.") is None  # the last is empty
    assert answer_line("<answer>5</answer>") is None  # a tag is not the word
    assert answer_line("answer " * 1000) is None


def test_find_boxes_in_order_with_limits() -> None:
    assert find_boxes(r"\boxed{1} and \fbox{2} then \boxed 3.").contents == ("1", "2", "3")
    assert find_boxes(r"\boxed{a{b}c} \boxed{\{1\}}").contents == ("a{b}c", r"\{1\}")
    assert find_boxes(r"\boxed{\boxed{5}}").contents == (r"\boxed{5}",)  # one outer box
    assert find_boxes(r"\boxed{1}\boxed{2}\boxed{3}", limit=1).contents == ("1", "2")
    cut = find_boxes(r"\boxed{1} \boxed{2")
    assert (cut.contents, cut.cut) == (("1",), True)
    assert find_boxes("\\boxed$ \\boxed\n5").contents == ()  # no token after either
    assert unwrap_box(r"\boxed{ \boxed{5} }") == "5"
    assert unwrap_box(r"\boxed{5}+\boxed{6}") == r"\boxed{5}+\boxed{6}"


def test_extract_answers() -> None:
    assert extract_answers(r"\boxed{7} or \boxed{5}") == Extracted(("7", "5"), "boxed")
    assert extract_answers("So the answer is 5.") == Extracted(("5",), "line")
    assert extract_answers("nothing") == Extracted((), "none")
    assert extract_answers(r"\boxed{1}" * 17).problem == "too_many_boxes"
    assert extract_answers(r"\boxed{1} \boxed{2").problem == "unclosed_box"
    assert extract_answers(r"<answer>\boxed{9}</answer> \boxed{1}").answers == ("9",)


def test_answer_body_and_wrappers() -> None:
    assert answer_body("<answer>a</answer> x <answer>b</answer>") == "b"
    assert answer_body("<answer>a<answer>b</answer>") == "a<answer>b"
    assert answer_body("<answer>never closed") == "<answer>never closed"
    assert strip_wrappers("**$\\frac{1}{2}$**.") == "\\frac{1}{2}"
    assert strip_wrappers("5...") == "5..."

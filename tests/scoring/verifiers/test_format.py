from __future__ import annotations

from typing import Any

import pytest

from scoring.verifiers import FormatVerifier
from scoring.verifiers.base import Candidate, Gold, Status

V = FormatVerifier()


def run(completion: str, config: dict[str, Any] | None = None, **kw: Any) -> tuple[Status, str]:
    out = V.verify(Candidate(completion=completion, **kw), Gold(), config or {})
    return out.status, out.details.get("reason", "")


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>reasoning</think>answer", (Status.PASS, "")),
        ("\n\n<think>\nreasoning\n</think>\n\nanswer", (Status.PASS, "")),
        ("reasoning opened by template\n</think>\nanswer", (Status.PASS, "")),
        ("<think>reasoning never closed", (Status.FAIL, "unclosed_reasoning")),
        ("<think>  </think>answer", (Status.FAIL, "empty_reasoning")),
        ("<think>r</think>   ", (Status.FAIL, "no_answer")),
        ("just an answer", (Status.FAIL, "no_reasoning")),
        ("<think>a</think><think>b</think>answer", (Status.FAIL, "multiple_think_blocks")),
    ],
)
def test_format_cases(completion: str, expected: tuple[Status, str]) -> None:
    assert run(completion) == expected


def test_format_reasoning_field_counts() -> None:
    assert run("answer", reasoning="I thought") == (Status.PASS, "")
    out = V.verify(Candidate(completion="answer", reasoning="I thought"), Gold(), {})
    assert out.details["reasoning_source"] == "field"


def test_format_answer_tags_required() -> None:
    cfg = {"require_answer_tags": True}
    assert run("<think>r</think><answer>4</answer>", cfg) == (Status.PASS, "")
    assert run("<think>r</think>4", cfg) == (Status.FAIL, "no_answer_tags")
    assert run("<think>r</think><answer>4", cfg) == (Status.FAIL, "unclosed_answer_tags")
    assert run("<think>r</think><answer> </answer>", cfg) == (Status.FAIL, "empty_answer_tags")


def test_format_section_of_prompt_set_config_is_read() -> None:
    cfg = {"format": {"require_boxed": True}, "math": {"timeout_s": 1}}
    assert run("<think>r</think>4", cfg) == (Status.FAIL, "no_boxed_answer")
    assert run("<think>r</think>\\boxed{4}", cfg) == (Status.PASS, "")


def test_format_min_reasoning_chars_and_optional_reasoning() -> None:
    assert run("<think>ok</think>a", {"min_reasoning_chars": 10}) == (
        Status.FAIL,
        "empty_reasoning",
    )
    assert run("plain answer", {"require_reasoning": False}) == (Status.PASS, "")


def test_format_require_boxed_reads_boxes_linearly() -> None:
    cfg = {"require_boxed": True}
    # A box nested in a box that never closes was counted as a closed box before version 2.
    assert run("<think>r</think>\\boxed{\\boxed{4}", cfg) == (Status.FAIL, "no_boxed_answer")
    assert run("<think>r</think>\\boxed{\\boxed{4}}", cfg) == (Status.PASS, "")
    assert run("<think>r</think>" + "\\boxed{" * 60_000, cfg) == (Status.FAIL, "no_boxed_answer")
    assert V.version == 2

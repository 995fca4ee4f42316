"""Format: reasoning present, non-empty and closed, then a final answer.

Reasoning counts from the uploaded `reasoning` field or from `<think>…</think>` in the
completion, including a completion that has only `</think>` because the chat template opened the
block in the prompt (see `text.py`). Leading whitespace and newlines are ignored.

Config keys: `require_reasoning` (True), `min_reasoning_chars` (1), `require_answer` (True),
`require_answer_tags` (False: the answer must be inside one closed, non-empty
`<answer>…</answer>`), `require_boxed` (False), `allow_multiple_think` (False).

Every check is linear in the length of the completion (see `text.py`): tags are counted with
plain substring searches and the box is found by one forward scan.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import THINK_OPEN, answer_body, last_boxed, parse_reasoning

# Literal tags: one linear scan each.
_ANSWER_OPEN = re.compile(r"<answer>", re.I)
_ANSWER_CLOSE = re.compile(r"</answer>", re.I)


class FormatVerifier(GuardedVerifier):
    name: ClassVar[str] = "format"
    # 2: `require_boxed` reads boxes with `text.find_boxes` (a box nested in an unclosed one
    # no longer counts as closed).
    version: ClassVar[int] = 2

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        parts = parse_reasoning(candidate)
        details: dict[str, Any] = {
            "reasoning_source": parts.source,
            "reasoning_chars": len(parts.reasoning),
            "answer_chars": len(parts.answer),
        }

        def fail(reason: str) -> Outcome:
            return Outcome(Status.FAIL, 0.0, {**details, "reason": reason})

        if not parts.closed:
            return fail("unclosed_reasoning")
        if parts.blocks > 1 and not config.get("allow_multiple_think", False):
            return fail("multiple_think_blocks")
        if THINK_OPEN in parts.answer:
            return fail("think_after_answer")
        if config.get("require_reasoning", True):
            if parts.source == "none":
                return fail("no_reasoning")
            if len(parts.reasoning) < max(1, int(config.get("min_reasoning_chars", 1))):
                return fail("empty_reasoning")
        if config.get("require_answer", True) and not parts.answer:
            return fail("no_answer")
        if config.get("require_answer_tags", False):
            opens = len(_ANSWER_OPEN.findall(parts.answer))
            closes = len(_ANSWER_CLOSE.findall(parts.answer))
            if opens == 0:
                return fail("no_answer_tags")
            if opens != closes:
                return fail("unclosed_answer_tags")
            if not answer_body(parts.answer):
                return fail("empty_answer_tags")
        if config.get("require_boxed", False) and last_boxed(answer_body(parts.answer)) is None:
            return fail("no_boxed_answer")
        return Outcome(Status.PASS, 1.0, details)

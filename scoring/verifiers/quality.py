"""Repetition and truncation: cheap signs of a degenerate sample.

repetition: the share of repeated word n-grams in reasoning + answer,
`1 - distinct n-grams / n-grams` (open-r1's repetition penalty uses the same ratio). Fails above
`threshold`. Config keys: `n` (4), `threshold` (0.5), `min_ngrams` (20: shorter texts pass, the
ratio means little there). Score: 1 - ratio.

truncation: fails when generation stopped on the length limit (`finish_reason == "length"`) or
the reasoning block was opened and never closed. No config.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import parse_reasoning

_WORD = re.compile(r"\w+", re.U)


def repetition_ratio(text: str, n: int) -> tuple[float, int]:
    words = _WORD.findall(text.casefold())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1.0 - len(set(grams)) / len(grams), len(grams)


class RepetitionVerifier(GuardedVerifier):
    name: ClassVar[str] = "repetition"
    version: ClassVar[int] = 1

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        n = int(config.get("n", 4))
        threshold = float(config.get("threshold", 0.5))
        parts = parse_reasoning(candidate)
        ratio, count = repetition_ratio(parts.reasoning + "\n" + parts.answer, n)
        details = {"ratio": round(ratio, 4), "n": n, "ngrams": count, "threshold": threshold}
        if count < int(config.get("min_ngrams", 20)):
            return Outcome(Status.PASS, 1.0 - ratio, {**details, "reason": "too_short_to_judge"})
        ok = ratio <= threshold
        return Outcome(Status.PASS if ok else Status.FAIL, 1.0 - ratio, details)


class TruncationVerifier(GuardedVerifier):
    name: ClassVar[str] = "truncation"
    version: ClassVar[int] = 1

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        parts = parse_reasoning(candidate)
        details = {"finish_reason": candidate.finish_reason, "reasoning_closed": parts.closed}
        if candidate.finish_reason == "length":
            return Outcome(Status.FAIL, 0.0, {**details, "reason": "length"})
        if not parts.closed:
            return Outcome(Status.FAIL, 0.0, {**details, "reason": "unclosed_reasoning"})
        return Outcome(Status.PASS, 1.0, details)

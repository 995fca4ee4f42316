"""Repetition and truncation: cheap signs of a degenerate sample.

repetition: the share of repeated word n-grams in reasoning + answer,
`1 - distinct n-grams / n-grams` (open-r1's repetition penalty uses the same ratio). Fails above
`threshold`. Config keys: `n` (4), `threshold` (0.5), `min_ngrams` (20: shorter texts pass, the
ratio means little there). Score: 1 - ratio.

truncation: fails when generation stopped on the length limit (`finish_reason == "length"`) or
the reasoning block was opened and never closed. No config.

Both are linear in the length of the sample: words are counted once, each n-gram is hashed
once (a set of ints, not of tuples of strings), and `n` is clamped to 1..`MAX_N` so no config
makes the n-grams quadratic.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import parse_reasoning

_WORD = re.compile(r"\w+", re.U)
MAX_N = 16


def repetition_ratio(text: str, n: int) -> tuple[float, int]:
    n = min(max(n, 1), MAX_N)
    ids: dict[str, int] = {}
    words = [ids.setdefault(w, len(ids)) for w in _WORD.findall(text.casefold())]
    count = len(words) - n + 1
    if count <= 0:
        return 0.0, 0
    # Each n-gram as one hash of its word ids: zip walks the list once per position in n.
    distinct = {hash(gram) for gram in zip(*(words[i:] for i in range(n)), strict=False)}
    return 1.0 - len(distinct) / count, count


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

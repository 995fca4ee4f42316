"""Short answers: multiple choice (`mcq`) and normalised exact string match (`string`).

mcq: the chosen letter from the last `\\boxed{}` (`\\boxed{C}`, `\\boxed{(C)}`,
`\\boxed{\\text{C}}`) or an answer line ("Answer: (C)", "The answer is C."). Config key:
`letters` (default "ABCDEFGHIJ"). Gold: the letter, optionally in parentheses.

string: the answer from the last box, else an answer line, else the whole (one-line) answer
part; compared with the gold after normalisation: `\\text{}`-style wrappers removed, case
folded, punctuation dropped, whitespace collapsed. Config key: `max_answer_chars` (200: a longer
unboxed answer is not a short answer).
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import answer_body, final_answer, split_reasoning, strip_wrappers

_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
# ASCII punctuation plus typographic quotes and CJK full-width punctuation.
_PUNCT = str.maketrans(
    "",
    "",
    string.punctuation
    + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u3002\uff0c\u3001\uff01\uff1f\uff1a\uff1b\uff08\uff09",
)


def unwrap_text(s: str) -> str:
    prev = None
    while prev != s:
        prev, s = s, _TEXT_CMD.sub(r"\1", s)
    return s


def normalise_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", unwrap_text(strip_wrappers(s)))
    s = s.replace("\\", " ").casefold().translate(_PUNCT)
    return " ".join(s.split())


_LETTER = re.compile(r"^\(?([A-Za-z])\)?(?:[.:)]|\s|$)")


def choice_letter(s: str, letters: str) -> str | None:
    s = unwrap_text(strip_wrappers(s)).strip()
    m = _LETTER.match(s)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    m = re.fullmatch(r"(?:option|choice)\s*\(?([A-Za-z])\)?", s, re.I)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    return None


class McqVerifier(GuardedVerifier):
    name: ClassVar[str] = "mcq"
    version: ClassVar[int] = 1

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        letters = str(config.get("letters", "ABCDEFGHIJ")).upper()
        want = choice_letter(gold.answer or "", letters)
        if want is None:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "gold_not_a_choice"})
        _, answer = split_reasoning(candidate)
        found, how = final_answer(answer)
        got = choice_letter(found, letters) if found is not None else None
        details: dict[str, Any] = {"chosen": got, "extracted_from": how}
        if got is None:
            return Outcome(Status.FAIL, 0.0, {**details, "reason": "no_choice"})
        ok = got == want
        return Outcome(Status.PASS if ok else Status.FAIL, float(ok), details)


class StringVerifier(GuardedVerifier):
    name: ClassVar[str] = "string"
    version: ClassVar[int] = 1

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        want = normalise_text(gold.answer or "")
        if not want:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "no_gold"})
        _, answer = split_reasoning(candidate)
        found, how = final_answer(answer)
        if found is None:
            body = answer_body(answer).strip()
            max_chars = int(config.get("max_answer_chars", 200))
            if body and "\n" not in body and len(body) <= max_chars:
                found, how = body, "whole"
        if found is None:
            return Outcome(Status.FAIL, 0.0, {"reason": "no_answer"})
        got = normalise_text(found)
        ok = got == want
        details = {"extracted": found[:200], "extracted_from": how}
        return Outcome(Status.PASS if ok else Status.FAIL, float(ok), details)

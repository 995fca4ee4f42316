"""Short answers: multiple choice (`mcq`) and normalised exact string match (`string`).

Both take the answer from the answer part as `text.extract_answers` finds it: every box, else
the last answer line. Several boxes are one answer: they must all say the same thing, or the
sample fails (`several_answers`), so `\\boxed{A} or \\boxed{C}` is no way to cover two choices.
An extracted answer longer than `MAX_ANSWER_CHARS` (1000) fails (`answer_too_long`); more than
`MAX_BOXES` (16) boxes fail (`too_many_boxes`), a box that never closes fails (`unclosed_box`).
Everything here is linear in the length of the text (see `text.py`).

mcq: the chosen letter from `\\boxed{C}`, `\\boxed{(C)}`, `\\boxed{\\text{C}}`, or an answer line
("Answer: (C)", "The answer is C."). A second choice after the first ("C or A", "(C), (D)")
makes it no choice. Config key: `letters` (default "ABCDEFGHIJ"). Gold: the letter, optionally
in parentheses.

string: the answer from the boxes, else an answer line, else the whole (one-line) answer part;
compared with the gold after normalisation: `\\text{}`-style wrappers removed, case folded,
punctuation dropped, whitespace collapsed. Config key: `max_answer_chars` (200: a longer
unboxed answer is not a short answer).
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import (
    MAX_BOXES,
    Extracted,
    answer_body,
    extract_answers,
    split_reasoning,
    strip_wrappers,
    unwrap_box,
)

MAX_ANSWER_CHARS = 1000
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
# ASCII punctuation plus typographic quotes and CJK full-width punctuation.
_PUNCT = str.maketrans(
    "",
    "",
    string.punctuation
    + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u3002\uff0c\u3001\uff01\uff1f\uff1a\uff1b\uff08\uff09",
)


def unwrap_text(s: str) -> str:
    # One pass per nesting level, on answers of at most MAX_ANSWER_CHARS: bounded.
    prev = None
    while prev != s:
        prev, s = s, _TEXT_CMD.sub(r"\1", s)
    return s


def normalise_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", unwrap_text(strip_wrappers(s)))
    s = s.replace("\\", " ").casefold().translate(_PUNCT)
    return " ".join(s.split())


_LETTER = re.compile(r"^\(?([A-Za-z])\)?(?:[.:)]|\s|$)")
_OPTION = re.compile(r"(?:option|choice)\s*\(?([A-Za-z])\)?", re.I)
# Another choice after the first: a lone letter, not the start of a word or sentence ("a
# triangle", "I think"), so "C or A", "(C), (D)" and "C/D" name two.
_OTHER_CHOICE = re.compile(r"(?<![A-Za-z])\(?([A-Za-z])\)?(?![A-Za-z])(?!\s+[a-z])")


def choice_letter(s: str, letters: str) -> str | None:
    s = unwrap_text(strip_wrappers(s)).strip()
    m = _LETTER.match(s)
    if m is None:
        m = _OPTION.fullmatch(s)
    if m is None or m.group(1).upper() not in letters:
        return None
    got = m.group(1).upper()
    for other in _OTHER_CHOICE.finditer(s, m.end()):
        letter = other.group(1).upper()
        if letter in letters and letter != got:
            return None  # a hedge between two choices is no choice
    return got


def _bounded(found: Extracted) -> str | None:
    """The reason the extraction cannot be judged, or None."""
    if found.problem is not None:
        return found.problem
    if any(len(a) > MAX_ANSWER_CHARS for a in found.answers):
        return "answer_too_long"
    return None


class McqVerifier(GuardedVerifier):
    name: ClassVar[str] = "mcq"
    # 2: every box counts (two different choices fail), a hedge in the answer line fails,
    # answers are bounded.
    version: ClassVar[int] = 2

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        letters = str(config.get("letters", "ABCDEFGHIJ")).upper()
        want = choice_letter(gold.answer or "", letters)
        if want is None:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "gold_not_a_choice"})
        _, answer = split_reasoning(candidate)
        found = extract_answers(answer, MAX_BOXES)
        details: dict[str, Any] = {"chosen": None, "extracted_from": found.how}
        if (problem := _bounded(found)) is not None:
            return Outcome(Status.FAIL, 0.0, {**details, "reason": problem})
        chosen = {choice_letter(unwrap_box(a), letters) for a in found.answers}
        if len(chosen) > 1:
            return Outcome(Status.FAIL, 0.0, {**details, "reason": "several_answers"})
        got = next(iter(chosen), None)
        details["chosen"] = got
        if got is None:
            return Outcome(Status.FAIL, 0.0, {**details, "reason": "no_choice"})
        ok = got == want
        return Outcome(Status.PASS if ok else Status.FAIL, float(ok), details)


class StringVerifier(GuardedVerifier):
    name: ClassVar[str] = "string"
    # 2: every box counts (two different answers fail), answer lines end with their sentence,
    # answers are bounded.
    version: ClassVar[int] = 2

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        want = normalise_text(gold.answer or "")
        if not want:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "no_gold"})
        _, answer = split_reasoning(candidate)
        found = extract_answers(answer, MAX_BOXES)
        if (problem := _bounded(found)) is not None:
            return Outcome(Status.FAIL, 0.0, {"extracted_from": found.how, "reason": problem})
        answers, how = [unwrap_box(a) for a in found.answers], found.how
        if not answers:
            body = answer_body(answer).strip()
            max_chars = min(int(config.get("max_answer_chars", 200)), MAX_ANSWER_CHARS)
            if body and "\n" not in body and len(body) <= max_chars:
                answers, how = [body], "whole"
        if not answers:
            return Outcome(Status.FAIL, 0.0, {"reason": "no_answer"})
        got = {normalise_text(a) for a in answers}
        details: dict[str, Any] = {"extracted": answers[-1][:200], "extracted_from": how}
        if len(got) > 1:
            return Outcome(Status.FAIL, 0.0, {**details, "reason": "several_answers"})
        ok = got == {want}
        return Outcome(Status.PASS if ok else Status.FAIL, float(ok), details)

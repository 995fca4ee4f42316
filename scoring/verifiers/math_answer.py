"""Math: is the final answer equal to the gold answer?

Contributors are adversaries: a completion may be written to make a wrong answer pass (hedges,
equations that are false, prose inside a box) or to hang the scorer. So every rule below is one
a crafted text cannot get around, and every step has a bound.

Bounds (each a `fail` with `details["reason"]`)
------------------------------------------------

* At most `MAX_BOXES` (16) boxes in the answer part (`too_many_boxes`); a box that never closes
  is `unclosed_box` (the completion was cut inside its answer).
* Each extracted answer is at most `MAX_ANSWER_CHARS` (1000) characters (`answer_too_long`).
* Everything this process does with contributor text is linear in its length (see `text.py`),
  and on an answer within the bound. math-verify (regexes, ANTLR, sympy) runs only in a child
  process (`_math_worker.py`) under a soft SIGALRM limit and a hard kill: one `verify` call takes
  at most `MathVerifier.max_seconds` (the `timeout_s` budget, shared by every comparison of the
  call, plus the kill grace, a worker start-up and a second of work here), not counting time
  spent queued behind another thread's call to the same worker.

Rules
-----

1. Extraction: every `\\boxed{…}` / `\\fbox{…}` in the answer part (after the reasoning, inside
   the last `<answer>…</answer>` if any), else the value of the last "answer" line (`text.py`).
   Nothing: `no_answer`. With `search_reasoning`, an answer part with neither is replaced by
   the reasoning, under the same rules.
2. Several boxes are ONE answer set. Repeats (equal after normalisation) count once; one
   distinct box is judged alone. Several pass only when they equal the gold as sets: the gold
   is split at its top-level commas (after stripping an outer `\\{ \\}`; a comma with a digit
   before it and exactly three digits after it is a thousands separator, not a split), and
   every box must equal some element and every element some box, each pair by the rules below.
   So `\\boxed{1}, \\boxed{2}, \\boxed{3}` passes for `\\{1,2,3\\}` in any order and
   `\\boxed{x = 5}` then `\\boxed{5}` passes for `5`, while `\\boxed{7} or \\boxed{5}` fails for
   `5` (`answer_set_mismatch`): a hedge has a box that equals nothing in the gold.
3. Reading, for gold and answer alike: `1 000`, `1\\,000`, `10{,}000`, `1,000` are one number
   (not when a comma is followed by a space: `1, 2, 3` is a list); an integer followed by a proper
   fraction of integers is a mixed number (`4 4/9` is 40/9, `-2\\frac{1}{3}` is -7/3).
4. An answer is an expression, not prose (`text_in_answer`). First, a `\\text{}`, `\\mbox{}`,
   `\\textbf{}`, `\\mathrm{}`, … group of unit words is dropped wherever it stands, with a power
   after it (`UNIT_WORDS`: math-verify's own unit words less the ones that change a meaning,
   such as "more" or "increase", plus common units it lacks), and a group of one letter is that
   letter: math-verify itself cuts everything from the first `\\text{` to the end, which would
   read `5\\text{ cm} - 3\\text{ cm}` as 5. Then every word left in a text group must be a word
   of the gold (or a unit or function name), and a bare run of letters must be one of those or
   use only letters of the gold (variables; one letter is always a symbol). So
   `18\\text{ units}`, `\\text{cm}`, `30^\\circ` and a gold that is itself text (`\\text{(C)}`,
   `\\text{Monday}`) work, and `\\boxed{5\\text{ is not the answer}}` fails. Not an expression
   either (`not_an_expression`): two numbers side by side with only space between them
   (`7 \\quad 5`), once rule 3 has read thousands and mixed numbers; and commands that hide,
   overprint or annotate what is shown (`\\phantom{7}5` shows 5 and reads as 12; `\\color`,
   `\\cancel`, `\\rlap`, `\\tag`, …).
5. Relations: `=`, `<`, `\\le`, `\\approx`, `\\to`, `\\lor`, … (or their Unicode characters)
   anywhere outside a sub- or superscript. When the gold has none, the only relation an answer
   may have is a naming: a top-level chain `name = a = b` whose left side is a variable (`x`,
   `x_1`, `\\theta`, `(x, y)`, `f(x)`; not `\\pi`), and then every part after the name must
   equal the gold (`x = 2+3 = 5` passes for `5`, `x = 7 = 5` does not; `7 = 5` and
   `3x+4y+14=0` fail: `equation_not_a_value`; `x \\approx 5` fails: `relation_not_a_value`).
   A gold `x = 5` compares its last part with a value answer, and with the parts of an answer
   naming the same variable (`different_variable` otherwise). Other golds with relations are
   compared whole by math-verify. Equations are split only at a top-level `=` (not inside braces,
   brackets or subscripts): `S = \\sum_{k=0}^{n} k` is not `S = \\prod_{k=0}^{n} k`.
6. Undefined values fail: a literal zero denominator (`\\frac{4}{0}`, `4 0/0`: `zero_denominator`)
   before any parse (sympy's simplification of those is not reproducible from one process to
   the next), and an answer that math-verify parses to something containing nan or zoo
   (`undefined_value`, from the worker).

Comparison of two values, cheapest first
----------------------------------------

a. Fast path, where the verdict is certain to be math-verify's: both plain numbers (integers,
   decimals, `a/b`, `\\frac{a}{b}`, `\\dfrac12`) -> equal values pass; two exact rationals that
   differ fail; decimals that differ by far more than math-verify's 6-decimal rounding fail.
b. math-verify's own extraction and LaTeX normalisation, without its slow LaTeX-to-sympy step
   (`forms`, in the worker, cached here by text): two texts whose every regex match normalises
   alike parse to the same list, and math-verify passes a list against itself (`same_parse`);
   the strings latex2sympy would get are compared as numbers where they are plain numbers to it
   (`numbers`: `120^\\circ` is 120, `58,500` is 58500, `204_5` is 204, as math-verify reads them);
   and a plain number against a gold that is a collection (`(2,4)`, `[1,2) \\cup (3,4]`), a
   polynomial in free variables or a word of text fails (`shape`): math-verify cannot equate
   those with a number. A math-verify version this was not checked against falls through.
c. math-verify, gold first (`verify(gold, answer)`: the order matters, math-verify is
   asymmetric on purpose), in the child process, which caches each parsed gold and answer and
   which the parent kills when it overruns the budget (math-verify's SIGALRM timeouts work
   only in a main thread and cannot stop a long C call, so they are off). The worker is
   started lazily, once per process (a Celery child after fork gets its own), and restarted
   after a kill.

Gold that math-verify cannot parse gives `skipped`, never a pass (open-r1 #86, #293).

Known false-positive classes of math-verify, and what this verifier does:

* `\\pm 2021` against `2021`, either way round (math-verify #14): math-verify 0.9 compares the
  set {-2021, 2021} with 2021 and says no; we keep that (`fail`), and a test pins it.
* Equations whose sides collapse to 0 (math-verify #60) and equations against values: rule 5.
* A trailing `\\text{…}` is dropped by math-verify whatever it says: rule 4.
* Tiny values (math-verify #14): `1/2004!` against `1/2006!` both evaluate to 0 at 15 digits;
  a pass between two exact constants that differ by a relative 1e-9 at 60 digits is turned into
  a `fail` (guard `tiny_value`).

Details never carry the gold or anything parsed from it.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import (
    MAX_BOXES,
    brace_pairs,
    extract_answers,
    parse_reasoning,
    strip_span,
    unwrap_box,
)

WORKER_SCRIPT = Path(__file__).with_name("_math_worker.py")
DEFAULT_TIMEOUT_S = 5.0
# The parent waits this much longer than the worker's own soft limit before killing it.
KILL_GRACE_S = 2.0
# A cold worker imports sympy and math-verify (well under a second on an idle machine).
STARTUP_TIMEOUT_S = 30.0
# Work in this process for one call: linear scans of at most 2 x 524288 characters.
PARENT_SLACK_S = 1.0
WORKER_MEMORY_BYTES = 4 * 1024**3
MAX_ANSWER_CHARS = 1000


# ----------------------------------------------------------------------------- reading


_SPACING = re.compile(
    # A line break `\\` is kept: its second backslash does not start a spacing command.
    r"(\\\\)|\\[!,;: ]|~|\\(?:q?quad|enspace|thinspace|medspace|thickspace)(?![A-Za-z])"
    r"|\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle"
)
_SPACE = re.compile(r"\s+")
_MATH_WRAPPERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _spacing(m: re.Match[str]) -> str:
    return m.group(1) or " "


def strip_math_wrappers(s: str) -> str:
    """`$…$`, `\\(…\\)`, `\\[…\\]` around the whole text, once each."""
    s = s.strip()
    for left, right in _MATH_WRAPPERS:
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left) : -len(right)].strip()
    return s


def normalise(s: str) -> str:
    """Conservative LaTeX normalisation: only rewrites that cannot change the value."""
    s = _SPACING.sub(_spacing, strip_math_wrappers(s))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = strip_outer_group(s.strip())
    # Whitespace matters only between two letters/digits (`\pi r`, `1 000`): keep one there.
    out: list[str] = []
    for p in _SPACE.split(s):
        if not p:
            continue
        if out and out[-1][-1].isalnum() and p[0].isalnum():
            out.append(" ")
        out.append(p)
    # No trailing-period stripping: math-verify fails `\boxed{7.}` and the fast path must agree.
    return "".join(out)


def strip_outer_group(s: str) -> str:
    """`{595}` -> `595`: a TeX group around the whole answer changes nothing. Linear: the
    brace pairs are found in one pass, then the groups are peeled by index."""
    pairs: dict[int, int] | None = None
    lo, hi = 0, len(s)
    while hi - lo >= 2 and s[lo] == "{" and s[hi - 1] == "}":
        if pairs is None:
            pairs = brace_pairs(s)
        if pairs.get(lo) != hi - 1:
            break  # `{a}{b}`: the first group closes early
        lo, hi = strip_span(s, lo + 1, hi - 1)
    return s[lo:hi]


_INT = r"(?:0|[1-9]\d*)"
_NUMBER = re.compile(rf"^(-?){_INT}$")
_DECIMAL = re.compile(rf"^-?{_INT}\.\d+$")
_SLASH = re.compile(rf"^(-?)({_INT})/([1-9]\d*)$")
_FRAC = re.compile(rf"^(-?)\\frac\{{(-?)({_INT})\}}\{{([1-9]\d*)\}}$")
_FRAC_SHORT = re.compile(r"^(-?)\\frac(\d)([1-9])$")


def exact_number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_decimal) for plain numbers; None for anything else (commas, units, %…)."""
    if len(s) > MAX_ANSWER_CHARS:
        return None  # Python refuses to read ints of more than 4300 digits
    if _NUMBER.match(s):
        return Fraction(int(s)), False
    if _DECIMAL.match(s):
        return Fraction(s), True
    if m := _SLASH.match(s):
        sign = -1 if m.group(1) else 1
        return sign * Fraction(int(m.group(2)), int(m.group(3))), False
    if m := _FRAC.match(s):
        sign = (-1 if m.group(1) else 1) * (-1 if m.group(2) else 1)
        return sign * Fraction(int(m.group(3)), int(m.group(4))), False
    if m := _FRAC_SHORT.match(s):
        sign = -1 if m.group(1) else 1
        return sign * Fraction(int(m.group(2)), int(m.group(3))), False
    return None


# Digit groups: one separator throughout (`1 000 000`, `1{,}000`, `1,000`); normalise has
# already turned `\,`, `\ `, `~` and `,\!` into a space or nothing.
_GROUPED = re.compile(r"^(-?)([1-9]\d{0,2})(,|\{,\}| )(\d{3}(?:\3\d{3})*)(\.\d+)?$")
_LIST_COMMA = re.compile(r",\s")
_MIXED = (
    re.compile(r"^(-?)([1-9]\d*) ?\\frac\{(\d+)\}\{(\d+)\}$"),
    re.compile(r"^(-?)([1-9]\d*) ?\\frac(\d)(\d)$"),
    re.compile(r"^(-?)([1-9]\d*) (\d+)/(\d+)$"),  # `44/9` is not a mixed number: a space
)


def _as_one_number(raw: str, norm: str) -> str | None:
    """Rule 3: the plain number a person reads in digit groups or a mixed number, else None."""
    if len(norm) > MAX_ANSWER_CHARS:
        return None
    if m := _GROUPED.match(norm):
        if _LIST_COMMA.search(raw):
            return None  # `1, 000`: a comma and a space separate list elements
        digits = m.group(4).replace(m.group(3), "")
        return f"{m.group(1)}{m.group(2)}{digits}{m.group(5) or ''}"
    for pattern in _MIXED:
        if m := pattern.match(norm):
            whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
            if 0 < num < den:
                return f"{m.group(1)}\\frac{{{whole * den + num}}}{{{den}}}"
    return None


@dataclass(frozen=True)
class Value:
    """One side of a comparison: `raw` is the LaTeX math-verify gets (the text itself, or its
    rule-3 reading), `norm` its normalisation, `number` its value where it is a plain number."""

    raw: str
    norm: str
    number: tuple[Fraction, bool] | None


@lru_cache(maxsize=16384)
def read_value(text: str) -> Value:
    raw = strip_outer_group(strip_math_wrappers(text))
    raw = strip_outer_group(drop_units(raw).strip()) if "\\" in raw else raw
    norm = normalise(raw)
    if (one := _as_one_number(raw, norm)) is not None:
        raw = norm = one
    return Value(raw, norm, exact_number(norm))


def fast_compare(gold: str, answer: str) -> Status | None:
    """PASS/FAIL when math-verify's verdict is certain from the strings alone, else None."""
    g, a = read_value(gold), read_value(answer)
    if g.number is None or a.number is None:
        return None
    return compare_numbers(g.number, a.number)


def compare_numbers(g: tuple[Fraction, bool], a: tuple[Fraction, bool]) -> Status | None:
    """Two plain numbers from `exact_number`, as math-verify compares them; None if unsure."""
    (gv, gdec), (av, adec) = g, a
    if gv == av:
        return Status.PASS
    if not gdec and not adec:
        return Status.FAIL  # two exact rationals: math-verify compares them exactly
    # math-verify rounds floats to 6 decimals (at 15 significant digits): stay well clear.
    if max(abs(gv), abs(av)) < 10**6 and abs(gv - av) > Fraction(1, 10**5):
        return Status.FAIL
    return None


_DEGREES = re.compile(rf"^(-?{_INT}(?:\.\d+)?)\s*\^(?:\\circ|\{{\\circ\}})$")
_SUBSCRIPT = re.compile(rf"^(-?{_INT})_(?:\d|\{{\d+\}})$")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")


def latex2sympy_number(s: str) -> tuple[Fraction, bool] | None:
    """`exact_number` for a string exactly as math-verify hands it to latex2sympy (after its own
    normalisation), plus what latex2sympy reads as a plain number there: `120^\\circ` is 120
    (degrees are not converted), `204_5` is 204 (a subscript on a number is dropped), `58,500`
    is 58500 (digit groups, when that is the whole string). Tests pin each against math-verify.
    """
    if (m := _DEGREES.match(s)) or (m := _SUBSCRIPT.match(s)):
        s = m.group(1)
    elif _THOUSANDS.match(s):
        s = s.replace(",", "")
    return exact_number(s)


# ----------------------------------------------------------------------------- rule 4: words


def _word_set(words: str) -> frozenset[str]:
    """The whitespace-separated words of a literal: long vocabularies read better as text."""
    return frozenset(words.split())


# Commands whose argument is text: its words must be units, function names or gold words.
_TEXT_COMMANDS = _word_set(
    "text textbf textit textrm textnormal textsf texttt textup textsc emph mbox hbox "
    "mathrm mathit mathbf mathsf mathtt operatorname"
)
# Commands whose argument is a name, not math or prose (`\begin{pmatrix}`, `\mathbb{R}`).
_NAME_COMMANDS = _word_set("begin end color textcolor label mathbb mathcal mathfrak mathscr")
# math-verify's unit words (latex2sympy2_extended.math_normalization.units) that are units,
# plus common units it lacks. Left out on purpose: words that change a meaning ("more", "less",
# "increase", "decrease", "profit", "loss", "gain", "excess", "rise", "east", "west", "no
# change") and words that are not units ("are", "by", "per", "ratio", "number", "multiple").
UNIT_WORDS = _word_set(
    """
    unit square sq cubic cu cube
    m cm mm km meter metre centimeter centimetre millimeter millimetre kilometer kilometre mtr mt
    in inch inches ft foot feet yd yard mi mile mph kmh kph kmph
    g gm gram kg kilogram mg milligram lb pound oz ounce ton tonne
    l lt liter litre ml milliliter millilitre gal gallon quart pint cup cc
    s sec second min minute h hr hour day week month yr year am pm noon
    degree deg radian rad percent percentage pct
    dollar cent euro rupee rs acre hectare ohm
    th st nd rd
    point digit meal edge student child children man men woman women soldier monkey apple
    pie tile toy coin mark way round person people
    """
)
FUNCTION_WORDS = _word_set(
    """
    sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp sqrt
    max min gcd lcm mod det lim inf sup arg
    """
)
_WORDISH = re.compile(r"\\[A-Za-z]+|[^\W\d_]+")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Words:
    text: tuple[str, ...]  # words inside text groups, case-folded
    bare: tuple[str, ...]  # runs of letters outside them that are not command names


def words(s: str) -> Words:
    """The words of a LaTeX text (rule 4). Linear: one forward scan, brace pairs found once."""
    text: list[str] = []
    bare: list[str] = []
    pairs: dict[int, int] | None = None
    pos, n = 0, len(s)
    while (m := _WORDISH.search(s, pos)) is not None:
        token, pos = m.group(), m.end()
        if token[0] != "\\":
            bare.append(token.casefold())
            continue
        name = token[1:]
        if name not in _TEXT_COMMANDS and name not in _NAME_COMMANDS:
            continue
        i = pos
        while i < n and s[i].isspace():
            i += 1
        if i < n and s[i] == "{":
            if pairs is None:
                pairs = brace_pairs(s)
            end = pairs.get(i)
            if end is not None:
                if name in _TEXT_COMMANDS:
                    text += [w.casefold() for w in _LETTER_RUN.findall(s, i + 1, end)]
                pos = end + 1
    return Words(tuple(text), tuple(bare))


def _is_unit(word: str) -> bool:
    if word in UNIT_WORDS:
        return True
    return (word.endswith("s") and word[:-1] in UNIT_WORDS) or (
        word.endswith("es") and word[:-2] in UNIT_WORDS
    )


@lru_cache(maxsize=4096)
def _vocabulary(gold: str) -> tuple[frozenset[str], frozenset[str]]:
    """(words, letters) of a gold: what an answer may say beyond units and function names."""
    w = words(gold)
    all_words = frozenset(w.text + w.bare)
    return all_words, frozenset(c for word in all_words for c in word)


def stray_word(answer: str, gold: str) -> str | None:
    """The first word of the answer that rule 4 does not allow, or None. `answer` is read
    already (`drop_units`): a text group left in it is neither units nor one letter, so every
    word of it must be a word of the gold (or a unit or function name beside one)."""
    gold_words, gold_letters = _vocabulary(gold)

    def known(word: str) -> bool:
        return word in gold_words or word in FUNCTION_WORDS or _is_unit(word)

    w = words(answer)
    for word in w.text:
        if not known(word):
            return word
    for word in w.bare:
        if not (len(word) == 1 or known(word) or set(word) <= gold_letters):
            return word
    return None


_UNIT_POWER = re.compile(r"\s*\^\s*(?:\d|\{\s*\d\s*\})")
_EMPTY_POWER = re.compile(r"\^\s*\{\s*\}")


def drop_units(s: str) -> str:
    """Rule 4's reading of text groups: a group of unit words is dropped, with a power after it
    (`5\\text{ cm}^2 - 3\\text{ cm}^2` is `5 - 3`), a group of one letter is that letter
    (`2\\mathbf{v}` is `2{v}`), any other group stays.

    math-verify itself drops everything from the first `\\text{` to the end of the answer
    whenever the answer ends with `}`, so it would read `5\\text{ cm} - 3\\text{ cm}` as 5:
    here no text group is left for it to cut at, except words of the gold (rule 4 fails
    every other word). Linear: brace pairs are found once.
    """
    out: list[str] = []
    pairs: dict[int, int] | None = None
    copied = pos = 0
    n = len(s)
    while (m := _WORDISH.search(s, pos)) is not None:
        pos = m.end()
        name = m.group()[1:]
        if m.group()[0] != "\\" or name not in _TEXT_COMMANDS or name == "operatorname":
            continue
        i = pos
        while i < n and s[i].isspace():
            i += 1
        if i >= n or s[i] != "{":
            continue
        if pairs is None:
            pairs = brace_pairs(s)
        end = pairs.get(i)
        if end is None:
            continue
        content = s[i + 1 : end].strip()
        letters = _LETTER_RUN.findall(content)
        if letters and all(_is_unit(w.casefold()) for w in letters) and not _DIGIT.search(content):
            power = _UNIT_POWER.match(s, end + 1)
            out += (s[copied : m.start()], " ")
            copied = pos = power.end() if power else end + 1
        elif len(content) == 1 and content.isalpha():
            out += (s[copied : m.start()], "{", content, "}")
            copied = pos = end + 1
    if not out:
        return s
    out.append(s[copied:])
    dropped = _EMPTY_POWER.sub("", "".join(out))  # `5^{\\text{th}}` is 5
    return dropped if dropped.strip() else s


# ----------------------------------------------------------------------------- rule 6: zeros

# Each optional piece starts with its own character, so no two `\s*` compete for the same spaces.
_ZERO = r"(?:[({]\s*)?(?:[+-]\s*)?0+(?:\.0*)?(?:\s*[)}])?"
_DIVIDED_BY_ZERO = re.compile(rf"(?:/|\\div(?![A-Za-z])|\u00f7)\s*{_ZERO}(?![\d.])")
_ZERO_ARGUMENT = re.compile(rf"\s*{_ZERO}\s*")
_FRAC_COMMAND = re.compile(r"\\frac(?![A-Za-z])")
_COMMAND = re.compile(r"\\[A-Za-z]+|\\.")


def _frac_argument(s: str, i: int, pairs: dict[int, int]) -> tuple[int, int, int] | None:
    """(start, end, next) of the TeX argument at or after `i`: a group's inside, a command or
    one character; `next` is where the following argument may start."""
    n = len(s)
    while i < n and s[i].isspace():
        i += 1
    if i >= n:
        return None
    if s[i] == "{":
        end = pairs.get(i)
        return None if end is None else (i + 1, end, end + 1)
    if m := _COMMAND.match(s, i):
        return m.start(), m.end(), m.end()
    return i, i + 1, i + 1


def zero_denominator(norm: str) -> bool:
    """A literal zero denominator: `\\frac{4}{0}`, `\\frac40`, `4 0/0`, `1 \\div 0`."""
    if _DIVIDED_BY_ZERO.search(norm):
        return True
    if "\\frac" not in norm:
        return False
    pairs = brace_pairs(norm)
    for m in _FRAC_COMMAND.finditer(norm):
        first = _frac_argument(norm, m.end(), pairs)
        second = _frac_argument(norm, first[2], pairs) if first is not None else None
        if second is not None and _ZERO_ARGUMENT.fullmatch(norm, second[0], second[1]):
            return True
    return False


# Two numbers with only space between them: not an expression (`7 \quad 5`), once thousands
# and mixed numbers have been read (rule 3).
_JUXTAPOSED = re.compile(r"\d\s+\d")


# ----------------------------------------------------------------------------- rule 5: relations

# Relations and assignments written as Unicode characters instead of commands: not equal,
# approximately, less/greater or equal, arrows, or, and, not, (not) element of, equivalent,
# similar, congruent, proportional, much less/greater, subsets, divides, parallel,
# perpendicular, fullwidth less/greater.
_UNICODE_RELATIONS = (
    "\u2260\u2248\u2264\u2265\u2192\u2190\u21d2\u21d0\u21d4\u2194\u27f9\u27f8\u27fa"
    "\u2228\u2227\u00ac\u2209\u220b\u2261\u223c\u2243\u2245\u221d\u226a\u226b"
    "\u2282\u2286\u2283\u2287\u2223\u2225\u22a5\uff1c\uff1e"
)
_UNICODE_ASSIGNMENTS = "\uff1d\u2208"  # fullwidth =, element of
_STRUCTURE = re.compile(
    r"\\(?:begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+|\\.|<=|>=|!=|:=|[_^]\s*\{|[()\[\]{}=<>"
    + _UNICODE_RELATIONS
    + _UNICODE_ASSIGNMENTS
    + "]",
    re.S,
)
_OPENERS = frozenset({"(", "[", "{", "\\{", "\\lbrace", "\\langle", "\\lceil", "\\lfloor"})
_CLOSERS = frozenset({")", "]", "}", "\\}", "\\rbrace", "\\rangle", "\\rceil", "\\rfloor"})
_ASSIGNMENTS = frozenset({"=", ":=", "\\in", *_UNICODE_ASSIGNMENTS})
_RELATIONS = _word_set(
    """
    < > <= >= != \\lt \\gt \\le \\leq \\ge \\geq \\leqslant \\geqslant \\ne \\neq \\ll \\gg
    \\nless \\ngtr \\approx \\equiv \\sim \\simeq \\cong \\propto \\prec \\succ
    \\to \\rightarrow \\Rightarrow \\longrightarrow \\Longrightarrow \\implies \\impliedby
    \\leftarrow \\Leftarrow \\gets \\iff \\leftrightarrow \\Leftrightarrow \\Longleftrightarrow
    \\mapsto \\notin \\ni \\subset \\subseteq \\subsetneq \\supset \\supseteq \\supsetneq
    \\lor \\vee \\land \\wedge \\neg \\lnot \\mid \\parallel \\perp \\pmod \\bmod \\mod
    """
) | frozenset(_UNICODE_RELATIONS)


@dataclass(frozen=True)
class Shape:
    parts: tuple[str, ...]  # the text split at its top-level `=`, `:=`, `\in`
    relation: bool  # any relation or `=` outside a sub- or superscript, at any depth


def shape(s: str) -> Shape:
    """Rule 5's view of a text, in one forward scan. Brackets of any kind nest (intervals mix
    them); a group opened by `_` or `^` is a script: `\\sum_{k=0}` has no relation."""
    stack: list[bool] = []  # one entry per open bracket: is it (inside) a script?
    cuts: list[tuple[int, int]] = []
    relation = False
    for m in _STRUCTURE.finditer(s):
        token = m.group()
        in_script = bool(stack) and stack[-1]
        if token[0] in "_^":
            stack.append(True)
        elif token in _OPENERS or token.startswith("\\begin"):
            stack.append(in_script)
        elif token in _CLOSERS or token.startswith("\\end"):
            if stack:
                stack.pop()
        elif not in_script and (token in _ASSIGNMENTS or token in _RELATIONS):
            relation = True
            if not stack and token in _ASSIGNMENTS:
                cuts.append(m.span())
    parts, prev = [], 0
    for start, end in cuts:
        parts.append(s[prev:start].strip())
        prev = end
    parts.append(s[prev:].strip())
    return Shape(tuple(parts), relation)


_GREEK = (
    "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|"
    "nu|xi|rho|varrho|sigma|tau|upsilon|phi|varphi|chi|psi|omega|"
    "Gamma|Delta|Theta|Lambda|Xi|Sigma|Upsilon|Phi|Psi|Omega"  # no \pi: a constant
)
_NAME = rf"(?:[A-Za-z]|\\(?:{_GREEK})(?![A-Za-z]))(?:_(?:[A-Za-z0-9]|\{{[A-Za-z0-9,]+\}}))?'*"
# A variable, a tuple of variables, or a function of names and numbers: `x`, `(x,y)`, `f(2)`.
_NAMED = re.compile(rf"^(?:{_NAME}|\({_NAME}(?:,{_NAME})*\)|[A-Za-z]\([A-Za-z0-9,+\-]*\))$")


def is_name(text: str) -> bool:
    return bool(_NAMED.match(read_value(text).norm))


# ----------------------------------------------------------------------------- answer sets

_SPLIT = re.compile(r"\\[A-Za-z]+|\\.|[()\[\]{},]", re.S)
_THOUSANDS_COMMA = re.compile(r"\d{3}(?![\d])")


def gold_elements(gold: str) -> list[str]:
    """Rule 2: the gold as a list, split at its top-level commas after stripping an outer
    `\\{ \\}` (a thousands comma `10,000` does not split)."""
    s = strip_outer_group(strip_math_wrappers(gold))
    inner = _outer_braces(s)
    if inner is not None:
        s = inner
    elements, depth, prev = [], 0, 0
    for m in _SPLIT.finditer(s):
        token = m.group()
        if token in _OPENERS:
            depth += 1
        elif token in _CLOSERS:
            depth = max(0, depth - 1)
        elif token == "," and depth == 0:
            at = m.start()
            if at > 0 and s[at - 1].isdigit() and _THOUSANDS_COMMA.match(s, at + 1):
                continue
            elements.append(s[prev:at].strip())
            prev = m.end()
    elements.append(s[prev:].strip())
    return [e for e in elements if e]


_SET_OPEN = re.compile(r"^(?:\\left\s*)?\\\{")
_SET_CLOSE = re.compile(r"(?:\\right\s*)?\\\}$")


def _outer_braces(s: str) -> str | None:
    """The inside of `\\{ … \\}` when that pair encloses the whole text, else None."""
    opening, closing = _SET_OPEN.match(s), _SET_CLOSE.search(s)
    if opening is None or closing is None or closing.start() < opening.end():
        return None
    depth = 0
    for m in _SPLIT.finditer(s, opening.end(), closing.start()):
        if m.group() in _OPENERS:
            depth += 1
        elif m.group() in _CLOSERS:
            depth -= 1
            if depth < 0:
                return None  # `\{1\} \cup \{2\}`: the first set closes early
    return s[opening.end() : closing.start()].strip()


# ----------------------------------------------------------------------------- worker


class MathWorker:
    """One math-verify child process, spoken to over pipes; thread-safe (one call at a time)."""

    def __init__(self, memory_bytes: int = WORKER_MEMORY_BYTES) -> None:
        self.memory_bytes = memory_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the process that started the worker: a fork must start its own
        self._buf = b""
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), str(self.memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._pid = os.getpid()
        self._buf = b""
        ready = self._readline(time.monotonic() + STARTUP_TIMEOUT_S)
        if ready is None or json.loads(ready).get("status") != "ready":
            self._kill()
            raise RuntimeError("math-verify worker did not start")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _readline(self, deadline: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("math-verify worker exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def request(self, req: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            if self._proc is not None and (
                self._pid != os.getpid() or self._proc.poll() is not None
            ):
                self._proc = None  # inherited across fork, or died: start afresh
            if self._proc is None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps({**req, "timeout": timeout_s}).encode() + b"\n")
                self._proc.stdin.flush()
                line = self._readline(time.monotonic() + timeout_s + KILL_GRACE_S)
            except (EOFError, BrokenPipeError) as exc:
                self._kill()
                self.restarts += 1
                return {"status": "error", "error": type(exc).__name__, "message": str(exc)}
            if line is None:
                # Stuck where the soft limit cannot reach (a C call): kill, restart next time.
                self._kill()
                self.restarts += 1
                return {"status": "timeout", "killed": True}
            reply: dict[str, Any] = json.loads(line)
            return reply


_worker: MathWorker | None = None
_worker_lock = threading.Lock()


def worker() -> MathWorker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = MathWorker()
            atexit.register(_worker.close)
        return _worker


class _Uncertain(Exception):
    """The worker gave no verdict (timeout, error): the call's outcome is that reply."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("status"))
        self.reply = reply


class Budget:
    """The time one `verify` call may spend in the worker, shared by all its comparisons."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Uncertain({"status": "timeout"})
        return worker().request(req, left)


@dataclass(frozen=True)
class Form:
    """How math-verify's `parse` sees a text, from the worker's `form` (see there): texts with
    equal keys parse to the same list; `value` is the string latex2sympy gets, where plain."""

    key: str
    value: str | None


_FORMS_CACHE_SIZE = 65536
_forms_cache: dict[str, Form | None] = {}


def forms(texts: tuple[str, ...], timeout_s: float | Budget) -> list[Form | None]:
    """The worker's `form` of each text (None: unknown), cached here by text: a gold's is asked
    once, and the texts not yet known go in one round trip."""
    missing = [t for t in dict.fromkeys(texts) if t not in _forms_cache]
    if missing:
        budget = timeout_s if isinstance(timeout_s, Budget) else Budget(timeout_s)
        reply = budget.request({"op": "forms", "texts": missing})
        if reply.get("status") != "ok":
            raise _Uncertain(reply)
        if len(_forms_cache) + len(missing) > _FORMS_CACHE_SIZE:
            _forms_cache.clear()
        for text, f in zip(missing, reply["forms"], strict=True):
            _forms_cache[text] = None if f is None else Form(f["key"], f["value"])
    return [_forms_cache.get(t) for t in texts]


_CACHEABLE = frozenset({"pass", "fail", "answer_unparsable", "gold_unparsable"})
_VERDICT_CACHE_SIZE = 16384
_verdicts: dict[tuple[str, str], dict[str, Any]] = {}


def _math_verify(gold: str, answer: str, budget: Budget) -> dict[str, Any]:
    """math-verify's verdict by (gold, answer): samples of one prompt repeat answers, and a
    repeat then costs no round trip. Timeouts and errors raise, so they are not kept."""
    key = (gold, answer)
    if (cached := _verdicts.get(key)) is not None:
        return cached
    reply = budget.request({"op": "verify", "gold": gold, "answer": answer})
    if reply.get("status") not in _CACHEABLE:
        raise _Uncertain(reply)
    if len(_verdicts) >= _VERDICT_CACHE_SIZE:
        _verdicts.clear()
    _verdicts[key] = reply
    return reply


# ----------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Verdict:
    status: Status
    path: str
    reason: str | None = None
    info: tuple[tuple[str, Any], ...] = ()  # from the worker: parsed answer, guard, error


def _fail(path: str, reason: str) -> Verdict:
    return Verdict(Status.FAIL, path, reason)


_REASONS = {"answer_unparsable": "answer_unparsable", "gold_unparsable": "gold_unparsable"}
_STATUSES = {
    "pass": Status.PASS,
    "fail": Status.FAIL,
    "answer_unparsable": Status.FAIL,
    "gold_unparsable": Status.SKIPPED,
    "timeout": Status.TIMEOUT,
}


def _from_reply(reply: dict[str, Any]) -> Verdict:
    status = str(reply.get("status"))
    # Never the gold: a worker that still sent it must not put it into details.
    info = tuple((k, v) for k, v in reply.items() if k not in ("status", "gold"))
    reason = None
    if status != "pass":
        reason = _REASONS.get(status) or reply.get("guard")  # tiny_value, undefined_value
    return Verdict(_STATUSES.get(status, Status.ERROR), "math_verify", reason, info)


_SYMBOLIC = re.compile(r"^(?:[0-9A-Za-z+\-*/^(){}.\s]|\\(?:frac|sqrt|cdot|times)(?![A-Za-z]))+$")
# Letters that latex2sympy may read as constants (e, i) are not free variables.
_FREE_LETTER = re.compile(r"(?<![\\A-Za-z])[a-df-hj-zA-DF-HJ-Z](?![A-Za-z])")
_TEXT_ONLY = re.compile(r"^\\text\{[^{}\d]*[A-Za-z][^{}\d]*[A-Za-z][^{}\d]*\}$")
_COLLECTION_START = ("(", "[", "\\{")
_COLLECTION_END = (")", "]", "\\}")


def _is_collection(value: str) -> bool:
    """An interval, tuple or set of several elements, or a union: `(2,4)`, `[1,2) \\cup (3,4]`."""
    if "\\cup" in value:
        return True
    if not (value.startswith(_COLLECTION_START) and value.endswith(_COLLECTION_END)):
        return False
    inner = value[1:-1] if value[0] != "\\" else value[2:-2]
    return len(gold_elements(inner)) > 1 and not _opens_early(value)


def _opens_early(value: str) -> bool:
    """`(1,2)+(3,4)`: the first bracket closes before the end."""
    depth = 0
    for m in _SPLIT.finditer(value):
        if m.group() in _OPENERS:
            depth += 1
        elif m.group() in _CLOSERS:
            depth -= 1
            if depth == 0 and m.end() != len(value):
                return True
    return False


def certainly_not_a_number(gold_value: str) -> bool:
    """math-verify's normalised gold can never verify equal to a plain number: a collection of
    several elements, a polynomial in free variables, or a text of two or more letters."""
    if _is_collection(gold_value) or _TEXT_ONLY.match(gold_value):
        return True
    return bool(_SYMBOLIC.match(gold_value)) and bool(
        _FREE_LETTER.search(_COMMAND.sub(" ", gold_value))
    )


def compare_values(g: Value, a: Value, budget: Budget) -> Verdict:
    """One gold value against one answer value (no relations left to interpret)."""
    if g.number is not None and a.number is not None:
        verdict = compare_numbers(g.number, a.number)
        if verdict is not None:
            return Verdict(verdict, "fast")
    # Cheaper than math-verify's parse: its extraction and normalisation, without sympy.
    g_form, a_form = forms((g.raw, a.raw), budget)
    if g_form is not None and a_form is not None:
        if g_form.key == a_form.key:
            return Verdict(Status.PASS, "same_parse")
        g_num = latex2sympy_number(g_form.value) if g_form.value is not None else None
        a_num = latex2sympy_number(a_form.value) if a_form.value is not None else None
        if g_num is not None and a_num is not None:
            verdict = compare_numbers(g_num, a_num)
            if verdict is not None:
                return Verdict(verdict, "numbers")
        a_num = a_num or a.number
        g_value = g_form.value
        if a_num is not None and g_value is not None and certainly_not_a_number(g_value):
            return Verdict(Status.FAIL, "shape")
        if g_num is not None and a_form.value is not None and _is_collection(a_form.value):
            return Verdict(Status.FAIL, "shape")
    return _from_reply(_math_verify(g.raw, a.raw, budget))


# Commands that hide, overprint or annotate what is shown: the value a reader sees is not the
# one math-verify reads (`\\phantom{7}5` shows 5 and reads as 12).
_HIDING = _word_set(
    "phantom hphantom vphantom smash color textcolor colorbox fcolorbox cancel bcancel "
    "xcancel sout rlap llap clap mathrlap mathllap mathclap tag label ref"
)


def _hides(raw: str) -> bool:
    return any(m.group()[1:] in _HIDING for m in _COMMAND.finditer(raw))


def _not_an_expression(a: Value, gold: str) -> str | None:
    """Rules 4 and 6 on the whole answer: the reason it is not a value, or None."""
    if zero_denominator(a.norm):
        return "zero_denominator"
    if stray_word(a.raw, gold) is not None:
        return "text_in_answer"
    if _JUXTAPOSED.search(a.norm) or _hides(a.raw):
        return "not_an_expression"
    return None


def _every_part(g: Value, parts: tuple[str, ...], budget: Budget) -> Verdict:
    """The gold against each part of a chain after its name; the first that does not pass."""
    verdict = Verdict(Status.FAIL, "guard", "equation_not_a_value")  # no part: no value
    for part in parts:
        verdict = compare_values(g, read_value(part), budget)
        if verdict.status is not Status.PASS:
            break
    return verdict


def judge(gold: str, answer: str, budget: Budget) -> Verdict:
    """One gold against one extracted answer: rules 3 to 6, then `compare_values`."""
    fast = fast_compare(gold, answer)
    if fast is not None:
        return Verdict(fast, "fast")
    g, a = read_value(gold), read_value(answer)
    if (reason := _not_an_expression(a, gold)) is not None:
        return _fail("guard", reason)
    gs, ans = shape(g.raw), shape(a.raw)
    g_named = len(gs.parts) > 1 and is_name(gs.parts[0])
    a_named = len(ans.parts) > 1 and is_name(ans.parts[0])
    if not gs.relation:  # the gold is a value
        if not ans.relation:
            return compare_values(g, a, budget)
        if not a_named or any(shape(p).relation for p in ans.parts[1:]):
            reason = "equation_not_a_value" if len(ans.parts) > 1 else "relation_not_a_value"
            return _fail("guard", reason)
        return _every_part(g, ans.parts[1:], budget)
    if g_named and not any(shape(p).relation for p in gs.parts[1:]):  # the gold is `x = 5`
        g_value = read_value(gs.parts[-1])
        if not ans.relation:
            return compare_values(g_value, a, budget)
        if a_named:
            if read_value(ans.parts[0]).norm != read_value(gs.parts[0]).norm:
                return _fail("guard", "different_variable")
            return _every_part(g_value, ans.parts[1:], budget)
    if len(ans.parts) > 2:
        return _fail("guard", "equation_chain")
    return compare_values(g, a, budget)  # relations compared whole, by math-verify


def judge_set(gold: str, answers: list[str], budget: Budget) -> Verdict:
    """Rule 2: several distinct answers against the gold's elements, as sets: every answer
    equals some element and every element equals some answer. A hedge has an answer that
    equals no element, so it fails whatever else it says."""
    elements = gold_elements(gold)
    edges: dict[tuple[int, int], bool] = {}

    def equal(i: int, j: int) -> bool:
        if (i, j) not in edges:
            verdict = judge(elements[j], answers[i], budget)
            if verdict.status not in (Status.PASS, Status.FAIL):
                raise _Undecided(verdict)
            edges[(i, j)] = verdict.status is Status.PASS
        return edges[(i, j)]

    rows, columns = range(len(answers)), range(len(elements))
    try:
        # At most 16 answers: at most 16 x len(elements) comparisons, in one shared budget.
        every_answer = all(any(equal(i, j) for j in columns) for i in rows)
        if every_answer and all(any(equal(i, j) for i in rows) for j in columns):
            return Verdict(Status.PASS, "set")
    except _Undecided as exc:
        return exc.verdict
    return _fail("set", "answer_set_mismatch")


class _Undecided(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.status)
        self.verdict = verdict


# ----------------------------------------------------------------------------- verifier


class MathVerifier(GuardedVerifier):
    """Config keys: `timeout_s` (float, default 5: the worker time one call may use),
    `search_reasoning` (bool, default False: also look for an answer in the reasoning when the
    answer part has none)."""

    name: ClassVar[str] = "math"
    # 3: answer sets, equations split at the top level, prose in boxes, bounds, readings of
    # thousands and mixed numbers, answer lines as words (see the module docstring).
    version: ClassVar[int] = 3
    # The most one verify() call can take with the default config.
    max_seconds: ClassVar[float] = (
        DEFAULT_TIMEOUT_S + KILL_GRACE_S + STARTUP_TIMEOUT_S + PARENT_SLACK_S
    )

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        gold_text = (gold.answer or "").strip()
        if not gold_text:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "no_gold"})
        budget = Budget(float(config.get("timeout_s", DEFAULT_TIMEOUT_S)))
        parts = parse_reasoning(candidate)
        found = extract_answers(parts.answer, MAX_BOXES)
        if found.how == "none" and config.get("search_reasoning", False):
            found = extract_answers(parts.reasoning, MAX_BOXES)
        if found.problem is not None:
            return Outcome(Status.FAIL, 0.0, {"extracted_from": found.how, "reason": found.problem})
        if not found.answers:
            return Outcome(Status.FAIL, 0.0, {"reason": "no_answer"})
        if any(len(a) > MAX_ANSWER_CHARS for a in found.answers):
            return Outcome(
                Status.FAIL, 0.0, {"extracted_from": found.how, "reason": "answer_too_long"}
            )
        answers = _distinct([unwrap_box(a) for a in found.answers])
        details: dict[str, Any] = {
            "extracted": ", ".join(answers)[:200],
            "extracted_from": found.how,
        }
        if len(answers) > 1:
            details["answers"] = len(answers)
        if any("\\boxed" in a or "\\fbox" in a for a in answers):
            return _outcome(_fail("guard", "box_in_box"), details)
        try:
            if len(answers) == 1:
                verdict = judge(gold_text, answers[0], budget)
            else:
                verdict = judge_set(gold_text, answers, budget)
        except _Uncertain as exc:
            verdict = _from_reply(exc.reply)
        return _outcome(verdict, details)


def _distinct(answers: list[str]) -> list[str]:
    """Answers that read differently (`\\boxed{5} … \\boxed{5}` is one answer), first seen first."""
    seen: dict[str, str] = {}
    for a in answers:
        seen.setdefault(read_value(a).norm, a)
    return list(seen.values())


def _outcome(verdict: Verdict, details: dict[str, Any]) -> Outcome:
    details = {**details, **dict(verdict.info), "path": verdict.path}
    if verdict.reason is not None:
        details["reason"] = verdict.reason
    score = 1.0 if verdict.status is Status.PASS else 0.0
    return Outcome(verdict.status, score, details)

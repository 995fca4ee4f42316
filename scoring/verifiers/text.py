"""Pulling reasoning and answers out of completions: shared by every verifier.

Chat templates disagree on where `<think>` goes. DeepSeek-R1's and Qwen3's templates put the
opening `<think>\\n` into the *prompt*, so the completion starts inside the block and has only
`</think>`; others leave both tags to the model; servers with a reasoning parser (vLLM, SGLang)
move the block into a separate `reasoning` field and strip the tags. open-r1's format reward
matched `^<think>...` and so failed every sample of the first kind (open-r1 #235, #256); here a
completion with a closing tag but no opening one counts as reasoning opened by the template.

Everything here reads contributor text, up to the upload caps (524,288 characters a field), and
does so in linear time: every scan moves forward (`str.find`, a regex without nested or lazy
quantifiers that could rescan, a brace matcher that visits each character once), so no input
can make a scorer hang. The rules each reader keeps:

* `answer_body`: the inside of the last closed `<answer>…</answer>` (an `<answer>` inside an open
  one is text; a `</answer>` without an open one is text), else the whole text.
* `find_boxes`: every `\\boxed{…}` / `\\fbox{…}` (braces nested, `\\{` escaped) or `\\boxed 5`
  (TeX's next token) left to right, a box inside a box being part of the outer one's content;
  the scan stops after `limit + 1` boxes (more than `limit` is the caller's `too_many_boxes`)
  and at a box whose braces never close (`cut`: the completion was cut inside it).
* `answer_line`: the word "answer" (as a word: not "answered"), the LAST one in the text, then
  an optional "is"/"was" and `:`, then the value up to the end of its sentence: a newline, or a
  period followed by whitespace or the end (a decimal point is not an end).
* `extract_code`: the last ```python block, else the last fenced block, else the whole body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scoring.verifiers.base import Candidate

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Verifiers judge at most this many boxes in an answer: more is not a final answer but a list of
# attempts, and the cap bounds the work per sample (each box may cost a math-verify parse).
MAX_BOXES = 16
_ANSWER_TAG = re.compile(r"<(/?)answer>", re.I)


@dataclass(frozen=True)
class ReasoningParts:
    reasoning: str
    answer: str
    # "field": the uploaded `reasoning` field; "tags": <think>…</think> in the completion;
    # "template": only </think> (the template opened the block); "unclosed": <think> never closed;
    # "none": no reasoning at all.
    source: str
    closed: bool
    blocks: int  # how many </think> the completion has


def parse_reasoning(candidate: Candidate) -> ReasoningParts:
    text = candidate.completion or ""
    blocks = text.count(THINK_CLOSE)
    if candidate.reasoning is not None and candidate.reasoning.strip():
        answer = text.rsplit(THINK_CLOSE, 1)[-1] if blocks else text.replace(THINK_OPEN, "")
        return ReasoningParts(candidate.reasoning.strip(), answer.strip(), "field", True, blocks)
    if blocks:
        before, answer = text.rsplit(THINK_CLOSE, 1)
        stripped = before.lstrip()
        source = "tags" if stripped.startswith(THINK_OPEN) else "template"
        reasoning = before.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()
        return ReasoningParts(reasoning, answer.strip(), source, True, blocks)
    if THINK_OPEN in text:
        # Opened and never closed: everything after the tag is (cut-off) reasoning.
        before, reasoning = text.split(THINK_OPEN, 1)
        return ReasoningParts(reasoning.strip(), before.strip(), "unclosed", False, 0)
    return ReasoningParts("", text.strip(), "none", True, 0)


def split_reasoning(candidate: Candidate) -> tuple[str, str]:
    """(reasoning, answer_text), both stripped; either may be empty."""
    parts = parse_reasoning(candidate)
    return parts.reasoning, parts.answer


def answer_body(answer_text: str) -> str:
    """The inside of the last <answer>…</answer> if there is one, else the text itself.

    One pass over the tags (a lazy `<answer>(.*?)</answer>` rescans the rest of the text from
    every unclosed `<answer>`: quadratic). Same pairs as that regex's `findall`.
    """
    opened: int | None = None
    last: tuple[int, int] | None = None
    for m in _ANSWER_TAG.finditer(answer_text):
        if m.group(1):
            if opened is not None:
                last, opened = (opened, m.start()), None
        elif opened is None:
            opened = m.end()
    return answer_text[last[0] : last[1]].strip() if last else answer_text


# ----------------------------------------------------------------------------- braces and boxes

# A brace, or a backslash with the character it escapes (`\{`, `\}`, `\\`): one regex step each,
# so a brace scan jumps over plain text at C speed and never looks at a character twice.
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.S)


def closing_brace(text: str, open_at: int) -> int:
    """Index of the `}` that closes the `{` at `open_at`, or -1 when it never closes."""
    depth = 0
    for m in _BRACE_OR_ESCAPE.finditer(text, open_at):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return -1


def brace_pairs(text: str) -> dict[int, int]:
    """Every balanced `{` index -> its `}` index, in one pass (escaped braces are not braces)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for m in _BRACE_OR_ESCAPE.finditer(text):
        c = m.group()
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BOX_TOKEN = re.compile(r"[^\s$]+")


@dataclass(frozen=True)
class Boxes:
    contents: tuple[str, ...]  # every complete box, left to right (at most limit + 1)
    cut: bool  # a box whose braces never close ends the text


def find_boxes(text: str, limit: int = MAX_BOXES) -> Boxes:
    """The boxes of `text` (see the module docstring); linear in len(text)."""
    out: list[str] = []
    pos = 0
    n = len(text)
    while len(out) <= limit:
        m = _BOX.search(text, pos)
        if m is None:
            break
        i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "{":
            end = closing_brace(text, i)
            if end < 0:
                return Boxes(tuple(out), cut=True)
            out.append(text[i + 1 : end].strip())
            pos = end + 1
            continue
        # `\boxed 5`: TeX takes the next token; take up to whitespace, `$` or the end.
        token = _BOX_TOKEN.match(text, i)
        if token is not None:
            value = token.group().rstrip(".,;").strip()
            if value:
                out.append(value)
            pos = token.end()
        else:
            pos = i  # `\boxed` before a newline or `$`: no box; i > m.start(), so we move on
    return Boxes(tuple(out), cut=False)


def unwrap_box(s: str) -> str:
    """`\\boxed{\\boxed{5}}` -> `5`: a box around the whole content changes nothing. Linear."""
    pairs: dict[int, int] | None = None
    lo, hi = 0, len(s)
    while True:
        m = _BOX.match(s, lo)
        if m is None:
            return s[lo:hi]
        i = m.end()
        while i < hi and s[i] in " \t":
            i += 1
        if i >= hi or s[i] != "{":
            return s[lo:hi]
        if pairs is None:
            pairs = brace_pairs(s)
        if pairs.get(i) != hi - 1:
            return s[lo:hi]
        lo, hi = strip_span(s, i + 1, hi - 1)


def strip_span(s: str, lo: int, hi: int) -> tuple[int, int]:
    """`s[lo:hi]` without its leading and trailing whitespace, as indices (no copy)."""
    while lo < hi and s[lo].isspace():
        lo += 1
    while hi > lo and s[hi - 1].isspace():
        hi -= 1
    return lo, hi


def last_boxed(text: str) -> str | None:
    """Contents of the last `\\boxed{…}` / `\\fbox{…}` (nested braces), or `\\boxed 5`.

    None when there is no box, or the last one is cut off (unbalanced braces).
    """
    boxes = _all_boxes(text)
    if boxes.cut or not boxes.contents:
        return None
    return unwrap_box(boxes.contents[-1])


def _all_boxes(text: str) -> Boxes:
    # Every box: the scan is linear whatever the count, and only the last is kept.
    return find_boxes(text, limit=len(text))


# ----------------------------------------------------------------------------- answer lines

# The word, not "answered", and not the name of an `<answer>` tag.
_ANSWER_WORD = re.compile(r"(?<![</])\banswer\b(?!>)", re.I)
# After the word: emphasis and spaces, an optional "is"/"was", then a colon. Each part is a
# single character class or a literal word, so the match never backtracks across the text.
_ANSWER_LABEL = re.compile(r"[\s*_]*(?:(?:is|was)\b)?[\s*_:\uff1a]*", re.I)
# The value ends with its sentence: a newline, or a period followed by whitespace or the end.
_SENTENCE_END = re.compile(r"\n|\.(?=\s|$)|\u3002")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"), ("*", "*"))


def strip_wrappers(s: str) -> str:
    """`$…$`, `\\(…\\)`, `**…**` and a final period removed, repeatedly. Linear: it moves two
    indices inward and copies once."""
    lo, hi = strip_span(s, 0, len(s))
    changed = True
    while changed and lo < hi:
        changed = False
        for left, right in _WRAPPERS:
            if (
                hi - lo > len(left) + len(right)
                and s.startswith(left, lo, hi)
                and s.endswith(right, lo, hi)
            ):
                lo, hi = strip_span(s, lo + len(left), hi - len(right))
                changed = True
        if s.endswith(".", lo, hi) and not s.endswith("..", lo, hi):
            lo, hi = strip_span(s, lo, hi - 1)
            changed = True
    return s[lo:hi]


def answer_line(text: str) -> str | None:
    """The value after the last "answer" word ("Final answer: …", "The answer is …"), to the
    end of its sentence, unwrapped; None when there is no such word or its value is empty."""
    last = None
    for m in _ANSWER_WORD.finditer(text):
        last = m  # only the last one counts: an earlier answer may have been retracted
    if last is None:
        return None
    label = _ANSWER_LABEL.match(text, last.end())
    start = label.end() if label else last.end()
    end_match = _SENTENCE_END.search(text, start)
    end = end_match.start() if end_match else len(text)
    value = strip_wrappers(text[start:end])
    return value or None


# ----------------------------------------------------------------------------- final answers


@dataclass(frozen=True)
class Extracted:
    """What the answer part commits to: every box in it (in order), else the answer line."""

    answers: tuple[str, ...]
    how: str  # "boxed" | "line" | "none"
    # "too_many_boxes" (more than the limit) | "unclosed_box" (a box that never closes)
    problem: str | None = None


def extract_answers(answer_text: str, max_boxes: int = MAX_BOXES) -> Extracted:
    """Every box of the answer body, else its answer line (see the module docstring).

    Several boxes are several answers: a verifier judges them together (a hedge such as
    `\\boxed{7} or \\boxed{5}` must not pass as its last box).
    """
    body = answer_body(answer_text)
    boxes = find_boxes(body, max_boxes)
    if len(boxes.contents) > max_boxes:
        return Extracted(boxes.contents, "boxed", "too_many_boxes")
    if boxes.cut:
        return Extracted(boxes.contents, "boxed", "unclosed_box")
    if boxes.contents:
        return Extracted(boxes.contents, "boxed")
    line = answer_line(body)
    if line is not None:
        return Extracted((line,), "line")
    return Extracted((), "none")


def final_answer(answer_text: str) -> tuple[str | None, str]:
    """(answer, how): from the last box, else an answer line; how is boxed/line/none."""
    body = answer_body(answer_text)
    boxed = last_boxed(body)
    if boxed is not None:
        return boxed, "boxed"
    line = answer_line(body)
    if line is not None:
        return line, "line"
    return None, "none"


# ----------------------------------------------------------------------------- code blocks

_FENCE = "```"
_FENCE_LANG = re.compile(r"[ \t]*([\w+-]*)")
_PYTHON_TAGS = ("python", "py", "python3")


def fenced_blocks(body: str) -> list[tuple[str, str]]:
    """(language tag, code) of each fenced block, as the regex
    ```` ```[ \\t]*([\\w+-]*)[^\\n]*\\n(.*?)``` ```` (DOTALL) finds them, in linear time.

    That regex is quadratic on a long run of backticks; here each block is an opening fence,
    the end of its line, then the next fence after that line, all found with `str.find`. When
    an opening fence has no newline after it, or no closing fence after its line, no later
    fence can have either, so the scan stops there.
    """
    blocks: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = body.find(_FENCE, pos)
        if start < 0:
            break
        newline = body.find("\n", start + len(_FENCE))
        if newline < 0:
            break
        end = body.find(_FENCE, newline + 1)
        if end < 0:
            break
        lang = _FENCE_LANG.match(body, start + len(_FENCE))
        blocks.append((lang.group(1) if lang else "", body[newline + 1 : end]))
        pos = end + len(_FENCE)
    return blocks


def extract_code(answer_text: str) -> str:
    """The program in an answer: the last ```python (`py`, `python3`) block of the answer body,
    else its last fenced block of any tag, else the whole body."""
    body = answer_body(answer_text)
    blocks = fenced_blocks(body)
    python = [code for lang, code in blocks if lang.lower() in _PYTHON_TAGS]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    return body

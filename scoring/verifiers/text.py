"""Pulling reasoning and answers out of completions: shared by every verifier.

Chat templates disagree on where `<think>` goes. DeepSeek-R1's and Qwen3's templates put the
opening `<think>\\n` into the *prompt*, so the completion starts inside the block and has only
`</think>`; others leave both tags to the model; servers with a reasoning parser (vLLM, SGLang)
move the block into a separate `reasoning` field and strip the tags. open-r1's format reward
matched `^<think>...` and so failed every sample of the first kind (open-r1 #235, #256); here a
completion with a closing tag but no opening one counts as reasoning opened by the template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scoring.verifiers.base import Candidate

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)


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
    """The inside of the last <answer>…</answer> if there is one, else the text itself."""
    found = _ANSWER_TAG.findall(answer_text)
    return found[-1].strip() if found else answer_text


_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def last_boxed(text: str) -> str | None:
    """Contents of the last `\\boxed{…}` / `\\fbox{…}` (nested braces), or `\\boxed 5`.

    None when there is no box, or the last one is cut off (unbalanced braces).
    """
    matches = list(_BOX.finditer(text))
    for m in reversed(matches):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                c = text[j]
                if c == "\\":
                    continue
                if c == "{" and text[j - 1] != "\\":
                    depth += 1
                elif c == "}" and text[j - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
            return None  # the last box is unbalanced: the completion was cut inside it
        # `\boxed 5`: TeX takes the next token; take up to whitespace, `$` or the end.
        rest = re.match(r"[^\s$]+", text[i:])
        if rest:
            return rest.group(0).rstrip(".,;").strip()
    return None


_ANSWER_LINE = re.compile(
    # Markdown emphasis around the label ("**Answer:** (C)") is skipped with the colon.
    r"(?:final\s+answer|the\s+answer|answer)[\s*_]*(?:is|was)?[\s*_:\uff1a]*(?P<ans>[^\n]+)",
    re.I,
)
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"), ("*", "*"))


def strip_wrappers(s: str) -> str:
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for left, right in _WRAPPERS:
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : -len(right)].strip()
                changed = True
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
            changed = True
    return s


def answer_line(text: str) -> str | None:
    """The last "Final answer: …" / "The answer is …" line's answer, unwrapped."""
    found = list(_ANSWER_LINE.finditer(text))
    if not found:
        return None
    ans = strip_wrappers(found[-1].group("ans"))
    return ans or None


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

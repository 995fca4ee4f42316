"""The linear readers give what the regexes and loops they replaced gave (those were quadratic
on crafted input): compared on many random texts made of the characters that matter."""

from __future__ import annotations

import random
import re

import pytest

from scoring.verifiers.language import strip_math
from scoring.verifiers.quality import repetition_ratio
from scoring.verifiers.text import answer_body, extract_code, fenced_blocks, strip_wrappers

SEEDS = range(3)
ROUNDS = 2000


def texts(alphabet: list[str], seed: int, most: int = 12) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(alphabet, k=rng.randint(0, most))) for _ in range(ROUNDS)]


# --- what they replaced -------------------------------------------------------------------------

_OLD_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.S)
_OLD_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_OLD_MATH = re.compile(
    r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|```.*?```|`[^`]*`|\\[A-Za-z]+", re.S
)
_OLD_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"), ("*", "*"))


def old_extract_program(answer_text: str) -> str:
    found = _OLD_ANSWER_TAG.findall(answer_text)
    body = found[-1].strip() if found else answer_text
    blocks = _OLD_FENCE.findall(body)
    python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if python:
        return str(python[-1])
    if blocks:
        return str(blocks[-1][1])
    return body


def old_answer_body(answer_text: str) -> str:
    found = _OLD_ANSWER_TAG.findall(answer_text)
    return str(found[-1]).strip() if found else answer_text


def old_strip_wrappers(s: str) -> str:
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for left, right in _OLD_WRAPPERS:
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : -len(right)].strip()
                changed = True
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
            changed = True
    return s


def old_repetition_ratio(text: str, n: int) -> tuple[float, int]:
    words = re.findall(r"\w+", text.casefold())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1.0 - len(set(grams)) / len(grams), len(grams)


# --- equivalence --------------------------------------------------------------------------------

_CODE_ALPHABET = ["`", "```", "```python", "```py", "```js", "\n", " ", "\t", "x", "<answer>",
                  "</answer>", "<ANSWER>", "-", "+"]  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
def test_extract_code_is_the_old_extract_program(seed: int) -> None:
    for text in texts(_CODE_ALPHABET, seed):
        assert extract_code(text) == old_extract_program(text), repr(text)


def test_extract_code_cases() -> None:
    text = "```python\nfirst()\n```\ntext\n```py\nsecond()\n```\n```\nbare()\n```"
    assert extract_code(text) == "second()\n"
    assert extract_code("```\nbare()\n```") == "bare()\n"
    assert extract_code("```js\nx\n```\n```\ny\n```") == "y\n"
    assert extract_code("print(1)") == "print(1)"
    assert extract_code("<answer>```python\nx()\n```</answer>") == "x()\n"
    assert extract_code("````python\nx\n```") == "x\n"  # four backticks: no tag, as before
    assert fenced_blocks("```python3 extra words\ncode\n```") == [("python3", "code\n")]
    assert extract_code("```python\nnever closed") == "```python\nnever closed"


@pytest.mark.parametrize("seed", SEEDS)
def test_answer_body_is_the_old_regex(seed: int) -> None:
    alphabet = ["<answer>", "</answer>", "<Answer>", "</ANSWER>", "a", " ", "\n", "<", ">"]
    for text in texts(alphabet, seed):
        assert answer_body(text) == old_answer_body(text), repr(text)


@pytest.mark.parametrize("seed", SEEDS)
def test_strip_math_is_the_old_regex(seed: int) -> None:
    alphabet = ["$", "$$", "\\[", "\\]", "\\(", "\\)", "`", "```", "\\", "ab", " ", "\n", "x"]
    for text in texts(alphabet, seed):
        assert strip_math(text) == _OLD_MATH.sub(" ", text), repr(text)


@pytest.mark.parametrize("seed", SEEDS)
def test_strip_wrappers_is_the_old_loop(seed: int) -> None:
    alphabet = ["$", "$$", "\\(", "\\)", "\\[", "\\]", "*", "**", ".", " ", "5", "\n"]
    for text in texts(alphabet, seed):
        assert strip_wrappers(text) == old_strip_wrappers(text), repr(text)


@pytest.mark.parametrize("seed", SEEDS)
def test_repetition_ratio_is_the_old_one(seed: int) -> None:
    rng = random.Random(seed)
    for text in texts(["a ", "b ", "c ", "A ", "d\n", "-"], seed, most=60):
        n = rng.randint(1, 6)
        assert repetition_ratio(text, n) == pytest.approx(old_repetition_ratio(text, n))

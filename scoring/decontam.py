"""Decontamination of prompts against benchmark sets: the word 8-gram rule of open-r1 and s1.

A prompt is *contaminated* when, after normalisation, it shares at least one run of ``n``
consecutive words (``n = 8`` by default) with any problem of a configured benchmark
(MATH-500, AIME 2024, AIME 2025, ...). The lead wires the verdict into the models: contaminated
prompts are kept but flagged, and excluded from every selection.

Normalisation (:func:`normalize_words`), applied identically to benchmark problems and prompts:

1. Unicode NFKC, then ``str.casefold()`` (a stronger ``lower()``): full-width digits,
   ligatures and case changes fold together.
2. LaTeX layout commands (:data:`LAYOUT_COMMANDS`: ``\\frac``, ``\\dfrac``, ``\\left``,
   ``\\right``, ``\\text``, ``\\mathrm``, ``\\quad``, ...) are removed; their arguments stay,
   so ``$\\dfrac{m}{n}$`` reads ``m n`` like ``m/n``. Other commands keep their name as a word
   (``\\sin x`` reads ``sin x``, ``\\pi`` reads ``pi``), as a copy typed without LaTeX would.
3. Every run of characters that is not a letter or digit (punctuation, ``$``, ``\\``, braces,
   ``_``, ``^``, whitespace, newlines) becomes one space; the text is then split on whitespace.

open-r1 and s1 only lowercase and fold whitespace. Steps 1-2 and the punctuation part of 3 go
further on purpose, so that lightly reworded copies are still caught: a problem re-typeset
(``\\dfrac`` for ``\\frac``, ``$x$`` for ``x``, ``9-kilometer`` for ``$9$-kilometer``), with
punctuation moved, or glued to a different sentence (``"...walk.Please reason"``) keeps its
8-grams. The price: stock phrases shared by many problems ("where m and n are relatively prime
positive integers", "find the remainder when n is divided by 1000") are 8-grams too, and a fresh
prompt written in the same house style can be flagged. On the shipped data, 73 of the 560
MATH-500/AIME problems share an 8-gram with another problem (49 with plain lowercasing), and
none of the 1,319 GSM8K test questions matches any of them under either normalisation.

Rules that follow from the definition:

- A text of fewer than ``n`` words has no ``n``-gram: it never matches, and a benchmark
  problem of fewer than ``n`` words can never be matched (15 of MATH-500's problems, e.g.
  "Simplify $\\sqrt{242}$."; :attr:`BenchmarkIndex.unmatchable` lists them).
- Only the first :data:`MAX_CHARS` characters of a prompt, and of those the first
  :data:`MAX_WORDS` words, are examined, so :meth:`BenchmarkIndex.check` is bounded in time and
  memory for any input (O(MAX_CHARS) work, at most ``MAX_WORDS - n + 1`` lookups). A copy of a
  benchmark problem placed past that point in a huge prompt is not seen.

The index (:class:`BenchmarkIndex`) is one dict from n-gram text to the benchmark items that
contain it, built once from JSONL files configured by path; checking a prompt is one set lookup
per word (is it a benchmark word at all?) and one dict lookup per n-gram position inside runs of
benchmark words, independent of the number of benchmark items. Keys are the n-gram strings
themselves rather than 64-bit hashes of them: Python hashes them anyway, there are no
collisions to rule out, and the memory is small (about 20,000 keys for MATH-500 + AIME).

Django-free except :func:`load_benchmark_index`, which reads the paths from the settings
(imported lazily).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_N = 8
# Bounds on what one check examines; see the module docstring.
MAX_CHARS = 200_000
MAX_WORDS = 20_000

# Text fields of a benchmark row, in order of preference, and its source-id fields.
TEXT_FIELDS = ("problem", "question", "prompt")
ID_FIELDS = ("id", "unique_id")

# LaTeX commands that only lay text out: removed with their backslash (their arguments stay).
# Matched after casefold, and only as whole control words (\\frac, not \\fraction).
LAYOUT_COMMANDS = [
    "frac",
    "dfrac",
    "tfrac",
    "cfrac",
    "left",
    "right",
    "big",
    "bigl",
    "bigr",
    "bigg",
    "biggl",
    "biggr",
    "displaystyle",
    "textstyle",
    "text",
    "textrm",
    "textbf",
    "textit",
    "textnormal",
    "mathrm",
    "mathbf",
    "mathit",
    "mathbb",
    "mathcal",
    "mbox",
    "operatorname",
    "quad",
    "qquad",
    "limits",
    "nolimits",
    "hspace",
    "vspace",
]
_LAYOUT = re.compile(r"\\(?:" + "|".join(LAYOUT_COMMANDS) + r")(?![^\W\d_])")
# A run of anything that is not a letter or digit ([\W_]: \W keeps "_", markup here too).
_NON_WORD = re.compile(r"[\W_]+")


def normalize_words(
    text: str, *, max_chars: int | None = MAX_CHARS, max_words: int | None = MAX_WORDS
) -> list[str]:
    """The words of ``text`` after the normalisation of the module docstring.

    Only ``text[:max_chars]`` is read (a word cut at that boundary stays cut) and at most
    ``max_words`` words are returned; ``None`` lifts a bound (benchmark files only).
    """
    if max_chars is not None:
        text = text[:max_chars]
    text = _LAYOUT.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    words = _NON_WORD.sub(" ", text).split()
    if max_words is not None:
        del words[max_words:]
    return words


def word_ngrams(words: Sequence[str], n: int) -> Iterator[str]:
    """Each run of ``n`` consecutive words, joined by single spaces, in order."""
    for i in range(len(words) - n + 1):
        yield " ".join(words[i : i + n])


@dataclass(frozen=True, slots=True)
class Match:
    """A benchmark item a prompt overlaps: its benchmark, its source id, and one shared n-gram
    (normalised text: the first in the prompt's word order)."""

    benchmark: str
    item_id: str
    ngram: str


@dataclass(frozen=True, slots=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    text: str


class BenchmarkIndex:
    """Every word n-gram of a set of benchmark problems, for O(words) contamination checks."""

    def __init__(self, items: Iterable[BenchmarkItem], n: int = DEFAULT_N) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, not {n!r}")
        self.n = n
        self._items: list[tuple[str, str]] = []
        # n-gram -> indices into self._items (an int when one item has it, the common case).
        self._grams: dict[str, int | tuple[int, ...]] = {}
        counts: dict[str, int] = {}
        unmatchable: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for item in items:
            key = (item.benchmark, item.item_id)
            if key in seen:
                raise ValueError(f"duplicate item id {item.item_id!r} in {item.benchmark!r}")
            seen.add(key)
            counts[item.benchmark] = counts.get(item.benchmark, 0) + 1
            words = normalize_words(item.text, max_chars=None, max_words=None)
            if len(words) < n:
                unmatchable.append(key)
            idx = len(self._items)
            self._items.append(key)
            for gram in word_ngrams(words, n):
                prev = self._grams.get(gram)
                if prev is None:
                    self._grams[gram] = idx
                elif isinstance(prev, int):
                    if prev != idx:
                        self._grams[gram] = (prev, idx)
                elif idx not in prev:
                    self._grams[gram] = (*prev, idx)
        # Every word of a held n-gram.
        self._vocab: frozenset[str] = frozenset(w for gram in self._grams for w in gram.split())
        self.benchmarks: dict[str, int] = counts
        """Items per benchmark name."""
        self.unmatchable: list[tuple[str, str]] = unmatchable
        """(benchmark, item id) of problems shorter than ``n`` words: no prompt can match them."""

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], n: int = DEFAULT_N) -> BenchmarkIndex:
        """An index of JSONL benchmark files, each named by its file stem (``math500.jsonl`` ->
        ``math500``); see :func:`read_benchmark` for the row format."""
        items: list[BenchmarkItem] = []
        names: set[str] = set()
        for path in paths:
            name = Path(path).stem
            if name in names:
                raise ValueError(f"two benchmark files are named {name!r}")
            names.add(name)
            items.extend(read_benchmark(path, name))
        return cls(items, n=n)

    @classmethod
    def from_texts(
        cls, benchmarks: Mapping[str, Mapping[str, str]], n: int = DEFAULT_N
    ) -> BenchmarkIndex:
        """An index of in-memory benchmarks: ``{name: {item_id: problem text}}``."""
        return cls(
            (
                BenchmarkItem(name, item_id, text)
                for name, rows in benchmarks.items()
                for item_id, text in rows.items()
            ),
            n=n,
        )

    def __len__(self) -> int:
        """Distinct n-grams held."""
        return len(self._grams)

    def _hits(self, text: str) -> Iterator[tuple[str, int | tuple[int, ...]]]:
        grams, vocab, n = self._grams, self._vocab, self.n
        if not grams:
            return
        words = normalize_words(text)
        # Only windows made wholly of benchmark words can hit: look up the n-grams of each run
        # of such words (a clean prompt has few long runs, so most positions cost a set lookup).
        start = 0
        for end in range(len(words) + 1):
            if end == len(words) or words[end] not in vocab:
                for i in range(start, end - n + 1):
                    gram = " ".join(words[i : i + n])
                    hit = grams.get(gram)
                    if hit is not None:
                        yield gram, hit
                start = end + 1

    def check(self, text: str) -> list[Match]:
        """The benchmark items ``text`` shares an n-gram with: one :class:`Match` per item, in
        the order of their first shared n-gram in ``text`` (ties: index order). Empty when clean.
        """
        found: dict[int, str] = {}
        for gram, hit in self._hits(text):
            for idx in (hit,) if isinstance(hit, int) else hit:
                found.setdefault(idx, gram)
        return [Match(*self._items[idx], ngram) for idx, ngram in found.items()]

    def is_contaminated(self, text: str) -> bool:
        """Whether ``text`` shares any n-gram with a benchmark item (stops at the first)."""
        return next(self._hits(text), None) is not None


def read_benchmark(path: str | Path, name: str | None = None) -> list[BenchmarkItem]:
    """The problems of one JSONL benchmark file.

    Each non-blank line is a JSON object; its text is the first string among ``problem``,
    ``question``, ``prompt``; its source id is ``id`` or ``unique_id`` (as a string), else the
    1-based line number. Raises ``ValueError`` (with ``path:line``) on a line that is not such an
    object, on a repeated id, and on a file with no rows; ``OSError`` when it can't be read.
    """
    path = Path(path)
    name = path.stem if name is None else name
    items: list[BenchmarkItem] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: a row must be a JSON object")
            text = next((row[f] for f in TEXT_FIELDS if isinstance(row.get(f), str)), None)
            if text is None:
                raise ValueError(f"{where}: no text field (one of {', '.join(TEXT_FIELDS)})")
            raw_id = next((row[f] for f in ID_FIELDS if row.get(f) not in (None, "")), lineno)
            items.append(BenchmarkItem(name, str(raw_id), text))
    if not items:
        raise ValueError(f"{path}: no benchmark rows")
    return items


@lru_cache(maxsize=4)
def _cached_index(paths: tuple[str, ...], n: int) -> BenchmarkIndex:
    return BenchmarkIndex.from_paths(paths, n=n)


def load_benchmark_index(
    paths: Sequence[str | Path] | None = None, n: int | None = None
) -> BenchmarkIndex:
    """The process-wide index of the configured benchmarks, built once per (paths, n).

    ``paths`` defaults to the Django setting ``THINKPOOL_DECONTAM_BENCHMARKS`` (a list of
    JSONL paths, relative ones taken from ``BASE_DIR``; unset or empty: an empty index, which
    flags nothing) and ``n`` to ``THINKPOOL_DECONTAM_NGRAM`` (default 8). Files changed on disk
    are not re-read; :func:`clear_benchmark_index_cache` drops the cached indexes.
    """
    if paths is None or n is None:
        from django.conf import settings

        if paths is None:
            base = Path(getattr(settings, "BASE_DIR", "."))
            paths = [base / p for p in getattr(settings, "THINKPOOL_DECONTAM_BENCHMARKS", ())]
        if n is None:
            n = int(getattr(settings, "THINKPOOL_DECONTAM_NGRAM", DEFAULT_N))
    return _cached_index(tuple(str(p) for p in paths), n)


def clear_benchmark_index_cache() -> None:
    _cached_index.cache_clear()

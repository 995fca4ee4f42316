"""Exact and near-duplicate detection for samples (within a prompt) and prompts (at import).

A library: pure functions and one in-memory index, no Django. The lead wires it into models,
tasks and selections.

Normalisation
    ``normalise(text)`` is NFKC, then ``str.lower()``, then every run of whitespace folded to one
    space (leading and trailing whitespace dropped). Exact duplicates are texts whose normalised
    forms are equal: ``normalised_hash`` is the hex SHA-256 of the normalised text, UTF-8.

What a sample's text is
    A sample is deduplicated as the dataset would publish it: reasoning and answer together, in
    the R1 layout ``"<think>\\n{reasoning}\\n</think>\\n\\n{answer}"`` (``published_text``). Every
    function takes the answer as ``text`` and the reasoning as the keyword ``reasoning``; with
    ``reasoning=None`` (or empty) only ``text`` counts, which is what prompts and reasoning-less
    samples use. The ``</think>`` marker survives normalisation, so moving words across the
    reasoning/answer boundary gives a different text.

Near duplicates
    Word shingles (``shingle_size`` consecutive words of the normalised text, default 5), a
    datasketch MinHash of them (``num_perm`` permutations, default 128, scheme ``affine32`` and a
    fixed ``seed``, so a signature is the same in every process and run), and a datasketch
    MinHashLSH index. LSH only proposes candidates; each is then checked against the estimated
    Jaccard similarity (the share of equal MinHash values), and only candidates at or above
    ``threshold`` (default 0.8) count. The estimate has a standard error of about
    sqrt(J(1-J)/num_perm), 0.035 at J=0.8 with 128 permutations, so pairs close to the threshold
    fall either way (deterministically for a given pair). The LSH bands are tuned for recall
    (``lsh_weights``: false positives cost one cheap check, false negatives are missed duplicates):
    with the defaults (14 bands of 9 rows) a pair is proposed with probability 0.87 at J=0.8, 0.975
    at 0.85, 0.999 at 0.9.

    Texts with fewer words than ``shingle_size`` have no shingle: they fall back to the exact hash
    alone (so two different one-line answers are never near duplicates of each other).

Bounds
    Normalising and hashing are linear in the text's length (the exact hash covers the whole text).
    The MinHash reads only the first ``max_words`` words (default 50,000, about 300 KB of English),
    so the shingle hashing per text is bounded whatever the upload size; two texts that differ
    only after ``max_words`` words are near duplicates (estimated Jaccard 1.0) but not exact ones.
    An index keeps, per indexed text, its exact hash, its MinHash values (4 bytes a permutation)
    and the LSH band keys: about 2 KB per text at 128 permutations.

Which sample is kept (the order rule)
    Within a near-duplicate cluster the first stored sample, i.e. the lowest id, is kept and every
    later one is flagged. ``NearDuplicateIndex.add`` implements it when samples are added in
    ascending id order (incremental arrival and a rebuild from scratch then agree): a sample is
    flagged when it is an exact or near duplicate of a sample already kept, and ``add`` returns the
    earliest such kept sample; a flagged sample is not indexed, so it never flags anything itself.
    Clusters are thus stars around kept samples, never chains: an attacker who submits A, then B
    near A, then C near B but not near A gets B flagged and C kept (C differs from everything kept,
    which is the point of keeping it), and no sequence of submissions can get a sample flagged
    that is not near a kept, earlier one. Arrival order decides only which member of a cluster is
    kept, and that member is always the earliest one. The index has no removal: when a kept sample
    leaves (banned, quarantined, re-judged), rebuild the prompt's index from its remaining samples
    in id order, since samples it had flagged may now be kept.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

import numpy as np
from datasketch import MinHash, MinHashLSH

__all__ = [
    "DEFAULT_SETTINGS",
    "DedupSettings",
    "NearDuplicateIndex",
    "TextSignature",
    "find_near_duplicate_prompts",
    "normalise",
    "normalised_hash",
    "published_text",
    "text_signature",
]

K = TypeVar("K", bound=Hashable)

# Pinned, so that a datasketch release changing its default scheme changes no signature.
_SCHEME = "affine32"


@dataclass(frozen=True)
class DedupSettings:
    """How near duplicates are found. Signatures are comparable only under equal settings."""

    shingle_size: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    seed: int = 1
    max_words: int = 50_000
    # (false-positive weight, false-negative weight) for choosing the LSH bands; see the module.
    lsh_weights: tuple[float, float] = (0.1, 0.9)

    def __post_init__(self) -> None:
        if not isinstance(self.shingle_size, int) or self.shingle_size < 1:
            raise ValueError("shingle_size must be an integer >= 1")
        if not isinstance(self.num_perm, int) or not 2 <= self.num_perm <= 4096:
            raise ValueError("num_perm must be an integer in [2, 4096]")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError("seed must be a non-negative integer")
        if not isinstance(self.max_words, int) or self.max_words < self.shingle_size:
            raise ValueError("max_words must be an integer >= shingle_size")
        fp, fn = self.lsh_weights
        if fp < 0 or fn < 0 or fp + fn != 1.0:
            raise ValueError("lsh_weights must be two non-negative weights summing to 1")

    @property
    def fingerprint(self) -> str:
        """What a stored signature depends on: store it beside signatures, compare on reuse."""
        return (
            f"nfkc-lower-ws/k{self.shingle_size}/p{self.num_perm}/s{self.seed}"
            f"/w{self.max_words}/{_SCHEME}"
        )


DEFAULT_SETTINGS = DedupSettings()


@dataclass(frozen=True)
class TextSignature:
    """A text's exact hash and, when it has at least one shingle, its MinHash values."""

    exact: str
    minhash: np.ndarray | None  # uint32, num_perm values; None for a short text

    def minhash_bytes(self) -> bytes | None:
        """The MinHash values as little-endian uint32 (4 * num_perm bytes), for storage."""
        if self.minhash is None:
            return None
        return self.minhash.astype("<u4").tobytes()

    @classmethod
    def from_stored(cls, exact: str, minhash: bytes | None) -> TextSignature:
        if minhash is None:
            return cls(exact=exact, minhash=None)
        if len(minhash) % 4:
            raise ValueError("stored MinHash must be a whole number of uint32 values")
        return cls(exact=exact, minhash=np.frombuffer(minhash, dtype="<u4").astype(np.uint32))


def published_text(text: str, reasoning: str | None = None) -> str:
    """The completion as the dataset publishes it: R1's think block, then the answer."""
    if not reasoning:
        return text
    return f"<think>\n{reasoning}\n</think>\n\n{text}"


def normalise(text: str) -> str:
    """NFKC, lowercased, whitespace runs folded to one space, stripped."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def _sha256(normalised: str) -> str:
    return hashlib.sha256(normalised.encode("utf-8", "surrogatepass")).hexdigest()


def normalised_hash(text: str, *, reasoning: str | None = None) -> str:
    """Hex SHA-256 of the normalised published text (see the module for ``reasoning``)."""
    return _sha256(normalise(published_text(text, reasoning)))


@lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> np.ndarray:
    return MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME).permutations


@lru_cache(maxsize=16)
def _lsh_params(threshold: float, num_perm: int, weights: tuple[float, float]) -> tuple[int, int]:
    """datasketch's optimal (bands, rows), once per settings: it integrates numerically."""
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    except ValueError:
        # Fewer than two bands (very few permutations, or a threshold near 1): rows of one.
        return num_perm, 1
    return int(lsh.b), int(lsh.r)


def _signature_of_normalised(normalised: str, settings: DedupSettings) -> TextSignature:
    exact = _sha256(normalised)
    # At most max_words words are split off: the rest of a huge text stays one unread piece.
    words = normalised.split(" ", settings.max_words)[: settings.max_words] if normalised else []
    k = settings.shingle_size
    if len(words) < k:
        return TextSignature(exact=exact, minhash=None)
    shingles = {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}
    mh = MinHash(
        num_perm=settings.num_perm,
        seed=settings.seed,
        scheme=_SCHEME,
        permutations=_permutations(settings.num_perm, settings.seed),
    )
    # Sorted, so that the hashing order (not that it matters to a minimum) is reproducible too.
    mh.update_batch([s.encode("utf-8", "surrogatepass") for s in sorted(shingles)])
    return TextSignature(exact=exact, minhash=np.asarray(mh.hashvalues, dtype=np.uint32))


def text_signature(
    text: str, *, reasoning: str | None = None, settings: DedupSettings = DEFAULT_SETTINGS
) -> TextSignature:
    """Exact hash and MinHash of a (published) text; compute once and store if you like."""
    return _signature_of_normalised(normalise(published_text(text, reasoning)), settings)


class NearDuplicateIndex(Generic[K]):
    """The kept texts of one dedup scope (the samples of one prompt), in the order added.

    ``add`` flags a text that is an exact or near duplicate of an earlier kept one and returns
    that one's key (the earliest, if several); otherwise it keeps the text and returns None.
    ``insert`` indexes a text unconditionally (prompt import indexes every prompt).
    """

    def __init__(self, settings: DedupSettings = DEFAULT_SETTINGS) -> None:
        self.settings = settings
        self._lsh = MinHashLSH(
            threshold=settings.threshold,
            num_perm=settings.num_perm,
            params=_lsh_params(settings.threshold, settings.num_perm, settings.lsh_weights),
        )
        self._order: dict[K, int] = {}
        self._exact: dict[str, K] = {}
        self._minhashes: dict[K, np.ndarray] = {}
        # Minimum number of equal MinHash values for an estimated Jaccard >= threshold.
        self._min_equal = int(np.ceil(settings.threshold * settings.num_perm - 1e-9))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def _wrap(self, minhash: np.ndarray) -> MinHash:
        return MinHash(
            seed=self.settings.seed,
            scheme=_SCHEME,
            hashvalues=minhash,
            permutations=_permutations(self.settings.num_perm, self.settings.seed),
        )

    def _check(self, signature: TextSignature) -> None:
        if signature.minhash is not None and signature.minhash.shape != (self.settings.num_perm,):
            raise ValueError(
                f"signature has {signature.minhash.shape[0]} MinHash values, "
                f"the index expects {self.settings.num_perm}"
            )

    def query_signature(self, signature: TextSignature) -> K | None:
        """The earliest indexed key that this signature duplicates, or None."""
        self._check(signature)
        matches: list[K] = []
        if signature.exact in self._exact:
            matches.append(self._exact[signature.exact])
        if signature.minhash is not None and self._minhashes:
            for key in self._lsh.query(self._wrap(signature.minhash)):
                equal = int(np.count_nonzero(self._minhashes[key] == signature.minhash))
                if equal >= self._min_equal:
                    matches.append(key)
        if not matches:
            return None
        return min(matches, key=self._order.__getitem__)

    def insert_signature(self, key: K, signature: TextSignature) -> None:
        """Index a text whatever it duplicates. Keys are unique within an index."""
        self._check(signature)
        if key in self._order:
            raise ValueError(f"key {key!r} is already in the index")
        self._order[key] = len(self._order)
        self._exact.setdefault(signature.exact, key)
        if signature.minhash is not None:
            self._minhashes[key] = signature.minhash
            self._lsh.insert(key, self._wrap(signature.minhash), check_duplication=False)

    def add_signature(self, key: K, signature: TextSignature) -> K | None:
        """Keep the text (None) or flag it: the key of the earliest kept text it duplicates."""
        if key in self._order:
            raise ValueError(f"key {key!r} is already in the index")
        match = self.query_signature(signature)
        if match is None:
            self.insert_signature(key, signature)
        return match

    def query(self, text: str, *, reasoning: str | None = None) -> K | None:
        return self.query_signature(
            text_signature(text, reasoning=reasoning, settings=self.settings)
        )

    def insert(self, key: K, text: str, *, reasoning: str | None = None) -> None:
        self.insert_signature(
            key, text_signature(text, reasoning=reasoning, settings=self.settings)
        )

    def add(self, key: K, text: str, *, reasoning: str | None = None) -> K | None:
        return self.add_signature(
            key, text_signature(text, reasoning=reasoning, settings=self.settings)
        )


def find_near_duplicate_prompts(
    new: Sequence[tuple[K, str]],
    existing: Iterable[tuple[K, str]],
    settings: DedupSettings = DEFAULT_SETTINGS,
) -> dict[K, K]:
    """Near-duplicate (or exact) prompts of an import: ``{new_key: earlier_key}``.

    Every existing prompt is indexed first (in the order given; pass them by ascending id), then
    each new prompt in order: it maps to the earliest existing prompt it duplicates, else to the
    earliest earlier new one; new prompts with neither are absent from the result. All prompts
    are indexed, flagged or not (import only flags, it drops nothing). Keys must be unique across
    both sequences. Memory is about 2 KB per prompt (see the module).
    """
    index: NearDuplicateIndex[K] = NearDuplicateIndex(settings)
    for key, text in existing:
        index.insert(key, text)
    found: dict[K, K] = {}
    for key, text in new:
        signature = text_signature(text, settings=settings)
        match = index.query_signature(signature)
        index.insert_signature(key, signature)
        if match is not None:
            found[key] = match
    return found

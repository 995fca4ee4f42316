"""scoring.dedup: exact hashes, MinHash LSH near duplicates, the order rule, prompt import."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from scoring.dedup import (
    DEFAULT_SETTINGS,
    DedupSettings,
    NearDuplicateIndex,
    TextSignature,
    find_near_duplicate_prompts,
    normalise,
    normalised_hash,
    published_text,
    text_signature,
)

REPO = Path(__file__).resolve().parents[2]

# Two independent solutions of the same problem (the sum 1 + 2 + ... + 100), hand-written.
PAIRING = (
    "We want the sum of the integers from one to one hundred. Write the sum twice, once in "
    "increasing order and once in decreasing order, one line above the other. Adding the two "
    "lines column by column, the first column gives one plus one hundred, which is one hundred "
    "and one. The second column gives two plus ninety nine, again one hundred and one. Every "
    "column behaves the same way, because moving one step to the right adds one to the top "
    "number and removes one from the bottom number, so the column total never changes. There "
    "are one hundred columns, so the two lines together add up to one hundred times one hundred "
    "and one, that is ten thousand one hundred. Each line is the sum we want, and the two lines "
    "are equal, so the sum is half of ten thousand one hundred, which is five thousand and fifty. "
    "As a check, the same argument for the numbers from one to four gives four columns of five, "
    "twenty in total, and half of that is ten, which matches one plus two plus three plus four. "
    "The pairing idea works for any count of numbers, even or odd, since we never needed to split "
    "the list into halves, and it is the classic trick attributed to the young Gauss in school. "
    "Therefore the answer is five thousand and fifty."
)
INDUCTION = (
    "Let S of n denote the sum of the first n positive integers. I claim that S of n equals n "
    "times n plus one, divided by two. For n equal to one the claim reads one equals one times "
    "two over two, which holds. Suppose the claim holds for some n. Then S of n plus one is S of "
    "n plus the next integer n plus one, which by the hypothesis is n times n plus one over two "
    "plus n plus one. Factor out n plus one to get n plus one times the quantity n over two plus "
    "one, and n over two plus one is n plus two over two. So S of n plus one equals n plus one "
    "times n plus two over two, which is exactly the claim for the next value. By induction the "
    "formula holds for every positive integer. Substituting n equal to one hundred gives one "
    "hundred times one hundred and one over two. One hundred over two is fifty, and fifty times "
    "one hundred and one is five thousand and fifty. A quick sanity check with small values: "
    "the first three integers add to six, and three times four over two is six as well. The final "
    "answer is 5050."
)

# A hand-written competition-style prompt (about 90 words) and a different problem.
PROMPT_WALK = (
    "Every morning Lena walks a nine kilometre loop around the lake and then rests at a bench "
    "by the harbour. When she walks at a constant speed of s kilometres per hour, the loop and "
    "the rest take her four hours in total, including t minutes on the bench. When she walks "
    "two kilometres per hour faster, the loop and the rest take her two hours and twenty four "
    "minutes, again including t minutes on the bench. Suppose Lena walks at s plus one half "
    "kilometres per hour. Find the number of minutes the loop takes her, including the t "
    "minutes she spends resting on the bench by the harbour."
)
PROMPT_GRID = (
    "Consider the paths of length sixteen that follow the lines from the lower left corner to "
    "the upper right corner of an eight by eight grid of unit squares. Find the number of such "
    "paths that change direction exactly four times, counting a path that starts to the right "
    "and a path that starts upwards as different paths, and explain why every such path splits "
    "into exactly five straight segments whose lengths are positive integers with the segments "
    "alternating between horizontal and vertical moves from the start to the end of the path."
)
# The same opening as PROMPT_WALK, then another question.
DIFFERENT_WALK = (
    "Every morning Lena walks a nine kilometre loop around the lake and then rests at a bench "
    "by the harbour. One day she starts at seven o'clock and her friend starts the same loop in "
    "the opposite direction twenty minutes later, walking one kilometre per hour slower than "
    "Lena. They meet for the first time exactly when Lena has completed two thirds of the loop. "
    "Find the speed of Lena in kilometres per hour, and find the time at which they meet again."
)


def _words(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _jaccard(a: str, b: str, k: int = 5) -> float:
    wa, wb = normalise(a).split(), normalise(b).split()
    sa = {tuple(wa[i : i + k]) for i in range(len(wa) - k + 1)}
    sb = {tuple(wb[i : i + k]) for i in range(len(wb) - k + 1)}
    return len(sa & sb) / len(sa | sb)


def _estimate(a: str, b: str, settings: DedupSettings = DEFAULT_SETTINGS) -> float:
    ma = text_signature(a, settings=settings).minhash
    mb = text_signature(b, settings=settings).minhash
    assert ma is not None and mb is not None
    return float(np.count_nonzero(ma == mb)) / settings.num_perm


# --- normalisation and exact hashes ---------------------------------------------------------


def test_normalise_folds_case_whitespace_and_compatibility_forms():
    assert normalise("  Hello\tWORLD \n\n again\u00a0now ") == "hello world again now"
    # NFKC: the "fi" ligature, full-width digits and a superscript become their plain forms.
    assert normalise("\ufb01nd \uff11\uff12 x\u00b2") == "find 12 x2"
    assert normalise("") == ""
    assert normalise(" \n\t ") == ""


def test_normalised_hash_is_sha256_of_the_normalised_text():
    assert normalised_hash("hello world") == hashlib.sha256(b"hello world").hexdigest()
    assert (
        normalised_hash("  Hello \n\tWORLD  ")
        == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    )
    assert normalised_hash("") == hashlib.sha256(b"").hexdigest()


def test_exact_duplicates_after_whitespace_and_case_changes():
    shouted = PAIRING.upper().replace(" ", "  \n ")
    assert normalised_hash(shouted) == normalised_hash(PAIRING)
    assert normalised_hash(PAIRING + " extra") != normalised_hash(PAIRING)
    index: NearDuplicateIndex[int] = NearDuplicateIndex()
    assert index.add(1, PAIRING) is None
    assert index.add(2, shouted) == 1
    assert index.add(3, INDUCTION) is None
    assert len(index) == 2  # the flagged sample is not indexed
    assert 2 not in index and 1 in index and 3 in index


def test_reasoning_is_part_of_the_published_text():
    assert published_text("42") == "42"
    assert published_text("42", "") == "42"
    assert published_text("42", "think hard") == "<think>\nthink hard\n</think>\n\n42"
    same_answer_a = normalised_hash("The answer is 42.", reasoning="Six times seven.")
    same_answer_b = normalised_hash("The answer is 42.", reasoning="Forty plus two.")
    assert same_answer_a != same_answer_b
    assert normalised_hash("The answer is 42.") == normalised_hash("the answer  is 42.")
    # Moving words across the reasoning/answer boundary changes the published text.
    assert normalised_hash("c", reasoning="a b") != normalised_hash("b c", reasoning="a")
    assert normalised_hash("x", reasoning="r") == normalised_hash("<think>\nr\n</think>\n\nx")


def test_index_dedups_with_or_without_reasoning():
    index: NearDuplicateIndex[str] = NearDuplicateIndex()
    assert index.add("a", "Answer: 5050.", reasoning=PAIRING) is None
    assert index.add("b", "answer:   5050.", reasoning=PAIRING.lower()) == "a"
    assert index.add("c", "Answer: 5050.", reasoning=INDUCTION) is None
    answers_only: NearDuplicateIndex[str] = NearDuplicateIndex()
    assert answers_only.add("a", "Answer: 5050.") is None
    assert answers_only.add("c", "Answer: 5050.") == "a"


def test_bad_input_types():
    with pytest.raises(TypeError):
        normalise(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        normalised_hash(b"bytes")  # type: ignore[arg-type]


# --- near duplicates ------------------------------------------------------------------------


def test_one_changed_word_in_200_is_a_near_duplicate():
    words = PAIRING.split()
    assert len(words) >= 200
    original = " ".join(words[:200])
    changed_words = words[:200]
    assert changed_words[100] != "seven"
    changed_words[100] = "seven"
    changed = " ".join(changed_words)
    assert _jaccard(original, changed) == 191 / 201
    assert normalised_hash(original) != normalised_hash(changed)
    index: NearDuplicateIndex[int] = NearDuplicateIndex()
    assert index.add(10, original) is None
    assert index.add(11, changed) == 10
    assert _estimate(original, changed) >= 0.8


def test_two_different_solutions_of_one_problem_are_not_near_duplicates():
    assert _jaccard(PAIRING, INDUCTION) < 0.05
    assert _estimate(PAIRING, INDUCTION) < 0.1
    index: NearDuplicateIndex[int] = NearDuplicateIndex()
    assert index.add(1, PAIRING) is None
    assert index.add(2, INDUCTION) is None
    assert index.query(PAIRING.upper()) == 1
    assert index.query(INDUCTION + " Done.") == 2
    assert index.query("Something else entirely, with enough words to shingle.") is None


def test_earliest_kept_sample_is_the_representative_and_clusters_are_stars():
    # 400 words; B changes a block of 26 words of A, C another block of B: A~B and B~C are near
    # (true Jaccard 366/426 = 0.86), A~C is not (336/456 = 0.74). 512 permutations keep the
    # estimates well away from 0.8.
    settings = DedupSettings(num_perm=512)
    a = _words(400)
    b = a[:50] + _words(26, "x") + a[76:]
    c = b[:300] + _words(26, "y") + b[326:]
    ta, tb, tc = " ".join(a), " ".join(b), " ".join(c)
    assert _jaccard(ta, tb) == 366 / 426 and _jaccard(tb, tc) == 366 / 426
    assert _jaccard(ta, tc) == 336 / 456
    assert _estimate(ta, tb, settings) >= 0.82 and _estimate(tb, tc, settings) >= 0.82
    assert _estimate(ta, tc, settings) <= 0.75

    index: NearDuplicateIndex[int] = NearDuplicateIndex(settings)
    assert index.add(1, ta) is None
    assert index.add(2, tb) == 1  # flagged, not indexed
    assert index.add(3, tc) is None  # near only to a flagged sample: kept
    assert index.add(4, tb) == 1  # the earliest kept wins over the later kept C
    # In the other order B is the earliest and A and C are both its duplicates.
    other: NearDuplicateIndex[int] = NearDuplicateIndex(settings)
    assert other.add(2, tb) is None
    assert other.add(1, ta) == 2
    assert other.add(3, tc) == 2
    # insert indexes unconditionally; the earliest match is returned whatever LSH's set order.
    chain: NearDuplicateIndex[int] = NearDuplicateIndex(settings)
    chain.insert(7, ta)
    chain.insert(5, tb)
    assert chain.query(tc) == 5
    assert chain.query(tb) == 7


def test_short_texts_fall_back_to_the_exact_hash():
    index: NearDuplicateIndex[str] = NearDuplicateIndex()
    assert text_signature("The answer is 42").minhash is None  # 4 words < 5
    assert text_signature("The answer is 42 .").minhash is not None
    assert index.add("a", "The answer is 42") is None
    assert index.add("b", "the  ANSWER is 42") == "a"
    assert index.add("c", "The answer is 43") is None
    assert index.add("d", "") is None
    assert index.add("e", "   \n") == "d"
    # A short text never matches a long one that starts with it.
    assert index.add("f", "The answer is 42 because six times seven") is None
    assert len(index) == 4


def test_signatures_are_deterministic_across_processes():
    signature = text_signature(PAIRING)
    assert signature.minhash is not None
    assert signature.minhash.dtype == np.uint32 and signature.minhash.shape == (128,)
    stored = signature.minhash_bytes()
    assert stored is not None and len(stored) == 512
    # Pinned: a change of datasketch's hashing or of the normalisation fails here, since stored
    # signatures would no longer compare with new ones.
    assert hashlib.sha256(stored).hexdigest() == PINNED_PAIRING_MINHASH_SHA256
    code = (
        "import hashlib, sys; sys.path.insert(0, '.');"
        "from tests.scoring.test_dedup import PAIRING;"
        "from scoring.dedup import text_signature;"
        "print(hashlib.sha256(text_signature(PAIRING).minhash_bytes()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert digests == {PINNED_PAIRING_MINHASH_SHA256}


PINNED_PAIRING_MINHASH_SHA256 = "fbc163e46b81b8d580f74d2174add615f6be9d1b756bf58d6d58ffed26362727"


def test_signature_storage_round_trip():
    signature = text_signature(INDUCTION)
    stored = signature.minhash_bytes()
    assert stored is not None
    back = TextSignature.from_stored(signature.exact, stored)
    assert back.exact == signature.exact
    assert back.minhash is not None and signature.minhash is not None
    assert np.array_equal(back.minhash, signature.minhash)
    short = TextSignature.from_stored(normalised_hash("42"), None)
    assert short.minhash is None and short.minhash_bytes() is None
    index: NearDuplicateIndex[int] = NearDuplicateIndex()
    assert index.add_signature(1, back) is None
    assert index.add(2, INDUCTION.upper()) == 1
    with pytest.raises(ValueError, match="whole number"):
        TextSignature.from_stored("x", b"\x00\x01\x02")


def test_the_seed_matters_and_is_a_setting():
    default = text_signature(PAIRING).minhash
    reseeded = text_signature(PAIRING, settings=DedupSettings(seed=2)).minhash
    assert default is not None and reseeded is not None
    assert not np.array_equal(default, reseeded)
    assert DEFAULT_SETTINGS.fingerprint == "nfkc-lower-ws/k5/p128/s1/w50000/affine32"


def test_index_rejects_duplicate_keys_and_foreign_signatures():
    index: NearDuplicateIndex[int] = NearDuplicateIndex()
    assert index.add(1, PAIRING) is None
    with pytest.raises(ValueError, match="already"):
        index.add(1, INDUCTION)
    with pytest.raises(ValueError, match="already"):
        index.insert(1, INDUCTION)
    foreign = text_signature(INDUCTION, settings=DedupSettings(num_perm=64))
    with pytest.raises(ValueError, match="64 MinHash values"):
        index.add_signature(2, foreign)
    assert len(index) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shingle_size": 0},
        {"num_perm": 1},
        {"num_perm": 5000},
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"seed": -1},
        {"max_words": 4},
        {"lsh_weights": (0.5, 0.6)},
        {"lsh_weights": (-0.1, 1.1)},
    ],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        DedupSettings(**kwargs)


def test_other_settings_are_honoured():
    # 3-word shingles: a one-word change in a 60-word text is near at 0.8 (J = 55/61).
    text = _words(60)
    changed = [*text[:30], "zz", *text[31:]]
    assert _jaccard(" ".join(text), " ".join(changed), k=3) == 55 / 61
    k3 = DedupSettings(shingle_size=3, threshold=0.8)
    index: NearDuplicateIndex[int] = NearDuplicateIndex(k3)
    assert index.add(1, " ".join(text)) is None
    assert index.add(2, " ".join(changed)) == 1
    # At 5-word shingles a one-word change of a 40-word text (J = 31/41 = 0.76) is not near.
    text = _words(40)
    changed = [*text[:20], "zz", *text[21:]]
    assert _jaccard(" ".join(text), " ".join(changed)) == 31 / 41
    index5: NearDuplicateIndex[int] = NearDuplicateIndex(DedupSettings(num_perm=512))
    assert index5.add(1, " ".join(text)) is None
    assert index5.add(2, " ".join(changed)) is None
    # Threshold 1.0: only texts with every MinHash value equal (here identical shingle sets).
    strict: NearDuplicateIndex[int] = NearDuplicateIndex(DedupSettings(threshold=1.0))
    assert strict.add(1, PAIRING) is None
    assert strict.add(2, PAIRING.replace("Gauss", "Euler")) is None
    assert strict.add(3, PAIRING + " " + PAIRING) is None  # a repeated text: new shingles
    # Few permutations still build a valid index.
    tiny: NearDuplicateIndex[int] = NearDuplicateIndex(DedupSettings(num_perm=2))
    assert tiny.add(1, PAIRING) is None
    assert tiny.add(2, PAIRING.upper()) == 1


# --- huge input -----------------------------------------------------------------------------


def test_huge_input_is_bounded_to_max_words(monkeypatch):
    seen: list[int] = []
    original = MinHash.update_batch

    def counting(self, b):
        items = list(b)
        seen.append(len(items))
        return original(self, items)

    monkeypatch.setattr(MinHash, "update_batch", counting)
    settings = DedupSettings(max_words=1_000)
    huge = " ".join(_words(300_000))
    tail_changed = huge + " and a different ending"
    sig = text_signature(huge, settings=settings)
    assert seen == [996]  # max_words - shingle_size + 1 shingles, not 299,996
    other = text_signature(tail_changed, settings=settings)
    assert sig.exact != other.exact  # the exact hash reads the whole text
    assert sig.minhash is not None and other.minhash is not None
    assert np.array_equal(sig.minhash, other.minhash)
    index: NearDuplicateIndex[int] = NearDuplicateIndex(settings)
    assert index.add(1, huge) is None
    assert index.add(2, tail_changed) == 1


def test_huge_input_with_default_settings_and_one_giant_word():
    huge = " ".join(_words(200_000))
    sig = text_signature(huge)
    assert sig.minhash is not None
    # Same first 50,000 words: the same MinHash.
    same_head = text_signature(" ".join(_words(50_000)) + " tail")
    assert same_head.minhash is not None and np.array_equal(sig.minhash, same_head.minhash)
    giant = "x" * 5_000_000  # one word: the exact-hash fallback
    assert text_signature(giant).minhash is None
    index: NearDuplicateIndex[int] = NearDuplicateIndex()
    assert index.add(1, giant) is None
    assert index.add(2, giant.upper()) == 1


# --- prompts at import ----------------------------------------------------------------------


def test_near_duplicate_prompts_across_sets():
    reworded = PROMPT_WALK.replace("lake", "pond")
    assert reworded != PROMPT_WALK and len(PROMPT_WALK.split()) == 110
    existing = [(101, PROMPT_GRID), (102, PROMPT_WALK)]
    new = [
        ("n1", reworded),  # one word changed: found
        ("n2", "Find all real x such that x squared equals four, and prove there are no others."),
        ("n3", PROMPT_GRID.upper()),  # an exact copy after normalisation
        ("n4", "find all real x such that x squared equals four, and prove there are no others."),
        ("n5", DIFFERENT_WALK),  # same story, a different problem: not found
    ]
    assert _jaccard(PROMPT_WALK, DIFFERENT_WALK) < 0.2
    assert 0.9 < _jaccard(PROMPT_WALK, reworded) < 0.91
    found = find_near_duplicate_prompts(new, existing)
    assert found == {"n1": 102, "n3": 101, "n4": "n2"}


def test_near_duplicate_prompts_within_the_import_and_the_earliest_existing():
    existing = iter([(1, PROMPT_WALK), (2, PROMPT_WALK.upper())])  # any iterable, read once
    new = [("a", PROMPT_GRID), ("b", PROMPT_GRID.replace("eight", "nine")), ("c", PROMPT_WALK)]
    assert find_near_duplicate_prompts(new, existing) == {"b": "a", "c": 1}


def test_near_duplicate_prompts_empty_and_bad_input():
    assert find_near_duplicate_prompts([], []) == {}
    assert find_near_duplicate_prompts([("a", PROMPT_WALK)], []) == {}
    assert find_near_duplicate_prompts([], [(1, PROMPT_WALK)]) == {}
    with pytest.raises(ValueError, match="already"):
        find_near_duplicate_prompts([(1, PROMPT_GRID)], [(1, PROMPT_WALK)])
    with pytest.raises(ValueError, match="already"):
        find_near_duplicate_prompts([("a", PROMPT_GRID), ("a", PROMPT_WALK)], [])
    with pytest.raises(TypeError):
        find_near_duplicate_prompts([("a", None)], [])  # type: ignore[list-item]


def test_a_different_problem_is_not_found_with_a_one_word_rewording_of_a_short_prompt():
    # Below about 50 words a one-word change moves Jaccard of 5-word shingles under 0.8: the
    # 8-gram decontamination and the exact hash are what catch short copies.
    short = "Find the remainder when the sum of the first one hundred primes is divided by seven."
    reworded = short.replace("first", "last")
    assert _jaccard(short, reworded) < 0.8
    assert find_near_duplicate_prompts([("n", reworded)], [(1, short)]) == {}
    assert find_near_duplicate_prompts([("n", short.lower())], [(1, short)]) == {"n": 1}

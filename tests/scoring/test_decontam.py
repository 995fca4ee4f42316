"""Benchmark decontamination (scoring/decontam.py): the word 8-gram rule against MATH-500 and
AIME 2024/2025 from ../shared/data/benchmarks, hand-built indexes, bad files, bounded input."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from scoring.decontam import (
    MAX_CHARS,
    MAX_WORDS,
    BenchmarkIndex,
    BenchmarkItem,
    Match,
    clear_benchmark_index_cache,
    load_benchmark_index,
    normalize_words,
    read_benchmark,
    word_ngrams,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BENCH = DATA / "benchmarks"
BENCH_FILES = [BENCH / "math500.jsonl", BENCH / "aime24.jsonl", BENCH / "aime25.jsonl"]
needs_benchmarks = pytest.mark.skipif(
    not all(p.is_file() for p in BENCH_FILES), reason="../shared/data/benchmarks is missing"
)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def index() -> BenchmarkIndex:
    if not all(p.is_file() for p in BENCH_FILES):
        pytest.skip("../shared/data/benchmarks is missing")
    return BenchmarkIndex.from_paths(BENCH_FILES)


def rows(name: str) -> list[dict]:
    with (BENCH / f"{name}.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def all_items() -> list[tuple[str, str, str]]:
    out = []
    for name in ("math500", "aime24", "aime25"):
        for row in rows(name):
            out.append((name, str(row.get("id") or row["unique_id"]), row["problem"]))
    return out


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


# --- normalisation --------------------------------------------------------------------------


def test_normalize_words_folds_case_whitespace_punctuation_and_latex():
    assert normalize_words("  Hello,\n\tWORLD!!  ") == ["hello", "world"]
    assert normalize_words("Let $\\dfrac{m}{n}$ be $x_1^2$.") == [
        "let",
        "m",
        "n",
        "be",
        "x",
        "1",
        "2",
    ]
    assert normalize_words("a \\$5 fee\\,per\\\\day") == ["a", "5", "fee", "per", "day"]
    assert normalize_words("a $9$-kilometer walk") == normalize_words("A 9 kilometer walk")
    fullwidth = "\uff26\uff35\uff2c\uff2c width \uff11\uff12"  # FULL width 12, full-width forms
    assert normalize_words(fullwidth) == ["full", "width", "12"]
    assert normalize_words("Straße ÉTÉ") == ["strasse", "été"]
    assert normalize_words("") == []
    assert normalize_words(" \n$ \\, {}") == []


def test_normalize_words_bounds():
    assert normalize_words("a b c d", max_words=2) == ["a", "b"]
    assert normalize_words("abcdef ghi", max_chars=4) == ["abcd"]
    assert normalize_words("a " * 10, max_chars=None, max_words=None) == ["a"] * 10
    assert len(normalize_words("w " * (MAX_WORDS + 5))) == MAX_WORDS
    assert normalize_words("x" * (MAX_CHARS + 10)) == ["x" * MAX_CHARS]


def test_word_ngrams():
    assert list(word_ngrams(["a", "b", "c", "d"], 3)) == ["a b c", "b c d"]
    assert list(word_ngrams(["a", "b"], 3)) == []
    assert list(word_ngrams([], 1)) == []


# --- hand-built indexes ---------------------------------------------------------------------

TOY = {
    "toy": {
        "p1": "One two three four five six seven eight nine ten.",
        "p2": "Alpha beta gamma delta epsilon zeta eta theta.",
        "short": "Simplify $\\sqrt{242}$.",
    },
    "other": {"q1": "five six seven eight nine ten eleven twelve"},
}


def test_check_exact_matches_one_per_item_in_prompt_order():
    idx = BenchmarkIndex.from_texts(TOY)
    assert idx.benchmarks == {"toy": 3, "other": 1}
    assert idx.unmatchable == [("toy", "short")]
    assert len(idx) == 3 + 1 + 1  # p1: 3 grams, p2: 1, q1: 1 (none shared)
    text = (
        "Intro: alpha beta gamma delta epsilon zeta eta theta; "
        "then ONE two three four five six seven eight nine ten eleven twelve"
    )
    assert idx.check(text) == [
        Match("toy", "p2", "alpha beta gamma delta epsilon zeta eta theta"),
        Match("toy", "p1", "one two three four five six seven eight"),
        Match("other", "q1", "five six seven eight nine ten eleven twelve"),
    ]
    assert idx.is_contaminated(text) is True
    assert idx.check("one two three four five six seven nine") == []
    assert idx.is_contaminated("one two three four five six seven nine") is False


def test_shared_ngram_reports_every_item_that_has_it():
    idx = BenchmarkIndex.from_texts(
        {
            "b": {
                "x": "a b c d e f g h i",
                "y": "z a b c d e f g h",
                "x2": "a b c d e f g h a b c d e f g h",
            }
        }
    )
    assert idx.check("... A B C D E F G H ...") == [
        Match("b", "x", "a b c d e f g h"),
        Match("b", "y", "a b c d e f g h"),
        Match("b", "x2", "a b c d e f g h"),
    ]


def test_other_n():
    idx = BenchmarkIndex.from_texts(TOY, n=3)
    assert idx.check("we said: Seven, eight, nine!") == [
        Match("toy", "p1", "seven eight nine"),
        Match("other", "q1", "seven eight nine"),
    ]
    assert BenchmarkIndex.from_texts(TOY, n=2).check("simplify sqrt 242") == [
        Match("toy", "short", "simplify sqrt")
    ]


def test_short_prompts_never_match():
    idx = BenchmarkIndex.from_texts(TOY)
    assert idx.check("one two three four five six seven") == []
    assert idx.check("Simplify $\\sqrt{242}$.") == []
    assert idx.check("") == []
    assert idx.check("one two three four five six seven eight") == [
        Match("toy", "p1", "one two three four five six seven eight")
    ]


def test_empty_index_matches_nothing():
    idx = BenchmarkIndex([])
    assert len(idx) == 0
    assert idx.benchmarks == {}
    assert idx.check("one two three four five six seven eight") == []
    assert idx.is_contaminated("x " * 100) is False


@pytest.mark.parametrize("n", [0, -1, True, 8.0, "8", None])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        BenchmarkIndex.from_texts(TOY, n=n)


def test_duplicate_item_id_rejected():
    items = [BenchmarkItem("b", "1", "x"), BenchmarkItem("b", "1", "y")]
    with pytest.raises(ValueError, match="duplicate item id '1' in 'b'"):
        BenchmarkIndex(items)


def test_non_str_prompt_is_a_type_error():
    with pytest.raises(TypeError):
        BenchmarkIndex.from_texts(TOY).check(b"one two three four five six seven eight")  # type: ignore[arg-type]


# --- bounded input --------------------------------------------------------------------------

COPY = "one two three four five six seven eight"


def test_word_cap_boundary_is_exact():
    idx = BenchmarkIndex.from_texts(TOY)
    filler = MAX_WORDS - 8
    assert idx.check("zz " * filler + COPY) == [Match("toy", "p1", COPY)]
    assert idx.check("zz " * (filler + 1) + COPY) == []


def test_huge_inputs_finish_and_see_only_the_head():
    idx = BenchmarkIndex.from_texts(TOY)
    assert idx.check(COPY + " zz" * 5_000_000) == [Match("toy", "p1", COPY)]
    assert idx.check("zz " * 5_000_000 + COPY) == []
    assert idx.check("x" * 50_000_000 + " " + COPY) == []
    assert idx.check("{$\\" * 5_000_000 + COPY) == []  # markup only: 15M chars, head is empty
    assert idx.is_contaminated("one two three four five six seven " * 1_000_000) is False


# --- benchmark files ------------------------------------------------------------------------


def test_read_benchmark_fields_and_ids(tmp_path):
    path = write_jsonl(
        tmp_path / "mix.jsonl",
        [
            {"problem": "P text", "id": "A-1"},
            {"question": "Q text", "unique_id": "test/x/1.json"},
            "",
            {"prompt": "R text", "id": 7},
            {"problem": None, "question": "S text"},
            {"problem": "T text", "id": "", "unique_id": "u"},
        ],
    )
    assert read_benchmark(path) == [
        BenchmarkItem("mix", "A-1", "P text"),
        BenchmarkItem("mix", "test/x/1.json", "Q text"),
        BenchmarkItem("mix", "7", "R text"),
        BenchmarkItem("mix", "5", "S text"),
        BenchmarkItem("mix", "u", "T text"),
    ]


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (
            [
                '{"problem": "x"',
            ],
            r"bad\.jsonl:1: not JSON",
        ),
        ([{"problem": "x"}, ["problem"]], r"bad\.jsonl:2: a row must be a JSON object"),
        (
            [{"solution": "x", "id": 1}],
            r"bad\.jsonl:1: no text field \(one of problem, question, prompt\)",
        ),
        ([{"problem": 3}], r"bad\.jsonl:1: no text field"),
        ([], r"bad\.jsonl: no benchmark rows"),
        (["", "  "], r"bad\.jsonl: no benchmark rows"),
    ],
)
def test_read_benchmark_rejects_bad_files(tmp_path, lines, error):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=error):
        read_benchmark(path)


def test_from_paths_errors(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"problem": "x", "id": 1}, {"problem": "y", "id": 1}])
    with pytest.raises(ValueError, match="duplicate item id '1' in 'a'"):
        BenchmarkIndex.from_paths([a])
    (tmp_path / "d").mkdir()
    b1 = write_jsonl(tmp_path / "b.jsonl", [{"problem": "x"}])
    b2 = write_jsonl(tmp_path / "d" / "b.jsonl", [{"problem": "y"}])
    with pytest.raises(ValueError, match="two benchmark files are named 'b'"):
        BenchmarkIndex.from_paths([b1, b2])
    with pytest.raises(FileNotFoundError):
        BenchmarkIndex.from_paths([tmp_path / "missing.jsonl"])


def test_from_paths_names_by_stem(tmp_path):
    p = write_jsonl(tmp_path / "my_bench.jsonl", [{"question": COPY + " nine", "id": "q"}])
    idx = BenchmarkIndex.from_paths([p], n=8)
    assert idx.check("so: " + COPY) == [Match("my_bench", "q", COPY)]


def test_load_benchmark_index_from_settings_is_cached(tmp_path, settings):
    p = write_jsonl(tmp_path / "s.jsonl", [{"problem": COPY, "id": "s1"}])
    clear_benchmark_index_cache()
    try:
        settings.THINKPOOL_DECONTAM_BENCHMARKS = [str(p)]
        first = load_benchmark_index()
        assert first.check(COPY) == [Match("s", "s1", COPY)]
        assert load_benchmark_index() is first
        settings.THINKPOOL_DECONTAM_NGRAM = 3
        assert load_benchmark_index().check("six seven eight") == [
            Match("s", "s1", "six seven eight")
        ]
        settings.BASE_DIR = tmp_path
        settings.THINKPOOL_DECONTAM_BENCHMARKS = ["s.jsonl"]
        assert load_benchmark_index(n=8).check(COPY) == [Match("s", "s1", COPY)]
        settings.THINKPOOL_DECONTAM_BENCHMARKS = []
        assert len(load_benchmark_index()) == 0
        assert load_benchmark_index([p], 8) is first
    finally:
        clear_benchmark_index_cache()


def test_load_benchmark_index_without_the_setting(settings):
    del settings.THINKPOOL_DECONTAM_BENCHMARKS
    clear_benchmark_index_cache()
    try:
        idx = load_benchmark_index()
        assert (len(idx), idx.n) == (0, 8)
    finally:
        clear_benchmark_index_cache()


# --- MATH-500 and AIME ----------------------------------------------------------------------


@needs_benchmarks
def test_shipped_index_shape(index):
    assert index.benchmarks == {"math500": 500, "aime24": 30, "aime25": 30}
    assert index.n == 8
    assert len(index) == 19637
    assert len(index.unmatchable) == 15
    assert ("math500", "test/prealgebra/1302.json") in index.unmatchable  # Simplify $\sqrt{242}$.


@needs_benchmarks
def test_verbatim_copies_are_caught_with_their_source_id(index):
    aime = rows("aime24")[0]["problem"]
    assert index.check(aime) == [
        Match("aime24", "2024-I-1", "every morning aya goes for a 9 kilometer")
    ]
    assert index.check(rows("math500")[0]["problem"]) == [
        Match(
            "math500",
            "test/precalculus/807.json",
            "convert the point 0 3 in rectangular coordinates",
        ),
        Match("math500", "test/precalculus/703.json", "where r 0 and 0 le theta 2"),
    ]
    caught = 0
    for name, item_id, text in all_items():
        found = {(m.benchmark, m.item_id) for m in index.check(text)}
        if (name, item_id) in index.unmatchable:
            assert (name, item_id) not in found
        else:
            assert (name, item_id) in found, (name, item_id)
            caught += 1
    assert caught == 560 - 15


def reword_variants(text: str) -> list[str]:
    spaced = re.sub(r" ", "  \n ", text)
    return [
        spaced,  # extra whitespace and newlines
        text.upper(),
        text.swapcase(),
        text + "\n\n" + INSTRUCTION,
        INSTRUCTION + " " + text,
        text.replace("\\frac", "\\dfrac").replace("$", ""),  # re-typeset
        f"Solve the following problem.{text}Think carefully.",  # glued, no spaces
    ]


@needs_benchmarks
def test_lightly_reworded_copies_are_caught(index):
    for name, item_id, text in all_items():
        if (name, item_id) in index.unmatchable:
            continue
        for variant in reword_variants(text):
            assert (name, item_id) in {(m.benchmark, m.item_id) for m in index.check(variant)}, (
                name,
                item_id,
                variant[:80],
            )


@needs_benchmarks
def test_changed_first_sentence_is_caught(index):
    # AIME 2024 I-1 with its first sentence rewritten, the rest kept.
    aime = rows("aime24")[0]["problem"]
    rest = aime.split(". ", 1)[1]
    prompt = "Each day Bea jogs a $9$ km loop and then visits a bakery. " + rest
    assert index.check(prompt)[0] == Match(
        "aime24", "2024-I-1", "when she walks at a constant speed of"
    )
    # Every AIME problem whose text after the first sentence still has 8 words.
    checked = 0
    for name in ("aime24", "aime25"):
        for row in rows(name):
            _head, sep, rest = row["problem"].partition(". ")
            if not sep or len(normalize_words(rest)) < 8:
                continue
            prompt = "Here is a new opening sentence about something. " + rest.lower()
            assert (name, row["id"]) in {(m.benchmark, m.item_id) for m in index.check(prompt)}
            checked += 1
    assert checked == 48


def procedural_prompts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["Maya", "Tomas", "Ines", "Kofi", "Lena", "Ravi", "Yuki", "Omar"]
    things = ["apples", "stamps", "marbles", "pencils", "shells", "coins", "tickets", "cookies"]
    templates = [
        "{a} has {x} {t}. {b} gives {a} {y} more {t} and then {a} loses {z}. "
        "How many {t} does {a} have now?",
        "A shop sells {t} for ${x} each. {a} buys {y} of them and pays with a ${z} bill. "
        "What change does {a} get?",
        "{a} reads {x} pages on Monday and {y} pages on Tuesday; the book has {z} pages. "
        "How many pages are left?",
        "There are {x} rows of {t} with {y} in each row, and {b} takes away {z}. "
        "How many {t} remain in total?",
        "Compute {x} times {y} plus {z}, then divide the result by {w} and report the remainder.",
    ]
    out = []
    for _ in range(count):
        a, b = rng.sample(names, 2)
        out.append(
            rng.choice(templates).format(
                a=a,
                b=b,
                t=rng.choice(things),
                x=rng.randint(2, 999),
                y=rng.randint(2, 999),
                z=rng.randint(2, 9999),
                w=rng.randint(2, 97),
            )
        )
    return out


@needs_benchmarks
def test_fresh_procedural_prompts_are_not_flagged(index):
    prompts = procedural_prompts(500, seed=9)
    assert len(set(prompts)) == 500
    assert [p for p in prompts if index.check(p)] == []


@needs_benchmarks
def test_gsm8k_test_questions_are_not_flagged(index):
    path = DATA / "prompts" / "gsm8k_test.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/prompts/gsm8k_test.jsonl is missing")
    with path.open(encoding="utf-8") as fh:
        questions = [json.loads(line)["question"] for line in fh][:500]
    assert len(questions) == 500
    assert [q for q in questions if index.check(q)] == []
    # ...and one of them with a MATH-500 problem pasted in is.
    pasted = questions[0] + " Also: " + rows("math500")[1]["problem"]
    assert [m.item_id for m in index.check(pasted)] == ["test/intermediate_algebra/1994.json"]

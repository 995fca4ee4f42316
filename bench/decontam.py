"""Decontamination throughput, run by hand: `.venv/bin/python bench/decontam.py`.

Prompts checked per second against MATH-500 + AIME 2024 + AIME 2025 (../shared/data/benchmarks)
with the word 8-gram rule of scoring/decontam.py, three ways, on the same normalised words:

- index: `BenchmarkIndex.check`, one dict lookup per n-gram position of the prompt, whatever
  the number of benchmark items (and the full per-item Match list built);
- loop: the plain way, a set of n-grams per benchmark item, and for each prompt its n-gram set
  intersected with every item's set in turn (`prompt_grams & item_grams` for 560 items);
- per-benchmark lookup: what open-r1's scripts/decontaminate.py does, one n-gram -> items dict
  per benchmark, and `any(gram in lookup)` per prompt per benchmark (a verdict per benchmark,
  no item ids).

Prompts: the 1,319 GSM8K test questions (../shared/data/prompts/gsm8k_test.jsonl), which are
clean, plus --copies contaminated copies of benchmark problems, lightly reworded (case, extra
whitespace, the "Please reason step by step" instruction, a new opening sentence, re-typeset
fractions). Reports each rate (best of --repeat runs), and checks that all three flag exactly
the same prompts and that the index and the loop name the same (prompt, item) pairs.

Normalisation is shared and timed inside every rate (each way normalises every prompt). The
machine is shared; numbers are noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/scoring.py would shadow the `scoring` package: import from the repository root instead.
sys.path[0] = str(ROOT)

from scoring.decontam import (  # noqa: E402
    BenchmarkIndex,
    normalize_words,
    read_benchmark,
    word_ngrams,
)

DATA = ROOT.parent / "shared" / "data"
BENCHMARKS = ["math500.jsonl", "aime24.jsonl", "aime25.jsonl"]
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
N = 8


def reword(text: str, rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return text.upper()
    if kind == 1:
        return text.replace(" ", "  \n ")
    if kind == 2:
        return text + "\n\n" + INSTRUCTION
    if kind == 3:
        _head, sep, rest = text.partition(". ")
        return ("Consider the following carefully. " + rest) if sep else text
    return text.replace("\\frac", "\\dfrac").replace("$", "")


def best_rate(
    fn: Callable[[list[str]], list], prompts: list[str], repeat: int
) -> tuple[float, list]:
    best = float("inf")
    result: list = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(prompts)
        best = min(best, time.perf_counter() - t0)
    return len(prompts) / best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--copies", type=int, default=300, help="contaminated copies (default 300)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per way, best kept")
    ap.add_argument("--seed", type=int, default=9)
    args = ap.parse_args()

    paths = [DATA / "benchmarks" / name for name in BENCHMARKS]
    gsm_path = DATA / "prompts" / "gsm8k_test.jsonl"
    missing = [str(p) for p in [*paths, gsm_path] if not p.is_file()]
    if missing:
        sys.exit(f"missing data: {', '.join(missing)}")

    t0 = time.perf_counter()
    index = BenchmarkIndex.from_paths(paths, n=N)
    build_index_s = time.perf_counter() - t0

    items = [item for p in paths for item in read_benchmark(p)]
    t0 = time.perf_counter()
    item_sets = [
        (
            (it.benchmark, it.item_id),
            set(word_ngrams(normalize_words(it.text, max_chars=None, max_words=None), N)),
        )
        for it in items
    ]
    build_loop_s = time.perf_counter() - t0
    per_bench: dict[str, dict[str, set[str]]] = {}
    for (bench, item_id), grams in item_sets:
        lookup = per_bench.setdefault(bench, {})
        for g in grams:
            lookup.setdefault(g, set()).add(item_id)

    with gsm_path.open(encoding="utf-8") as fh:
        clean = [json.loads(line)["question"] for line in fh]
    rng = random.Random(args.seed)
    matchable = [it for it in items if (it.benchmark, it.item_id) not in set(index.unmatchable)]
    copies = [reword(rng.choice(matchable).text, rng) for _ in range(args.copies)]
    prompts = clean + copies
    rng.shuffle(prompts)

    def by_index(ps: list[str]) -> list[set[tuple[str, str]]]:
        return [{(m.benchmark, m.item_id) for m in index.check(p)} for p in ps]

    def by_loop(ps: list[str]) -> list[set[tuple[str, str]]]:
        out = []
        for p in ps:
            grams = set(word_ngrams(normalize_words(p), N))
            out.append({key for key, item_grams in item_sets if grams & item_grams})
        return out

    def by_benchmark_lookup(ps: list[str]) -> list[set[str]]:
        out = []
        for p in ps:
            grams = set(word_ngrams(normalize_words(p), N))
            out.append({b for b, lookup in per_bench.items() if any(g in lookup for g in grams)})
        return out

    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
        "shared machine, noisy"
    )
    print(
        f"benchmarks: {index.benchmarks} ({len(items)} items, {len(index)} distinct {N}-grams, "
        f"{len(index.unmatchable)} items under {N} words)"
    )
    print(
        f"prompts: {len(clean)} GSM8K test + {len(copies)} reworded benchmark copies "
        f"= {len(prompts)}"
    )
    print(
        f"build: index {build_index_s * 1e3:.1f} ms (reads files), "
        f"loop sets {build_loop_s * 1e3:.1f} ms"
    )

    rate_i, res_i = best_rate(by_index, prompts, args.repeat)
    rate_l, res_l = best_rate(by_loop, prompts, max(1, args.repeat // 2))
    rate_b, res_b = best_rate(by_benchmark_lookup, prompts, args.repeat)
    norm_rate, _ = best_rate(lambda ps: [normalize_words(p) for p in ps], prompts, args.repeat)

    flagged_i = {i for i, r in enumerate(res_i) if r}
    flagged_l = {i for i, r in enumerate(res_l) if r}
    flagged_b = {i for i, r in enumerate(res_b) if r}
    clean_set = set(clean)
    false_pos = sum(1 for i in flagged_i if prompts[i] in clean_set)
    print(f"{'way':<34}{'prompts/s':>12}{'vs loop':>10}")
    for name, rate in [
        ("index (BenchmarkIndex.check)", rate_i),
        ("loop over 560 item n-gram sets", rate_l),
        ("per-benchmark lookup (open-r1)", rate_b),
        ("(normalisation alone)", norm_rate),
    ]:
        print(f"{name:<34}{rate:>12,.0f}{rate / rate_l:>9.1f}x")
    print(
        f"flagged: index {len(flagged_i)}, loop {len(flagged_l)}, per-benchmark {len(flagged_b)}; "
        f"GSM8K questions flagged: {false_pos}; "
        f"copies missed: {len(copies) - (len(flagged_i) - false_pos)}"
    )
    same_prompts = flagged_i == flagged_l == flagged_b
    same_pairs = res_i == res_l
    print(
        f"same flagged prompts (all three): {same_prompts}; "
        f"same (prompt, item) pairs (index vs loop): {same_pairs}"
    )
    if not (same_prompts and same_pairs):
        sys.exit(1)


if __name__ == "__main__":
    main()

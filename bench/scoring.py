"""Scoring benchmark, run by hand: `.venv/bin/python bench/scoring.py [--samples N]`.

Math: real-shaped completions built from MATH-500 and GSM8K (a few hundred words of reasoning
and a boxed answer: right, wrong, or right but reformatted: `\\frac{1}{2}` / `\\dfrac12` / `1/2` /
`0.5`, `18` / `18.0` / `18\\text{ units}`), judged by our MathVerifier and by the open-r1 way
(math-verify `parse` of the gold and of the whole completion for every sample, no cache, no
fast path, `verify(gold, answer)`), with the same extraction config. Reports samples per CPU
second (parent plus math worker process for ours) and the verdict agreement; then, untimed,
how many of a few forged answers (wrong answers written to pass: hedges, false equations,
prose in a box) each judge accepts.

Sandbox: gradings per second, one at a time and on all cores (HumanEval canonical solutions
against their tests: a trusted harness and the program, each in its own sandbox and cgroup),
and the time of one run against a plain `python3 -c pass` subprocess: one sandboxed program
(a stdin/stdout test) and one graded function test (harness + program).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoring import grader
from scoring.sandbox import SandboxLimits, capabilities, interpreter, run_python
from scoring.verifiers import (
    CodeVerifier,
    MathVerifier,
    math_answer,
)
from scoring.verifiers._math_worker import EXTRACTION, boxed
from scoring.verifiers.base import Candidate, Gold, Status
from scoring.verifiers.text import final_answer, parse_reasoning

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
FILLER = (
    "Let me re-read the problem to make sure I understand what is being asked. "
    "I will set up the quantities carefully and check each step as I go. "
    "Wait, I should double-check that arithmetic before moving on. "
    "That seems consistent with the constraints given in the statement. "
    "Now let me combine these pieces and simplify the expression. "
)


def _words(text: str, n: int) -> str:
    words = text.split()
    while len(words) < n:
        words += FILLER.split()
    return " ".join(words[:n])


def _reformat(gold: str, rng: random.Random) -> str:
    """An equivalent way to write the gold answer, where we know one."""
    g = gold.strip()
    if re.fullmatch(r"-?\d+", g):
        return rng.choice([f"{g}.0", f"{g}\\text{{ units}}", f"{{{g}}}", f"$ {g} $"])
    m = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", g)
    if m:
        sign, a, b = m.groups()
        value = Fraction(int(a), int(b))
        forms = [f"{sign}{a}/{b}", f"{sign}\\dfrac{{{a}}}{{{b}}}"]
        if len(a) == 1 and len(b) == 1:
            forms.append(f"{sign}\\dfrac{a}{b}")
        if value.denominator in (2, 4, 5, 8, 10, 20, 25):
            forms.append(f"{sign}{float(value)}")
        return rng.choice(forms)
    return g.replace("\\frac", "\\dfrac") if "\\frac" in g else g


def _wrong(gold: str, others: list[str], rng: random.Random) -> str:
    g = gold.strip()
    if re.fullmatch(r"-?\d+", g):
        return str(int(g) + rng.choice([-1, 1, 10]))
    while True:
        other = rng.choice(others)
        if other.strip() != g:
            return other


def build_math_samples(
    n: int, seed: int = 0, per_prompt: int = 8
) -> list[tuple[Candidate, str, str]]:
    """`per_prompt` completions per problem (a sampling plan's n), shuffled as they arrive."""
    rng = random.Random(seed)
    items: list[tuple[str, str]] = []
    for line in (DATA / "benchmarks" / "math500.jsonl").read_text().splitlines():
        row = json.loads(line)
        items.append((row["solution"], row["answer"]))
    for line in (DATA / "prompts" / "gsm8k_test.jsonl").read_text().splitlines()[:500]:
        row = json.loads(line)
        rationale, answer = row["answer"].split("####")
        items.append((row["question"] + " " + rationale, answer.strip().replace(",", "")))
    golds = [g for _, g in items]
    samples = []
    rng.shuffle(items)
    for i in range(n):
        text, gold = items[(i // per_prompt) % len(items)]
        # No boxes inside the reasoning: both judges then read the same final box.
        reasoning = _words(re.sub(r"\\boxed|\\fbox", "", text), rng.randint(250, 450))
        kind = rng.choices(["right", "reformatted", "wrong"], [0.45, 0.25, 0.30])[0]
        answer = {
            "right": gold,
            "reformatted": _reformat(gold, rng),
            "wrong": _wrong(gold, golds, rng),
        }[kind]
        completion = (
            f"<think>\n{reasoning}\n</think>\n\nPutting it together, the final answer is "
            f"$\\boxed{{{answer}}}$."
        )
        samples.append((Candidate(completion=completion), gold, kind))
    rng.shuffle(samples)
    return samples


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_r1_way(candidate: Candidate, gold: str) -> bool | None:
    from math_verify import parse, verify

    gold_parsed = parse(boxed(gold), extraction_config=EXTRACTION)
    if not gold_parsed:
        return None
    answer_parsed = parse(candidate.completion, extraction_config=EXTRACTION)
    return bool(verify(gold_parsed, answer_parsed))


def bench_math(n: int, per_prompt: int) -> None:
    logging.disable(logging.WARNING)
    samples = build_math_samples(n, per_prompt=per_prompt)
    verifier = MathVerifier()
    t0 = time.perf_counter()
    worker = math_answer.worker()
    worker.request({"op": "gold", "gold": "1"}, 30)  # start the worker outside the timing
    startup = time.perf_counter() - t0
    # Warm both judges alike (ANTLR's parser caches, imports) on other problems' samples: ours
    # runs math-verify in its worker process, so that process parses the same gold and answer
    # that the open-r1 way parses here (our fast paths would otherwise leave it colder). No
    # problem of the timed run is among them, so no cache of ours starts with its answers.
    measured = {g for _, g, _ in samples}
    warm = [s for s in build_math_samples(400, seed=1, per_prompt=1) if s[1] not in measured]
    for c, g, _ in warm[:100]:
        verifier.verify(c, Gold(answer=g), {})
        answer, _how = final_answer(parse_reasoning(c).answer)
        worker.request({"op": "verify", "gold": g, "answer": answer or ""}, 30)
        open_r1_way(c, g)
    assert worker._proc is not None
    wpid = worker._proc.pid

    cpu0, wcpu0, t0 = time.process_time(), _cpu_of(wpid), time.perf_counter()
    ours = [verifier.verify(c, Gold(answer=g), {}) for c, g, _ in samples]
    ours_wall = time.perf_counter() - t0
    ours_cpu = time.process_time() - cpu0 + _cpu_of(wpid) - wcpu0

    cpu0, t0 = time.process_time(), time.perf_counter()
    theirs = [open_r1_way(c, g) for c, g, _ in samples]
    theirs_wall = time.perf_counter() - t0
    theirs_cpu = time.process_time() - cpu0

    agree = sum((o.status is Status.PASS) == bool(t) for o, t in zip(ours, theirs, strict=True))
    paths: dict[str, int] = {}
    for o in ours:
        key = str(o.details.get("path", o.details.get("reason", o.status)))
        paths[key] = paths.get(key, 0) + 1
    kinds = {k: sum(1 for *_, kk in samples if kk == k) for k in ("right", "reformatted", "wrong")}
    passes = sum(o.status is Status.PASS for o in ours)

    print(f"\nMath: {n} samples, {per_prompt} per problem ({kinds}); ours passed {passes}")
    print(f"  paths taken by ours: {paths}")
    print(f"  math worker start-up (once per process, not timed below): {startup * 1000:.0f} ms")
    print(f"  {'judge':<34}{'wall s':>8}{'CPU s':>8}{'samples/CPU-s':>15}{'samples/s':>11}")
    for name, wall, cpu in (
        ("MathVerifier (fast path + cache)", ours_wall, ours_cpu),
        ("open-r1 way (parse both, verify)", theirs_wall, theirs_cpu),
    ):
        print(f"  {name:<34}{wall:>8.2f}{cpu:>8.2f}{n / cpu:>15.0f}{n / wall:>11.0f}")
    print(
        f"  speed-up per core: {theirs_cpu / ours_cpu:.1f}x (wall {theirs_wall / ours_wall:.1f}x)"
    )
    print(f"  verdict agreement: {agree}/{n} = {agree / n:.1%}")
    for (_c, g, kind), o, t in zip(samples, ours, theirs, strict=True):
        if (o.status is Status.PASS) != bool(t):
            print(f"    disagree [{kind}] gold={g!r} ours={o.status} {o.details} open-r1={t}")
    forged = [
        (Candidate(completion=f"<think>\n{FILLER}\n</think>\n\n{a}"), g) for a, g in FORGERIES
    ]
    ours_forged = sum(
        verifier.verify(c, Gold(answer=g), {}).status is Status.PASS for c, g in forged
    )
    theirs_forged = sum(bool(open_r1_way(c, g)) for c, g in forged)
    print(
        f"  forged answers accepted (untimed): ours {ours_forged}/{len(forged)}, "
        f"open-r1 way {theirs_forged}/{len(forged)}"
    )


# Wrong answers written to pass (issue 7), with the gold they target.
FORGERIES = [
    (r"It is either $\boxed{7}$ or $\boxed{5}$.", "5"),
    ("The answer is 42. Wait, I answered too fast: the answer is 17.", "42"),
    (r"The answer is $\boxed{5\text{ is not the answer}}$.", "5"),
    (r"The answer is $\boxed{7 = 5}$.", "5"),
    (r"The answer is $\boxed{x = 7 = 5}$.", "5"),
    (r"The answer is $\boxed{S = \sum_{k=0}^{n} k}$.", r"S = \prod_{k=0}^{n} k"),
    (r"The answer is $\boxed{5\text{ cm} - 3\text{ cm}}$.", "5"),
    (r"The answer is $\boxed{2\mathbf{v} + \mathbf{w}}$.", "2"),
]


def _median_ms(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_sandbox(runs: int) -> None:
    rows = [json.loads(x) for x in (DATA / "code" / "humaneval.jsonl").read_text().splitlines()]
    verifier = CodeVerifier()

    def judge(row: dict[str, Any]) -> Status:
        c = Candidate(
            completion=f"<think>x</think>```python\n{row['prompt']}{row['canonical_solution']}```"
        )
        gold = Gold(
            tests={"test": row["test"], "entry_point": row["entry_point"], "context": row["prompt"]}
        )
        return verifier.verify(c, gold, {}).status

    cores = os.cpu_count() or 1
    print(f"\nSandbox ({cores} cores): {capabilities()}")
    for threads in (1, cores, 2 * cores):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            statuses = list(pool.map(judge, rows))
        wall = time.perf_counter() - t0
        ok = sum(s is Status.PASS for s in statuses)
        print(
            f"  HumanEval canonical, harness + program, {threads} at a time: "
            f"{len(rows) / wall:.1f} gradings/s ({ok}/{len(rows)} pass)"
        )
    # Per run, one at a time, interleaved so load changes hit every variant alike.
    spec = grader.FunctionTests.from_gold(
        {"test_list": ["assert f(2) == 4"], "entry_points": ["f"]}
    )
    limits = SandboxLimits()
    python = interpreter(limits)
    variants = {
        "plain `python3 -c pass` subprocess": lambda: subprocess.run(
            [python, "-c", "pass"], check=True
        ),
        "one sandboxed program (`pass`)": lambda: run_python("pass"),
        "graded function test (harness + program, 2 sandboxes)": lambda: grader.run_function_tests(
            "def f(x):\n    return x * x\n", spec, limits
        ),
    }
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(5):
        for name, fn in variants.items():
            medians[name].append(_median_ms(fn, max(1, runs // 5)))
    plain = statistics.median(medians["plain `python3 -c pass` subprocess"])
    print(f"  per run, median of {runs}:")
    for name in variants:
        ms = statistics.median(medians[name])
        print(f"    {name}: {ms:.1f} ms ({ms - plain:+.1f} ms over plain)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--per-prompt", type=int, default=8, help="samples per problem")
    parser.add_argument("--sandbox-runs", type=int, default=50)
    args = parser.parse_args()
    bench_math(args.samples, args.per_prompt)
    bench_sandbox(args.sandbox_runs)


if __name__ == "__main__":
    main()

"""Scoring benchmark, run by hand: `.venv/bin/python bench/scoring.py [--samples N]`.

Math: real-shaped completions built from MATH-500 and GSM8K (a few hundred words of reasoning
and a boxed answer: right, wrong, or right but reformatted: `\\frac{1}{2}` / `\\dfrac12` / `1/2` /
`0.5`, `18` / `18.0` / `18\\text{ dollars}`), judged by our MathVerifier and by the open-r1 way
(math-verify `parse` of the gold and of the whole completion for every sample, no cache, no
fast path, `verify(gold, answer)`), with the same extraction config. Reports samples per CPU
second (parent plus math worker process for ours) and the verdict agreement.

Sandbox: test executions per second on all cores (HumanEval canonical solutions with their
tests), and the per-run overhead of the sandbox against a plain subprocess.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoring.sandbox import run_plain, run_python
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


def bench_sandbox(runs: int) -> None:
    rows = [json.loads(x) for x in (DATA / "code" / "humaneval.jsonl").read_text().splitlines()]
    verifier = CodeVerifier()

    def judge(row: dict[str, Any]) -> Status:
        c = Candidate(
            completion=f"<think>x</think>```python\n{row['prompt']}{row['canonical_solution']}```"
        )
        gold = Gold(tests={"test": row["test"], "entry_point": row["entry_point"]})
        return verifier.verify(c, gold, {}).status

    cores = os.cpu_count() or 1
    print(f"\nSandbox ({cores} cores):")
    for threads in (1, cores, 2 * cores):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            statuses = list(pool.map(judge, rows))
        wall = time.perf_counter() - t0
        ok = sum(s is Status.PASS for s in statuses)
        print(
            f"  HumanEval canonical, {threads} at a time: {len(rows) / wall:.0f} test executions/s "
            f"({ok}/{len(rows)} pass)"
        )
    sandboxed = []
    plain = []
    for _ in range(runs):
        sandboxed.append(run_python("pass").wall_ms)
        plain.append(run_plain("pass").wall_ms)
    ms, mp = statistics.median(sandboxed), statistics.median(plain)
    print(
        f"  per run, median of {runs} (`pass`): sandbox {ms:.1f} ms, plain subprocess {mp:.1f} ms"
        f" -> sandbox overhead {ms - mp:.1f} ms"
    )


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

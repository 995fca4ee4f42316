"""Every HumanEval canonical solution passes; off-by-one mutations of them fail."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from scoring.verifiers import CodeVerifier
from scoring.verifiers.base import Candidate, Gold, Status
from tests.scoring.verifiers.helpers import SHARED_DATA

HUMANEVAL = SHARED_DATA / "code" / "humaneval.jsonl"
V = CodeVerifier()
# Mutations tried in order; the first that changes the source is used.
_MUTATIONS: list[tuple[str, str]] = [
    (r"<=", "<"),
    (r">=", ">"),
    (r"(?<![<>=!])<(?![<=])", "<="),
    (r"(?<![<>=!-])>(?![>=])", ">="),
    (r"==", "!="),
    (r"\b1\b", "2"),
    (r"\b0\b", "1"),
    (r"\+", "-"),
    (r"\bTrue\b", "False"),
    (r"(?<![-=])-(?![-=>])", "+"),
    (r"\band\b", "or"),
    (r"\bor\b", "and"),
    (r"\breturn (?=\S)", "return None and "),  # last resort: the function returns None
]


def _rows() -> list[dict[str, Any]]:
    if not HUMANEVAL.exists():
        pytest.skip(f"HumanEval data not found at {HUMANEVAL}")
    return [json.loads(line) for line in HUMANEVAL.read_text().splitlines() if line.strip()]


def _mutate(solution: str) -> str | None:
    for pattern, repl in _MUTATIONS:
        mutated, n = re.subn(pattern, repl, solution, count=1)
        if n:
            return mutated
    return None


def _judge(program: str, row: dict[str, Any], timeout_s: float = 10) -> Status:
    c = Candidate(completion=f"<think>solve it</think>\n```python\n{program}\n```")
    gold = Gold(
        tests={"test": row["test"], "entry_point": row["entry_point"], "context": row["prompt"]}
    )
    return V.verify(c, gold, {"timeout_s": timeout_s}).status


def test_humaneval_canonical_solutions_pass() -> None:
    rows = _rows()
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda r: _judge(r["prompt"] + r["canonical_solution"], r), rows))
    failed = [r["task_id"] for r, s in zip(rows, statuses, strict=True) if s is not Status.PASS]
    assert len(rows) == 164
    assert failed == []


def test_humaneval_mutated_solutions_fail() -> None:
    rows = _rows()
    mutants = [(r, _mutate(r["canonical_solution"])) for r in rows]
    mutants = [(r, m) for r, m in mutants if m is not None]
    assert len(mutants) >= 160
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda rm: _judge(rm[0]["prompt"] + rm[1], rm[0], 3), mutants))
    # Some mutations do not change behaviour (e.g. `<` -> `<=` where equality never occurs):
    # those are skipped, but most mutants must be caught, and none may crash the verifier.
    caught = sum(s is Status.FAIL for s in statuses)
    assert Status.ERROR not in statuses
    assert caught / len(mutants) >= 0.8, f"only {caught}/{len(mutants)} mutants failed"
    print(f"{caught}/{len(mutants)} mutants failed")

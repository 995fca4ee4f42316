"""Code: run the candidate program against the prompt's hidden tests, in the sandbox.

The program is the last ```python fenced block of the answer part (else the last fenced block
of any language tag, else the whole answer). Gold tests come in three shapes:

* stdin/stdout: `[{"input": "...", "output": "..."}, ...]`, one sandbox run per test; this
  (trusted) process compares the output: the whitespace-separated tokens are equal; two integers
  only exactly, two decimal numbers within `float_tol` (relative or absolute); no `inf`, `nan`
  or `1_000` unless the expected token is written so;
* HumanEval: `{"test": "<source defining check(candidate)>", "entry_point": "f",
  "context"?: "<the prompt's code: helpers the tests may call>"}`;
* MBPP: `{"test_list": ["assert f(1) == 2", ...], "test_imports"?: [...],
  "test_setup_code"?: "...", "challenge_test_list"?: [...], "entry_points"?: ["f"]}`.

Function-call tests (the last two) never run in the program's process: a trusted harness runs
them in a sandbox of its own and calls the program, in another sandbox, with plain data only
(`scoring.grader`). The program cannot see the tests, the expected values or the harness, and
cannot decide its own verdict: there is no nonce to find and no exit status to fake.

Every test runs, whether or not the ones before it passed: the program cannot learn from which
tests run (or which calls it gets) whether an earlier answer was right, and so cannot pass that
on to a sibling run through a side channel.

Per-test results go into `details["tests"]` with the result (ok / wrong_answer / runtime_error /
timeout / memory / output_limit / cannot_cross / not_run) and, for errors, the name of a built-in
exception only. Details never carry test inputs, expected outputs, test source, or anything the
program chose (what it printed, its exit status, how long it slept: each could encode the inputs
it was given).

A test that cannot be graded across the process boundary (`cannot_cross`) or whose own code is
broken (`test_error`) makes the verdict `skipped`: the sample is never verified on it.

Config keys: `timeout_s` (wall per run, default 10), `cpu_s` (CPU seconds of a run, default:
timeout_s), `memory_mb` (512, the whole run), `max_output_bytes` (1 MiB), `float_tol` (1e-6),
`case_sensitive` (True), `challenge_tests`
(True: MBPP's challenge_test_list counts too), `total_timeout_s` (60: wall budget of one sample
across all its stdin/stdout runs; tests past it are `not_run` and the sample fails).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, ClassVar

from scoring.grader import FunctionTests, run_function_tests
from scoring.sandbox import (
    MIB,
    ExitReason,
    SandboxFailure,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    run_python,
)
from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import extract_code, split_reasoning

WRONG_ANSWER = "wrong_answer"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_TOTAL_TIMEOUT_S = 60.0
# Results that say the tests, not the program, are at fault: no verdict on the sample.
UNGRADABLE = frozenset({"cannot_cross", "test_error"})


_INTEGER = re.compile(r"[+-]?\d+\Z")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def _tokens_match(got: str, expected: str, float_tol: float, case_sensitive: bool) -> bool:
    if got == expected or (not case_sensitive and got.lower() == expected.lower()):
        return True
    # Integers only exactly: 1000000000 is not 1000000007, whatever the tolerance.
    if _INTEGER.match(got) and _INTEGER.match(expected):
        return int(got) == int(expected)
    # Decimals within the tolerance; never `inf`, `nan` or `1_000` (float() takes them all),
    # and never a number too large for a float.
    if not (_DECIMAL.match(got) and _DECIMAL.match(expected)):
        return False
    a, b = float(got), float(expected)
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return math.isclose(a, b, rel_tol=float_tol, abs_tol=float_tol)


def outputs_match(
    got: str, expected: str, float_tol: float = 1e-6, case_sensitive: bool = True
) -> bool:
    g, e = got.split(), expected.split()
    return len(g) == len(e) and all(
        _tokens_match(a, b, float_tol, case_sensitive) for a, b in zip(g, e, strict=True)
    )


_EXCEPTION_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,60})(?::|$)")


def _exception_name(stderr: str) -> str:
    """The built-in exception a program died of, from its last stderr line, or "other"."""
    import builtins

    last = stderr.strip().rsplit("\n", 1)[-1] if stderr.strip() else ""
    m = _EXCEPTION_LINE.match(last)
    if m and isinstance(getattr(builtins, m.group(1), None), type):
        value = getattr(builtins, m.group(1))
        if issubclass(value, BaseException):
            return m.group(1)
    return "other"


class CodeVerifier(GuardedVerifier):
    name: ClassVar[str] = "code"
    # 3: function-call tests run in a trusted harness process, apart from the program; per-run
    # cgroup limits; details keep built-in exception names only.
    version: ClassVar[int] = 3
    # One sample with the default config: the stdin/stdout budget (or one function-test run),
    # plus sandbox start-up and clean-up.
    max_seconds: ClassVar[float] = DEFAULT_TOTAL_TIMEOUT_S + DEFAULT_TIMEOUT_S + 5.0

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        tests = gold.tests
        if not tests:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "no_tests"})
        _, answer = split_reasoning(candidate)
        program = extract_code(answer)
        if not program.strip():
            return Outcome(Status.FAIL, 0.0, {"reason": "no_code"})
        timeout_s = float(config.get("timeout_s", DEFAULT_TIMEOUT_S))
        limits = SandboxLimits(
            wall_s=timeout_s,
            cpu_s=max(1, math.ceil(float(config.get("cpu_s", timeout_s)))),
            memory_bytes=int(config.get("memory_mb", 512)) * MIB,
            max_output_bytes=int(config.get("max_output_bytes", MIB)),
        )
        try:
            if isinstance(tests, dict) and ("test" in tests or "test_list" in tests):
                spec = FunctionTests.from_gold(
                    tests, challenge=bool(config.get("challenge_tests", True))
                )
                run = run_function_tests(
                    program,
                    spec,
                    limits,
                    float_tol=float(config.get("float_tol", 1e-6)),
                )
                results, total = run.results, spec.total
            elif isinstance(tests, list):
                results, total = self._run_io(program, tests, limits, config), len(tests)
            else:
                return Outcome(Status.ERROR, 0.0, {"reason": "unsupported_tests"})
        except (SandboxUnavailable, SandboxFailure) as exc:
            return Outcome(
                Status.ERROR, 0.0, {"error": type(exc).__name__, "message": str(exc)[:500]}
            )
        except (SyntaxError, KeyError, TypeError, ValueError) as exc:
            # The gold's tests do not parse or have the wrong shape: the prompt's fault.
            return Outcome(
                Status.SKIPPED, 0.0, {"reason": "bad_tests", "error": type(exc).__name__}
            )
        passed = sum(r["result"] == "ok" for r in results)
        failed = next((r for r in results if r["result"] != "ok"), None)
        details: dict[str, Any] = {"tests": results, "passed": passed, "total": total}
        if failed is None and passed == total:
            return Outcome(Status.PASS, 1.0, details)
        details["first_failure"] = failed["test"] if failed else None
        details["reason"] = failed["result"] if failed else "not_run"
        if failed is not None and failed["result"] in UNGRADABLE:
            return Outcome(Status.SKIPPED, 0.0, details)
        # A timeout of the program is a failed sample, not a timeout of the verifier.
        return Outcome(Status.FAIL, passed / total if total else 0.0, details)

    def _run_io(
        self, program: str, tests: list[Any], limits: SandboxLimits, config: dict[str, Any]
    ) -> list[dict[str, Any]]:
        tol = float(config.get("float_tol", 1e-6))
        case = bool(config.get("case_sensitive", True))
        budget = float(config.get("total_timeout_s", DEFAULT_TOTAL_TIMEOUT_S))
        started = time.monotonic()
        out: list[dict[str, Any]] = []
        for i, t in enumerate(tests):
            if time.monotonic() - started > budget:
                out.append({"test": i, "result": "not_run", "reason": "total_timeout"})
                break
            res = run_python(program, str(t.get("input", "")), limits)
            reason = str(res.exit_reason)
            if res.exit_reason is ExitReason.OK and not outputs_match(
                res.stdout, str(t.get("output", "")), tol, case
            ):
                reason = WRONG_ANSWER
            out.append(_entry(i, reason, res))
        return out


def _entry(i: int, reason: str, res: SandboxResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"test": i, "result": reason}
    if reason == str(ExitReason.RUNTIME_ERROR):
        entry["error"] = _exception_name(res.stderr)
    if not res.sandboxed:
        entry["unsandboxed"] = True
    return entry

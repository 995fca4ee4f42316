"""Code: run the candidate program against the prompt's hidden tests in the sandbox.

The program is the last ```python fenced block of the answer part (else the last fenced block
of any language tag, else the whole answer). Gold tests come in three shapes:

* stdin/stdout: `[{"input": "...", "output": "..."}, ...]`, one sandbox run per test; the
  output matches when the whitespace-separated tokens are equal, numbers within `float_tol`
  (relative or absolute);
* HumanEval: `{"test": "<source defining check(candidate)>", "entry_point": "f"}`, one run of
  program + test + `check(f)`;
* MBPP: `{"test_list": ["assert f(1) == 2", ...], "test_imports": [...]}`, one run.

Per-test results go into `details["tests"]` with the exit reason (ok / wrong_answer /
runtime_error / timeout / memory / output_limit). Details never carry test inputs, expected
outputs or test source (gold stays on the server), only the last line of stderr.

Config keys: `timeout_s` (wall per run, default 10), `cpu_s` (default: timeout_s),
`memory_mb` (512), `max_output_bytes` (1 MiB), `float_tol` (1e-6), `case_sensitive` (True),
`fail_fast` (True: stop at the first failing stdin/stdout test).
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Any, ClassVar

from scoring.sandbox import (
    MIB,
    ExitReason,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    run_python,
)
from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import answer_body, split_reasoning

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.S)
WRONG_ANSWER = "wrong_answer"


def extract_program(answer_text: str) -> str:
    body = answer_body(answer_text)
    blocks = _FENCE.findall(body)
    python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if python:
        return python[-1]
    if blocks:
        return str(blocks[-1][1])
    return body


def _is_number(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


def outputs_match(
    got: str, expected: str, float_tol: float = 1e-6, case_sensitive: bool = True
) -> bool:
    g, e = got.split(), expected.split()
    if len(g) != len(e):
        return False
    for a, b in zip(g, e, strict=True):
        if a == b or (not case_sensitive and a.lower() == b.lower()):
            continue
        fa, fb = _is_number(a), _is_number(b)
        if fa is None or fb is None:
            return False
        if not math.isclose(fa, fb, rel_tol=float_tol, abs_tol=float_tol):
            return False
    return True


def _last_line(stderr: str) -> str:
    s = stderr.strip()
    return s.rsplit("\n", 1)[-1][:200] if s else ""


def _run_reason(res: SandboxResult) -> str:
    if res.exit_reason is ExitReason.RUNTIME_ERROR and _last_line(res.stderr).startswith(
        "AssertionError"
    ):
        return WRONG_ANSWER
    return str(res.exit_reason)


# The program and its tests run inside this trusted wrapper. The nonce arrives on stdin and is
# read before any untrusted line runs, so it is in no file the program could read; it is printed
# only after the tests ran to the end. A program that exits early (sys.exit(0), os._exit(0),
# raise SystemExit) therefore fails instead of passing with exit status 0. What stays out of
# reach of this check: a program written to dig the nonce out of the interpreter's own memory
# (the sandbox still contains it; the exploit only fakes its own verdict).
HARNESS = """\
import sys
_nonce = sys.stdin.readline().strip()
sys.stdin.close()
_source = {source!r}
try:
    exec(compile(_source, "solution.py", "exec"), {{"__name__": "__main__"}})
except SystemExit as _exit:
    sys.stderr.write("SystemExit: the program exited before its tests finished\\n")
    sys.exit(3)
print()
print(_nonce)
"""


def harnessed(source: str) -> str:
    return HARNESS.format(source=source)


def ran_to_the_end(stdout: str, nonce: str) -> bool:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return bool(lines) and lines[-1].strip() == nonce


def assert_source(program: str, tests: dict[str, Any]) -> str:
    if "test_list" in tests:
        imports = "\n".join(tests.get("test_imports") or [])
        return f"{imports}\n{program}\n\n" + "\n".join(tests["test_list"]) + "\n"
    entry = tests.get("entry_point")
    call = f"\n\ncheck({entry})\n" if entry else "\n"
    return f"{program}\n\n{tests['test']}{call}"


class CodeVerifier(GuardedVerifier):
    name: ClassVar[str] = "code"
    # 2: assert-style tests must run to the end (an early exit with status 0 no longer passes).
    version: ClassVar[int] = 2

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        tests = gold.tests
        if not tests:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "no_tests"})
        _, answer = split_reasoning(candidate)
        program = extract_program(answer)
        if not program.strip():
            return Outcome(Status.FAIL, 0.0, {"reason": "no_code"})
        timeout_s = float(config.get("timeout_s", 10.0))
        limits = SandboxLimits(
            wall_s=timeout_s,
            cpu_s=max(1, math.ceil(float(config.get("cpu_s", timeout_s)))),
            memory_bytes=int(config.get("memory_mb", 512)) * MIB,
            max_output_bytes=int(config.get("max_output_bytes", MIB)),
        )
        try:
            if isinstance(tests, dict) and ("test" in tests or "test_list" in tests):
                results = [self._run_assert(program, tests, limits)]
            elif isinstance(tests, list):
                results = self._run_io(program, tests, limits, config)
            else:
                return Outcome(Status.ERROR, 0.0, {"reason": "unsupported_tests"})
        except SandboxUnavailable as exc:
            return Outcome(
                Status.ERROR, 0.0, {"error": "SandboxUnavailable", "message": str(exc)[:500]}
            )
        total = len(results) if not isinstance(tests, list) else len(tests)
        passed = sum(r["result"] == "ok" for r in results)
        failed = next((r for r in results if r["result"] != "ok"), None)
        details: dict[str, Any] = {"tests": results, "passed": passed, "total": total}
        if failed is None and passed == total:
            return Outcome(Status.PASS, 1.0, details)
        details["first_failure"] = failed["test"] if failed else None
        details["reason"] = failed["result"] if failed else "not_run"
        # A timeout of the program is a failed sample, not a timeout of the verifier.
        return Outcome(Status.FAIL, passed / total if total else 0.0, details)

    def _run_assert(
        self, program: str, tests: dict[str, Any], limits: SandboxLimits
    ) -> dict[str, Any]:
        nonce = secrets.token_hex(16)
        res = run_python(harnessed(assert_source(program, tests)), nonce + "\n", limits)
        reason = _run_reason(res)
        if reason == "ok" and not ran_to_the_end(res.stdout, nonce):
            reason = WRONG_ANSWER  # exited 0 without finishing the tests
        return _entry(0, reason, res)

    def _run_io(
        self, program: str, tests: list[Any], limits: SandboxLimits, config: dict[str, Any]
    ) -> list[dict[str, Any]]:
        tol = float(config.get("float_tol", 1e-6))
        case = bool(config.get("case_sensitive", True))
        fail_fast = bool(config.get("fail_fast", True))
        out = []
        for i, t in enumerate(tests):
            res = run_python(program, str(t.get("input", "")), limits)
            reason = str(res.exit_reason)
            if res.exit_reason is ExitReason.OK and not outputs_match(
                res.stdout, str(t.get("output", "")), tol, case
            ):
                reason = WRONG_ANSWER
            out.append(_entry(i, reason, res))
            if fail_fast and reason != "ok":
                break
        return out


def _entry(i: int, reason: str, res: SandboxResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"test": i, "result": reason, "wall_ms": round(res.wall_ms, 1)}
    if reason != "ok":
        entry["returncode"] = res.returncode
        entry["error"] = _last_line(res.stderr)
    if not res.sandboxed:
        entry["unsandboxed"] = True
    return entry

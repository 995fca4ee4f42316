from __future__ import annotations

import logging
from typing import Any

import pytest

from scoring import sandbox
from scoring.verifiers import CodeVerifier
from scoring.verifiers.base import Candidate, Gold, Status
from scoring.verifiers.code_tests import outputs_match
from scoring.verifiers.text import extract_code as extract_program
from tests.scoring.verifiers.helpers import completion

V = CodeVerifier()
ECHO_SUM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
IO_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"}]


def judge(answer: str, tests: Any, **config: Any) -> tuple[Status, dict[str, Any]]:
    out = V.verify(completion(answer), Gold(tests=tests), config)
    return out.status, out.details


def test_extract_program_takes_last_python_block() -> None:
    text = "```python\nfirst()\n```\nthen\n```py\nsecond()\n```\n```text\nnot code\n```"
    assert extract_program(text) == "second()\n"
    assert extract_program("```\nbare()\n```") == "bare()\n"
    assert extract_program("print(1)") == "print(1)"
    assert extract_program("<answer>```python\nx()\n```</answer>") == "x()\n"


def test_outputs_match_whitespace_and_floats() -> None:
    assert outputs_match("3 \n4\n\n", "3 4")
    assert outputs_match("0.3333333", "0.33333333")
    assert outputs_match("10", "10.0")
    assert not outputs_match("0.34", "0.33")
    assert not outputs_match("YES", "yes")
    assert outputs_match("YES", "yes", case_sensitive=False)
    assert not outputs_match("1 2", "1 2 3")


def test_stdin_stdout_pass_and_per_test_details() -> None:
    status, details = judge(ECHO_SUM, IO_TESTS)
    assert status is Status.PASS
    assert (details["passed"], details["total"]) == (2, 2)
    assert [t["result"] for t in details["tests"]] == ["ok", "ok"]


def test_stdin_stdout_wrong_answer_names_the_test() -> None:
    wrong = "```python\na, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n```"
    out = V.verify(completion(wrong), Gold(tests=IO_TESTS), {})
    assert out.status is Status.FAIL
    assert out.score == 0.5
    assert (out.details["first_failure"], out.details["reason"]) == (1, "wrong_answer")
    assert "output" not in str(out.details["tests"][1])  # expected output stays server-side


@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("raise SystemExit(3)", "runtime_error"),
        ("import sys\nsys.stdout.write('x' * 10_000_000)", "output_limit"),
        ("while True:\n    pass", "timeout"),
        ("x = bytearray(2 * 1024**3)", "memory"),
    ],
)
def test_exit_reasons(program: str, reason: str) -> None:
    status, details = judge(f"```python\n{program}\n```", IO_TESTS, timeout_s=2)
    assert status is Status.FAIL
    assert details["tests"][0]["result"] == reason
    assert len(details["tests"]) == 2  # every test runs, pass or fail


def test_every_test_runs_after_a_failure() -> None:
    status, details = judge("```python\nprint(6)\n```", IO_TESTS)
    assert status is Status.FAIL
    assert [t["result"] for t in details["tests"]] == ["wrong_answer", "ok"]


def test_humaneval_style_assert_tests() -> None:
    tests = {
        "test": "def check(candidate):\n    assert candidate(2) == 4\n",
        "entry_point": "double",
    }
    assert judge("```python\ndef double(x):\n    return 2 * x\n```", tests)[0] is Status.PASS
    status, details = judge("```python\ndef double(x):\n    return x + 1\n```", tests)
    assert (status, details["reason"]) == (Status.FAIL, "wrong_answer")


def test_mbpp_style_assert_list() -> None:
    tests = {"test_list": ["assert inc(1) == 2", "assert inc(-1) == 0"], "test_imports": []}
    assert judge("def inc(x):\n    return x + 1", tests)[0] is Status.PASS


def test_no_tests_skipped_and_no_code_fails() -> None:
    assert judge(ECHO_SUM, None) == (Status.SKIPPED, {"reason": "no_tests"})
    out = V.verify(Candidate(completion="<think>r</think>"), Gold(tests=IO_TESTS), {})
    assert (out.status, out.details) == (Status.FAIL, {"reason": "no_code"})


def test_missing_bubblewrap_refuses_with_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda _name: None)
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    status, details = judge(ECHO_SUM, IO_TESTS)
    assert status is Status.ERROR
    assert details["error"] == "SandboxUnavailable"
    assert "bubblewrap" in details["message"]


def test_unsafe_flag_bypasses_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda _name: None)
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    monkeypatch.setenv(sandbox.UNSAFE_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="scoring.sandbox"):
        status, details = judge(ECHO_SUM, IO_TESTS)
    assert status is Status.PASS
    assert all(t.get("unsandboxed") for t in details["tests"])
    warnings = [r for r in caplog.records if "WITHOUT a sandbox" in r.getMessage()]
    assert len(warnings) == 2  # one per run, every time


@pytest.mark.parametrize(
    "cheat",
    [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "raise SystemExit(0)",
        "import sys\nprint(sys.stdin.read())\nsys.exit(0)",
        "import atexit, sys\natexit.register(lambda: print('ok'))\nsys.exit(0)",
    ],
)
def test_a_program_that_exits_before_the_tests_does_not_pass(cheat: str) -> None:
    tests = {
        "test": "def check(candidate):\n    assert candidate(2) == 4\n",
        "entry_point": "double",
    }
    completion = (
        f"<think>Leave early.</think>\n```python\n{cheat}\ndef double(x):\n    return x\n```"
    )
    outcome = CodeVerifier().verify(Candidate(completion=completion), Gold(tests=tests), {})
    assert outcome.status is Status.FAIL
    assert outcome.details["reason"] in {"wrong_answer", "runtime_error"}
    assert outcome.details["passed"] == 0


def test_outputs_match_is_exact_on_integers_and_strict_on_number_syntax() -> None:
    assert not outputs_match("1000000000", "1000000007")  # no tolerance for integers
    assert not outputs_match("9" * 400, "1" * 400)  # both would be inf as floats
    assert outputs_match("1" * 400, "1" * 400)
    assert not outputs_match("inf", "1" * 400)
    assert not outputs_match("1_000", "1000")
    assert not outputs_match("nan", "nan0")
    assert outputs_match("inf", "inf")  # written so in the expected output: equal text
    assert outputs_match("2.50000001", "2.5")
    assert outputs_match("-0.5", "-.5")
    assert outputs_match("1e3", "1000.0")

"""`import_prompts --check-reference`: reference solutions are judged by the code verifier at
import, and a row whose reference does not pass its own tests is invalid."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from scoring.models import Prompt, PromptSet
from scoring.sandbox import SandboxUnavailable, check_available

pytestmark = pytest.mark.django_db

CODE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "code"


@pytest.fixture
def sandbox() -> None:
    problem = check_available()
    if problem:
        pytest.skip(f"code sandbox unavailable: {problem}")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check_import(path: Path, name: str, *args: str) -> tuple[dict[str, Any], str]:
    out, err = StringIO(), StringIO()
    call_command(
        "import_prompts",
        str(path),
        "--set",
        name,
        "--domain",
        "code",
        "--license",
        "MIT",
        "--check-reference",
        *args,
        stdout=out,
        stderr=err,
    )
    return json.loads(out.getvalue()), err.getvalue()


STUB = 'def double(x):\n    """Twice x."""\n'
ROWS: list[dict[str, Any]] = [
    {
        "id": "mbpp-ok",
        "prompt": "Add two numbers.",
        "code": "def add(a, b):\n    return a + b\n",
        "test_list": ["assert add(0, 0) == 0", "assert add(1, 2) == 3"],
    },
    {
        "id": "mbpp-bad",
        "prompt": "Subtract.",
        "code": "def sub(a, b):\n    return a + b\n",
        "test_list": ["assert sub(0, 0) == 0", "assert sub(3, 2) == 1"],
    },
    {
        "task_id": "he-ok",
        "prompt": STUB,
        "entry_point": "double",
        "canonical_solution": "    return x * 2\n",
        "test": "def check(candidate):\n    assert candidate(2) == 4\n",
    },
    {
        "task_id": "he-bad",
        "prompt": 'def triple(x):\n    """Three times x."""\n',
        "entry_point": "triple",
        "canonical_solution": "    return x * 2\n",
        "test": "def check(candidate):\n    assert candidate(2) == 6\n",
    },
    {"id": "io", "prompt": "Echo.", "tests": [{"input": "1\n", "output": "1\n"}]},
]


def test_failing_references_make_their_rows_invalid(tmp_path, sandbox):
    path = write_jsonl(tmp_path / "c.jsonl", ROWS)
    err = StringIO()
    with pytest.raises(CommandError, match="2 invalid rows; nothing imported"):
        call_command(
            "import_prompts",
            str(path),
            "--set",
            "c",
            "--domain",
            "code",
            "--license",
            "MIT",
            "--check-reference",
            stdout=StringIO(),
            stderr=err,
        )
    lines = [line for line in err.getvalue().splitlines() if line.startswith("line ")]
    assert len(lines) == 2
    assert re.fullmatch(
        r"line 2: reference solution does not pass: wrong_answer on test \d+.*", lines[0]
    )
    assert re.fullmatch(
        r"line 4: reference solution does not pass: wrong_answer on test \d+.*", lines[1]
    )
    assert "reference solutions checked: 4/4" in err.getvalue()
    assert Prompt.objects.count() == 0
    assert not PromptSet.objects.filter(name="c").exists()

    report, err_text = check_import(path, "c", "--skip-invalid")
    assert report == {
        "set": "c",
        "created": 3,
        "duplicates": 0,
        "invalid": 2,
        "checked": 4,
        "contaminated": 0,
        "near_duplicates": 0,
    }
    assert "skipped line 2: reference solution does not pass: wrong_answer" in err_text
    assert sorted(Prompt.objects.values_list("external_id", flat=True)) == [
        "he-ok",
        "io",
        "mbpp-ok",
    ]


def test_reference_check_is_skipped_for_duplicates_and_rows_without_a_reference(tmp_path, sandbox):
    path = write_jsonl(tmp_path / "c.jsonl", [ROWS[0], ROWS[4]])
    report, _ = check_import(path, "c")
    assert report == {
        "set": "c",
        "created": 2,
        "duplicates": 0,
        "invalid": 0,
        "checked": 1,
        "contaminated": 0,
        "near_duplicates": 0,
    }
    again, _ = check_import(path, "c")
    assert again == {
        "set": "c",
        "created": 0,
        "duplicates": 2,
        "invalid": 0,
        "checked": 0,
        "contaminated": 0,
        "near_duplicates": 0,
    }


def test_a_missing_sandbox_fails_the_option_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "scoring.services.check_available", lambda: "bubblewrap (bwrap) is not installed"
    )
    path = write_jsonl(tmp_path / "c.jsonl", ROWS)
    with pytest.raises(
        CommandError,
        match=r"--check-reference needs the code sandbox, which cannot run here: "
        r"bubblewrap \(bwrap\) is not installed",
    ):
        check_import(path, "c")
    assert not PromptSet.objects.filter(name="c").exists()


def test_a_sandbox_that_breaks_midway_fails_the_option(tmp_path, monkeypatch):
    monkeypatch.setattr("scoring.services.check_available", lambda: None)

    def broken(tests: Any, config: Any = None) -> None:
        raise SandboxUnavailable("bubblewrap failed to start: bwrap: No permissions")

    monkeypatch.setattr("scoring.services.reference_problem", broken)
    path = write_jsonl(tmp_path / "c.jsonl", ROWS)
    with pytest.raises(CommandError, match=r"needs the code sandbox.*No permissions"):
        check_import(path, "c")
    assert Prompt.objects.count() == 0


def test_check_reference_is_for_code_sets(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "1+1?", "answer": "2"}])
    with pytest.raises(CommandError, match="--check-reference applies to code sets"):
        call_command(
            "import_prompts",
            str(path),
            "--set",
            "m",
            "--domain",
            "math",
            "--license",
            "MIT",
            "--check-reference",
        )


@pytest.mark.parametrize(("name", "count"), [("humaneval", 164), ("mbpp", 427)])
def test_every_published_reference_passes(name, count, sandbox):
    path = CODE / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    report, err = check_import(path, name, "--skip-invalid")
    assert [line for line in err.splitlines() if line.startswith("skipped ")] == []
    report.pop("near_duplicates")  # counted in test_import_code, which imports the same files
    assert report == {
        "set": name,
        "created": count,
        "duplicates": 0,
        "invalid": 0,
        "checked": count,
        "contaminated": 0,
    }
    assert f"reference solutions checked: {count}/{count}" in err


def test_mbpp_full_references_pass_but_one_that_the_grader_cannot_accept(sandbox):
    # Among them tasks 367 and 927, whose test_setup_code builds trees with the program's Node.
    # Task 414's reference returns 1 / 0 where its tests expect True / False: the grader
    # compares type-strictly, so --check-reference reports it.
    path = CODE / "mbpp_full.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    report, err = check_import(path, "mbpp-full", "--skip-invalid")
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert skipped == ["skipped line 414: reference solution does not pass: wrong_answer on test 0"]
    report.pop("near_duplicates")  # counted in test_import_code, which imports the same file
    assert report == {
        "set": "mbpp-full",
        "created": 971,
        "duplicates": 2,
        "invalid": 1,
        "checked": 972,
        "contaminated": 0,
    }


def test_setup_code_runs_with_the_programs_definitions(tmp_path, sandbox):
    row = {
        "prompt": "Unwrap a box.",
        "code": "class Box:\n    def __init__(self, v):\n        self.v = v\n\n"
        "def unbox(b):\n    return b.v\n",
        "test_setup_code": "b = Box(3)\n",
        "test_list": ["assert unbox(b) == 3"],
    }
    report, _ = check_import(write_jsonl(tmp_path / "c.jsonl", [row]), "c")
    assert report == {
        "set": "c",
        "created": 1,
        "duplicates": 0,
        "invalid": 0,
        "checked": 1,
        "contaminated": 0,
        "near_duplicates": 0,
    }


def test_challenge_tests_are_checked_too(tmp_path, sandbox):
    row = {
        "prompt": "Absolute value.",
        "code": "def absolute(x):\n    return x\n",
        "test_list": ["assert absolute(2) == 2"],
        "challenge_test_list": ["assert absolute(-2) == 2"],
    }
    with pytest.raises(CommandError, match="1 invalid rows"):
        check_import(write_jsonl(tmp_path / "c.jsonl", [row]), "c")


def test_tests_that_cannot_be_graded_are_reported(tmp_path, sandbox):
    # A lambda cannot cross from the tests' process to the program's: the grader would skip
    # every sample of this prompt, so the import says so.
    row = {
        "prompt": "Apply a function.",
        "code": "def apply(f, x):\n    return f(x)\n",
        "test_list": ["assert apply(lambda x: x + 1, 1) == 2"],
    }
    report, err = check_import(write_jsonl(tmp_path / "c.jsonl", [row]), "c", "--skip-invalid")
    assert report == {
        "set": "c",
        "created": 0,
        "duplicates": 0,
        "invalid": 1,
        "checked": 1,
        "contaminated": 0,
        "near_duplicates": 0,
    }
    assert "skipped line 1: tests cannot be graded: cannot_cross on test 0" in err

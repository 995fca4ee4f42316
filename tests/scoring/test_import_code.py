"""Importing code prompt sets: HumanEval and MBPP files as published, and the gold they make."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from scoring.models import Prompt, PromptGold, PromptSet

pytestmark = pytest.mark.django_db

# tests/scoring/ -> parents[2] is the repository root; shared/ sits beside it.
CODE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "code"
HUMANEVAL = CODE / "humaneval.jsonl"
MBPP = CODE / "mbpp.jsonl"
MBPP_FULL = CODE / "mbpp_full.jsonl"

HUMANEVAL_KEYS = {"test", "entry_point", "context", "reference"}
MBPP_KEYS = {
    "test_list",
    "test_imports",
    "test_setup_code",
    "challenge_test_list",
    "entry_points",
    "reference",
}
ANSWER = "Answer with a single ```python code block."


def run_import(path: Path | str, *args: str) -> dict:
    out = StringIO()
    call_command("import_prompts", str(path), *args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def import_code(path: Path, name: str, *args: str) -> dict:
    return run_import(path, "--set", name, "--domain", "code", "--license", "MIT", *args)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def golds(set_name: str) -> dict[str, Any]:
    return {
        g.prompt.external_id: g.tests
        for g in PromptGold.objects.filter(prompt__prompt_set__name=set_name).select_related(
            "prompt"
        )
    }


def messages(set_name: str) -> dict[str, list[dict[str, str]]]:
    return {p.external_id: p.messages for p in Prompt.objects.filter(prompt_set__name=set_name)}


def expected_entry_points(row: dict[str, Any]) -> list[str]:
    """An oracle apart from the importer's: the reference's top-level def / class names, in
    the order the tests (then the setup code) first mention them."""
    text = "\n".join(
        row["test_list"]
        + (row.get("challenge_test_list") or [])
        + [row.get("test_setup_code") or ""]
    )
    defined = re.findall(r"^(?:def|class) +(\w+)", row["code"], re.M)
    first = {n: m.start() for n in defined if (m := re.search(rf"\b{n}\b", text))}
    return sorted(first, key=first.__getitem__)


def test_humaneval_imports_as_published():
    rows = rows_of(HUMANEVAL)
    report = import_code(HUMANEVAL, "humaneval")
    assert report == {
        "set": "humaneval",
        "created": 164,
        "duplicates": 0,
        "invalid": 0,
        "contaminated": 0,
        "near_duplicates": 0,
    }
    assert PromptSet.objects.get(name="humaneval").instruction_template == ""
    gold, shown = golds("humaneval"), messages("humaneval")
    for row in rows:
        tests = gold[row["task_id"]]
        assert tests == {
            "test": row["test"],
            "entry_point": row["entry_point"],
            "context": row["prompt"],
            "reference": row["prompt"] + row["canonical_solution"],
        }
        (message,) = shown[row["task_id"]]
        assert message["role"] == "user"
        assert message["content"].startswith(
            f"Complete the following Python function `{row['entry_point']}`.\n\n```python\n"
        )
        assert "```python\n" + row["prompt"].strip("\n") + "\n```" in message["content"]
        assert message["content"].endswith(ANSWER)
        for line in row["test"].splitlines():
            if line.strip().startswith("assert"):
                assert line.strip() not in message["content"]
        assert "def check(" not in message["content"]
        assert row["canonical_solution"].strip() not in message["content"]
    # The tests of HumanEval/32 call `poly`, which only the stub (the trusted context) defines.
    assert "def poly(" in gold["HumanEval/32"]["context"]
    assert "poly(" in gold["HumanEval/32"]["test"]


def test_mbpp_sanitized_imports_as_published():
    rows = rows_of(MBPP)
    report = import_code(MBPP, "mbpp")
    assert report == {
        "set": "mbpp",
        "created": 427,
        "duplicates": 0,
        "invalid": 0,
        "contaminated": 0,
        "near_duplicates": 1,
    }
    gold, shown = golds("mbpp"), messages("mbpp")
    for row in rows:
        tests = gold[str(row["task_id"])]
        assert set(tests) == MBPP_KEYS
        assert tests["test_list"] == row["test_list"]
        assert tests["reference"] == row["code"]
        assert tests["test_setup_code"] == "" and tests["challenge_test_list"] == []
        assert tests["entry_points"] == expected_entry_points(row), row["task_id"]
        content = shown[str(row["task_id"])][0]["content"]
        assert content.startswith(row["prompt"].strip() + "\n\nYour code should define `def ")
        assert content.endswith(ANSWER)
        assert "assert" not in content
        for assertion in row["test_list"]:
            assert assertion not in content
    assert gold["2"] == {
        "test_list": [
            "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
            "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
            "assert set(similar_elements((11, 12, 14, 13),(17, 15, 14, 13))) == set((13, 14))",
        ],
        "test_imports": [],
        "test_setup_code": "",
        "challenge_test_list": [],
        "entry_points": ["similar_elements"],
        "reference": "def similar_elements(test_tup1, test_tup2):\n"
        "  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res) ",
    }
    assert shown["2"] == [
        {
            "role": "user",
            "content": "Write a function to find the shared elements from the given two lists."
            "\n\nYour code should define `def similar_elements(test_tup1, test_tup2)`.\n\n"
            + ANSWER,
        }
    ]
    assert gold["82"]["test_imports"] == ["import math"]
    # MBPP 596's tests call sys.getsizeof and rely on the reference's `import sys`: the
    # harness imports it instead of asking the candidate to.
    assert gold["596"]["test_imports"] == ["import sys"]
    assert gold["596"]["entry_points"] == ["tuple_size"]


def test_mbpp_full_imports_as_published_and_drops_two_duplicates():
    rows = rows_of(MBPP_FULL)
    report = import_code(MBPP_FULL, "mbpp-full")
    # Tasks 347 and 704 repeat the text and signature of tasks 76 and 248.
    assert report == {
        "set": "mbpp-full",
        "created": 972,
        "duplicates": 2,
        "invalid": 0,
        "contaminated": 0,
        "near_duplicates": 12,
    }
    gold, shown = golds("mbpp-full"), messages("mbpp-full")
    assert "347" not in gold and "704" not in gold and {"76", "248"} <= set(gold)
    for row in rows:
        if row["task_id"] in (347, 704):
            continue
        tests = gold[str(row["task_id"])]
        assert set(tests) == MBPP_KEYS
        assert tests["test_list"] == row["test_list"]
        assert tests["challenge_test_list"] == row["challenge_test_list"]
        assert tests["test_setup_code"] == row["test_setup_code"]
        assert tests["entry_points"] == expected_entry_points(row), row["task_id"]
        content = shown[str(row["task_id"])][0]["content"]
        assert content.startswith(row["text"].strip() + "\n\nYour code should define ")
        assert "assert" not in content
        assert "Node(1)" not in content  # nothing of the setup code either
    assert gold["11"]["challenge_test_list"] == [
        'assert remove_Occ("hellolloll","l") == "helollol"',
        'assert remove_Occ("","l") == ""',
    ]
    # The two rows whose setup code builds trees with the program's own Node class.
    assert gold["367"]["entry_points"] == ["is_tree_balanced", "Node"]
    assert gold["367"]["test_setup_code"].startswith("root = Node(1) \r\nroot.left = Node(2)")
    assert gold["927"]["entry_points"] == ["max_height", "Node"]
    assert shown["367"][0]["content"] == (
        "Write a function to check if a binary tree is balanced or not.\n\n"
        "Your code should define `def is_tree_balanced(root)` and `class Node` "
        "(built as `Node(data)`, with attributes `data`, `left`, `right`).\n\n" + ANSWER
    )
    assert gold["601"]["entry_points"] == ["max_chain_length", "Pair"]
    assert gold["596"]["test_imports"] == ["import sys"]


def test_reimporting_a_code_file_changes_nothing():
    rows_of(MBPP)
    import_code(MBPP, "mbpp")
    before = golds("mbpp")
    again = import_code(MBPP, "mbpp")
    assert again == {
        "set": "mbpp",
        "created": 0,
        "duplicates": 427,
        "invalid": 0,
        "contaminated": 0,
        "near_duplicates": 0,
    }
    assert golds("mbpp") == before
    assert Prompt.objects.count() == 427


def test_code_sets_get_no_boxed_instruction(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "prompt": "Add two numbers.",
                "code": "def add(a, b):\n    return a + b\n",
                "test_list": ["assert add(1, 2) == 3"],
            }
        ],
    )
    import_code(path, "c")
    prompt_set = PromptSet.objects.get(name="c")
    assert prompt_set.instruction_template == ""
    rendered = prompt_set.render_messages(Prompt.objects.get().messages)
    assert "boxed" not in rendered[0]["content"]


def test_mbpp_rows_without_a_reference_take_the_names_the_tests_leave_unbound(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "prompt": "Add two numbers.",
                "test_imports": ["import math"],
                "test_setup_code": "pair = (0.5, 1)\n",
                "test_list": [
                    "assert add(1, 2) == 3",
                    "assert math.floor(add(*pair)) == 1",
                    "assert all(add(x, 0) == x for x in range(3))",
                ],
            }
        ],
    )
    import_code(path, "c")
    assert PromptGold.objects.get().tests == {
        "test_list": [
            "assert add(1, 2) == 3",
            "assert math.floor(add(*pair)) == 1",
            "assert all(add(x, 0) == x for x in range(3))",
        ],
        "test_imports": ["import math"],
        "test_setup_code": "pair = (0.5, 1)\n",
        "challenge_test_list": [],
        "entry_points": ["add"],
    }
    assert Prompt.objects.get().messages[0]["content"] == (
        "Add two numbers.\n\nYour code should define `add`.\n\n" + ANSWER
    )


def test_tests_in_the_gold_shapes_are_accepted_as_they_are(tmp_path):
    mbpp = {
        "test_list": ["assert inc(1) == 2"],
        "test_imports": [],
        "test_setup_code": "",
        "challenge_test_list": ["assert inc(-1) == 0"],
        "entry_points": ["inc"],
        "reference": "def inc(x):\n    return x + 1\n",
    }
    humaneval = {
        "test": "def check(candidate):\n    assert candidate(2) == 4\n",
        "entry_point": "double",
        "context": "def helper():\n    return 2\n",
        "reference": "def double(x):\n    return x * 2\n",
    }
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "m", "prompt": "Increment.", "tests": mbpp},
            {"id": "h", "prompt": "Double it.", "tests": json.dumps(humaneval)},
            {"id": "io", "prompt": "Echo.", "tests": [{"input": "1\n", "output": "1\n"}]},
        ],
    )
    import_code(path, "c")
    gold = golds("c")
    assert gold == {"m": mbpp, "h": humaneval, "io": [{"input": "1\n", "output": "1\n"}]}
    # Gold given as `tests` leaves the prompt as it is.
    assert messages("c")["m"] == [{"role": "user", "content": "Increment."}]


def test_field_map_still_applies_to_code_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "question": "Square a number.",
                "solution": "def square(x):\n    return x * x\n",
                "asserts": ["assert square(3) == 9"],
            }
        ],
    )
    import_code(path, "c", "--field-map", "prompt=question,code=solution,test_list=asserts")
    tests = PromptGold.objects.get().tests
    assert tests["entry_points"] == ["square"]
    assert tests["reference"] == "def square(x):\n    return x * x\n"
    assert (
        Prompt.objects.get()
        .messages[0]["content"]
        .startswith("Square a number.\n\nYour code should define `def square(x)`.")
    )


BAD_ROWS: list[tuple[dict[str, Any], str]] = [
    (
        {"prompt": "p1", "code": "def f(x):\n    return x\n", "test_list": "assert f(1) == 1"},
        "test_list must be a list of strings",
    ),
    (
        {"prompt": "p2", "code": "def f(x):\n    return x\n", "test_list": ["assert f(1 =="]},
        "test_list[0] is not valid Python: '(' was never closed (line 1)",
    ),
    (
        {"prompt": "p3", "test_list": ["assert len([1]) == 1"]},
        "no entry point: the tests call nothing that the program must define "
        "(and there is no reference solution)",
    ),
    (
        {"prompt": "p4", "code": "def g(x):\n    return x\n", "test_list": ["assert f(1) == 1"]},
        "the tests use f, which neither the reference solution "
        "nor test_imports / test_setup_code define",
    ),
    (
        {"prompt": "p5", "code": "def f(x):\n    return x\n", "test_list": ["assert f(1) == 1", 7]},
        "test_list[1] must be a non-empty string",
    ),
    (
        {
            "prompt": "p6",
            "code": "def f(x):\n    return x\n",
            "test_list": ["assert f(1) == 1"],
            "test_imports": ["x = 1"],
        },
        "test_imports[0] must hold import statements only",
    ),
    (
        {"prompt": "p7", "code": "def f(x):\n    return x\n", "test_list": ["f(1)"]},
        "test_list[0] has no assert statement",
    ),
    (
        {"prompt": "p8", "code": "def f(x) return x", "test_list": ["assert f(1) == 1"]},
        "reference is not valid Python: expected ':' (line 1)",
    ),
    (
        {"prompt": "def f(x):\n    pass\n", "test": "assert f(1) == 1\n", "entry_point": "f"},
        "tests.test must define check(candidate)",
    ),
    (
        {"prompt": "p10", "test": "def check(c):\n    assert c(1)\n", "entry_point": "not ok"},
        "tests.entry_point must be a Python identifier",
    ),
    (
        {"prompt": "p11", "tests": {"test_list": ["assert f(1)"], "secret": 1}},
        "tests has unknown keys ['secret'] (known: ['test_list', 'test_imports', "
        "'test_setup_code', 'challenge_test_list', 'entry_points', 'reference'])",
    ),
    (
        {
            "prompt": "p12",
            "tests": {"test_list": ["assert f(1)"], "entry_points": ["h"], "reference": "f = id"},
        },
        "the reference solution does not define h",
    ),
    (
        {
            "prompt": "p13",
            "test": "def check(c):\n    assert c(1)\n",
            "entry_point": "f",
            "canonical_solution": "g = 1",
        },
        "the reference solution does not define f",
    ),
    (
        {"prompt": "p14", "test_list": ["assert f(1)"], "test_setup_code": ["x = 1"]},
        "test_setup_code must be a string of Python source",
    ),
]


def test_bad_code_rows_are_rejected_with_line_numbers_and_change_nothing(tmp_path):
    good = {
        "prompt": "fine",
        "code": "def f(x):\n    return x\n",
        "test_list": ["assert f(1) == 1"],
    }
    path = write_jsonl(tmp_path / "c.jsonl", [good] + [row for row, _ in BAD_ROWS])
    err = StringIO()
    with pytest.raises(CommandError, match=f"{len(BAD_ROWS)} invalid rows; nothing imported"):
        call_command(
            "import_prompts",
            str(path),
            "--set",
            "c",
            "--domain",
            "code",
            "--license",
            "MIT",
            stderr=err,
        )
    assert err.getvalue().splitlines() == [
        f"line {line}: {reason}" for line, (_, reason) in enumerate(BAD_ROWS, start=2)
    ]
    assert Prompt.objects.count() == 0
    assert not PromptSet.objects.filter(name="c").exists()

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from scoring.models import Prompt, PromptGold, PromptSet

pytestmark = pytest.mark.django_db

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def run_import(path: Path | str, *args: str) -> dict:
    out = StringIO()
    call_command("import_prompts", str(path), *args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_import_keeps_gold_apart_and_drops_duplicates(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prompt": "What is 2+2?", "answer": "4"},
            {"id": "b", "prompt": "  what IS 2+2?  ", "answer": "4"},
            {"id": "c", "messages": [{"role": "user", "content": "Half of 9?"}], "answer": 4.5},
        ],
    )
    report = run_import(path, "--set", "s1", "--domain", "math", "--license", "MIT")
    assert report == {
        "set": "s1",
        "created": 2,
        "duplicates": 1,
        "invalid": 0,
        "contaminated": 0,
        "near_duplicates": 0,
    }
    prompt = Prompt.objects.get(external_id="a")
    assert prompt.messages == [{"role": "user", "content": "What is 2+2?"}]
    assert "4" not in json.dumps(prompt.metadata)
    assert PromptGold.objects.get(prompt__external_id="c").answer == "4.5"
    plan = PromptSet.objects.get(name="s1")
    assert (plan.temperatures, plan.top_p, plan.samples_per_prompt, plan.max_tokens) == (
        [0.6],
        0.95,
        4,
        32768,
    )
    assert plan.models_allowed == []
    assert "\\boxed{}" in plan.instruction_template


def test_reimporting_the_same_file_changes_nothing(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": f"Q{i}?", "answer": str(i)} for i in range(5)]
    )
    run_import(path, "--set", "s", "--domain", "math", "--license", "MIT")
    again = run_import(path, "--set", "s", "--domain", "math", "--license", "MIT")
    assert again == {
        "set": "s",
        "created": 0,
        "duplicates": 5,
        "invalid": 0,
        "contaminated": 0,
        "near_duplicates": 0,
    }
    assert Prompt.objects.count() == 5


def test_a_copy_of_a_closed_prompt_is_imported_closed(tmp_path):
    """Its gold may be public already: the copy must never be leased or judged for credit."""
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "What is 2+2?", "answer": "4"}, {"prompt": "What is 3+3?", "answer": "6"}],
    )
    run_import(path, "--set", "first", "--domain", "math", "--license", "MIT")
    Prompt.objects.filter(messages__0__content="What is 2+2?").update(closed_at=timezone.now())
    run_import(path, "--set", "second", "--domain", "math", "--license", "MIT")
    copies = Prompt.objects.filter(prompt_set__name="second").order_by("pk")
    assert [p.closed_at is not None for p in copies] == [True, False]


def test_bad_rows_abort_the_whole_import_with_line_numbers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"prompt": "fine", "answer": "1"})
        + "\n"
        + "{broken\n"
        + json.dumps({"prompt": "no answer"})
        + "\n"
        + json.dumps({"prompt": 5, "answer": "1"})
        + "\n"
    )
    err = StringIO()
    with pytest.raises(CommandError, match="3 invalid rows; nothing imported"):
        call_command(
            "import_prompts",
            str(path),
            "--set",
            "s",
            "--domain",
            "math",
            "--license",
            "MIT",
            stderr=err,
        )
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("line 2: invalid JSON")
    assert lines[1] == "line 3: missing field: answer (required for domain math)"
    assert lines[2] == "line 4: prompt must be a string"
    assert Prompt.objects.count() == 0
    assert not PromptSet.objects.filter(name="s").exists()


def test_skip_invalid_imports_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok", "answer": "1"}, {"prompt": "x"}])
    report = run_import(
        path, "--set", "s", "--domain", "math", "--license", "MIT", "--skip-invalid"
    )
    assert report == {
        "set": "s",
        "created": 1,
        "duplicates": 0,
        "invalid": 1,
        "contaminated": 0,
        "near_duplicates": 0,
    }


def test_csv_with_field_map(tmp_path):
    path = tmp_path / "p.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question", "final"])
        writer.writerow(["Capital of France?", "Paris"])
    report = run_import(
        path,
        "--set",
        "s",
        "--domain",
        "string",
        "--license",
        "CC0-1.0",
        "--field-map",
        "prompt=question,answer=final",
    )
    assert report["created"] == 1
    assert PromptGold.objects.get().answer == "Paris"


def test_parquet_and_json(tmp_path):
    pq.write_table(pa.table({"prompt": ["A?", "B?"], "answer": ["a", "b"]}), tmp_path / "p.parquet")
    assert (
        run_import(tmp_path / "p.parquet", "--set", "pq", "--domain", "string", "--license", "MIT")[
            "created"
        ]
        == 2
    )
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "C?", "answer": "c"}]))
    assert (
        run_import(tmp_path / "p.json", "--set", "js", "--domain", "string", "--license", "MIT")[
            "created"
        ]
        == 1
    )


def test_code_prompts_need_tests_of_a_known_shape(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt": "echo", "tests": [{"input": "1\n", "output": "1\n"}]},
            {
                "prompt": "def f",
                "test": "def check(candidate):\n    assert candidate(1) == 2\n",
                "entry_point": "f",
            },
            {"prompt": "bad", "tests": [{"input": 1}]},
        ],
    )
    with pytest.raises(CommandError):
        run_import(path, "--set", "code", "--domain", "code", "--license", "MIT")
    report = run_import(
        path, "--set", "code", "--domain", "code", "--license", "MIT", "--skip-invalid"
    )
    assert report["created"] == 2
    assert PromptGold.objects.get(prompt__messages__0__content="def f").tests["entry_point"] == "f"


def test_unknown_format_and_missing_file_are_clear_errors(tmp_path):
    (tmp_path / "p.txt").write_text("hi")
    with pytest.raises(CommandError, match="unknown format"):
        run_import(tmp_path / "p.txt", "--set", "s", "--domain", "math", "--license", "MIT")
    with pytest.raises(CommandError, match="no such file"):
        run_import(tmp_path / "missing.jsonl", "--set", "s", "--domain", "math", "--license", "MIT")


@pytest.mark.skipif(
    not (SHARED / "prompts" / "gsm8k_test.jsonl").exists(), reason="shared data missing"
)
def test_gsm8k_imports_with_a_field_map():
    report = run_import(
        SHARED / "prompts" / "gsm8k_test.jsonl",
        "--set",
        "gsm8k",
        "--domain",
        "math",
        "--license",
        "MIT",
        "--field-map",
        "prompt=question",
    )
    # GSM8K's `answer` holds the worked solution; the importer keeps it as gold, never public.
    assert report["created"] + report["duplicates"] == 1319
    assert Prompt.objects.filter(prompt_set__name="gsm8k").count() == report["created"]

"""Writes to the dataset: importing prompts, moving samples through scoring."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from scoring.models import Domain, Prompt, PromptGold, PromptSet
from scoring.prompt_io import RawRow

ROLES = {"system", "user", "assistant"}
DOMAINS_WITH_ANSWER = {Domain.MATH, Domain.MCQ, Domain.STRING}

_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """What counts as 'the same prompt': Unicode-compatible, case- and whitespace-blind."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def messages_hash(messages: Sequence[dict[str, Any]]) -> str:
    joined = "\x1e".join(f"{m['role']}\x1f{normalise_text(str(m['content']))}" for m in messages)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


class RowError(ValueError):
    pass


@dataclass(frozen=True)
class CleanRow:
    external_id: str
    messages: list[dict[str, str]]
    answer: str
    tests: Any
    metadata: dict[str, Any]
    text_hash: str


@dataclass
class ImportReport:
    created: int = 0
    duplicates: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)


class ImportRejected(Exception):
    def __init__(self, report: ImportReport):
        self.report = report
        super().__init__(f"{len(report.invalid)} invalid rows; nothing was imported")


def _clean_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string")
    if "\x00" in value:
        raise RowError(f"{what} contains a NUL byte")
    return value


def clean_row(data: dict[str, Any], domain: str) -> CleanRow:
    if data.get("messages") not in (None, ""):
        raw_messages = data["messages"]
        if not isinstance(raw_messages, list) or not raw_messages:
            raise RowError("messages must be a non-empty list")
        messages = []
        for index, message in enumerate(raw_messages):
            if not isinstance(message, dict):
                raise RowError(f"messages[{index}] must be an object")
            role = message.get("role")
            if role not in ROLES:
                raise RowError(f"messages[{index}].role must be one of {sorted(ROLES)}")
            content = _clean_text(message.get("content"), f"messages[{index}].content")
            messages.append({"role": role, "content": content})
        if not any(m["role"] == "user" for m in messages):
            raise RowError("messages need at least one user message")
    elif data.get("prompt") not in (None, ""):
        messages = [{"role": "user", "content": _clean_text(data["prompt"], "prompt")}]
    else:
        raise RowError("missing field: prompt (text) or messages (chat list)")
    if not any(m["content"].strip() for m in messages):
        raise RowError("prompt text is empty")

    answer = data.get("answer")
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if answer is None:
        answer = ""
    answer = _clean_text(answer, "answer")
    if domain in DOMAINS_WITH_ANSWER and not answer.strip():
        raise RowError(f"missing field: answer (required for domain {domain})")

    tests = data.get("tests")
    if tests in (None, "") and data.get("test"):
        tests = {"test": data["test"], "entry_point": data.get("entry_point", "")}
    if domain == Domain.CODE:
        tests = _clean_tests(tests)

    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RowError("metadata must be an object")
    raw_id = data.get("id", data.get("task_id", ""))
    external_id = "" if raw_id is None else str(raw_id)
    if len(external_id) > 200:
        raise RowError("id is longer than 200 characters")
    return CleanRow(
        external_id=external_id,
        messages=messages,
        answer=answer,
        tests=tests,
        metadata=metadata,
        text_hash=messages_hash(messages),
    )


def _clean_tests(tests: Any) -> Any:
    if isinstance(tests, str):
        import json

        try:
            tests = json.loads(tests)
        except ValueError:
            raise RowError("tests is a string that is not JSON") from None
    if isinstance(tests, dict):
        if not isinstance(tests.get("test"), str) or not tests["test"].strip():
            raise RowError("tests.test must be assert-style source code")
        entry_point = tests.get("entry_point", "")
        if not isinstance(entry_point, str) or not entry_point.isidentifier():
            raise RowError("tests.entry_point must be a Python identifier")
        return {"test": tests["test"], "entry_point": entry_point}
    if isinstance(tests, list) and tests:
        for index, case in enumerate(tests):
            if not isinstance(case, dict) or not {"input", "output"} <= set(case):
                raise RowError(f"tests[{index}] must be an object with input and output")
            if not isinstance(case["input"], str) or not isinstance(case["output"], str):
                raise RowError(f"tests[{index}].input and .output must be strings")
        return [{"input": c["input"], "output": c["output"]} for c in tests]
    raise RowError("missing field: tests (required for domain code)")


@transaction.atomic
def import_prompts(
    *, prompt_set: PromptSet, rows: Iterable[RawRow], skip_invalid: bool = False
) -> ImportReport:
    """Adds the rows' prompts to the set. All or nothing unless `skip_invalid`.

    Prompts whose normalised text is already in the set (or earlier in the file) are dropped
    and counted, so re-importing a file changes nothing.
    """
    report = ImportReport()
    seen = set(Prompt.objects.filter(prompt_set=prompt_set).values_list("text_hash", flat=True))
    fresh: list[CleanRow] = []
    for row in rows:
        if row.error or row.data is None:
            report.invalid.append((row.line, row.error or "unreadable row"))
            continue
        try:
            clean = clean_row(row.data, prompt_set.domain)
        except RowError as exc:
            report.invalid.append((row.line, str(exc)))
            continue
        if clean.text_hash in seen:
            report.duplicates += 1
            continue
        seen.add(clean.text_hash)
        fresh.append(clean)
    if report.invalid and not skip_invalid:
        # Raising rolls back the whole import; the caller prints the report.
        raise ImportRejected(report)

    for start in range(0, len(fresh), 1000):
        chunk = fresh[start : start + 1000]
        prompts = Prompt.objects.bulk_create(
            [
                Prompt(
                    prompt_set=prompt_set,
                    external_id=c.external_id,
                    messages=c.messages,
                    text_hash=c.text_hash,
                    metadata=c.metadata,
                )
                for c in chunk
            ]
        )
        PromptGold.objects.bulk_create(
            [
                PromptGold(prompt=p, answer=c.answer, tests=c.tests)
                for p, c in zip(prompts, chunk, strict=True)
            ]
        )
    report.created = len(fresh)
    return report

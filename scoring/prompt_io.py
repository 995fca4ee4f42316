"""Reading prompt files: JSONL, JSON, CSV, Parquet, or a Hugging Face dataset name.

Rows come out as plain dicts with the project's field names (after --field-map) and the line
number they came from, so that an import can report bad rows precisely.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PromptFileError(Exception):
    """The file as a whole cannot be read (unknown format, broken JSON array, missing file)."""


@dataclass(frozen=True)
class RawRow:
    line: int  # 1-based line (JSONL, CSV: counting the header) or row index (JSON, Parquet)
    data: dict[str, Any] | None
    error: str | None = None


def parse_field_map(spec: str | None) -> dict[str, str]:
    """`prompt=question,answer=final` -> {"prompt": "question", "answer": "final"}."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        ours, sep, theirs = part.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise PromptFileError(f"--field-map entry {part!r} is not of the form ours=theirs")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def _apply_map(data: Any, field_map: dict[str, str]) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    if not field_map:
        return data
    mapped = dict(data)
    for ours, theirs in field_map.items():
        if theirs in data:
            mapped[ours] = data[theirs]
    return mapped


def read_rows(source: str, field_map: dict[str, str] | None = None) -> Iterator[RawRow]:
    field_map = field_map or {}
    path = Path(source)
    if not path.exists():
        if "/" in source and not source.startswith((".", "/")):
            yield from _read_hub_dataset(source, field_map)
            return
        raise PromptFileError(f"{source}: no such file")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path, field_map)
    elif suffix == ".json":
        yield from _read_json(path, field_map)
    elif suffix == ".csv":
        yield from _read_csv(path, field_map)
    elif suffix == ".parquet":
        yield from _read_parquet(path, field_map)
    else:
        raise PromptFileError(
            f"{source}: unknown format {suffix!r} (use .jsonl, .json, .csv, .parquet)"
        )


def _row(line: int, data: Any, field_map: dict[str, str]) -> RawRow:
    mapped = _apply_map(data, field_map)
    if mapped is None:
        return RawRow(line, None, "row is not an object")
    return RawRow(line, mapped)


def _read_jsonl(path: Path, field_map: dict[str, str]) -> Iterator[RawRow]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield RawRow(number, None, "line is not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield RawRow(number, None, f"invalid JSON: {exc.msg}")
                continue
            yield _row(number, data, field_map)


def _read_json(path: Path, field_map: dict[str, str]) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptFileError(f"{path}: not a valid JSON document ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise PromptFileError(f"{path}: expected a JSON array of objects")
    for index, item in enumerate(data, start=1):
        yield _row(index, item, field_map)


def _read_csv(path: Path, field_map: dict[str, str]) -> Iterator[RawRow]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for item in reader:
            yield _row(reader.line_num, dict(item), field_map)


def _read_parquet(path: Path, field_map: dict[str, str]) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for index, item in enumerate(table.to_pylist(), start=1):
        yield _row(index, item, field_map)


# Data files of a Hub dataset repository, as `datasets` finds a split's files when the card
# names none: a file or folder named after the split (data/train-00000-of-00001.parquet,
# train.jsonl, train/0000.parquet).
_HUB_FORMATS = (".parquet", ".jsonl", ".json", ".csv")


def _split_files(paths: list[str], split: str) -> list[str]:
    pattern = re.compile(rf"(^|/){re.escape(split)}([-._ 0-9/]|$)")
    return sorted(
        p for p in paths if p.lower().endswith(_HUB_FORMATS) and pattern.search(p.lower())
    )


def _read_hub_dataset(name: str, field_map: dict[str, str]) -> Iterator[RawRow]:
    """`org/name[:split]` (split `train` by default): the split's data files in the dataset
    repository, downloaded with huggingface_hub (cached; HF_TOKEN for private ones) and read
    like local files. Rows are numbered across the files in path order."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    repo_id, _, split = name.partition(":")
    split = (split or "train").lower()
    try:
        files = _split_files(HfApi().list_repo_files(repo_id, repo_type="dataset"), split)
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as exc:
        raise PromptFileError(f"{name}: could not list the dataset's files ({exc})") from exc
    if not files:
        raise PromptFileError(
            f"{name}: the dataset has no {'/'.join(_HUB_FORMATS)} files for split {split!r}"
        )
    index = 0
    for path_in_repo in files:
        try:
            local = hf_hub_download(repo_id, path_in_repo, repo_type="dataset")
        except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as exc:
            raise PromptFileError(f"{name}: could not download {path_in_repo} ({exc})") from exc
        for row in read_rows(local, field_map):
            index += 1
            yield RawRow(index, row.data, row.error)

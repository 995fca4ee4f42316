"""`thinkpool-worker upload FILE.jsonl`: samples generated offline (e.g. a big vLLM batch job).

One JSON object per line, the upload API's sample fields plus where it belongs:
``{"prompt": 123, ...}`` for a prompt id, or ``{"item": 45, ...}`` (with ``"lease": 6``, or an
item this worker leased, found in the journal). Required: ``completion``, ``model``,
``sampling.temperature``, ``finish_reason``. ``reasoning`` is split out of ``<think>…</think>``
when absent. A line without ``client_id`` gets one derived from its content, so uploading the same
file twice creates no duplicates.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .journal import Journal, JournalSample
from .reasoning import split_reasoning

SAMPLE_FIELDS = (
    "completion",
    "reasoning",
    "model",
    "model_revision",
    "sampling",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "generation_ms",
)


@dataclass
class ParsedFile:
    samples: list[JournalSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def content_client_id(line: dict[str, Any]) -> str:
    """A UUID4-shaped id derived from the sample's content: stable across re-uploads."""
    digest = hashlib.sha256(json.dumps(line, sort_keys=True).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def parse_jsonl(path: Path, journal: Journal) -> ParsedFile:
    out = ParsedFile()
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                out.samples.append(_sample(line, journal))
            except (ValueError, TypeError, KeyError) as exc:
                out.errors.append(f"{path.name}:{lineno}: {exc}")
    return out


def _sample(line: Any, journal: Journal) -> JournalSample:
    if not isinstance(line, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("completion", "model", "finish_reason") if line.get(k) is None]
    sampling = line.get("sampling")
    if not isinstance(sampling, dict) or not isinstance(sampling.get("temperature"), int | float):
        missing.append("sampling.temperature")
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    client_id = str(line.get("client_id") or content_client_id(line))
    uuid.UUID(client_id)  # ValueError for a malformed one
    payload = {k: line[k] for k in SAMPLE_FIELDS if k in line}
    if payload.get("reasoning") is None:
        payload["completion"], payload["reasoning"] = split_reasoning(payload["completion"])
    lease_id = line.get("lease")
    item_id = line.get("item")
    prompt_id = line.get("prompt")
    if item_id is not None:
        if lease_id is None:
            found = journal.find_item(str(item_id))
            if found is None:
                raise ValueError(
                    f"item {item_id} is not in any lease this worker holds; give its lease "
                    'id as "lease", or the prompt id as "prompt"'
                )
            lease_id, prompt_id = found[0], prompt_id or found[1]
    elif prompt_id is None:
        raise ValueError('needs "prompt" (a prompt id) or "item" (a leased item id)')
    return JournalSample(
        client_id=client_id,
        lease_id=None if lease_id is None or item_id is None else str(lease_id),
        item_id=None if item_id is None else str(item_id),
        prompt_id=None if prompt_id is None else str(prompt_id),
        payload=payload,
    )

"""Generation backends: where the contributor's model runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class GenRequest:
    messages: list[dict[str, Any]]
    temperature: float
    top_p: float
    max_tokens: int
    n: int = 1


@dataclass
class Generation:
    completion: str
    reasoning: str | None
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    generation_ms: int
    model: str
    model_revision: str | None = None
    # Provenance details that don't fit the fixed fields (e.g. how token counts were obtained).
    extra: dict[str, Any] = field(default_factory=dict)


OnResult = Callable[[int, list[Generation]], None]


@dataclass(frozen=True)
class ServedModel:
    id: str
    revision: str | None = None


class Backend(Protocol):
    name: str
    # How many generate() calls may run at once; in-process backends batch instead.
    max_parallel: int
    # How many requests one generate_batch() call takes.
    batch_size: int

    def served_models(self) -> list[ServedModel]: ...

    def check_model(self, model: str) -> ServedModel: ...

    def generate_batch(self, requests: list[GenRequest], on_result: OnResult) -> None:
        """Generate ``n`` samples for each request, calling ``on_result(index, generations)``
        as soon as any are ready (so they are journaled before the rest are generated)."""
        ...

    def close(self) -> None: ...


def elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)

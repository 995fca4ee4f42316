"""The contract every verifier keeps.

A verifier is a pure function of (candidate, gold, config): it touches no database and no
network, so it runs the same in a Celery prefork child, a unit test or a benchmark. The pipeline
(`scoring.tasks`) loads rows, calls `verify`, and upserts one Verdict per
(sample, verifier name, verifier version).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

# Celery's soft time limit is raised inside whatever runs; billiard (Celery's process pool)
# defines it and has no Django in it, so the verifiers stay importable anywhere.
from billiard.exceptions import SoftTimeLimitExceeded


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # the verifier itself broke: never counts as a pass
    TIMEOUT = "timeout"
    SKIPPED = "skipped"  # cannot judge (e.g. unparsable gold): never counts as a pass


@dataclass(frozen=True)
class Candidate:
    """What the contributor uploaded, as the verifiers see it."""

    completion: str
    reasoning: str | None = None
    finish_reason: str = "stop"
    # The prompt as the model saw it (last user message), for language checks.
    prompt_text: str = ""


@dataclass(frozen=True)
class Gold:
    """The hidden reference. Never leaves the server."""

    answer: str | None = None
    # Code: either [{"input": str, "output": str}, ...] (stdin/stdout) or
    # {"test": "<assert-style source defining check(candidate)>", "entry_point": "name"}.
    tests: Any = None


@dataclass(frozen=True)
class Outcome:
    status: Status
    score: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class Verifier(Protocol):
    name: ClassVar[str]
    # Bump when a change could alter any verdict: `manage.py rescore` re-judges old versions.
    version: ClassVar[int]

    def verify(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome: ...


def error_outcome(exc: BaseException, **details: Any) -> Outcome:
    """A verifier that broke reports it: `error`, never a pass, with the exception type."""
    return Outcome(
        Status.ERROR,
        0.0,
        {"error": type(exc).__name__, "message": str(exc)[:500], **details},
    )


def own_config(config: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """A verifier's view of the prompt-set config: top-level keys, overridden by its own section.

    Accepts both the whole prompt-set config (`{"math": {"timeout_s": 3}, ...}`) and a section
    already picked out (`{"timeout_s": 3}`).
    """
    config = dict(config or {})
    mine = config.pop(name, None)
    if isinstance(mine, dict):
        config.update(mine)
    elif mine is not None:
        config[name] = mine  # e.g. "language": "en" is a value, not a section
    return config


class GuardedVerifier:
    """Base for the built-in verifiers: `verify` never raises.

    Subclasses implement `check`; any exception it raises becomes an `error` outcome, so a broken
    verifier cannot pass a sample or crash the task that called it.
    """

    name: ClassVar[str]
    version: ClassVar[int]

    def verify(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        try:
            return self.check(candidate, gold, own_config(config, self.name))
        except SoftTimeLimitExceeded:
            raise  # the Celery task is out of time: that is no verdict on the sample
        except Exception as exc:
            return error_outcome(exc)

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        raise NotImplementedError

"""The verifiers, and which of them judge a prompt set.

Each verifier is pure (no Django, no database, no network) and never raises: see `base.py`.

Prompt-set config, as `verifiers_for` reads it (every key optional):

    {
        "verifiers": ["format", "math"],   # replaces the domain's default list
        "enable": ["language"],             # added to the list
        "disable": ["repetition"],          # removed from the list
        "format": {...}, "math": {...}, ... # each verifier's own config section
    }

The pipeline passes the whole config to `verifier.verify`; each verifier reads its own view
of it with `base.own_config` (top-level keys, overridden by its own section).
"""

from __future__ import annotations

from typing import Any

from scoring.verifiers.base import (
    Candidate,
    Gold,
    GuardedVerifier,
    Outcome,
    Status,
    Verifier,
    error_outcome,
)
from scoring.verifiers.code_tests import CodeVerifier
from scoring.verifiers.language import LanguageVerifier
from scoring.verifiers.math_answer import MathVerifier
from scoring.verifiers.quality import RepetitionVerifier, TruncationVerifier
from scoring.verifiers.reasoning_format import FormatVerifier
from scoring.verifiers.short_answer import McqVerifier, StringVerifier
from scoring.verifiers.text import split_reasoning

REGISTRY: dict[str, Verifier] = {
    v.name: v
    for v in (
        FormatVerifier(),
        MathVerifier(),
        CodeVerifier(),
        McqVerifier(),
        StringVerifier(),
        LanguageVerifier(),
        RepetitionVerifier(),
        TruncationVerifier(),
    )
}

_COMMON = ("format", "language", "repetition", "truncation")
DOMAIN_DEFAULTS: dict[str, tuple[str, ...]] = {
    "math": ("format", "math", *_COMMON[1:]),
    "code": ("format", "code", *_COMMON[1:]),
    "mcq": ("format", "mcq", *_COMMON[1:]),
    "string": ("format", "string", *_COMMON[1:]),
    "general": _COMMON,
}


def verifiers_for(domain: str, config: dict[str, Any] | None = None) -> list[Verifier]:
    """The verifiers that judge samples of a prompt set, in a stable order.

    Unknown domains or verifier names raise ValueError: a typo in a prompt set's config must
    not silently skip a check.
    """
    config = config or {}
    if domain not in DOMAIN_DEFAULTS:
        raise ValueError(f"unknown domain {domain!r}; known: {sorted(DOMAIN_DEFAULTS)}")
    names = list(config.get("verifiers") or DOMAIN_DEFAULTS[domain])
    names += [n for n in config.get("enable") or () if n not in names]
    disabled = set(config.get("disable") or ())
    unknown = (set(names) | disabled) - REGISTRY.keys()
    if unknown:
        raise ValueError(f"unknown verifiers {sorted(unknown)}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n] for n in names if n not in disabled]


__all__ = [
    "DOMAIN_DEFAULTS",
    "REGISTRY",
    "Candidate",
    "CodeVerifier",
    "FormatVerifier",
    "Gold",
    "GuardedVerifier",
    "LanguageVerifier",
    "MathVerifier",
    "McqVerifier",
    "Outcome",
    "RepetitionVerifier",
    "Status",
    "StringVerifier",
    "TruncationVerifier",
    "Verifier",
    "error_outcome",
    "split_reasoning",
    "verifiers_for",
]

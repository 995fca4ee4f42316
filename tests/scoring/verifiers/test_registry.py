from __future__ import annotations

import subprocess
import sys

import pytest

from scoring.verifiers import REGISTRY, verifiers_for
from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status, own_config


def names(domain: str, config: dict | None = None) -> list[str]:
    return [v.name for v in verifiers_for(domain, config or {})]


def test_registry_has_every_verifier_with_version() -> None:
    assert sorted(REGISTRY) == [
        "code",
        "format",
        "language",
        "math",
        "mcq",
        "repetition",
        "string",
        "truncation",
    ]
    assert all(isinstance(v.version, int) and v.version >= 1 for v in REGISTRY.values())


def test_domain_defaults() -> None:
    assert names("math") == ["format", "math", "language", "repetition", "truncation"]
    assert names("code") == ["format", "code", "language", "repetition", "truncation"]
    assert names("mcq")[1] == "mcq"
    assert names("string")[1] == "string"
    assert names("general") == ["format", "language", "repetition", "truncation"]


def test_config_overrides() -> None:
    assert names("math", {"disable": ["language"]}) == [
        "format",
        "math",
        "repetition",
        "truncation",
    ]
    assert names("general", {"verifiers": ["format"], "enable": ["string"]}) == ["format", "string"]
    with pytest.raises(ValueError, match="unknown verifiers"):
        verifiers_for("math", {"disable": ["lenguage"]})
    with pytest.raises(ValueError, match="unknown domain"):
        verifiers_for("poetry", {})


def test_own_config_merges_top_level_keys_under_the_verifiers_section() -> None:
    cfg = {"math": {"timeout_s": 2}, "language": "en", "threshold": 0.5, "timeout_s": 9}
    assert own_config(cfg, "math") == {"timeout_s": 2, "language": "en", "threshold": 0.5}
    assert own_config(cfg, "code")["timeout_s"] == 9  # no section of its own: top level
    assert own_config(cfg, "language")["language"] == "en"


def test_guarded_verifier_turns_exceptions_into_error() -> None:
    class Broken(GuardedVerifier):
        name = "broken"
        version = 1

        def check(self, candidate: Candidate, gold: Gold, config: dict) -> Outcome:
            raise KeyError("oops")

    out = Broken().verify(Candidate(completion=""), Gold(), {})
    assert (out.status, out.score, out.details["error"]) == (Status.ERROR, 0.0, "KeyError")


def test_verifiers_import_no_django() -> None:
    code = (
        "import sys, scoring.verifiers, scoring.sandbox; "
        "print(any(m.startswith('django') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr

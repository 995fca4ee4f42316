from __future__ import annotations

from pathlib import Path

from scoring.verifiers.base import Candidate

# tests/scoring/verifiers/helpers.py -> parents[3] is the repository root; shared/ sits beside it.
SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def completion(answer: str, reasoning: str = "Let me work through this carefully.") -> Candidate:
    return Candidate(completion=f"<think>\n{reasoning}\n</think>\n\n{answer}")

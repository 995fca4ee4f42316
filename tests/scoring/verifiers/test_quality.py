from __future__ import annotations

from scoring.verifiers import RepetitionVerifier, TruncationVerifier
from scoring.verifiers.base import Candidate, Gold, Status
from scoring.verifiers.quality import repetition_ratio

REP = RepetitionVerifier()
TRUNC = TruncationVerifier()
VARIED = " ".join(f"step {i} computes value {i * 7} from item {i + 3}." for i in range(40))


def test_repetition_ratio() -> None:
    assert repetition_ratio("a b c d e f", 2) == (0.0, 5)
    ratio, count = repetition_ratio("x y " * 50, 2)
    assert count == 99
    assert ratio > 0.97


def test_repetition_verifier() -> None:
    ok = REP.verify(Candidate(completion=f"<think>{VARIED}</think>done"), Gold(), {})
    assert ok.status is Status.PASS
    looped = "<think>" + "Wait, let me recompute this. " * 60 + "</think>4"
    bad = REP.verify(Candidate(completion=looped), Gold(), {})
    assert bad.status is Status.FAIL
    assert bad.details["ratio"] > 0.9
    assert bad.score < 0.1


def test_repetition_config_and_short_text() -> None:
    looped = "<think>" + "a b c d e " * 10 + "</think>4"
    assert (
        REP.verify(Candidate(completion=looped), Gold(), {"threshold": 0.95}).status is Status.PASS
    )
    short = REP.verify(Candidate(completion="<think>a a a a</think>4"), Gold(), {})
    assert (short.status, short.details["reason"]) == (Status.PASS, "too_short_to_judge")


def test_truncation() -> None:
    assert TRUNC.verify(Candidate(completion="<think>r</think>a"), Gold(), {}).status is Status.PASS
    length = TRUNC.verify(
        Candidate(completion="<think>r</think>a", finish_reason="length"), Gold(), {}
    )
    assert (length.status, length.details["reason"]) == (Status.FAIL, "length")
    cut = TRUNC.verify(Candidate(completion="<think>still thinking"), Gold(), {})
    assert (cut.status, cut.details["reason"]) == (Status.FAIL, "unclosed_reasoning")

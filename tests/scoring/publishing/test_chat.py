"""Chat columns in Arrow (scoring/publishing/chat.py) against the verifiers' own rule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.publishing.chat import (
    MESSAGES,
    assistant_content,
    conversations,
    single_turns,
    split_reasoning,
)
from scoring.selection import assistant_message
from scoring.verifiers.base import Candidate
from scoring.verifiers.text import parse_reasoning

# Pieces that make the rule's cases likely: tags, Python-only whitespace, text.
PIECES = st.sampled_from(
    ["<think>", "</think>", "<think", "think>", " ", "\n", "\x1c", "\u2003", "\x85", "a", "é", "4"]
)
TEXT = st.lists(PIECES, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(TEXT, st.one_of(st.none(), TEXT)), min_size=1, max_size=8))
def test_split_reasoning_agrees_with_parse_reasoning(samples):
    completions = pa.array([c for c, _ in samples], pa.string())
    reasonings = pa.array([r for _, r in samples], pa.string())
    think, response = split_reasoning(completions, reasonings)
    expected = [parse_reasoning(Candidate(completion=c, reasoning=r)) for c, r in samples]
    assert think.to_pylist() == [p.reasoning for p in expected]
    assert response.to_pylist() == [p.answer for p in expected]
    assert assistant_content(think, response).to_pylist() == [
        assistant_message(p.reasoning, p.answer)["content"] for p in expected
    ]


def test_split_reasoning_cases():
    think, response = split_reasoning(
        pa.array(["<think>a</think> b", "x</think>y", "<think>cut off", "plain", None]),
        pa.array([None, None, None, "  field  ", None]),
    )
    assert think.to_pylist() == ["a", "x", "cut off", "field", ""]
    assert response.to_pylist() == ["b", "y", "", "plain", ""]


def test_conversations_put_each_reply_after_its_prompts_messages():
    prompts = pa.array(
        [
            [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}],
            [{"role": "user", "content": "U2"}],
        ],
        MESSAGES,
    )
    got = conversations(prompts, np.array([1, 0, 1]), pa.array(["A", "B", "C"]))
    assert got.to_pylist() == [
        [{"role": "user", "content": "U2"}, {"role": "assistant", "content": "A"}],
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "B"},
        ],
        [{"role": "user", "content": "U2"}, {"role": "assistant", "content": "C"}],
    ]
    assert conversations(prompts, np.array([], dtype=np.int64), pa.array([], pa.string())) == (
        pa.array([], MESSAGES)
    )
    # A slice of a larger array (offsets not starting at 0) works the same.
    assert conversations(prompts.slice(1), np.array([0]), pa.array(["Z"])).to_pylist() == [
        [{"role": "user", "content": "U2"}, {"role": "assistant", "content": "Z"}]
    ]


def test_single_turns():
    assert single_turns(pa.array(["x", "y"])).to_pylist() == [
        [{"role": "assistant", "content": "x"}],
        [{"role": "assistant", "content": "y"}],
    ]

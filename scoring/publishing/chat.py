"""Chat columns in Arrow: a sample's reasoning and response, the assistant turn, and message
lists, computed on whole columns (Arrow compute, C++), not row by row in Python.

`split_reasoning` is the verifiers' rule (scoring.verifiers.text.parse_reasoning) on columns; a
property test holds the two to the same answers on any text.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scoring.verifiers.text import THINK_CLOSE, THINK_OPEN

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

# What Python's str.strip() removes: Arrow's own notion of whitespace differs on a few
# characters (the information separators \x1c-\x1f).
_WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


def _strip(values: pa.Array) -> pa.Array:
    return pc.utf8_trim(values, characters=_WHITESPACE)


def _part(parts: pa.Array, present: pa.Array, index: int) -> pa.Array:
    """Element `index` of each split where `present`, else null (a split that did not happen
    has one element only)."""
    return pc.list_element(pc.if_else(present, parts, pa.nulls(len(parts), parts.type)), index)


def split_reasoning(completion: pa.Array, reasoning: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(reasoning, response) of each sample, both stripped, as parse_reasoning gives them:
    the uploaded reasoning field when it has text; else the text before the last </think>
    (a template that opened the block leaves only the closing tag); else, a <think> never
    closed, everything after it; else no reasoning."""
    text = pc.fill_null(completion, "")
    field = _strip(pc.fill_null(reasoning, ""))
    has_field = pc.greater(pc.utf8_length(field), 0)
    has_close = pc.greater(pc.count_substring(text, THINK_CLOSE), 0)
    has_open = pc.greater(pc.count_substring(text, THINK_OPEN), 0)

    last = pc.split_pattern(text, THINK_CLOSE, max_splits=1, reverse=True)
    before_close = _part(last, has_close, 0)
    after_close = _part(last, has_close, 1)
    first = pc.split_pattern(text, THINK_OPEN, max_splits=1)
    before_open = _part(first, has_open, 0)
    after_open = _part(first, has_open, 1)

    closed_reasoning = _strip(
        pc.replace_substring(pc.replace_substring(before_close, THINK_OPEN, ""), THINK_CLOSE, "")
    )
    think = pc.case_when(
        pc.make_struct(has_field, has_close, has_open),
        field,
        closed_reasoning,
        _strip(after_open),
        pa.scalar("", pa.string()),
    )
    response = _strip(
        pc.case_when(
            pc.make_struct(has_close, has_field, has_open),
            after_close,
            pc.replace_substring(text, THINK_OPEN, ""),
            before_open,
            text,
        )
    )
    return think, response


def assistant_content(reasoning: pa.Array, response: pa.Array) -> pa.Array:
    """The assistant turn as R1 distillation data writes it (selection.assistant_message)."""
    joined = pc.binary_join_element_wise("<think>\n", reasoning, "\n</think>\n\n", response, "")
    return pc.if_else(pc.greater(pc.utf8_length(reasoning), 0), joined, response)


def _assistants(n: int) -> pa.Array:
    return pa.repeat(pa.scalar("assistant", pa.string()), n)


def single_turns(contents: pa.Array) -> pa.Array:
    """[{role: assistant, content}] per value."""
    n = len(contents)
    return pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32)),
        pa.StructArray.from_arrays([_assistants(n), contents], fields=list(MESSAGE)),
    )


def conversations(prompts: pa.Array, which: np.ndarray, replies: pa.Array) -> pa.Array:
    """For each i: the messages of prompts[which[i]] followed by an assistant turn replies[i].
    `prompts` is a list<message> array (one per prompt), `which` an index into it."""
    n = len(which)
    offsets = prompts.offsets.to_numpy()[: len(prompts) + 1] - prompts.offsets[0].as_py()
    lengths = np.diff(offsets)[which] if n else np.zeros(0, dtype=np.int64)
    flat = prompts.flatten()
    # Where each conversation starts in the output, and where its reply goes.
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=out_offsets[1:])
    total = int(out_offsets[-1])
    reply_at = out_offsets[1:] - 1
    take = np.empty(total, dtype=np.int64)
    is_reply = np.zeros(total, dtype=bool)
    is_reply[reply_at] = True
    # The prompt's messages: its first message's index, counting up.
    starts = np.repeat(offsets[:-1][which], lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    take[~is_reply] = starts + within
    take[is_reply] = len(flat) + np.arange(n)
    roles = pa.concat_arrays([flat.field("role"), _assistants(n)])
    contents = pa.concat_arrays([flat.field("content"), replies.cast(pa.string())])
    indices = pa.array(take)
    return pa.ListArray.from_arrays(
        pa.array(out_offsets.astype(np.int32)),
        pa.StructArray.from_arrays(
            [roles.take(indices), contents.take(indices)], fields=list(MESSAGE)
        ),
    )

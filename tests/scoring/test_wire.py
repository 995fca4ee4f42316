"""The plain-data format between the test harness and the program."""

from __future__ import annotations

import collections
import math
import os
import struct

import pytest

from scoring.sandbox_scripts import wire


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**200,
        -(2**70),
        2**20000,
        1.5,
        -0.0,
        float("inf"),
        "héllo\x00\ud800",
        b"\x00\xff",
        [1, [2, (3, 4)]],
        (),
        {1, 2},
        frozenset({"a"}),
        {"a": [1], (1, 2): {3}, None: 0.5},
        3 + 4j,
        int,
        type(None),
    ],
    ids=lambda v: type(v).__name__,
)
def test_plain_values_round_trip_with_their_exact_types(value: object) -> None:
    back = wire.decode(wire.encode(value))
    assert type(back) is type(value)
    assert back == value or (isinstance(value, float) and math.isnan(value))


def test_nan_round_trips() -> None:
    assert math.isnan(wire.decode(wire.encode(float("nan"))))


def test_subclasses_cross_as_their_plain_type() -> None:
    class Sneaky(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    counter = collections.Counter("aab")
    assert type(wire.decode(wire.encode(counter))) is dict
    assert wire.decode(wire.encode(counter)) == {"a": 2, "b": 1}
    point = collections.namedtuple("point", "x y")(1, 2)
    assert wire.decode(wire.encode(point)) == (1, 2)
    back = wire.decode(wire.encode(Sneaky("x")))
    assert type(back) is str
    assert back != "y"


def test_what_is_not_plain_data_does_not_cross() -> None:
    class Mine:
        pass

    for value in (Mine(), lambda: 1, iter([]), object(), [1, Mine()]):
        with pytest.raises(wire.CannotCross):
            wire.encode(value)
    nested: list[object] = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(wire.CannotCross, match="nested too deeply"):
        wire.encode(nested)


def test_other_hook_encodes_what_is_not_plain() -> None:
    class Mine:
        pass

    assert wire.encode([1, Mine()], 0, lambda v: {"h": 7}) == [1, {"h": 7}]


@pytest.mark.parametrize(
    "data",
    [
        {"x": 1},
        {"i": 5},
        {"f": "1.5"},
        {"t": 5},
        {"d": [[1]]},
        {"ty": "eval"},
        {"b": "!!"},
        {"a": 1, "b": 2},
        {"c": ["a", 1]},
    ],
)
def test_malformed_wire_data_is_refused(data: object) -> None:
    with pytest.raises((wire.BadFrame, ValueError)):
        wire.decode(data)


def test_frames_round_trip_and_oversized_or_truncated_frames_are_refused() -> None:
    r, w = os.pipe()
    try:
        wire.send(w, {"value": [1, 2]})
        assert wire.receive(r) == {"value": [1, 2]}
        os.write(w, struct.pack(">I", wire.MAX_FRAME + 1))
        with pytest.raises(wire.BadFrame, match="too large"):
            wire.receive(r)
        os.write(w, struct.pack(">I", 4) + b"[1]!")
        with pytest.raises(wire.BadFrame):
            wire.receive(r)
        os.write(w, struct.pack(">I", 10) + b"{")
        os.close(w)
        w = -1
        with pytest.raises(EOFError):
            wire.receive(r)
    finally:
        os.close(r)
        if w != -1:
            os.close(w)

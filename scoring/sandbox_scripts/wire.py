"""Plain data between the test harness and the candidate program, and nothing else.

Values cross as JSON with type tags, and are rebuilt on the other side from the data alone, so
what the harness compares is always an object of a built-in type that it made itself: no
`__eq__` of the program's, no subclass, no live reference into the program's process.

What crosses: None, bool, int (any size), float (nan and infinities included), complex, str,
bytes, list, tuple, dict (any plain hashable keys), set, frozenset, the built-in types
themselves, nested up to MAX_DEPTH; a subclass of one of them crosses as the plain type.
Anything else (an object of a class the program defined, a regex match, a generator) does not
cross by value: the candidate side keeps it and sends a handle (`{"h": …}`), which the harness
can pass back to the program but which equals nothing but itself.

Frames on a pipe: a 4-byte big-endian length, then that many bytes of UTF-8 JSON, at most
MAX_FRAME bytes. This file runs inside the sandbox on both sides (Python standard library only).
"""

from __future__ import annotations

import binascii
import os
import struct
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64
MAX_FRAME = 16 * 1024 * 1024
# JSON numbers beyond this are sent as hex strings: json.loads refuses ints of more than 4300
# digits, and floats would lose precision.
SAFE_INT = 2**53


class CannotCross(TypeError):
    """A value that is not plain data."""


class BadFrame(ValueError):
    """A frame that is too large, truncated, or not the wire format."""


# Built-in types cross by name (MBPP passes `int` to a function that filters by type).
TYPES = {
    t.__name__: t
    for t in (
        int,
        float,
        complex,
        str,
        bytes,
        bool,
        list,
        tuple,
        dict,
        set,
        frozenset,
        type(None),
        object,
    )
}


def encode(value: Any, depth: int = 0, other: Callable[[Any], Any] | None = None) -> Any:
    """Plain data as wire JSON. A subclass of a plain type crosses as that type (a Counter as a
    dict, a namedtuple as a tuple): what arrives is rebuilt from the data, never the subclass.
    `other(value)` may encode anything else (a handle); without it, CannotCross."""
    if depth > MAX_DEPTH:
        raise CannotCross("nested too deeply")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        number = int.__index__(value)
        return number if -SAFE_INT < number < SAFE_INT else {"i": hex(number)}
    if isinstance(value, float):
        real = float(value)
        if real != real or real in (float("inf"), float("-inf")):
            return {"f": repr(real)}
        return real
    if isinstance(value, complex):
        c = complex(value)
        return {"c": [encode(c.real, depth + 1), encode(c.imag, depth + 1)]}
    if isinstance(value, bytes):
        return {"b": binascii.b2a_base64(bytes(value), newline=False).decode("ascii")}
    if isinstance(value, list):
        return [encode(v, depth + 1, other) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"t": [encode(v, depth + 1, other) for v in tuple.__iter__(value)]}
    if isinstance(value, frozenset):
        return {"fs": [encode(v, depth + 1, other) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [encode(v, depth + 1, other) for v in set.__iter__(value)]}
    if isinstance(value, dict):
        return {
            "d": [
                [encode(k, depth + 1, other), encode(v, depth + 1, other)]
                for k, v in dict.items(value)
            ]
        }
    if isinstance(value, type) and TYPES.get(value.__name__) is value:
        return {"ty": value.__name__}
    if other is not None:
        encoded = other(value)
        if encoded is not None:
            return encoded
    raise CannotCross(type(value).__name__)


def decode(data: Any, depth: int = 0, custom: Callable[[str, Any], Any] | None = None) -> Any:
    """Wire JSON back to plain data, built here. `custom(tag, body)` rebuilds tags of the
    caller's own (handles); any other unknown shape is a BadFrame."""
    if depth > MAX_DEPTH:
        raise BadFrame("nested too deeply")
    t = type(data)
    if data is None or t is bool or t is str or t is int or t is float:
        return data
    if t is list:
        return [decode(v, depth + 1, custom) for v in data]
    if t is not dict or len(data) != 1:
        raise BadFrame("not the wire format")
    ((tag, body),) = data.items()
    if tag == "i" and type(body) is str:
        return int(body, 16)
    if tag == "f" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag == "c" and type(body) is list and len(body) == 2:
        re, im = decode(body[0], depth + 1), decode(body[1], depth + 1)
        if type(re) not in (int, float) or type(im) not in (int, float):
            raise BadFrame("complex parts must be numbers")
        return complex(re, im)
    if tag == "b" and type(body) is str:
        # binascii, not base64: that module imports `re` (see `dumps`).
        return binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
    if tag == "ty" and body in TYPES:
        return TYPES[body]
    if tag in ("t", "s", "fs", "d") and type(body) is not list:
        raise BadFrame("not the wire format")
    if tag == "t":
        return tuple(decode(v, depth + 1, custom) for v in body)
    if tag == "s":
        return {decode(v, depth + 1, custom) for v in body}
    if tag == "fs":
        return frozenset(decode(v, depth + 1, custom) for v in body)
    if tag == "d":
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise BadFrame("dict items must be pairs")
            out[decode(pair[0], depth + 1, custom)] = decode(pair[1], depth + 1, custom)
        return out
    if custom is not None:
        return custom(tag, body)
    raise BadFrame("unknown tag")


# JSON through the C accelerator directly: `import json` pulls in `re` and `enum`, a third of
# the start-up of the two processes of every graded run. Same encoder and scanner as json's own.
class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")  # NaN, Infinity: never on the wire


try:
    import _json

    _scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys,
    # allow_nan): no cycle check, as `encode`'s output has none; NaN is refused.
    _encode = _json.make_encoder(
        None,
        None,  # type: ignore[arg-type]
        _json.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )

    def dumps(value: Any) -> str:
        """Compact ASCII JSON; values are the output of `encode` (no cycles, no NaN)."""
        return "".join(_encode(value, 0))

    def loads(text: str) -> Any:
        value, end = _scan(text, 0)
        if end != len(text):
            raise ValueError("extra data after the JSON value")
        return value

except ImportError:  # an interpreter without the accelerator
    import json

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)

    def loads(text: str) -> Any:
        return json.loads(text, parse_constant=_Context.parse_constant)


def send(fd: int, message: dict[str, Any]) -> None:
    data = dumps(message).encode("ascii")
    if len(data) > MAX_FRAME:
        raise BadFrame("frame too large")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive(fd: int, max_size: int = MAX_FRAME) -> dict[str, Any]:
    (size,) = struct.unpack(">I", _read_exactly(fd, 4))
    if size > max_size:
        raise BadFrame("frame too large")
    try:
        message = loads(_read_exactly(fd, size).decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError, StopIteration) as exc:
        raise BadFrame(type(exc).__name__) from None
    if type(message) is not dict:
        raise BadFrame("a frame must hold an object")
    return message

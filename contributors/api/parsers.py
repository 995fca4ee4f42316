"""The API's only parser. Every request body passes here, so what it refuses no endpoint sees:
bodies over the size cap, invalid UTF-8, NaN and infinities, JSON nested deeper than
MAX_JSON_DEPTH, and lone surrogates (which no database can store, and which made every later
read of what held them fail)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

# Containers inside containers, the outermost included. A real body needs a handful; 64 leaves
# `hardware` and `sampling` room, and any code that walks the data recursively far from
# Python's recursion limit.
MAX_JSON_DEPTH = 64

# A lone surrogate can only come from a \uD800-\uDFFF escape: the body was decoded as strict
# UTF-8, which refuses encoded surrogates. Without such an escape the data needs no scan.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# After decoding, a valid pair is one astral character: any surrogate left is a lone one.
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than the server accepts."
    default_code = "body_too_large"


class BodyRefused(exceptions.ParseError):
    """Refused for what is at one place in the body. The error names it as `path` (`$` the
    body, `.key`, `[index]`: "$.samples[1].completion"), so that a client can tell which of the
    samples it sent to set aside."""

    def __init__(self, detail: str | None = None, *, path: str | None = None) -> None:
        super().__init__(detail)
        self.path = path


class NestedTooDeeply(BodyRefused):
    default_detail = f"The body is nested more than {MAX_JSON_DEPTH} levels deep."
    default_code = "nested_too_deeply"


class InvalidUnicode(BodyRefused):
    default_code = "invalid_unicode"


class LimitedJSONParser(JSONParser):
    """JSON with a hard cap on the body. DRF reads the raw stream, which bypasses Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE, so the cap is enforced here before anything is parsed."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge()
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise BodyTooLarge()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.ParseError("The body is not valid UTF-8.") from None
        try:
            # The C decoder counts its nesting against Python's recursion limit and stops with
            # RecursionError, so no body can exhaust the stack; check_json then bounds it far
            # lower, without recursion of its own.
            data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except ValueError as exc:
            raise exceptions.ParseError(f"The body is not valid JSON: {exc}") from None
        except RecursionError:
            raise NestedTooDeeply() from None
        check_json(
            data,
            # Fewer brackets than the bound cannot nest deeper than it: most bodies skip the walk.
            depth=text.count("[") + text.count("{") > MAX_JSON_DEPTH,
            unicode=_SURROGATE_ESCAPE.search(text) is not None,
        )
        return data


def check_json(data: Any, *, depth: bool = True, unicode: bool = True) -> None:
    """Refuses decoded JSON nested deeper than MAX_JSON_DEPTH or holding a lone surrogate in any
    key or string. Iterative, with an explicit stack that the depth bound keeps small."""
    if not (depth or unicode):
        return
    # (value, its depth, its path as (parent path, key) links, rendered only for the error).
    # Children are pushed in reverse, so the first problem in document order is the one named.
    stack: list[tuple[Any, int, Any]] = [(data, 1, None)]
    while stack:
        value, level, path = stack.pop()
        if isinstance(value, dict):
            if level > MAX_JSON_DEPTH:
                raise NestedTooDeeply(path=_render_path(path))
            for key in value:
                if unicode and _SURROGATE.search(key):
                    raise _invalid_unicode((path, key), "key")
            stack.extend((value[key], level + 1, (path, key)) for key in reversed(value))
        elif isinstance(value, list):
            if level > MAX_JSON_DEPTH:
                raise NestedTooDeeply(path=_render_path(path))
            stack.extend(
                (value[index], level + 1, (path, index)) for index in reversed(range(len(value)))
            )
        elif unicode and isinstance(value, str) and _SURROGATE.search(value):
            raise _invalid_unicode(path, "string")


def _invalid_unicode(path: Any, what: str) -> InvalidUnicode:
    where = _render_path(path)
    return InvalidUnicode(
        f"A {what} at {where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
        "which is not text: encode it as valid UTF-8.",
        path=where,
    )


def _render_path(path: Any) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            # The key itself may be the bad string: escaped, so the error is valid JSON.
            parts.append("." + key[:64].encode("utf-8", "backslashreplace").decode("utf-8"))
    return "$" + "".join(reversed(parts))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses to inf, which no database JSON column accepts.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value

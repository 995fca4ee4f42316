"""One error shape for the whole API: {"error": {"code", "message", "fields"?}}.

Anything that escapes a view as an unexpected exception is still a 500, but the parsers,
validators and services turn every kind of bad input into a 4xx before that can happen.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from contributors.services import ServiceError

_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "throttled",
}


def error_body(code: str, message: str, fields: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        body = error_body(exc.code, exc.message)
        # Extra fields never replace the code or the message.
        body["error"].update({k: v for k, v in exc.details.items() if k not in body["error"]})
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return Response(body, status=exc.status, headers=headers)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("body_too_large", "The request body is larger than the server accepts."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = _CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "The request is not valid.", exc.detail)
    elif isinstance(exc, exceptions.ParseError):
        # The parser's subclasses name what was wrong (nested_too_deeply, invalid_unicode).
        response.data = error_body(getattr(exc.detail, "code", "parse_error"), str(exc.detail))
        if getattr(exc, "path", None):  # where in the body (parsers.BodyRefused)
            response.data["error"]["path"] = exc.path  # type: ignore[attr-defined]
    elif isinstance(exc, exceptions.APIException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        response.data = error_body(code, str(message))
    return response

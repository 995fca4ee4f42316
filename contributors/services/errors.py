"""The one error the crowd-side services raise for a request that is well-formed but not
allowed now. The API turns it into `{"error": {"code", "message", **details}}` with `status`
(and a `Retry-After` header when `retry_after` is set)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """`code` is machine-readable; `message` says what to do; `details`: more machine-readable
    fields of the error (e.g. a quota and when it resets); `retry_after`: seconds after which
    asking again may succeed."""

    status = 409

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        *,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after
        if status is not None:
            self.status = status

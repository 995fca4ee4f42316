"""The one error the crowd-side services raise for a request that is well-formed but not
allowed now. The API turns it into `{"error": {"code", "message"}}` with `status`."""

from __future__ import annotations


class ServiceError(Exception):
    """`code` is machine-readable; `message` says what to do."""

    status = 409

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status

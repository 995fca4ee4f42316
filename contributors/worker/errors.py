"""Errors the CLI turns into one plain-language line each."""

from __future__ import annotations


class WorkerError(Exception):
    """An error with a message meant for the contributor (one line, says what to do)."""

    exit_code = 1


class ConfigError(WorkerError):
    exit_code = 2


class ServerUnreachable(WorkerError):
    pass


class ApiError(WorkerError):
    """A 4xx/5xx answer from the Thinkpool server, with its machine-readable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, object] | None = None,
    ) -> None:
        super().__init__(f"the server answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


class AuthError(ApiError):
    """401/403: the token is wrong, revoked, or lacks permission."""


class UploadPostponed(WorkerError):
    """The server could not take an upload now (5xx/429/408 after retries): the samples stay
    pending in the journal and go up on a later flush or the next start."""


class BackendError(WorkerError):
    pass


class BackendUnreachable(BackendError):
    pass


class ModelNotServed(BackendError):
    pass


class MissingExtra(WorkerError):
    exit_code = 2

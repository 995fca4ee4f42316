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
        *,
        text: str | None = None,
    ) -> None:
        # ``text`` replaces the generic line when the caller knows what the contributor should do.
        super().__init__(text or f"the server answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


class AuthError(ApiError):
    """401/403: the token is wrong, revoked, or lacks permission."""


def token_refused(server: str, exc: ApiError) -> AuthError:
    """The one line a contributor sees for a refused token: what the server said, once, and
    what to do about it (tokens are issued by the server's maintainers)."""
    if exc.status == 403:
        text = (
            f"the server at {server} accepts the token but refuses this account "
            f"({exc.message}); ask the server's maintainers why"
        )
    else:
        text = (
            f"the server at {server} refused the token ({exc.status}: {exc.message}); get a new "
            "token from its maintainers (they run `manage.py issue_token YOUR_NAME`) and run "
            f"`thinkpool-worker login --server {server} --token tp_...`"
        )
    return AuthError(exc.status, exc.code, exc.message, exc.fields, text=text)


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

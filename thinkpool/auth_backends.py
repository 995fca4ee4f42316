"""Authentication backends: django-axes' login lockout, in front of Django's ModelBackend."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LockoutBackend(AxesStandaloneBackend):
    """Refuses a login while its username is locked out at its client address (settings:
    AXES_*). django-axes' own backend raises when called without a request. A login over HTTP
    (the admin's form) always has one, and is what the lockout is for; `authenticate()` without
    a request (the test client's `login()`, a shell) comes from no address, so there is nothing
    to count or lock, and the next backend decides."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)

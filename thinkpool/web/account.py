"""Pages: account (see thinkpool/web/__init__.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def _todo(request: HttpRequest) -> HttpResponse:  # placeholder until the page is built
    return HttpResponse("todo")


urlpatterns = [
    path("todo-signup/", _todo, name="signup"),
    path("todo-login/", _todo, name="login"),
    path("todo-logout/", _todo, name="logout"),
    path("todo-profile/", _todo, name="profile"),
    path("todo-tokens/", _todo, name="tokens"),
    path("todo-nodes/", _todo, name="nodes"),
    path("todo-my-samples/", _todo, name="my-samples"),
]

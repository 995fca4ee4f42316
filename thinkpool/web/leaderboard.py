"""Pages: leaderboard (see thinkpool/web/__init__.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def _todo(request: HttpRequest) -> HttpResponse:  # placeholder until the page is built
    return HttpResponse("todo")


urlpatterns = [
    path("todo-leaderboard/", _todo, name="leaderboard"),
]

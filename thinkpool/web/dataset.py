"""Pages for everyone: home, prompt sets, the sample explorer, releases."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from contributors.selectors import public_stats


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "thinkpool/home.html", {"stats": public_stats()})


def _todo(request: HttpRequest) -> HttpResponse:  # placeholder until the page is built
    return HttpResponse("todo")


urlpatterns = [
    path("", home, name="home"),
    path("todo-sets/", _todo, name="sets"),
    path("todo-samples/", _todo, name="samples"),
    path("todo-releases/", _todo, name="releases"),
]

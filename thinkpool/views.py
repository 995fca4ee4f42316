"""Site pages. Every value shown is escaped by the template engine (autoescape stays on)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from contributors.selectors import public_stats


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "thinkpool/home.html", {"stats": public_stats()})


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": {"code": "not_found", "message": "No such endpoint."}}, status=404
        )
    return render(request, "thinkpool/404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": {"code": "server_error", "message": "Something broke on our side."}},
            status=500,
        )
    return HttpResponse("Server error", status=500, content_type="text/plain")

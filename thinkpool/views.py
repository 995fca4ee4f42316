"""Site pages. Every value shown is escaped by the template engine (autoescape stays on)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from thinkpool.selectors import queue_health as read_queue_health

logger = logging.getLogger(__name__)

# Each dependency of /readyz answers within this, or counts as down. The database's own bound is
# its connect timeout (THINKPOOL_DB_CONNECT_TIMEOUT_S); the cache's, its socket timeouts.
BROKER_TIMEOUT_S = 2


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """Alive: the process serves requests. Touches no dependency, so an outage of the database,
    broker or cache never gets a healthy web process restarted."""
    return JsonResponse({"ok": True})


@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready: the database, the broker and the cache each answer, within a short timeout.
    200 with each check's result, or 503 naming what is down. Errors name only their type: the
    page is public, and the messages (host names, addresses) go to the log."""
    checks = {"database": _check_database, "broker": _check_broker, "cache": _check_cache}
    results = {name: _run_check(name, check) for name, check in checks.items()}
    down = [name for name, result in results.items() if not result["ok"]]
    return JsonResponse(
        {"ok": not down, "down": down, "checks": results}, status=503 if down else 200
    )


def _run_check(name: str, check: Callable[[], None]) -> dict[str, object]:
    started = time.monotonic()
    try:
        check()
    # Any failure of a dependency is an answer here, never a 500: that is what /readyz is for.
    except Exception as exc:
        logger.warning("readyz: %s is down: %s: %s", name, type(exc).__name__, exc)
        result: dict[str, object] = {"ok": False, "error": type(exc).__name__}
    else:
        result = {"ok": True}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _check_database() -> None:
    # This process's own connection: the one its requests use, and no new one per probe.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_broker() -> None:
    from thinkpool.celery import app

    with app.connection_for_write(connect_timeout=BROKER_TIMEOUT_S) as conn:
        conn.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_S)


def _check_cache() -> None:
    key, value = "thinkpool:readyz", secrets.token_hex(8)
    cache.set(key, value, timeout=10)
    if cache.get(key) != value:
        raise RuntimeError("the cache did not return what was just stored")


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


@staff_member_required
@never_cache
def queue_health(request: HttpRequest) -> HttpResponse:
    """Staff only: what waits, what fails, what is stuck (thinkpool.selectors.queue_health)."""
    context = {**admin.site.each_context(request), "health": read_queue_health()}
    return render(request, "admin/queue_health.html", context)

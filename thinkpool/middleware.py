"""Request checks that hold for every URL of the site, the admin's included."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from contributors.api.errors import error_body

NUL_MESSAGE = "The URL holds a NUL character (%00), which no parameter of this site accepts."


class RejectNulMiddleware:
    """Answers 400 to a request whose path or query string holds NUL.

    PostgreSQL text cannot hold NUL, and psycopg refuses a query parameter that does (a
    DataError, so a 500): an admin changelist search `?q=%00` or filter `?name__exact=%00`, or
    any view that filters by a query parameter. No URL here means anything with NUL in it, so
    it is refused once, before any view builds a query, rather than in each of them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or _query_has_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse(error_body("invalid_query", NUL_MESSAGE), status=400)
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain")
        return self.get_response(request)


def _query_has_nul(request: HttpRequest) -> bool:
    raw = request.META.get("QUERY_STRING", "")
    if "%00" not in raw and "\x00" not in raw:
        return False  # the common case: no need to decode the query
    return any(
        "\x00" in key or any("\x00" in value for value in values)
        for key, values in request.GET.lists()
    )

"""Pages: the leaderboard and a contributor's credit history (see thinkpool/web/__init__.py).

The board reads LeaderboardRow only (computed every minute by contributors.tasks
.refresh_leaderboard), never the credit ledger; the history reads the contributor's own
ledger entries, a page at a time."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse

from contributors import selectors
from contributors.models import Period


def board(request: HttpRequest) -> HttpResponse:
    period = selectors.leaderboard_period(request.GET.get("period"))
    return render(
        request,
        "thinkpool/leaderboard/board.html",
        {
            "board": selectors.leaderboard(period=period),
            "formula": selectors.credit_formula(),
            "periods": Period.choices,
            "period": period,
            "period_label": Period(period).label,
        },
    )


@login_required
def credit_history(request: HttpRequest) -> HttpResponse:
    history = selectors.credit_history(user=request.user, page=request.GET.get("page"))
    entries = [
        {
            "entry": entry,
            "bounty_url": reverse("bounty-detail", args=[entry.bounty_id])
            if entry.bounty_id
            else None,
        }
        for entry in history["page"].object_list
    ]
    totals = [
        {
            "label": label,
            "points": history["totals"][period]["points"],
            "verified": history["totals"][period]["verified"],
            "rank": history["ranks"][period],
            "period": period,
        }
        for period, label in Period.choices
    ]
    return render(
        request,
        "thinkpool/leaderboard/history.html",
        {"page": history["page"], "entries": entries, "totals": totals},
    )


urlpatterns = [
    path("", board, name="leaderboard"),
    path("me/", credit_history, name="credit-history"),
]

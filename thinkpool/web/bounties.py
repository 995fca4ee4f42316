"""Pages: the bounty board, a bounty's page, claims (see thinkpool/web/__init__.py).

Progress is Bounty.progress as contributors.services.bounties last counted it (verified samples
of closed prompts only), never a count made here."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from contributors import selectors
from contributors.models import BOUNTY_LIVE
from contributors.services import ServiceError
from contributors.services.bounties import claim_bounty

TEMPLATES = "thinkpool/bounties/"
FILTER_LABELS = {"open": "Open", "mine": "Mine", "completed": "Completed"}


class ClaimForm(forms.Form):
    note = forms.CharField(
        label="Note (optional)",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you will do, or a link to your work. Shown on this page.",
    )


def board(request: HttpRequest) -> HttpResponse:
    which = request.GET.get("show", "open")
    context = selectors.bounty_board(user=request.user, which=which, page=request.GET.get("page"))
    context["tabs"] = [(key, FILTER_LABELS[key]) for key in selectors.BOUNTY_FILTERS]
    return render(request, TEMPLATES + "board.html", context)


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    context = selectors.bounty_detail(bounty_id=pk, user=request.user)
    context["live"] = context["bounty"].status in BOUNTY_LIVE
    context["form"] = ClaimForm()
    return render(request, TEMPLATES + "detail.html", context)


@require_POST
def claim(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.is_authenticated:
        # Back to the bounty's page after logging in (this URL takes only POST).
        return redirect_to_login(reverse("bounty-detail", kwargs={"pk": pk}))
    form = ClaimForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The note is too long (2000 characters at most).")
        return redirect("bounty-detail", pk=pk)
    try:
        claim_bounty(bounty_id=pk, user=request.user, note=form.cleaned_data["note"])
    except ServiceError as exc:
        if exc.code == "not_found":
            raise Http404 from None
        messages.error(request, exc.message)
    else:
        messages.success(request, "Claimed: a maintainer will review your claim.")
    return redirect("bounty-detail", pk=pk)


urlpatterns = [
    path("", board, name="bounty-board"),
    path("<int:pk>/", detail, name="bounty-detail"),
    path("<int:pk>/claim/", claim, name="bounty-claim"),
]

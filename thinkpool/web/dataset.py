"""Pages for everyone: home, prompt sets, the sample explorer, releases.

Every number comes from what is kept as work happens: the public counters and the per-day
counter (scoring.counters), the sets' progress (scoring.progress, SetProgress), releases. No
page counts samples. Progress is *verified* samples against the sampling plan's targets;
rejected samples are shown beside it, never as progress; verified / rejected and pass rates
count samples of closed prompts only (scoring.disclosure).

The explorer shows published samples only: settled (judged, not held back) samples of prompts
that a confirmed release has published (ReleasedPrompt). Their prompts are closed, so their
status and verdict statuses are disclosed; verdict details and scores, and the gold, are
never shown. Every text is escaped; math goes through the `math` filter
(thinkpool/templatetags/thinkpool_math.py), which escapes everything it does not render.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from contributors.selectors import public_handles, public_stats
from scoring import progress
from scoring.models import (
    Release,
    ReleasedPrompt,
    ReleaseState,
    ReleaseTarget,
    Sample,
    Verdict,
)
from scoring.selection import settled_q
from scoring.verifiers.base import Candidate
from scoring.verifiers.text import split_reasoning

TEMPLATES = "thinkpool/dataset/"
SAMPLES_PAGE_SIZE = 25
RELEASES_SHOWN = 100
HUB = "https://huggingface.co"

# --- the samples-per-day chart (server-rendered SVG) ----------------------------------------

CHART_WIDTH, CHART_HEIGHT = 600, 200
CHART_TOP, CHART_BOTTOM, CHART_LEFT = 16, 24, 8


@dataclass(frozen=True)
class Bar:
    day: date
    count: int
    x: float
    y: float
    width: float
    height: float


def chart_bars(days: list[tuple[date, int]]) -> list[Bar]:
    """One bar per day, scaled to the largest day (geometry in the SVG's own units)."""
    if not days:
        return []
    peak = max(n for _, n in days) or 1
    plot = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = (CHART_WIDTH - 2 * CHART_LEFT) / len(days)
    bars = []
    for k, (day, n) in enumerate(days):
        height = round(plot * n / peak, 1)
        bars.append(
            Bar(
                day=day,
                count=n,
                x=round(CHART_LEFT + k * slot + slot * 0.1, 1),
                y=round(CHART_TOP + plot - height, 1),
                width=round(slot * 0.8, 1),
                height=height,
            )
        )
    return bars


# --- releases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseView:
    release: Release
    tree_url: str | None  # the Hub's dataset page at the release's tag
    card_url: str | None  # its dataset card at that tag
    location: str | None  # a local release's folder: staff only


def _hub_base(release: Release) -> str:
    location = release.location or ""
    if location.startswith(("https://", "http://")):
        return location.rstrip("/")
    return HUB


def release_view(release: Release, *, staff: bool) -> ReleaseView:
    if release.target == ReleaseTarget.HUB:
        base = f"{_hub_base(release)}/datasets/{quote(release.repo_id, safe='/')}"
        tag = quote(release.tag, safe="")
        return ReleaseView(release, f"{base}/tree/{tag}", f"{base}/blob/{tag}/README.md", None)
    return ReleaseView(release, None, None, release.location if staff else None)


def published_releases() -> QuerySet[Release]:
    return Release.objects.filter(state=ReleaseState.PUBLISHED).order_by(
        "-published_at", "-version", "-pk"
    )


# --- published samples ----------------------------------------------------------------------


def published_samples() -> QuerySet[Sample]:
    """Settled samples of prompts that a confirmed release has published."""
    released = ReleasedPrompt.objects.filter(prompt_id=OuterRef("prompt_id"))
    return Sample.objects.filter(settled_q(), Exists(released))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# --- views ----------------------------------------------------------------------------------


def home(request: HttpRequest) -> HttpResponse:
    overview = progress.overview()
    days = progress.samples_per_day()
    latest = published_releases().first()
    return render(
        request,
        "thinkpool/home.html",
        {
            "stats": public_stats(),
            "overview": overview,
            "days": days,
            "bars": chart_bars(days),
            "chart": {
                "width": CHART_WIDTH,
                "height": CHART_HEIGHT,
                "baseline": CHART_HEIGHT - CHART_BOTTOM,
                "peak": max((n for _, n in days), default=0),
                "total": sum(n for _, n in days),
            },
            "latest": release_view(latest, staff=request.user.is_staff) if latest else None,
        },
    )


def sets(request: HttpRequest) -> HttpResponse:
    return render(request, TEMPLATES + "sets.html", {"overview": progress.overview()})


def set_detail(request: HttpRequest, name: str) -> HttpResponse:
    found = progress.overview().get(name)
    if found is None:  # made since the cached overview: look once more, uncached
        found = progress.compute_overview().get(name)
    if found is None:
        raise Http404
    return render(request, TEMPLATES + "set_detail.html", {"set": found})


def samples(request: HttpRequest) -> HttpResponse:
    """Published samples, newest first, a page at a time by id (keyset: `before`)."""
    overview = progress.overview()
    set_name = request.GET.get("set") or ""
    model = request.GET.get("model") or ""
    before = _int(request.GET.get("before"))
    rows = published_samples()
    chosen_set = overview.get(set_name) if set_name else None
    if set_name and chosen_set is None:
        rows = rows.none()
    elif chosen_set is not None:
        rows = rows.filter(prompt__prompt_set_id=chosen_set.id)
    if model:
        rows = rows.filter(model=model)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    page = list(
        rows.select_related("prompt__prompt_set")
        .only(
            "pk",
            "model",
            "temperature",
            "status",
            "finish_reason",
            "completion_tokens",
            "received_at",
            "prompt__messages",
            "prompt__prompt_set__name",
        )
        .order_by("-pk")[: SAMPLES_PAGE_SIZE + 1]
    )
    more = len(page) > SAMPLES_PAGE_SIZE
    page = page[:SAMPLES_PAGE_SIZE]
    filters = {k: v for k, v in (("set", set_name), ("model", model)) if v}
    return render(
        request,
        TEMPLATES + "samples.html",
        {
            "samples": page,
            "set_names": [s.name for s in overview.sets],
            "models": [m for m, _ in overview.by_model],
            "chosen_set": set_name,
            "chosen_model": model,
            "filtered": bool(filters),
            "paged": before is not None,
            "first_url": "?" + urlencode(filters) if filters else "?",
            "next_url": "?" + urlencode({**filters, "before": page[-1].pk}) if more else None,
        },
    )


def sample_detail(request: HttpRequest, pk: int) -> HttpResponse:
    first_release = ReleasedPrompt.objects.filter(prompt_id=OuterRef("prompt_id")).order_by(
        "version", "pk"
    )
    sample = (
        published_samples()
        .filter(pk=pk)
        .select_related("prompt__prompt_set")
        .annotate(
            release_repo=first_release.values("repo_id")[:1],
            release_version=first_release.values("version")[:1],
        )
        .first()
    )
    if sample is None:
        raise Http404
    # Statuses only: a verdict's details can quote a hidden test, and its score is a grade.
    verdicts = list(
        Verdict.objects.filter(sample=sample)
        .order_by("verifier", "-version")
        .values_list("verifier", "version", "status")
    )
    handle = public_handles([sample.contributor_id]).get(sample.contributor_id)
    # As the verifiers and the release rows split it: the reasoning field, or <think>…</think>.
    reasoning, answer = split_reasoning(
        Candidate(completion=sample.completion, reasoning=sample.reasoning or None)
    )
    context: dict[str, Any] = {
        "sample": sample,
        "prompt_set": sample.prompt.prompt_set,
        "prompt_messages": [
            {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
            for m in sample.prompt.messages
            if isinstance(m, dict)
        ],
        "verdicts": verdicts,
        "handle": handle,
        "reasoning": reasoning,
        "answer": answer,
    }
    return render(request, TEMPLATES + "sample_detail.html", context)


def releases(request: HttpRequest) -> HttpResponse:
    staff = request.user.is_staff
    shown = [release_view(r, staff=staff) for r in published_releases()[:RELEASES_SHOWN]]
    return render(request, TEMPLATES + "releases.html", {"releases": shown})


urlpatterns = [
    path("", home, name="home"),
    path("sets/", sets, name="sets"),
    path("sets/<slug:name>/", set_detail, name="set-detail"),
    path("samples/", samples, name="samples"),
    path("samples/<int:pk>/", sample_detail, name="sample-detail"),
    path("releases/", releases, name="releases"),
]

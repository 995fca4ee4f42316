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

from django.db.models import Count, Exists, F, OuterRef, QuerySet, Subquery, Window
from django.db.models.functions import Coalesce, RowNumber
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from contributors.selectors import public_handles, public_stats
from scoring import progress
from scoring.models import (
    Prompt,
    PromptSet,
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
    """Settled samples of prompts that a confirmed release has published: the one definition
    of "published" (the explorer's page of prompts and the sample page both go through it)."""
    released = ReleasedPrompt.objects.filter(prompt_id=OuterRef("prompt_id"))
    return Sample.objects.filter(settled_q(), Exists(released))


def _int(value: str | None) -> int | None:
    """A keyset from the query string: None for junk, clamped to what a bigint column holds."""
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    return None if number is None else max(0, min(number, 2**63 - 1))


# --- the sample explorer ----------------------------------------------------------------------
#
# Nothing indexes "published" on the samples table, so a page is never found by walking
# samples (every unpublished sample, or every sample of another model, would be read first).
# It is driven by ReleasedPrompt instead, down its prompt_id index: the next EXPLORER_PROMPTS
# released prompts, newest prompt first, keyset `before=<prompt id>`, that have a published
# sample (of the chosen model: a probe of the (prompt, model, temperature) index) and, with a
# set chosen, are in that set (a probe of the prompt by its key). A request looks through no
# more than EXPLORER_SCAN released prompts below `before` (a range on that index), so a
# selective filter can come back with a short page, or none, and a link to look further down.
# With a set chosen, the walk goes down that set's own prompts instead (by seq, its unique
# index; `before` is then a seq), probing each for a release: an old set's prompts are found at
# once, not below every newer set's.
# Then one query for those prompts' published samples, at most EXPLORER_SAMPLES of each (by
# model, temperature, id), with their count. Four queries at most, whatever the sizes.

EXPLORER_PROMPTS = 10  # prompts a page
EXPLORER_SAMPLES = 24  # samples shown of each prompt
# Released-prompt rows a request looks through, at most: about a microsecond each, and a few
# for each filter's probe (bench/pages.py at 1M samples: 2,000 rows in 2.2 ms with a set).
EXPLORER_SCAN = 10_000
PROMPT_SNIPPET = 300  # characters of a prompt's text
SAMPLE_ORDER = ["model", "temperature", "pk"]  # of a prompt's samples


@dataclass(frozen=True)
class ExplorerPrompt:
    prompt: Prompt
    samples: list[Sample]  # the first EXPLORER_SAMPLES, by model, temperature, id
    more: int  # published samples of the prompt (of the chosen model) not shown


@dataclass(frozen=True)
class ExplorerPage:
    prompts: list[ExplorerPrompt]
    next_before: int | None  # the keyset of the next page, if there may be one
    scanned_to: int | None  # a short page: looked through released prompts down to this id


def _released_window(before: int | None) -> QuerySet[ReleasedPrompt]:
    rows = ReleasedPrompt.objects.all()
    return rows.filter(prompt_id__lt=before) if before is not None else rows


def _scan_floor(before: int | None) -> Any:
    """The prompt id of the EXPLORER_SCAN-th released row below `before` (a queryset, one
    value or none): a request looks no further down than that."""
    return (
        _released_window(before)
        .order_by("-prompt_id")
        .values_list("prompt_id", flat=True)[EXPLORER_SCAN - 1 : EXPLORER_SCAN]
    )


def _set_window(set_id: int, before: int | None) -> QuerySet[Prompt]:
    rows = Prompt.objects.filter(prompt_set_id=set_id)
    return rows.filter(seq__lt=before) if before is not None else rows


def _set_scan_floor(set_id: int, before: int | None) -> Any:
    """The seq of the EXPLORER_SCAN-th prompt of the set below `before`: the set's walk looks no
    further down than that."""
    return (
        _set_window(set_id, before)
        .order_by("-seq")
        .values_list("seq", flat=True)[EXPLORER_SCAN - 1 : EXPLORER_SCAN]
    )


def _walk_released(model_sample: Any, before: int | None) -> tuple[list[int], Any]:
    """Every set: down ReleasedPrompt's prompt_id index. Returns the page's prompt ids (one
    more than a page if there is more) and the scan's floor (a queryset of one prompt id)."""
    rows = _released_window(before).alias(a_sample=Subquery(model_sample))
    floor = _scan_floor(before)
    rows = rows.filter(a_sample__isnull=False, prompt_id__gte=Coalesce(Subquery(floor), 0))
    # A prompt released to several repositories has a row for each: DISTINCT (over the index's
    # order it stops at the limit; whatever the plan, the window bounds it).
    ids = list(
        rows.order_by("-prompt_id")
        .values_list("prompt_id", flat=True)
        .distinct()[: EXPLORER_PROMPTS + 1]
    )
    return ids, floor


def _walk_set(
    set_id: int, model_sample: Any, before: int | None
) -> tuple[list[tuple[int, int]], Any]:
    """One set: down the set's own prompts by seq (the (prompt_set, seq) unique index), so an
    old set's prompts are found at once rather than below every newer set's. Keyset: `before`
    is a seq here. Returns (prompt ids, as (seq, id) pairs in the page order) and the floor."""
    released = ReleasedPrompt.objects.filter(prompt_id=OuterRef("pk")).values("pk")[:1]
    floor = _set_scan_floor(set_id, before)
    rows = (
        _set_window(set_id, before)
        .alias(released=Subquery(released), a_sample=Subquery(model_sample))
        .filter(
            released__isnull=False,
            a_sample__isnull=False,
            seq__gte=Coalesce(Subquery(floor), 0),
        )
    )
    return list(rows.order_by("-seq").values_list("seq", "pk")[: EXPLORER_PROMPTS + 1]), floor


def explorer_page(*, set_id: int | None, model: str, before: int | None) -> ExplorerPage:
    """A page of the explorer: released prompts with published samples (see above)."""
    # Each test is a scalar subquery (LIMIT 1), which the database runs for a row as the walk
    # reaches it: PostgreSQL never makes one a join, which it could start from the other table
    # (a merge join down the samples' or the prompts' index from the newest prompt would read
    # every unpublished sample or prompt above the window first).
    key = "prompt_id" if set_id is None else "pk"
    one_sample = published_samples().filter(prompt_id=OuterRef(key))
    if model:
        one_sample = one_sample.filter(model=model)
    model_sample = one_sample.values("pk")[:1]
    ids: list[int]
    keys: list[int]
    if set_id is None:
        ids, floor = _walk_released(model_sample, before)
        keys = ids
    else:
        pairs, floor = _walk_set(set_id, model_sample, before)
        ids = [pk for _, pk in pairs]
        keys = [seq for seq, _ in pairs]
    page_ids = ids[:EXPLORER_PROMPTS]
    next_before, scanned_to = None, None
    if len(ids) > EXPLORER_PROMPTS:
        next_before = keys[EXPLORER_PROMPTS - 1]
    else:
        # Fewer than a page in the window: the walk reached the end, or the scan's limit.
        reached = floor.first()
        if reached is not None:
            next_before = scanned_to = reached
    if not page_ids:
        return ExplorerPage([], next_before, scanned_to)

    prompts = (
        Prompt.objects.filter(pk__in=page_ids)
        .select_related("prompt_set")
        .only("pk", "messages", "prompt_set__name")
        .in_bulk()
    )
    # Every published sample of the page's prompts is read (as many as their sampling plans
    # made) to number and count them per prompt; at most EXPLORER_SAMPLES of each come back.
    by_prompt = Window(RowNumber(), partition_by=[F("prompt_id")], order_by=SAMPLE_ORDER)
    samples = published_samples().filter(prompt_id__in=page_ids)
    if model:
        samples = samples.filter(model=model)
    shown = (
        samples.annotate(rank=by_prompt, total=Window(Count("pk"), partition_by=[F("prompt_id")]))
        .filter(rank__lte=EXPLORER_SAMPLES)
        .only("pk", "prompt_id", "model", "temperature", "status", "completion_tokens")
        .order_by("prompt_id", *SAMPLE_ORDER)
    )
    grouped: dict[int, list[Sample]] = {pk: [] for pk in page_ids}
    totals: dict[int, int] = {}
    for sample in shown:
        grouped[sample.prompt_id].append(sample)
        totals[sample.prompt_id] = sample.total
    return ExplorerPage(
        [
            ExplorerPrompt(prompts[pk], grouped[pk], totals[pk] - len(grouped[pk]))
            for pk in page_ids
            if pk in prompts and grouped[pk]  # (none left if held back since the walk)
        ],
        next_before,
        scanned_to,
    )


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
    # Made since the cached overview: look once more, uncached; but only for a set that exists
    # (one indexed lookup), so a request for any made-up name costs no recount.
    if found is None and PromptSet.objects.filter(name=name).exists():
        found = progress.compute_overview().get(name)
    if found is None:
        raise Http404
    return render(request, TEMPLATES + "set_detail.html", {"set": found})


def samples(request: HttpRequest) -> HttpResponse:
    """Released prompts, newest first, each with its published samples; a page at a time by
    prompt id (keyset: `before`). See explorer_page."""
    overview = progress.overview()
    set_name = request.GET.get("set") or ""
    model = request.GET.get("model") or ""
    before = _int(request.GET.get("before"))
    chosen_set = overview.get(set_name) if set_name else None
    if set_name and chosen_set is None:
        page = ExplorerPage([], None, None)
    else:
        page = explorer_page(
            set_id=chosen_set.id if chosen_set else None, model=model, before=before
        )
    filters = {k: v for k, v in (("set", set_name), ("model", model)) if v}
    next_url = None
    if page.next_before is not None:
        next_url = "?" + urlencode({**filters, "before": page.next_before})
    return render(
        request,
        TEMPLATES + "samples.html",
        {
            "page": page,
            "snippet_length": PROMPT_SNIPPET,
            "scan": EXPLORER_SCAN,
            "set_names": [s.name for s in overview.sets],
            "models": [m for m, _ in overview.by_model],
            "chosen_set": set_name,
            "chosen_model": model,
            "filtered": bool(filters),
            "paged": before is not None,
            "first_url": "?" + urlencode(filters) if filters else "?",
            "next_url": next_url,
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

"""The public dataset pages (thinkpool/web/dataset.py): home, prompt sets, the sample explorer
and releases. Exact numbers from the counters and SetProgress, a bounded number of queries
whatever the number of samples, only published samples, and never the gold."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from contributors.models import Profile
from scoring import counters, progress
from scoring.models import (
    Prompt,
    PromptSet,
    Release,
    ReleasedPrompt,
    Sample,
    SampleStatus,
    Verdict,
)
from tests.factories import PromptFactory, PromptSetFactory, UserFactory
from thinkpool.web import dataset

pytestmark = pytest.mark.django_db

GOLD = "SECRET-GOLD-42"
XSS = (
    '<script>window.__pwned=1</script> <img src=x onerror="window.__pwned=1"> '
    '"><svg onload=alert(1)>'
)
MATH_XSS = r"$\text{<img src=x onerror=window.__pwned=1>}$"


@dataclass
class World:
    arith: PromptSet
    snippets: PromptSet
    prompts: dict[str, Prompt]
    samples: dict[str, Sample]
    releases: dict[str, Release]


def _sample(prompt: Prompt, user: Any, status: str, **fields: Any) -> Sample:
    return Sample.objects.create(
        prompt=prompt,
        contributor=user,
        model=fields.pop("model", "org/model-a"),
        temperature=fields.pop("temperature", 0.6),
        completion=fields.pop("completion", "The answer is $x^2$, so \\boxed{4}."),
        finish_reason="stop",
        status=status,
        **fields,
    )


def _release(repo: str, version: int, *, target: str = "hub", **fields: Any) -> Release:
    return Release.objects.create(target=target, repo_id=repo, version=version, **fields)


def build_world() -> World:
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    Profile.objects.filter(user=bob).update(public_attribution=False)
    arith = PromptSetFactory(
        name="arith",
        domain="math",
        license="MIT",
        samples_per_prompt=2,
        temperatures=[0.6],
        models_allowed=["org/model-a", "org/*"],
        description="Sums <b>bold</b> & more",
        source='https://example.org/a?b=1&c="><script>x</script>',
    )
    snippets = PromptSetFactory(name="snippets", domain="code", license="Apache-2.0")
    prompts = {
        name: PromptFactory(
            prompt_set=arith, messages=[{"role": "user", "content": f"What is {name}? $1+1$"}]
        )
        for name in ("pub1", "pub2", "closed", "open")
    }
    prompts["snip"] = PromptFactory(prompt_set=snippets)
    now = timezone.now()
    Prompt.objects.exclude(pk=prompts["open"].pk).update(closed_at=now)
    samples = {
        "s1": _sample(
            prompts["pub1"],
            alice,
            SampleStatus.VERIFIED,
            reasoning=f"Think {XSS} then {MATH_XSS} and $$\\frac{{a}}{{b}}$$",
            completion=f"{XSS} Final: $x^2$",
        ),
        "s2": _sample(prompts["pub1"], bob, SampleStatus.REJECTED),
        "s3": _sample(prompts["pub2"], alice, SampleStatus.VERIFIED, quarantined=True),
        "s4": _sample(prompts["pub2"], alice, SampleStatus.ERROR),
        "s5": _sample(prompts["closed"], alice, SampleStatus.VERIFIED),
        "s6": _sample(prompts["open"], alice, SampleStatus.VERIFIED),
        "s7": _sample(prompts["pub2"], bob, SampleStatus.VERIFIED, model="org/model-b"),
        "s8": _sample(prompts["snip"], alice, SampleStatus.VERIFIED),
    }
    Verdict.objects.create(
        sample=samples["s1"],
        verifier="math",
        version=3,
        status="pass",
        score=0.75,
        details={"expected": GOLD},
    )
    Verdict.objects.create(sample=samples["s1"], verifier="format", version=1, status="pass")
    releases = {
        "v1": _release(
            "org/data",
            1,
            state="published",
            published_at=now - timedelta(days=10),
            row_counts={"raw": 3, "sft": 1},
        ),
        "v2": _release(
            "org/data",
            2,
            state="published",
            published_at=now - timedelta(days=1),
            row_counts={"raw": 4, "rl": 1, "sft": 2, "preference": 1},
        ),
        "local": _release(
            "local/data",
            1,
            target="local",
            location="/srv/secret-folder/data",
            state="published",
            published_at=now - timedelta(days=5),
        ),
        "pending": _release("org/data", 3, state="pending"),
    }
    for key in ("pub1", "pub2", "snip"):
        ReleasedPrompt.objects.create(
            target="hub", repo_id="org/data", prompt=prompts[key], version=1
        )
    counters.recompute()
    progress.recompute()
    cache.clear()
    return World(arith, snippets, prompts, samples, releases)


@pytest.fixture
def world() -> World:
    return build_world()


def get(client: Any, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    text = response.content.decode()
    assert GOLD not in text
    return text


def squash(html: str) -> str:
    """The page with runs of white space made one space, and none between tags."""
    return re.sub(r">\s+<", "><", " ".join(html.split()))


# --- home ------------------------------------------------------------------------------------


def test_home_shows_exact_totals_progress_pass_rates_and_the_latest_release(client, world):
    html = squash(get(client, "/"))
    # Counters: 8 samples, 2 contributors, 5 verified (closed prompts), 5 prompts, 2 sets.
    for row in (
        "<th>Contributors</th><td>2</td>",
        "<th>Samples</th><td>8</td>",
        "<th>Verified</th><td>5</td>",
        "<th>Prompts</th><td>5</td>",
        "<th>Prompt sets</th><td>2</td>",
    ):
        assert row in html
    assert "Slots filled" not in html
    # arith: 2 models (org/model-a from the plan, org/model-b uploaded) x 4 prompts x 2.
    assert (
        '<progress max="16" value="4" aria-label="arith: 4 of 16 verified">25.0%</progress>' in html
    )
    assert "<strong>4</strong> / 16 verified (25.0%) · 1 rejected · 2 awaiting verdict" in html
    assert "<strong>1</strong> / 2 verified (50.0%) · 0 rejected · 0 awaiting verdict" in html
    # Pass rates over closed prompts: by model, by domain.
    assert (
        '<th scope="row">org/model-a</th><td class="num">4</td><td class="num">1</td>'
        '<td class="num">80.0%</td>'
    ) in html
    assert (
        '<th scope="row">org/model-b</th><td class="num">1</td><td class="num">0</td>'
        '<td class="num">100.0%</td>'
    ) in html
    assert '<th scope="row">Math</th><td class="num">4</td>' in html
    assert '<th scope="row">Code</th><td class="num">1</td>' in html
    # The chart: 8 samples stored today, one bar per day for 30 days.
    assert html.count('<rect class="bar"') == 30
    assert "8 samples in the last 30 days; the busiest day had 8." in html
    today = timezone.now().date().isoformat()
    assert f"<title>{today}: 8 samples</title>" in html
    # The latest published release (v2, not the pending v3) with its Hub link.
    assert "org/data v2" in html and "v3" not in html
    assert 'href="https://huggingface.co/datasets/org/data/tree/v2"' in html
    # How to contribute.
    assert f'<a href="{reverse("signup")}">Sign up</a> (or' in html
    assert "thinkpool-worker run" in html


def test_an_open_prompts_verdict_moves_nothing_on_the_home_page(client, world):
    before = get(client, "/")
    _sample(world.prompts["open"], UserFactory(), SampleStatus.REJECTED)
    progress.recompute()
    counters.recompute()
    cache.clear()
    after = get(client, "/")
    assert "<th>Samples</th><td>9</td>" in after
    # Verified, rejected and pass rates do not move; only "awaiting verdict" does.
    assert "<th>Verified</th><td>5</td>" in before and "<th>Verified</th><td>5</td>" in after
    assert "1 rejected · 3 awaiting verdict" in squash(after)


def test_home_costs_a_bounded_number_of_queries_whatever_the_samples(client, world):
    def measure() -> list[str]:
        cache.clear()
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/").status_code == 200
        return [q["sql"] for q in queries.captured_queries]

    small = measure()
    user = UserFactory()
    Sample.objects.bulk_create(
        [
            Sample(
                prompt=world.prompts["pub1"],
                contributor=user,
                model=f"org/m{k % 5}",
                temperature=0.6,
                completion="x",
                finish_reason="stop",
                status=SampleStatus.VERIFIED,
            )
            for k in range(200)
        ]
    )
    progress.recompute()
    counters.recompute()
    large = measure()
    assert len(small) == len(large) <= 8
    assert not any('"scoring_sample"' in sql for sql in large)


# --- prompt sets -----------------------------------------------------------------------------


def test_sets_list_shows_each_sets_progress_and_escapes_its_text(client, world):
    html = squash(get(client, "/sets/"))
    assert '<a href="/sets/arith/">arith</a>' in html
    assert "Math · licence MIT · 4 prompts · 2 models" in html
    assert "Code · licence Apache-2.0 · 1 prompt · 1 model" in html
    assert "Sums &lt;b&gt;bold&lt;/b&gt; &amp; more" in html
    assert "<b>bold</b>" not in html and "<script>x</script>" not in html
    assert 'href="https://example.org/a?b=1&amp;c=&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in html


def test_a_set_page_shows_progress_per_model_and_temperature(
    client, world, django_assert_max_num_queries
):
    with django_assert_max_num_queries(4):
        html = squash(get(client, "/sets/arith/"))
    assert "<h1>arith</h1>" in html
    assert "2 samples per prompt, per model, at temperature 0.6: 8 per model" in html
    assert "<dd>org/model-a, org/model-b</dd>" in html
    # Per model: org/model-a 3 verified of 8, 1 rejected, 2 awaiting (an error, an open one).
    assert (
        '<th scope="row">org/model-a</th><td><progress max="8" value="3" '
        'aria-label="org/model-a: 3 of 8 verified">37.5%</progress> 37.5%</td>'
        '<td class="num">3</td><td class="num">8</td><td class="num">1</td>'
        '<td class="num">2</td>'
    ) in html
    assert (
        '<th scope="row">org/model-b</th><td><progress max="8" value="1" '
        'aria-label="org/model-b: 1 of 8 verified">12.5%</progress> 12.5%</td>'
    ) in html
    # Per temperature: both models at 0.6.
    assert (
        '<th scope="row">0.6</th><td><progress max="16" value="4" '
        'aria-label="0.6: 4 of 16 verified">25.0%</progress> 25.0%</td>'
    ) in html
    assert 'href="/samples/?set=arith"' in html


def test_an_unknown_set_is_a_404(client, world):
    get(client, "/sets/nope/", status=404)


def test_a_set_made_since_the_cached_overview_is_found(client, world):
    get(client, "/sets/")
    PromptSetFactory(name="fresh")
    assert "<h1>fresh</h1>" in get(client, "/sets/fresh/")


# --- the sample explorer ---------------------------------------------------------------------


def listed(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/samples/(\d+)/"', html)]


def explored(html: str) -> list[tuple[int, list[int]]]:
    """The page's prompts in order, each with the ids of the samples it links to."""
    sections = re.findall(
        r'<section class="explorer-prompt" aria-labelledby="prompt-(\d+)">(.*?)</section>',
        html,
        re.S,
    )
    return [(int(pk), listed(body)) for pk, body in sections]


def released(prompt: Prompt, repo: str = "org/data", target: str = "hub") -> None:
    ReleasedPrompt.objects.create(target=target, repo_id=repo, prompt=prompt, version=1)


def test_the_explorer_lists_released_prompts_newest_first_with_their_published_samples(
    client, world
):
    p, s = world.prompts, world.samples
    # pub2's s3 is quarantined and s4 an error; "closed" (s5) was never released, "open" (s6)
    # is open; snip and pub1 each have one published sample.
    assert explored(get(client, "/samples/")) == [
        (p["snip"].pk, [s["s8"].pk]),
        (p["pub2"].pk, [s["s7"].pk]),
        (p["pub1"].pk, [s["s1"].pk, s["s2"].pk]),
    ]


def test_the_explorer_leaves_out_what_is_not_published(client, world):
    p, s = world.prompts, world.samples
    banned, gone = UserFactory(username="banned"), UserFactory(username="gone")
    Profile.objects.filter(user=banned).update(banned=True)
    type(gone).objects.filter(pk=gone.pk).update(is_active=False)
    hidden = [
        _sample(p["pub1"], banned, SampleStatus.VERIFIED),
        _sample(p["pub1"], gone, SampleStatus.VERIFIED),
        _sample(p["pub1"], banned, SampleStatus.RECEIVED),
        _sample(p["snip"], banned, SampleStatus.REJECTED, quarantined=True),
    ]
    # Released twice (to two repositories): listed once. Released with nothing published
    # (an error, and a quarantined sample): not listed.
    released(p["pub1"], "local/data", "local")
    empty = PromptFactory(prompt_set=world.arith)
    Prompt.objects.filter(pk=empty.pk).update(closed_at=timezone.now())
    _sample(empty, world.samples["s1"].contributor, SampleStatus.ERROR)
    _sample(empty, world.samples["s1"].contributor, SampleStatus.VERIFIED, quarantined=True)
    released(empty)
    html = get(client, "/samples/")
    assert explored(html) == [
        (p["snip"].pk, [s["s8"].pk]),
        (p["pub2"].pk, [s["s7"].pk]),
        (p["pub1"].pk, [s["s1"].pk, s["s2"].pk]),
    ]
    assert "and 1 more" not in html and "more</p>" not in html
    for sample in hidden:
        get(client, f"/samples/{sample.pk}/", status=404)


def test_the_explorer_shows_each_samples_facts_and_escapes_the_prompt(client, world):
    p, s = world.prompts, world.samples
    Sample.objects.filter(pk=s["s1"].pk).update(completion_tokens=1234, temperature=0.8)
    long_text = f"{XSS} " + "x" * 400
    Prompt.objects.filter(pk=p["pub1"].pk).update(messages=[{"role": "user", "content": long_text}])
    html = squash(get(client, "/samples/"))
    pk = p["pub1"].pk
    assert (
        f'<h2 id="prompt-{pk}">Prompt {pk} <span class="muted">in <a href="/sets/arith/">arith</a>'
        in html
    )
    escaped = (
        "&lt;script&gt;window.__pwned=1&lt;/script&gt; &lt;img src=x "
        "onerror=&quot;window.__pwned=1&quot;&gt; &quot;&gt;&lt;svg onload=alert(1)&gt; "
    )
    assert f'<p class="snippet">{escaped}{"x" * (299 - len(XSS) - 1)}…</p>' in html
    assert "<script>window" not in html and "<img" not in html and "<svg" not in html
    # s2 (0.6) before s1 (0.8): by model, then temperature, then id.
    assert (
        f'<tr><th scope="row"><a href="/samples/{s["s2"].pk}/">#{s["s2"].pk}</a></th>'
        '<td>org/model-a</td><td class="num">0.6</td>'
        '<td><span class="badge rejected">rejected</span></td><td class="num">?</td></tr>'
        f'<tr><th scope="row"><a href="/samples/{s["s1"].pk}/">#{s["s1"].pk}</a></th>'
        '<td>org/model-a</td><td class="num">0.8</td>'
        '<td><span class="badge verified">verified</span></td><td class="num">1234</td></tr>'
    ) in html


def test_the_explorer_filters_by_set_and_model(client, world):
    p, s = world.prompts, world.samples
    assert explored(get(client, "/samples/?set=snippets")) == [(p["snip"].pk, [s["s8"].pk])]
    assert explored(get(client, "/samples/?set=arith&model=org/model-b")) == [
        (p["pub2"].pk, [s["s7"].pk])
    ]
    # pub2 has no published sample of model-a (s3 is quarantined, s4 an error).
    assert explored(get(client, "/samples/?model=org/model-a")) == [
        (p["snip"].pk, [s["s8"].pk]),
        (p["pub1"].pk, [s["s1"].pk, s["s2"].pk]),
    ]
    html = get(client, "/samples/?set=nope")
    assert explored(html) == [] and "No published samples match these filters." in html
    html = get(client, "/samples/?model=org/nobody")
    assert explored(html) == [] and "No published samples match these filters." in html
    assert 'rel="next"' not in html
    assert explored(get(client, "/samples/?before=junk")) == explored(get(client, "/samples/"))
    huge = "/samples/?before=" + "9" * 30  # past any id (and any bigint): from the newest
    assert explored(get(client, huge)) == explored(get(client, "/samples/"))
    assert explored(get(client, "/samples/?before=-5")) == []


def test_the_explorer_pages_by_prompt_id(client, world, monkeypatch):
    monkeypatch.setattr(dataset, "EXPLORER_PROMPTS", 2)
    p, s = world.prompts, world.samples
    first = get(client, "/samples/")
    assert explored(first) == [(p["snip"].pk, [s["s8"].pk]), (p["pub2"].pk, [s["s7"].pk])]
    assert f'<a href="?before={p["pub2"].pk}" rel="next">Older prompts</a>' in first
    assert "Newest" not in first
    second = get(client, f"/samples/?before={p['pub2'].pk}")
    assert explored(second) == [(p["pub1"].pk, [s["s1"].pk, s["s2"].pk])]
    assert 'rel="next"' not in second and '<a href="?">Newest</a>' in second
    # The filters travel with the keyset; a page that reaches the end has no next link.
    monkeypatch.setattr(dataset, "EXPLORER_PROMPTS", 1)
    filtered = get(client, "/samples/?model=org/model-a")
    assert explored(filtered) == [(p["snip"].pk, [s["s8"].pk])]
    assert f'<a href="?model=org%2Fmodel-a&amp;before={p["snip"].pk}" rel="next">' in filtered
    last = get(client, f"/samples/?model=org/model-a&before={p['snip'].pk}")
    assert explored(last) == [(p["pub1"].pk, [s["s1"].pk, s["s2"].pk])]
    assert '<a href="?model=org%2Fmodel-a">Newest</a>' in last and 'rel="next"' not in last


def test_a_prompt_shows_its_first_samples_and_how_many_more(client, world, monkeypatch):
    monkeypatch.setattr(dataset, "EXPLORER_SAMPLES", 3)
    p, s = world.prompts, world.samples
    alice = s["s1"].contributor
    b1 = _sample(p["pub1"], alice, SampleStatus.VERIFIED, model="org/model-b")
    a_cold = _sample(p["pub1"], alice, SampleStatus.REJECTED, temperature=0.2)
    _sample(p["pub1"], alice, SampleStatus.VERIFIED, model="org/model-c")
    _sample(p["pub1"], alice, SampleStatus.VERIFIED, quarantined=True)  # not counted
    html = get(client, "/samples/")
    assert explored(html)[-1] == (p["pub1"].pk, [a_cold.pk, s["s1"].pk, s["s2"].pk])
    assert html.count('<p class="muted">and 2 more</p>') == 1
    # The model filter narrows the samples (and the count) too.
    html = get(client, "/samples/?model=org/model-b")
    assert explored(html) == [(p["pub2"].pk, [s["s7"].pk]), (p["pub1"].pk, [b1.pk])]
    assert "more</p>" not in html


def test_a_request_looks_through_a_bounded_stretch_of_released_prompts(client, world, monkeypatch):
    monkeypatch.setattr(dataset, "EXPLORER_SCAN", 1)
    p = world.prompts
    # Every set: one released prompt a request, down ReleasedPrompt. A model nobody used: the
    # newest (snip) does not match, the page is empty and says so; the link goes on from it.
    html = get(client, "/samples/?model=no/such")
    assert explored(html) == []
    assert "among the 1 most recent prompts looked at; older ones may" in html
    assert f'href="?model=no%2Fsuch&amp;before={p["snip"].pk}" rel="next"' in html


def test_a_chosen_set_is_walked_down_its_own_prompts(client, world, monkeypatch):
    monkeypatch.setattr(dataset, "EXPLORER_SCAN", 1)
    p, s = world.prompts, world.samples
    seq = {name: Prompt.objects.get(pk=p[name].pk).seq for name in ("pub1", "pub2", "closed")}
    # arith's prompts by seq, newest first: open and closed (neither released), pub2, pub1.
    # One prompt of the set a request; the keyset is the seq; another set's newer prompts
    # (snip) are never looked at.
    html = get(client, "/samples/?set=arith")
    assert explored(html) == []
    assert f'href="?set=arith&amp;before={seq["closed"] + 1}" rel="next"' in html
    html = get(client, f"/samples/?set=arith&before={seq['closed'] + 1}")
    assert explored(html) == []
    html = get(client, f"/samples/?set=arith&before={seq['closed']}")
    assert explored(html) == [(p["pub2"].pk, [s["s7"].pk])]
    assert "Looked through 1 prompts for this page; older ones may match too." in html
    assert f'href="?set=arith&amp;before={seq["pub2"]}" rel="next"' in html
    html = get(client, f"/samples/?set=arith&before={seq['pub2']}")
    assert explored(html) == [(p["pub1"].pk, [s["s1"].pk, s["s2"].pk])]
    html = get(client, f"/samples/?set=arith&before={seq['pub1']}")
    assert explored(html) == [] and 'rel="next"' not in html
    assert "No published samples match these filters." in html
    # With a window wide enough, the whole set is one page, newest first.
    monkeypatch.setattr(dataset, "EXPLORER_SCAN", 10_000)
    html = get(client, "/samples/?set=arith")
    assert explored(html) == [
        (p["pub2"].pk, [s["s7"].pk]),
        (p["pub1"].pk, [s["s1"].pk, s["s2"].pk]),
    ]


def test_the_explorer_costs_the_same_queries_whatever_the_unpublished_samples(client, world):
    p = world.prompts
    alice = world.samples["s1"].contributor
    urls = ["/samples/", "/samples/?model=org/model-a", "/samples/?set=arith"]

    def measure() -> list[tuple[int, list[tuple[int, list[int]]]]]:
        out = []
        for url in urls:
            get(client, url)  # the overview cached, as a visitor finds it
            with CaptureQueriesContext(connection) as queries:
                html = get(client, url)
            out.append((len(queries.captured_queries), explored(html)))
        return out

    before = measure()
    # The walk, the end of it (a short page: how far the scan reaches), the prompts, the samples.
    assert [n for n, _ in before] == [4, 4, 4]
    banned = UserFactory(username="banned")
    Profile.objects.filter(user=banned).update(banned=True)
    unpublished = [
        Sample(
            prompt=prompt,
            contributor=user,
            model="org/model-a",
            temperature=0.6,
            completion="x",
            finish_reason="stop",
            status=status,
            quarantined=quarantined,
        )
        for prompt, user, status, quarantined in [
            (p["open"], alice, SampleStatus.VERIFIED, False),
            (p["closed"], alice, SampleStatus.VERIFIED, False),
            (p["pub2"], alice, SampleStatus.VERIFIED, True),
            (p["pub2"], alice, SampleStatus.SCORING, False),
            (p["pub1"], banned, SampleStatus.VERIFIED, False),
        ]
        for _ in range(60)
    ]
    Sample.objects.bulk_create(unpublished)
    assert measure() == before


def test_a_full_page_costs_three_queries(client, world):
    alice = world.samples["s1"].contributor
    for _ in range(dataset.EXPLORER_PROMPTS + 1):
        prompt = PromptFactory(prompt_set=world.arith)
        _sample(prompt, alice, SampleStatus.VERIFIED)
        released(prompt)
    get(client, "/samples/")
    with CaptureQueriesContext(connection) as queries:
        html = get(client, "/samples/")
    assert len(queries.captured_queries) == 3
    assert len(explored(html)) == dataset.EXPLORER_PROMPTS and 'rel="next"' in html


def test_a_published_sample_shows_prompt_reasoning_answer_and_verdict_statuses(
    client, world, django_assert_max_num_queries
):
    with django_assert_max_num_queries(5):
        html = get(client, f"/samples/{world.samples['s1'].pk}/")
    assert '<details class="reasoning">' in html and "<summary>Reasoning</summary>" in html
    assert '<div class="sample-text">What is pub1? <math display="inline">' in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "<script>window" not in html and "<img" not in html and "<svg" not in html
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in html
    # Math: rendered as MathML; the one with markup in \text stays escaped source.
    assert '<math display="inline"><mrow><msup><mi>x</mi><mn>2</mn></msup></mrow></math>' in html
    assert '<math display="block">' in html
    assert r"$\text{&lt;img src=x onerror=window.__pwned=1&gt;}$" in html
    # Verdict statuses, never their details or scores.
    squashed = squash(html)
    assert '<th scope="row">math</th><td class="num">3</td>' in squashed
    assert "0.75" not in html and "expected" not in html
    assert "<dd>alice</dd>" in squashed
    assert "org/data v1" in html


def test_an_anonymous_contributor_is_not_named(client, world):
    html = squash(get(client, f"/samples/{world.samples['s2'].pk}/"))
    assert "<dd>anonymous</dd>" in html and "bob" not in html


@pytest.mark.parametrize("key", ["s3", "s4", "s5", "s6"])
def test_unpublished_samples_are_404(client, world, key):
    # s3 quarantined, s4 not settled (error), s5 closed but never released, s6 open.
    get(client, f"/samples/{world.samples[key].pk}/", status=404)


def test_a_missing_sample_is_404(client, world):
    get(client, "/samples/999999/", status=404)


# --- releases --------------------------------------------------------------------------------


def test_releases_are_listed_newest_first_with_row_counts_and_links(client, world):
    html = squash(get(client, "/releases/"))
    assert html.index("org/data v2") < html.index("local/data v1") < html.index("org/data v1")
    assert "org/data v3" not in html  # pending
    assert (
        '<tr><th scope="row">sft</th><td class="num">2</td></tr>'
        '<tr><th scope="row">preference</th><td class="num">1</td></tr>'
        '<tr><th scope="row">rl</th><td class="num">1</td></tr>'
        '<tr><th scope="row">raw</th><td class="num">4</td></tr>'
    ) in html
    assert 'href="https://huggingface.co/datasets/org/data/tree/v2"' in html
    assert 'href="https://huggingface.co/datasets/org/data/blob/v2/README.md"' in html
    assert "/srv/secret-folder" not in html


def test_staff_see_a_local_releases_folder(admin_client, world):
    assert "/srv/secret-folder/data" in get(admin_client, "/releases/")


def test_no_page_shows_the_gold(client, admin_client, world):
    urls = ["/", "/sets/", "/sets/arith/", "/samples/", "/releases/"]
    urls += [f"/samples/{world.samples[k].pk}/" for k in ("s1", "s2", "s7", "s8")]
    for url in urls:
        get(client, url)
        get(admin_client, url)

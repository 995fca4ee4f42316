"""How fast are the public pages with a million samples? Server time p50 / p95 of home (`/`),
the leaderboard (`/leaderboard/`), the bounty board (`/bounties/`), a prompt-set page
(`/sets/<name>/`, the largest set), the sample explorer (`/samples/`: unfiltered, by model, and
by the largest set, which is also the oldest: its released prompts are the lowest ids, so its
first page is empty, with a link to look further; and by a model with no samples: the whole
scan of EXPLORER_SCAN released prompts, the explorer's bound) and a published sample's page
(`/samples/<id>/`) over a database of --samples samples (default 1,000,000). Target (issue
11): p95 under 200 ms for each.

The data (bench/_pages_data.py): 2,000 contributors with profiles, 5 prompt sets (math and
code), --samples / 4 prompts (most closed), 8 models x 3 temperatures, verdicts mixed, slots,
50 bounties, 3 published releases (and the prompts they published: every prompt closed before
the latest), and every precomputed table the pages read (counters,
SetProgress, PromptModelStats, PromptCredit and the CreditEntry ledger, LeaderboardRow, bounty
progress), filled by the project's own repair functions where one exists and is fast enough
at this scale, else by equivalent SQL; the load prints which.

The measurement runs in this process, through Django's test Client (the whole middleware
stack, production settings: DEBUG off), anonymous. For each page: --warmup requests, then
--requests timed ones (time.perf_counter around client.get), twice:

  served     as a visitor gets it: whatever the page caches stays cached between requests;
  uncached   the cache cleared before each request (not timed): what the first visitor after
             an expiry waits for, and the page's real work.

`queries` is the number of SQL queries of one uncached request (CaptureQueriesContext), and
`slowest` the longest of them. --explain prints EXPLAIN (ANALYZE, BUFFERS) of the slowest
query of each page (of the explorer's pages and the sample page: of every query). A page that
still answers "todo" (its view is not built yet) or 404 is listed as such and not timed.

Run it with PostgreSQL and Redis (throwaway ones, on spare ports):

    PG_PORT=55536 REDIS_PORT=56536 bash scripts/with-services.sh \\
        .venv/bin/python bench/pages.py --samples 1000000

It creates <name>_pages_<N> beside the database in $DATABASE_URL (dropping an earlier one;
--reuse keeps one already loaded with N samples: with-services.sh's cluster is removed when its
command ends, so reuse within one call, e.g. `with-services.sh bash -c "... pages.py; ...
pages.py --reuse --requests 500"`, or with PG_TEST_URL set to a lasting server). The load
takes about 4 minutes at 1M samples on a 2-core machine. Run by hand; numbers go into notes,
never into tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/scoring.py would shadow the `scoring` package: import from the repository root instead.
sys.path[0] = str(ROOT)

from bench._harness import manage, pct, server_env  # noqa: E402
from bench.scale import admin_execute, db_name, with_db  # noqa: E402

TARGET_P95_MS = 200.0


@dataclass
class Query:
    sql: str
    params: Any
    ms: float


class QueryRecorder:
    """A connection.execute_wrapper that keeps every query with its time (perf_counter)."""

    def __init__(self) -> None:
        self.queries: list[Query] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.queries.append(Query(sql, params, (time.perf_counter() - t0) * 1000))


@dataclass
class PageResult:
    name: str
    path: str
    state: str = "ok"  # ok, or why it was not timed
    served: list[float] = field(default_factory=list)  # seconds
    uncached: list[float] = field(default_factory=list)
    queries: int = 0
    cached_queries: int = 0
    bytes: int = 0
    slowest: Query | None = None  # of one uncached request
    captured: list[Query] = field(default_factory=list)


def loaded_size(url: str) -> int | None:
    import psycopg

    from bench._pages_data import META_TABLE

    try:
        with psycopg.connect(url) as conn:
            row = conn.execute(f"SELECT samples FROM {META_TABLE}").fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


def prepare(base_url: str, samples: int, reuse: bool) -> str:
    """The bench database for `samples`, loaded; returns its URL. Django is set up on it."""
    url = with_db(base_url, f"{db_name(base_url)}_pages_{samples}")
    fresh = not (reuse and loaded_size(url) == samples)
    if fresh:
        admin_execute(base_url, f'DROP DATABASE IF EXISTS "{db_name(url)}" WITH (FORCE)')
        admin_execute(base_url, f'CREATE DATABASE "{db_name(url)}"')
    t0 = time.perf_counter()
    manage("migrate", "--noinput", "-v0", env=server_env(url))
    os.environ.update(server_env(url))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkpool.settings")
    import django

    django.setup()
    if not fresh:
        print(f"reusing {db_name(url)} ({samples:,} samples)")
        return url
    print(f"migrated {db_name(url)} in {time.perf_counter() - t0:.1f}s")

    import psycopg

    from bench._pages_data import fill_derived, load, scalar

    started = time.perf_counter()
    steps = load(url, samples)
    steps += fill_derived(url, samples)
    elapsed = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        size = scalar(conn, "SELECT pg_database_size(current_database())")
        counts = {
            name: scalar(conn, f'SELECT count(*) FROM "{table}"')
            for name, table in table_names().items()
        }
    print(f"loaded {samples:,} samples in {elapsed:.1f}s (database {size / 2**30:.2f} GiB)")
    for name, secs in steps:
        print(f"    {secs:7.1f}s  {name}")
    print("    rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return url


def table_names() -> dict[str, str]:
    from bench._pages_data import models

    return {k: v._meta.db_table for k, v in models().items()}


def largest_set() -> str:
    from scoring.models import Prompt, PromptSet

    sizes = {
        row["prompt_set"]: row["n"]
        for row in Prompt.objects.order_by()
        .values("prompt_set")
        .annotate(n=__import__("django.db.models", fromlist=["Count"]).Count("pk"))
    }
    best = max(sizes, key=lambda pk: sizes[pk])
    return str(PromptSet.objects.get(pk=best).name)


def published_sample() -> int | None:
    """A published sample: the first one the explorer's first page shows."""
    from thinkpool.web.dataset import explorer_page

    page = explorer_page(set_id=None, model="", before=None)
    return page.prompts[0].samples[0].pk if page.prompts else None


def pages() -> list[tuple[str, str]]:
    from urllib.parse import urlencode

    from bench._pages_data import MODELS

    sample = published_sample()
    return [
        ("home", "/"),
        ("leaderboard", "/leaderboard/"),
        ("bounty board", "/bounties/"),
        ("prompt set", f"/sets/{largest_set()}/"),
        ("explorer", "/samples/"),
        ("explorer model", "/samples/?" + urlencode({"model": MODELS[0][0]})),
        ("explorer set", "/samples/?" + urlencode({"set": largest_set()})),
        # No sample matches: the whole scan, a probe for each row (the explorer's bound).
        ("explorer none", "/samples/?" + urlencode({"model": "no/such-model"})),
        ("sample", f"/samples/{sample}/" if sample else "/samples/0/"),
    ]


def measure(name: str, path: str, requests: int, warmup: int) -> PageResult:
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    result = PageResult(name, path)
    client = Client()
    try:
        response = client.get(path)
    except Exception as exc:  # a page still being built: say so, time the others
        result.state = f"error: {type(exc).__name__}: {str(exc)[:80]}"
        return result
    if response.status_code != 200:
        result.state = f"HTTP {response.status_code}"
        return result
    if response.content.strip() == b"todo":
        result.state = "not built (todo)"
        return result

    # One uncached request, its queries recorded with their own timings.
    cache.clear()
    recorder = QueryRecorder()
    with connection.execute_wrapper(recorder):
        response = client.get(path)
    result.queries = len(recorder.queries)
    result.bytes = len(response.content)
    result.captured = recorder.queries
    if recorder.queries:
        result.slowest = max(recorder.queries, key=lambda q: q.ms)
    recorder = QueryRecorder()
    with connection.execute_wrapper(recorder):
        client.get(path)
    result.cached_queries = len(recorder.queries)

    for _ in range(warmup):
        client.get(path)
    for _ in range(requests):
        t0 = time.perf_counter()
        response = client.get(path)
        result.served.append(time.perf_counter() - t0)
        assert response.status_code == 200, (path, response.status_code)
    for _ in range(requests):
        cache.clear()
        t0 = time.perf_counter()
        response = client.get(path)
        result.uncached.append(time.perf_counter() - t0)
        assert response.status_code == 200, (path, response.status_code)
    return result


def explain(result: PageResult) -> None:
    """EXPLAIN ANALYZE the page's slowest query; of the explorer's pages (whose cost is the
    point of them), every query of the request."""
    if result.name.startswith("explorer") or result.name == "sample":
        for k, q in enumerate(result.captured, 1):
            explain_query(result, q, f"query {k} of {len(result.captured)}")
    elif result.slowest is not None:
        explain_query(result, result.slowest, "slowest query")


def explain_query(result: PageResult, q: Query, which: str) -> None:
    from django.db import connection

    print(f"\n--- {result.name} ({result.path}): {which}, {q.ms:.1f} ms in one request ---")
    with connection.cursor() as cursor:
        compose = getattr(connection.ops, "compose_sql", None)  # PostgreSQL's backend has it
        print(compose(q.sql, q.params) if compose and q.params else q.sql)
        if not q.sql.lstrip().upper().startswith(("SELECT", "WITH")):
            print("(not a SELECT: not explained)")
            return
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {q.sql}", q.params)
        for (line,) in cursor.fetchall():
            print(line)


def print_queries(result: PageResult, top: int) -> None:
    queries = sorted(result.captured, key=lambda q: q.ms, reverse=True)[:top]
    print(f"\n{result.name}: {result.queries} queries, the {len(queries)} slowest:")
    for q in queries:
        sql = " ".join(q.sql.split())
        print(f"  {q.ms:8.2f} ms  {sql[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests a page")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    parser.add_argument("--reuse", action="store_true", help="keep a database loaded with N")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="EXPLAIN ANALYZE the slowest query of each page (every query of the explorer's)",
    )
    parser.add_argument(
        "--queries", type=int, default=0, metavar="K", help="list each page's K slowest queries"
    )
    parser.add_argument(
        "--load-only", action="store_true", help="load (or reuse) the database, measure nothing"
    )
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database (scripts/with-services.sh).")
    prepare(base_url, args.samples, args.reuse)
    if args.load_only:
        return

    # Production serves static files through a manifest (DEBUG off): collect them into a
    # temporary STATIC_ROOT, so the pages' {% static %} tags resolve as they do there.
    from django.core.management import call_command
    from django.test.utils import override_settings

    static_root = tempfile.mkdtemp(prefix="bench-pages-static-")
    try:
        with override_settings(STATIC_ROOT=static_root):
            call_command("collectstatic", "--noinput", "-v0")
            load_before = os.getloadavg()
            results = [measure(n, p, args.requests, args.warmup) for n, p in pages()]
            report(results, args)
            print(
                f"load average (1 min) of this {os.cpu_count()}-CPU machine: "
                f"{load_before[0]:.2f} before the requests, {os.getloadavg()[0]:.2f} after"
            )
    finally:
        shutil.rmtree(static_root, ignore_errors=True)


def report(results: list[PageResult], args: argparse.Namespace) -> None:

    print(
        f"\n{args.requests} requests a page after {args.warmup} warm-up, "
        f"{args.samples:,} samples, in-process (django.test.Client), ms:"
    )
    header = (
        f"{'page':<14} {'path':<34} {'p50':>7} {'p95':>7} {'unc p50':>8} {'unc p95':>8} "
        f"{'queries':>8} {'bytes':>8}  slowest query"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r.state != "ok":
            print(f"{r.name:<14} {r.path:<34} {r.state}")
            continue
        print(
            f"{r.name:<14} {r.path:<34} {pct(r.served, 0.5):7.1f} {pct(r.served, 0.95):7.1f} "
            f"{pct(r.uncached, 0.5):8.1f} {pct(r.uncached, 0.95):8.1f} "
            f"{f'{r.queries} ({r.cached_queries})':>8} {r.bytes:>8,}  "
            f"{r.slowest.ms if r.slowest else 0.0:.1f} ms"
        )
    print("queries: of one uncached request (in brackets: of one served from the cache)")
    timed = [r for r in results if r.state == "ok"]
    slow = [
        r.name for r in timed if max(pct(r.served, 0.95), pct(r.uncached, 0.95)) >= TARGET_P95_MS
    ]
    print(
        f"target p95 < {TARGET_P95_MS:.0f} ms: "
        + ("ok" if not slow else f"MISSED by {', '.join(slow)}")
        + (
            f"; not timed: {', '.join(r.name for r in results if r.state != 'ok')}"
            if len(timed) < len(results)
            else ""
        )
    )
    if args.queries:
        for r in timed:
            print_queries(r, args.queries)
    if args.explain:
        for r in timed:
            explain(r)


if __name__ == "__main__":
    main()

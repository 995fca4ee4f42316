"""How fast does a release build, and in how much memory? Rows written per second and peak RSS of
`scoring.publishing.service.build_release` over --rows N synthetic samples (default 100,000 and
1,000,000) read from PostgreSQL, against `datasets.Dataset.from_generator(...).to_parquet` on
the same rows as the reference. Targets (issue 10): at least 50,000 rows/s, and a peak RSS that
does not grow with N.

The data, per N, in its own database loaded by server-side SQL (INSERT ... SELECT
generate_series; secondary indexes built after the rows; column lists from the models' _meta
through bench/scale.py's `Columns`, so a new NOT NULL field stops the load and is named): one
MIT prompt set of N/4 closed prompts with gold, 4 samples each (model bench/model-a, T 0.6)
with a ~4 KB reasoning (sentences of a math solution in one of 64 orders, with the sample's
numbers mixed in: compressible like prose, not one repeated character) and a ~300 B completion,
sampling JSON and token counts, verified or rejected (about 57% verified), one `math` v3 verdict
each, by 20 contributors with profiles (a quarter not publicly attributed); PromptModelStats,
and the selections of the configured policy (r1-rejection-no-reward v1 without a reward model)
written by SQL: SFT picks (the verified samples, by completion tokens), one preference pair per
prompt with both outcomes, and an RL pick per prompt whose pass rate lies in (0.1, 0.9).

Each measurement runs in a fresh child process, so its peak RSS (getrusage ru_maxrss, and
psutil sampled every 0.1 s) is its own:

  ours       build_release() of a local release over the whole database: all four configs
             (sft, preference, rl, raw) and the card. Rows/s is given over all configs and for
             raw alone.
  reference  the raw config's rows, as Python dicts (RowReader's raw batches, .to_pylist()),
             through Dataset.from_generator(gen, features=<raw schema>).to_parquet(path): the
             same rows and columns as our raw shards. The RowReader still builds the other
             configs' batches (and drops them), so the reading cost is the same on both sides.

The PostgreSQL server runs on the same machine and its CPU is in the wall time (as in
production). --reader also times RowReader alone (batches dropped, nothing written), which
splits ours into reading and writing; --profile PATH runs `ours` once more under cProfile
(not the run in the table) and prints where the time goes.

Run it with PostgreSQL (a throwaway one, on a spare port):

    PG_PORT=55510 REDIS_PORT=56510 bash scripts/with-services.sh \\
        .venv/bin/python bench/publish.py --rows 100000 1000000

It creates <name>_publish_<N> beside the database in $DATABASE_URL (dropping an earlier one;
--reuse keeps one already loaded with N samples). Output goes to a temporary folder, removed
afterwards. Run by hand; numbers go into notes, never into tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/scoring.py would shadow the `scoring` package: import from the repository root instead.
sys.path[0] = str(ROOT)

from bench._harness import MODEL, manage, server_env  # noqa: E402
from bench.scale import (  # noqa: E402
    Columns,
    P,
    admin_execute,
    db_name,
    existing,
    secondary_indexes,
    with_db,
)

SPP = 4  # samples per prompt
CONTRIBUTORS = 20
BODIES = 64  # distinct sentence orders of the reasoning
REASONING_BYTES = 4096
REPO_ID = "bench/publish"
SET_NAME = "bench-publish"
TARGET_ROWS_PER_S = 50_000

# A math solution's sentences; `#` becomes the sample id, `@` its number within the prompt.
SENTENCES = [
    "Let me restate the problem: we need the number of apples after # purchases of @ each.",
    "First, I will write down what is given and what is asked, so nothing is lost later.",
    "Each purchase adds @ apples, so after # purchases the increase is # times @.",
    "Wait, I should double-check whether the starting amount is counted once or twice.",
    "Rereading the statement, the initial # apples are counted exactly once, at the start.",
    "So the total is the initial amount plus the product, which gives # plus # times @.",
    "Let me verify with a smaller case: with 2 purchases of @ we would get 2 times @ more.",
    "That matches the pattern, so the formula generalises to any number of purchases.",
    "Now compute the product carefully: # multiplied by @, carrying the digits as needed.",
    "Hmm, an alternative approach is to sum an arithmetic sequence with difference @.",
    "The sum of the sequence has # terms, and its average term is the midpoint value.",
    "Both methods should agree; if they do not, one of the steps contains an error.",
    "Checking the units: apples times purchases divided by purchases leaves apples.",
    "I also need to make sure that no purchase was skipped, since the count starts at 1.",
    "The constraint says the answer is a positive integer, which our result satisfies.",
    "Let me reconsider the edge case where @ is zero: then the total stays at the start.",
    "Since @ is not zero here, the total strictly increases with every purchase made.",
    "Putting the pieces together, the expression simplifies to a single number for #.",
    "One more sanity check: the result modulo @ should equal the initial amount mod @.",
    "That holds, so I am confident in the computation and can state the final answer.",
]
COMPLETION = (
    "Combining the initial amount with the apples added by every purchase, and checking the "
    "result against a smaller case and the arithmetic-series formula, both methods agree. "
    "Therefore the number of apples at the end is the value below, a positive integer as "
    "required by the statement. \\boxed{"
)


def bodies() -> list[str]:
    """BODIES reasonings of about REASONING_BYTES: the sentences in shuffled orders."""
    out = []
    for i in range(BODIES):
        rng = random.Random(i)
        text: list[str] = []
        size = 0
        while size < REASONING_BYTES:
            order = SENTENCES[:]
            rng.shuffle(order)
            for sentence in order:
                if size >= REASONING_BYTES:
                    break
                text.append(sentence)
                size += len(sentence) + 1
        out.append(" ".join(text))
    return out


# --- the data -----------------------------------------------------------------------------------


def models() -> dict[str, Any]:
    from django.apps import apps
    from django.contrib.auth import get_user_model

    return {
        "user": get_user_model(),
        "profile": apps.get_model("contributors.Profile"),
        "set": apps.get_model("scoring.PromptSet"),
        "prompt": apps.get_model("scoring.Prompt"),
        "gold": apps.get_model("scoring.PromptGold"),
        "sample": apps.get_model("scoring.Sample"),
        "verdict": apps.get_model("scoring.Verdict"),
        "stats": apps.get_model("scoring.PromptModelStats"),
        "selection": apps.get_model("scoring.Selection"),
        "pair": apps.get_model("scoring.PreferencePair"),
    }


def load(url: str, samples: int) -> float:
    """Fills the migrated, empty database at `url` with `samples` samples (SPP a prompt).
    Returns the seconds it took."""
    import psycopg

    from scoring.selection import configured_policy

    policy = configured_policy()
    m = models()
    t = {k: v._meta.db_table for k, v in m.items()}
    prompts = max(1, samples // SPP)
    started = time.perf_counter()
    steps: list[tuple[str, float]] = []

    with psycopg.connect(url) as conn:

        def run(name: str, sql: str, params: list[Any] | None = None) -> None:
            t0 = time.perf_counter()
            conn.execute(sql, params or None)
            steps.append((name, time.perf_counter() - t0))

        def base(key: str) -> int:
            return conn.execute(f'SELECT coalesce(max(id), 0) FROM "{t[key]}"').fetchone()[0]

        superuser = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
        if superuser:
            # Consistent by construction: skip the per-row foreign-key triggers.
            conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET work_mem = '128MB'")
        big = ["prompt", "gold", "sample", "verdict", "stats", "selection", "pair"]
        saved = {t[k]: secondary_indexes(conn, t[k]) for k in big}
        for table, (constraints, plain) in saved.items():
            for name, _ in constraints:
                conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
            for _, name in plain:
                conn.execute(f"DROP INDEX {name}")

        u0, p0, a0 = base("user"), base("prompt"), base("sample")
        people = f"FROM generate_series(1, {CONTRIBUTORS}) g"
        run(
            "users",
            *Columns(m["user"]).insert(
                {
                    "id": f"{u0} + g",
                    "username": "'publish-user-' || g",
                    "password": "'!'",
                    "date_joined": "now() - interval '120 days'",
                },
                people,
            ),
        )
        run(
            "profiles",
            *Columns(m["profile"]).insert(
                {
                    "user": f"{u0} + g",
                    "handle": "'publish-user-' || g",
                    # A quarter chose not to be named: "anonymous" in the rows.
                    **existing(m["profile"], {"public_attribution": "mod(g, 4) <> 0"}),
                },
                people,
            ),
        )
        sql, params = Columns(m["set"]).insert(
            {
                "name": P(SET_NAME),
                "domain": "'math'",
                "license": "'MIT'",
                "source": "'https://example.org/bench-publish'",
                "is_active": "false",
                "models_allowed": P("[]", cast="jsonb"),
                "temperatures": P("[0.6]", cast="jsonb"),
                "samples_per_prompt": P(SPP),
                "created_at": "now() - interval '100 days'",
                **existing(m["set"], {"last_prompt_seq": P(prompts)}),
            },
            "RETURNING id",
        )
        set_id = conn.execute(sql, params).fetchone()[0]
        run(
            "prompts",
            *Columns(m["prompt"]).insert(
                {
                    "id": f"{p0} + g",
                    "prompt_set": str(set_id),
                    "external_id": "'bench-' || g",
                    "messages": "jsonb_build_array(jsonb_build_object('role', 'user', "
                    "'content', 'Ada has ' || g || ' apples and buys ' || mod(g, 9) + 1 || "
                    "' bags of ' || mod(g, 7) + 2 || ' apples each, every day for a week. "
                    "How many apples does she have at the end? Give the answer as an integer.'))",
                    "text_hash": "encode(sha256(convert_to('bench-' || g, 'UTF8')), 'hex')",
                    "created_at": "now() - interval '100 days'",
                    "seq": "g",
                    "closed_at": "now() - interval '10 days'",
                },
                f"FROM generate_series(1, {prompts}) g",
            ),
        )
        run(
            "gold",
            *Columns(m["gold"]).insert(
                {"prompt": f"{p0} + g", "answer": "(g * 7)::text"},
                f"FROM generate_series(1, {prompts}) g",
            ),
        )
        conn.execute("CREATE TEMP TABLE bench_body (i int, body text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_body VALUES (%s, %s)", list(enumerate(bodies())))
        sample_id = f"({a0} + (g - 1) * {SPP} + k)"
        # About 57% verified; per prompt anything from 0 to 4 verified.
        verified = "mod(g * 3 + k * 5, 7) < 4"
        run(
            "samples",
            *Columns(m["sample"]).insert(
                {
                    "id": sample_id,
                    "client_id": "gen_random_uuid()",
                    "prompt": f"{p0} + g",
                    "contributor": f"{u0} + mod(g * {SPP} + k, {CONTRIBUTORS}) + 1",
                    "model": P(MODEL),
                    "model_revision": "'main'",
                    "temperature": "0.6",
                    "sampling": "jsonb_build_object('temperature', 0.6, 'top_p', 0.95, "
                    f"'max_tokens', 32768, 'n', {SPP}, 'seed', {sample_id})",
                    "reasoning": f"replace(replace(b.body, '#', {sample_id}::text), '@', k::text)",
                    "completion": f"'{COMPLETION}' || (g * 7 + k) || '}}.'",
                    "finish_reason": "'stop'",
                    "prompt_tokens": "64 + mod(g, 32)",
                    "completion_tokens": f"1000 + mod({sample_id} * 37, 500)",
                    "generation_ms": "20000",
                    "counted": "true",
                    "status": f"CASE WHEN {verified} THEN 'verified' ELSE 'rejected' END",
                    "received_at": "now() - interval '20 days'",
                    "status_changed_at": "now() - interval '19 days'",
                    "attempts": "1",
                },
                f"FROM generate_series(1, {prompts}) g CROSS JOIN generate_series(1, {SPP}) k "
                f"JOIN bench_body b ON b.i = mod({sample_id}, {BODIES})",
            ),
        )
        run(
            "verdicts",
            *Columns(m["verdict"]).insert(
                {
                    "sample": "x.id",
                    "verifier": "'math'",
                    "version": "3",
                    "status": "CASE WHEN x.status = 'verified' THEN 'pass' ELSE 'fail' END",
                    "score": "CASE WHEN x.status = 'verified' THEN 1.0 ELSE 0.0 END",
                    "duration_ms": "3",
                },
                f'FROM "{t["sample"]}" x WHERE x.id > {a0}',
            ),
        )
        run(
            "prompt model stats",
            *Columns(m["stats"]).insert(
                {
                    "prompt": "x.prompt_id",
                    "model": "x.model",
                    "samples": "count(*)",
                    "judged": "count(*)",
                    "verified": "count(*) FILTER (WHERE x.status = 'verified')",
                },
                f'FROM "{t["sample"]}" x WHERE x.id > {a0} GROUP BY x.prompt_id, x.model',
            ),
        )
        common = {"policy": P(policy.label), "policy_version": P(policy.version)}
        run(
            "sft selections",
            *Columns(m["selection"]).insert(
                {
                    "kind": "'sft'",
                    "prompt": "x.prompt_id",
                    "model": "x.model",
                    "sample": "x.id",
                    "rank": "row_number() OVER (PARTITION BY x.prompt_id "
                    "ORDER BY x.completion_tokens, x.id) - 1",
                    **common,
                },
                f"FROM \"{t['sample']}\" x WHERE x.id > {a0} AND x.status = 'verified'",
            ),
        )
        run(
            "rl selections",
            *Columns(m["selection"]).insert(
                {"kind": "'rl'", "prompt": "x.prompt_id", "model": "x.model", **common},
                f'FROM "{t["stats"]}" x WHERE x.judged > 0 AND '
                f"x.verified::float8 / x.judged > {policy.rl_low} AND "
                f"x.verified::float8 / x.judged < {policy.rl_high}",
            ),
        )
        run(
            "preference pairs",
            *Columns(m["pair"]).insert(
                {
                    "prompt": "x.prompt_id",
                    "chosen": "x.chosen",
                    "rejected": "x.rejected",
                    "margin": "1.0",
                    **common,
                },
                "FROM (SELECT prompt_id, min(id) FILTER (WHERE status = 'verified') AS chosen, "
                "min(id) FILTER (WHERE status = 'rejected') AS rejected "
                f'FROM "{t["sample"]}" WHERE id > {a0} GROUP BY prompt_id) x '
                "WHERE x.chosen IS NOT NULL AND x.rejected IS NOT NULL",
            ),
        )
        t0 = time.perf_counter()
        for table, (constraints, plain) in saved.items():
            for definition, _ in plain:
                conn.execute(definition)
            for name, definition in constraints:
                conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
        steps.append(("indexes", time.perf_counter() - t0))
        for key, model in m.items():
            if model._meta.pk.column != "id":
                continue
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), "
                f'(SELECT max(id) FROM "{t[key]}")) WHERE EXISTS (SELECT 1 FROM "{t[key]}") '
                "AND pg_get_serial_sequence(%s, 'id') IS NOT NULL",
                [f'"{t[key]}"', f'"{t[key]}"'],
            )
        conn.execute("CREATE TABLE bench_publish_meta (samples bigint, loaded_at timestamptz)")
        conn.execute("INSERT INTO bench_publish_meta VALUES (%s, now())", [samples])
        conn.commit()
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    steps.append(("vacuum analyze", time.perf_counter() - t0))
    elapsed = time.perf_counter() - started
    print(f"loaded {prompts * SPP:,} samples in {elapsed:.1f}s (database {size / 2**30:.2f} GiB)")
    print("    " + ", ".join(f"{name} {secs:.1f}s" for name, secs in steps))
    return elapsed


def loaded_size(url: str) -> int | None:
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT samples FROM bench_publish_meta").fetchone()[0]
    except psycopg.Error:
        return None


# --- the measured children ---------------------------------------------------------------------


class RssSampler:
    """This process's RSS every `every` seconds, in a thread: the peak and the curve."""

    def __init__(self, every: float = 0.1) -> None:
        import psutil

        self.process = psutil.Process()
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - t0, self.process.memory_info().rss))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        rss = [r for _, r in self.samples] or [0]
        # RSS at each tenth of the run: flat when memory does not grow with the rows.
        curve = [rss[min(len(rss) - 1, len(rss) * i // 10)] for i in range(1, 11)]
        return {"psutil_peak": max(rss), "curve": curve}


def release_for_bench() -> Any:
    from scoring.publishing.service import start_release

    # Its location is never written: build_release writes into the root it is given.
    return start_release(target="local", repo_id=REPO_ID, path=str(ROOT / "var" / "bench-publish"))


def folder_bytes(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in path.rglob("*.parquet"):
        config = f.parent.name
        out[config] = out.get(config, 0) + f.stat().st_size
    return out


def child_ours(workdir: Path, profile: Path | None) -> dict[str, Any]:
    from scoring.publishing.service import build_release

    release = release_for_bench()
    root = workdir / "ours"
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        build = build_release(release, root)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - t0
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
    return {
        "wall": wall,
        "rows": build.row_counts,
        "bytes": folder_bytes(root),
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **rss.summary(),
    }


def child_reader() -> dict[str, Any]:
    """RowReader alone, its batches dropped: the reading half of build_release."""
    from scoring.publishing.service import reading

    release = release_for_bench()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        with reading(release) as read:
            rows: dict[str, int] = {}
            for config, batch in read.rows.batches():
                rows[config] = rows.get(config, 0) + batch.num_rows
        wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "rows": rows,
        "bytes": {},
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **rss.summary(),
    }


def raw_rows(release_id: int) -> Any:
    """The raw config's rows as dicts, read as build_release reads them. Everything it needs is
    imported here: `datasets` hashes this function (dill) to name its cache."""
    from scoring.models import Release
    from scoring.publishing.service import reading

    release = Release.objects.get(pk=release_id)
    with reading(release) as read:
        for config, batch in read.rows.batches():
            if config == "raw":
                yield from batch.to_pylist()


def child_reference(workdir: Path) -> dict[str, Any]:
    import datasets

    from scoring.publishing.rows import SCHEMAS

    datasets.disable_progress_bars()
    release = release_for_bench()
    out = workdir / "reference" / "raw.parquet"
    out.parent.mkdir(parents=True)
    features = datasets.Features.from_arrow_schema(SCHEMAS["raw"])
    with RssSampler() as rss:
        t0 = time.perf_counter()
        ds = datasets.Dataset.from_generator(
            raw_rows,
            features=features,
            cache_dir=str(workdir / "hf-cache"),
            gen_kwargs={"release_id": release.pk},
        )
        t1 = time.perf_counter()
        ds.to_parquet(str(out))
        wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "generate": t1 - t0,
        "to_parquet": wall - (t1 - t0),
        "rows": {"raw": ds.num_rows},
        "bytes": {"raw": out.stat().st_size},
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **rss.summary(),
    }


def child(args: argparse.Namespace) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkpool.settings")
    django.setup()
    workdir = Path(args.workdir)
    if args.child == "ours":
        result = child_ours(workdir, Path(args.profile) if args.profile else None)
    elif args.child == "reader":
        result = child_reader()
    else:
        result = child_reference(workdir)
    print("RESULT " + json.dumps(result))


def measure(kind: str, url: str, workdir: Path, profile: Path | None = None) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--workdir",
        str(workdir),
    ]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    env = {**server_env(url), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def print_profile(path: Path, top: int) -> None:
    import pstats

    for key in ("tottime", "cumulative"):
        print(f"\ncProfile of ours, top {top} by {key}:")
        stats = pstats.Stats(str(path))
        stats.sort_stats(key).print_stats(top)


# --- main ---------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--reuse", action="store_true", help="keep a database loaded with N")
    parser.add_argument("--only", choices=["ours", "reference"], help="measure one side")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="after the measured runs, run ours once more under cProfile (stats into PATH)",
    )
    parser.add_argument(
        "--reader", action="store_true", help="also time RowReader alone (nothing written)"
    )
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the output folders")
    parser.add_argument("--child", choices=["ours", "reader", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database (scripts/with-services.sh).")
    os.environ.update(server_env(base_url))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkpool.settings")
    import django

    django.setup()

    results: list[tuple[int, dict[str, Any] | None, dict[str, Any] | None]] = []
    for n in args.rows:
        url = with_db(base_url, f"{db_name(base_url)}_publish_{n}")
        if args.reuse and loaded_size(url) == n:
            manage("migrate", "--noinput", "-v0", env=server_env(url))
            print(f"reusing {db_name(url)} ({n:,} samples)")
        else:
            admin_execute(base_url, f'DROP DATABASE IF EXISTS "{db_name(url)}" WITH (FORCE)')
            admin_execute(base_url, f'CREATE DATABASE "{db_name(url)}"')
            t0 = time.perf_counter()
            manage("migrate", "--noinput", "-v0", env=server_env(url))
            print(f"migrated {db_name(url)} in {time.perf_counter() - t0:.1f}s")
            load(url, n)
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-publish-{n}-"))
        try:
            ours = ref = None
            profile = Path(args.profile) if args.profile else None
            if args.only in (None, "ours"):
                ours = measure("ours", url, workdir)
                total = sum(ours["rows"].values())
                print(
                    f"N={n:,} ours: {ours['wall']:.1f}s, rows {ours['rows']} "
                    f"({total / ours['wall']:,.0f} rows/s, "
                    f"raw {ours['rows']['raw'] / ours['wall']:,.0f}/s), "
                    f"peak RSS {mib(ours['maxrss'])}; parquet "
                    + ", ".join(f"{c} {mib(b)}" for c, b in sorted(ours["bytes"].items()))
                )
                print("    RSS by tenths of the run: " + " ".join(mib(r) for r in ours["curve"]))
                shutil.rmtree(workdir / "ours", ignore_errors=True)
            if args.reader:
                reader = measure("reader", url, workdir)
                total = sum(reader["rows"].values())
                print(
                    f"N={n:,} RowReader alone: {reader['wall']:.1f}s "
                    f"({total / reader['wall']:,.0f} rows/s), peak RSS {mib(reader['maxrss'])}"
                )
            if args.only in (None, "reference"):
                ref = measure("reference", url, workdir)
                print(
                    f"N={n:,} reference: {ref['wall']:.1f}s (from_generator {ref['generate']:.1f}s"
                    f", to_parquet {ref['to_parquet']:.1f}s), raw {ref['rows']['raw']:,} rows "
                    f"({ref['rows']['raw'] / ref['wall']:,.0f} rows/s), peak RSS "
                    f"{mib(ref['maxrss'])}; parquet {mib(ref['bytes']['raw'])}"
                )
                print("    RSS by tenths of the run: " + " ".join(mib(r) for r in ref["curve"]))
            if profile is not None:
                # Separate from the measured run: the profiler's overhead is not in the table.
                profiled = measure("ours", url, workdir / "profiled", profile)
                print(f"N={n:,} ours under cProfile: {profiled['wall']:.1f}s")
                print_profile(profile, args.profile_top)
            results.append((n, ours, ref))
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"(output kept in {workdir})")

    print(
        f"\n{'N':>10} {'ours rows/s':>12} {'ours raw/s':>11} {'ref raw/s':>10} "
        f"{'ours peak RSS':>14} {'ref peak RSS':>13}"
    )
    for n, ours, ref in results:
        cells = [f"{n:>10,}"]
        if ours:
            cells += [
                f"{sum(ours['rows'].values()) / ours['wall']:>12,.0f}",
                f"{ours['rows']['raw'] / ours['wall']:>11,.0f}",
            ]
        else:
            cells += [f"{'-':>12}", f"{'-':>11}"]
        cells.append(f"{ref['rows']['raw'] / ref['wall']:>10,.0f}" if ref else f"{'-':>10}")
        cells.append(f"{mib(ours['maxrss']):>14}" if ours else f"{'-':>14}")
        cells.append(f"{mib(ref['maxrss']):>13}" if ref else f"{'-':>13}")
        print(" ".join(cells))
    ours_runs = [(n, o) for n, o, _ in results if o]
    if ours_runs:
        slow = [n for n, o in ours_runs if sum(o["rows"].values()) / o["wall"] < TARGET_ROWS_PER_S]
        print(
            f"target >= {TARGET_ROWS_PER_S:,} rows/s (all configs): "
            + ("ok" if not slow else f"MISSED at N={', '.join(f'{n:,}' for n in slow)}")
        )
        if len(ours_runs) > 1:
            (n0, a), (n1, b) = ours_runs[0], ours_runs[-1]
            print(
                f"peak RSS {mib(a['maxrss'])} at N={n0:,} -> {mib(b['maxrss'])} at N={n1:,} "
                f"({b['maxrss'] / a['maxrss']:.2f}x for {n1 / n0:.0f}x the rows)"
            )


if __name__ == "__main__":
    main()

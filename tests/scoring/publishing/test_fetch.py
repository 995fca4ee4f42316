"""The Arrow fetchers: ADBC on PostgreSQL (in the build's exported snapshot) and Django's cursor
give the same rows, so a release is the same bytes whichever read it."""

from __future__ import annotations

import pytest
from django.db import connection

from scoring.models import Prompt, Release, Sample
from scoring.publishing import fetch, service
from scoring.publishing.service import build_release, start_release
from tests.scoring.publishing.conftest import make_dataset


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_adbc_and_django_cursor_build_the_same_release(release_dirs, monkeypatch):
    data = make_dataset(prompts=4)
    # A sampling value that is not a number reads as null, on both paths, not an error.
    Sample.objects.filter(pk=data.samples[0].pk).update(
        sampling={"temperature": 0.6, "top_p": "high", "max_tokens": 512.5}
    )
    release = start_release(target="local", repo_id="org/name")
    used = []
    real = fetch.open_fetcher

    def spy(snapshot):
        fetcher = real(snapshot)
        used.append(type(fetcher).__name__)
        return fetcher

    monkeypatch.setattr(service, "open_fetcher", spy)
    adbc = build_release(release, release_dirs / "adbc")
    monkeypatch.setattr(service, "open_fetcher", lambda snapshot: fetch.Fetcher())
    django = build_release(release, release_dirs / "django")

    assert used == ["AdbcFetcher"]
    assert adbc.row_counts == django.row_counts == {"sft": 8, "preference": 4, "rl": 4, "raw": 12}
    assert {p: sha for p, (_, sha, _) in adbc.files.items()} == {
        p: sha for p, (_, sha, _) in django.files.items()
    }
    import pyarrow.parquet as pq

    raw = pq.read_table(release_dirs / "adbc" / "data/raw/train-00000-of-00001.parquet")
    first = next(r for r in raw.to_pylist() if r["sample_id"] == data.samples[0].pk)
    assert (first["top_p"], first["max_tokens"]) == (None, None)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_adbc_reads_see_the_builds_snapshot_not_later_commits(release_dirs, monkeypatch):
    make_dataset(prompts=2)
    release = start_release(target="local", repo_id="org/name")
    from scoring.publishing import rows

    real = rows.RowReader._fetch
    calls = []

    def meanwhile(self, chunk):
        if not calls:
            # Another connection commits a quarantine while the build runs: not in this build.
            from django.db import connections

            other = connections.create_connection("default")
            with other.cursor() as cursor:
                cursor.execute(f"UPDATE {Sample._meta.db_table} SET quarantined = true")
            other.commit() if not other.get_autocommit() else None
            other.close()
        calls.append(chunk)
        return real(self, chunk)

    monkeypatch.setattr(rows.RowReader, "_fetch", meanwhile)
    build = build_release(release, release_dirs / "snap")
    assert build.row_counts["raw"] == 6
    assert Sample.objects.filter(quarantined=True).count() == 6
    assert connection.vendor == "postgresql" and Prompt.objects.count() == 2
    assert Release.objects.count() == 1


def test_json_number_refuses_a_key_that_is_not_plain():
    with pytest.raises(ValueError):
        fetch.JsonNumber("sampling", "top_p'; DROP TABLE x; --")

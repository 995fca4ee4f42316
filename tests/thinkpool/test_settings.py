"""The settings module fails loudly, naming the variable, when production settings are missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import thinkpool.settings as s; print(s.DATABASES['default']['ENGINE'])",
        ],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "0"}, "Set the environment variable SECRET_KEY."),
        ({"DEBUG": "0", "SECRET_KEY": "k"}, "Set the environment variable ALLOWED_HOSTS"),
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean"),
        (
            {"DEBUG": "1", "THINKPOOL_MAX_SAMPLES_PER_UPLOAD": "lots"},
            "THINKPOOL_MAX_SAMPLES_PER_UPLOAD must be an integer",
        ),
        (
            {"DEBUG": "1", "THINKPOOL_MAX_SAMPLES_PER_UPLOAD": "0"},
            "THINKPOOL_MAX_SAMPLES_PER_UPLOAD must be at least 1",
        ),
    ],
)
def test_bad_or_missing_settings_name_the_variable(env, message):
    result = load_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_settings_load_when_given_and_database_url_is_honoured():
    result = load_settings(
        DEBUG="0",
        SECRET_KEY="k",
        ALLOWED_HOSTS="example.org",
        DATABASE_URL="postgres://u:p@db.example:5432/thinkpool",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.db.backends.postgresql"

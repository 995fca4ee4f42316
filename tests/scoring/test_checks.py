"""Start-up checks: scoring's timing relations (scoring/checks.py), the new setting, and the
worker's refusal to start without a working sandbox (thinkpool/celery.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from scoring import sandbox
from scoring.checks import check_scoring_timing
from scoring.tasks import score_code_samples, score_samples
from scoring.verifiers import REGISTRY
from thinkpool import celery as celery_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _logging_enabled() -> Iterator[None]:
    # Some verifier tests call logging.disable(WARNING) and leave it so; these tests read logs.
    saved = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    yield
    logging.disable(saved)


def ids_and_messages() -> list[tuple[str, str]]:
    return [(m.id or "", m.msg) for m in check_scoring_timing()]


def test_the_shipped_configuration_passes():
    assert check_scoring_timing() == []


def test_a_sweep_window_within_a_task_time_limit_is_refused(settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "SWEEP_AFTER_S": 1900}
    assert ids_and_messages() == [
        (
            "scoring.E002",
            "THINKPOOL_SWEEP_AFTER_S (1900 s) must be longer than the longest scoring task "
            "time_limit (1900 s), or the sweeper re-queues samples that a running task still "
            "holds.",
        )
    ]
    with pytest.raises(SystemCheckError, match=r"scoring\.E002"):
        call_command("check")


def test_a_bad_sweep_window_from_the_environment_stops_manage_py():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "1", "THINKPOOL_SWEEP_AFTER_S": "1800"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "scoring.E002" in result.stderr
    assert "THINKPOOL_SWEEP_AFTER_S (1800 s)" in result.stderr


def test_a_soft_limit_not_below_the_hard_one_is_refused(monkeypatch):
    monkeypatch.setattr(score_samples, "soft_time_limit", 660)
    assert ids_and_messages() == [
        (
            "scoring.E001",
            "task scoring.score_samples: soft_time_limit (660 s) must be below time_limit "
            "(660 s), or the task is killed before it can retry.",
        )
    ]


def test_a_task_without_a_soft_limit_is_refused(monkeypatch):
    monkeypatch.setattr(score_code_samples, "soft_time_limit", None)
    assert ids_and_messages() == [
        (
            "scoring.E001",
            "task scoring.score_code_samples needs both soft_time_limit and time_limit.",
        )
    ]


def test_a_verifier_slower_than_its_task_soft_limit_is_refused(monkeypatch):
    monkeypatch.setattr(type(REGISTRY["math"]), "max_seconds", 600.0, raising=False)
    monkeypatch.setattr(type(REGISTRY["code"]), "max_seconds", 1799.0, raising=False)
    assert ids_and_messages() == [
        (
            "scoring.E003",
            "verifier math may take 600 s on one sample, not below the soft_time_limit (600 s) "
            "of scoring.score_samples, which runs it for math prompt sets: a retried chunk "
            "would make no progress.",
        )
    ]


def test_a_broker_visibility_timeout_within_a_task_time_limit_is_refused(settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 1800}
    assert ids_and_messages() == [
        (
            "scoring.E004",
            "the broker's visibility_timeout (1800 s) must be longer than the longest scoring "
            "task time_limit (1900 s), or a running task's message is delivered again and "
            "judged twice.",
        )
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "THINKPOOL_MAX_SCORING_ATTEMPTS must be an integer, got 'lots'."),
        ("0", "THINKPOOL_MAX_SCORING_ATTEMPTS must be at least 1, got 0."),
        ("101", "THINKPOOL_MAX_SCORING_ATTEMPTS must be at most 100, got 101."),
    ],
)
def test_max_scoring_attempts_is_validated(value, message):
    result = subprocess.run(
        [sys.executable, "-c", "import thinkpool.settings"],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "1", "THINKPOOL_MAX_SCORING_ATTEMPTS": value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"ImproperlyConfigured: {message}" in result.stderr


def test_max_scoring_attempts_defaults_to_five(settings):
    assert settings.THINKPOOL["MAX_SCORING_ATTEMPTS"] == 5


# --- the worker's start-up -----------------------------------------------------------------


@pytest.fixture
def sandbox_probe(monkeypatch) -> list[str]:
    """check_available() reports a problem, and records that it was asked."""
    asked: list[str] = []

    def broken() -> str:
        asked.append("check_available")
        return "bubblewrap (bwrap) is not installed"

    monkeypatch.setattr(sandbox, "check_available", broken)
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    return asked


def fake_worker(*queues: str) -> SimpleNamespace:
    queue_set = SimpleNamespace(consume_from=dict.fromkeys(queues))
    return SimpleNamespace(
        app=SimpleNamespace(main="thinkpool", amqp=SimpleNamespace(queues=queue_set))
    )


def test_a_sandbox_worker_without_a_sandbox_refuses_to_start(sandbox_probe, caplog):
    with pytest.raises(SystemExit) as exited:
        celery_module.refuse_to_start_unsoundly(sender=fake_worker("sandbox", "maintenance"))
    assert exited.value.code == (
        "refusing to start this worker: the sandbox does not work here: "
        "bubblewrap (bwrap) is not installed"
    )
    assert sandbox_probe == ["check_available"]
    assert [r.levelno for r in caplog.records if "refusing" in r.getMessage()] == [logging.CRITICAL]


def test_a_worker_of_other_queues_does_not_need_the_sandbox(sandbox_probe):
    assert celery_module.refuse_to_start_unsoundly(sender=fake_worker("verify")) is None
    assert sandbox_probe == []


def test_the_unsafe_bypass_starts_with_a_loud_warning(sandbox_probe, monkeypatch, caplog):
    monkeypatch.setenv(sandbox.UNSAFE_ENV, "1")
    assert celery_module.worker_startup_problems(["sandbox"]) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "THINKPOOL_UNSAFE_NO_SANDBOX=1: this worker runs untrusted code WITHOUT a sandbox "
        "(development only); the sandbox does not work here: bubblewrap (bwrap) is not installed"
    ]


def test_the_sandbox_capability_report_is_logged(sandbox_probe, monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "check_available", lambda: None)
    monkeypatch.setattr(sandbox, "capabilities", lambda: {"cgroup": "v2"}, raising=False)
    caplog.set_level(logging.INFO, logger="thinkpool.celery")
    assert celery_module.worker_startup_problems(["sandbox"]) == []
    assert "sandbox capabilities: {'cgroup': 'v2'}" in caplog.messages


def test_the_worker_refuses_to_start_on_a_timing_problem(settings, sandbox_probe):
    settings.THINKPOOL = {**settings.THINKPOOL, "SWEEP_AFTER_S": 60}
    with pytest.raises(SystemExit, match=r"scoring\.E002: THINKPOOL_SWEEP_AFTER_S \(60 s\)"):
        celery_module.refuse_to_start_unsoundly(sender=fake_worker("verify"))
    assert sandbox_probe == []

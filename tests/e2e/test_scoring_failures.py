"""Scoring's failure paths with real worker processes and the real broker (files on the SQLite
pass, Redis on the PostgreSQL pass): a killed pool process, a sample that kills its worker
every time, and the worker's refusal to start without a sandbox."""

from __future__ import annotations

import os
import signal

import pytest

from scoring import sandbox
from scoring.models import PromptGold, Sample, SampleStatus, Verdict
from scoring.tasks import queue_scoring
from scoring.verifiers import REGISTRY
from tests.e2e.conftest import wait_for
from tests.e2e.worker_hooks import CRASH_MARKER, ENABLE_ENV
from tests.factories import PromptFactory, PromptSetFactory, UserFactory

pytestmark = pytest.mark.celery_worker

REASONING = (
    "<think>We multiply six by seven. Six groups of seven make forty-two, and seven groups "
    "of six give the same product, so the result is certainly {n}.</think> "
)
PROMPT = [{"role": "user", "content": "Please compute six times seven and explain your reasoning."}]


def new_sample(prompt, completion: str) -> Sample:
    return Sample.objects.create(
        prompt=prompt,
        contributor=UserFactory(username="failures"),
        model="m",
        temperature=0.6,
        finish_reason="stop",
        completion=completion,
    )


def state(pk: int) -> dict:
    return Sample.objects.values("status", "status_reason", "attempts", "claim_key").get(pk=pk)


def test_a_killed_pool_process_has_its_sample_reclaimed_by_the_redelivery(start_worker):
    code_set = PromptSetFactory(domain="code", verifier_config={"code": {"timeout_s": 8}})
    prompt = PromptFactory(
        prompt_set=code_set, messages=[{"role": "user", "content": "Write double(x)."}], gold=""
    )
    PromptGold.objects.filter(prompt=prompt).update(
        tests={
            "test": "def check(candidate):\n    assert candidate(2) == 4\n",
            "entry_point": "double",
        }
    )
    # A slow program: the sandbox is still running it when the pool process dies.
    sample = new_sample(
        prompt,
        "<think>Double it, slowly.</think>\n"
        "```python\nimport time\ntime.sleep(6)\ndef double(x):\n    return 2 * x\n```",
    )
    worker = start_worker(queues="sandbox")
    queue_scoring([sample.pk])
    first = wait_for(
        lambda: (s := state(sample.pk))["status"] == SampleStatus.SCORING and s,
        timeout=60,
        what="the worker to claim the sample",
    )
    assert first["attempts"] == 1 and first["claim_key"]
    [pool_process] = worker.pool_processes()
    os.kill(pool_process, signal.SIGKILL)  # as the OOM killer would

    # No sweep, no clock pushed back: the message comes back (acks_late,
    # reject_on_worker_lost) and its redelivery re-claims the sample at once.
    wait_for(
        lambda: state(sample.pk)["status"] == SampleStatus.VERIFIED,
        timeout=120,
        what="the redelivered task to verify the sample",
    )
    assert state(sample.pk) == {
        "status": SampleStatus.VERIFIED,
        "status_reason": "",
        "attempts": 2,
        "claim_key": first["claim_key"],  # the same task id: a redelivery, not a new message
    }
    counts = {
        name: Verdict.objects.filter(sample_id=sample.pk, verifier=name).count()
        for name in ("format", "code", "language", "repetition", "truncation")
    }
    assert counts == dict.fromkeys(counts, 1)
    assert worker.proc.poll() is None  # the worker itself lived on
    assert "WorkerLostError" in worker.output()


def test_a_sample_that_crashes_its_worker_every_time_ends_poison(start_worker):
    prompt_set = PromptSetFactory(verifier_config={"enable": ["crash"]})
    prompt = PromptFactory(prompt_set=prompt_set, messages=PROMPT, gold="42")
    crasher = new_sample(prompt, REASONING.format(n=42) + f"\\boxed{{42}} {CRASH_MARKER}")
    fine = new_sample(prompt, REASONING.format(n=42) + "\\boxed{42}")
    worker = start_worker(
        queues="verify",
        extra_env={"THINKPOOL_MAX_SCORING_ATTEMPTS": "3", ENABLE_ENV: "1"},
        extra_args=["--include", "tests.e2e.worker_hooks"],
    )
    queue_scoring([crasher.pk, fine.pk])  # one chunk, one message: the crasher first

    wait_for(
        lambda: state(fine.pk)["status"] == SampleStatus.VERIFIED,
        timeout=240,
        what="the chunk to get past the poison sample",
    )
    poisoned = state(crasher.pk)
    assert poisoned == {
        "status": SampleStatus.ERROR,
        "status_reason": "poison: crashed or timed out its scoring task 3 times",
        "attempts": 3,
        "claim_key": poisoned["claim_key"],
    }
    assert state(fine.pk) == {
        "status": SampleStatus.VERIFIED,
        "status_reason": "",
        "attempts": 1,
        "claim_key": poisoned["claim_key"],  # the same message, redelivered each time
    }
    assert Verdict.objects.get(sample_id=fine.pk, verifier="crash").status == "pass"
    assert not Verdict.objects.filter(sample_id=crasher.pk, verifier="crash").exists()
    assert worker.output().count("exited with 'exitcode 70'") == 3
    assert worker.proc.poll() is None
    assert "crash" not in REGISTRY  # registered in the worker only, never in this process


def test_a_sandbox_worker_refuses_to_start_without_a_working_sandbox(start_worker, monkeypatch):
    monkeypatch.setenv(sandbox.BWRAP_ENV, "/nonexistent")
    reason = sandbox.check_available()
    assert reason
    refused = start_worker(
        queues="sandbox", extra_env={"THINKPOOL_BWRAP": "/nonexistent"}, may_exit=True
    )
    assert refused.proc.wait(timeout=60) != 0
    output = refused.output()
    assert f"refusing to start this worker: the sandbox does not work here: {reason}" in output
    assert "ready." not in output

    # The same environment serves a worker of another queue.
    other = start_worker(queues="verify", extra_env={"THINKPOOL_BWRAP": "/nonexistent"})
    assert other.proc.poll() is None
    assert "refusing" not in other.output()

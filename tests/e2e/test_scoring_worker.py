"""Uploads are judged by a real Celery worker through the real broker (files on the SQLite
pass, Redis on the PostgreSQL pass). Killing the worker mid-task loses no sample."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from scoring.models import PromptGold, Sample, SampleStatus, Verdict
from scoring.services import close_prompts
from scoring.tasks import sweep_stuck_samples
from tests.conftest import client_for
from tests.e2e.conftest import wait_for
from tests.factories import (
    NodeFactory,
    PromptFactory,
    PromptSetFactory,
    UserFactory,
    sample_payload,
)

REASONING = (
    "<think>We multiply six by seven. Six groups of seven make forty-two, and seven groups "
    "of six give the same product, so the result is certainly {n}.</think> "
)
PROMPT = [{"role": "user", "content": "Please compute six times seven and explain your reasoning."}]


def upload(api, node, *, completions: list[str]) -> list[int]:
    lease = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 1},
        format="json",
    ).json()
    item = lease["items"][0]["id"]
    body = {"samples": [sample_payload(item, completion=c) for c in completions]}
    response = api.post(f"/api/v1/leases/{lease['id']}/samples/", body, format="json")
    assert response.status_code == 200
    return [a["id"] for a in response.json()["accepted"]]


def test_uploads_are_judged_by_a_real_worker_after_commit(start_worker):
    user = UserFactory(username="scorer")
    api, node = client_for(user), NodeFactory(owner=user)
    PromptFactory(prompt_set=PromptSetFactory(samples_per_prompt=2), messages=PROMPT, gold="42")
    start_worker()

    right, wrong = upload(
        api,
        node,
        completions=[
            REASONING.format(n=42) + "\\boxed{42}",
            REASONING.format(n=41) + "\\boxed{41}",
        ],
    )

    def settled():
        statuses = dict(Sample.objects.filter(pk__in=[right, wrong]).values_list("pk", "status"))
        return (
            statuses
            if SampleStatus.RECEIVED not in statuses.values()
            and SampleStatus.SCORING not in statuses.values()
            else None
        )

    assert wait_for(settled, timeout=90, what="verdicts") == {
        right: SampleStatus.VERIFIED,
        wrong: SampleStatus.REJECTED,
    }
    assert Verdict.objects.get(sample_id=right, verifier="math").status == "pass"
    assert Verdict.objects.get(sample_id=wrong, verifier="math").status == "fail"
    # While the prompt is open the contributor learns nothing that depends on the gold ...
    detail = api.get(f"/api/v1/samples/{wrong}/").json()
    assert (detail["status"], detail["disclosed"]) == ("accepted", False)
    assert api.get(f"/api/v1/samples/{right}/").json()["status"] == "accepted"
    # ... and once it is closed, the reason, never the gold or the details.
    close_prompts(
        prompt_ids=list(Sample.objects.filter(pk=wrong).values_list("prompt_id", flat=True))
    )
    detail = api.get(f"/api/v1/samples/{wrong}/").json()
    assert (detail["status"], detail["status_reason"]) == ("rejected", "math: fail")
    assert detail["disclosed"] is True
    assert all("details" not in v and "score" not in v for v in detail["verdicts"])


def test_killing_the_worker_mid_task_loses_no_sample_and_judges_it_once(start_worker):
    user = UserFactory(username="coder")
    api, node = client_for(user), NodeFactory(owner=user)
    code_set = PromptSetFactory(
        domain="code", samples_per_prompt=1, verifier_config={"code": {"timeout_s": 8}}
    )
    prompt = PromptFactory(
        prompt_set=code_set, messages=[{"role": "user", "content": "Write double(x)."}], gold=""
    )
    PromptGold.objects.filter(prompt=prompt).update(
        tests={
            "test": "def check(candidate):\n    assert candidate(2) == 4\n",
            "entry_point": "double",
        }
    )
    # A slow program: the sandbox is still running it when the worker dies.
    slow = (
        "<think>Double it, slowly.</think>\n"
        "```python\nimport time\ntime.sleep(6)\ndef double(x):\n    return 2 * x\n```"
    )
    first = start_worker(queues="sandbox,maintenance")
    [sample_id] = upload(api, node, completions=[slow])

    wait_for(
        lambda: Sample.objects.get(pk=sample_id).status == SampleStatus.SCORING,
        timeout=60,
        what="the worker to claim the sample",
    )
    first.kill()
    assert Sample.objects.get(pk=sample_id).status == SampleStatus.SCORING
    assert not Verdict.objects.filter(sample_id=sample_id, verifier="code").exists()

    # The sweeper finds it (its clock is pushed back instead of waiting SWEEP_AFTER_S).
    Sample.objects.filter(pk=sample_id).update(
        status_changed_at=timezone.now() - timedelta(hours=1)
    )
    start_worker(queues="sandbox,maintenance")
    sweep_stuck_samples.delay()

    wait_for(
        lambda: Sample.objects.get(pk=sample_id).status == SampleStatus.VERIFIED,
        timeout=120,
        what="the re-run to verify the sample",
    )
    counts = {
        name: Verdict.objects.filter(sample_id=sample_id, verifier=name).count()
        for name in ("format", "code", "language", "repetition", "truncation")
    }
    assert counts == dict.fromkeys(counts, 1)
    assert Sample.objects.filter(pk=sample_id).count() == 1


def test_the_sweeper_queues_samples_whose_message_was_lost(start_worker):
    user = UserFactory(username="lost")
    prompt = PromptFactory(prompt_set=PromptSetFactory(), messages=PROMPT, gold="42")
    # Stored, but never queued (as if the broker was down at commit).
    sample = Sample.objects.create(
        prompt=prompt,
        contributor=user,
        model="m",
        temperature=0.6,
        finish_reason="stop",
        completion=REASONING.format(n=42) + "\\boxed{42}",
    )
    Sample.objects.filter(pk=sample.pk).update(
        status_changed_at=timezone.now() - timedelta(hours=1)
    )
    start_worker()
    sweep_stuck_samples.delay()
    wait_for(
        lambda: Sample.objects.get(pk=sample.pk).status == SampleStatus.VERIFIED,
        timeout=90,
        what="the swept sample to be judged",
    )


def test_separate_workers_per_queue_judge_math_and_code(start_worker):
    user = UserFactory(username="queues")
    api, node = client_for(user), NodeFactory(owner=user)
    PromptFactory(
        prompt_set=PromptSetFactory(samples_per_prompt=1, priority=2), messages=PROMPT, gold="42"
    )
    code_set = PromptSetFactory(domain="code", samples_per_prompt=1, priority=1)
    code_prompt = PromptFactory(
        prompt_set=code_set, messages=[{"role": "user", "content": "Write double(x)."}]
    )
    PromptGold.objects.filter(prompt=code_prompt).update(
        answer="", tests=[{"input": "3\n", "output": "6\n"}]
    )
    verify_worker = start_worker(queues="verify")
    sandbox_worker = start_worker(queues="sandbox")

    [math_id] = upload(api, node, completions=[REASONING.format(n=42) + "\\boxed{42}"])
    [code_id] = upload(
        api,
        node,
        completions=[
            "<think>Read x, print twice x.</think>\n```python\nprint(2 * int(input()))\n```"
        ],
    )

    wait_for(
        lambda: (
            set(Sample.objects.filter(pk__in=[math_id, code_id]).values_list("status", flat=True))
            == {SampleStatus.VERIFIED}
        ),
        timeout=120,
        what="both queues' workers to verify their samples",
    )
    assert Verdict.objects.get(sample_id=code_id, verifier="code").status == "pass"
    assert not Verdict.objects.filter(sample_id=math_id, verifier="code").exists()
    # Each sample went to its own queue's worker ("Task <name>[<id>] received" in its log).
    assert "Task scoring.score_code_samples[" in sandbox_worker.output()
    assert "Task scoring.score_code_samples[" not in verify_worker.output()
    assert "Task scoring.score_samples[" in verify_worker.output()
    assert "Task scoring.score_samples[" not in sandbox_worker.output()

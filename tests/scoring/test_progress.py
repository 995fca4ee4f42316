"""The prompt sets' progress (scoring/progress.py, SetProgress): bumped by uploads, closes and
status moves of closed prompts' samples, never by a verdict on an open prompt; rebuilt by
`recompute`; read with targets from the sampling plan."""

from __future__ import annotations

from datetime import UTC
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from scoring import counters, pipeline, progress
from scoring.models import Prompt, PromptSet, Sample, SampleStatus, SetProgress
from scoring.services import close_prompts, retire_prompt_set
from scoring.verifiers import REGISTRY
from scoring.verifiers.base import Outcome, Status
from tests.conftest import client_for
from tests.factories import PromptFactory, PromptSetFactory, UserFactory, sample_payload
from tests.scoring.test_counters import _in_thread, _wait_until_blocked

RIGHT = "<think>2+2 is 4, since two and two make four.</think> The answer is \\boxed{4}."
WRONG = "<think>2+2 is 5, since two and two make five.</think> The answer is \\boxed{5}."
MODEL = "org/model-a"


def make_set(**fields: Any) -> tuple[PromptSet, list[Prompt]]:
    prompt_set = PromptSetFactory(**{"samples_per_prompt": 2, **fields})
    prompts = [
        PromptFactory(
            prompt_set=prompt_set,
            messages=[{"role": "user", "content": f"What is 2+2? ({prompt_set.name} {k})"}],
            gold="4",
        )
        for k in range(3)
    ]
    return prompt_set, prompts


def upload(
    capture: Any, user: Any, answers: list[tuple[Prompt, str]], *, temperature: float = 0.6
) -> None:
    """Offline uploads through the API, scored eagerly on commit."""
    samples = []
    for prompt, completion in answers:
        payload = sample_payload(
            0, prompt=prompt.pk, completion=completion, temperature=temperature
        )
        del payload["item"]
        samples.append(payload)
    with capture(execute=True):
        response = client_for(user).post("/api/v1/samples/", {"samples": samples}, format="json")
    assert response.status_code == 200, response.content
    assert len(response.json()["accepted"]) == len(answers), response.content


def cell(prompt_set: PromptSet, model: str = MODEL, temperature: float = 0.6) -> progress.Cell:
    return (prompt_set.pk, model, temperature)


def assert_kept() -> None:
    assert progress.stored() == progress.truth()


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_add_sums_over_shards_in_key_order(monkeypatch):
    a, b = PromptSetFactory(), PromptSetFactory()
    shards = iter([0, 5, 5])
    monkeypatch.setattr(progress.random, "randrange", lambda n: next(shards))
    progress.add({(b.pk, "m", 0.6): (1, 0, 0), (a.pk, "m", 0.60000001): (2, 1, 0)})
    progress.add({(a.pk, "m", 0.6): (1, 0, 1)})
    progress.add({(a.pk, "m", 0.6): (0, -1, 0), (b.pk, "x", 1.0): (0, 0, 0)})  # zero: no row
    rows = set(
        SetProgress.objects.values_list(
            "prompt_set_id", "model", "temperature", "shard", "submitted", "verified", "rejected"
        )
    )
    assert rows == {
        (a.pk, "m", 0.6, 0, 2, 1, 0),
        (b.pk, "m", 0.6, 0, 1, 0, 0),
        (a.pk, "m", 0.6, 5, 1, -1, 1),  # two writes to one shard add up in its row
    }
    assert progress.stored() == {(a.pk, "m", 0.6): (3, 0, 1), (b.pk, "m", 0.6): (1, 0, 0)}


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_moves_nothing():
    prompt_set = PromptSetFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        progress.add({cell(prompt_set): (5, 1, 1)})
        raise RuntimeError("the upload failed")
    assert progress.stored() == {}


@pytest.mark.django_db
def test_an_upload_counts_submitted_per_cell_and_per_day(django_capture_on_commit_callbacks):
    prompt_set, prompts = make_set(temperatures=[0.6, 1.0])
    alice = UserFactory(username="alice")
    upload(django_capture_on_commit_callbacks, alice, [(prompts[0], RIGHT), (prompts[1], WRONG)])
    upload(django_capture_on_commit_callbacks, alice, [(prompts[0], RIGHT)], temperature=1.0)
    # Judged, but the prompts are open: nothing is verified or rejected yet.
    assert Sample.objects.filter(status=SampleStatus.VERIFIED).count() == 2
    assert progress.stored() == {
        cell(prompt_set): (2, 0, 0),
        cell(prompt_set, MODEL, 1.0): (1, 0, 0),
    }
    today = timezone.now().astimezone(UTC).date()
    assert counters.read([counters.samples_on(today)]) == {counters.samples_on(today): 3}
    assert_kept()


@pytest.mark.django_db
def test_verdicts_on_open_prompts_never_move_verified_or_rejected(
    django_capture_on_commit_callbacks,
):
    prompt_set, prompts = make_set()
    upload(
        django_capture_on_commit_callbacks,
        UserFactory(),
        [(prompts[0], RIGHT), (prompts[1], WRONG), (prompts[2], RIGHT)],
    )
    before = progress.stored()
    # A rescore, a sweep back to received and a poison: still nothing by status.
    sample = Sample.objects.get(prompt=prompts[1])
    pipeline.requeue(sample_ids=[sample.pk])
    pipeline.score_sample(sample_id=sample.pk)
    assert progress.stored() == before == {cell(prompt_set): (3, 0, 0)}
    overview = progress.compute_overview()
    found = overview.get(prompt_set.name)
    assert found is not None
    assert (found.total.verified, found.total.rejected, found.total.awaiting) == (0, 0, 3)
    assert overview.by_model == [(MODEL, found.total)]
    assert found.total.pass_rate is None


@pytest.mark.django_db
def test_a_close_adds_its_samples_by_status_and_later_moves_follow(
    django_capture_on_commit_callbacks, monkeypatch
):
    prompt_set, prompts = make_set()
    user = UserFactory()
    upload(django_capture_on_commit_callbacks, user, [(prompts[0], RIGHT), (prompts[1], WRONG)])
    close_prompts(prompt_ids=[prompts[0].pk, prompts[1].pk], twins=False)
    assert progress.stored() == {cell(prompt_set): (2, 1, 1)}
    assert_kept()

    # A backlog judged after the close: received -> scoring -> verified, counted.
    late = Sample.objects.create(
        prompt=prompts[0],
        contributor=UserFactory(),
        model=MODEL,
        temperature=0.6,
        completion=RIGHT,
        finish_reason="stop",
    )
    progress.samples_stored([cell(prompt_set)])  # as its upload would have
    pipeline.score_sample(sample_id=late.pk)
    assert progress.stored() == {cell(prompt_set): (3, 2, 1)}

    # A rescore whose new verifier version turns the verified ones down.
    monkeypatch.setattr(type(REGISTRY["math"]), "version", REGISTRY["math"].version + 1)
    monkeypatch.setattr(type(REGISTRY["math"]), "verify", lambda *args: Outcome(Status.FAIL, 0.0))
    call_command("rescore", "--set", prompt_set.name, stdout=StringIO())
    assert progress.stored() == {cell(prompt_set): (3, 0, 3)}
    assert_kept()


@pytest.mark.django_db
def test_a_closed_samples_sweep_back_to_received_takes_it_out_of_verified():
    prompt_set, prompts = make_set()
    sample = Sample.objects.create(
        prompt=prompts[0],
        contributor=UserFactory(),
        model=MODEL,
        temperature=0.6,
        completion=RIGHT,
        finish_reason="stop",
        status=SampleStatus.VERIFIED,
    )
    close_prompts(prompt_ids=[prompts[0].pk], twins=False)
    assert progress.stored() == {cell(prompt_set): (0, 1, 0)}  # made here, not uploaded
    assert pipeline.requeue(sample_ids=[sample.pk]) == [sample.pk]
    assert progress.stored() == {}  # verified -1: back to zero in every column
    pipeline.score_sample(sample_id=sample.pk)
    assert progress.stored() == {cell(prompt_set): (0, 1, 0)}


@pytest.mark.django_db
def test_recompute_equals_the_incremental_counts_after_a_mixed_history(
    django_capture_on_commit_callbacks, monkeypatch
):
    first, first_prompts = make_set(temperatures=[0.6, 1.0])
    second, second_prompts = make_set(models_allowed=["org/*"])
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    capture = django_capture_on_commit_callbacks
    upload(capture, alice, [(first_prompts[0], RIGHT), (first_prompts[1], WRONG)])
    upload(capture, bob, [(first_prompts[0], WRONG)], temperature=1.0)
    upload(capture, bob, [(second_prompts[0], RIGHT), (second_prompts[1], RIGHT)])
    close_prompts(prompt_ids=[first_prompts[0].pk], twins=False)
    upload(capture, alice, [(first_prompts[2], RIGHT), (second_prompts[2], WRONG)])
    assert_kept()
    retire_prompt_set(prompt_set=second)
    sample = Sample.objects.filter(prompt=second_prompts[0]).get()
    Sample.objects.filter(pk=sample.pk).update(quarantined=True)  # a maintainer's hold
    monkeypatch.setattr(type(REGISTRY["math"]), "version", REGISTRY["math"].version + 1)
    monkeypatch.setattr(type(REGISTRY["math"]), "verify", lambda *args: Outcome(Status.FAIL, 0.0))
    call_command("rescore", "--set", first.name, stdout=StringIO())
    assert_kept()
    incremental = progress.stored()
    assert incremental == {
        # Only first_prompts[0] is closed: alice's right answer there, rejected by the rescore.
        cell(first): (3, 0, 1),
        cell(first, MODEL, 1.0): (1, 0, 1),
        cell(second): (3, 2, 1),
    }
    assert progress.recompute() == {}
    assert progress.stored() == incremental
    assert SetProgress.objects.count() == 3  # one row per cell afterwards


@pytest.mark.django_db
def test_recompute_repairs_drift_and_check_ledger_repair_runs_it():
    prompt_set, prompts = make_set()
    Sample.objects.create(
        prompt=prompts[0],
        contributor=UserFactory(),
        model=MODEL,
        temperature=0.6,
        completion=RIGHT,
        finish_reason="stop",
    )
    gone = PromptSetFactory()
    progress.add({cell(prompt_set): (5, 2, 0), cell(gone, "x", 0.7): (1, 0, 0)})
    assert progress.recompute() == {
        cell(prompt_set): ((5, 2, 0), (1, 0, 0)),
        cell(gone, "x", 0.7): ((1, 0, 0), (0, 0, 0)),
    }
    progress.add({cell(prompt_set): (0, 3, 0)})
    out = StringIO()
    call_command("check_ledger", "--repair", stdout=out)
    assert "1 progress cells differed" in out.getvalue()
    assert progress.stored() == {cell(prompt_set): (1, 0, 0)}
    # The day counter is part of the counters' truth, and rebuilt with them.
    today = timezone.now().astimezone(UTC).date()
    counters.add({counters.samples_on(today): 7})
    counters.recompute()
    assert counters.read([counters.samples_on(today)]) == {counters.samples_on(today): 1}


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_targets_come_from_the_plan_and_models_from_plain_ids_and_rows():
    prompt_set, _ = make_set(
        name="arith",
        samples_per_prompt=2,
        temperatures=[0.6, 1],
        models_allowed=["org/a", "Qwen/Qwen3-*", "org/b[12]"],
        domain="math",
    )
    code, _ = make_set(name="code-set", domain="code", samples_per_prompt=1)
    progress.add({(prompt_set.pk, "Qwen/Qwen3-8B", 0.6): (5, 3, 1)})
    progress.add({(prompt_set.pk, "org/a", 1.0): (2, 0, 2), (prompt_set.pk, "odd", 0.3): (1, 1, 0)})
    progress.add({(code.pk, "org/a", 0.6): (4, 1, 1)})
    overview = progress.compute_overview()
    arith = overview.get("arith")
    assert arith is not None
    assert arith.prompts == 3 and arith.temperatures == [0.6, 1.0]
    # Wildcards are no model of their own; "odd" uploaded (with a temperature off the plan).
    assert arith.models == ["Qwen/Qwen3-8B", "odd", "org/a"]
    per_cell = 3 * 2
    assert arith.cells == [
        ("Qwen/Qwen3-8B", 0.6, progress.Tally(5, 3, 1, per_cell)),
        ("Qwen/Qwen3-8B", 1.0, progress.Tally(0, 0, 0, per_cell)),
        ("odd", 0.3, progress.Tally(1, 1, 0, 0)),  # off the plan: no target
        ("odd", 0.6, progress.Tally(0, 0, 0, per_cell)),
        ("odd", 1.0, progress.Tally(0, 0, 0, per_cell)),
        ("org/a", 0.6, progress.Tally(0, 0, 0, per_cell)),
        ("org/a", 1.0, progress.Tally(2, 0, 2, per_cell)),
    ]
    assert arith.total == progress.Tally(8, 4, 3, 6 * per_cell)
    assert arith.total.awaiting == 1 and arith.total.percent == "11.1%"
    assert arith.target_per_model == 12
    assert dict(arith.by_temperature) == {
        0.3: progress.Tally(1, 1, 0, 0),
        0.6: progress.Tally(5, 3, 1, 3 * per_cell),
        1.0: progress.Tally(2, 0, 2, 3 * per_cell),
    }
    assert dict(overview.by_model)["org/a"] == progress.Tally(6, 1, 3, 2 * per_cell + 3)
    assert dict(overview.by_domain) == {"Math": arith.total, "Code": progress.Tally(4, 1, 1, 3)}
    assert dict(overview.by_domain)["Code"].pass_percent == "50.0%"


@pytest.mark.django_db
def test_the_overview_costs_three_queries_whatever_the_size(django_assert_num_queries):
    for k in range(3):
        prompt_set, _ = make_set()
        progress.add({(prompt_set.pk, f"m{j}", 0.6): (j, 0, 0) for j in range(1, 5)})
        with django_assert_num_queries(3):
            progress.compute_overview()


@pytest.mark.django_db
def test_the_overview_is_cached_and_answered_when_the_cache_is_down(monkeypatch, caplog):
    prompt_set, _ = make_set()
    first = progress.overview()
    progress.add({cell(prompt_set): (1, 0, 0)})
    assert progress.overview() == first  # cached
    assert progress.compute_overview() != first

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(progress.cache, "get_or_set", down)
    found = progress.overview().get(prompt_set.name)
    assert found is not None and found.total.submitted == 1
    assert "computed without the cache (ConnectionError" in caplog.text


@pytest.mark.django_db
def test_samples_per_day_reads_the_day_counters_oldest_first():
    today = timezone.now().astimezone(UTC).date()
    counters.add({counters.samples_on(today): 4})
    counters.add({counters.samples_on(today.replace(day=1) if today.day > 1 else today): 0})
    days = progress.compute_samples_per_day(30)
    assert len(days) == 30 and days[-1] == (today, 4)
    assert [d for d, _ in days] == sorted(d for d, _ in days)
    assert sum(n for _, n in days) == 4


# --- a close and a status change at the same time (PostgreSQL's row locks) -------------------


def _sample_of_new_prompt() -> tuple[Sample, PromptSet]:
    prompt_set, prompts = make_set()
    sample = Sample.objects.create(
        prompt=prompts[0],
        contributor=UserFactory(),
        model=MODEL,
        temperature=0.6,
        completion=RIGHT,
        finish_reason="stop",
    )
    progress.samples_stored([cell(prompt_set)])  # as its upload would have
    return sample, prompt_set


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_close_waits_for_a_finish_in_flight_and_counts_its_new_status():
    sample, prompt_set = _sample_of_new_prompt()
    held = pipeline.claim(sample_id=sample.pk, claim_key="task-1")
    assert held is not None
    with transaction.atomic():
        assert pipeline._finish(held, SampleStatus.VERIFIED, "") is True
        thread, out = _in_thread(lambda: close_prompts(prompt_ids=[sample.prompt_id], twins=False))
        _wait_until_blocked()
    thread.join(30)
    assert out == [1]
    assert progress.stored() == {cell(prompt_set): (1, 1, 0)}
    assert_kept()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_finish_waits_for_a_close_in_flight_and_moves_what_it_counted():
    sample, prompt_set = _sample_of_new_prompt()
    held = pipeline.claim(sample_id=sample.pk, claim_key="task-1")
    assert held is not None
    with transaction.atomic():
        assert close_prompts(prompt_ids=[sample.prompt_id], twins=False) == 1
        thread, out = _in_thread(lambda: pipeline._finish(held, SampleStatus.REJECTED, "x"))
        _wait_until_blocked()
    thread.join(30)
    assert out == [True]
    assert progress.stored() == {cell(prompt_set): (1, 0, 1)}
    assert_kept()

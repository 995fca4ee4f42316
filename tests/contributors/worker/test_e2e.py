"""End to end: a live Thinkpool server, a real model (the tiny one), the worker as a process.

OpenAI-compatible path: `transformers serve` (started by the session fixture) on the tiny model.
In-process path: the worker's transformers backend on the same model.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.contributors.worker.conftest import SERVED_NAME, FlakyProxy, make_thinkpool

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def server_samples(user):
    from scoring.models import Sample

    return list(Sample.objects.filter(contributor=user).order_by("pk"))


def journal_ids(worker):
    return sorted(cid for cid, _ in worker.journal_rows())


def assert_exactly_once(worker, tp, expected):
    rows = server_samples(tp.user)
    server_ids = sorted(str(s.client_id) for s in rows)
    assert server_ids == journal_ids(worker), "server rows and journal differ"
    assert len(rows) == expected
    # Every slot got exactly its target: nothing lost, nothing counted twice.
    from contributors.models import Slot

    slots = Slot.objects.filter(prompt_set=tp.prompt_set)
    assert sorted(s.filled for s in slots) == [tp.prompt_set.samples_per_prompt] * len(tp.prompts)
    assert all(s.outstanding == 0 for s in slots)
    assert {state for _, state in worker.journal_rows()} <= {"accepted", "duplicate"}


def register_openai(worker, serve_url, tiny_model, name="box"):
    worker.ok(
        "register",
        "--name",
        name,
        "--backend",
        "openai",
        "--base-url",
        serve_url,
        "--model",
        SERVED_NAME,
        "--backend-model",
        str(tiny_model),
    )


def test_openai_backend_with_transformers_serve(
    live_server, transformers_serve, tiny_model, make_worker
):
    tp = make_thinkpool(live_server, prompts=3, spp=2, max_tokens=48)
    w = make_worker(tp.url, tp.token)
    w.login()
    register_openai(w, transformers_serve, tiny_model)
    doctor = w.run("doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert "[ok  ] model served" in doctor.stdout

    proc = w.ok("run", "--once", "--concurrency", "2")
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "lease" for e in events)
    progress = [e for e in events if e["event"] == "progress"][-1]
    assert progress["samples"] == 6 and progress["accepted"] == 6 and progress["rejected"] == 0

    assert_exactly_once(w, tp, 6)
    by_prompt = {}
    for s in server_samples(tp.user):
        by_prompt.setdefault(s.prompt_id, []).append(s)
        assert s.model == SERVED_NAME
        assert s.sampling["backend_model"] == str(tiny_model)  # the server's exact id
        assert s.temperature == 0.7 and s.sampling["top_p"] == 0.9
        assert s.sampling["max_tokens"] == 48
        assert s.finish_reason in {"stop", "length"}
        assert s.prompt_tokens > 5 and 0 < s.completion_tokens <= 48
        assert (s.finish_reason == "length") == (s.completion_tokens == 48)
        assert s.generation_ms >= 1
        assert "<think>" not in s.completion  # reasoning was split out
    assert sorted(len(v) for v in by_prompt.values()) == [2, 2, 2]
    # The tiny model was trained to think first: transformers serve splits it for us.
    assert any(s.reasoning for s in server_samples(tp.user))

    status = w.ok("status").stdout
    assert "0 waiting to upload, 6 uploaded, 0 duplicates, 0 refused at upload" in status
    # Scoring has not run (no Celery worker here) and the prompts are open: nothing is claimed.
    assert "samples:  6 on the server: 0 verified, 0 rejected, 0 error" in status
    assert "; 6 awaiting disclosure" in status


def test_inprocess_transformers_backend(live_server, tiny_model, make_worker):
    tp = make_thinkpool(live_server, prompts=3, spp=2, max_tokens=40)
    w = make_worker(tp.url, tp.token)
    w.login()
    # A path is how the backend loads the model, never how Thinkpool names it.
    bad = w.run("register", "--name", "cpu-box", "--backend", "transformers", "--model", "./tiny")
    assert bad.returncode == 2
    assert "pass the path as --backend-model and the id as --model" in bad.stderr
    w.ok(
        "register",
        "--name",
        "cpu-box",
        "--backend",
        "transformers",
        "--model",
        SERVED_NAME,
        "--backend-model",
        str(tiny_model),
    )
    w.ok("run", "--once", "--batch-size", "3")
    assert_exactly_once(w, tp, 6)
    for s in server_samples(tp.user):
        assert s.model == SERVED_NAME and s.sampling["backend_model"] == str(tiny_model)
        assert s.sampling["device"] == "cpu" and s.sampling["dtype"] == "float32"
        assert s.temperature == 0.7
        assert (s.finish_reason == "length") == (s.completion_tokens == 40)
        assert s.prompt_tokens > 5 and s.completion_tokens > 0
    assert any(s.reasoning for s in server_samples(tp.user))


def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(
    live_server, transformers_serve, tiny_model, make_worker
):
    tp = make_thinkpool(live_server, prompts=12, spp=2, max_tokens=48)
    w = make_worker(tp.url, tp.token)
    w.login()
    register_openai(w, transformers_serve, tiny_model)
    proc = w.start("run", "--once", "--concurrency", "1", "--max-prompts", "4")
    got = w.wait_for_samples(3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    ids_at_kill = {cid for cid, _ in w.journal_rows()}
    assert got <= len(ids_at_kill) < 24, "the kill must land mid-run"

    w.ok("run", "--once", "--concurrency", "2")
    assert_exactly_once(w, tp, 24)
    # Everything journaled before the kill reached the server under its original client id.
    assert ids_at_kill <= {str(s.client_id) for s in server_samples(tp.user)}


def test_offline_jsonl_upload_is_idempotent_and_counts_duplicates(
    live_server, make_worker, tmp_path
):
    tp = make_thinkpool(live_server, prompts=2, spp=2)
    w = make_worker(tp.url, tp.token)
    w.login()
    lines = [
        {
            "prompt": p.pk,
            "completion": f"<think>step {i}</think> answer {i}",
            "model": "vllm/batch-model",
            "model_revision": "abc123",
            "sampling": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 48, "n": 1},
            "finish_reason": "stop",
            "prompt_tokens": 10,
            "completion_tokens": 8,
        }
        for i, p in enumerate(tp.prompts)
    ]
    lines.append({"prompt": tp.prompts[0].pk, "completion": "no model"})  # invalid line
    lines.append({**lines[0], "prompt": 999999, "completion": "unknown prompt"})
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")

    first = w.run("upload", str(path))
    assert first.returncode == 1  # one invalid line, one rejection: reported, not fatal
    assert (
        "2 uploaded (2 new, 0 duplicates already on the server), 1 rejected, 1 invalid lines "
        "(3 samples in batch.jsonl)"
    ) in first.stdout
    assert "batch.jsonl:3: missing model, finish_reason, sampling.temperature" in first.stderr
    assert "unknown_prompt" in first.stderr
    rows = server_samples(tp.user)
    assert len(rows) == 2
    assert {(s.reasoning, s.completion) for s in rows} == {
        ("step 0", "answer 0"),
        ("step 1", "answer 1"),
    }
    assert all(s.model == "vllm/batch-model" and s.model_revision == "abc123" for s in rows)

    again = w.run("upload", str(path))  # same file again: content-derived ids, no new rows
    assert "2 uploaded (0 new, 2 duplicates already on the server)" in again.stdout
    assert len(server_samples(tp.user)) == 2
    # From another machine (a journal that never saw the file): the server says duplicate.
    elsewhere = make_worker(tp.url, tp.token, name="elsewhere")
    elsewhere.login()
    third = elsewhere.run("upload", str(path))
    assert "2 uploaded (0 new, 2 duplicates already on the server), 1 rejected" in third.stdout
    assert len(server_samples(tp.user)) == 2


def test_server_down_for_a_while_then_back(
    live_server, transformers_serve, tiny_model, make_worker
):
    tp = make_thinkpool(live_server, prompts=6, spp=2, max_tokens=48)
    port = int(tp.url.rsplit(":", 1)[1])
    proxy = FlakyProxy(port)
    w = make_worker(proxy.url, tp.token)
    w.login()
    register_openai(w, transformers_serve, tiny_model)
    proc = w.start("run", "--once", "--concurrency", "1", "--max-prompts", "3")
    w.wait_for_samples(1, proc)
    proxy.down()
    time.sleep(4)  # worker keeps generating into the journal and retries uploads/leases
    if proc.poll() is not None:
        pytest.fail(f"the worker must wait for the server, not give up:\n{proc.stderr.read()}")
    # It went on generating into the journal while nothing could be uploaded.
    assert any(state == "pending" for _, state in w.journal_rows())
    proxy.up()
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "retrying" in err
    assert_exactly_once(w, tp, 12)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_graceful_stop_uploads_and_releases(
    sig, live_server, transformers_serve, tiny_model, make_worker
):
    from contributors.models import Lease

    tp = make_thinkpool(live_server, prompts=10, spp=2, max_tokens=48)
    w = make_worker(tp.url, tp.token)
    w.login()
    register_openai(w, transformers_serve, tiny_model)
    proc = w.start("run", "--concurrency", "1", "--max-prompts", "10")
    w.wait_for_samples(2, proc)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rows = w.journal_rows()
    assert 2 <= len(rows) < 20
    assert {st for _, st in rows} == {"accepted"}  # everything finished went up
    assert sorted(str(s.client_id) for s in server_samples(tp.user)) == journal_ids(w)
    lease = Lease.objects.get(contributor=tp.user)
    assert lease.state == "released"
    from contributors.models import Slot

    slots = Slot.objects.filter(prompt_set=tp.prompt_set)
    assert sum(s.outstanding for s in slots) == 0  # unstarted items went back to the pool
    assert sum(s.filled for s in slots) == len(rows)
    # The log counts what went back as the server did: samples, and the items they belong to.
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    release = [e for e in events if e["event"] == "release"]
    assert len(release) == 1
    returned = [i.returned for i in lease.items.all() if i.returned]
    assert (release[0]["samples"], release[0]["items"]) == (sum(returned), len(returned))
    assert release[0]["message"] == (
        f"released {sum(returned)} unstarted samples ({len(returned)} items) of lease {lease.pk}"
    )

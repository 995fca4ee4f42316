import json
import logging
import math

import httpx
import pytest

from contributors.worker import journal as j
from contributors.worker import uploader as uploader_mod
from contributors.worker.backends import Generation
from contributors.worker.errors import AuthError, ServerUnreachable, UploadPostponed
from contributors.worker.journal import Journal, JournalSample
from contributors.worker.net import RetryPolicy, ServerClient, ServerLimits
from contributors.worker.runner import Runner, RunOptions
from contributors.worker.uploader import Uploader

MIB = 1024 * 1024


class FakeApi:
    """Answers like the server: /me/ (with or without limits), the two upload endpoints with
    its caps (400 on too many samples, 413 on too big a body), duplicates for ids seen before.

    ``advertise``: the limits /me/ reports (None: an older server that reports none).
    ``cap``/``max_body``: what it enforces. ``status``: a whole-request answer for uploads
    (an int, or a list consumed one per upload; 200 means answer normally).
    """

    def __init__(
        self,
        reject=(),
        lease_status=200,
        *,
        cap=256,
        max_body=32 * MIB,
        advertise=None,
        status=200,
    ):
        self.bodies = []
        self.sizes = []
        self.me_calls = 0
        self.stored = {}
        self.reject = set(reject)
        self.lease_status = lease_status
        self.cap = cap
        self.max_body = max_body
        self.advertise = advertise
        self.status = status

    def __call__(self, request):
        if request.url.path == "/api/v1/me/":
            self.me_calls += 1
            me = {"username": "u", "handle": "u", "hf_username": "", "public_attribution": True}
            if self.advertise is not None:
                me["limits"] = self.advertise
            return httpx.Response(200, json=me)
        status = self.status.pop(0) if isinstance(self.status, list) else self.status
        if isinstance(status, Exception):
            raise status
        if status != 200:
            return httpx.Response(status, json={"error": {"code": "x", "message": "not now"}})
        self.sizes.append(len(request.content))
        if len(request.content) > self.max_body:
            return httpx.Response(413, json={"error": {"code": "body_too_large", "message": "big"}})
        body = json.loads(request.content)
        self.bodies.append((request.url.path, body))
        if len(body["samples"]) > self.cap:
            return httpx.Response(
                400,
                json={
                    "error": {
                        "code": "invalid",
                        "message": "The request is not valid.",
                        "fields": {"samples": [f"at most {self.cap} samples per request"]},
                    }
                },
            )
        if "/leases/" in request.url.path and self.lease_status != 200:
            return httpx.Response(
                self.lease_status, json={"error": {"code": "not_found", "message": "gone"}}
            )
        out = {"accepted": [], "duplicates": [], "rejected": []}
        for s in body["samples"]:
            cid = s["client_id"]
            if cid in self.reject:
                out["rejected"].append(
                    {"client_id": cid, "error": {"code": "invalid", "message": "nope"}}
                )
            elif cid in self.stored:
                out["duplicates"].append({"client_id": cid, "id": self.stored[cid]})
            else:
                self.stored[cid] = len(self.stored) + 1
                out["accepted"].append({"client_id": cid, "id": self.stored[cid]})
        return httpx.Response(200, json=out)

    def counts(self):
        return [len(b["samples"]) for _, b in self.bodies]


def make(tmp_path, api, policy=None, **kwargs):
    http = httpx.Client(transport=httpx.MockTransport(api))
    server = ServerClient(http, "http://tp", "tp_x", policy=policy or RetryPolicy(max_attempts=1))
    jr = Journal(tmp_path / "j.db")
    return jr, Uploader(server, jr, **kwargs)


def samples(n, lease="1", prompt="9", size=1):
    return [
        JournalSample(j.new_client_id(), lease, str(i + 1), prompt, {"completion": "x" * size})
        for i in range(n)
    ]


def test_batches_of_at_most_256_and_states_recorded(tmp_path):
    api = FakeApi()
    jr, up = make(tmp_path, api)
    jr.record(samples(300))
    assert up.flush() == 300
    assert api.counts() == [256, 44]
    assert all(p == "/api/v1/leases/1/samples/" for p, _ in api.bodies)
    assert jr.counts()["accepted"] == 300
    assert {s.server_id for s in jr.all()} == {str(i) for i in range(1, 301)}


def test_retry_after_lost_answer_comes_back_as_duplicate(tmp_path):
    api = FakeApi()
    jr, up = make(tmp_path, api)
    batch = samples(3)
    jr.record(batch)
    api.stored[batch[0].client_id] = 99  # the server stored it, but its answer was lost
    up.flush()
    assert jr.get(batch[0].client_id).state == j.DUPLICATE
    assert jr.get(batch[0].client_id).server_id == "99"
    assert jr.counts() == {"pending": 0, "accepted": 2, "duplicate": 1, "rejected": 0}


def test_per_sample_rejections_are_kept_with_reason(tmp_path):
    batch = samples(2)
    api = FakeApi(reject={batch[1].client_id})
    jr, up = make(tmp_path, api)
    jr.record(batch)
    up.flush()
    got = jr.get(batch[1].client_id)
    assert (got.state, got.error_code, got.error_message) == ("rejected", "invalid", "nope")
    assert up.stats.rejected == 1 and up.stats.accepted == 1
    up.flush()
    assert len(api.bodies) == 1  # rejected samples are not re-sent forever


def test_unknown_lease_falls_back_to_prompt_upload(tmp_path):
    api = FakeApi(lease_status=404)
    jr, up = make(tmp_path, api)
    jr.record(samples(2))
    up.flush()
    paths = [p for p, _ in api.bodies]
    assert paths == ["/api/v1/leases/1/samples/", "/api/v1/samples/"]
    assert all(s["prompt"] == 9 and "item" not in s for s in api.bodies[1][1]["samples"])
    assert jr.counts()["accepted"] == 2


# --- limits ----------------------------------------------------------------------------------


def test_limits_parsed_tolerantly():
    assert ServerLimits.from_me({}) == ServerLimits(256, 32 * MIB)
    assert ServerLimits.from_me({"limits": None}) == ServerLimits()
    got = ServerLimits.from_me(
        {
            "limits": {
                "max_samples_per_upload": 64,
                "max_body_bytes": "x",
                "max_prompts_per_lease": 0,
            }
        }
    )
    assert got == ServerLimits(max_samples_per_upload=64)
    full = {
        "max_samples_per_upload": 8,
        "max_body_bytes": 4096,
        "max_completion_chars": 100,
        "max_prompts_per_lease": 32,
    }
    assert ServerLimits.from_me({"limits": full}) == ServerLimits(8, 4096, 100, 32)


def test_advertised_sample_cap_sizes_batches_and_is_read_once(tmp_path):
    api = FakeApi(cap=64, advertise={"max_samples_per_upload": 64, "max_body_bytes": 32 * MIB})
    jr, up = make(tmp_path, api)
    jr.record(samples(150))
    assert up.flush() == 150
    jr.record(samples(10, lease="2"))
    up.flush()
    assert api.counts() == [64, 64, 22, 10]
    assert api.me_calls == 1
    assert jr.counts()["accepted"] == 160


def test_advertised_body_cap_sizes_batches_by_bytes_with_headroom(tmp_path):
    max_body = 20_000
    api = FakeApi(max_body=max_body, advertise={"max_body_bytes": max_body})
    jr, up = make(tmp_path, api)
    jr.record(samples(30, size=3000))
    assert up.flush() == 30
    assert all(size <= 0.9 * max_body for size in api.sizes)
    assert len(api.bodies) == math.ceil(30 / 5)  # ~3.1 kB each: 5 fit in 18 kB
    assert jr.counts()["accepted"] == 30


def test_lower_unadvertised_sample_cap_splits_instead_of_rejecting(tmp_path):
    # (a) An older server with THINKPOOL_MAX_SAMPLES_PER_UPLOAD=64 and no limits in /me/.
    api = FakeApi(cap=64)
    jr, up = make(tmp_path, api)
    jr.record(samples(300))
    assert up.flush() == 300
    assert jr.counts() == {"pending": 0, "accepted": 300, "duplicate": 0, "rejected": 0}
    # The 400 named the cap: the batch went up in chunks of 64, and so did the next batches.
    assert api.counts() == [256, 64, 64, 64, 64, 44]


def test_body_too_large_splits_in_halves_and_learns(tmp_path):
    # (b) 256 long samples exceed the body cap of a server that doesn't advertise it.
    api = FakeApi(max_body=100_000)
    jr, up = make(tmp_path, api)
    jr.record(samples(256, size=1000))  # ~1.1 kB each: ~90 fit
    assert up.flush() == 256
    assert jr.counts() == {"pending": 0, "accepted": 256, "duplicate": 0, "rejected": 0}
    assert up.stats.rejected == 0
    first = api.sizes.index(next(s for s in api.sizes if s <= 100_000))
    assert first > 0  # 413s first, then smaller batches
    jr.record(samples(100, lease="2", size=1000))
    before = len(api.sizes)
    up.flush()
    assert all(s <= 100_000 for s in api.sizes[before:])  # later batches fit at once


def test_a_single_sample_too_large_alone_is_rejected_with_reason(tmp_path):
    api = FakeApi(max_body=10_000)
    jr, up = make(tmp_path, api)
    small = samples(3, size=100)
    huge = samples(1, size=50_000)
    jr.record(small[:1] + huge + small[1:])
    up.flush()
    got = jr.get(huge[0].client_id)
    assert got.state == j.REJECTED and got.error_code == "body_too_large"
    assert "bytes" in got.error_message
    assert all(jr.get(s.client_id).state == j.ACCEPTED for s in small)


@pytest.mark.parametrize("status", [503, 500, 502, 429, 408])
def test_server_trouble_after_retries_leaves_samples_pending(tmp_path, status):
    # (c) Retries ran out (or Ctrl-C aborted them): nothing is marked rejected.
    api = FakeApi(status=[status, status, 200, 200])
    jr, up = make(tmp_path, api, policy=RetryPolicy(max_attempts=2, base_s=0, cap_s=0))
    batch = samples(3)
    jr.record(batch)
    with pytest.raises(UploadPostponed):
        up.flush()
    assert jr.counts() == {"pending": 3, "accepted": 0, "duplicate": 0, "rejected": 0}
    assert up.stats.rejected == 0
    assert up.flush() == 3  # the server is back: they go up
    assert jr.counts()["accepted"] == 3


def test_stop_during_an_outage_leaves_samples_pending(tmp_path):
    api = FakeApi(status=503)
    policy = RetryPolicy(abort=lambda: True)  # Ctrl-C: give up at the first failure
    jr, up = make(tmp_path, api, policy=policy)
    jr.record(samples(4))
    with pytest.raises(UploadPostponed):
        up.flush()
    assert jr.counts()["pending"] == 4


def test_connection_error_leaves_samples_pending(tmp_path):
    api = FakeApi(status=httpx.ConnectError("refused"))
    jr, up = make(tmp_path, api)
    jr.record(samples(2))
    with pytest.raises(ServerUnreachable):
        up.flush()
    assert jr.counts()["pending"] == 2


def test_concurrent_upload_race_that_persists_is_postponed(tmp_path, monkeypatch):
    monkeypatch.setattr(uploader_mod.time, "sleep", lambda s: None)

    def racing(request):
        if request.url.path == "/api/v1/me/":
            return httpx.Response(200, json={})
        return httpx.Response(409, json={"error": {"code": "concurrent_upload", "message": "r"}})

    jr, up = make(tmp_path, racing)
    jr.record(samples(2))
    with pytest.raises(UploadPostponed):
        up.flush()
    assert jr.counts()["pending"] == 2


def test_revoked_token_raises_and_leaves_samples_pending(tmp_path):
    api = FakeApi(status=401)
    jr, up = make(tmp_path, api)
    jr.record(samples(2))
    with pytest.raises(AuthError):
        up.flush()
    assert jr.counts()["pending"] == 2


def test_gone_lease_without_prompt_ids_is_set_aside_and_others_still_go(tmp_path, caplog):
    api = FakeApi(lease_status=404)
    jr, up = make(tmp_path, api)
    stuck = samples(2, lease="1", prompt=None)
    jr.record(stuck)
    offline = samples(2, lease=None, prompt="9")
    for s in offline:
        s.item_id = None
    jr.record(offline)
    with caplog.at_level(logging.ERROR, logger="thinkpool.worker"):
        assert up.flush() == 2
    assert all(jr.get(s.client_id).state == j.PENDING for s in stuck)
    assert all(jr.get(s.client_id).state == j.ACCEPTED for s in offline)
    assert "1" in up.set_aside
    assert "lease 1" in caplog.text and "next start" in caplog.text
    sent = len(api.bodies)
    up.flush()
    assert len(api.bodies) == sent  # not retried (and not logged) again this run


def test_gone_lease_moves_all_its_samples_with_prompt_ids(tmp_path):
    api = FakeApi(lease_status=404, advertise={"max_samples_per_upload": 2})
    jr, up = make(tmp_path, api)
    jr.record(samples(1, prompt=None) + samples(4))
    up.flush()
    c = jr.counts()
    assert (c["accepted"], c["pending"], c["rejected"]) == (4, 1, 0)


def test_other_whole_request_refusal_sets_destination_aside(tmp_path):
    api = FakeApi(status=415)
    jr, up = make(tmp_path, api)
    jr.record(samples(2, lease="1"))
    jr.record(samples(2, lease="2"))
    assert up.flush() == 0
    assert set(up.set_aside) == {"1", "2"}  # each tried once, no spinning
    assert jr.counts()["pending"] == 4 and jr.counts()["rejected"] == 0


def test_unencodable_sample_is_rejected_locally(tmp_path):
    api = FakeApi()
    jr, up = make(tmp_path, api)
    bad = samples(1)[0]
    bad.payload["generation_ms"] = float("nan")
    good = samples(2)
    jr.record([bad, *good])
    assert up.flush() == 3
    assert jr.get(bad.client_id).error_code == "unencodable"
    assert jr.counts()["accepted"] == 2


def test_journal_pending_skips_destinations(tmp_path):
    jr = Journal(tmp_path / "j.db")
    jr.record(samples(1, lease="1") + samples(1, lease=None) + samples(1, lease="2"))
    assert jr.pending(skip=["1"])[0].lease_id is None
    assert jr.pending(skip=["1", None])[0].lease_id == "2"
    assert jr.pending(skip=["1", None, "2"]) == []


# --- the runner around it ------------------------------------------------------------------


def make_runner(tmp_path, api, **opts):
    http = httpx.Client(transport=httpx.MockTransport(api))
    server = ServerClient(http, "http://tp", "tp_x", policy=RetryPolicy(max_attempts=1))
    jr = Journal(tmp_path / "j.db")
    runner = Runner(
        server=server,
        backend=None,
        journal=jr,
        node_id="1",
        model="Qwen/Qwen3-8B",
        options=RunOptions(**opts),
    )
    return jr, runner


def test_final_upload_during_an_outage_keeps_samples_for_next_start(tmp_path, caplog):
    jr, runner = make_runner(tmp_path, FakeApi(status=503), final_upload_budget_s=0)
    jr.record(samples(3))
    with caplog.at_level(logging.WARNING, logger="thinkpool.worker"):
        runner._final_flush()
    assert jr.counts() == {"pending": 3, "accepted": 0, "duplicate": 0, "rejected": 0}
    assert "3 samples are still waiting" in caplog.text


class ChattyBackend:
    """Returns more generations than asked, under its own model id."""

    batch_size = 1
    max_parallel = 1

    def generate_batch(self, requests, on_result):
        for i, r in enumerate(requests):
            gen = Generation("a", None, "stop", 1, 1, 5, "qwen3:8b-q4")
            on_result(i, [gen] * (r.n - 1))
            on_result(i, [gen] * 3)


def test_runner_records_at_most_n_per_item_under_the_lease_model(tmp_path):
    jr, runner = make_runner(tmp_path, FakeApi())
    runner.backend = ChattyBackend()
    item = {
        "id": 7,
        "prompt": {"id": 9, "messages": [{"role": "user", "content": "hi"}]},
        "sampling": {"temperature": 0.6, "n": 4},
    }
    runner._generate_unit("3", [item], "Qwen/Qwen3-8B")
    rows = jr.all()
    assert len(rows) == 4
    assert {r.payload["model"] for r in rows} == {"Qwen/Qwen3-8B"}
    assert {r.payload["sampling"]["backend_model"] for r in rows} == {"qwen3:8b-q4"}

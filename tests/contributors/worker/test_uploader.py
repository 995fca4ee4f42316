import json

import httpx

from contributors.worker import journal as j
from contributors.worker.journal import Journal, JournalSample
from contributors.worker.net import RetryPolicy, ServerClient
from contributors.worker.uploader import Uploader


class FakeApi:
    """Records upload bodies; answers like the upload API (duplicates for ids seen before)."""

    def __init__(self, reject=(), lease_status=200):
        self.bodies = []
        self.stored = {}
        self.reject = set(reject)
        self.lease_status = lease_status

    def __call__(self, request):
        body = json.loads(request.content)
        self.bodies.append((request.url.path, body))
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


def make(tmp_path, api):
    http = httpx.Client(transport=httpx.MockTransport(api))
    server = ServerClient(http, "http://tp", "tp_x", policy=RetryPolicy(max_attempts=1))
    jr = Journal(tmp_path / "j.db")
    return jr, Uploader(server, jr)


def samples(n, lease="1", prompt="9"):
    return [
        JournalSample(j.new_client_id(), lease, str(i + 1), prompt, {"completion": str(i)})
        for i in range(n)
    ]


def test_batches_of_at_most_256_and_states_recorded(tmp_path):
    api = FakeApi()
    jr, up = make(tmp_path, api)
    jr.record(samples(300))
    assert up.flush() == 300
    assert [len(b["samples"]) for _, b in api.bodies] == [256, 44]
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

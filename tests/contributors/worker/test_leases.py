"""Leases a crowd cannot strand, from the worker's side, against a live Thinkpool server: the
key of a lease request is journaled before it is sent and reused by its retries; a start
releases the node's live leases that no run holds (an answer lost to a timeout or kill -9);
heartbeats name the lease being worked on, and a lease the server no longer keeps is dropped."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from contributors.models import Lease, LeaseState, Slot
from contributors.worker.backends import Generation, GenRequest, OnResult
from contributors.worker.errors import ApiError
from contributors.worker.journal import Journal
from contributors.worker.net import RetryPolicy, ServerClient
from contributors.worker.runner import Runner, RunOptions
from tests.factories import NodeFactory, PromptFactory, PromptSetFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "org/model-a"  # what NodeFactory registers
FAST = RetryPolicy(base_s=0.01, cap_s=0.05, max_attempts=3)


@dataclass
class Setup:
    url: str
    token: str
    user: Any
    node: Any
    prompt_set: Any
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, transport: httpx.BaseTransport | None = None) -> ServerClient:
        http = httpx.Client(transport=transport or httpx.HTTPTransport())
        # Closed at the end of the test: a kept-alive connection keeps the live server's
        # handler thread, and its database connection, open past the test.
        self.clients.append(http)
        return ServerClient(http, self.url, self.token, policy=FAST)

    def outstanding(self) -> int:
        return sum(s.outstanding for s in Slot.objects.filter(prompt_set=self.prompt_set))


@pytest.fixture
def setup(live_server: Any) -> Iterator[Callable[..., Setup]]:
    made: list[Setup] = []

    def make(*, prompts: int = 8, spp: int = 2) -> Setup:
        from contributors.services import issue_token

        user = UserFactory(username="leaser")
        _, raw = issue_token(user=user)
        node = NodeFactory(owner=user, name="box")
        ps = PromptSetFactory(name="leases", samples_per_prompt=spp, lease_seconds=600)
        PromptFactory.create_batch(prompts, prompt_set=ps)
        made.append(Setup(live_server.url, raw, user, node, ps))
        return made[-1]

    yield make
    for env in made:
        for http in env.clients:
            http.close()


def make_runner(
    env: Setup, journal: Journal, *, backend: Any = None, client: ServerClient | None = None
) -> Runner:
    runner = Runner(
        server=client or env.client(),
        backend=backend,
        journal=journal,
        node_id=str(env.node.pk),
        model=MODEL,
        options=RunOptions(max_prompts=2, concurrency=1, final_upload_budget_s=5),
    )
    runner.live_policy = FAST
    runner.uploader.policy = FAST
    return runner


class Backend:
    """Generates every sample asked for; ``hook(call_number)`` runs before each item, as a
    heartbeat or a stop would arrive while the model works."""

    batch_size = 1
    max_parallel = 1

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        self.calls = 0
        self.hook = hook

    def generate_batch(self, requests: list[GenRequest], on_result: OnResult) -> None:
        self.calls += 1
        if self.hook is not None:
            try:
                self.hook(self.calls)
            finally:
                connection.close()  # this thread's own database connection, if it made one
        for i, r in enumerate(requests):
            on_result(i, [Generation("<think>t</think> 4", None, "stop", 3, 2, 5, MODEL)] * r.n)


# --- a lease whose answer was lost -----------------------------------------------------------


def test_orphan_leases_are_released_at_the_next_start_and_their_slots_return(setup, tmp_path):
    env = setup(prompts=10)
    journal = Journal(tmp_path / "j.db")
    client = env.client()
    node = str(env.node.pk)
    # A previous run journaled its key and was killed before journaling the answer: the
    # server made the lease, the worker never learnt its id.
    lost = client.lease(node, MODEL, 2, key=journal.begin_lease_request(node, MODEL))
    # Three more the journal never heard of (a deleted journal, an older worker).
    strays = [client.lease(node, MODEL, 2) for _ in range(3)]
    # Another node of the same contributor is none of this worker's business.
    other = NodeFactory(owner=env.user, name="other-box")
    theirs = client.lease(str(other.pk), MODEL, 1)
    assert lost is not None and theirs is not None and all(strays)
    assert env.outstanding() == 4 * 2 * 2 + 2
    # The node is at its cap of live leases: today that is a 409 on the next request.
    with pytest.raises(ApiError) as refused:
        client.lease(node, MODEL, 2)
    assert refused.value.status == 409

    runner = make_runner(env, journal)
    runner.recover()

    mine = [lost["id"], *(s["id"] for s in strays)]
    assert set(Lease.objects.filter(pk__in=mine).values_list("state", flat=True)) == {
        LeaseState.RELEASED
    }
    assert Lease.objects.get(pk=theirs["id"]).state == LeaseState.LIVE
    assert env.outstanding() == 2  # only the other node's lease still holds slots
    assert journal.lease_requests() == []  # the key is settled
    # Work flows again: the freed slots are leased to this node.
    fresh = runner.request_lease()
    assert fresh is not None and len(fresh["items"]) == 2
    assert [x["id"] for x in journal.open_leases()] == [fresh["id"]]


def test_a_key_whose_request_never_reached_the_server_is_dropped(setup, tmp_path):
    env = setup()
    journal = Journal(tmp_path / "j.db")
    journal.begin_lease_request(str(env.node.pk), MODEL)  # killed before sending it
    runner = make_runner(env, journal)
    assert runner.reconcile_leases() == 0
    assert journal.lease_requests() == []
    assert Lease.objects.count() == 0


def test_a_lease_the_journal_closed_but_the_server_still_holds_is_released(setup, tmp_path):
    env = setup()
    journal = Journal(tmp_path / "j.db")
    runner = make_runner(env, journal)
    lease = runner.request_lease()
    assert lease is not None
    journal.close_lease(str(lease["id"]))  # e.g. killed after closing, before releasing
    assert runner.reconcile_leases() == 1
    assert Lease.objects.get(pk=lease["id"]).state == LeaseState.RELEASED
    assert env.outstanding() == 0


class LoseFirstLeaseAnswer(httpx.BaseTransport):
    """Forwards to the real server; the first lease answer is lost after the server committed
    it (a client timeout). Also checks that each request's key was journaled before it left."""

    def __init__(self, journal_path: Path, then: Callable[[], None] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.journal_path = journal_path
        self.then = then  # runs after the answer is lost, before the retry
        self.keys: list[str] = []
        self.journaled: list[bool] = []

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/v1/leases/":
            key = json.loads(request.content)["key"]
            self.keys.append(key)
            db = sqlite3.connect(self.journal_path)
            try:
                found = db.execute("SELECT 1 FROM lease_requests WHERE key = ?", (key,)).fetchone()
            finally:
                db.close()
            self.journaled.append(found is not None)
            response = self.inner.handle_request(request)
            if len(self.keys) == 1:
                response.read()
                response.close()
                if self.then is not None:
                    self.then()
                raise httpx.ReadTimeout("the answer was lost", request=request)
            return response
        return self.inner.handle_request(request)


def test_a_lost_answer_is_retried_under_the_same_key_and_makes_one_lease(setup, tmp_path):
    env = setup()
    journal = Journal(tmp_path / "j.db")
    transport = LoseFirstLeaseAnswer(tmp_path / "j.db")
    runner = make_runner(env, journal, client=env.client(transport))

    lease = runner.request_lease()

    assert lease is not None
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    assert len(transport.keys[0]) == 32  # a uuid4 hex
    assert transport.journaled == [True, True]  # committed before each attempt went out
    assert list(Lease.objects.values_list("pk", "key")) == [(lease["id"], transport.keys[0])]
    assert lease["key"] == transport.keys[0] and len(lease["items"]) == 2
    assert env.outstanding() == 2 * 2  # booked once
    assert [x["id"] for x in journal.open_leases()] == [lease["id"]]
    assert journal.lease_requests() == []


def test_a_retry_that_finds_its_lease_expired_asks_again_under_a_new_key(setup, tmp_path):
    env = setup()
    journal = Journal(tmp_path / "j.db")

    def expire() -> None:  # the retry came too late: the lease it made has expired
        Lease.objects.update(deadline=timezone.now() - timedelta(seconds=1))

    transport = LoseFirstLeaseAnswer(tmp_path / "j.db", then=expire)
    runner = make_runner(env, journal, client=env.client(transport))

    lease = runner.request_lease()

    assert lease is not None and lease["state"] == "live" and len(lease["items"]) == 2
    first, again, fresh = transport.keys
    assert first == again != fresh
    made = dict(Lease.objects.values_list("key", "pk"))
    assert set(made) == {first, fresh} and lease["id"] == made[fresh]
    assert journal.lease_states() == {str(made[first]): "closed", str(made[fresh]): "open"}
    assert journal.lease_requests() == []


def test_no_work_and_a_refusal_store_no_key(setup, tmp_path):
    env = setup(prompts=0)
    journal = Journal(tmp_path / "j.db")
    runner = make_runner(env, journal)
    assert runner.request_lease() is None  # 204
    assert journal.lease_requests() == []
    runner.model = "org/not-registered"
    with pytest.raises(ApiError) as exc:
        runner.request_lease()
    assert exc.value.status == 400 and exc.value.code == "model_not_served"
    assert journal.lease_requests() == []
    assert journal.open_leases() == []


# --- heartbeats ------------------------------------------------------------------------------


def test_heartbeat_extends_only_the_lease_being_worked_on(setup, tmp_path):
    env = setup()
    journal = Journal(tmp_path / "j.db")
    orphan = env.client().lease(str(env.node.pk), MODEL, 2)  # nobody's, as far as a run knows
    assert orphan is not None
    soon = timezone.now() + timedelta(seconds=30)
    seen: dict[str, Any] = {}

    def heartbeat_mid_work(call: int) -> None:
        if call == 1:
            Lease.objects.update(deadline=soon)  # both leases near their end
            runner.heartbeat(RetryPolicy(max_attempts=1))
            seen["deadline"] = runner._deadline

    runner = make_runner(env, journal, backend=Backend(heartbeat_mid_work))
    lease = runner.request_lease()
    assert lease is not None
    runner.process_lease(lease)

    held = Lease.objects.get(pk=lease["id"])
    assert held.state == LeaseState.DONE  # every sample went up
    assert held.deadline > soon + timedelta(seconds=500)  # extended by its lease_seconds
    assert seen["deadline"] == held.deadline.timestamp()  # the worker took the new deadline
    stray = Lease.objects.get(pk=orphan["id"])
    assert stray.state == LeaseState.LIVE and stray.deadline == soon  # not extended


def test_a_lease_the_server_expired_is_dropped_from_work(setup, tmp_path, caplog):
    env = setup()
    journal = Journal(tmp_path / "j.db")

    def expire_then_heartbeat(call: int) -> None:
        if call == 1:
            Lease.objects.update(deadline=timezone.now() - timedelta(seconds=1))
            runner.heartbeat(RetryPolicy(max_attempts=1))

    backend = Backend(expire_then_heartbeat)
    runner = make_runner(env, journal, backend=backend)
    lease = runner.request_lease()
    assert lease is not None and len(lease["items"]) == 2
    with caplog.at_level(logging.INFO, logger="thinkpool.worker"):
        runner.process_lease(lease)

    assert backend.calls == 1  # the second item was never started
    assert f"lease {lease['id']} is expired on the server" in caplog.text
    assert "released" not in caplog.text  # nothing to release: the server took it back
    # The item finished before the expiry still went up, as a late result.
    assert journal.counts()["accepted"] == 2
    assert journal.open_leases() == []


def test_heartbeat_between_leases_names_none_and_extends_nothing(setup, tmp_path):
    env = setup()
    journal = Journal(tmp_path / "j.db")
    orphan = env.client().lease(str(env.node.pk), MODEL, 2)
    assert orphan is not None
    before = Lease.objects.get(pk=orphan["id"]).deadline
    runner = make_runner(env, journal)
    runner.heartbeat(RetryPolicy(max_attempts=1))
    env.node.refresh_from_db()
    assert env.node.last_heartbeat is not None  # liveness recorded
    assert Lease.objects.get(pk=orphan["id"]).deadline == before


# --- what a release says ---------------------------------------------------------------------


def test_release_log_counts_samples_and_items(setup, tmp_path, caplog):
    env = setup(prompts=4, spp=3)

    def stop_after_first(call: int) -> None:
        runner.stopper.stop("test")

    runner = make_runner(env, Journal(tmp_path / "j.db"), backend=Backend(stop_after_first))
    runner.opts.max_prompts = 4
    lease = runner.request_lease()
    assert lease is not None and len(lease["items"]) == 4
    with caplog.at_level(logging.INFO, logger="thinkpool.worker"):
        runner.process_lease(lease)

    # One item of 3 samples generated; 3 items of 3 samples each go back.
    assert f"released 9 unstarted samples (3 items) of lease {lease['id']}" in caplog.text
    assert Lease.objects.get(pk=lease["id"]).state == LeaseState.RELEASED
    assert env.outstanding() == 0
    assert sum(s.filled for s in Slot.objects.filter(prompt_set=env.prompt_set)) == 3

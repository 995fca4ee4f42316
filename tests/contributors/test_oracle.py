"""Verdicts are not an oracle: no sequence of uploads tells a contributor a prompt's gold faster
than solving it (DESIGN.md; the rule lives in scoring/disclosure.py, the caps in
contributors/services.py).

An adversary guesses every answer: at most `samples_per_prompt` guesses per (contributor,
prompt, model, temperature) are stored and judged, and while the prompt is open nothing they
can read (sample detail, /me/, /stats/, upload answers, lease detail) differs between the
right guess and a wrong one, or changes when the scoring runs. Once the prompt is closed, the
real verdicts are shown.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connections, transaction

from contributors.models import Lease, LeaseItem, Slot
from scoring import pipeline
from scoring.models import Domain, Prompt, PromptSet, Sample, SampleStatus, Verdict
from scoring.services import close_prompts, retire_prompt_set
from tests.conftest import client_for
from tests.factories import (
    NodeFactory,
    PromptFactory,
    PromptSetFactory,
    UserFactory,
    sample_payload,
)

REASONING = (
    "<think>We add the two numbers carefully, digit by digit, carrying where needed, and then "
    "check the sum a second time before we answer.</think> "
)
MATH_PROMPT = [{"role": "user", "content": "Please add one hundred and thirty-seven to zero."}]
GOLD = 137
N = 2  # samples_per_prompt

# Fields that differ between any two samples whatever their judgement.
PER_SAMPLE = {"id", "client_id", "received_at"}


def guess(value: object) -> str:
    return REASONING + f"So the answer is \\boxed{{{value}}}."


def offline(prompt: Prompt, completion: str, **overrides: Any) -> dict[str, Any]:
    payload = sample_payload(0, prompt=prompt.pk, completion=completion, **overrides)
    del payload["item"]
    return payload


def without(body: dict[str, Any], keys: set[str] = PER_SAMPLE) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def me_of(api) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = api.get("/api/v1/me/").json()
    # Their nodes' ids and names differ by construction; every number of them is compared.
    for node in body["reputation"]["nodes"]:
        del node["id"], node["name"]
    return without(body, {"username", "handle"})


def stats(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    cache.clear()  # the public stats are cached for 30 s
    return client.get("/api/v1/stats/").json()


def score_all() -> None:
    for pk in Sample.objects.order_by("pk").values_list("pk", flat=True):
        pipeline.score_sample(sample_id=pk)


def rejections(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["error"]["code"], r["error"]["message"]) for r in body["rejected"]]


@pytest.fixture
def math_prompt(db: Any) -> Prompt:
    prompt_set = PromptSetFactory(name="oracle-math", samples_per_prompt=N, temperatures=[0.6])
    return PromptFactory(prompt_set=prompt_set, messages=MATH_PROMPT, gold=str(GOLD))


def lease_one(api, node) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 1},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


# --- (a) 384 guesses at a math answer -----------------------------------------------------


@pytest.mark.django_db
def test_guessing_every_math_answer_stores_n_and_reveals_nothing(
    api, other_api, node, other_user, math_prompt, client
):
    # Room for two contributors' samples per slot, so another one can lease the prompt too.
    PromptSet.objects.filter(pk=math_prompt.prompt_set_id).update(replication=2)
    order = [GOLD, 0] + [k for k in range(384) if k not in (GOLD, 0)]
    lease = lease_one(api, node)
    item = lease["items"][0]
    assert item["sampling"]["n"] == N

    # Through the lease: the item takes n, the rest is `item_full`.
    by_lease = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(item["id"], completion=guess(k)) for k in order[:256]]},
        format="json",
    ).json()
    assert len(by_lease["accepted"]) == N
    assert {code for code, _ in rejections(by_lease)} == {"item_full"}
    right_id, wrong_id = (a["id"] for a in by_lease["accepted"])

    # Offline, for the same prompt, model and temperature: the cap is already reached.
    by_prompt = api.post(
        "/api/v1/samples/",
        {"samples": [offline(math_prompt, guess(k)) for k in order[256:]]},
        format="json",
    ).json()
    assert by_prompt["accepted"] == []
    assert set(rejections(by_prompt)) == {
        (
            "per_prompt_cap",
            f"You already have {N} samples for this prompt, model and temperature; "
            "that is all the plan asks of one contributor.",
        )
    }
    # Trying again later changes nothing: the cap counts what is stored.
    assert Lease.objects.get(pk=lease["id"]).state == "done"
    again = api.post(
        "/api/v1/samples/",
        {"samples": [offline(math_prompt, guess(k)) for k in order[2:10]]},
        format="json",
    ).json()
    assert {code for code, _ in rejections(again)} == {"per_prompt_cap"}

    # Another contributor makes two wrong guesses.
    other_node = NodeFactory(owner=other_user)
    their_lease = lease_one(other_api, other_node)
    theirs = other_api.post(
        f"/api/v1/leases/{their_lease['id']}/samples/",
        {
            "samples": [
                sample_payload(their_lease["items"][0]["id"], completion=guess(k)) for k in (1, 2)
            ]
        },
        format="json",
    ).json()
    their_ids = [a["id"] for a in theirs["accepted"]]
    assert len(their_ids) == N

    assert Sample.objects.filter(contributor__username="alice").count() == N
    assert Sample.objects.filter(prompt=math_prompt).count() == 2 * N

    def everything_readable() -> dict[str, Any]:
        return {
            "right": api.get(f"/api/v1/samples/{right_id}/").json(),
            "wrong": api.get(f"/api/v1/samples/{wrong_id}/").json(),
            "theirs": [other_api.get(f"/api/v1/samples/{i}/").json() for i in their_ids],
            "me": me_of(api),
            "their_me": me_of(other_api),
            "lease": api.get(f"/api/v1/leases/{lease['id']}/").json(),
            "their_lease": other_api.get(f"/api/v1/leases/{their_lease['id']}/").json(),
            "stats": stats(client),
        }

    before = everything_readable()
    score_all()
    # The judgement exists: the right guess is verified, the wrong ones rejected by `math`.
    assert Sample.objects.get(pk=right_id).status == SampleStatus.VERIFIED
    assert Verdict.objects.get(sample_id=right_id, verifier="math").status == "pass"
    for pk in [wrong_id, *their_ids]:
        sample = Sample.objects.get(pk=pk)
        assert (sample.status, sample.status_reason) == (SampleStatus.REJECTED, "math: fail")
    after = everything_readable()

    # Scoring changed nothing the contributors can read (no timing channel either).
    assert after == before
    # The right guess and a wrong one read the same, apart from their ids.
    right, wrong = after["right"], after["wrong"]
    assert without(right) == without(wrong)
    assert all(without(t) == without(wrong) for t in after["theirs"])
    assert (right["disclosed"], right["status"], right["status_reason"]) == (
        False,
        "accepted",
        "correctness is disclosed when the prompt closes",
    )
    assert "math" not in {v["verifier"] for v in right["verdicts"]}
    # So do the accounts of someone who guessed right and someone who did not.
    assert after["me"] == after["their_me"]
    assert after["me"]["samples"]["awaiting_disclosure"] == N
    assert after["me"]["samples"]["disclosed"]["verified"] == 0
    assert after["stats"]["samples_by_status"] == {
        "awaiting_disclosure": 2 * N,
        "received": 0,
        "scoring": 0,
        "verified": 0,
        "rejected": 0,
        "error": 0,
    }
    # And so do the answers to the uploads.
    assert [without(a, {"client_id", "id"}) for a in by_lease["accepted"]] == [{}, {}]


# --- (b) a multiple-choice prompt ------------------------------------------------------------


@pytest.mark.django_db
def test_guessing_every_choice_stores_n_and_reveals_nothing(api):
    mcq = PromptSetFactory(domain=Domain.MCQ, samples_per_prompt=N)
    prompt = PromptFactory(
        prompt_set=mcq,
        messages=[{"role": "user", "content": "Which letter comes third? (A) a (B) b (C) c"}],
        gold="C",
    )
    answer = api.post(
        "/api/v1/samples/",
        {"samples": [offline(prompt, guess(letter)) for letter in "CABDE"]},
        format="json",
    ).json()
    assert len(answer["accepted"]) == N
    assert [code for code, _ in rejections(answer)] == ["per_prompt_cap"] * 3
    right_id, wrong_id = (a["id"] for a in answer["accepted"])

    before = [api.get(f"/api/v1/samples/{pk}/").json() for pk in (right_id, wrong_id)]
    me_before = me_of(api)
    score_all()
    assert Sample.objects.get(pk=right_id).status == SampleStatus.VERIFIED
    assert Sample.objects.get(pk=wrong_id).status == SampleStatus.REJECTED
    right, wrong = (api.get(f"/api/v1/samples/{pk}/").json() for pk in (right_id, wrong_id))
    assert [right, wrong] == before
    assert me_of(api) == me_before
    assert without(right) == without(wrong)
    assert right["status"] == "accepted"


# --- gold-free checks are shown at once, computed from the text ------------------------------


@pytest.mark.django_db
def test_a_failed_gold_free_check_is_shown_while_the_prompt_is_open(api, math_prompt):
    answer = api.post(
        "/api/v1/samples/",
        {
            "samples": [
                offline(math_prompt, f"No reasoning at all: \\boxed{{{GOLD}}}"),
                offline(math_prompt, guess(GOLD), finish_reason="length"),
            ]
        },
        format="json",
    ).json()
    no_think, cut = (api.get(f"/api/v1/samples/{a['id']}/").json() for a in answer["accepted"])
    assert (no_think["status"], no_think["status_reason"]) == ("rejected", "format: fail")
    assert (cut["status"], cut["status_reason"]) == ("rejected", "truncation: fail")
    assert {v["verifier"]: v["status"] for v in cut["verdicts"]}["truncation"] == "fail"
    # The same before and after the pipeline, whatever the pipeline said about the answer.
    score_all()
    assert api.get(f"/api/v1/samples/{answer['accepted'][1]['id']}/").json() == cut


# --- (c) after the prompt is closed --------------------------------------------------------


@pytest.mark.django_db
def test_closing_the_prompt_discloses_the_real_verdicts(api, math_prompt, client):
    answer = api.post(
        "/api/v1/samples/",
        {"samples": [offline(math_prompt, guess(k)) for k in (GOLD, 5)]},
        format="json",
    ).json()
    right_id, wrong_id = (a["id"] for a in answer["accepted"])
    score_all()
    assert close_prompts(prompt_ids=[math_prompt.pk]) == 1
    right = api.get(f"/api/v1/samples/{right_id}/").json()
    wrong = api.get(f"/api/v1/samples/{wrong_id}/").json()
    assert (right["disclosed"], right["status"], right["status_reason"]) == (True, "verified", "")
    assert (wrong["disclosed"], wrong["status"], wrong["status_reason"]) == (
        True,
        "rejected",
        "math: fail",
    )
    assert {v["verifier"]: v["status"] for v in wrong["verdicts"]}["math"] == "fail"
    # Statuses only: never details or score.
    assert all(set(v) == {"verifier", "version", "status"} for v in right["verdicts"])
    assert me_of(api)["samples"] == {
        "total": 2,
        "awaiting_disclosure": 0,
        "disclosed": {"received": 0, "scoring": 0, "verified": 1, "rejected": 1, "error": 0},
        "top_reasons": [{"status": "rejected", "reason": "math: fail", "count": 1}],
    }
    assert stats(client)["samples_by_status"]["verified"] == 1
    # Closing again keeps the first date.
    closed_at = Prompt.objects.get(pk=math_prompt.pk).closed_at
    assert close_prompts(prompt_ids=[math_prompt.pk]) == 0
    assert Prompt.objects.get(pk=math_prompt.pk).closed_at == closed_at


# --- (d) offline uploads keep the plan; closed prompts take nothing ---------------------------


def snapshot() -> tuple:
    return (
        Sample.objects.count(),
        Lease.objects.count(),
        LeaseItem.objects.count(),
        tuple(Slot.objects.order_by("pk").values_list("filled", "outstanding")),
        tuple(Lease.objects.order_by("pk").values_list("state", flat=True)),
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        (
            {"sampling": {"temperature": 1.0}},
            "sampling_mismatch",
            "This prompt's set asks for temperature 0.6.",
        ),
        (
            {"model": "evil/model"},
            "model_not_admitted",
            "This prompt's set does not take model 'evil/model'.",
        ),
    ],
)
def test_offline_uploads_keep_the_sets_plan(api, node, overrides, code, message):
    prompt_set = PromptSetFactory(models_allowed=["org/*"], temperatures=[0.6])
    prompt = PromptFactory(prompt_set=prompt_set)
    lease_one(api, node)
    before = snapshot()
    bad = offline(prompt, guess(1), **overrides)
    answer = api.post("/api/v1/samples/", {"samples": [bad]}, format="json").json()
    assert answer["rejected"] == [
        {"client_id": bad["client_id"], "error": {"code": code, "message": message}}
    ]
    assert snapshot() == before


@pytest.mark.django_db
def test_a_closed_prompt_is_never_leased_and_takes_no_uploads(api, node, math_prompt):
    lease = lease_one(api, node)
    item = lease["items"][0]
    close_prompts(prompt_ids=[math_prompt.pk])
    before = snapshot()
    by_lease = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(item["id"], completion=guess(1))]},
        format="json",
    ).json()
    by_prompt = api.post(
        "/api/v1/samples/", {"samples": [offline(math_prompt, guess(1))]}, format="json"
    ).json()
    for answer in (by_lease, by_prompt):
        assert rejections(answer) == [("prompt_closed", "This prompt is closed to collection.")]
    assert snapshot() == before
    # The lease no longer lists it, and no new lease hands it out.
    assert api.get(f"/api/v1/leases/{lease['id']}/").json()["items"] == []
    api.delete(f"/api/v1/leases/{lease['id']}/")
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 4},
        format="json",
    )
    assert response.status_code == 204


@pytest.mark.django_db
def test_other_models_and_temperatures_have_their_own_cap(api, math_prompt):
    prompt_set = math_prompt.prompt_set
    PromptSet.objects.filter(pk=prompt_set.pk).update(temperatures=[0.6, 1.0])
    samples = [
        offline(math_prompt, guess(k), model=model, sampling={"temperature": t})
        for model in ("org/model-a", "org/model-b")
        for t in (0.6, 1.0)
        for k in range(N + 1)
    ]
    answer = api.post("/api/v1/samples/", {"samples": samples}, format="json").json()
    assert len(answer["accepted"]) == 4 * N
    assert [code for code, _ in rejections(answer)] == ["per_prompt_cap"] * 4


@pytest.mark.django_db
def test_leasing_never_asks_for_more_than_the_cap(api, other_api, node, other_user, math_prompt):
    # Two contributors' worth of samples per slot: alice gives her n, the rest is for others.
    PromptSet.objects.filter(pk=math_prompt.prompt_set_id).update(replication=2)
    Slot.objects.all().delete()
    first = lease_one(api, node)
    api.post(
        f"/api/v1/leases/{first['id']}/samples/",
        {
            "samples": [
                sample_payload(first["items"][0]["id"], completion=guess(k)) for k in range(N)
            ]
        },
        format="json",
    )
    assert Slot.objects.get().short_by == N
    body = {"node": node.pk, "model": "org/model-a", "max_prompts": 1}
    assert api.post("/api/v1/leases/", body, format="json").status_code == 204
    theirs = lease_one(other_api, NodeFactory(owner=other_user))
    assert theirs["items"][0]["sampling"]["n"] == N


# --- closing and retiring ----------------------------------------------------------------------


@pytest.mark.django_db
def test_retiring_a_set_closes_its_prompts_and_their_twins_elsewhere():
    retired = PromptSetFactory()
    other = PromptSetFactory()
    mine = PromptFactory.create_batch(3, prompt_set=retired)
    twin = PromptFactory(prompt_set=other, messages=mine[0].messages)
    stranger = PromptFactory(prompt_set=other)
    assert retire_prompt_set(prompt_set=retired) == 4
    assert PromptSet.objects.get(pk=retired.pk).is_active is False
    closed = set(Prompt.objects.filter(closed_at__isnull=False).values_list("pk", flat=True))
    assert closed == {p.pk for p in mine} | {twin.pk}
    assert stranger.pk not in closed


@pytest.mark.django_db
def test_admin_actions_close_prompts_and_retire_sets(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(admin)
    one, two = PromptFactory.create_batch(2, prompt_set=PromptSetFactory())
    response = client.post(
        "/admin/scoring/prompt/",
        {"action": "close_to_collection", "_selected_action": [one.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"1 prompts closed to collection" in response.content
    assert Prompt.objects.get(pk=one.pk).closed_at is not None
    assert Prompt.objects.get(pk=two.pk).closed_at is None
    response = client.post(
        "/admin/scoring/promptset/",
        {"action": "retire", "_selected_action": [two.prompt_set_id]},
        follow=True,
    )
    assert b"1 sets retired (inactive); 1 prompts closed" in response.content
    assert Prompt.objects.get(pk=two.pk).closed_at is not None


# --- (e) concurrent uploads cannot pass the cap together ---------------------------------------


def _race(uploads: list[tuple[Any, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    barrier = threading.Barrier(len(uploads))
    answers: list[dict[str, Any]] = []
    errors: list[str] = []

    def go(api, path: str, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
        try:
            barrier.wait()
            response = api.post(path, body, format="json")
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.content[:200]!r}")
            else:
                answers.append(response.json())
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=go, args=upload) for upload in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    return answers


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_for_one_key_store_at_most_n():
    n = 4
    prompt_set = PromptSetFactory(samples_per_prompt=n)
    user = UserFactory(username="racer")
    for round_ in range(3):
        prompt = PromptFactory(prompt_set=prompt_set)
        # Offline only: no slot exists, so only the profile lock keeps them apart.
        uploads = [
            (
                client_for(user),
                "/api/v1/samples/",
                {"samples": [offline(prompt, guess(f"{round_}-{i}-{j}")) for j in range(n)]},
            )
            for i in range(3)
        ]
        answers = _race(uploads)
        assert sum(len(a["accepted"]) for a in answers) == n
        assert Sample.objects.filter(prompt=prompt, contributor=user).count() == n


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_lease_and_offline_uploads_store_at_most_n():
    n = 3
    prompt_set = PromptSetFactory(samples_per_prompt=n)
    prompt = PromptFactory(prompt_set=prompt_set)
    user = UserFactory(username="racer2")
    node = NodeFactory(owner=user)
    api = client_for(user)
    lease = lease_one(api, node)
    item = lease["items"][0]
    uploads = [
        (
            client_for(user),
            f"/api/v1/leases/{lease['id']}/samples/",
            {"samples": [sample_payload(item["id"], completion=guess(k)) for k in range(n)]},
        ),
        (
            client_for(user),
            "/api/v1/samples/",
            {"samples": [offline(prompt, guess(k + 10)) for k in range(n)]},
        ),
    ]
    answers = _race(uploads)
    assert sum(len(a["accepted"]) for a in answers) == n
    assert Sample.objects.filter(prompt=prompt, contributor=user).count() == n
    slot = Slot.objects.get(prompt=prompt)
    assert slot.filled + slot.outstanding <= slot.target


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_upload_behind_a_close_in_flight_waits_for_it_and_stores_nothing():
    prompt = PromptFactory(prompt_set=PromptSetFactory())
    api = client_for(UserFactory(username="racer3"))
    closing, release = threading.Event(), threading.Event()
    answers: list[dict[str, Any]] = []

    def close() -> None:
        try:
            with transaction.atomic():
                close_prompts(prompt_ids=[prompt.pk])
                closing.set()
                release.wait(timeout=60)
        finally:
            connections.close_all()

    def upload() -> None:
        try:
            body = {"samples": [offline(prompt, guess(GOLD))]}
            answers.append(api.post("/api/v1/samples/", body, format="json").json())
        finally:
            connections.close_all()

    closer = threading.Thread(target=close)
    closer.start()
    assert closing.wait(timeout=60)
    uploader = threading.Thread(target=upload)
    uploader.start()
    # The upload reaches the prompt while the close is not committed yet: it must wait for it
    # (holding the prompt FOR SHARE), not read the prompt as open and store the sample.
    uploader.join(timeout=2)
    release.set()
    closer.join(timeout=60)
    uploader.join(timeout=60)
    assert [rejections(a) for a in answers] == [
        [("prompt_closed", "This prompt is closed to collection.")]
    ]
    assert not Sample.objects.filter(prompt=prompt).exists()

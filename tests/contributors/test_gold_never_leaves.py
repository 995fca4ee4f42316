"""Drive every contributor-facing endpoint and check that no gold answer or hidden test ever
appears in a response: before scoring, after it, and after the prompts are closed (when the
verdicts are disclosed, but still never their details). That verdicts are no oracle for the
gold while a prompt is open is tests/contributors/test_oracle.py."""

from __future__ import annotations

import pytest

from scoring import pipeline
from scoring.models import Domain, Prompt, PromptGold, Sample
from scoring.services import close_prompts
from tests.factories import PromptFactory, PromptSetFactory, sample_payload

pytestmark = pytest.mark.django_db

GOLD_ANSWER = "GOLD-ANSWER-7f3a"
HIDDEN_TEST = "assert candidate(HIDDEN_TEST_91c2)"


def test_no_response_contains_gold(api, node, client):
    math_set = PromptSetFactory(domain=Domain.MATH)
    code_set = PromptSetFactory(domain=Domain.CODE)
    for _ in range(3):
        PromptFactory(prompt_set=math_set, gold=GOLD_ANSWER)
        prompt = PromptFactory(prompt_set=code_set)
        PromptGold.objects.filter(prompt=prompt).update(
            answer="",
            tests={"test": f"def check(candidate):\n    {HIDDEN_TEST}\n", "entry_point": "f"},
        )
    bodies: list[bytes] = []

    def record(response):
        bodies.append(response.content)
        return response

    record(api.get("/api/v1/me/"))
    record(api.post(f"/api/v1/nodes/{node.pk}/heartbeat/", {}, format="json"))
    record(api.get("/api/v1/nodes/"))
    lease = record(
        api.post(
            "/api/v1/leases/",
            {"node": node.pk, "model": "org/model-a", "max_prompts": 6},
            format="json",
        )
    ).json()
    assert len(lease["items"]) == 6
    record(api.get(f"/api/v1/leases/{lease['id']}/"))
    upload = record(
        api.post(
            f"/api/v1/leases/{lease['id']}/samples/",
            {"samples": [sample_payload(i["id"]) for i in lease["items"]] + [{"client_id": "x"}]},
            format="json",
        )
    ).json()
    offline = sample_payload(0, prompt=lease["items"][0]["prompt"]["id"])
    del offline["item"]
    record(api.post("/api/v1/samples/", {"samples": [offline]}, format="json"))

    def read_everything() -> None:
        for accepted in upload["accepted"]:
            record(api.get(f"/api/v1/samples/{accepted['id']}/"))
        record(api.get("/api/v1/me/"))
        record(api.get(f"/api/v1/leases/{lease['id']}/"))
        record(client.get("/api/v1/stats/"))

    read_everything()
    for pk in Sample.objects.values_list("pk", flat=True):
        pipeline.score_sample(sample_id=pk)
    read_everything()
    record(api.delete(f"/api/v1/leases/{lease['id']}/"))
    close_prompts(prompt_ids=Prompt.objects.values_list("pk", flat=True))
    read_everything()
    assert any(b'"disclosed":true' in body for body in bodies)
    record(client.get("/api/v1/schema/"))
    record(client.get("/"))
    for body in bodies:
        assert GOLD_ANSWER.encode() not in body
        assert b"HIDDEN_TEST_91c2" not in body

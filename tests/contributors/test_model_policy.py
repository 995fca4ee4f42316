"""Model names are untrusted input: validated, recorded once, capped until reviewed, and
allowed or blocked by maintainers."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site
from django.test import RequestFactory

from contributors.admin import KnownModelAdmin
from contributors.models import ComputeNode, KnownModel, Lease, ModelStatus, Slot
from scoring.models import Sample
from tests.factories import NodeFactory, PromptFactory, PromptSetFactory, sample_payload

pytestmark = pytest.mark.django_db


def _register(api, *model_ids, name="rig"):
    return api.post(
        "/api/v1/nodes/",
        {"name": name, "backend": "openai", "models": [{"id": m} for m in model_ids]},
        format="json",
    )


@pytest.mark.parametrize(
    "model_id",
    ["Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "a/b", "org_1/model.v2"],
)
def test_hugging_face_ids_are_accepted_and_recorded(api, user, model_id):
    assert _register(api, model_id).status_code == 201
    row = KnownModel.objects.get(model_id=model_id)
    assert (row.status, row.introduced_by) == (ModelStatus.UNREVIEWED, user)


@pytest.mark.parametrize(
    "model_id", ["~/models/tiny", "/models/qwen", "./tiny", "C:\\models\\x", "a/b/c"]
)
def test_a_local_path_gets_an_error_naming_served_model_name(api, model_id):
    response = _register(api, model_id)
    assert response.status_code == 400
    message = str(response.json()["error"]["fields"])
    assert "local path" in message and "--served-model-name" in message
    assert ComputeNode.objects.count() == 0
    assert KnownModel.objects.count() == 0


@pytest.mark.parametrize(
    "model_id", ["qwen3:8b", "gpt-4", "org/", "/name", "-org/name", "org/name-", "org/na..me", ""]
)
def test_other_bad_ids_are_a_400_that_changes_nothing(api, model_id):
    response = _register(api, model_id)
    assert response.status_code == 400
    assert ComputeNode.objects.count() == 0
    assert KnownModel.objects.count() == 0


def test_a_lease_for_a_bad_model_id_is_a_400(api, node):
    response = api.post(
        "/api/v1/leases/", {"node": node.pk, "model": "~/x", "max_prompts": 1}, format="json"
    )
    assert response.status_code == 400
    assert "model" in response.json()["error"]["fields"]


def test_a_blocked_model_cannot_register_lease_or_upload(api, node, lease):
    KnownModel.objects.filter(model_id="org/model-a").update(status=ModelStatus.BLOCKED)
    response = _register(api, "org/model-a", name="other")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "model_blocked")
    response = api.post("/api/v1/leases/", {"node": node.pk, "model": "org/model-a"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "model_blocked")
    upload = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        {"samples": [sample_payload(lease["items"][0]["id"])]},
        format="json",
    ).json()
    assert [r["error"]["code"] for r in upload["rejected"]] == ["model_blocked"]
    assert Sample.objects.count() == 0
    assert Lease.objects.count() == 1


def test_an_unreviewed_model_opens_at_most_the_cap_then_nothing_until_allowed(api, node, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "UNREVIEWED_MODEL_MAX_SLOTS": 3}
    prompt_set = PromptSetFactory(samples_per_prompt=1, temperatures=[0.6])
    PromptFactory.create_batch(8, prompt_set=prompt_set)
    lease = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 8},
        format="json",
    ).json()
    assert len(lease["items"]) == 3
    assert Slot.objects.filter(model="org/model-a").count() == 3
    assert KnownModel.objects.get(model_id="org/model-a").slots_opened == 3
    api.delete(f"/api/v1/leases/{lease['id']}/")
    Slot.objects.update(filled=1)
    # Out of allowance: no new slots however often it asks.
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 8},
        format="json",
    )
    assert response.status_code == 204
    assert Slot.objects.filter(model="org/model-a").count() == 3
    KnownModel.objects.filter(model_id="org/model-a").update(status=ModelStatus.ALLOWED)
    lease = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 8},
        format="json",
    ).json()
    assert len(lease["items"]) == 5


def test_a_set_that_names_the_model_is_not_capped(api, node, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "UNREVIEWED_MODEL_MAX_SLOTS": 1}
    prompt_set = PromptSetFactory(samples_per_prompt=1, models_allowed=["org/model-a"])
    PromptFactory.create_batch(4, prompt_set=prompt_set)
    lease = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 4},
        format="json",
    ).json()
    assert len(lease["items"]) == 4


def test_one_contributor_can_introduce_only_so_many_unreviewed_names(api, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_UNREVIEWED_MODELS_PER_USER": 2}
    assert _register(api, "org/a", "org/b", name="one").status_code == 201
    response = _register(api, "org/c", name="two")
    assert (response.status_code, response.json()["error"]["code"]) == (
        400,
        "too_many_unreviewed_models",
    )
    assert ComputeNode.objects.count() == 1
    assert KnownModel.objects.count() == 2
    # Names others introduced, or allowed ones, cost nothing.
    KnownModel.objects.create(model_id="org/known", status=ModelStatus.ALLOWED)
    assert _register(api, "org/known", "org/a", name="three").status_code == 201


def test_admin_actions_allow_and_block(admin_user):
    KnownModel.objects.create(model_id="org/x")
    KnownModel.objects.create(model_id="org/y")
    model_admin = KnownModelAdmin(KnownModel, site)
    request = RequestFactory().post("/")
    request.user = admin_user
    request._messages = _NoMessages()  # type: ignore[attr-defined]
    model_admin.allow(request, KnownModel.objects.filter(model_id="org/x"))
    model_admin.block(request, KnownModel.objects.filter(model_id="org/y"))
    assert dict(KnownModel.objects.values_list("model_id", "status")) == {
        "org/x": ModelStatus.ALLOWED,
        "org/y": ModelStatus.BLOCKED,
    }


class _NoMessages:
    def add(self, *args, **kwargs):
        pass


def test_nodes_of_other_owners_do_not_count_towards_my_names(api, other_user, settings):
    settings.THINKPOOL = {**settings.THINKPOOL, "MAX_UNREVIEWED_MODELS_PER_USER": 1}
    NodeFactory(owner=other_user)
    KnownModel.objects.create(model_id="org/theirs", introduced_by=other_user)
    assert _register(api, "org/mine").status_code == 201

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from contributors.services import issue_token
from tests.factories import NodeFactory, PromptFactory, PromptSetFactory, UserFactory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Mark-driven skips, decided per database so one suite serves both passes.
    vendor = connection.vendor
    for item in items:
        if "postgres" in item.keywords and vendor != "postgresql":
            item.add_marker(
                pytest.mark.skip(reason="needs PostgreSQL (runs in the PostgreSQL pass)")
            )


@pytest.fixture(autouse=True)
def _clear_throttle_cache() -> None:
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def user(db: Any):  # type: ignore[no-untyped-def]
    return UserFactory(username="alice")


@pytest.fixture
def other_user(db: Any):  # type: ignore[no-untyped-def]
    return UserFactory(username="mallory")


def client_for(user: Any) -> APIClient:
    _, raw = issue_token(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def api(user: Any) -> APIClient:
    return client_for(user)


@pytest.fixture
def other_api(other_user: Any) -> APIClient:
    return client_for(other_user)


@pytest.fixture
def node(user: Any):  # type: ignore[no-untyped-def]
    return NodeFactory(owner=user, name="box")


@pytest.fixture
def prompt_set(db: Any):  # type: ignore[no-untyped-def]
    prompt_set = PromptSetFactory(name="arith", samples_per_prompt=2)
    PromptFactory.create_batch(5, prompt_set=prompt_set)
    return prompt_set


@pytest.fixture
def lease(api: APIClient, node: Any, prompt_set: Any) -> dict:
    response = api.post(
        "/api/v1/leases/",
        {"node": node.pk, "model": "org/model-a", "max_prompts": 3},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()

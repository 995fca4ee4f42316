"""Arbitrary JSON against every write endpoint: the answer is always a JSON 4xx or a 2xx,
never a 500, and nothing is stored that the answer does not report."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.models import Sample
from tests.factories import sample_payload

pytestmark = pytest.mark.django_db

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
SAMPLE_FIELDS = list(sample_payload(1))


def mutated_sample(item: int):  # type: ignore[no-untyped-def]
    return st.fixed_dictionaries({}, optional={name: json_values for name in SAMPLE_FIELDS}).map(
        lambda overrides: {**sample_payload(item), **overrides}
    )


def assert_json_4xx_or_2xx(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, response.content[:500]
    if response.status_code != 204:
        json.loads(response.content)


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(body=json_values)
def test_any_json_to_nodes_and_leases(api, node, prompt_set, body):
    for path in ("/api/v1/nodes/", "/api/v1/leases/", f"/api/v1/nodes/{node.pk}/heartbeat/"):
        response = api.post(path, json.dumps(body), content_type="application/json")
        assert_json_4xx_or_2xx(response)


@FUZZ
@given(data=st.data())
def test_any_sample_fields_to_upload(api, lease, data):
    samples = data.draw(st.lists(mutated_sample(lease["items"][0]["id"]), min_size=1, max_size=3))
    before = Sample.objects.count()
    response = api.post(
        f"/api/v1/leases/{lease['id']}/samples/",
        json.dumps({"samples": samples}),
        content_type="application/json",
    )
    assert_json_4xx_or_2xx(response)
    if response.status_code == 200:
        body = response.json()
        assert Sample.objects.count() == before + len(body["accepted"])
        assert len(body["accepted"]) + len(body["duplicates"]) + len(body["rejected"]) == len(
            samples
        )
    else:
        assert Sample.objects.count() == before

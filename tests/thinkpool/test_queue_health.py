"""The staff's queue-health page: what waits, what fails, what is stuck."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from contributors.models import ComputeNode
from scoring.models import Release, Sample, SampleStatus, ScoringOutbox
from scoring.pipeline import POISON_PREFIX
from tests.factories import NodeFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = "/admin/queue-health/"


def sample(status: str, **fields) -> Sample:
    return Sample.objects.create(
        prompt=PromptFactory(),
        contributor=UserFactory(),
        model="org/model-a",
        temperature=0.6,
        completion="x",
        finish_reason="stop",
        status=status,
        **fields,
    )


def test_staff_see_what_waits_fails_and_is_stuck(admin_client):
    for _ in range(3):
        sample(SampleStatus.RECEIVED)
    sample(SampleStatus.SCORING)
    sample(SampleStatus.ERROR, status_reason=POISON_PREFIX + "timed out 5 times")
    sample(SampleStatus.ERROR, next_attempt_at=timezone.now())
    ScoringOutbox.objects.create(sample_ids=[1])
    lost = NodeFactory()
    ComputeNode.objects.filter(pk=lost.pk).update(last_heartbeat=timezone.now() - timedelta(days=1))
    Release.objects.create(
        target="local",
        repo_id="org/<b>data</b>",
        version=1,
        location="/x",
        state="failed",
        error="<script>alert(1)</script>",
    )
    page = admin_client.get(URL).content.decode()
    assert "<tr><td>received</td><td>3</td>" in page
    assert "<tr><td>scoring</td><td>1</td>" in page
    assert '?trouble=poison">1</a>' in page
    assert "verifier errors due for another try</th><td>1</td>" in page
    assert "scoring messages not yet at the broker</th><td>1 (oldest" in page
    assert "nodes lost (no heartbeat)</th><td>1</td>" in page
    assert "org/&lt;b&gt;data&lt;/b&gt;" in page and "<script>alert(1)" not in page


def test_only_staff_may_see_it(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    user = UserFactory(username="contributor")
    user.set_password("pw-123456-long")
    user.save()
    client.force_login(user)
    assert client.get(URL).status_code == 302

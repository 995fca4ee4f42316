"""Whether the sandbox can run here. Without bubblewrap or per-run cgroups (not root, no
delegated cgroup v2) the sandbox tests are skipped, except where THINKPOOL_REQUIRE_SANDBOX=1
(CI, `make test`): there a missing sandbox fails those tests instead of hiding them."""

from __future__ import annotations

import os
from functools import cache

import pytest


@cache
def sandbox_problem() -> str | None:
    from scoring.sandbox import check_available

    return check_available()


@pytest.fixture
def sandbox_available() -> None:
    problem = sandbox_problem()
    if problem is None:
        return
    if os.environ.get("THINKPOOL_REQUIRE_SANDBOX") == "1":
        pytest.fail(f"THINKPOOL_REQUIRE_SANDBOX=1 but the sandbox is unavailable: {problem}")
    pytest.skip(f"the sandbox is unavailable here: {problem}")


requires_sandbox = pytest.mark.usefixtures("sandbox_available")

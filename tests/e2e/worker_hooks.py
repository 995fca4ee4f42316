"""Test-only: a worker started with `celery worker --include tests.e2e.worker_hooks` and
THINKPOOL_TEST_CRASH_VERIFIER=1 in its environment imports this module and registers a
verifier, `crash`, that kills its worker process (os._exit: no reply, no cleanup, as a segfault
or the OOM killer would) when the completion holds CRASH_MARKER, and passes anything else. A
prompt set enables it with verifier_config {"enable": ["crash"]}.

Production code never imports this module; the test process imports it for CRASH_MARKER only,
and without the variable nothing is registered.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from scoring.verifiers import REGISTRY
from scoring.verifiers.base import Outcome, Status

CRASH_MARKER = "CRASH-THE-WORKER"
ENABLE_ENV = "THINKPOOL_TEST_CRASH_VERIFIER"


class CrashVerifier:
    name: ClassVar[str] = "crash"
    version: ClassVar[int] = 1
    max_seconds: ClassVar[float] = 1.0

    def verify(self, candidate: Any, gold: Any, config: Any) -> Outcome:
        if CRASH_MARKER in candidate.completion:
            os._exit(70)
        return Outcome(Status.PASS, 1.0)


if os.environ.get(ENABLE_ENV) == "1":
    REGISTRY.setdefault(CrashVerifier.name, CrashVerifier())

"""`thinkpool-worker status` shows what became of the account's samples, as the server discloses
it: verified / rejected / error / awaiting disclosure and the top reasons, per-sample verdicts
only where the server gives them (prompts closed to collection)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from contributors.worker import config as cfgmod
from contributors.worker.cli import main
from contributors.worker.display import disclosure_lines
from contributors.worker.journal import Journal, JournalSample

ME = {
    "username": "ann",
    "handle": "ann",
    "samples": {
        "total": 12,
        "awaiting_disclosure": 5,
        "disclosed": {"received": 1, "scoring": 0, "verified": 2, "rejected": 3, "error": 1},
        "top_reasons": [
            {"status": "rejected", "reason": "math: fail", "count": 2},
            {"status": "error", "reason": "code: timeout", "count": 1},
            {"status": "rejected", "reason": "format: fail", "count": 1},
        ],
    },
}


def detail(pk: int, disclosed: bool, status: str, reason: str) -> dict[str, Any]:
    return {
        "id": pk,
        "prompt": 90 + pk,
        "disclosed": disclosed,
        "status": status,
        "status_reason": reason,
    }


# Newest first, as the server lists them.
LISTED = [
    detail(6, False, "awaiting_disclosure", "correctness is disclosed when the prompt closes"),
    detail(5, True, "rejected", "math: fail"),
    detail(4, True, "verified", ""),
    detail(3, False, "rejected", "format: fail"),
    detail(2, True, "error", "code: timeout"),
]


class Handler(BaseHTTPRequestHandler):
    lists = True  # False: an older server, without GET /api/v1/samples/
    asked: list[str]

    def do_GET(self) -> None:
        self.asked.append(self.path)
        status: int = 404
        body: Any = {"error": {"code": "not_found", "message": "Not found."}}
        if self.path == "/api/v1/me/":
            status, body = 200, ME
        elif self.path == "/api/v1/samples/?page_size=20":
            if self.lists:
                status, body = 200, {"count": 5, "next": None, "previous": None, "results": LISTED}
            else:
                status, body = 405, {"error": {"code": "method_not_allowed", "message": "No."}}
        elif self.path.startswith("/api/v1/samples/"):
            pk = int(self.path.rstrip("/").rsplit("/", 1)[1])
            found = [d for d in LISTED if d["id"] == pk]
            if found:
                status, body = 200, found[0]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for var in [*cfgmod.ENV_VARS, "THINKPOOL_CONFIG", "THINKPOOL_JOURNAL"]:
        monkeypatch.delenv(var, raising=False)


def start(lists: bool):
    asked: list[str] = []
    handler = type("H", (Handler,), {"lists": lists, "asked": asked})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}", asked


@pytest.fixture
def server():
    srv, url, asked = start(lists=True)
    yield url, asked
    srv.shutdown()


@pytest.fixture
def old_server():
    srv, url, asked = start(lists=False)
    yield url, asked
    srv.shutdown()


def journal_with_uploads(server_ids: list[int]) -> None:
    journal = Journal(cfgmod.journal_path())
    samples = [JournalSample(f"c{pk}", None, None, "9", {"completion": "x"}) for pk in server_ids]
    journal.record(samples)
    for s, pk in zip(samples, server_ids, strict=True):
        journal.mark(s.client_id, "accepted", server_id=str(pk))
    journal.record([JournalSample("c-bad", None, None, "9", {"completion": "y"})])
    journal.mark(
        "c-bad", "rejected", error_code="invalid", error_message="The sample is not valid."
    )
    journal.close()


EXPECTED = [
    "samples:  12 on the server: 2 verified, 3 rejected, 1 error, 1 being judged; "
    "5 awaiting disclosure",
    "          (correctness is disclosed once a prompt closes to collection; before that, only "
    "the text checks: format, truncation, repetition, language)",
    "          top reasons: math: fail (rejected, 2), code: timeout (error, 1), "
    "format: fail (rejected, 1)",
    "recent:   last 5 samples: 1 error, 1 rejected, 1 verified; 1 awaiting disclosure, "
    "1 rejected by a text check",
    "          sample 5 (prompt 95): rejected: math: fail",
    "          sample 3 (prompt 93): rejected by a text check: format: fail",
    "          sample 2 (prompt 92): error: code: timeout",
]


def test_status_shows_verdicts_reasons_and_what_awaits_disclosure(server, capsys):
    url, asked = server
    cfgmod.save({"server": url, "token": "tp_good"})
    journal_with_uploads([1, 2, 3])
    assert main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-len(EXPECTED) :] == EXPECTED
    assert "          0 waiting to upload, 3 uploaded, 0 duplicates, 1 refused at upload" in out
    assert "          refused c-bad: invalid: The sample is not valid." in out
    # One listing, not one request per journaled sample.
    assert asked == ["/api/v1/me/", "/api/v1/samples/?page_size=20"]


def test_status_against_a_server_without_the_sample_list(old_server, capsys):
    url, asked = old_server
    cfgmod.save({"server": url, "token": "tp_good"})
    journal_with_uploads([2, 3, 99])  # 99: the server does not know it
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert (
        "recent:   last 2 samples: 1 error; 0 awaiting disclosure, 1 rejected by a text check"
        in out
    )
    assert "sample 2 (prompt 92): error: code: timeout" in out
    # The journal's latest uploads, newest first, asked one by one.
    assert asked[2:] == ["/api/v1/samples/99/", "/api/v1/samples/3/", "/api/v1/samples/2/"]


def test_older_summary_without_top_reasons_counts_them_over_recent_disclosed_samples():
    summary = {k: v for k, v in ME["samples"].items() if k != "top_reasons"}
    lines = disclosure_lines(summary, LISTED)
    # Only disclosed samples' reasons: the open prompt's format failure is not among them.
    assert "          top reasons (recent): code: timeout (error, 1), math: fail (rejected, 1)" in (
        lines
    )


def test_open_prompt_samples_never_show_more_than_the_server_gave():
    # An older server called an open prompt's passing sample "accepted" with disclosed false.
    lines = disclosure_lines(None, [detail(7, False, "accepted", "")])
    assert lines == ["recent:   last 1 samples: 1 awaiting disclosure, 0 rejected by a text check"]
    assert not any("verified" in line for line in lines)


def test_status_without_a_server_still_shows_the_local_state(capsys):
    cfgmod.save({"server": "http://127.0.0.1:9", "token": "tp_good"})
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "journal:" in out
    assert "samples:  could not ask the server: cannot reach the Thinkpool server" in out


@pytest.mark.django_db(transaction=True)
def test_status_against_a_live_server_discloses_only_closed_prompts(live_server, tmp_path, capsys):
    from django.utils import timezone

    from contributors.services import issue_token
    from scoring.models import Prompt, Sample
    from tests.factories import PromptFactory, PromptSetFactory, UserFactory

    user = UserFactory(username="ann")
    _, token = issue_token(user=user)
    prompts = PromptFactory.create_batch(3, prompt_set=PromptSetFactory(samples_per_prompt=2))
    lines = [
        {
            "prompt": p.pk,
            "completion": f"<think>try {i}</think> {i}",
            "model": "org/model-a",
            "sampling": {"temperature": 0.6},
            "finish_reason": "stop",
        }
        for p in prompts
        for i in range(2)
    ]
    path = tmp_path / "done.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfgmod.save({"server": live_server.url, "token": token})
    assert main(["upload", str(path)]) == 0
    # Scoring judged them; the first prompt has since closed to collection, the others not.
    Sample.objects.filter(prompt=prompts[0]).update(status="rejected", status_reason="math: fail")
    Sample.objects.filter(prompt__in=prompts[1:]).update(status="verified")
    Prompt.objects.filter(pk=prompts[0].pk).update(closed_at=timezone.now())
    capsys.readouterr()

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert (
        "samples:  6 on the server: 0 verified, 2 rejected, 0 error, 0 being judged; "
        "4 awaiting disclosure"
    ) in out
    assert "          top reasons: math: fail (rejected, 2)" in out
    # The open prompts' samples are verified, but that is not disclosed yet: never shown.
    assert "verified" not in out.split("samples:", 1)[1].replace("0 verified", "")
    closed = Sample.objects.filter(prompt=prompts[0]).order_by("-pk")
    for s in closed:
        assert f"sample {s.pk} (prompt {prompts[0].pk}): rejected: math: fail" in out

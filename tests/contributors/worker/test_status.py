"""`thinkpool-worker status` shows what the server discloses about the account's samples:
correctness only for prompts closed to collection, never for open ones."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contributors.worker import config as cfgmod
from contributors.worker.cli import main
from contributors.worker.journal import Journal, JournalSample

ME = {
    "username": "ann",
    "handle": "ann",
    "samples": {
        "total": 7,
        "awaiting_disclosure": 5,
        "disclosed": {"received": 0, "scoring": 0, "verified": 1, "rejected": 1, "error": 0},
    },
}


def detail(pk: int, disclosed: bool, status: str, reason: str) -> dict:
    return {"id": pk, "disclosed": disclosed, "status": status, "status_reason": reason}


DETAILS = {
    1: detail(1, False, "accepted", "correctness is disclosed when the prompt closes"),
    2: detail(2, False, "accepted", "correctness is disclosed when the prompt closes"),
    3: detail(3, False, "rejected", "format: fail"),
    4: detail(4, True, "verified", ""),
    5: detail(5, True, "rejected", "math: fail"),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = 404, {"error": {"code": "not_found", "message": "Not found."}}
        if self.path == "/api/v1/me/":
            status, body = 200, ME
        elif self.path.startswith("/api/v1/samples/"):
            pk = int(self.path.rstrip("/").rsplit("/", 1)[1])
            if pk in DETAILS:
                status, body = 200, DETAILS[pk]
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


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def journal_with_uploads(server_ids: list[int]) -> None:
    journal = Journal(cfgmod.journal_path())
    samples = [JournalSample(f"c{pk}", None, None, "9", {"completion": "x"}) for pk in server_ids]
    journal.record(samples)
    for s, pk in zip(samples, server_ids, strict=True):
        journal.mark(s.client_id, "accepted", server_id=str(pk))
    journal.close()


def test_status_shows_what_the_server_discloses(server, capsys):
    cfgmod.save({"server": server, "token": "tp_good"})
    journal_with_uploads([1, 2, 3, 4, 5, 99])  # 99: the server does not know it
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert (
        "samples:  7 on the server; 5 for open prompts "
        "(correctness is disclosed when a prompt closes)"
    ) in out
    assert "closed prompts: 1 verified, 1 rejected, 0 error, 0 being judged" in out
    assert (
        "recent:   last 5 uploads: 2 accepted (checks pass; correctness not disclosed yet), "
        "1 rejected by checks; on closed prompts 1 rejected, 1 verified"
    ) in out
    assert "top reasons: format: fail (1), math: fail (1)" in out


def test_status_without_a_server_still_shows_the_local_state(capsys):
    cfgmod.save({"server": "http://127.0.0.1:9", "token": "tp_good"})
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "journal:" in out
    assert "samples:  could not ask the server: cannot reach the Thinkpool server" in out

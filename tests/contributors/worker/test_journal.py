import json
import sqlite3
import subprocess
import sys
import textwrap

from contributors.worker import journal as j
from contributors.worker.journal import Journal, JournalSample


def sample(lease="1", item="10", prompt="100", text="x", cid=None):
    return JournalSample(
        client_id=cid or j.new_client_id(),
        lease_id=lease,
        item_id=item,
        prompt_id=prompt,
        payload={"completion": text, "model": "m", "sampling": {"temperature": 0.6}},
    )


def test_record_is_idempotent_by_client_id(tmp_path):
    jr = Journal(tmp_path / "j.db")
    s = sample()
    assert jr.record([s]) == 1
    s2 = sample(cid=s.client_id, text="other")
    assert jr.record([s2]) == 0  # a replayed record never overwrites what was generated
    assert jr.get(s.client_id).payload["completion"] == "x"


def test_pending_is_one_destination_at_a_time_oldest_first(tmp_path):
    jr = Journal(tmp_path / "j.db")
    a = [sample(lease="1", text=f"a{i}") for i in range(3)]
    b = [sample(lease=None, item=None, text="offline")]
    c = [sample(lease="2", text="c")]
    jr.record(a)
    jr.record(b)
    jr.record(c)
    first = jr.pending(256)
    assert [s.payload["completion"] for s in first] == ["a0", "a1", "a2"]
    assert jr.pending(2)[1].payload["completion"] == "a1"
    jr.mark_many((s.client_id, j.ACCEPTED, "9", None, None) for s in first)
    nxt = jr.pending()
    assert [s.lease_id for s in nxt] == [None]
    assert nxt[0].upload_body()["prompt"] == 100  # numeric ids go back as numbers
    assert "item" not in nxt[0].upload_body()
    assert jr.counts() == {"pending": 2, "accepted": 3, "duplicate": 0, "rejected": 0}


def test_upload_body_for_a_lease_carries_item_and_client_id(tmp_path):
    s = sample()
    body = s.upload_body()
    assert body["item"] == 10 and body["client_id"] == s.client_id and "prompt" not in body


def test_rejection_keeps_the_servers_reason(tmp_path):
    jr = Journal(tmp_path / "j.db")
    s = sample()
    jr.record([s])
    jr.mark(s.client_id, j.REJECTED, error_code="invalid", error_message="too long")
    got = jr.get(s.client_id)
    assert (got.state, got.error_code, got.error_message) == ("rejected", "invalid", "too long")
    assert jr.pending() == []


def test_records_survive_kill_9_of_the_writer(tmp_path):
    # A child process records samples and dies with SIGKILL-like abruptness (os._exit, no
    # cleanup, connection never closed): every committed record must be readable afterwards.
    path = tmp_path / "j.db"
    code = textwrap.dedent(
        f"""
        import os
        from contributors.worker.journal import Journal, JournalSample
        jr = Journal({str(path)!r})
        for i in range(50):
            jr.record([JournalSample(f"00000000-0000-4000-8000-{{i:012d}}", "1", str(i), "5",
                                     {{"completion": str(i)}})])
        os.kill(os.getpid(), 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    jr = Journal(path)
    assert jr.counts()["pending"] == 50
    assert {s.payload["completion"] for s in jr.all()} == {str(i) for i in range(50)}


def test_leases_and_item_lookup(tmp_path):
    jr = Journal(tmp_path / "j.db")
    lease = {
        "id": 4,
        "model": "m",
        "deadline": "2030-01-01T00:00:00Z",
        "items": [{"id": 41, "prompt": {"id": 7, "messages": []}}],
    }
    jr.add_lease(lease, "3")
    assert [x["id"] for x in jr.open_leases()] == [4]
    assert jr.find_item("41") == ("4", "7")
    assert jr.find_item("42") is None
    jr.close_lease("4")
    assert jr.open_leases() == []


def test_journal_uses_wal(tmp_path):
    Journal(tmp_path / "j.db")
    mode = sqlite3.connect(tmp_path / "j.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert json.loads("[]") == []

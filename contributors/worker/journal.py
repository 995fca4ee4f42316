"""The local journal: every generated sample is committed here before it is uploaded.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit has reached the OS when ``record``
returns, so ``kill -9`` of the worker (or a crash) at any point loses nothing that was recorded.
(Only an OS crash or power loss can roll back the last commits in this mode; ``FULL`` would
fsync on every commit and cost ~1 ms per batch on a laptop SSD for protection we don't need.)

A sample's ``client_id`` (UUID4) is chosen here, once, and sent on every upload attempt, so a
retry after a lost response comes back from the server as a duplicate instead of a second row.

Lease requests work the same way: the key of a request is committed here before the request goes
out, and every retry sends it again, so the server makes at most one lease per key. A lease whose
answer never arrived (a timeout, ``kill -9`` between the server's commit and ours) is then still
traceable: its key is in ``lease_requests`` and the server lists the lease under it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING = "pending"
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"
DONE_STATES = (ACCEPTED, DUPLICATE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    client_id     TEXT PRIMARY KEY,
    lease_id      TEXT,             -- NULL for samples tied to a prompt, not a lease
    item_id       TEXT,
    prompt_id     TEXT,
    payload       TEXT NOT NULL,    -- the upload body for this sample, minus item/prompt
    state         TEXT NOT NULL DEFAULT 'pending',
    server_id     TEXT,
    error_code    TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_state ON samples (state, lease_id);
CREATE TABLE IF NOT EXISTS leases (
    id         TEXT PRIMARY KEY,
    node_id    TEXT,
    model      TEXT,
    deadline   TEXT,
    payload    TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'open',   -- open | closed
    created_at REAL NOT NULL
);
-- Lease requests sent (or about to be) whose answer is not journaled yet: their key, so the
-- next start can tell a lease this worker asked for from one it never heard of.
CREATE TABLE IF NOT EXISTS lease_requests (
    key        TEXT PRIMARY KEY,
    node_id    TEXT,
    model      TEXT,
    created_at REAL NOT NULL
);
"""


_COLUMNS = (
    "client_id, lease_id, item_id, prompt_id, payload, state, server_id, error_code, error_message"
)


@dataclass
class JournalSample:
    client_id: str
    lease_id: str | None
    item_id: str | None
    prompt_id: str | None
    payload: dict[str, Any]
    state: str = PENDING
    server_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    def upload_body(self) -> dict[str, Any]:
        """The sample as the upload API takes it: ``item`` for a lease, else ``prompt``."""
        body = dict(self.payload)
        body["client_id"] = self.client_id
        if self.lease_id is not None:
            body["item"] = _as_id(self.item_id)
        else:
            body["prompt"] = _as_id(self.prompt_id)
        return body


def _as_id(value: str | None) -> int | str | None:
    # Ids are stored as text; send integers back as integers, the way the server gave them.
    if value is not None and value.isdigit():
        return int(value)
    return value


def new_client_id() -> str:
    return str(uuid.uuid4())


def new_lease_key() -> str:
    return uuid.uuid4().hex


class Journal:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # One connection shared by the generator threads and the uploader, behind a lock:
        # sqlite3 connections are not safe for concurrent use, and writes are short.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- samples ---------------------------------------------------------------------------

    def record(self, samples: Iterable[JournalSample]) -> int:
        """Commit samples durably (one transaction). Existing client_ids are left untouched."""
        now = time.time()
        rows = [
            (
                s.client_id,
                s.lease_id,
                s.item_id,
                s.prompt_id,
                json.dumps(s.payload, separators=(",", ":")),
                s.state,
                now,
                now,
            )
            for s in samples
        ]
        with self._tx() as db:
            cur = db.executemany(
                "INSERT OR IGNORE INTO samples (client_id, lease_id, item_id, prompt_id, payload,"
                " state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return cur.rowcount

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[JournalSample]:
        with self._lock:
            # `sql` is always a literal WHERE/ORDER clause from this module; values are bound.
            query = f"SELECT {_COLUMNS} FROM samples {sql}"  # noqa: S608
            rows = self._db.execute(query, args).fetchall()
        return [
            JournalSample(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def pending(self, limit: int = 256, skip: Iterable[str | None] = ()) -> list[JournalSample]:
        """Pending samples of one destination (one lease, or prompt-bound), oldest first.

        ``skip`` names destinations to pass over (lease ids; ``None`` for prompt-bound samples),
        so one that can't take uploads doesn't hold up the others behind it.
        """
        skipped = set(skip)
        where, args = "state = ?", [PENDING]
        leases = [str(x) for x in skipped if x is not None]
        if leases:
            # (NULL NOT IN (...) is NULL, not true: prompt-bound samples need saying.)
            null = "lease_id IS NOT NULL AND" if None in skipped else "lease_id IS NULL OR"
            where += f" AND ({null} lease_id NOT IN ({', '.join('?' * len(leases))}))"
            args += leases
        elif None in skipped:
            where += " AND lease_id IS NOT NULL"
        with self._lock:
            head = self._db.execute(
                # `where` is built from literals only; values are bound.
                f"SELECT lease_id FROM samples WHERE {where}"  # noqa: S608
                " ORDER BY created_at, rowid LIMIT 1",
                tuple(args),
            ).fetchone()
        if head is None:
            return []
        if head[0] is None:
            return self._rows(
                "WHERE state = ? AND lease_id IS NULL ORDER BY created_at, rowid LIMIT ?",
                (PENDING, limit),
            )
        return self._rows(
            "WHERE state = ? AND lease_id = ? ORDER BY created_at, rowid LIMIT ?",
            (PENDING, head[0], limit),
        )

    def get(self, client_id: str) -> JournalSample | None:
        found = self._rows("WHERE client_id = ?", (client_id,))
        return found[0] if found else None

    def all(self, state: str | None = None) -> list[JournalSample]:
        if state is None:
            return self._rows("ORDER BY created_at, rowid")
        return self._rows("WHERE state = ? ORDER BY created_at, rowid", (state,))

    def mark(
        self,
        client_id: str,
        state: str,
        *,
        server_id: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        self.mark_many([(client_id, state, server_id, error_code, error_message)])

    def mark_many(
        self, updates: Iterable[tuple[str, str, str | None, str | None, str | None]]
    ) -> None:
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE samples SET state = ?, server_id = COALESCE(?, server_id),"
                " error_code = ?, error_message = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE client_id = ?",
                [(st, sid, code, msg, now, cid) for cid, st, sid, code, msg in updates],
            )

    def move_to_prompt(self, client_ids: Iterable[str]) -> None:
        """Detach samples from their lease (it expired): they go up by prompt id instead."""
        with self._tx() as db:
            db.executemany(
                "UPDATE samples SET lease_id = NULL WHERE client_id = ? AND prompt_id IS NOT NULL",
                [(c,) for c in client_ids],
            )

    def move_lease_to_prompt(self, lease_id: str) -> int:
        """Detach a lease's pending samples that have a prompt id from it (the server no longer
        knows the lease): they go up by prompt id instead. Returns how many moved."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE samples SET lease_id = NULL"
                " WHERE lease_id = ? AND state = ? AND prompt_id IS NOT NULL",
                (str(lease_id), PENDING),
            )
            return cur.rowcount

    def lease_count(self, lease_id: str, state: str) -> int:
        """How many of a lease's samples are in ``state``."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM samples WHERE lease_id = ? AND state = ?",
                (str(lease_id), state),
            ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM samples GROUP BY state").fetchall()
        out = {PENDING: 0, ACCEPTED: 0, DUPLICATE: 0, REJECTED: 0}
        out.update({state: n for state, n in rows})
        return out

    # --- leases ----------------------------------------------------------------------------

    def begin_lease_request(self, node_id: str | None, model: str | None) -> str:
        """A fresh idempotency key for a lease request, committed before the request is sent."""
        key = new_lease_key()
        with self._tx() as db:
            db.execute(
                "INSERT INTO lease_requests (key, node_id, model, created_at) VALUES (?, ?, ?, ?)",
                (key, node_id, model, time.time()),
            )
        return key

    def drop_lease_request(self, key: str) -> None:
        """The request is settled without a lease (no work, a refusal, or reconciled)."""
        with self._tx() as db:
            db.execute("DELETE FROM lease_requests WHERE key = ?", (key,))

    def lease_requests(self) -> list[str]:
        """Keys of lease requests whose answer was never journaled, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM lease_requests ORDER BY created_at, rowid"
            ).fetchall()
        return [r[0] for r in rows]

    def lease_states(self) -> dict[str, str]:
        """Every lease this journal received, by id: ``open`` or ``closed``."""
        with self._lock:
            rows = self._db.execute("SELECT id, state FROM leases").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def add_lease(
        self, lease: dict[str, Any], node_id: str | None, *, key: str | None = None
    ) -> None:
        """Journal a lease received; with ``key``, its request is settled in the same commit."""
        with self._tx() as db:
            if key is not None:
                db.execute("DELETE FROM lease_requests WHERE key = ?", (key,))
            db.execute(
                "INSERT OR REPLACE INTO leases (id, node_id, model, deadline, payload, state,"
                " created_at) VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (
                    str(lease["id"]),
                    node_id,
                    lease.get("model"),
                    lease.get("deadline"),
                    json.dumps(lease),
                    time.time(),
                ),
            )

    def close_lease(self, lease_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE leases SET state = 'closed' WHERE id = ?", (str(lease_id),))

    def open_leases(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM leases WHERE state = 'open' ORDER BY created_at"
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def find_item(self, item_id: str) -> tuple[str, str | None] | None:
        """(lease id, prompt id) of a leased item this worker received, for offline uploads."""
        with self._lock:
            rows = self._db.execute("SELECT id, payload FROM leases ORDER BY created_at DESC")
            for lease_id, payload in rows:
                for item in json.loads(payload).get("items", []):
                    if str(item.get("id")) == str(item_id):
                        prompt = item.get("prompt") or {}
                        pid = prompt.get("id") if isinstance(prompt, dict) else prompt
                        return lease_id, None if pid is None else str(pid)
        return None

"""Moves journaled samples to the server, in batches of at most 256, idempotently."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import journal as j
from .errors import ApiError, AuthError
from .journal import Journal, JournalSample
from .net import MAX_SAMPLES_PER_UPLOAD, RetryPolicy, ServerClient

log = logging.getLogger("thinkpool.worker")

# Whole-request answers meaning "this lease can no longer take samples" (the server accepts late
# results for expired leases, so this is a lease it doesn't know, e.g. after a database reset);
# the samples are still good data, so they go up by prompt id instead of being dropped.
LEASE_GONE_STATUSES = frozenset({404, 410})
# The server refuses a batch racing another upload of the same client_ids; the retry settles it.
RETRY_CODES = frozenset({"concurrent_upload"})


@dataclass
class UploadStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[tuple[str, str, str]] = field(default_factory=list)


class Uploader:
    def __init__(
        self,
        server: ServerClient,
        journal: Journal,
        *,
        batch_size: int = MAX_SAMPLES_PER_UPLOAD,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.server = server
        self.journal = journal
        self.batch_size = min(batch_size, MAX_SAMPLES_PER_UPLOAD)
        self.policy = policy
        self.stats = UploadStats()
        self._lock = threading.Lock()  # one flush at a time: no sample sent twice concurrently

    def flush(self) -> int:
        """Upload every pending sample; returns how many were settled (any outcome)."""
        settled = 0
        with self._lock:
            while True:
                batch = self.journal.pending(self.batch_size)
                if not batch:
                    return settled
                done = self._send(batch)
                if done == 0:
                    return settled  # nothing settled (unexpected answer); don't spin
                settled += done

    def _send(self, batch: list[JournalSample], attempt: int = 0) -> int:
        lease_id = batch[0].lease_id
        bodies = [s.upload_body() for s in batch]
        try:
            if lease_id is not None:
                answer = self.server.upload_lease_samples(lease_id, bodies, policy=self.policy)
            else:
                answer = self.server.upload_samples(bodies, policy=self.policy)
        except AuthError:
            raise
        except ApiError as exc:
            if exc.code in RETRY_CODES and attempt < 5:
                log.info("upload raced another (%s); retrying", exc.code)
                time.sleep(0.5 * (attempt + 1))
                return self._send(batch, attempt + 1)
            if lease_id is not None and exc.status in LEASE_GONE_STATUSES:
                log.warning(
                    "lease %s no longer takes samples (%s); uploading its %d samples by prompt",
                    lease_id,
                    exc.code,
                    len(batch),
                )
                self.journal.move_to_prompt(s.client_id for s in batch)
                # Those without a prompt id can't go anywhere: record why.
                stuck = [s for s in batch if s.prompt_id is None]
                self._reject(stuck, exc.code, exc.message)
                return len(batch)
            # The whole request was refused (400/413...): every sample keeps the reason.
            self._reject(batch, exc.code, exc.message)
            return len(batch)
        return self._apply(answer, batch)

    def _reject(self, samples: list[JournalSample], code: str, message: str) -> None:
        self.journal.mark_many((s.client_id, j.REJECTED, None, code, message) for s in samples)
        self.stats.rejected += len(samples)
        for s in samples:
            self.stats.rejections.append((s.client_id, code, message))
            log.warning("sample %s rejected: %s: %s", s.client_id, code, message)

    def _apply(self, answer: dict[str, Any], batch: list[JournalSample]) -> int:
        known = {s.client_id for s in batch}
        updates: list[tuple[str, str, str | None, str | None, str | None]] = []
        for entry in answer.get("accepted") or []:
            updates.append((str(entry["client_id"]), j.ACCEPTED, _sid(entry), None, None))
            self.stats.accepted += 1
        for entry in answer.get("duplicates") or []:
            updates.append((str(entry["client_id"]), j.DUPLICATE, _sid(entry), None, None))
            self.stats.duplicates += 1
        for entry in answer.get("rejected") or []:
            err = entry.get("error") or {}
            code, message = str(err.get("code", "rejected")), str(err.get("message", ""))
            updates.append((str(entry["client_id"]), j.REJECTED, None, code, message))
            self.stats.rejected += 1
            self.stats.rejections.append((str(entry["client_id"]), code, message))
            log.warning("sample %s rejected: %s: %s", entry["client_id"], code, message)
        updates = [u for u in updates if u[0] in known]
        self.journal.mark_many(updates)
        return len(updates)


def _sid(entry: dict[str, Any]) -> str | None:
    return None if entry.get("id") is None else str(entry["id"])

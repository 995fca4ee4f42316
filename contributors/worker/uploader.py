"""Moves journaled samples to the server, in batches that fit its limits, idempotently.

A batch holds samples of one destination (one lease, or samples bound to a prompt id), at most
the server's ``max_samples_per_upload`` samples and 90% of its ``max_body_bytes`` once serialized
(both read once per run from ``GET /api/v1/me/``; an older server that doesn't advertise them is
assumed to take 256 samples and 32 MiB). A sample larger than that budget goes up alone.

What happens to a batch, by the server's answer:

* 200: each sample as the answer says: accepted, duplicate (an earlier attempt stored it and its
  answer was lost), or rejected with the server's reason. Only these per-sample rejections are
  final; a sample the answer doesn't mention stays pending.
* 413, or a 400 saying the batch is too big (``{"error": {"fields": {"samples": [...]}}}``): the
  batch is split (in halves, or in chunks of the count the message names) and each part sent again;
  later batches are made smaller too. A single sample that still gets 413 is rejected with the
  server's reason: it can never fit.
* 408, 429, 5xx, a connection error, or a ``concurrent_upload`` race once retries run out (the run
  loop retries until it is stopped; the final upload after a stop for a minute): the samples stay
  pending and ``UploadPostponed`` (or ``ServerUnreachable``) is raised. They go up on a later
  flush, or on the next start.
* 401/403: ``AuthError`` is raised (the token was revoked or lacks permission; ``run`` stops and
  says so). The samples stay pending for when a valid token is configured.
* 404/410 from a lease's endpoint: the server doesn't know the lease (e.g. after a database reset;
  an expired lease still takes late results). Its samples that carry a prompt id go up through the
  offline endpoint (``POST /api/v1/samples/``) instead. Those without one stay pending, and the
  lease is set aside for this run with an error log line saying so.
* Any other 4xx (a 400 about something else, 405, 415...): the worker and the server disagree in
  a way retrying won't fix now (an outdated worker, a proxy in the way). The samples stay pending,
  their destination is set aside for the rest of this run (so the others behind it still go up),
  and the error is logged once; the next start tries again.

So a sample is never marked rejected because a whole request failed, except for a single sample
the server finds too large.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import journal as j
from .errors import ApiError, AuthError, UploadPostponed
from .journal import Journal, JournalSample
from .net import MAX_SAMPLES_PER_UPLOAD, RetryPolicy, ServerClient, ServerLimits, encode_json

log = logging.getLogger("thinkpool.worker")

# Whole-request answers meaning "this lease can no longer take samples" (the server accepts late
# results for expired leases, so this is a lease it doesn't know, e.g. after a database reset);
# the samples are still good data, so they go up by prompt id instead of being dropped.
LEASE_GONE_STATUSES = frozenset({404, 410})
# The server refuses a batch racing another upload of the same client_ids; the retry settles it.
RETRY_CODES = frozenset({"concurrent_upload"})
# Whole-request answers that mean "not now": the samples wait for a later attempt.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Fill at most this share of the server's body cap: proxies count differently, and a body just
# under the cap gains little over one 10% smaller.
BODY_HEADROOM = 0.9
_ENVELOPE_BYTES = len(encode_json({"samples": []}))


@dataclass
class UploadStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class _Entry:
    sample: JournalSample
    body: dict[str, Any]
    size: int  # bytes of ``body`` as sent


class Uploader:
    def __init__(
        self,
        server: ServerClient,
        journal: Journal,
        *,
        batch_size: int = MAX_SAMPLES_PER_UPLOAD,
        policy: RetryPolicy | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.server = server
        self.journal = journal
        self.batch_size = max(1, batch_size)
        self.policy = policy
        # None until known: asked from the server on the first flush.
        self.limits = limits
        self.stats = UploadStats()
        # Destinations (lease id; None for prompt-bound samples) that can't take uploads this
        # run, and why. Their samples stay pending for the next start.
        self.set_aside: dict[str | None, str] = {}
        # Learnt from 413/400 answers, when the advertised limits were not the whole story.
        self._count_cap: int | None = None
        self._byte_cap: int | None = None
        self._lock = threading.Lock()  # one flush at a time: no sample sent twice concurrently

    # --- sizing ----------------------------------------------------------------------------

    @property
    def max_count(self) -> int:
        limits = self.limits or ServerLimits()
        cap = min(self.batch_size, limits.max_samples_per_upload)
        if self._count_cap is not None:
            cap = min(cap, self._count_cap)
        return max(1, cap)

    @property
    def max_bytes(self) -> int:
        limits = self.limits or ServerLimits()
        cap = int(limits.max_body_bytes * BODY_HEADROOM) - _ENVELOPE_BYTES
        if self._byte_cap is not None:
            cap = min(cap, self._byte_cap)
        return max(1, cap)

    def _ensure_limits(self) -> None:
        if self.limits is not None:
            return
        try:
            self.limits = self.server.limits(policy=self.policy)
        except AuthError:
            raise
        except ApiError as exc:
            if _transient(exc):
                raise UploadPostponed(
                    f"the server answered {exc.status} {exc.code}; uploads wait"
                ) from exc
            log.debug("the server doesn't say what it accepts (%s); assuming defaults", exc)
            self.limits = ServerLimits()

    # --- flushing --------------------------------------------------------------------------

    def flush(self) -> int:
        """Upload every pending sample it can; returns how many were settled (any outcome).

        Raises ``UploadPostponed``/``ServerUnreachable`` when the server can't take uploads now
        and ``AuthError`` when it refuses the token; the samples stay pending either way.
        """
        settled = 0
        with self._lock:
            self._ensure_limits()
            while True:
                pending = self.journal.pending(self.max_count, skip=self.set_aside)
                if not pending:
                    return settled
                entries, unencodable = self._fit(pending)
                settled += unencodable
                if not entries:
                    continue
                aside = len(self.set_aside)
                done = self._send(entries)
                if done == 0 and len(self.set_aside) == aside:
                    return settled  # nothing settled (unexpected answer); don't spin
                settled += done

    def _entries(self, samples: list[JournalSample]) -> tuple[list[_Entry], int]:
        """Samples with their upload bodies; one that can't be sent as JSON (NaN) is rejected."""
        entries: list[_Entry] = []
        bad: list[tuple[JournalSample, str]] = []
        for s in samples:
            body = s.upload_body()
            try:
                size = len(encode_json(body))
            except ValueError as exc:
                bad.append((s, f"the sample can't be sent as JSON: {exc}"))
                continue
            entries.append(_Entry(s, body, size))
        for s, why in bad:
            self._reject([s], "unencodable", why)
        return entries, len(bad)

    def _fit(self, samples: list[JournalSample]) -> tuple[list[_Entry], int]:
        """The oldest samples that fit the byte budget (at least one); the rest wait."""
        entries, unencodable = self._entries(samples)
        budget, used = self.max_bytes, 0
        fitted: list[_Entry] = []
        for e in entries:
            extra = e.size + (1 if fitted else 0)  # the comma between samples
            if fitted and used + extra > budget:
                break
            fitted.append(e)
            used += extra
        return fitted, unencodable

    def _send(self, entries: list[_Entry], attempt: int = 0) -> int:
        lease_id = entries[0].sample.lease_id
        bodies = [e.body for e in entries]
        try:
            if lease_id is not None:
                answer = self.server.upload_lease_samples(lease_id, bodies, policy=self.policy)
            else:
                answer = self.server.upload_samples(bodies, policy=self.policy)
        except AuthError:
            raise  # 401/403: the samples stay pending; the caller stops
        except ApiError as exc:
            return self._refused(exc, entries, attempt)
        return self._apply(answer, [e.sample for e in entries])

    def _refused(self, exc: ApiError, entries: list[_Entry], attempt: int) -> int:
        """The whole request was refused: split it, postpone it, or set its destination aside."""
        lease_id = entries[0].sample.lease_id
        if exc.code in RETRY_CODES and attempt < 5:
            log.info("upload raced another (%s); retrying", exc.code)
            time.sleep(0.5 * (attempt + 1))
            return self._send(entries, attempt + 1)
        if _too_big(exc):
            if len(entries) > 1:
                chunk = self._learn(exc, entries)
                log.info(
                    "the server found %d samples too many or too large (%s); sending %d at a time",
                    len(entries),
                    exc.code,
                    chunk,
                )
                return sum(
                    self._send(entries[i : i + chunk]) for i in range(0, len(entries), chunk)
                )
            if exc.status == 413:
                e = entries[0]
                self._reject([e.sample], exc.code, f"{exc.message} ({e.size} bytes)")
                return 1
        if _transient(exc) or exc.code in RETRY_CODES:
            raise UploadPostponed(
                f"the server answered {exc.status} {exc.code} ({exc.message}); "
                f"{len(entries)} samples wait in the journal and go up later"
            ) from exc
        if lease_id is not None and exc.status in LEASE_GONE_STATUSES:
            return self._lease_gone(lease_id, exc, entries)
        self._set_aside(lease_id, f"the server answered {exc.status} {exc.code}: {exc.message}")
        return 0

    def _learn(self, exc: ApiError, entries: list[_Entry]) -> int:
        """Shrinks later batches after a too-big answer; returns the size to split this one in."""
        half = math.ceil(len(entries) / 2)
        if exc.status == 413:
            size = sum(e.size for e in entries) + len(entries) - 1
            self._byte_cap = max(1, min(self._byte_cap or size, size // 2))
            return half
        # "at most 64 samples per request": take the server at its word.
        found = re.search(r"at most (\d+)", str(exc.fields.get("samples", "")))
        cap = int(found.group(1)) if found else half
        cap = max(1, min(cap, half))
        self._count_cap = min(self._count_cap or cap, cap)
        return cap

    def _lease_gone(self, lease_id: str, exc: ApiError, entries: list[_Entry]) -> int:
        # Move all of the lease's pending samples with a prompt id, not only this batch's, so
        # none is left behind when the lease is set aside for the ones that can't move.
        moved = self.journal.move_lease_to_prompt(lease_id)
        log.warning(
            "lease %s no longer takes samples (%s %s); uploading its %d pending samples by prompt",
            lease_id,
            exc.status,
            exc.code,
            moved,
        )
        stuck = [e for e in entries if e.sample.prompt_id is None]
        if stuck or moved == 0:
            self._set_aside(
                lease_id,
                f"the server no longer knows the lease ({exc.status} {exc.code}) and some of its "
                "samples carry no prompt id to upload them by",
            )
        movable = [
            dataclasses.replace(e.sample, lease_id=None)
            for e in entries
            if e.sample.prompt_id is not None
        ]
        if not movable:
            return 0
        again, unencodable = self._entries(movable)
        return unencodable + (self._send(again) if again else 0)

    def _set_aside(self, lease_id: str | None, why: str) -> None:
        if lease_id in self.set_aside:
            return
        self.set_aside[lease_id] = why
        where = "samples bound to prompts" if lease_id is None else f"samples of lease {lease_id}"
        log.error(
            "cannot upload the %s: %s; they stay pending in the journal (%s) and are tried "
            "again on the next start",
            where,
            why,
            self.journal.path,
        )

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
            if str(entry.get("client_id")) in known:
                updates.append((str(entry["client_id"]), j.ACCEPTED, _sid(entry), None, None))
                self.stats.accepted += 1
        for entry in answer.get("duplicates") or []:
            if str(entry.get("client_id")) in known:
                updates.append((str(entry["client_id"]), j.DUPLICATE, _sid(entry), None, None))
                self.stats.duplicates += 1
        for entry in answer.get("rejected") or []:
            cid = str(entry.get("client_id"))
            if cid not in known:
                continue
            err = entry.get("error") or {}
            code, message = str(err.get("code", "rejected")), str(err.get("message", ""))
            updates.append((cid, j.REJECTED, None, code, message))
            self.stats.rejected += 1
            self.stats.rejections.append((cid, code, message))
            log.warning("sample %s rejected: %s: %s", cid, code, message)
        self.journal.mark_many(updates)
        return len(updates)


def _too_big(exc: ApiError) -> bool:
    """413, or the server's 400 about the ``samples`` list itself (too many of them)."""
    return exc.status == 413 or (exc.status == 400 and "samples" in exc.fields)


def _transient(exc: ApiError) -> bool:
    return exc.status in TRANSIENT_STATUSES or exc.status >= 500


def _sid(entry: dict[str, Any]) -> str | None:
    return None if entry.get("id") is None else str(entry["id"])

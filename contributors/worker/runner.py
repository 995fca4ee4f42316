"""The run loop: recover, lease, generate, journal, upload, repeat.

Threads, not asyncio: generation calls block (HTTP to the model server, or torch in-process),
httpx's sync client is thread-safe, and signal handling stays in the main thread, which only
schedules work and waits.

Order of safety: a sample is committed to the journal as soon as its generation returns, before
anything else happens to it; uploads read from the journal. So a crash loses at most generations
still in flight, and a restart re-sends whatever was not acknowledged (same client_id: the server
answers "duplicate" for any it already stored).

Leases the same way: a lease request's key is journaled before it is sent, heartbeats extend only
the lease being worked on, and a start lists the node's live leases and releases every one this
run does not hold, so a lease whose answer was lost holds its slots only until the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .backends import Backend, Generation, GenRequest
from .display import Progress
from .errors import (
    ApiError,
    AuthError,
    BackendError,
    ServerUnreachable,
    UploadPostponed,
    WorkerError,
    token_refused,
)
from .journal import REJECTED, Journal, JournalSample, new_client_id
from .net import RetryPolicy, ServerClient
from .uploader import Uploader

log = logging.getLogger("thinkpool.worker")


@dataclass
class RunOptions:
    once: bool = False  # exit when the server has no work, instead of polling
    max_batches: int | None = None  # stop after this many leases
    concurrency: int = 4
    max_prompts: int = 16
    poll_min_s: float = 5.0
    poll_max_s: float = 300.0
    heartbeat_interval_s: float = 30.0
    upload_interval_s: float = 2.0
    retry_cap_s: float = 60.0
    # Don't start an item unless its estimated time, times this, fits before the deadline.
    deadline_safety: float = 1.5
    deadline_margin_s: float = 5.0
    # After a graceful stop, how long to keep trying to upload before leaving it to next start.
    final_upload_budget_s: float = 60.0


class Stopper:
    """Graceful stop (first Ctrl-C / SIGTERM): finish in-flight work, upload, release, exit."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    @property
    def stopping(self) -> bool:
        return self.event.is_set()


class ItemTimer:
    """Exponentially weighted mean of seconds per item, to decide what fits before a deadline."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.mean_s: float | None = None
        self._lock = threading.Lock()

    def observe(self, seconds: float, items: int) -> None:
        per_item = seconds / max(1, items)
        with self._lock:
            if self.mean_s is None:
                self.mean_s = per_item
            else:
                self.mean_s = self.alpha * per_item + (1 - self.alpha) * self.mean_s


def parse_deadline(value: str | None) -> float | None:
    """A lease deadline (ISO 8601) as a Unix timestamp."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Runner:
    def __init__(
        self,
        *,
        server: ServerClient,
        backend: Backend,
        journal: Journal,
        node_id: str,
        model: str,
        options: RunOptions,
        progress: Progress | None = None,
        stopper: Stopper | None = None,
    ) -> None:
        self.server = server
        self.backend = backend
        self.journal = journal
        self.node_id = node_id
        self.model = model
        self.opts = options
        self.progress = progress or Progress()
        self.stopper = stopper or Stopper()
        self.timer = ItemTimer()
        self.fatal: WorkerError | None = None
        self._wake_uploader = threading.Event()
        self._lease_lock = threading.Lock()
        self._lease: dict[str, Any] | None = None
        self._deadline: float | None = None
        # Set by a heartbeat that finds the lease no longer live on the server (expired,
        # released, unknown): its state. No more of its items are started.
        self._lease_lost: str | None = None
        # Samples generated per item of the current lease, to tell what to give back.
        self._got: Counter[str] = Counter()
        # While running: retry forever (server down for hours is fine), but give up the moment
        # a stop is requested, and wait on the stop event so Ctrl-C interrupts a long back-off.
        self.live_policy = RetryPolicy(
            cap_s=options.retry_cap_s,
            abort=lambda: self.stopper.stopping,
            sleep=self.stopper.event.wait,
        )
        self.uploader = Uploader(server, journal, policy=self.live_policy)

    # --- top level -------------------------------------------------------------------------

    def run(self) -> int:
        self.progress.status = "recovering"
        self.recover()
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self._upload_loop, name="uploader", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            self._lease_loop()
        finally:
            self.stopper.stop(self.stopper.reason or "done")
            self._wake_uploader.set()
            for t in threads:
                t.join(timeout=5)
            self._final_flush()
            self.progress.status = "stopped"
        if self.fatal is not None:
            raise self.fatal
        return 0

    def recover(self) -> None:
        """Before leasing anything new: upload what a previous run left, release its leases,
        then release the node's live leases this worker never recorded (orphans)."""
        pending = self.journal.counts()["pending"]
        if pending:
            log.info("uploading %d samples left by a previous run", pending, extra=_ev("recover"))
        self._flush(self.live_policy)
        for lease in self.journal.open_leases():
            lease_id = str(lease["id"])
            try:
                answer = self.server.release_lease(lease_id, policy=self.live_policy)
                log.info(
                    "released lease %s left open by a previous run: %s unstarted samples back "
                    "to the pool",
                    lease_id,
                    answer.get("released", "?"),
                    extra=_ev("release", lease=lease_id, released=answer.get("released")),
                )
            except ApiError as exc:
                if isinstance(exc, AuthError):
                    raise
                log.debug("lease %s: %s", lease_id, exc)  # done or expired already
            self.journal.close_lease(lease_id)
        self.reconcile_leases()

    def reconcile_leases(self) -> int:
        """Releases the node's live leases this run does not hold; returns how many.

        At start this run holds none, so every live lease of the node is one a previous run
        left: one whose answer was lost (its key is journaled, the lease is not), one the journal
        closed while the server still holds part of it, or one the journal never heard of (a
        deleted journal, an older worker). Journaled keys are settled either way: a key whose
        lease isn't listed made no lease (or one that has closed since).
        """
        asked = set(self.journal.lease_requests())
        try:
            live = self.server.list_leases(self.node_id, state="live", policy=self.live_policy)
        except AuthError:
            raise
        except ApiError as exc:
            # An older server can't list leases: those it holds for us expire on their own.
            log.warning("cannot list this node's leases to reconcile them (%s)", exc)
            live = []
        known = self.journal.lease_states()
        released = 0
        for lease in live:
            lease_id = str(lease["id"])
            if str(lease.get("state") or "live") != "live":
                continue
            if lease.get("key") and lease["key"] in asked:
                why = "its answer never reached this worker"
            elif lease_id in known:
                why = "a previous run had finished with it"
            else:
                why = "this worker's journal does not know it"
            try:
                answer = self.server.release_lease(lease_id, policy=self.live_policy)
            except AuthError:
                raise
            except ApiError as exc:
                log.debug("lease %s: %s", lease_id, exc)  # closed meanwhile
                continue
            released += 1
            self.journal.close_lease(lease_id)
            log.warning(
                "released lease %s (%s): %s samples back to the pool",
                lease_id,
                why,
                answer.get("released", "?"),
                extra=_ev("orphan_released", lease=lease_id, released=answer.get("released")),
            )
        for key in asked:
            self.journal.drop_lease_request(key)
        return released

    def _lease_loop(self) -> None:
        batches = 0
        poll = self.opts.poll_min_s
        while not self.stopper.stopping and self.fatal is None:
            if self.opts.max_batches is not None and batches >= self.opts.max_batches:
                log.info("done: %d leases processed (--max-batches)", batches)
                return
            self.progress.status = "leasing"
            lease = self.request_lease()
            if lease is None and self.stopper.stopping:
                return
            if lease is None or not lease.get("items"):
                if self.opts.once:
                    log.info("the server has no work for %s; exiting (--once)", self.model)
                    return
                self.progress.status = f"no work; polling again in {poll:.0f}s"
                log.info("no work for %s; polling again in %.0fs", self.model, poll)
                self.stopper.event.wait(poll)
                poll = min(poll * 2, self.opts.poll_max_s)
                continue
            poll = self.opts.poll_min_s
            self.process_lease(lease)
            batches += 1

    def request_lease(self, *, again: bool = True) -> dict[str, Any] | None:
        """Asks for a lease under a key journaled first; None when there is no work (or the
        run is stopping). The lease is journaled before it is returned."""
        key = self.journal.begin_lease_request(self.node_id, self.model)
        try:
            lease = self.server.lease(
                self.node_id, self.model, self.opts.max_prompts, policy=self.live_policy, key=key
            )
        except ServerUnreachable:
            # The key stays journaled: the next start asks the server whether it made a lease.
            if self.stopper.stopping:
                return None
            raise
        except ApiError as exc:
            if 400 <= exc.status < 500:
                self.journal.drop_lease_request(key)  # refused: the server stored nothing
            raise
        if lease is None:
            self.journal.drop_lease_request(key)  # 204 stores nothing
            return None
        self.journal.add_lease(lease, self.node_id, key=key)
        state = str(lease.get("state") or "live")
        if state != "live":
            # The same key answered a lease that has closed since (a retry across an expiry).
            # A fresh key can only make a new lease or find no work, so this asks once more.
            log.info("lease %s is already %s; asking again", lease.get("id"), state)
            self.journal.close_lease(str(lease["id"]))
            return self.request_lease(again=False) if again else None
        return lease

    # --- one lease -------------------------------------------------------------------------

    def process_lease(self, lease: dict[str, Any]) -> None:
        lease_id = str(lease["id"])
        # Samples carry the model the lease is for (the server rejects any other), whatever
        # name the backend uses for it (kept in sampling.backend_model).
        model = str(lease.get("model") or self.model)
        items: list[dict[str, Any]] = list(lease["items"])
        with self._lease_lock:
            self._lease = lease
            self._deadline = parse_deadline(lease.get("deadline"))
            self._lease_lost = None
            self._got = Counter()
        self.progress.add(items_leased=len(items))
        self.progress.deadline = lease.get("deadline")
        self.progress.status = f"generating (lease {lease_id})"
        log.info(
            "lease %s: %d items, deadline %s",
            lease_id,
            len(items),
            lease.get("deadline"),
            extra=_ev("lease", lease=lease_id, items=len(items), deadline=lease.get("deadline")),
        )

        size = max(1, self.backend.batch_size)
        queue = deque(items[i : i + size] for i in range(0, len(items), size))
        parallel = max(1, min(self.opts.concurrency, self.backend.max_parallel))
        in_flight: dict[Future[None], list[dict[str, Any]]] = {}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="generate") as pool:
            while queue or in_flight:
                while queue and len(in_flight) < parallel and not self._should_stop_starting():
                    unit = queue[0]
                    if not self._fits_before_deadline(len(unit)):
                        log.warning(
                            "lease %s: %d items can't finish before the deadline; releasing them",
                            lease_id,
                            sum(len(u) for u in queue),
                        )
                        break
                    queue.popleft()
                    in_flight[pool.submit(self._generate_unit, lease_id, unit, model)] = unit
                if queue and (self._should_stop_starting() or not in_flight):
                    # Stopping, or nothing runs and the next item doesn't fit: leave the rest
                    # (what was not generated is counted from the samples recorded, below).
                    queue.clear()
                if not in_flight:
                    break
                done, _ = wait(list(in_flight), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    unit = in_flight.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        self._on_generation_error(exc)
        self._wake_uploader.set()
        self._flush(self.live_policy)
        with self._lease_lock:
            lost, got = self._lease_lost, Counter(self._got)
        short = {
            str(it["id"]): _asked(it) - got[str(it["id"])]
            for it in items
            if got[str(it["id"])] < _asked(it)
        }
        if lost is not None:
            if short:
                log.warning(
                    "lease %s is %s on the server; %d of its items were not generated",
                    lease_id,
                    lost,
                    len(short),
                )
        elif short or self.journal.lease_count(lease_id, REJECTED):
            # Give back what won't come (unstarted, short, or refused at upload) now, rather
            # than let the server hold it until the deadline.
            self._release(lease_id, items=len(short), samples=sum(short.values()))
        self.journal.close_lease(lease_id)
        with self._lease_lock:
            self._lease = None
            self._deadline = None

    def _should_stop_starting(self) -> bool:
        return self.stopper.stopping or self.fatal is not None or self._lease_lost is not None

    def _fits_before_deadline(self, items: int) -> bool:
        with self._lease_lock:
            deadline = self._deadline
        mean = self.timer.mean_s
        if deadline is None or mean is None:
            return True  # nothing observed yet: try, and learn
        needed = mean * items * self.opts.deadline_safety + self.opts.deadline_margin_s
        return time.time() + needed <= deadline

    def _on_generation_error(self, exc: BaseException) -> None:
        if isinstance(exc, WorkerError):
            log.error("generation failed: %s", exc, extra=_ev("generation_error"))
            if isinstance(exc, BackendError) and self.fatal is None:
                # The model server is gone or doesn't serve the model: more items won't help.
                self.fatal = exc
        else:
            log.exception("generation failed unexpectedly", exc_info=exc)
            self.fatal = WorkerError(f"generation failed unexpectedly: {exc!r}")

    def _release(self, lease_id: str, *, items: int, samples: int) -> None:
        """Gives the lease's unfulfilled samples back; ``items``/``samples``: what this worker
        did not generate (the server's count also covers samples it refused at upload)."""
        try:
            answer = self.server.release_lease(lease_id, policy=self._final_policy())
            released = answer.get("released")
            released = released if isinstance(released, int) else samples
            log.info(
                "released %d unstarted samples (%d items) of lease %s",
                released,
                items,
                lease_id,
                extra=_ev("release", lease=lease_id, samples=released, items=items),
            )
        except (ApiError, ServerUnreachable) as exc:
            if isinstance(exc, AuthError):
                raise
            log.warning("could not release lease %s (%s); it will expire", lease_id, exc)

    def _generate_unit(
        self, lease_id: str, unit: list[dict[str, Any]], model: str | None = None
    ) -> None:
        requests = [_request_for(item) for item in unit]
        got = [0] * len(unit)

        def on_result(i: int, gens: list[Generation]) -> None:
            # An item takes n samples (the server rejects more as item_full): keep no extras.
            room = max(0, requests[i].n - got[i])
            if len(gens) > room:
                log.warning(
                    "item %s: the backend gave %d samples more than the %d asked; dropping them",
                    unit[i].get("id"),
                    len(gens) - room,
                    requests[i].n,
                )
                gens = gens[:room]
            if gens:
                self.record(lease_id, unit[i], requests[i], gens, model=model)
                with self._lease_lock:
                    self._got[str(unit[i].get("id"))] += len(gens)
            got[i] += len(gens)

        started = time.perf_counter()
        self.backend.generate_batch(requests, on_result)
        self.timer.observe(time.perf_counter() - started, len(unit))
        short = [unit[i]["id"] for i, r in enumerate(requests) if got[i] < r.n]
        if short:
            log.warning("items %s got fewer samples than asked", short)
        self.progress.add(items_done=len(unit))

    def record(
        self,
        lease_id: str | None,
        item: dict[str, Any],
        req: GenRequest,
        gens: list[Generation],
        *,
        model: str | None = None,
    ) -> list[JournalSample]:
        """Journal one item's generations (one durable transaction), as samples of ``model``
        (the lease's model; the configured one by default)."""
        prompt = item.get("prompt") or {}
        prompt_id = prompt.get("id") if isinstance(prompt, dict) else prompt
        samples = [
            JournalSample(
                client_id=new_client_id(),
                lease_id=lease_id,
                item_id=None if item.get("id") is None else str(item["id"]),
                prompt_id=None if prompt_id is None else str(prompt_id),
                payload=sample_payload(model or self.model, item.get("sampling") or {}, req, g),
            )
            for g in gens
        ]
        self.journal.record(samples)
        self.progress.add(samples=len(gens), tokens=sum(g.completion_tokens or 0 for g in gens))
        self._wake_uploader.set()
        return samples

    # --- background ------------------------------------------------------------------------

    def _upload_loop(self) -> None:
        while not self.stopper.stopping and self.fatal is None:
            self._wake_uploader.wait(self.opts.upload_interval_s)
            self._wake_uploader.clear()
            if self.stopper.stopping:
                return
            self._flush(self.live_policy)

    def _flush(self, policy: RetryPolicy) -> None:
        self.uploader.policy = policy
        try:
            self.uploader.flush()
        except AuthError as exc:
            self.fatal = token_refused(self.server.base, exc)
            self.stopper.stop("auth")
        except (ServerUnreachable, UploadPostponed) as exc:
            # The samples stay pending: a later flush (or the next start) sends them.
            log.warning("upload postponed: %s", exc)
        finally:
            stats = self.uploader.stats
            self.progress.accepted = stats.accepted
            self.progress.duplicates = stats.duplicates
            self.progress.rejected = stats.rejected

    def _final_policy(self) -> RetryPolicy:
        return RetryPolicy(
            cap_s=min(self.opts.retry_cap_s, 10.0), max_elapsed_s=self.opts.final_upload_budget_s
        )

    def _final_flush(self) -> None:
        if isinstance(self.fatal, AuthError):
            return
        self._flush(self._final_policy())
        left = self.journal.counts()["pending"]
        if left:
            log.warning(
                "%d samples are still waiting in the journal; they go up on the next start", left
            )

    def _heartbeat_loop(self) -> None:
        once = RetryPolicy(max_attempts=1)
        while not self.stopper.event.wait(self.opts.heartbeat_interval_s):
            self.heartbeat(once)

    def heartbeat(self, policy: RetryPolicy) -> None:
        """One heartbeat naming the lease being worked on (none between leases), and what the
        server says of it: a new deadline, or that it is no longer live."""
        with self._lease_lock:
            lease = self._lease
        held = [str(lease["id"])] if lease is not None else []
        try:
            answer = self.server.heartbeat(self.node_id, held, policy=policy)
            if lease is not None:
                self._apply_heartbeat(lease, answer, policy)
        except AuthError as exc:
            log.error("heartbeat refused: %s", exc)
        except (ApiError, ServerUnreachable) as exc:
            log.warning("heartbeat failed: %s", exc)

    def _apply_heartbeat(
        self, lease: dict[str, Any], answer: dict[str, Any], policy: RetryPolicy
    ) -> None:
        states = answer.get("leases")
        if not isinstance(states, list):
            # An older server: it extended every live lease of the node; ask for the deadline.
            if answer.get("leases_extended"):
                self._refresh_deadline(policy)
            return
        lease_id = str(lease["id"])
        mine = next(
            (x for x in states if isinstance(x, dict) and str(x.get("id")) == lease_id), None
        )
        # Left out of the answer: the server doesn't know the lease (for this node).
        state = "unknown" if mine is None else str(mine.get("state") or "live")
        with self._lease_lock:
            if self._lease is not lease:
                return  # finished meanwhile
            if state != "live":
                self._lease_lost = state
            elif mine is not None and (deadline := parse_deadline(mine.get("deadline"))):
                self._deadline = deadline
                self.progress.deadline = mine.get("deadline")
        if state not in ("live", "done"):  # done: every sample is in, nothing was left
            log.warning(
                "lease %s is %s on the server: no more of its items are started", lease_id, state
            )

    def _refresh_deadline(self, policy: RetryPolicy) -> None:
        with self._lease_lock:
            lease = self._lease
        if lease is None:
            return
        fresh = self.server.get_lease(str(lease["id"]), policy=policy)
        deadline = parse_deadline(fresh.get("deadline"))
        with self._lease_lock:
            if self._lease is lease and deadline is not None:
                self._deadline = deadline
                self.progress.deadline = fresh.get("deadline")


def _asked(item: dict[str, Any]) -> int:
    """Samples an item asks for."""
    return int((item.get("sampling") or {}).get("n", 1))


def _request_for(item: dict[str, Any]) -> GenRequest:
    sampling = item.get("sampling") or {}
    prompt = item.get("prompt") or {}
    return GenRequest(
        messages=prompt["messages"],
        temperature=float(sampling.get("temperature", 1.0)),
        top_p=float(sampling.get("top_p", 1.0)),
        max_tokens=int(sampling.get("max_tokens", 1024)),
        n=int(sampling.get("n", 1)),
    )


def valid_text(text: str) -> str:
    """`text` as valid Unicode: a lone surrogate (a backend that split a UTF-16 pair, or
    decoded bytes with surrogateescape) becomes U+FFFD, and a split pair is joined again. The
    server refuses a whole request that holds one, so a journaled sample must never carry it."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def sample_payload(
    model: str, asked: dict[str, Any], req: GenRequest, g: Generation
) -> dict[str, Any]:
    """The upload body of one sample, minus client_id and item/prompt.

    ``model`` is the model as Thinkpool names it (what the lease was for); when the backend
    reports a different id (an Ollama tag, a local path), that exact id is kept in
    ``sampling.backend_model`` so provenance loses nothing.
    """
    sampling: dict[str, Any] = {
        **asked,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
        "n": req.n,
    }
    if g.model and g.model != model:
        sampling["backend_model"] = g.model
    sampling.update(g.extra)
    return {
        "completion": valid_text(g.completion),
        "reasoning": None if g.reasoning is None else valid_text(g.reasoning),
        "model": model,
        "model_revision": g.model_revision,
        "sampling": sampling,
        "finish_reason": g.finish_reason,
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.completion_tokens,
        "generation_ms": g.generation_ms,
    }


def _ev(event: str, **fields: Any) -> dict[str, Any]:
    return {"event": event, "fields": fields}

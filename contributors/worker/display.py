"""Progress and logs: a rich live panel for people, JSON lines for fleets."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

log = logging.getLogger("thinkpool.worker")


@dataclass
class Progress:
    items_leased: int = 0
    items_done: int = 0
    samples: int = 0
    tokens: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    deadline: str | None = None
    status: str = "starting"
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            elapsed = max(1e-6, time.monotonic() - self.started)
            return {
                "items_done": self.items_done,
                "items_leased": self.items_leased,
                "samples": self.samples,
                "samples_per_s": round(self.samples / elapsed, 3),
                "tokens_per_s": round(self.tokens / elapsed, 1),
                "accepted": self.accepted + self.duplicates,
                "rejected": self.rejected,
                "deadline": self.deadline,
                "status": self.status,
            }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(
    fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    logger = logging.getLogger("thinkpool")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(file=stream or sys.stderr),
            show_path=False,
            markup=False,
            rich_tracebacks=False,
        )
    logger.addHandler(handler)


class Display:
    """Shows ``Progress``: a rich Live panel on a terminal, periodic JSON events otherwise."""

    def __init__(self, progress: Progress, fmt: str = "text", interval_s: float = 5.0) -> None:
        self.progress = progress
        self.fmt = fmt
        self.interval_s = interval_s
        self._live: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Display:
        if self.fmt == "text" and sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._render(),
                console=Console(file=sys.stderr),
                refresh_per_second=2,
                transient=False,
            )
            self._live.__enter__()
        self._thread = threading.Thread(target=self._loop, name="display", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
        self.emit()

    def emit(self) -> None:
        snap = self.progress.snapshot()
        log.info(
            "progress: {items_done}/{items_leased} items, {samples} samples, "
            "{samples_per_s} samples/s, {tokens_per_s} tok/s, accepted {accepted}, "
            "rejected {rejected}".format(**snap),
            extra={"event": "progress", "fields": snap},
        )

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.5):
            if self._live is not None:
                self._live.update(self._render())
            elif time.monotonic() - last >= self.interval_s:
                self.emit()
                last = time.monotonic()

    def _render(self) -> Any:
        from rich.table import Table

        s = self.progress.snapshot()
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("status", s["status"])
        table.add_row("items", f"{s['items_done']} / {s['items_leased']} leased")
        table.add_row("samples", f"{s['samples']}  ({s['samples_per_s']:.2f}/s)")
        table.add_row("tokens/s", f"{s['tokens_per_s']:.1f}")
        table.add_row("accepted", str(s["accepted"]))
        table.add_row("rejected", str(s["rejected"]))
        table.add_row("lease deadline", s["deadline"] or "-")
        return table


# --- `thinkpool-worker status`: what the server discloses -------------------------------------

JUDGED = ("verified", "rejected", "error")
# How an open prompt's sample that passed the gold-free checks is called (older servers said
# "accepted"; the list endpoint says "awaiting_disclosure").
AWAITING = ("awaiting_disclosure", "accepted")
# Per-sample lines `status` prints at most.
MAX_SAMPLE_LINES = 5


def _disclosed(d: dict[str, Any]) -> bool:
    if "disclosed" in d:
        return bool(d["disclosed"])
    return d.get("status") not in AWAITING


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def disclosure_lines(summary: dict[str, Any] | None, recent: list[dict[str, Any]]) -> list[str]:
    """What the server says about the judgement of this account's samples, as `status` prints
    it. The server discloses correctness only for prompts closed to collection (counts, top
    reasons and per-sample verdicts); for open ones a sample is awaiting disclosure, or
    rejected by a gold-free check (format, truncation, repetition, language). Nothing here
    claims more than the server gave."""
    lines: list[str] = []
    if summary:
        closed = summary.get("disclosed") or {}
        judging = _int(closed.get("received")) + _int(closed.get("scoring"))
        lines.append(
            f"samples:  {_int(summary.get('total'))} on the server: "
            + ", ".join(f"{_int(closed.get(status))} {status}" for status in JUDGED)
            + f", {judging} being judged; {_int(summary.get('awaiting_disclosure'))} awaiting "
            "disclosure"
        )
        lines.append(
            "          (correctness is disclosed once a prompt closes to collection; before "
            "that, only the text checks: format, truncation, repetition, language)"
        )
        top = [
            r
            for r in summary.get("top_reasons") or []
            if isinstance(r, dict) and r.get("reason") and _int(r.get("count"))
        ]
        if top:
            lines.append(
                "          top reasons: "
                + ", ".join(f"{r['reason']} ({r.get('status')}, {_int(r['count'])})" for r in top)
            )
        elif recent:
            # An older server gives no top reasons: count them over the recent disclosed ones.
            reasons = Counter(
                (str(d.get("status")), part)
                for d in recent
                if _disclosed(d) and d.get("status") in JUDGED[1:]
                for part in str(d.get("status_reason") or "").split("; ")
                if part
            )
            if reasons:
                ranked = sorted(reasons.items(), key=lambda r: (-r[1], r[0]))[:5]
                lines.append(
                    "          top reasons (recent): "
                    + ", ".join(f"{reason} ({status}, {n})" for (status, reason), n in ranked)
                )
    if recent:
        still_open = [d for d in recent if not _disclosed(d)]
        closed_now = [d for d in recent if _disclosed(d)]
        parts = []
        if closed_now:
            by_status = Counter(str(d.get("status")) for d in closed_now)
            parts.append(", ".join(f"{n} {status}" for status, n in sorted(by_status.items())))
        if still_open:
            failed = sum(1 for d in still_open if d.get("status") not in AWAITING)
            parts.append(
                f"{len(still_open) - failed} awaiting disclosure, {failed} rejected by a text check"
            )
        lines.append(f"recent:   last {len(recent)} samples: " + "; ".join(parts))
        shown = 0
        for d in recent:
            if shown >= MAX_SAMPLE_LINES:
                break
            status = str(d.get("status"))
            if status == "verified" or status in AWAITING:
                continue
            what = status if _disclosed(d) else f"{status} by a text check"
            reason = d.get("status_reason") or "no reason given"
            prompt = d.get("prompt", d.get("prompt_id"))
            lines.append(f"          sample {d.get('id')} (prompt {prompt}): {what}: {reason}")
            shown += 1
    return lines

"""Math: is the final answer equal to the gold answer?

Order of work, cheapest first:

1. Extract the answer: the last `\\boxed{…}` / `\\fbox{…}` / `\\boxed 5` in the answer part (after
   the reasoning), else the last "Final answer: …" / "The answer is …" line. None: `fail`.
2. Fast path, only where the verdict is certain to be math-verify's: both sides plain numbers
   (integers, decimals, `a/b`, `\\frac{a}{b}`, `\\dfrac12`) -> equal values pass; two exact
   rationals that differ fail; decimals that differ by far more than math-verify's 6-decimal
   rounding fail. Anything else falls through.
3. math-verify's own extraction and LaTeX normalisation, without its slow LaTeX-to-sympy step
   (`forms`, in the worker, cached here by text): two texts whose every regex match normalises
   alike parse to the same list, and math-verify passes a list against itself (`same_parse`:
   `18\\text{ units}` / `18`, `\\dfrac` / `\\frac`, `\\left( … \\right)`, or the very same
   text); the strings latex2sympy would get compared as numbers where they are plain numbers
   to it (`numbers`: `120^\\circ` is 120, `58,500` is 58500, `204_5` is 204, as math-verify
   reads them). Anything else, or a math-verify version this was not checked against, falls
   through.
4. math-verify, gold first (`verify(gold, answer)`: the order matters, math-verify is
   asymmetric on purpose), in a child process (`_math_worker.py`) that caches each parsed gold
   and answer (LRU keyed on the text) and that the parent kills when it overruns `timeout_s`:
   math-verify's SIGALRM timeouts work only in a main thread and cannot stop a long C call, so they
   are off (`parsing_timeout=None`, `timeout_seconds=None`). The worker is started lazily, once
   per process (a Celery child after fork gets its own), and restarted after a kill.

Gold that math-verify cannot parse gives `skipped`, never a pass (open-r1 #86, #293).

Known false-positive classes of math-verify, and what this verifier does:

* `\\pm 2021` against `2021`, either way round (math-verify #14): math-verify 0.9 compares the
  set {-2021, 2021} with 2021 and says no; we keep that (`fail`), and a test pins it.
* Equations whose sides collapse to 0 (math-verify #60): with its default normalisation,
  `3x-y+13=0` and `3x+4y+14=0` both reduce to their right side `0` and verify equal. We parse
  with `equations=True`, so two equations are compared as equations (`fail` here, and
  `6x-2y+26=0` still passes against `3x-y+13=0`). And when the gold is a value but the answer is
  an equation `expr = 0` whose left side is not a lone variable, math-verify would compare only
  the `0`; we `fail` it (reason `equation_not_a_value`), so `\\boxed{3x+4y+14=0}` does not pass
  for gold `0`, while `x = 0` still does.
* Tiny values (math-verify #14): `1/2004!` against `1/2006!` both evaluate to 0 at 15 digits;
  a pass between two exact constants that differ by a relative 1e-9 at 60 digits is turned into
  a `fail` (guard `tiny_value`).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from scoring.verifiers.base import Candidate, Gold, GuardedVerifier, Outcome, Status
from scoring.verifiers.text import final_answer, parse_reasoning

WORKER_SCRIPT = Path(__file__).with_name("_math_worker.py")
DEFAULT_TIMEOUT_S = 5.0
# The parent waits this much longer than the worker's own soft limit before killing it.
KILL_GRACE_S = 2.0
STARTUP_TIMEOUT_S = 120.0
WORKER_MEMORY_BYTES = 4 * 1024**3


# ----------------------------------------------------------------------------- fast path


_SPACING = re.compile(r"\\[!,;: ]|\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle")
_SPACE = re.compile(r"\s+")


def normalise(s: str) -> str:
    """Conservative LaTeX normalisation: only rewrites that cannot change the value."""
    s = s.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left) : -len(right)].strip()
    s = _SPACING.sub(" ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _strip_outer_group(s.strip())
    # Whitespace matters only between two letters/digits (`\pi r`, `1 000`): keep one there.
    parts = _SPACE.split(s.strip())
    out = parts[0] if parts else ""
    for p in parts[1:]:
        if out and p and out[-1].isalnum() and p[0].isalnum():
            out += " "
        out += p
    # No trailing-period stripping: math-verify fails `\boxed{7.}` and the fast path must agree.
    return out


def _strip_outer_group(s: str) -> str:
    """`{595}` -> `595`: a TeX group around the whole answer changes nothing."""
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        depth = 0
        for i, c in enumerate(s):
            if c == "{" and (i == 0 or s[i - 1] != "\\"):
                depth += 1
            elif c == "}" and s[i - 1] != "\\":
                depth -= 1
                if depth == 0 and i != len(s) - 1:
                    return s  # `{a}{b}`: the first group closes early
        s = s[1:-1].strip()
    return s


_INT = r"(?:0|[1-9]\d*)"
_NUMBER = re.compile(rf"^(-?){_INT}$")
_DECIMAL = re.compile(rf"^-?{_INT}\.\d+$")
_SLASH = re.compile(rf"^(-?)({_INT})/([1-9]\d*)$")
_FRAC = re.compile(rf"^(-?)\\frac\{{(-?)({_INT})\}}\{{([1-9]\d*)\}}$")
_FRAC_SHORT = re.compile(r"^(-?)\\frac(\d)([1-9])$")


def exact_number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_decimal) for plain numbers; None for anything else (commas, units, %…)."""
    if _NUMBER.match(s):
        return Fraction(int(s)), False
    if _DECIMAL.match(s):
        return Fraction(s), True
    if m := _SLASH.match(s):
        sign = -1 if m.group(1) else 1
        return sign * Fraction(int(m.group(2)), int(m.group(3))), False
    if m := _FRAC.match(s):
        sign = (-1 if m.group(1) else 1) * (-1 if m.group(2) else 1)
        return sign * Fraction(int(m.group(3)), int(m.group(4))), False
    if m := _FRAC_SHORT.match(s):
        sign = -1 if m.group(1) else 1
        return sign * Fraction(int(m.group(2)), int(m.group(3))), False
    return None


_DEGREES = re.compile(rf"^(-?{_INT}(?:\.\d+)?)\s*\^(?:\\circ|\{{\\circ\}})$")
_SUBSCRIPT = re.compile(rf"^(-?{_INT})_(?:\d|\{{\d+\}})$")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")


def latex2sympy_number(s: str) -> tuple[Fraction, bool] | None:
    """`exact_number` for a string exactly as math-verify hands it to latex2sympy (after its own
    normalisation), plus what latex2sympy reads as a plain number there: `120^\\circ` is 120
    (degrees are not converted), `204_5` is 204 (a subscript on a number is dropped), `58,500`
    is 58500 (digit groups, when that is the whole string). Tests pin each against math-verify.
    """
    if (m := _DEGREES.match(s)) or (m := _SUBSCRIPT.match(s)):
        s = m.group(1)
    elif _THOUSANDS.match(s):
        s = s.replace(",", "")
    return exact_number(s)


@lru_cache(maxsize=65536)
def _gold_fast(gold: str) -> tuple[str, tuple[Fraction, bool] | None]:
    norm = normalise(gold)
    return norm, exact_number(norm)


def fast_compare(gold: str, answer: str) -> Status | None:
    """PASS/FAIL when math-verify's verdict is certain from the strings alone, else None."""
    _, g = _gold_fast(gold)
    if g is None:
        return None
    a = exact_number(normalise(answer))
    if a is None:
        return None
    return compare_numbers(g, a)


def compare_numbers(g: tuple[Fraction, bool], a: tuple[Fraction, bool]) -> Status | None:
    """Two plain numbers from `exact_number`, as math-verify compares them; None if unsure."""
    (gv, gdec), (av, adec) = g, a
    if gv == av:
        return Status.PASS
    if not gdec and not adec:
        return Status.FAIL  # two exact rationals: math-verify compares them exactly
    # math-verify rounds floats to 6 decimals (at 15 significant digits): stay well clear.
    if max(abs(gv), abs(av)) < 10**6 and abs(gv - av) > Fraction(1, 10**5):
        return Status.FAIL
    return None


_EQ_ZERO = re.compile(r"^(?P<lhs>[^=<>]+)=0$")
_LONE_VARIABLE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?$|^\\[A-Za-z]+$")


def equation_not_a_value(gold: str, answer: str) -> bool:
    """`\\boxed{3x+4y+14=0}` for a value gold: math-verify would compare only the `0`."""
    g, a = normalise(gold), normalise(answer)
    if "=" in g or "\\in" in g:
        return False
    m = _EQ_ZERO.match(a)
    if not m:
        return False
    lhs = m.group("lhs")
    return bool(re.search(r"[A-Za-z]", lhs)) and not _LONE_VARIABLE.match(lhs)


# ----------------------------------------------------------------------------- worker


class MathWorker:
    """One math-verify child process, spoken to over pipes; thread-safe (one call at a time)."""

    def __init__(self, memory_bytes: int = WORKER_MEMORY_BYTES) -> None:
        self.memory_bytes = memory_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the process that started the worker: a fork must start its own
        self._buf = b""
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), str(self.memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._pid = os.getpid()
        self._buf = b""
        ready = self._readline(time.monotonic() + STARTUP_TIMEOUT_S)
        if ready is None or json.loads(ready).get("status") != "ready":
            self._kill()
            raise RuntimeError("math-verify worker did not start")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _readline(self, deadline: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("math-verify worker exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def request(self, req: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            if self._proc is not None and (
                self._pid != os.getpid() or self._proc.poll() is not None
            ):
                self._proc = None  # inherited across fork, or died: start afresh
            if self._proc is None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps({**req, "timeout": timeout_s}).encode() + b"\n")
                self._proc.stdin.flush()
                line = self._readline(time.monotonic() + timeout_s + KILL_GRACE_S)
            except (EOFError, BrokenPipeError) as exc:
                self._kill()
                self.restarts += 1
                return {"status": "error", "error": type(exc).__name__, "message": str(exc)}
            if line is None:
                # Stuck where the soft limit cannot reach (a C call): kill, restart next time.
                self._kill()
                self.restarts += 1
                return {"status": "timeout", "killed": True}
            reply: dict[str, Any] = json.loads(line)
            return reply


_worker: MathWorker | None = None
_worker_lock = threading.Lock()


def worker() -> MathWorker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = MathWorker()
            atexit.register(_worker.close)
        return _worker


@dataclass(frozen=True)
class Form:
    """How math-verify's `parse` sees a text, from the worker's `form` (see there): texts with
    equal keys parse to the same list; `value` is the string latex2sympy gets, where plain."""

    key: str
    value: str | None


_FORMS_CACHE_SIZE = 65536
_forms_cache: dict[str, Form | None] = {}


def forms(texts: tuple[str, ...], timeout_s: float) -> list[Form | None]:
    """The worker's `form` of each text (None: unknown), cached here by text: a gold's is asked
    once, and the texts not yet known go in one round trip."""
    missing = [t for t in dict.fromkeys(texts) if t not in _forms_cache]
    if missing:
        reply = worker().request({"op": "forms", "texts": missing}, timeout_s)
        if reply.get("status") != "ok":
            raise _Uncertain(reply)
        if len(_forms_cache) + len(missing) > _FORMS_CACHE_SIZE:
            _forms_cache.clear()
        for text, f in zip(missing, reply["forms"], strict=True):
            _forms_cache[text] = None if f is None else Form(f["key"], f["value"])
    return [_forms_cache.get(t) for t in texts]


class _Uncertain(Exception):
    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("status"))
        self.reply = reply


# ----------------------------------------------------------------------------- verifier


class MathVerifier(GuardedVerifier):
    """Config keys: `timeout_s` (float, default 5), `search_reasoning` (bool, default False:
    also look for a boxed answer in the reasoning when the answer part has none)."""

    name: ClassVar[str] = "math"
    version: ClassVar[int] = 2

    def check(self, candidate: Candidate, gold: Gold, config: dict[str, Any]) -> Outcome:
        gold_text = (gold.answer or "").strip()
        if not gold_text:
            return Outcome(Status.SKIPPED, 0.0, {"reason": "no_gold"})
        timeout_s = float(config.get("timeout_s", DEFAULT_TIMEOUT_S))
        parts = parse_reasoning(candidate)
        answer, how = final_answer(parts.answer)
        if answer is None and config.get("search_reasoning", False):
            answer, how = final_answer(parts.reasoning)
        if answer is None:
            return Outcome(Status.FAIL, 0.0, {"reason": "no_answer"})
        details: dict[str, Any] = {"extracted": answer[:200], "extracted_from": how}

        fast = fast_compare(gold_text, answer)
        if fast is not None:
            return _outcome(fast, details, path="fast")
        if equation_not_a_value(gold_text, answer):
            return _outcome(Status.FAIL, details, path="guard", reason="equation_not_a_value")
        # Cheaper than math-verify's parse: its extraction and normalisation, without sympy.
        try:
            g_form, a_form = forms((gold_text, answer), timeout_s)
        except _Uncertain as exc:
            return _worker_outcome(exc.reply, details)
        if g_form is not None and a_form is not None:
            if g_form.key == a_form.key:
                return _outcome(Status.PASS, details, path="same_parse")
            g_num = latex2sympy_number(g_form.value) if g_form.value is not None else None
            a_num = latex2sympy_number(a_form.value) if a_form.value is not None else None
            if g_num is not None and a_num is not None:
                verdict = compare_numbers(g_num, a_num)
                if verdict is not None:
                    return _outcome(verdict, details, path="numbers")

        try:
            reply = _verdict(gold_text, answer, timeout_s)
        except _Uncertain as exc:
            reply = exc.reply
        return _worker_outcome(reply, details)


_CACHEABLE = frozenset({"pass", "fail", "answer_unparsable", "gold_unparsable"})


@lru_cache(maxsize=16384)
def _verdict(gold: str, answer: str, timeout_s: float) -> dict[str, Any]:
    """math-verify's verdict by (gold, extracted answer): samples of one prompt repeat answers,
    and a repeat then costs no round trip. Timeouts and errors raise, so they are not kept."""
    reply = worker().request({"op": "verify", "gold": gold, "answer": answer}, timeout_s)
    if reply.get("status") not in _CACHEABLE:
        raise _Uncertain(reply)
    return reply


def _outcome(status: Status, details: dict[str, Any], **more: Any) -> Outcome:
    return Outcome(status, 1.0 if status is Status.PASS else 0.0, {**details, **more})


def _worker_outcome(reply: dict[str, Any], details: dict[str, Any]) -> Outcome:
    status = reply.get("status")
    info = {k: v for k, v in reply.items() if k != "status"}
    details = {**details, **info, "path": "math_verify"}
    if status == "pass":
        return _outcome(Status.PASS, details)
    if status == "fail":
        return _outcome(Status.FAIL, details)
    if status == "answer_unparsable":
        return _outcome(Status.FAIL, details, reason="answer_unparsable")
    if status == "gold_unparsable":
        return Outcome(Status.SKIPPED, 0.0, {**details, "reason": "gold_unparsable"})
    if status == "timeout":
        return Outcome(Status.TIMEOUT, 0.0, details)
    return Outcome(Status.ERROR, 0.0, details)

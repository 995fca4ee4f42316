"""math-verify in a child process: the hard time limit for the math verifier.

Run as a script (`python _math_worker.py`), it reads one JSON request per line on stdin and
writes one JSON reply per line on stdout. It imports nothing from the project, so it starts the
same from a Celery child, a test or a benchmark.

Why a process: math-verify's own timeouts use SIGALRM, which only works in the main thread, and
no signal can interrupt sympy while it is inside one long C call (a huge integer power, say).
Here math-verify runs with its timeouts off; the worker keeps a soft limit of its own
(setitimer: the worker runs in its own main thread, so that always works), and the parent kills
the worker outright when even that does not answer in time.

Requests:  {"op": "gold", "gold": str}
           {"op": "verify", "gold": str, "answer": str, "timeout": float}
           {"op": "forms", "texts": [str, ...]}
Replies:   {"status": "ok" | "pass" | "fail" | "gold_unparsable" | "answer_unparsable"
                      | "timeout" | "error", ...}

`forms` runs math-verify's extraction and LaTeX normalisation, but not the (slow, ANTLR)
LaTeX-to-sympy step: see `form`. It lets the parent decide, without a full parse, when two
texts are certain to parse to the very same thing, and read plain numbers as math-verify does.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import resource
import signal
import sys
from functools import lru_cache
from importlib.metadata import version
from typing import Any

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, normalize_latex
from math_verify import LatexExtractionConfig, parse, verify
from math_verify.parser import get_extraction_regexes

# equations=False: math-verify's deprecated equation splitting (`equations=True`) cuts a text
# with two `=` at its last one, even inside a subscript, so `S = \sum_{k=0}^{n} k` and
# `S = \prod_{k=0}^{n} k` both became `0}^{n} k` and verified equal. The parent splits
# equations itself, at top-level `=` only (math_answer rule 5). malformed_operators repairs
# `\frac12`; units drops `\text{ cm}`.
EXTRACTION = [
    LatexExtractionConfig(
        normalization_config=NormalizationConfig(
            basic_latex=True,
            units=True,
            malformed_operators=True,
            nits=True,
            boxed="all",
            equations=False,
        ),
        boxed_match_priority=0,
        try_extract_without_anchor=False,
    )
]


class SoftTimeout(BaseException):
    # BaseException: math-verify and latex2sympy catch Exception and would turn a timeout into
    # an ordinary "not equal".
    pass


_fired = False


def _alarm(_signum: int, _frame: Any) -> None:
    global _fired
    _fired = True  # remembered even if some bare `except:` swallows the exception
    raise SoftTimeout


def boxed(text: str) -> str:
    """Gold and extracted answers are bare LaTeX: box them so math-verify takes all of it."""
    t = text.strip()
    if "\\boxed" in t:
        return t
    if t.startswith("$") and t.endswith("$"):
        t = t.strip("$")
    return "\\boxed{" + t + "}"


def mv_parse(text: str) -> list[Any]:
    return parse(boxed(text), extraction_config=EXTRACTION, parsing_timeout=None)  # type: ignore[arg-type]


@lru_cache(maxsize=8192)
def _parsed(text: str) -> tuple[Any, ...]:
    # One cache for golds and answers: `parse` treats both alike. Tuples keep the cache safe
    # from callers that mutate lists.
    return tuple(mv_parse(text))


@lru_cache(maxsize=4096)
def parse_gold(gold: str) -> tuple[Any, ...]:
    # Gold repeats across every sample of a prompt: parse it once (its own counter, for tests).
    return _parsed(gold)


def parse_answer(answer: str) -> tuple[Any, ...]:
    # Samples of one prompt often end in the same answer string (right or wrong).
    return _parsed(answer)


# `form` mirrors math_verify.parser.extract_target_from_pred / extract_latex of this version; on
# any other version it answers "unknown" (None), and the parent then always asks math-verify.
FORMS_FOR_VERSION = "0.9.0"
_FORMS_OK = version("math-verify") == FORMS_FOR_VERSION


def _latex_group_config(name: str) -> NormalizationConfig:
    config = EXTRACTION[0].normalization_config
    parts = name.split("_")
    if len(parts) > 1 and parts[1] == "latexBoxed":
        config = dataclasses.replace(config, boxed="last")  # as extract_latex does
    return config


@lru_cache(maxsize=16384)
def form(text: str) -> tuple[str, str | None] | None:
    """(key, value) for how math-verify's `parse` would see `text`, without converting to sympy.

    `key` lists, in the order `parse` tries them, every regex match with all its named groups:
    the LaTeX group as math-verify normalises it (the very string it hands to latex2sympy), the
    others raw. `parse`'s result depends on nothing else, so two texts with the same key parse
    to the same list; and `verify` of a list against itself passes, because the first match's
    normalised string, not empty, is in both lists as the fallback, and equal strings compare
    equal. `value`: the string the first match hands to latex2sympy when that match has no
    other group (no percent sign and the like); the parent reads plain numbers from it.

    None (unknown) where that is not certain: no match; an empty first string; a match with
    other than one LaTeX group (math-verify then builds a set, which may raise outside its try,
    and `parse` returns []); a normalisation that raises (`parse` would return []); another
    math-verify version.
    """
    if not _FORMS_OK:
        return None
    pred = boxed(text)
    patterns = [
        (pattern, priority)
        for target_patterns, _target in get_extraction_regexes(EXTRACTION)  # type: ignore[arg-type]
        for pattern, priority in target_patterns
    ]
    patterns.sort(key=lambda x: x[1])  # stable, as extract_target_from_pred's sort
    key: list[Any] = []
    for priority, group in itertools.groupby(patterns, key=lambda x: x[1]):
        found = [(m, m.start(), m.end()) for pattern, _ in group for m in pattern.finditer(pred)]
        if not found:
            continue
        found.sort(key=lambda x: (x[2], -x[1]), reverse=True)  # rightmost first, as there
        entries = []
        for m, _, _ in found:
            groups = m.groupdict().items()
            latex = [(name, val) for name, val in groups if "_latex" in name and val]
            if len(latex) != 1 or not latex[0][0].startswith("first_latex"):
                return None
            name, raw = latex[0]
            normalised = normalize_latex(raw, config=_latex_group_config(name))
            others = [(n, v) for n, v in groups if "_latex" not in n and v is not None]
            entries.append((name, normalised, others))
        key.append((priority, entries))
    if not key:
        return None
    _name, first, others = key[0][1][0]
    if not first:
        return None
    value = None if others else first
    return json.dumps(key), value


def _forms(texts: list[str]) -> list[Any]:
    out: list[Any] = []
    for text in texts:
        try:
            f = form(text)
        except Exception:
            f = None  # `parse` would catch this and return []: leave it to math-verify
        out.append(None if f is None else {"key": f[0], "value": f[1]})
    return out


def _tiny_value_false_positive(gold: list[Any], answer: list[Any]) -> bool:
    """math-verify #14: 1/2004! == 1/2006! because both evaluate to 0.0 at 15 digits.

    When gold and answer are both exact constants (no free symbols, no floats) that differ by a
    relative 1e-9 at 60 digits, the pass is a rounding artefact.
    """
    import sympy

    g, a = gold[0], answer[0]
    if not (isinstance(g, sympy.Expr) and isinstance(a, sympy.Expr)):
        return False
    if g.free_symbols or a.free_symbols or g.has(sympy.Float) or a.has(sympy.Float):
        return False
    if not (g.is_number and a.is_number):
        return False
    gv, av = sympy.N(g, 60), sympy.N(a, 60)
    if not (gv.is_real and av.is_real):
        return False
    scale = max(abs(gv), abs(av))
    return bool(scale != 0 and abs(gv - av) / scale > sympy.Float("1e-9"))


def _undefined(parsed: tuple[Any, ...] | list[Any]) -> bool:
    """nan or zoo anywhere in a parsed value once evaluated: `\\frac{1}{1-1}`, `\\infty -
    \\infty`, `\\tan(\\pi/2)`. latex2sympy builds unevaluated expressions, and sympy's
    simplification of such forms is not the same from one process to the next, so no verdict on
    them is reproducible: they fail. Runs under the request's time limit like the rest."""
    import sympy

    for value in parsed:
        if not isinstance(value, (sympy.Basic, sympy.MatrixBase)):
            continue
        try:
            evaluated = value.doit()
        except Exception:
            evaluated = value  # what cannot be evaluated is judged as it stands
        if any(v.has(sympy.nan, sympy.zoo) for v in (value, evaluated)):
            return True
    return False


def handle(req: dict[str, Any]) -> dict[str, Any]:
    """One request. Replies never carry the gold or anything parsed from it: the parent's
    details may reach a contributor."""
    if req["op"] == "_test_stuck":
        # For the test of the parent's hard kill: stuck where SIGALRM cannot reach, as in a
        # long C call.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        import time

        time.sleep(float(req.get("seconds", 60)))
        return {"status": "error"}
    if req["op"] == "forms":
        return {"status": "ok", "forms": _forms(req["texts"])}
    if req["op"] == "cache_info":
        info = parse_gold.cache_info()
        return {"status": "ok", "hits": info.hits, "misses": info.misses, "size": info.currsize}
    gold = parse_gold(req["gold"])
    if not gold or _undefined(gold):
        return {"status": "gold_unparsable"}
    if req["op"] == "gold":
        return {"status": "ok"}
    answer = list(parse_answer(req["answer"]))
    if not answer:
        return {"status": "answer_unparsable"}
    reply: dict[str, Any] = {"answer": str(answer[0])[:200]}
    if _undefined(answer):
        return {**reply, "status": "fail", "guard": "undefined_value"}
    ok = verify(list(gold), answer, timeout_seconds=None)  # type: ignore[arg-type]
    if ok and _tiny_value_false_positive(list(gold), answer):
        reply["guard"] = "tiny_value"
        ok = False
    reply["status"] = "pass" if ok else "fail"
    return reply


def main() -> None:
    # math-verify warns once per process that its timeout is off: we know, we enforce our own.
    # (Here, not at import: a test or a benchmark that imports this module keeps its logging.)
    logging.disable(logging.WARNING)
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory > 0:
        # A runaway sympy expansion becomes a MemoryError here, not an OOM of the host.
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    signal.signal(signal.SIGALRM, _alarm)
    out = sys.stdout
    out.write('{"status": "ready"}\n')
    out.flush()
    global _fired
    for line in sys.stdin:
        _fired = False
        try:
            req = json.loads(line)
            signal.setitimer(signal.ITIMER_REAL, float(req.get("timeout") or 0))
            try:
                reply = handle(req)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except SoftTimeout:
            reply = {"status": "timeout"}
        except Exception as exc:
            reply = {"status": "error", "error": type(exc).__name__, "message": str(exc)[:300]}
        if _fired:
            reply = {"status": "timeout"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

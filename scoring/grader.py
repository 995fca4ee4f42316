"""Function-call tests (HumanEval, MBPP): the hidden tests run in a trusted harness process, the
candidate program in another, each in its own sandbox; only plain data crosses between them.

    scoring worker (this module)
        │ spec.json (tests)                      │ program.py (+ public context)
        ▼                                        ▼
    sandbox 1: harness.py  ── call f(args) ──▶  sandbox 2: candidate.py + the program
       decides every test  ◀── plain value ───   (sees inputs, never expected values)
        │ one JSON line per test
        ▼
    verdict

The harness is the `primary` of the run: when it is done, the candidate is killed. The two pipes
between them are made here and handed over; this process keeps no end of them, so either side
sees end-of-file when the other dies. See `scoring/sandbox_scripts/harness.py` for what crosses,
the comparison rules, and how each test result is named.

What cannot cross, by design: a test that passes the program an object that is not plain data
(a lambda, an instance of a class the tests define) is reported `cannot_cross`, and the verifier
answers `skipped` (never a pass); mutations the program makes to its arguments are not seen by
the tests (they get the return value only). Setup code that builds objects of the program's own
classes (MBPP's `Node` trees) runs on the program's side, and its names are passed by reference.
`import_prompts --check-reference` runs each reference solution at import, so a prompt whose
tests cannot be graded this way is found then, not at the first upload.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from scoring.sandbox import (
    MIB,
    ExitReason,
    Launch,
    SandboxFailure,
    SandboxLimits,
    SandboxResult,
    run_many,
)

SCRIPTS = Path(__file__).with_name("sandbox_scripts")
# The harness's last report line: the run is over when it appears.
DONE_LINE = b'{"done":true}\n'
# The harness holds the tests and decodes what the program sends (frames up to 16 MiB).
HARNESS_MEMORY = 512 * MIB


@cache
def _script(name: str) -> bytes:
    return (SCRIPTS / name).read_bytes()


@dataclass(frozen=True)
class FunctionTests:
    """What the harness runs, built from a prompt's gold (`from_gold`)."""

    kind: str  # "check": HumanEval's check(entry_point); "asserts": one run per assert source
    tests: list[str]  # "check": [test source defining check]; "asserts": the assert statements
    entry_points: list[str]
    prelude: list[str]  # trusted code run before the tests in the harness (imports, helpers)
    setup: str = ""  # MBPP's test_setup_code
    context: str = ""  # public code from the prompt, run before the program on its side too

    @classmethod
    def from_gold(cls, tests: dict[str, Any], *, challenge: bool = True) -> FunctionTests:
        context = str(tests.get("context") or "")
        if "test_list" in tests:
            sources = [str(t) for t in tests.get("test_list") or []]
            if challenge:
                sources += [str(t) for t in tests.get("challenge_test_list") or []]
            prelude = ["\n".join(str(i) for i in tests.get("test_imports") or [])]
            if context:
                prelude.insert(0, context)
            setup = str(tests.get("test_setup_code") or "")
            entry = [str(e) for e in tests.get("entry_points") or []] or infer_entry_points(
                sources, prelude, setup
            )
            return cls("asserts", sources, entry, prelude, setup, context)
        entry_point = str(tests.get("entry_point") or "")
        prelude = [context] if context else []
        test = str(tests["test"])
        # Helpers the tests call (HumanEval/32's `poly`) come from the trusted context, never
        # from the program: without it such a gold cannot be graded.
        unbound = infer_entry_points([test], prelude, "")
        if unbound:
            raise ValueError(f"the tests use names the gold does not define: {unbound[:5]}")
        return cls("check", [test], [entry_point], prelude, "", context)

    @property
    def total(self) -> int:
        return 1 if self.kind == "check" else len(self.tests)


class _RecordingAsserts(ast.NodeTransformer):
    """`assert cond, msg` -> `__tp_check__(lambda: cond)`.

    Every assert of a test is evaluated, whether or not the ones before it held, and a failed
    one raises nothing: the calls the program receives never depend on whether its earlier
    answers were right, so a run cannot tell the program (nor, through some side channel, a
    sibling run) which answer passed. The message is dropped (HumanEval's messages call the
    program again, on failure only). `a == b` / `a != b` become the harness's type-strict
    `__tp_eq__`."""

    def visit_Assert(self, node: ast.Assert) -> ast.Expr:
        test = node.test
        if (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq | ast.NotEq)
        ):
            equal = ast.Call(
                func=ast.Name(id="__tp_eq__", ctx=ast.Load()),
                args=[test.left, test.comparators[0]],
                keywords=[],
            )
            test = equal if isinstance(test.ops[0], ast.Eq) else ast.UnaryOp(ast.Not(), equal)
        thunk = ast.Lambda(
            args=ast.arguments(
                posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], defaults=[]
            ),
            body=test,
        )
        call = ast.Call(func=ast.Name(id="__tp_check__", ctx=ast.Load()), args=[thunk], keywords=[])
        return ast.fix_missing_locations(ast.copy_location(ast.Expr(call), node))


def recording_asserts(source: str) -> str:
    """The tests with every assert recorded rather than raised (see _RecordingAsserts). Done
    here, not in the harness, so the harness need not import `ast` (a tenth of its start-up)."""
    return ast.unparse(_RecordingAsserts().visit(ast.parse(source)))


def assigned_names(source: str) -> list[str]:
    """Top-level names a setup source assigns (`root = Node(1)` → root)."""
    names = []
    for node in ast.parse(source).body:
        for target in node.targets if isinstance(node, ast.Assign) else []:
            names += [sub.id for sub in ast.walk(target) if isinstance(sub, ast.Name)]
    return list(dict.fromkeys(names))


def free_names(tree: ast.Module) -> list[str]:
    """The names a source reads but never binds itself, in order of first use (the one rule
    for "what must come from elsewhere": the importer's entry points and the grader's)."""
    first: dict[str, tuple[int, int]] = {}
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                where = (node.lineno, node.col_offset)
                first[node.id] = min(first.get(node.id, where), where)
            else:
                bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return [name for name in sorted(first, key=first.__getitem__) if name not in bound]


def infer_entry_points(sources: list[str], prelude: list[str], setup: str) -> list[str]:
    """Names the tests use that neither Python nor the tests' own code defines: the program
    must. (The importer stores them from the reference solution where it has one.)"""
    tree = ast.parse("\n".join([*prelude, setup, *sources]))
    return [name for name in free_names(tree) if name not in _BUILTINS]


_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class GradedRun:
    results: list[dict[str, Any]]  # one per test that ran: {test, result, error?}
    harness: SandboxResult
    candidate: SandboxResult


def _builtin_exception(name: str) -> str:
    """Only the name of a built-in exception goes into a verdict: the program controls what it
    raises and prints, and a verdict must not become a channel for the tests' inputs."""
    value = getattr(builtins, name, None)
    if isinstance(value, type) and issubclass(value, BaseException):
        return name
    return "other"


def run_function_tests(
    program: str,
    spec: FunctionTests,
    limits: SandboxLimits,
    *,
    float_tol: float = 1e-6,
) -> GradedRun:
    """Runs `spec` against `program`. Raises SandboxUnavailable / SandboxFailure when no
    verdict can be drawn (the sandbox or the harness itself failed)."""
    request_r, request_w = os.pipe()  # harness → candidate
    response_r, response_w = os.pipe()  # candidate → harness
    ends = [request_r, request_w, response_r, response_w]
    harness_spec = {
        "kind": spec.kind,
        "tests": [recording_asserts(t) for t in spec.tests],
        "setup_names": assigned_names(spec.setup) if spec.setup else [],
        "entry_point": spec.entry_points[0] if spec.entry_points else "",
        "entry_points": spec.entry_points,
        "prelude": spec.prelude,
        "setup": spec.setup,
        "float_tol": float_tol,
    }
    harness = Launch(
        files={
            "harness.py": _script("harness.py"),
            "wire.py": _script("wire.py"),
            "spec.json": json.dumps(harness_spec).encode(),
        },
        script="harness.py",
        done_marker=DONE_LINE,
        own_cgroup=False,
        args=(str(request_w), str(response_r)),
        fds=(request_w, response_r),
        # -S: the harness needs nothing from site; it starts faster without it.
        python_flags=("-I", "-B", "-S"),
        limits=replace(
            limits,
            memory_bytes=max(HARNESS_MEMORY, limits.memory_bytes),
            max_output_bytes=1 * MIB,
        ),
    )
    files = {
        "candidate.py": _script("candidate.py"),
        "wire.py": _script("wire.py"),
        "program.py": program.encode("utf-8", "surrogatepass"),
    }
    if spec.context:
        files["context.py"] = spec.context.encode("utf-8", "surrogatepass")
    candidate = Launch(
        files=files,
        script="candidate.py",
        args=(str(request_r), str(response_w)),
        fds=(request_r, response_w),
        python_flags=("-I", "-B", "-S"),
        limits=limits,
    )

    def close_ends() -> None:
        while ends:
            os.close(ends.pop())

    try:
        # The program first: its interpreter has more to load (site, the program itself).
        candidate_res, harness_res = run_many(
            [candidate, harness], wall_s=limits.wall_s, primary=1, after_spawn=close_ends
        )
    finally:
        close_ends()
    return GradedRun(_results(spec, harness_res, candidate_res), harness_res, candidate_res)


def _results(
    spec: FunctionTests, harness: SandboxResult, candidate: SandboxResult
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    done = False
    for line in harness.stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("done"):
            done = True
        elif isinstance(entry.get("test"), int):
            entries.append(entry)
    if not done:
        if harness.exit_reason is not ExitReason.TIMEOUT:
            # The trusted side died on its own: no verdict can be drawn from this run.
            raise SandboxFailure(
                f"test harness ended without a report ({harness.exit_reason}, returncode "
                f"{harness.returncode}, {harness.wall_ms:.0f} ms, "
                f"stdout {harness.stdout[-200:]!r}, stderr {harness.stderr.strip()[-300:]!r}; "
                f"program: {candidate.exit_reason})"
            )
        entries.append({"test": len(entries), "result": "timeout"})
    out = []
    for entry in entries:
        result = str(entry.get("result"))
        if result == "candidate_exited":
            # Why the program's process ended: a limit, or it exited / crashed by itself.
            reason = candidate.exit_reason
            result = (
                str(reason)
                if reason in (ExitReason.MEMORY, ExitReason.TIMEOUT, ExitReason.OUTPUT_LIMIT)
                else "runtime_error"
            )
        if result == "runtime_error" and entry.get("error") == "MemoryError":
            result = str(ExitReason.MEMORY)  # the program ran out of its memory limit
        clean: dict[str, Any] = {"test": entry["test"], "result": result}
        if entry.get("error"):
            if result == "cannot_cross":
                clean["error"] = str(entry["error"])[:100]  # a type name from the tests
            else:
                clean["error"] = _builtin_exception(str(entry["error"]))
        if entry.get("at"):
            clean["at"] = str(entry["at"])[:10]
        out.append(clean)
    return out

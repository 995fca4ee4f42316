"""Writes to the dataset: importing prompts, moving samples through scoring."""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
import keyword
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from scoring import counters, progress
from scoring.grader import free_names
from scoring.models import Domain, Prompt, PromptGold, PromptSet, Sample, SampleStatus
from scoring.prompt_io import RawRow
from scoring.sandbox import SandboxUnavailable, check_available
from scoring.signals import disclosed_changed, prompts_closed

ROLES = {"system", "user", "assistant"}
DOMAINS_WITH_ANSWER = {Domain.MATH, Domain.MCQ, Domain.STRING}

_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """What counts as 'the same prompt': Unicode-compatible, case- and whitespace-blind."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def messages_hash(messages: Sequence[dict[str, Any]]) -> str:
    joined = "\x1e".join(f"{m['role']}\x1f{normalise_text(str(m['content']))}" for m in messages)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


class RowError(ValueError):
    pass


@dataclass(frozen=True)
class CleanRow:
    external_id: str
    messages: list[dict[str, str]]
    answer: str
    tests: Any
    metadata: dict[str, Any]
    text_hash: str


@dataclass
class ImportReport:
    created: int = 0
    duplicates: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    checked: int = 0  # reference solutions judged (import with check_references)
    contaminated: int = 0  # new prompts sharing an 8-gram with a benchmark (scoring/decontam.py)
    near_duplicates: int = 0  # new prompts near-duplicating one of an active set, or each other


class ImportRejected(Exception):
    def __init__(self, report: ImportReport):
        self.report = report
        super().__init__(f"{len(report.invalid)} invalid rows; nothing was imported")


def _clean_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string")
    if "\x00" in value:
        raise RowError(f"{what} contains a NUL byte")
    return value


def clean_row(data: dict[str, Any], domain: str) -> CleanRow:
    tests: Any = None
    shown: str | None = None  # code: the user message built from a stub or task text
    if domain == Domain.CODE:
        tests, shown = _code_gold(data)
    if data.get("messages") not in (None, ""):
        raw_messages = data["messages"]
        if not isinstance(raw_messages, list) or not raw_messages:
            raise RowError("messages must be a non-empty list")
        messages = []
        for index, message in enumerate(raw_messages):
            if not isinstance(message, dict):
                raise RowError(f"messages[{index}] must be an object")
            role = message.get("role")
            if role not in ROLES:
                raise RowError(f"messages[{index}].role must be one of {sorted(ROLES)}")
            content = _clean_text(message.get("content"), f"messages[{index}].content")
            messages.append({"role": role, "content": content})
        if not any(m["role"] == "user" for m in messages):
            raise RowError("messages need at least one user message")
    elif shown is not None:
        messages = [{"role": "user", "content": shown}]
    elif data.get("prompt") not in (None, ""):
        messages = [{"role": "user", "content": _clean_text(data["prompt"], "prompt")}]
    else:
        raise RowError("missing field: prompt (text) or messages (chat list)")
    if not any(m["content"].strip() for m in messages):
        raise RowError("prompt text is empty")

    answer = data.get("answer")
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if answer is None:
        answer = ""
    answer = _clean_text(answer, "answer")
    if domain in DOMAINS_WITH_ANSWER and not answer.strip():
        raise RowError(f"missing field: answer (required for domain {domain})")

    if domain != Domain.CODE:
        tests = data.get("tests")
        if tests in (None, "") and data.get("test"):
            tests = {"test": data["test"], "entry_point": data.get("entry_point", "")}

    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RowError("metadata must be an object")
    raw_id = data.get("id", data.get("task_id", ""))
    external_id = "" if raw_id is None else str(raw_id)
    if len(external_id) > 200:
        raise RowError("id is longer than 200 characters")
    return CleanRow(
        external_id=external_id,
        messages=messages,
        answer=answer,
        tests=tests,
        metadata=metadata,
        text_hash=messages_hash(messages),
    )


# --- code gold -------------------------------------------------------------------------------
#
# PromptGold.tests of a code prompt has one of three shapes (the code verifier reads them):
#
# * stdin/stdout: [{"input": str, "output": str}, ...]
# * HumanEval:    {"test": source defining check(candidate), "entry_point": name,
#                  "context": trusted source run before the tests (optional),
#                  "reference": the full reference program (optional)}
# * MBPP:         {"test_list": [assert source, ...], "test_imports": [import source, ...],
#                  "test_setup_code": source, "challenge_test_list": [assert source, ...],
#                  "entry_points": [names the program must define], "reference": program}
#
# Rows may carry `tests` in one of these shapes, or the fields of HumanEval / MBPP rows as the
# datasets publish them (see _code_gold).

MAX_CODE_TESTS = 1000  # cases in one list (stdin/stdout cases, test_list, ...)
MAX_SOURCE_CHARS = 200_000  # one test, import, setup, context or reference source
MAX_GOLD_CHARS = 32 * 1024 * 1024  # one prompt's tests altogether, as JSON
_BUILTINS = frozenset(dir(builtins))
_ASSERT_KEYS = ("test", "entry_point", "context", "reference")
_MBPP_KEYS = (
    "test_list",
    "test_imports",
    "test_setup_code",
    "challenge_test_list",
    "entry_points",
    "reference",
)
_ANSWER_IN_A_BLOCK = "Answer with a single ```python code block."


def _code_gold(data: dict[str, Any]) -> tuple[Any, str | None]:
    """A code row's gold tests, and the user message to show when the row's prompt is a
    HumanEval stub or MBPP task text (None: show its prompt or messages as they are)."""
    has_messages = data.get("messages") not in (None, "")
    if data.get("tests") not in (None, "", [], {}):
        return _clean_tests(data["tests"]), None
    if data.get("test_list") is not None:
        raw = {key: data[key] for key in _MBPP_KEYS if data.get(key) is not None}
        if "reference" not in raw and data.get("code") is not None:
            raw["reference"] = data["code"]  # MBPP calls its reference solution `code`
        gold = _clean_mbpp(raw)
        task = data.get("prompt")
        if task in (None, ""):
            task = data.get("text")  # the original MBPP's name for the task
        if has_messages or task in (None, ""):
            return gold, None
        return gold, _mbpp_message(_clean_text(task, "prompt"), gold)
    if data.get("test") not in (None, ""):
        raw = {"test": data["test"], "entry_point": data.get("entry_point", "")}
        stub = data.get("prompt")
        if not (isinstance(stub, str) and _is_stub(stub, raw["entry_point"])):
            stub = None
        if stub is not None:
            raw["context"] = stub  # may define helpers that the tests call (HumanEval/32: poly)
        solution = data.get("canonical_solution")
        if data.get("reference") not in (None, ""):
            raw["reference"] = data["reference"]
        elif solution not in (None, ""):
            if not isinstance(solution, str):
                raise RowError("canonical_solution must be a string")
            # HumanEval's canonical solution is the function body that follows the stub.
            raw["reference"] = (stub or "") + solution
        gold = _clean_assert_tests(raw)
        if has_messages or stub is None:
            return gold, None
        return gold, _stub_message(stub, gold["entry_point"])
    raise RowError("missing field: tests (required for domain code)")


def _clean_tests(tests: Any) -> Any:
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError:
            raise RowError("tests is a string that is not JSON") from None
    if isinstance(tests, dict):
        if "test_list" in tests:
            return _clean_mbpp(tests)
        if "test" in tests:
            return _clean_assert_tests(tests)
        raise RowError(
            "tests must be [{input, output}, ...], {test, entry_point, ...} "
            "or {test_list, entry_points, ...}"
        )
    if isinstance(tests, list) and tests:
        if len(tests) > MAX_CODE_TESTS:
            raise RowError(f"tests has more than {MAX_CODE_TESTS} cases")
        for index, case in enumerate(tests):
            if not isinstance(case, dict) or not {"input", "output"} <= set(case):
                raise RowError(f"tests[{index}] must be an object with input and output")
            if not isinstance(case["input"], str) or not isinstance(case["output"], str):
                raise RowError(f"tests[{index}].input and .output must be strings")
        return _within_size([{"input": c["input"], "output": c["output"]} for c in tests])
    raise RowError("missing field: tests (required for domain code)")


def _clean_assert_tests(tests: dict[str, Any]) -> dict[str, Any]:
    _no_unknown_keys(tests, _ASSERT_KEYS)
    test = tests.get("test")
    if not isinstance(test, str) or not test.strip():
        raise RowError("tests.test must be assert-style source code")
    if "check" not in _top_level_names(_parse(test, "tests.test")):
        raise RowError("tests.test must define check(candidate)")
    entry_point = tests.get("entry_point", "")
    if not _is_identifier(entry_point):
        raise RowError("tests.entry_point must be a Python identifier")
    clean: dict[str, Any] = {"test": test, "entry_point": entry_point}
    context = _optional_source(tests.get("context"), "tests.context")
    if context is not None:
        clean["context"] = context
    reference = _optional_source(tests.get("reference"), "tests.reference")
    if reference is not None:
        if entry_point not in _top_level_names(_parse(reference, "tests.reference")):
            raise RowError(f"the reference solution does not define {entry_point}")
        clean["reference"] = reference
    return _within_size(clean)


def _clean_mbpp(tests: dict[str, Any]) -> dict[str, Any]:
    _no_unknown_keys(tests, _MBPP_KEYS)
    test_list = _source_list(tests.get("test_list"), "test_list", asserts=True)
    if not test_list:
        raise RowError("test_list must be a non-empty list of assert statements")
    challenge = _source_list(tests.get("challenge_test_list"), "challenge_test_list", asserts=True)
    imports = _source_list(tests.get("test_imports"), "test_imports")
    for index, (_, tree) in enumerate(imports):
        if not all(isinstance(node, ast.Import | ast.ImportFrom) for node in tree.body):
            raise RowError(f"test_imports[{index}] must hold import statements only")
    setup = _optional_source(tests.get("test_setup_code"), "test_setup_code") or ""
    setup_tree = _parse(setup, "test_setup_code")
    reference = _optional_source(tests.get("reference"), "reference")
    defined = _top_level(_parse(reference, "reference")) if reference is not None else None

    # Names the tests (and the setup code, which runs after the program: MBPP 367 builds its
    # trees with the program's `Node`) use without binding them, in order of first use.
    used: dict[str, None] = {}
    for _, tree in [*test_list, *challenge, ("", setup_tree)]:
        used.update(dict.fromkeys(free_names(tree)))
    harness: set[str] = set(_top_level(setup_tree))
    for _, tree in imports:
        harness.update(_top_level(tree))
    star = "*" in harness or (defined is not None and "*" in defined)

    found: list[str] = []
    extra_imports: list[str] = []
    for name in used:
        if name in harness:
            continue
        if defined is None:
            if name not in _BUILTINS:
                found.append(name)
            continue
        statement = defined.get(name)
        if statement is None:
            if name in _BUILTINS or star:
                continue
            raise RowError(
                f"the tests use {name}, which neither the reference solution "
                "nor test_imports / test_setup_code define"
            )
        if isinstance(statement, ast.Import | ast.ImportFrom):
            # The tests use a module the reference imports (MBPP 596: sys.getsizeof): the
            # harness imports it, rather than requiring the candidate to.
            extra_imports.append(_import_of(statement, name))
        else:
            found.append(name)

    entry_points = tests.get("entry_points")
    if entry_points is None:
        entry_points = found
        if not entry_points:
            raise RowError(
                "no entry point: the tests call nothing that "
                + (
                    "the reference solution defines"
                    if defined is not None
                    else "the program must define (and there is no reference solution)"
                )
            )
    else:
        if not isinstance(entry_points, list) or not entry_points:
            raise RowError("entry_points must be a non-empty list of names")
        for index, name in enumerate(entry_points):
            if not _is_identifier(name):
                raise RowError(f"entry_points[{index}] must be a Python identifier")
            if defined is not None and name not in defined:
                raise RowError(f"the reference solution does not define {name}")
        if len(set(entry_points)) != len(entry_points):
            raise RowError("entry_points has duplicates")
    clean: dict[str, Any] = {
        "test_list": [source for source, _ in test_list],
        "test_imports": [source for source, _ in imports] + extra_imports,
        "test_setup_code": setup,
        "challenge_test_list": [source for source, _ in challenge],
        "entry_points": list(entry_points),
    }
    if reference is not None:
        clean["reference"] = reference
    return _within_size(clean)


def _no_unknown_keys(tests: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(str(key) for key in set(tests) - set(known))
    if unknown:
        raise RowError(f"tests has unknown keys {unknown} (known: {list(known)})")


def _within_size(tests: Any) -> Any:
    if len(json.dumps(tests)) > MAX_GOLD_CHARS:
        raise RowError(f"tests are larger than {MAX_GOLD_CHARS} characters")
    return tests


def _is_identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _parse(source: str, what: str) -> ast.Module:
    if len(source) > MAX_SOURCE_CHARS:
        raise RowError(f"{what} is longer than {MAX_SOURCE_CHARS} characters")
    if "\x00" in source:
        raise RowError(f"{what} contains a NUL byte")
    try:
        return _quiet_parse(source)
    except SyntaxError as exc:
        raise RowError(f"{what} is not valid Python: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise RowError(f"{what} is not valid Python ({type(exc).__name__})") from None


def _quiet_parse(source: str) -> ast.Module:
    # Published references are full of "\d" in plain strings: no warnings for the data.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source)


def _optional_source(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string of Python source")
    _parse(value, what)
    return value


def _source_list(value: Any, what: str, *, asserts: bool = False) -> list[tuple[str, ast.Module]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowError(f"{what} must be a list of strings")
    if len(value) > MAX_CODE_TESTS:
        raise RowError(f"{what} has more than {MAX_CODE_TESTS} entries")
    out = []
    for index, source in enumerate(value):
        if not isinstance(source, str) or not source.strip():
            raise RowError(f"{what}[{index}] must be a non-empty string")
        tree = _parse(source, f"{what}[{index}]")
        if asserts and not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
            raise RowError(f"{what}[{index}] has no assert statement")
        out.append((source, tree))
    return out


def _binding(alias: ast.alias) -> str:
    return alias.asname or alias.name.split(".")[0]


def _top_level(tree: ast.Module) -> dict[str, ast.stmt]:
    """The names a module binds at top level (also inside top-level if / try / with / for
    blocks), each with the statement that binds it last."""
    found: dict[str, ast.stmt] = {}

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found[node.name] = node
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    found[_binding(alias)] = node
            else:
                targets: list[ast.AST] = []
                if isinstance(node, ast.Assign):
                    targets = list(node.targets)
                elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
                    targets = [node.target]
                elif isinstance(node, ast.With | ast.AsyncWith):
                    targets = [i.optional_vars for i in node.items if i.optional_vars]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            found[sub.id] = node
                for walrus in ast.walk(node):
                    if isinstance(walrus, ast.NamedExpr) and isinstance(walrus.target, ast.Name):
                        found.setdefault(walrus.target.id, node)
                for block in ("body", "orelse", "finalbody"):
                    inner = getattr(node, block, None)
                    if isinstance(inner, list):
                        visit(inner)
                for handler in getattr(node, "handlers", None) or ():
                    visit(handler.body)

    visit(tree.body)
    return found


def _top_level_names(tree: ast.Module) -> set[str]:
    return set(_top_level(tree))


def _import_of(statement: ast.Import | ast.ImportFrom, name: str) -> str:
    """The part of an import statement that binds `name`, as source."""
    aliases = [alias for alias in statement.names if _binding(alias) == name]
    if isinstance(statement, ast.Import):
        return ast.unparse(ast.Import(names=aliases))
    if statement.level:
        raise RowError(f"the tests use {name}, which the reference imports relatively")
    return ast.unparse(ast.ImportFrom(module=statement.module, names=aliases, level=0))


def _is_stub(source: str, entry_point: Any) -> bool:
    """Whether a prompt is Python source that defines the entry point (a HumanEval stub)."""
    if not _is_identifier(entry_point) or len(source) > MAX_SOURCE_CHARS:
        return False
    try:
        tree = _quiet_parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return isinstance(_top_level(tree).get(entry_point), ast.FunctionDef | ast.AsyncFunctionDef)


def _fence(source: str) -> str:
    fence = "```"
    while fence in source:
        fence += "`"
    return fence


def _stub_message(stub: str, entry_point: str) -> str:
    fence = _fence(stub)
    return (
        f"Complete the following Python function `{entry_point}`.\n\n"
        f"{fence}python\n{stub.strip(chr(10))}\n{fence}\n\n"
        "Write the whole function, its `def` line included, with any imports and helpers "
        f"it needs. {_ANSWER_IN_A_BLOCK}"
    )


def _mbpp_message(task: str, gold: dict[str, Any]) -> str:
    reference = gold.get("reference")
    defined = _top_level(_quiet_parse(reference)) if reference else {}
    required = [_signature(name, defined.get(name)) for name in gold["entry_points"]]
    listed = (
        required[0] if len(required) == 1 else ", ".join(required[:-1]) + " and " + required[-1]
    )
    return f"{task.strip()}\n\nYour code should define {listed}.\n\n{_ANSWER_IN_A_BLOCK}"


def _signature(name: str, statement: ast.stmt | None) -> str:
    """How the prompt names a required definition: the reference's `def` line, a class with
    its constructor and attributes, or the bare name."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) and statement.name == name:
        prefix = "async def" if isinstance(statement, ast.AsyncFunctionDef) else "def"
        returns = f" -> {ast.unparse(statement.returns)}" if statement.returns else ""
        return f"`{prefix} {name}({ast.unparse(statement.args)}){returns}`"
    if isinstance(statement, ast.ClassDef) and statement.name == name:
        init = next(
            (
                node
                for node in statement.body
                if isinstance(node, ast.FunctionDef) and node.name == "__init__"
            ),
            None,
        )
        if init is None:
            return f"`class {name}`"
        args = ast.arguments(
            posonlyargs=init.args.posonlyargs[1:],
            args=init.args.args[1:] if not init.args.posonlyargs else init.args.args,
            vararg=init.args.vararg,
            kwonlyargs=init.args.kwonlyargs,
            kw_defaults=init.args.kw_defaults,
            kwarg=init.args.kwarg,
            defaults=init.args.defaults,
        )
        self_name = (init.args.posonlyargs or init.args.args or [ast.arg(arg="self")])[0].arg
        attributes = list(
            dict.fromkeys(
                node.attr
                for node in ast.walk(init)
                if isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == self_name
            )
        )
        described = f"`class {name}` (built as `{name}({ast.unparse(args)})`"
        if attributes:
            described += ", with attributes " + ", ".join(f"`{a}`" for a in attributes)
        return described + ")"
    return f"`{name}`"


def import_prompts(
    *,
    prompt_set: PromptSet,
    rows: Iterable[RawRow],
    skip_invalid: bool = False,
    check_references: bool = False,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Adds the rows' prompts to the set. All or nothing unless `skip_invalid`.

    Prompts whose normalised text is already in the set (or earlier in the file) are dropped
    and counted, so re-importing a file changes nothing. With `check_references`, each new code
    prompt that carries a reference solution has it judged by the code verifier first (in
    `workers` threads, `progress(done, total)` after each); a reference that does not pass
    makes its row invalid. Raises SandboxUnavailable when the sandbox cannot run here.
    """
    if check_references:
        problem = check_available()
        if problem:
            raise SandboxUnavailable(problem)
    report = ImportReport()
    seen = set(Prompt.objects.filter(prompt_set=prompt_set).values_list("text_hash", flat=True))
    fresh: list[tuple[int, CleanRow]] = []
    for row in rows:
        if row.error or row.data is None:
            report.invalid.append((row.line, row.error or "unreadable row"))
            continue
        try:
            clean = clean_row(row.data, prompt_set.domain)
        except RowError as exc:
            report.invalid.append((row.line, str(exc)))
            continue
        if clean.text_hash in seen:
            report.duplicates += 1
            continue
        seen.add(clean.text_hash)
        fresh.append((row.line, clean))
    if check_references:
        # Outside any transaction: the sandbox runs take a while.
        failed = _check_references(
            fresh, prompt_set.verifier_config or {}, workers=workers, progress=progress
        )
        report.checked = sum(1 for _, c in fresh if reference_of(c.tests) is not None)
        if failed:
            report.invalid = sorted([*report.invalid, *failed.items()])
            fresh = [(line, c) for line, c in fresh if line not in failed]
    if report.invalid and not skip_invalid:
        raise ImportRejected(report)

    with transaction.atomic():
        # Imports into one set take turns on its row (PromptSet.next_seqs says why); taken
        # before the duplicate check, so another import's copies of these texts are seen.
        list(PromptSet.objects.select_for_update().filter(pk=prompt_set.pk))
        # Another import into the same set may have committed meanwhile.
        existing = set(
            Prompt.objects.filter(
                prompt_set=prompt_set, text_hash__in=[c.text_hash for _, c in fresh]
            ).values_list("text_hash", flat=True)
        )
        new = [c for _, c in fresh if c.text_hash not in existing]
        report.duplicates += len(fresh) - len(new)
        # The same text closed in another set: its gold may be public already, so the copy is
        # born closed (never leased, never judged for credit).
        closed_at = dict(
            Prompt.objects.filter(
                text_hash__in=[c.text_hash for c in new], closed_at__isnull=False
            ).values_list("text_hash", "closed_at")
        )
        # Seqs for the new prompts; the set's row stays locked until this import commits.
        seqs = iter(PromptSet.next_seqs(prompt_set.pk, len(new))) if new else iter(())
        flags = _screen(new)
        # So is a near-duplicate of a closed prompt: a reworded copy of a published problem.
        near_closed = dict(
            Prompt.objects.filter(
                pk__in={f.near_existing for f in flags.values() if f.near_existing},
                closed_at__isnull=False,
            ).values_list("pk", "closed_at")
        )
        for c in new:
            near_of = flags[c.text_hash].near_existing
            if c.text_hash not in closed_at and near_of in near_closed:
                closed_at[c.text_hash] = near_closed[near_of]
        report.contaminated = sum(1 for c in new if flags[c.text_hash].matches)
        report.near_duplicates = sum(
            1 for c in new if flags[c.text_hash].near_existing or flags[c.text_hash].near_new
        )
        made_so_far: dict[str, int] = {}
        for start in range(0, len(new), 1000):
            chunk = new[start : start + 1000]
            prompts = Prompt.objects.bulk_create(
                [
                    Prompt(
                        prompt_set=prompt_set,
                        seq=next(seqs),
                        external_id=c.external_id,
                        messages=c.messages,
                        text_hash=c.text_hash,
                        metadata=c.metadata,
                        closed_at=closed_at.get(c.text_hash),
                        contaminated=bool(flags[c.text_hash].matches),
                        contamination=flags[c.text_hash].matches,
                        near_duplicate_of_id=flags[c.text_hash].near_existing,
                    )
                    for c in chunk
                ]
            )
            made_so_far.update((p.text_hash, p.pk) for p in prompts)
            PromptGold.objects.bulk_create(
                [
                    PromptGold(prompt=p, answer=c.answer, tests=c.tests)
                    for p, c in zip(prompts, chunk, strict=True)
                ]
            )
        # Near-duplicates within this import point at the earlier prompt, now that it exists.
        for c in new:
            screen = flags[c.text_hash]
            if screen.near_existing is None and screen.near_new is not None:
                Prompt.objects.filter(pk=made_so_far[c.text_hash]).update(
                    near_duplicate_of_id=made_so_far[screen.near_new]
                )
    report.created = len(new)
    return report


@dataclass
class _Screen:
    matches: list[dict[str, str]] = field(default_factory=list)
    near_existing: int | None = None  # a prompt already stored
    near_new: str | None = None  # the text_hash of an earlier prompt of this import


def _prompt_text(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(str(m.get("content", "")) for m in messages)


def _screen(new: list[CleanRow]) -> dict[str, _Screen]:
    """Benchmark contamination (word 8-grams against THINKPOOL_DECONTAM_BENCHMARKS) and
    near-duplicates (MinHash over 3-word shingles, so one changed word in a short prompt is
    still caught) among the prompts of active sets and this import, per new prompt. Prompts
    are flagged, never dropped. The near-duplicate scan reads every prompt of the active sets
    (about 2 KB of signature each): an import-time cost linear in their number."""
    from scoring.decontam import load_benchmark_index
    from scoring.dedup import DedupSettings, find_near_duplicate_prompts

    index = load_benchmark_index()
    out: dict[str, _Screen] = {}
    for c in new:
        text = _prompt_text(c.messages)
        out[c.text_hash] = _Screen(
            matches=[
                {"benchmark": m.benchmark, "id": str(m.item_id), "ngram": m.ngram}
                for m in index.check(text)
            ]
            if len(index)
            else []
        )
    # Prompts of active sets (a copy would be collected twice) and closed ones anywhere (a
    # copy of a prompt whose gold may be public is born closed).
    existing = (
        (f"p{pk}", _prompt_text(messages))
        for pk, messages in Prompt.objects.filter(
            Q(prompt_set__is_active=True) | Q(closed_at__isnull=False)
        )
        .order_by("pk")
        .values_list("pk", "messages")
        .iterator(chunk_size=2000)
    )
    near = find_near_duplicate_prompts(
        [(f"n{c.text_hash}", _prompt_text(c.messages)) for c in new],
        existing,
        DedupSettings(shingle_size=3),
    )
    for key, match in near.items():
        screen = out[key[1:]]
        if match.startswith("p"):
            screen.near_existing = int(match[1:])
        else:
            screen.near_new = match[1:]
    return out


def reference_of(tests: Any) -> str | None:
    """The reference solution that code gold carries, if any."""
    if isinstance(tests, dict) and isinstance(tests.get("reference"), str):
        return tests["reference"] or None
    return None


def reference_problem(tests: Any, config: dict[str, Any] | None = None) -> str | None:
    """Why the reference solution in `tests` does not pass them (None: it passes, or there is
    none). Raises SandboxUnavailable when the sandbox cannot run."""
    from scoring.verifiers.base import Candidate, Gold, Status
    from scoring.verifiers.code_tests import CodeVerifier

    reference = reference_of(tests)
    if reference is None:
        return None
    outcome = CodeVerifier().verify(
        Candidate(completion="```python\n" + reference + "\n```"), Gold(tests=tests), config or {}
    )
    if outcome.status is Status.PASS:
        return None
    details = outcome.details
    if details.get("error") == "SandboxUnavailable":
        raise SandboxUnavailable(str(details.get("message", "")))
    if outcome.status in (Status.FAIL, Status.TIMEOUT, Status.SKIPPED) and details.get("reason"):
        # SKIPPED: the tests themselves cannot be graded (e.g. they pass the program a lambda,
        # which cannot cross to its process: "cannot_cross").
        text = (
            "tests cannot be graded"
            if outcome.status is Status.SKIPPED
            else "reference solution does not pass"
        )
        text += f": {details['reason']}"
        first = details.get("first_failure")
        if first is not None:
            text += f" on test {first}"
            error = next(
                (
                    t.get("error")
                    for t in details.get("tests") or ()
                    if isinstance(t, dict) and t.get("test") == first
                ),
                None,
            )
            if error:
                text += f" ({error})"
        return text
    why = details.get("error") or outcome.status
    message = details.get("message")
    return f"reference solution could not be judged: {why}" + (f": {message}" if message else "")


def _check_references(
    rows: Sequence[tuple[int, CleanRow]],
    config: dict[str, Any],
    *,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> dict[int, str]:
    """line -> why its reference fails, for the rows whose reference solution does not pass."""
    todo = [(line, c.tests) for line, c in rows if reference_of(c.tests) is not None]
    failed: dict[int, str] = {}
    if progress:
        progress(0, len(todo))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(reference_problem, tests, config): line for line, tests in todo}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                problem = future.result()
                if problem:
                    failed[futures[future]] = problem
                if progress:
                    progress(done, len(todo))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return failed


# --- closing prompts to collection ----------------------------------------------------------


def _close(prompts: QuerySet[Prompt], at: datetime | None, twins: bool) -> int:
    if twins:
        # The same text in another set has the same answer, and so, nearly always, has a
        # near-duplicate (scoring/dedup.py): once one copy's gold may be public, no copy can
        # stay open (verdicts on it would confirm what was published). Near-duplicates one
        # link away either way, then every copy of their texts.
        near = Prompt.objects.filter(
            Q(pk__in=prompts.values("pk"))
            | Q(near_duplicate_of__in=prompts.values("pk"))
            | Q(pk__in=prompts.filter(near_duplicate_of__isnull=False).values("near_duplicate_of"))
        )
        prompts = Prompt.objects.filter(text_hash__in=near.values("text_hash"))
    prompts = prompts.filter(closed_at__isnull=True)
    # Locked in id order first. Uploads hold the prompts they store for FOR SHARE until they
    # commit (contributors.services), so an upload in flight finishes before the close, and
    # one that comes after it sees the prompt closed and stores nothing.
    # NO KEY UPDATE, not UPDATE: closing changes no key, so rows that merely reference these
    # prompts (a scoring finish upserting its PromptModelStats row takes KEY SHARE on the
    # prompt) go on beside it, while uploads (FOR SHARE) still wait for the close.
    ids = list(prompts.select_for_update(no_key=True).order_by("pk").values_list("pk", flat=True))
    closed = prompts.update(closed_at=at or timezone.now())
    _count_closed_samples(ids)
    prompts_closed.send(sender=Prompt, prompt_ids=ids)
    if ids:
        disclosed_changed.send(sender=Prompt, prompt_ids=ids)
    return closed


def _count_closed_samples(prompt_ids: list[int], chunk: int = 1000) -> None:
    """Adds the samples of prompts closed now to the public per-status counters of closed
    prompts (scoring/counters.py). On PostgreSQL the samples are locked (FOR SHARE) as they
    are counted: a status change in flight (scoring.pipeline holds the row it changes) commits
    first and is counted with its new status here; one that comes after waits for this close
    and then sees the prompt closed, and moves the counters itself."""
    deltas: dict[str, int] = {}
    # The same count per prompt set's (model, temperature) cell (scoring/progress.py).
    cells: list[tuple[tuple[int, str, float], str, int]] = []
    for start in range(0, len(prompt_ids), chunk):
        ids = prompt_ids[start : start + chunk]
        if connection.vendor == "postgresql":
            qn = connection.ops.quote_name
            table, prompts = qn(Sample._meta.db_table), qn(Prompt._meta.db_table)
            with connection.cursor() as cursor:
                # Locked in id order, as the sweeps lock samples (pipeline._move_back); the
                # prompts are this transaction's own (locked by the close).
                cursor.execute(
                    "SELECT status, prompt_set_id, model, temperature, replica, count(*) FROM ("  # noqa: S608
                    "SELECT s.status, p.prompt_set_id, s.model, s.temperature, s.replica "
                    f"FROM {table} s JOIN {prompts} p ON p.id = s.prompt_id "
                    "WHERE s.prompt_id = ANY(%s) ORDER BY s.id FOR SHARE OF s) AS locked "
                    "GROUP BY status, prompt_set_id, model, temperature, replica",
                    [ids],
                )
                rows = cursor.fetchall()
        else:  # SQLite's IMMEDIATE transactions serialise writers: nothing moves meanwhile
            rows = list(
                Sample.objects.filter(prompt_id__in=ids)
                .order_by()
                .values_list("status", "prompt__prompt_set_id", "model", "temperature", "replica")
                .annotate(n=Count("pk"))
            )
        for status, set_id, model, temperature, replica, n in rows:
            name = counters.closed_samples(status)
            deltas[name] = deltas.get(name, 0) + n
            if not replica:  # a spot check's replica is no progress
                cells.append(((set_id, model, temperature), status, n))
    counters.add(deltas)
    progress.closed(cells)


@transaction.atomic
def close_prompts(
    *, prompt_ids: Iterable[int], at: datetime | None = None, twins: bool = True
) -> int:
    """Closes prompts to collection. A closed prompt is never leased again, uploads for it are
    refused (`prompt_closed`), the gold-dependent verdicts of its samples become visible to
    their contributors (scoring/disclosure.py), and its gold may be published. With `twins`
    (the default), prompts of the same normalised text in other sets are closed too. Already
    closed prompts keep their date. Returns how many prompts were closed now."""
    return _close(Prompt.objects.filter(pk__in=list(prompt_ids)), at, twins)


@transaction.atomic
def retire_prompt_set(*, prompt_set: PromptSet, at: datetime | None = None) -> int:
    """Closes every prompt of the set (and their twins elsewhere) and deactivates the set.
    Prompts imported into it later start open. Returns how many prompts were closed now."""
    closed = _close(Prompt.objects.filter(prompt_set=prompt_set), at, twins=True)
    PromptSet.objects.filter(pk=prompt_set.pk).update(is_active=False)
    prompt_set.is_active = False
    return closed


# --- maintainers' decisions on samples (the admin, scoring.tasks.bulk_samples_action) -------
#
# Each takes ids, changes only the samples the decision still applies to (so a task that runs
# twice changes nothing the second time), moves the counters as the pipeline does, and keeps
# who, what and why in the audit trail (scoring/audit.py) in the same transaction, when it
# changed anything. Returns the ids it changed.

OVERRIDE_STATUSES = (SampleStatus.VERIFIED, SampleStatus.REJECTED)
MAINTAINER_PREFIX = "maintainer: "


class DecisionError(ValueError):
    """A maintainer's decision that cannot be taken as asked (no reason, unknown status)."""


def _locked(sample_ids: Iterable[int], candidates: QuerySet[Sample] | None = None) -> list[Any]:
    """(pk, status, override, status_reason) of the samples, locked in id order (the order
    the sweeps lock them in)."""
    rows = (candidates if candidates is not None else Sample.objects.all()).filter(
        pk__in=list(sample_ids)
    )
    return list(
        rows.select_for_update()
        .order_by("pk")
        .values_list("pk", "status", "override", "status_reason")
    )


@transaction.atomic
def override_samples(*, sample_ids: Iterable[int], status: str, reason: str, by: Any) -> list[int]:
    """A maintainer approves (`verified`) or rejects (`rejected`) samples, whatever the
    verifiers said: sets `override` and the status, with the reason "maintainer: <reason>".
    The counters move exactly as for a status change of the pipeline (pipeline._count_moves:
    per (prompt, model) stats, public counters, set progress, `disclosed_changed` for closed
    prompts), and scoring again keeps the decision (pipeline._finish). A sample being scored
    right now is taken from its claim (which then settles nothing). Raises DecisionError
    without a reason."""
    from scoring import audit
    from scoring.pipeline import _count_moves

    if status not in OVERRIDE_STATUSES:
        raise DecisionError(f"status must be one of {list(OVERRIDE_STATUSES)}, not {status!r}")
    reason = (reason or "").strip()
    if not reason:
        raise DecisionError("A reason is required.")
    text = (MAINTAINER_PREFIX + reason)[:500]
    rows = _locked(sample_ids)
    changed = [
        (pk, old)
        for pk, old, override, old_reason in rows
        if (old, override, old_reason) != (status, status, text)
    ]
    ids = [pk for pk, _ in changed]
    if not ids:
        return []
    Sample.objects.filter(pk__in=ids).update(
        override=status,
        status=status,
        status_reason=text,
        status_changed_at=timezone.now(),
        next_attempt_at=None,
    )
    _count_moves([(pk, old, status) for pk, old in changed])
    audit.record(
        actor=by,
        action="sample.approve" if status == SampleStatus.VERIFIED else "sample.reject",
        model=Sample,
        ids=ids,
        reason=reason,
        details={"status": status},
    )
    return ids


@transaction.atomic
def clear_overrides(*, sample_ids: Iterable[int], by: Any, reason: str = "") -> list[int]:
    """Lifts maintainers' decisions: `override` is cleared, and the samples (those not
    quarantined: a quarantined one is judged when it is released) go back to `received`,
    their attempts starting over: the next scoring decides. Returns the ids cleared: queue
    them with scoring.tasks.queue_scoring once this has committed."""
    from scoring import audit
    from scoring.pipeline import requeue

    ids = [pk for pk, _, override, _ in _locked(sample_ids) if override]
    if not ids:
        return []
    Sample.objects.filter(pk__in=ids).update(override="")
    moved = requeue(sample_ids=ids)
    audit.record(
        actor=by,
        action="sample.clear_override",
        model=Sample,
        ids=ids,
        reason=(reason or "").strip(),
        details={"back_to_scoring": len(moved)},
    )
    return ids


@transaction.atomic
def quarantine_samples(*, sample_ids: Iterable[int], by: Any, reason: str = "") -> list[int]:
    """Holds samples from releases (and from every selection: their prompts' selections are
    rebuilt). A sample being scored is taken from its claim. Returns the ids quarantined now
    (those already quarantined are left as they are)."""
    from scoring import audit
    from scoring.tasks import schedule_rebuilds

    rows = _locked(sample_ids, Sample.objects.filter(quarantined=False))
    ids = [pk for pk, *_ in rows]
    if not ids:
        return []
    Sample.objects.filter(pk__in=ids).update(quarantined=True, quarantined_at=timezone.now())
    audit.record(
        actor=by, action="sample.quarantine", model=Sample, ids=ids, reason=(reason or "").strip()
    )
    prompts = Sample.objects.filter(pk__in=ids).order_by().values("prompt_id").distinct()
    schedule_rebuilds([row["prompt_id"] for row in prompts])
    # A quarantined sample counts for no credit and no bounty: what is built on the disclosed
    # verdicts of closed prompts settles them again (open prompts' verdicts count for nothing).
    closed = sorted(
        Prompt.objects.filter(
            pk__in=prompts.values("prompt_id"), closed_at__isnull=False
        ).values_list("pk", flat=True)
    )
    if closed:
        disclosed_changed.send(sender=Sample, prompt_ids=closed)
    return ids


@transaction.atomic
def release_samples(*, sample_ids: Iterable[int], by: Any, reason: str = "") -> list[int]:
    """Releases quarantined samples back to scoring (attempts start over). Returns the ids
    released: queue them with scoring.tasks.queue_scoring once this has committed."""
    from scoring import audit
    from scoring.pipeline import requeue

    ids = requeue(sample_ids=list(sample_ids), release=True)
    if not ids:
        return []
    audit.record(
        actor=by, action="sample.release", model=Sample, ids=ids, reason=(reason or "").strip()
    )
    return ids


@transaction.atomic
def score_again(*, sample_ids: Iterable[int], by: Any, reason: str = "") -> list[int]:
    """Samples still in `error` (poison included) go back to scoring, attempts starting over;
    one a task claimed meanwhile is left to it. A maintainer's override survives it
    (pipeline._finish). Returns the ids moved: queue them with scoring.tasks.queue_scoring
    once this has committed."""
    from scoring import audit
    from scoring.pipeline import requeue

    ids = requeue(sample_ids=list(sample_ids), only_status=SampleStatus.ERROR)
    if not ids:
        return []
    audit.record(
        actor=by, action="sample.rescore", model=Sample, ids=ids, reason=(reason or "").strip()
    )
    return ids


# --- importing a prompt file from the admin ---------------------------------------------------

# How many of a rejected import's bad rows the audit trail keeps (the page shows them all).
AUDITED_INVALID_ROWS = 100


@dataclass
class FileImport:
    """How an import of a file went: `imported` (see `report`), `rejected` (invalid rows,
    nothing imported) or `unreadable` (the file as a whole: `error`)."""

    result: str
    report: ImportReport
    error: str = ""
    set_removed: bool = False  # the set made for this import was removed again

    def summary(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "error": self.error,
            "created": self.report.created,
            "duplicates": self.report.duplicates,
            "contaminated": self.report.contaminated,
            "near_duplicates": self.report.near_duplicates,
            "invalid_count": len(self.report.invalid),
            "invalid": [list(row) for row in self.report.invalid[:AUDITED_INVALID_ROWS]],
            "set_removed": self.set_removed,
        }


def import_from_file(
    *,
    prompt_set_id: int,
    path: str,
    by: Any,
    skip_invalid: bool = False,
    field_map: dict[str, str] | None = None,
    file_name: str = "",
    new_set: bool = False,
) -> FileImport:
    """Imports a prompt file (.jsonl, .json, .csv or .parquet, as scoring.prompt_io reads
    them) into the set with `import_prompts`, all or nothing unless `skip_invalid`, and keeps
    the outcome in the audit trail ("promptset.import"). A file that cannot be read, or that
    has invalid rows, imports nothing; with `new_set` (the set was made for this import) the
    set is removed again then, if it holds no prompt."""
    import csv

    from scoring import audit
    from scoring.prompt_io import PromptFileError, read_rows

    prompt_set = PromptSet.objects.get(pk=prompt_set_id)
    shown = file_name or path
    try:
        report = import_prompts(
            prompt_set=prompt_set, rows=read_rows(path, field_map or {}), skip_invalid=skip_invalid
        )
        outcome = FileImport("imported", report)
    except ImportRejected as exc:
        outcome = FileImport("rejected", exc.report, error=str(exc))
    except (PromptFileError, UnicodeDecodeError, csv.Error, ValueError, OSError) as exc:
        # Also what pyarrow raises for a file that is not Parquet (ArrowInvalid: a ValueError).
        message = str(exc).replace(path, shown) or type(exc).__name__
        outcome = FileImport("unreadable", ImportReport(), error=message[:1000])
    if outcome.result != "imported" and new_set and not prompt_set.prompts.exists():
        prompt_set.delete()
        outcome.set_removed = True
    audit.record(
        actor=by,
        action="promptset.import",
        model=PromptSet,
        ids=[prompt_set_id],
        details={"file": shown, "set": prompt_set.name, **outcome.summary()},
    )
    return outcome

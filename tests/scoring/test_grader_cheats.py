"""Programs that try to earn `pass` without solving the problem, or to learn the hidden tests.

Each cheat worked against the old in-process harness on almost every HumanEval and MBPP
problem: the program ran in the same interpreter as its tests. Now the tests run in a trusted
harness process of their own and only plain data crosses, so every cheat must fail, on every
problem we try it on, while the reference solutions still pass.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from scoring import grader
from scoring.sandbox import SandboxLimits
from scoring.verifiers import CodeVerifier
from scoring.verifiers.base import Candidate, Gold, Status
from tests.scoring.verifiers.helpers import SHARED_DATA

from .sandbox_support import requires_sandbox

pytestmark = requires_sandbox

V = CodeVerifier()


def _rows(name: str, n: int) -> list[dict[str, Any]]:
    path = SHARED_DATA / "code" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n]


def humaneval_gold(row: dict[str, Any]) -> Gold:
    return Gold(
        tests={"test": row["test"], "entry_point": row["entry_point"], "context": row["prompt"]}
    )


def mbpp_gold(row: dict[str, Any]) -> Gold:
    entry = row["test_list"][0].split("assert ", 1)[1].lstrip("( ").split("(", 1)[0].strip()
    for prefix in ("set", "sorted", "math.isclose", "not"):
        if entry == prefix:
            entry = row["test_list"][0].split(prefix + "(", 1)[1].split("(", 1)[0].strip()
    return Gold(
        tests={
            "test_list": row["test_list"],
            "test_imports": row.get("test_imports") or [],
            "entry_points": [entry],
        }
    )


def judge(program: str, gold: Gold, **config: Any) -> tuple[Status, dict[str, Any]]:
    out = V.verify(Candidate(completion=f"```python\n{program}\n```"), gold, config)
    return out.status, out.details


# A cheat is a program that defines the entry point ({name}) without solving anything.
CHEATS: dict[str, str] = {
    # Look for the old harness's "ran to the end" nonce, or the tests' expected values, in the
    # interpreter: frames, modules, gc. The tests are in no frame, module or object here.
    "dig_in_the_interpreter": """
import gc, sys
def {name}(*args, **kwargs):
    found = []
    frame = sys._getframe()
    while frame is not None:
        found.extend(v for v in frame.f_globals.values() if isinstance(v, (int, str, list)))
        frame = frame.f_back
    for obj in gc.get_objects():
        if isinstance(obj, dict) and "check" in obj:
            raise SystemExit(0)
    return found[0] if found else None
""",
    # Exit 0 before any test runs, or make exit "look fine".
    "exit_zero_at_import": "import os\nos._exit(0)\ndef {name}(*a, **k):\n    return None\n",
    "sys_exit_patched": """
import sys
sys.exit = lambda *a: None
def {name}(*a, **k):
    raise SystemExit(0)
""",
    # An object equal to everything, and hashable, truthy, close to every number.
    "always_equal": """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __hash__(self): return 0
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __sub__(self, other): return 0
    def __rsub__(self, other): return 0
    def __abs__(self): return 0
    def __len__(self): return 0
    def __iter__(self): return iter(())
def {name}(*a, **k):
    return Anything()
""",
    # Patch what the tests call: builtins, math.isclose, the assert machinery.
    "patch_builtins": """
import builtins, math
builtins.abs = lambda x: 0
builtins.all = lambda x: True
builtins.set = lambda *a: 0
builtins.sorted = lambda *a, **k: 0
builtins.len = lambda x: 0
math.isclose = lambda *a, **k: True
math.fabs = lambda x: 0
builtins.AssertionError = type("Nothing", (Exception,), {{}})
def {name}(*a, **k):
    return None
""",
    # Swap `check` or the tests' functions with a trace function.
    "settrace": """
import sys
def tracer(frame, event, arg):
    if frame.f_code.co_name in ("check", "<module>"):
        frame.f_locals.clear()
    return tracer
sys.settrace(tracer)
def {name}(*a, **k):
    return None
""",
    # Read the test source from the filesystem or the caller.
    "read_the_tests": """
import os
def {name}(*a, **k):
    for root, dirs, files in os.walk("/"):
        if root.startswith(("/proc", "/sys", "/usr")):
            continue
        for f in files:
            try:
                text = open(os.path.join(root, f)).read()
            except Exception:
                continue
            if "assert" in text or "def check" in text:
                raise SystemExit("found " + os.path.join(root, f))
    return None
""",
    # Print what a harness report looks like, on stdout and on every inherited descriptor.
    "forge_a_report": """
import os, struct, json
line = b'{{"test": 0, "result": "ok"}}\\n{{"done": true}}\\n'
print(line.decode())
for fd in range(3, 64):
    for payload in (line, struct.pack(">I", 12) + b'{{"value":1}}'):
        try:
            os.write(fd, payload)
        except OSError:
            pass
def {name}(*a, **k):
    return None
""",
    # Kill everything it can see, hoping to take the judge down with it.
    "kill_everything": """
import os, signal
for pid in range(1, 400):
    try:
        os.kill(pid, signal.SIGKILL) if pid != os.getpid() else None
    except OSError:
        pass
def {name}(*a, **k):
    return None
""",
    # Raise StopIteration so a test looping over the answers would stop early.
    "stop_iteration": "def {name}(*a, **k):\n    raise StopIteration\n",
}


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_cheats_fail_on_humaneval(cheat: str) -> None:
    rows = _rows("humaneval.jsonl", 12)
    statuses = {}
    for row in rows:
        program = CHEATS[cheat].format(name=row["entry_point"])
        statuses[row["task_id"]], _ = judge(program, humaneval_gold(row), timeout_s=5)
    assert {k: v for k, v in statuses.items() if v is Status.PASS} == {}
    assert set(statuses.values()) <= {Status.FAIL}


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_cheats_fail_on_mbpp(cheat: str) -> None:
    rows = _rows("mbpp.jsonl", 12)
    statuses = {}
    for row in rows:
        gold = mbpp_gold(row)
        program = CHEATS[cheat].format(name=gold.tests["entry_points"][0])
        statuses[row["task_id"]], _ = judge(program, gold, timeout_s=5)
    assert {k: v for k, v in statuses.items() if v is Status.PASS} == {}


def test_the_same_problems_pass_with_their_reference_solutions() -> None:
    for row in _rows("humaneval.jsonl", 12):
        status, _ = judge(row["prompt"] + row["canonical_solution"], humaneval_gold(row))
        assert status is Status.PASS, row["task_id"]
    for row in _rows("mbpp.jsonl", 12):
        status, _ = judge(row["code"], mbpp_gold(row))
        assert status is Status.PASS, row["task_id"]


def test_the_program_never_sees_expected_values_or_test_source() -> None:
    """The program records everything it can observe; none of it names an expected value."""
    gold = Gold(
        tests={
            "test_list": [
                "assert triple(2) == 6",
                "assert triple(31337) == 94011",
                "assert triple(-4) == -12",
            ],
            "entry_points": ["triple"],
        }
    )
    program = """
import gc, os, sys
def triple(x):
    seen = [repr(sys.argv), repr(os.listdir('/sandbox'))]
    seen += [repr(v) for v in sys._getframe(1).f_globals.values()]
    seen += [repr(o)[:200] for o in gc.get_objects() if isinstance(o, (str, dict))]
    blob = ' '.join(seen)
    if '94011' in blob or 'assert' in blob:
        return 'LEAK'
    return x * 3
"""
    status, details = judge(program, gold)
    assert status is Status.PASS
    assert details["passed"] == 3


def test_values_cross_as_plain_data_compared_type_strictly() -> None:
    tests = {
        "test_list": [
            "assert f('bool') == True",
            "assert f('list') == [1, 2]",
            "assert f('float') == 0.3",
            "assert f('counter') == {'a': 2}",
            "assert f('match')",
            "assert not f('nomatch')",
            "assert f('big') == 2**200",
        ],
        "entry_points": ["f"],
    }
    honest = """
import collections, re
def f(kind):
    return {
        'bool': True, 'list': [1, 2], 'float': 0.1 + 0.2,
        'counter': collections.Counter('aa'), 'match': re.match('a', 'abc'),
        'nomatch': re.match('z', 'abc'), 'big': 2**200,
    }[kind]
"""
    status, details = judge(honest, Gold(tests=tests), fail_fast=False)
    assert (status, details["passed"]) == (Status.PASS, 7)
    # The same answers in the wrong types: 1 for True, a tuple for a list.
    loose = honest.replace("'bool': True", "'bool': 1").replace("[1, 2]", "(1, 2)")
    status, details = judge(loose, Gold(tests=tests), fail_fast=False)
    assert status is Status.FAIL
    assert [t["result"] for t in details["tests"][:2]] == ["wrong_answer", "wrong_answer"]
    assert details["passed"] == 5


def test_objects_of_the_programs_classes_stay_there_and_cross_back_by_handle() -> None:
    """MBPP builds `Pair(…)` objects in the asserts: they are made in the program's process and
    passed back by handle; they equal nothing but themselves."""
    tests = {
        "test_list": [
            "assert longest([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)]) == 3",
            "assert Pair(1, 2) != Pair(1, 2)",
        ],
        "entry_points": ["longest", "Pair"],
    }
    program = """
class Pair:
    def __init__(self, a, b):
        self.a, self.b = a, b
    def __eq__(self, other):
        return True
def longest(pairs):
    best = [1] * len(pairs)
    for i in range(len(pairs)):
        for j in range(i):
            if pairs[i].a > pairs[j].b:
                best[i] = max(best[i], best[j] + 1)
    return max(best)
"""
    status, details = judge(program, Gold(tests=tests), fail_fast=False)
    assert (status, details["passed"]) == (Status.PASS, 2)


def test_setup_code_that_needs_the_programs_classes_runs_on_its_side() -> None:
    tests = {
        "test_setup_code": "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\n",
        "test_list": ["assert height(root) == 3"],
        "entry_points": ["height"],
    }
    program = """
class Node:
    def __init__(self, v):
        self.v, self.left, self.right = v, None, None
def height(node):
    return 0 if node is None else 1 + max(height(node.left), height(node.right))
"""
    assert judge(program, Gold(tests=tests))[0] is Status.PASS
    assert judge(program.replace("1 + max", "2 + max"), Gold(tests=tests))[0] is Status.FAIL


def test_a_test_that_passes_what_cannot_cross_is_not_judged() -> None:
    tests = {"test_list": ["assert apply(lambda x: x + 1, 1) == 2"], "entry_points": ["apply"]}
    status, details = judge("def apply(f, x):\n    return f(x)\n", Gold(tests=tests))
    assert status is Status.SKIPPED  # never a pass: the sample is "could not be judged"
    assert details["reason"] == "cannot_cross"


def test_helpers_the_tests_call_come_from_the_prompt_not_the_program() -> None:
    """HumanEval/32 checks `poly(coeffs, candidate(coeffs))` with the prompt's `poly`: a program
    that redefines `poly` to return 0 does not pass."""
    (row,) = [r for r in _rows("humaneval.jsonl", 40) if r["task_id"] == "HumanEval/32"]
    cheat = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 12345.0\n"
    assert judge(cheat, humaneval_gold(row))[0] is Status.FAIL
    assert judge(row["prompt"] + row["canonical_solution"], humaneval_gold(row))[0] is Status.PASS
    # A gold without the prompt's code cannot be graded safely: skipped, never a pass.
    bare = Gold(tests={"test": row["test"], "entry_point": "find_zero"})
    status, details = judge(row["prompt"] + row["canonical_solution"], bare)
    assert (status, details["reason"]) == (Status.SKIPPED, "bad_tests")


def test_details_name_builtin_exceptions_only() -> None:
    """What a program prints or raises is its own choice: it could carry the inputs it was
    called with. Verdict details keep only the names of built-in exceptions."""
    tests = {"test_list": ["assert f(424242) == 1"], "entry_points": ["f"]}
    program = """
import sys
class Input424242Error(Exception):
    pass
def f(x):
    sys.stderr.write(f"saw {x}\\n")
    raise Input424242Error(str(x))
"""
    status, details = judge(program, Gold(tests=tests))
    assert status is Status.FAIL
    assert "424242" not in json.dumps(details)
    assert details["tests"][0] == {"test": 0, "result": "runtime_error", "error": "other"}


def test_a_program_killed_by_its_limits_fails_with_the_limit() -> None:
    tests = {"test_list": ["assert f(1) == 1"], "entry_points": ["f"]}
    memory = "def f(x):\n    b = bytearray(1 << 30)\n    return 1\n"
    status, details = judge(memory, Gold(tests=tests), memory_mb=128)
    assert (status, details["tests"][0]["result"]) == (Status.FAIL, "memory")
    spin = "def f(x):\n    while True:\n        pass\n"
    status, details = judge(spin, Gold(tests=tests), timeout_s=2)
    assert (status, details["tests"][0]["result"]) == (Status.FAIL, "timeout")


def test_concurrent_gradings_do_not_disturb_each_other() -> None:
    """A fork bomb graded at the same time as honest programs: every honest one passes."""
    tests = {"test_list": ["assert f(2) == 4"], "entry_points": ["f"]}
    bomb = "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n" + (
        "        except OSError:\n            pass\n"
    )
    results: dict[str, Status] = {}

    def run_bomb() -> None:
        results["bomb"] = judge(bomb, Gold(tests=tests), timeout_s=6)[0]

    thread = threading.Thread(target=run_bomb)
    thread.start()
    honest = [judge("def f(x):\n    return x * x\n", Gold(tests=tests))[0] for _ in range(6)]
    thread.join()
    assert honest == [Status.PASS] * 6
    assert results["bomb"] is Status.FAIL


def test_the_harness_spec_reaches_only_the_harness() -> None:
    """The plumbing itself: the program's sandbox holds the program and the runner, never the
    tests."""
    spec = grader.FunctionTests.from_gold(
        {"test_list": ["assert g() == 'secret-expected'"], "entry_points": ["g"]}
    )
    program = (
        "import os\nprint(sorted(os.listdir('/sandbox')), flush=True)\ndef g():\n    return None\n"
    )
    run = grader.run_function_tests(program, spec, SandboxLimits(wall_s=10))
    assert run.results == [{"test": 0, "result": "wrong_answer"}]
    assert run.candidate.stdout == "['candidate.py', 'program.py', 'wire.py']\n"


def _calls_seen(program: str, spec: grader.FunctionTests) -> tuple[list[dict[str, Any]], str]:
    run = grader.run_function_tests(program, spec, SandboxLimits(wall_s=10))
    return run.results, run.candidate.stdout


def test_the_calls_a_program_gets_never_depend_on_whether_it_was_right() -> None:
    """If a failed assert stopped the tests, the next call (or its absence) would tell the
    program its last answer was wrong, and colluding runs could share that bit and search the
    answers out. Every assert is evaluated, and messages (which call again on failure) are not."""
    spec = grader.FunctionTests.from_gold(
        {
            "test": (
                "def check(candidate):\n"
                "    assert candidate(1) == 10, f'got {candidate(1)}'\n"
                "    assert candidate(2) == 20\n"
                "    for x in (3, 4):\n"
                "        assert candidate(x) == 10 * x, candidate(x)\n"
            ),
            "entry_point": "f",
        }
    )
    spy = "def f(x):\n    print('call', x, flush=True)\n    return {answer}\n"
    right, right_calls = _calls_seen(spy.format(answer="10 * x"), spec)
    wrong, wrong_calls = _calls_seen(spy.format(answer="x"), spec)
    assert right == [{"test": 0, "result": "ok"}]
    assert wrong == [{"test": 0, "result": "wrong_answer"}]
    assert right_calls == wrong_calls == "call 1\ncall 2\ncall 3\ncall 4\n"
    mbpp = grader.FunctionTests.from_gold(
        {"test_list": [f"assert f({i}) == {10 * i}" for i in range(1, 4)], "entry_points": ["f"]}
    )
    right, right_calls = _calls_seen(spy.format(answer="10 * x"), mbpp)
    wrong, wrong_calls = _calls_seen(spy.format(answer="x"), mbpp)
    assert [r["result"] for r in right] == ["ok"] * 3
    assert [r["result"] for r in wrong] == ["wrong_answer"] * 3
    assert right_calls == wrong_calls == "call 1\ncall 2\ncall 3\n"


def test_every_stdin_stdout_test_runs_after_a_failure() -> None:
    tests = [{"input": f"{i}\n", "output": f"{2 * i}\n"} for i in range(3)]
    status, details = judge("n = int(input())\nprint(n if n == 1 else 2 * n)\n", Gold(tests=tests))
    assert status is Status.FAIL
    assert [t["result"] for t in details["tests"]] == ["ok", "wrong_answer", "ok"]
    # Nothing the program chose (exit status, timing) is kept.
    assert all(set(t) <= {"test", "result", "error"} for t in details["tests"])


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("115975.104", "115975"),  # an int only exactly, whatever the float tolerance
        ("123456700.0", "123456789"),
        ("complex(123456789, 5)", "123456789"),
        ("{True: 2}", "{1: 2}"),
        ("{1.0: 2}", "{1: 2}"),
        ("{1, 2.0}", "{1, 2}"),
        ("[1, True]", "[1, 1]"),
        ("1", "True"),
    ],
)
def test_type_strict_equality_refuses_near_misses(returned: str, expected: str) -> None:
    tests = {"test_list": [f"assert f() == {expected}"], "entry_points": ["f"]}
    status, details = judge(f"def f():\n    return {returned}\n", Gold(tests=tests))
    assert (status, details["tests"][0]["result"]) == (Status.FAIL, "wrong_answer")


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("0.1 + 0.2", "0.3"),
        ("2.0", "2"),
        ("complex(2, 0)", "2"),
        ("{'a': 0.30000001}", "{'a': 0.3}"),
    ],
)
def test_type_strict_equality_keeps_what_python_and_the_tolerance_allow(
    returned: str, expected: str
) -> None:
    tests = {"test_list": [f"assert f() == {expected}"], "entry_points": ["f"]}
    assert judge(f"def f():\n    return {returned}\n", Gold(tests=tests))[0] is Status.PASS


def test_a_huge_first_frame_is_a_failed_program_not_a_harness_error() -> None:
    """A program that floods the harness before its first answer must fail, not turn its
    verdict into a (retried) `error`."""
    bomb = (
        "import os, struct\n"
        "payload = b'{\"load\":\"ok\",\"x\":[' + b'[[]],' * 3_000_000 + b'[]]}'\n"
        "os.write(int(__import__('sys').argv[2]), struct.pack('>I', len(payload)) + payload)\n"
        "def f(x):\n    return x\n"
    )
    tests = {"test_list": ["assert f(1) == 1"], "entry_points": ["f"]}
    status, details = judge(bomb, Gold(tests=tests))
    assert status is Status.FAIL
    assert details["tests"][0]["result"] == "runtime_error"

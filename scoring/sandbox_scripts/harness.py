"""The trusted side of code grading: runs the hidden tests and decides each one.

Runs in a sandbox of its own, a separate process from the candidate program. It holds the tests
(/sandbox/spec.json); the candidate never sees them, its state or this process. Every call the
tests make to the program goes over a pipe as plain data (`wire`), and the value that comes back
is rebuilt here from that data, so the tests compare built-in objects this process made: a
program cannot hand back an object whose `__eq__` always says yes, patch `math.isclose` or
`builtins`, trace the tests with `sys.settrace`, read the expected values, or exit early with a
status that looks like success. Names the tests call that the program must define (the entry
points) are bound to proxies here; every other name the tests use (builtins, `math`, helpers
from the prompt such as HumanEval's `poly`) is this process's own.

Every `assert c` of the tests is evaluated and recorded (the grader rewrote it to
`__tp_check__(lambda: c)`): a failed one does not stop the test, so the calls the program gets
never depend on whether its earlier answers were right. `a == b` / `a != b` compare
type-strictly (`strict_eq`): `True` is not `1`, a list is not a tuple, dict keys and set members
keep their types, an int equals a float only exactly, and two floats are equal within
`float_tol` (relative or absolute), recursively inside lists, tuples and dict values.

    python harness.py REQUEST_FD RESPONSE_FD

Report on stdout, one JSON line per test: {"test": i, "result": "ok" | "wrong_answer" |
"runtime_error" | "cannot_cross" | "candidate_exited" | "test_error", "error"?: name}, then
{"done": true}.
"""

import builtins
import cmath
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire

REQUEST_FD, RESPONSE_FD = int(sys.argv[1]), int(sys.argv[2])
with open("/sandbox/spec.json", encoding="utf-8") as _f:
    SPEC = wire.loads(_f.read())
FLOAT_TOL = float(SPEC.get("float_tol", 1e-6))
_PLAIN = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)
_NUMBERS = (int, float, complex)


def _typed(values):
    # 1, 1.0 and True are one key to a dict or a set; here they are three.
    return {(type(v), v) for v in values}


def strict_eq(a, b):
    ta, tb = type(a), type(b)
    if ta not in _PLAIN or tb not in _PLAIN:
        return a == b  # the tests' own objects keep their own equality
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in _NUMBERS and tb in _NUMBERS:
        if ta is float and tb is float:
            # Only two floats are equal within the tolerance.
            return a == b or math.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)
        if ta is complex and tb is complex:
            return a == b or cmath.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)
        if ta is complex or tb is complex:
            c, r = (a, b) if ta is complex else (b, a)
            return c.imag == 0 and strict_eq(c.real, r)
        return a == b  # an int and a float: exactly, as Python compares them
    if ta in (set, frozenset) and tb in (set, frozenset):
        return _typed(a) == _typed(b)
    if ta is not tb:
        return False
    if ta is list or ta is tuple:
        return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b, strict=True))
    if ta is dict:
        return _typed(a) == _typed(b) and all(strict_eq(a[k], b[k]) for k in a)
    return a == b


class CandidateGone(Exception):
    """The program's process ended, or broke the protocol: no further call can be answered."""


class CandidateRaised(Exception):
    """The program raised an exception that is not a plain built-in one."""

    _tp_from_candidate = True


class TestCannotCross(Exception):
    """The tests passed the program a value that is not plain data: a test of this shape cannot
    be graded across the process boundary."""


_channel_open = [True]


def _request(message):
    if not _channel_open[0]:
        raise CandidateGone("closed")
    try:
        wire.send(REQUEST_FD, message)
        return wire.receive(RESPONSE_FD)
    except (OSError, EOFError, wire.BadFrame, MemoryError, RecursionError) as exc:
        _channel_open[0] = False
        raise CandidateGone(type(exc).__name__) from None


def _mirror(name):
    """The program raised `name`: raise the built-in exception of that name here (a test may
    expect ValueError), marked as the program's, else CandidateRaised."""
    cls = getattr(builtins, name, None)
    # StopIteration / StopAsyncIteration would end a test's loop over the program's answers
    # early (`for x in map(candidate, inputs)`): never mirrored.
    if (
        isinstance(cls, type)
        and issubclass(cls, Exception)
        and not issubclass(cls, (StopIteration, StopAsyncIteration))
    ):
        try:
            return type(name, (cls,), {"_tp_from_candidate": True})("raised by the program")
        except TypeError:
            pass
    return CandidateRaised(name)


class RemoteRef:
    """A name bound by setup code that had to run on the program's side (it builds objects of
    the program's own classes, e.g. MBPP's `Node` trees): passed by name, never by value."""

    def __init__(self, name):
        self.name = name


class RemoteObject:
    """A value the program returned that is not plain data (an object of its own class, a regex
    match): it stays in the program's process. It can be passed back to the program, and it is
    true or false as it was there; it equals nothing but itself, so no `__eq__` of the
    program's ever decides a test."""

    __slots__ = ("handle", "truthy", "type_name")

    def __init__(self, handle, type_name, truthy):
        self.handle, self.type_name, self.truthy = handle, type_name, truthy

    def __bool__(self):
        return self.truthy

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<{self.type_name} in the program>"


def _outgoing(value):
    if isinstance(value, RemoteObject):
        return {"r": value.handle}
    if isinstance(value, RemoteRef):
        return {"n": value.name}
    return None


def _incoming(tag, body):
    if tag == "h" and type(body) is dict:
        return RemoteObject(int(body["id"]), str(body["type"])[:100], bool(body["truthy"]))
    raise wire.BadFrame("unknown tag")


class Proxy:
    def __init__(self, name):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        def arg(value):
            try:
                return wire.encode(value, 0, _outgoing)
            except wire.CannotCross as exc:
                raise TestCannotCross(str(exc)) from None

        reply = _request(
            {
                "op": "call",
                "fn": self.__name__,
                "args": [arg(a) for a in args],
                "kwargs": {str(k): arg(v) for k, v in kwargs.items()},
            }
        )
        if "value" in reply:
            try:
                return wire.decode(reply["value"], 0, _incoming)
            except (wire.BadFrame, ValueError, TypeError, KeyError, RecursionError, MemoryError):
                _channel_open[0] = False
                raise CandidateGone("bad value") from None
        if "raised" in reply:
            raise _mirror(str(reply["raised"])[:100])
        if "missing" in reply:
            raise _mirror("NameError")
        _channel_open[0] = False
        raise CandidateGone("bad reply")


def _result(test, exc):
    if exc is None:
        return {"test": test, "result": "ok"}
    if isinstance(exc, CandidateGone):
        return {"test": test, "result": "candidate_exited"}
    if isinstance(exc, TestCannotCross):
        return {"test": test, "result": "cannot_cross", "error": str(exc)[:100]}
    if isinstance(exc, AssertionError):
        return {"test": test, "result": "wrong_answer"}
    name = type(exc).__name__
    if getattr(exc, "_tp_from_candidate", False):
        return {"test": test, "result": "runtime_error", "error": name}
    # The tests themselves raised while checking a value (e.g. len() of a None the program
    # returned): the program's answer is wrong.
    return {"test": test, "result": "wrong_answer", "error": name}


def _report(entry):
    sys.stdout.write(wire.dumps(entry) + "\n")
    sys.stdout.flush()


_failures = []


def check(thunk):
    """An assert of the tests (the grader rewrote `assert c` to `__tp_check__(lambda: c)`):
    evaluated, and a failure recorded, never raised, so the test goes on and makes the same
    calls whatever the program answered."""
    try:
        held = bool(thunk())
    except (CandidateGone, TestCannotCross):
        raise  # no further call can be made, or the test cannot be graded at all
    except BaseException as exc:
        _failures.append(exc)
        return
    if not held:
        _failures.append(AssertionError())


def _run(test, code, namespace):
    _failures.clear()
    try:
        exec(code, namespace)  # noqa: S102 - the tests are ours; they run in this sandbox
    except BaseException as exc:  # SystemExit in a test is a failed test, not our exit
        return _result(test, exc)
    return _result(test, _failures[0] if _failures else None)


def main():
    try:
        # {"load": "ok"} is all the first frame may hold: a few bytes, not 16 MiB of JSON.
        first = wire.receive(RESPONSE_FD, 1024)
    except Exception:
        first = {"load": "gone"}
    namespace = {"__name__": "__tests__", "__tp_eq__": strict_eq, "__tp_check__": check}
    kind = SPEC["kind"]
    count = 1 if kind == "check" else len(SPEC["tests"])
    if first.get("load") != "ok":
        error = str(first.get("error", "exited"))[:100]
        for i in range(count):
            _report({"test": i, "result": "runtime_error", "error": error, "at": "load"})
        _report({"done": True})
        return
    try:
        for source in SPEC.get("prelude", []):
            exec(compile(source, "prelude.py", "exec"), namespace)  # noqa: S102
        setup = SPEC.get("setup") or ""
        if setup:
            try:
                exec(compile(setup, "setup.py", "exec"), namespace)  # noqa: S102
            except NameError:
                # It needs the program's own definitions: run it there, refer to its names.
                reply = _request({"op": "exec", "source": setup})
                if not reply.get("ok"):
                    raise _mirror(str(reply.get("raised", "RuntimeError"))) from None
                for name in SPEC.get("setup_names", []):
                    namespace[name] = RemoteRef(name)
        for name in SPEC.get("entry_points", []):
            # A standard-library module the tests use without importing it (MBPP's `sys` in
            # `sys.getsizeof`, which the reference solution imported): ours, not the program's.
            if name in sys.stdlib_module_names:
                namespace[name] = __import__(name)
            else:
                namespace[name] = Proxy(name)
        if kind == "check":
            exec(compile(SPEC["tests"][0], "test.py", "exec"), namespace)  # noqa: S102
            code = compile(f"check({SPEC['entry_point']})", "check.py", "exec")
            _report(_run(0, code, namespace))
        else:
            for i, source in enumerate(SPEC["tests"]):
                entry = _run(i, compile(source, f"test_{i}.py", "exec"), namespace)
                _report(entry)
                # Every test runs, pass or fail (see `check`); only a program that is gone
                # ends the run.
                if entry["result"] == "candidate_exited":
                    break
    except BaseException as exc:
        entry = _result(0, exc)
        if entry["result"] == "wrong_answer" and not isinstance(exc, AssertionError):
            entry = {"test": 0, "result": "test_error", "error": type(exc).__name__}
        entry["at"] = "setup"
        _report(entry)
    _report({"done": True})


main()

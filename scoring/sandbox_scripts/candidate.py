"""The candidate's side: load the program, then answer calls from the harness with plain data.

Runs inside the candidate's own sandbox, in the same process as the untrusted program, so
nothing here is trusted: the program may replace any of it. That is fine by construction: all
this process can ever do is send frames of plain data, and the harness (another sandbox, another
process) compares them itself. It holds no test, no expected value, no verdict.

    python candidate.py REQUEST_FD RESPONSE_FD

Files: /sandbox/program.py (the program), /sandbox/context.py (public code from the prompt,
e.g. a HumanEval stub with its helpers, run first so the program may use them).
Requests: {"op": "call", "fn": name, "args": [...], "kwargs": {...}} with wire-encoded values
({"r": id}: a handle this side gave out; {"n": name}: a name bound by setup code run here),
{"op": "exec", "source": str}.
Replies: {"value": v} (plain data, or {"h": {id, type, truthy}} for what is not) |
         {"raised": "ExceptionName"} | {"missing": name} | {"ok": true}.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire

REQUEST_FD, RESPONSE_FD = int(sys.argv[1]), int(sys.argv[2])


def _load(namespace):
    for name in ("context.py", "program.py"):
        path = os.path.join("/sandbox", name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            source = f.read()
        exec(compile(source, name, "exec"), namespace)  # noqa: S102 - this is the sandbox


_handles = []


def _keep(value):
    """A value that is not plain data stays here; the harness gets a handle it can pass back.
    Its truthiness crosses too (MBPP's `assert not re.search(...)`)."""
    _handles.append(value)
    return {"h": {"id": len(_handles) - 1, "type": type(value).__name__, "truthy": bool(value)}}


def _decoder(namespace):
    def custom(tag, body):
        if tag == "r" and type(body) is int and 0 <= body < len(_handles):
            return _handles[body]
        if tag == "n" and type(body) is str:
            return namespace[body]
        raise wire.BadFrame("unknown tag")

    return custom


def _answer(request, namespace):
    op = request.get("op")
    if op == "exec":
        exec(compile(request["source"], "setup.py", "exec"), namespace)  # noqa: S102
        return {"ok": True}
    fn = namespace.get(request.get("fn"))
    if not callable(fn):
        return {"missing": str(request.get("fn"))}
    custom = _decoder(namespace)
    args = [wire.decode(a, 0, custom) for a in request.get("args", [])]
    kwargs = {k: wire.decode(v, 0, custom) for k, v in request.get("kwargs", {}).items()}
    result = fn(*args, **kwargs)
    try:
        return {"value": wire.encode(result, 0, _keep)}
    except (wire.CannotCross, RecursionError):
        return {"value": _keep(result)}


def main():
    # Started with -S (no `site`, a quicker start): the two builtins it would add that programs
    # do call.
    import builtins

    for name in ("exit", "quit"):
        setattr(builtins, name, sys.exit)
    # `if __name__ == "__main__":` blocks of the program must not run (they read stdin, print).
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        _load(namespace)
    except BaseException as exc:  # SystemExit included: a program that exits has no functions
        wire.send(RESPONSE_FD, {"load": "error", "error": type(exc).__name__})
        return
    wire.send(RESPONSE_FD, {"load": "ok"})
    while True:
        try:
            request = wire.receive(REQUEST_FD)
        except EOFError:
            return
        try:
            reply = _answer(request, namespace)
        except BaseException as exc:
            reply = {"raised": type(exc).__name__}
        try:
            wire.send(RESPONSE_FD, reply)
        except wire.BadFrame:
            wire.send(RESPONSE_FD, {"cannot_cross": "too large"})


main()

"""Run untrusted Python in a bubblewrap sandbox with rlimits.

Every run gets:

* no network (`--unshare-net`), its own pid, ipc, uts and cgroup namespaces, and no further
  user namespaces inside (`--disable-userns`);
* a read-only filesystem that holds only what the interpreter needs (`/usr`, and `/lib`,
  `/lib64`, `/bin` as on the host: symlinks on merged-usr systems, read-only binds otherwise),
  the program itself read-only under `/sandbox`, a small tmpfs on `/tmp` (the only writable place)
  and a minimal `/proc` and `/dev`;
* a cleared environment (`--clearenv`): no SECRET_KEY, DATABASE_URL or HF_TOKEN reaches it;
* `--die-with-parent` and `--new-session` (no TIOCSTI on our terminal);
* rlimits on CPU time, address space, processes, file size and open files, and a wall-clock
  limit and an output cap enforced from outside (the whole process group is SIGKILLed).

Why bwrap runs as an unprivileged *host* uid (default 65534, `SandboxLimits.host_uid`) rather
than as root: RLIMIT_NPROC is not enforced for host root (the kernel exempts INIT_USER and
CAP_SYS_ADMIN), so a fork bomb run by root's bwrap is not contained. Started as an
unprivileged uid, bwrap builds its user namespace without privilege (this needs unprivileged
user namespaces: `kernel.unprivileged_userns_clone=1` where that sysctl exists, and
`user.max_user_namespaces > 0`), and the sandboxed program is uid/gid 65534 inside as well.
RLIMIT_NPROC counts every process of that host uid, so sandboxes that run at the same time
share the budget; `host_uid` can be set per worker process to separate them.

The interpreter is `/usr/bin/python3` (Debian's) unless `THINKPOOL_SANDBOX_PYTHON` or
`SandboxLimits.python` says otherwise. An interpreter outside `/usr` (e.g. pyenv's) has its
prefix bind-mounted read-only; it must be readable by `host_uid` (pyenv under `/root` is not).

If bubblewrap is missing or cannot start, `run_python` raises `SandboxUnavailable`. The only
bypass is `THINKPOOL_UNSAFE_NO_SANDBOX=1`, for development: it runs the program as a plain
subprocess with the same rlimits and a cleared environment but *no isolation*, and logs a
warning on every run.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import json
import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)

UNSAFE_ENV = "THINKPOOL_UNSAFE_NO_SANDBOX"
PYTHON_ENV = "THINKPOOL_SANDBOX_PYTHON"
BWRAP_ENV = "THINKPOOL_BWRAP"
DEFAULT_PYTHON = "/usr/bin/python3"
MIB = 1024 * 1024


class ExitReason(enum.StrEnum):
    OK = "ok"  # exited 0
    RUNTIME_ERROR = "runtime_error"  # non-zero exit or killed by a signal we did not send
    TIMEOUT = "timeout"  # wall or CPU limit
    MEMORY = "memory"  # MemoryError under RLIMIT_AS
    OUTPUT_LIMIT = "output_limit"  # wrote more than max_output_bytes


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 512 * MIB
    nproc: int = 64
    fsize_bytes: int = 16 * MIB
    nofile: int = 64
    max_output_bytes: int = 1 * MIB  # stdout + stderr together
    tmpfs_bytes: int = 64 * MIB
    host_uid: int = 65534
    host_gid: int = 65534
    python: str | None = None  # None: $THINKPOOL_SANDBOX_PYTHON or /usr/bin/python3


@dataclass(frozen=True)
class SandboxResult:
    exit_reason: ExitReason
    returncode: int | None
    stdout: str
    stderr: str
    wall_ms: float
    sandboxed: bool = True
    signal: int | None = None  # the signal that ended the program, if any
    truncated: bool = False
    details: dict[str, object] = field(default_factory=dict)


def _unsafe_allowed() -> bool:
    return os.environ.get(UNSAFE_ENV, "") == "1"


def _bwrap_path() -> str | None:
    return os.environ.get(BWRAP_ENV) or shutil.which("bwrap")


def interpreter(limits: SandboxLimits) -> str:
    return limits.python or os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON


def _root_binds(python: str) -> list[str]:
    """Read-only view of what the interpreter needs, mirroring the host's layout."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        p = Path(top)
        if p.is_symlink():  # merged /usr: keep the symlink, it points into /usr
            args += ["--symlink", os.readlink(p), top]
        elif p.is_dir():
            args += ["--ro-bind", top, top]
    real = Path(os.path.realpath(python))
    if not str(real).startswith("/usr/"):
        # e.g. /root/.pyenv/versions/3.11.7/bin/python3.11: bind the whole prefix.
        prefix = real.parent.parent
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


def _bwrap_argv(
    bwrap: str, limits: SandboxLimits, workdir: str, script: str, info_fd: int
) -> list[str]:
    python = interpreter(limits)
    return [
        bwrap,
        # The program itself is pid 1 of the new pid namespace (no bwrap reaper in between):
        # when it ends, the kernel kills everything else in the namespace, and no bwrap process
        # is left orphaned. With the reaper, bwrap's monitor exits without reaping it, and under
        # a container init that does not reap, every run leaves a zombie that counts against
        # RLIMIT_NPROC until sandboxes can no longer start.
        "--as-pid-1",
        # bwrap writes {"child-pid": N} here: the program's host pid, which we kill on timeout.
        "--info-fd",
        str(info_fd),
        "--unshare-user",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--disable-userns",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/tmp",  # noqa: S108 - the sandbox's private tmpfs, not the host's /tmp
        "--setenv",
        "LANG",
        "C.UTF-8",
        *_root_binds(python),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(limits.tmpfs_bytes),
        "--tmpfs",
        "/tmp",  # noqa: S108 - the sandbox's private tmpfs, not the host's /tmp
        "--ro-bind",
        workdir,
        "/sandbox",
        # bwrap's root is a writable tmpfs holding the mount points: make it read-only too.
        "--remount-ro",
        "/",
        "--chdir",
        "/tmp",  # noqa: S108 - the sandbox's private tmpfs, not the host's /tmp
        # -I: ignore PYTHON* variables and the user site; -B: no .pyc (read-only anyway).
        python,
        "-I",
        "-B",
        f"/sandbox/{script}",
    ]


def _own_process_count() -> int:
    """Processes of our uid now: RLIMIT_NPROC counts them too when we cannot switch uid."""
    uid = os.getuid()
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                n += entry.stat().st_uid == uid
    return n


def _rlimits(limits: SandboxLimits, nproc: int) -> None:
    """preexec_fn: runs in the child between fork and exec (bwrap and the program inherit)."""
    cpu = max(1, int(limits.cpu_s))
    # soft == hard: the program is pid 1 of its namespace and ignores SIGXCPU; SIGKILL it is.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _in_child(limits: SandboxLimits, nproc: int) -> None:
    # If the scoring worker dies, bwrap dies with it (and the program with bwrap). PDEATHSIG
    # follows the thread that forked: run_python is synchronous, so that thread outlives bwrap.
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    _rlimits(limits, nproc)


_PR_SET_PDEATHSIG = 1
# Loaded once in the parent: nothing may be imported or loaded between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _child_pid(info_r: int | None) -> int | None:
    """The program's host pid from bwrap's --info-fd JSON, if bwrap has written it."""
    if info_r is None:
        return None
    data = b""
    try:
        os.set_blocking(info_r, False)
        while chunk := os.read(info_r, 4096):
            data += chunk
    except (BlockingIOError, OSError):
        pass
    try:
        return int(json.loads(data or b"{}").get("child-pid") or 0) or None
    except ValueError:
        return None


def _kill(proc: subprocess.Popen[bytes], info_r: int | None) -> None:
    """Kill the program first (bwrap then reaps it and exits), then whatever is left."""
    child = _child_pid(info_r)
    if child is not None:
        try:
            os.kill(child, signal.SIGKILL)
            proc.wait(timeout=2)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _communicate(
    proc: subprocess.Popen[bytes], stdin: bytes, limits: SandboxLimits
) -> tuple[bytes, bytes, bool, bool]:
    """Feed stdin, collect output up to the cap; returns (out, err, timed_out, over_output)."""
    assert proc.stdin and proc.stdout and proc.stderr
    deadline = time.monotonic() + limits.wall_s
    sel = selectors.DefaultSelector()
    bufs: dict[int, bytearray] = {
        proc.stdout.fileno(): bytearray(),
        proc.stderr.fileno(): bytearray(),
    }
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    pending = memoryview(stdin)
    if pending:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    total = 0
    timed_out = over = False
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=left):
                fobj = key.fileobj
                if fobj is proc.stdin:
                    try:
                        n = os.write(proc.stdin.fileno(), pending[:65536])
                    except (BrokenPipeError, BlockingIOError) as exc:
                        if isinstance(exc, BlockingIOError):
                            continue
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                fd = key.fd
                # Never read more than the cap allows (+1 byte to detect the overflow).
                chunk = os.read(fd, min(65536, limits.max_output_bytes - total + 1))
                if not chunk:
                    sel.unregister(fobj)
                    continue
                bufs[fd] += chunk
                total += len(chunk)
                if total > limits.max_output_bytes:
                    over = True
                    break
            if over:
                break
    finally:
        sel.close()
        if not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
    # Keep at most the cap (the loop may have read one byte past it to detect the overflow).
    out = bytes(bufs[proc.stdout.fileno()][: limits.max_output_bytes])
    err = bytes(bufs[proc.stderr.fileno()][: max(0, limits.max_output_bytes - len(out))])
    return out, err, timed_out, over


def _classify(
    returncode: int, stderr: str, timed_out: bool, over: bool
) -> tuple[ExitReason, int | None]:
    sig = -returncode if returncode < 0 else None
    if over:
        return ExitReason.OUTPUT_LIMIT, sig
    if timed_out or sig in (signal.SIGXCPU, signal.SIGKILL):
        # SIGKILL we did not send comes from the CPU hard limit.
        return ExitReason.TIMEOUT, sig
    if sig == signal.SIGXFSZ:
        return ExitReason.OUTPUT_LIMIT, sig
    if returncode == 0:
        return ExitReason.OK, None
    last = stderr.strip().rsplit("\n", 1)[-1] if stderr.strip() else ""
    if last.startswith("MemoryError") or "Cannot allocate memory" in last:
        return ExitReason.MEMORY, sig
    # bwrap passes the program's exit status through; 128+N means the program died of signal N
    # inside the pid namespace.
    if returncode > 128 and returncode - 128 in (signal.SIGXCPU, signal.SIGKILL):
        return ExitReason.TIMEOUT, returncode - 128
    return ExitReason.RUNTIME_ERROR, sig


def run_python(
    source: str,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    *,
    unsafe_no_sandbox: bool | None = None,
) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and report how it ended.

    Raises SandboxUnavailable when bubblewrap is missing (unless the unsafe bypass is on).
    `unsafe_no_sandbox=None` reads THINKPOOL_UNSAFE_NO_SANDBOX.
    """
    limits = limits or SandboxLimits()
    unsafe = _unsafe_allowed() if unsafe_no_sandbox is None else unsafe_no_sandbox
    bwrap = _bwrap_path()
    if bwrap is None and not unsafe:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed: refusing to run untrusted code. "
            f"Install it (apt-get install bubblewrap), or for development only set {UNSAFE_ENV}=1."
        )
    with tempfile.TemporaryDirectory(prefix="tp-sbx-") as workdir:
        os.chmod(workdir, 0o755)  # noqa: S103 - readable by the unprivileged host uid
        script = Path(workdir) / "main.py"
        script.write_text(source, encoding="utf-8")
        script.chmod(0o644)
        if bwrap is None or unsafe:
            log.warning(
                "%s=1: running untrusted code WITHOUT a sandbox (development only)", UNSAFE_ENV
            )
            argv = [interpreter(limits), "-I", "-B", str(script)]
            sandboxed = False
            env: dict[str, str] | None = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
            cwd = workdir
        else:
            info_r, info_w = os.pipe()
            try:
                argv = _bwrap_argv(bwrap, limits, workdir, "main.py", info_w)
                return _run(
                    argv, stdin, limits, sandboxed=True, env={}, cwd="/", info=(info_r, info_w)
                )
            finally:
                os.close(info_r)
        return _run(argv, stdin, limits, sandboxed=sandboxed, env=env, cwd=cwd)


def _popen(
    argv: list[str],
    env: dict[str, str] | None,
    cwd: str,
    info: tuple[int, int] | None,
    limits: SandboxLimits,
    as_root: bool,
    nproc: int,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        close_fds=True,
        pass_fds=(info[1],) if info else (),
        start_new_session=True,  # its own process group, so the whole tree can be killed
        # Drop host root before bwrap: see the module docstring (RLIMIT_NPROC).
        user=limits.host_uid if as_root else None,
        group=limits.host_gid if as_root else None,
        extra_groups=[] if as_root else None,
        # Only setrlimit and prctl between fork and exec: no locks, safe with threads.
        preexec_fn=lambda: _in_child(limits, nproc),
    )


def _run(
    argv: list[str],
    stdin: str,
    limits: SandboxLimits,
    *,
    sandboxed: bool,
    env: dict[str, str] | None,
    cwd: str,
    info: tuple[int, int] | None = None,
) -> SandboxResult:
    as_root = os.geteuid() == 0
    # As root we switch to host_uid, whose count starts near zero; otherwise our own processes
    # count against the limit as well, so allow for them.
    nproc = limits.nproc if as_root else _own_process_count() + limits.nproc
    start = time.monotonic()
    try:
        proc = _popen(argv, env, cwd, info, limits, as_root, nproc)
    finally:
        if info is not None:
            os.close(info[1])  # bwrap holds its own copy of the write end
    info_r = info[0] if info is not None else None
    try:
        out, err, timed_out, over = _communicate(proc, stdin.encode("utf-8", "replace"), limits)
    except BaseException:
        _kill(proc, info_r)
        proc.wait()
        raise
    if timed_out or over:
        _kill(proc, info_r)
    try:
        returncode = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill(proc, info_r)
        returncode = proc.wait()
    wall_ms = (time.monotonic() - start) * 1000
    stderr = err.decode("utf-8", "replace")
    reason, sig = _classify(returncode, stderr, timed_out, over)
    if sandboxed and returncode == 1 and stderr.startswith("bwrap:"):
        raise SandboxUnavailable(f"bubblewrap failed to start: {stderr.strip()[:500]}")
    return SandboxResult(
        exit_reason=reason,
        returncode=None if (timed_out or over) else returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=stderr,
        wall_ms=wall_ms,
        sandboxed=sandboxed,
        signal=sig,
        truncated=over,
    )


def run_plain(source: str, stdin: str = "", limits: SandboxLimits | None = None) -> SandboxResult:
    """The same program as a plain subprocess (no isolation): the benchmark's baseline only."""
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="tp-plain-") as workdir:
        script = Path(workdir) / "main.py"
        script.write_text(source, encoding="utf-8")
        argv = [interpreter(limits), "-I", "-B", str(script)]
        return _run(
            argv,
            stdin,
            replace(limits, host_uid=os.geteuid(), host_gid=os.getegid()),
            sandboxed=False,
            env={"PATH": "/usr/bin:/bin"},
            cwd=workdir,
        )


def check_available(limits: SandboxLimits | None = None) -> str | None:
    """None when the sandbox works here, else why not (for a startup check / health page)."""
    try:
        res = run_python("print('ok')", limits=limits, unsafe_no_sandbox=False)
    except SandboxUnavailable as exc:
        return str(exc)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if res.exit_reason is not ExitReason.OK or res.stdout.strip() != "ok":
        return f"sandbox self-test failed: {res.exit_reason} {res.stderr.strip()[:300]}"
    return None


if __name__ == "__main__":  # python -m scoring.sandbox: a quick self-check
    problem = check_available()
    print(problem or "sandbox ok")
    sys.exit(1 if problem else 0)

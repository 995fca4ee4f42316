"""Run untrusted Python in a bubblewrap sandbox, with limits that hold for the whole run.

Every sandboxed process gets:

* no network (`--unshare-net`), its own pid, ipc, uts and cgroup namespaces, and no further
  user namespaces inside (`--disable-userns`);
* a read-only filesystem that holds only what the interpreter needs (`/usr`, and `/lib`,
  `/lib64`, `/bin` as on the host: symlinks on merged-usr systems, read-only binds otherwise),
  its own files read-only under `/sandbox`, a size-capped tmpfs on `/tmp` and on `/dev/shm`
  (the only writable places), a read-only minimal `/dev` and its own `/proc`;
* a cleared environment (`--clearenv`): no SECRET_KEY, DATABASE_URL or HF_TOKEN reaches it;
* a seccomp filter (`scoring.seccomp`) that refuses the kernel keyring, io_uring, perf events,
  userfaultfd and bpf: host-wide state a run could share with a concurrent one, and kernel
  attack surface no test program needs;
* `--die-with-parent` and `--new-session` (no TIOCSTI on our terminal);
* its own cgroup (`scoring.cgroups`): a memory limit that counts every page of every process of
  the run (tmpfs, `/dev/shm` and memfd pages included), a task limit (`pids.max`: a fork bomb hits
  its own ceiling, never another run's), a CPU quota of `cpus` cores and a CPU-time limit for the
  whole run; the cgroup is joined between fork and exec, before bwrap runs;
* rlimits as a second line (CPU seconds and address space per process, file size, open files, no
  core dumps), and a wall-clock limit and an output cap enforced from outside.

Start-up failures are detected out of band: bwrap reports the program's pid on `--json-status-fd`
once the sandbox is set up, and its exit code there when the program ends. A bwrap that wrote no
pid failed to build the sandbox (`SandboxUnavailable`, with bwrap's message); one that wrote a pid
but no exit code died itself (`SandboxFailure`). Nothing the program prints can be mistaken for
either: what it writes to stderr is its own output, never read as bwrap's.

Why bwrap runs as an unprivileged *host* uid (default 65534, `SandboxLimits.host_uid`): the
sandboxed program must not be host root in any namespace that matters, and started by an
unprivileged uid bwrap builds its user namespace without privilege (this needs unprivileged user
namespaces: `kernel.unprivileged_userns_clone=1` where that sysctl exists, and
`user.max_user_namespaces > 0`). Runs share that uid, but no per-uid limit separates them: the
per-run cgroup does.

The interpreter is `/usr/bin/python3` (Debian's) unless `THINKPOOL_SANDBOX_PYTHON` or
`SandboxLimits.python` says otherwise. An interpreter outside `/usr` (e.g. pyenv's) has its
prefix bind-mounted read-only; it must be readable by `host_uid` (pyenv under `/root` is not).

If bubblewrap is missing, or per-run cgroups cannot be made here, `run_python` raises
`SandboxUnavailable`. The only bypass is `THINKPOOL_UNSAFE_NO_SANDBOX=1`, for development: it runs
the program as a plain subprocess with rlimits and a cleared environment but *no isolation*, and
logs a warning on every run.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scoring import cgroups, seccomp

log = logging.getLogger(__name__)

UNSAFE_ENV = "THINKPOOL_UNSAFE_NO_SANDBOX"
PYTHON_ENV = "THINKPOOL_SANDBOX_PYTHON"
BWRAP_ENV = "THINKPOOL_BWRAP"
DEFAULT_PYTHON = "/usr/bin/python3"
MIB = 1024 * 1024
# How often the run's CPU time is read while it runs.
CPU_POLL_S = 0.05


class ExitReason(enum.StrEnum):
    OK = "ok"  # exited 0
    RUNTIME_ERROR = "runtime_error"  # non-zero exit or killed by a signal we did not send
    TIMEOUT = "timeout"  # wall or CPU limit
    MEMORY = "memory"  # the run's memory limit (OOM kill in its cgroup, or MemoryError)
    OUTPUT_LIMIT = "output_limit"  # wrote more than max_output_bytes
    KILLED = "killed"  # ended by us because the run it belongs to was over (see run_many)


class SandboxUnavailable(RuntimeError):
    """bubblewrap or the per-run limits are missing, or the sandbox could not be built."""


class SandboxFailure(RuntimeError):
    """The sandbox started but bwrap itself died: no verdict can be drawn from the run."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0
    cpu_s: int = 10  # CPU seconds of the whole run (all its processes)
    memory_bytes: int = 512 * MIB  # the whole run, every page it charges
    nproc: int = 64  # tasks (processes and threads) of the whole run
    fsize_bytes: int = 16 * MIB
    nofile: int = 64
    max_output_bytes: int = 1 * MIB  # stdout + stderr together
    tmpfs_bytes: int = 64 * MIB
    shm_bytes: int = 16 * MIB
    cpus: float = 1.0  # CFS quota: cores the run may use at once
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


@dataclass
class Launch:
    """One process of a run: a Python script with its files, stdin, and extra pipe ends.

    `files` are written into a private folder, bound read-only at /sandbox; `script` names the
    one to run. `fds` are pipe ends the process inherits under the same numbers (the caller
    creates the pipes and passes their numbers to the script, e.g. in `args`).
    """

    files: dict[str, bytes]
    script: str
    args: Sequence[str] = ()
    stdin: bytes = b""
    fds: Sequence[int] = ()
    python_flags: Sequence[str] = ("-I", "-B")
    # A line after which the process has nothing more to say (the primary of a run): the run
    # ends when it appears on stdout, without waiting for the interpreter to shut down.
    done_marker: bytes | None = None
    # Untrusted code always runs in a cgroup of its own. A trusted single process (the test
    # harness: it never forks) may go without: its rlimits bound it, and every cgroup attach
    # costs a kernel-wide RCU grace period, which two concurrent attaches pay in turn.
    own_cgroup: bool = True
    limits: SandboxLimits | None = None


def _unsafe_allowed() -> bool:
    return os.environ.get(UNSAFE_ENV, "") == "1"


WORKDIR_PREFIX = "tp-sbx-"


def remove_stale_workdirs() -> int:
    """Removes the run folders of workers that died mid-run (a kill -9 skips their clean-up);
    returns how many. Called once per worker at start-up."""
    removed = 0
    for entry in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        parts = entry.name.split("-")
        try:
            os.kill(int(parts[2]), 0)
            continue  # its worker is alive
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        except (PermissionError, ValueError, IndexError):
            continue
    return removed


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


_DEVICES = [
    *("--dev-bind", "/dev/null", "/dev/null"),
    *("--dev-bind", "/dev/zero", "/dev/zero"),
    *("--dev-bind", "/dev/full", "/dev/full"),
    *("--dev-bind", "/dev/random", "/dev/random"),
    *("--dev-bind", "/dev/urandom", "/dev/urandom"),
    *("--symlink", "/proc/self/fd", "/dev/fd"),
    *("--symlink", "/proc/self/fd/0", "/dev/stdin"),
    *("--symlink", "/proc/self/fd/1", "/dev/stdout"),
    *("--symlink", "/proc/self/fd/2", "/dev/stderr"),
]


def _bwrap_argv(
    bwrap: str,
    limits: SandboxLimits,
    workdir: str,
    launch: Launch,
    status_fd: int,
    seccomp_fd: int | None = None,
) -> list[str]:
    python = interpreter(limits)
    seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    return [
        bwrap,
        *seccomp,
        # The program itself is pid 1 of the new pid namespace (no bwrap reaper in between):
        # when it ends, the kernel kills everything else in the namespace, and no bwrap process
        # is left orphaned. With the reaper, bwrap's monitor exits without reaping it, and under
        # a container init that does not reap, every run leaves a zombie.
        "--as-pid-1",
        # bwrap writes {"child-pid": N} here once the sandbox is built, {"exit-code": N} when the
        # program ends: start-up failure and bwrap's own death are told apart from the program.
        "--json-status-fd",
        str(status_fd),
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
        # A /dev of our own: the few devices a program needs, and no /dev/ptmx or /dev/pts
        # (opening ptys moves a host-wide counter that concurrent runs could read); a
        # size-capped /dev/shm (POSIX shared memory, multiprocessing's semaphores); the rest
        # read-only.
        "--size",
        str(1 * MIB),
        "--tmpfs",
        "/dev",
        *_DEVICES,
        "--size",
        str(limits.shm_bytes),
        "--tmpfs",
        "/dev/shm",  # noqa: S108 - the sandbox's own, size-capped tmpfs
        "--remount-ro",
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
        *launch.python_flags,
        f"/sandbox/{launch.script}",
        *launch.args,
    ]


# --- the child, before bwrap --------------------------------------------------------------

# Four steps before bwrap runs, each exec-ing the next in one process: a shell joins the run's
# cgroups (so bwrap and all it starts are counted there), util-linux's prlimit sets the rlimits
# (a second line behind the cgroup; soft == hard, as the program is pid 1 of its namespace and
# ignores SIGXCPU), setpriv drops host root and sets PDEATHSIG after the uid change (which would
# clear it), so bwrap dies with the scoring worker. Not a Python preexec_fn: that makes
# subprocess fork the whole worker (6 ms for a 90 MB process, twice per graded run) where it
# can vfork (under 1 ms).
_SH, _PRLIMIT, _SETPRIV = "/bin/sh", shutil.which("prlimit"), shutil.which("setpriv")


def _launcher(
    limits: SandboxLimits,
    procs_files: list[bytes],
    drop_to: tuple[int, int] | None,
    nproc: int | None,
) -> list[str]:
    """argv to put before bwrap's (or, unsafe, before the interpreter's); empty only in the
    unsafe bypass on a machine without util-linux."""
    if _PRLIMIT is None or _SETPRIV is None:
        return []
    join = "".join(f"echo $$ > {shlex.quote(os.fsdecode(f))} && " for f in procs_files)
    cpu = max(1, int(limits.cpu_s))
    rlimits = [
        f"--cpu={cpu}:{cpu}",
        f"--as={limits.memory_bytes}:{limits.memory_bytes}",
        f"--fsize={limits.fsize_bytes}:{limits.fsize_bytes}",
        f"--nofile={limits.nofile}:{limits.nofile}",
        "--core=0:0",
    ]
    if nproc is not None:
        rlimits.append(f"--nproc={nproc}:{nproc}")
    drop = []
    if drop_to is not None:
        drop = [f"--reuid={drop_to[0]}", f"--regid={drop_to[1]}", "--clear-groups"]
    return [
        _SH,
        "-c",
        join + 'exec "$@"',
        "sh",
        _PRLIMIT,
        *rlimits,
        "--",
        _SETPRIV,
        *drop,
        "--pdeathsig=KILL",
        "--",
    ]


# --- running ---------------------------------------------------------------------------------


class _StatusReader:
    """bwrap's --json-status-fd: a stream of JSON objects, one per line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.child_pid: int | None = None
        self.exit_code: int | None = None

    def drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            self.buf += chunk[: max(0, 65536 - len(self.buf))]
        for line in self.buf.split(b"\n"):
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    if isinstance(doc.get("child-pid"), int):
                        self.child_pid = doc["child-pid"]
                    if isinstance(doc.get("exit-code"), int):
                        self.exit_code = doc["exit-code"]


@dataclass
class _Proc:
    launch: Launch
    limits: SandboxLimits
    popen: subprocess.Popen[bytes]
    group: cgroups.RunGroup | None
    status: _StatusReader | None
    workdir: tempfile.TemporaryDirectory[str]
    sandboxed: bool
    started: float
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    ended: str | None = None  # why we killed it: timeout / output_limit / killed
    pending: memoryview = field(default_factory=lambda: memoryview(b""))
    returncode: int | None = None

    def kill(self, why: str) -> None:
        if self.ended is None and self.returncode is None:
            self.ended = why
        child = self.status.child_pid if self.status is not None else None
        if child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)  # pid 1 of its namespace: takes all with it
        if self.group is not None:
            self.group.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


_swept_workdirs: set[int] = set()  # processes that removed dead workers' run folders
_spawners: dict[int, ThreadPoolExecutor] = {}


def _spawner() -> ThreadPoolExecutor:
    """This process's spawning threads (a Celery child after fork makes its own)."""
    pid = os.getpid()
    if pid not in _spawners:
        _spawners[pid] = ThreadPoolExecutor(4, thread_name_prefix="sandbox-spawn")
    return _spawners[pid]


def _available(unsafe: bool) -> tuple[str | None, cgroups.Support | None]:
    """(bwrap, cgroup support) for a sandboxed run, or (None, None) for the unsafe bypass."""
    if unsafe:
        return None, None
    bwrap = _bwrap_path()
    if bwrap is None or not os.access(bwrap, os.X_OK):
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed: refusing to run untrusted code. "
            f"Install it (apt-get install bubblewrap), or for development only set {UNSAFE_ENV}=1."
        )
    if _PRLIMIT is None or _SETPRIV is None:
        raise SandboxUnavailable(
            "util-linux's prlimit and setpriv are missing: they set each run's limits and drop "
            "root before bubblewrap starts (apt-get install util-linux)."
        )
    support = cgroups.prepare()
    if os.getpid() not in _swept_workdirs:
        _swept_workdirs.add(os.getpid())
        remove_stale_workdirs()
    if not support.usable:
        raise SandboxUnavailable(
            f"per-run limits are unavailable ({support.problem}): refusing to run untrusted code "
            f"without them. For development only, set {UNSAFE_ENV}=1."
        )
    return bwrap, support


def _spawn(
    launch: Launch, bwrap: str | None, support: cgroups.Support | None, unsafe: bool
) -> _Proc:
    limits = launch.limits or SandboxLimits()
    # The pid in the name: a worker's start-up removes the folders of dead workers
    # (`remove_stale_workdirs`). Only the sandbox uid may enter it: it holds hidden tests.
    workdir = tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")
    try:
        for name, data in launch.files.items():
            path = Path(workdir.name) / name
            path.write_bytes(data)
            path.chmod(0o444)
        if os.geteuid() == 0:
            os.chown(workdir.name, limits.host_uid, limits.host_gid)
            os.chmod(workdir.name, 0o500)
        group = None
        status = None
        filter_fd: int | None = None
        as_root = os.geteuid() == 0
        if bwrap is None or support is None:
            log.warning(
                "%s=1: running untrusted code WITHOUT a sandbox (development only)", UNSAFE_ENV
            )
            argv = [
                interpreter(limits),
                *launch.python_flags,
                str(Path(workdir.name) / launch.script),
                *launch.args,
            ]
            env: dict[str, str] = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
            cwd = workdir.name
            pass_fds = tuple(launch.fds)
            drop = (limits.host_uid, limits.host_gid) if as_root else None
            procs_files: list[bytes] = []
        else:
            if launch.own_cgroup:
                group = cgroups.RunGroup.create(
                    support, memory_bytes=limits.memory_bytes, pids=limits.nproc, cpus=limits.cpus
                )
            status_r, status_w = os.pipe()
            status = _StatusReader(status_r)
            filter_fd = seccomp.filter_fd()
            argv = _bwrap_argv(bwrap, limits, workdir.name, launch, status_w, filter_fd)
            env = {}
            cwd = "/"
            pass_fds = (status_w, *launch.fds, *([] if filter_fd is None else [filter_fd]))
            drop = (limits.host_uid, limits.host_gid) if as_root else None
            procs_files = group.procs_files() if group is not None else []
        # RLIMIT_NPROC counts every process of the host uid, all runs together: only without
        # any sandbox (the unsafe bypass). Sandboxed, the pids cgroup counts per run, and a
        # trusted harness without a cgroup never forks.
        nproc = limits.nproc if status is None else None
        argv = _launcher(limits, procs_files, drop, nproc) + argv
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                close_fds=True,
                pass_fds=pass_fds,
                start_new_session=True,  # its own process group, so the whole tree can be killed
            )
        except BaseException:
            if status is not None:
                os.close(status.fd)
            if group is not None:
                group.remove()
            raise
        finally:
            if status is not None:
                os.close(status_w)  # bwrap holds its own copy of the write end
                if filter_fd is not None:
                    os.close(filter_fd)
        return _Proc(
            launch=launch,
            limits=limits,
            popen=popen,
            group=group,
            status=status,
            workdir=workdir,
            sandboxed=status is not None,
            started=time.monotonic(),
            pending=memoryview(launch.stdin),
        )
    except BaseException:
        workdir.cleanup()
        raise


def _drive(procs: list[_Proc], primary: int | None, wall_s: float) -> None:
    """Feeds stdin, drains output up to each cap, enforces the wall and CPU limits, until every
    process has exited. When the `primary` process exits, the others are killed."""
    deadline = time.monotonic() + wall_s
    sel = selectors.DefaultSelector()
    owners: dict[int, tuple[_Proc, str]] = {}
    for p in procs:
        assert p.popen.stdin and p.popen.stdout and p.popen.stderr
        for stream, kind in ((p.popen.stdout, "out"), (p.popen.stderr, "err")):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ)
            owners[stream.fileno()] = (p, kind)
        if p.pending:
            os.set_blocking(p.popen.stdin.fileno(), False)
            sel.register(p.popen.stdin.fileno(), selectors.EVENT_WRITE)
            owners[p.popen.stdin.fileno()] = (p, "in")
        else:
            p.popen.stdin.close()
        if p.status is not None:
            os.set_blocking(p.status.fd, False)
    cpu_watch = [p for p in procs if p.group is not None and p.group.cpu_dir is not None]
    first = procs[primary] if primary is not None else None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                for p in procs:
                    if p.popen.poll() is None:
                        p.kill("timeout")
                break
            timeout = deadline - now
            if cpu_watch:
                timeout = min(timeout, CPU_POLL_S)
            for key, _ in sel.select(timeout=timeout):
                fd = key.fd
                p, kind = owners[fd]
                if kind == "in":
                    _feed(p, sel)
                    continue
                total = len(p.out) + len(p.err)
                cap = p.limits.max_output_bytes
                try:
                    # Never read more than the cap allows (+1 byte to detect the overflow).
                    chunk = os.read(fd, min(65536, cap - total + 1))
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    owners.pop(fd)
                    if p is first and not any(owner is p for owner, _ in owners.values()):
                        # Its output is closed: it is exiting. Wait for it here rather than
                        # until the next poll, so the run ends as soon as its primary does.
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                    continue
                (p.out if kind == "out" else p.err).extend(chunk)
                if total + len(chunk) > cap:
                    p.kill("output_limit")
                    _forget(p, sel, owners)
                elif p is first and kind == "out" and _said_done(p, len(chunk)):
                    for other in procs:
                        other.kill("done" if other is p else "killed")
                    return
            for p in cpu_watch:
                used = p.group.cpu_seconds() if p.group is not None else None
                if used is not None and used > p.limits.cpu_s and p.popen.poll() is None:
                    p.kill("timeout")
            if primary is not None and procs[primary].popen.poll() is not None:
                for i, p in enumerate(procs):
                    if i != primary and p.popen.poll() is None:
                        p.kill("killed")
    finally:
        sel.close()
        for p in procs:
            if p.popen.stdin and not p.popen.stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    p.popen.stdin.close()


def _said_done(p: _Proc, new: int) -> bool:
    marker = p.launch.done_marker
    if not marker:
        return False
    return p.out.find(marker, max(0, len(p.out) - new - len(marker))) != -1


def _feed(p: _Proc, sel: selectors.BaseSelector) -> None:
    assert p.popen.stdin is not None
    fd = p.popen.stdin.fileno()
    try:
        n = os.write(fd, p.pending[:65536])
    except BlockingIOError:
        return
    except BrokenPipeError:
        n = len(p.pending)
    p.pending = p.pending[n:]
    if not p.pending:
        sel.unregister(fd)
        p.popen.stdin.close()


def _forget(p: _Proc, sel: selectors.BaseSelector, owners: dict[int, tuple[_Proc, str]]) -> None:
    for fd, (owner, _) in list(owners.items()):
        if owner is p:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(fd)
            owners.pop(fd)


def _finish(p: _Proc) -> SandboxResult:
    """Waits for the process, reads bwrap's status, classifies the end, cleans up."""
    try:
        try:
            returncode = p.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill(p.ended or "timeout")
            returncode = p.popen.wait()
        wall_ms = (time.monotonic() - p.started) * 1000
        _drain(p)
        if p.status is not None:
            p.status.drain()
        stderr = bytes(p.err[: p.limits.max_output_bytes]).decode("utf-8", "replace")
        stdout = bytes(p.out[: p.limits.max_output_bytes]).decode("utf-8", "replace")
        details: dict[str, object] = {}
        if p.status is not None and p.status.child_pid is None and p.ended is None:
            # bwrap exited before it ran the program: everything on stderr is bwrap's own.
            raise SandboxUnavailable(
                f"bubblewrap could not build the sandbox (exit {returncode}): "
                f"{stderr.strip()[:500] or 'no message'}"
            )
        if p.status is not None and p.status.exit_code is None and p.ended is None:
            raise SandboxFailure(
                f"bubblewrap exited ({returncode}) without reporting the program's exit status"
            )
        if p.status is not None and p.status.exit_code is not None:
            returncode = p.status.exit_code
        oom = p.group.oom_killed() if p.group is not None else False
        if p.group is not None:
            peak = p.group.memory_peak()
            if peak is not None:
                details["memory_peak_bytes"] = peak
            cpu = p.group.cpu_seconds()
            if cpu is not None:
                details["cpu_s"] = round(cpu, 3)
        reason, sig = _classify(returncode, stderr, p.ended, oom)
        return SandboxResult(
            exit_reason=reason,
            returncode=None if p.ended else returncode,
            stdout=stdout,
            stderr=stderr,
            wall_ms=wall_ms,
            sandboxed=p.sandboxed,
            signal=sig,
            truncated=p.ended == "output_limit",
            details=details,
        )
    finally:
        for stream in (p.popen.stdout, p.popen.stderr):
            if stream is not None:
                stream.close()
        if p.status is not None:
            with contextlib.suppress(OSError):
                os.close(p.status.fd)
        if p.group is not None:
            p.group.kill()
            p.group.remove()
        p.workdir.cleanup()


def _drain(p: _Proc) -> None:
    """What the process wrote after the drive loop stopped reading (it stops at the deadline,
    and a process may have finished its output in that instant): read it, up to the cap."""
    for stream, buf in ((p.popen.stdout, p.out), (p.popen.stderr, p.err)):
        if stream is None or stream.closed:
            continue
        os.set_blocking(stream.fileno(), False)
        while len(p.out) + len(p.err) <= p.limits.max_output_bytes:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            buf.extend(chunk)


def _classify(
    returncode: int, stderr: str, ended: str | None, oom: bool
) -> tuple[ExitReason, int | None]:
    # bwrap passes the program's status through: 128+N when the program died of signal N.
    sig = -returncode if returncode < 0 else (returncode - 128 if returncode > 128 else None)
    if oom:
        return ExitReason.MEMORY, sig
    if ended == "output_limit":
        return ExitReason.OUTPUT_LIMIT, sig
    if ended == "timeout":
        return ExitReason.TIMEOUT, sig
    if ended == "killed":
        return ExitReason.KILLED, sig
    if ended == "done":
        return ExitReason.OK, None  # it said all it had to say, then we ended it
    if sig in (signal.SIGXCPU, signal.SIGKILL):
        # A SIGKILL we did not send comes from the CPU hard limit.
        return ExitReason.TIMEOUT, sig
    if sig == signal.SIGXFSZ:
        return ExitReason.OUTPUT_LIMIT, sig
    if returncode == 0:
        return ExitReason.OK, None
    last = stderr.strip().rsplit("\n", 1)[-1] if stderr.strip() else ""
    if last.startswith("MemoryError"):
        return ExitReason.MEMORY, sig
    return ExitReason.RUNTIME_ERROR, sig


def run_many(
    launches: Sequence[Launch],
    *,
    wall_s: float,
    primary: int | None = None,
    unsafe_no_sandbox: bool | None = None,
    after_spawn: Callable[[], None] | None = None,
) -> list[SandboxResult]:
    """Runs the launches side by side, each in its own sandbox and cgroup, under one wall
    deadline; returns one result per launch, in order.

    `after_spawn` runs once every process has started: the caller closes there its copies of
    the pipe ends it handed to the processes (so a reader sees EOF when its writer exits).
    Raises SandboxUnavailable when bubblewrap or the limits are missing (unless the unsafe
    bypass is on), SandboxFailure when bwrap itself died.
    """
    unsafe = _unsafe_allowed() if unsafe_no_sandbox is None else unsafe_no_sandbox
    bwrap, support = _available(unsafe)
    procs: list[_Proc] = []
    try:
        if support is not None:
            cgroups.start_sweeper()
        if len(launches) == 1:
            procs.append(_spawn(launches[0], bwrap, support, unsafe))
        else:
            # Side by side: each spawn waits a few milliseconds for bwrap's exec. The threads
            # live as long as the process: PDEATHSIG fires when the thread that forked exits,
            # not only the process.
            pool = _spawner()
            futures = [pool.submit(_spawn, one, bwrap, support, unsafe) for one in launches]
            procs.extend(f.result() for f in futures if f.exception() is None)
            failed = [exc for f in futures if (exc := f.exception()) is not None]
            if failed:
                raise failed[0]  # the processes that did start are killed below
        if after_spawn is not None:
            after_spawn()
        _drive(procs, primary, wall_s)
    except BaseException:
        for p in procs:
            p.kill("killed")
        for p in procs:
            with contextlib.suppress(Exception):
                _finish(p)
        raise
    results: list[SandboxResult] = []
    errors: list[BaseException] = []
    for p in procs:
        try:
            results.append(_finish(p))
        except (SandboxUnavailable, SandboxFailure) as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return results


def run_python(
    source: str,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    *,
    unsafe_no_sandbox: bool | None = None,
) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and report how it ended.

    Raises SandboxUnavailable when bubblewrap or the per-run limits are missing (unless the
    unsafe bypass is on). `unsafe_no_sandbox=None` reads THINKPOOL_UNSAFE_NO_SANDBOX.
    """
    limits = limits or SandboxLimits()
    launch = Launch(
        files={"main.py": source.encode("utf-8", "surrogatepass")},
        script="main.py",
        stdin=stdin.encode("utf-8", "replace"),
        limits=limits,
    )
    (result,) = run_many(
        [launch], wall_s=limits.wall_s, primary=0, unsafe_no_sandbox=unsafe_no_sandbox
    )
    return result


def capabilities() -> str:
    """One line for the worker's start-up log: what isolates a run here."""
    if _unsafe_allowed():
        return f"UNSAFE: {UNSAFE_ENV}=1, untrusted code runs without a sandbox"
    bwrap = _bwrap_path()
    version = "missing"
    if bwrap:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run(
                [bwrap, "--version"], capture_output=True, text=True, timeout=5, check=False
            ).stdout.strip()
    return f"bubblewrap: {version}; {cgroups.prepare().describe()}"


def check_available(limits: SandboxLimits | None = None) -> str | None:
    """None when the sandbox works here (bwrap, per-run cgroups, a test program), else why
    not: for the sandbox worker's start-up check and a health page."""
    try:
        res = run_python("print('ok')", limits=limits, unsafe_no_sandbox=False)
    except (SandboxUnavailable, SandboxFailure) as exc:
        return str(exc)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if res.exit_reason is not ExitReason.OK or res.stdout.strip() != "ok":
        return f"sandbox self-test failed: {res.exit_reason} {res.stderr.strip()[:300]}"
    return None


if __name__ == "__main__":  # python -m scoring.sandbox: a quick self-check
    print(capabilities())
    problem = check_available()
    print(problem or "sandbox ok")
    sys.exit(1 if problem else 0)

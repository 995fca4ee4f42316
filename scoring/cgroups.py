"""Per-run resource limits for the sandbox: one cgroup per sandboxed process.

Why cgroups and not rlimits alone: RLIMIT_AS caps each process, not the run (six forked children
held 2.5 GiB under a 512 MiB limit), memory in a tmpfs or a `memfd_create` file is in no process's
address space at all, and RLIMIT_NPROC counts every process of a host uid, so one fork bomb made
the concurrent sandboxes of other samples fail to start. A cgroup counts every page its processes
charge (anonymous memory, page cache, tmpfs and memfd pages, kernel memory) and every task, for
the whole run, and for that run alone.

Each run gets its own group with

* `memory`: a hard limit (v1 `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`, so swap
  is no way out; v2 `memory.max` and `memory.swap.max = 0`); the kernel's OOM killer acts inside
  the group only, and its `oom_kill` counter tells the verdict `memory`;
* `pids`: `pids.max` tasks (threads included), so a fork bomb hits its own ceiling;
* `cpu` (optional): a CFS quota of `cpus` cores, so one run cannot take every core from the
  others, and the run's CPU time (cpuacct / `cpu.stat`) for the whole-run CPU limit.

Layout. cgroup v1 (as on these machines: one hierarchy per controller): the group is made inside
this process's own group of each hierarchy (from /proc/self/cgroup), so it nests in whatever
limits the worker itself runs under. cgroup v2: a run group needs a parent that has the
controllers enabled for its children and, by the "no internal processes" rule, holds no
processes itself. `THINKPOOL_SANDBOX_CGROUP` names such a delegated group (e.g. a systemd unit
with `Delegate=yes`); without it the worker's own group is used, after moving this process into a
`supervisor` leaf below it (done once, in the worker's main process, before the pool forks).

Joining happens in the child between fork and exec (`join`), before bubblewrap or the program
runs a single instruction, so no process of a run is ever outside its group. Creating groups
needs root (or a delegated v2 subtree); `detect()` says what is possible here and why not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
BASE_ENV = "THINKPOOL_SANDBOX_CGROUP"
CONTROLLERS = ("memory", "pids", "cpu")
REQUIRED = ("memory", "pids")


@dataclass(frozen=True)
class Support:
    """What this process can do with cgroups. `parents` maps a controller to the directory in
    which run groups are made (v1: one per hierarchy; v2: the same directory for all)."""

    version: int  # 1, 2, or 0 when unusable
    parents: dict[str, Path] = field(default_factory=dict)
    problem: str | None = None
    # v1 only: the directory of the cpuacct hierarchy (CPU time; may be the cpu one, co-mounted).
    cpuacct: Path | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None and all(c in self.parents for c in REQUIRED)

    def describe(self) -> str:
        if not self.usable:
            return f"cgroups unavailable: {self.problem}"
        names = ", ".join(sorted(self.parents))
        where = sorted({str(p) for p in self.parents.values()})
        return f"cgroup v{self.version} per-run limits ({names}) under {', '.join(where)}"


def _own_groups(proc_self_cgroup: str) -> dict[str, str]:
    """/proc/self/cgroup → {controller or "" (v2): path}."""
    out: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c.removeprefix("name=")] = path
    return out


def _v1_mounts(root: Path) -> dict[str, Path]:
    """Controller → mount directory of its v1 hierarchy (co-mounts such as cpu,cpuacct too)."""
    mounts: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if not entry.is_dir() or entry.is_symlink() or entry.name == "unified":
                continue
            for c in entry.name.split(","):
                mounts.setdefault(c, entry)
    return mounts


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def detect(root: Path = CGROUP_ROOT, proc_self_cgroup: str | None = None) -> Support:
    """What per-run limits this process can set, without changing anything (see `prepare`)."""
    if proc_self_cgroup is None:
        try:
            proc_self_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError as exc:
            return Support(0, problem=f"cannot read /proc/self/cgroup: {exc}")
    own = _own_groups(proc_self_cgroup)
    if (root / "cgroup.controllers").exists():
        return _detect_v2(root, own.get("", "/"))
    mounts = _v1_mounts(root)
    if not all(c in mounts for c in REQUIRED):
        missing = [c for c in REQUIRED if c not in mounts]
        return Support(0, problem=f"no cgroup hierarchy for {', '.join(missing)} under {root}")
    parents: dict[str, Path] = {}
    problems = []
    for c in CONTROLLERS:
        if c not in mounts:
            continue
        parent = mounts[c] / own.get(c, "/").lstrip("/")
        if _writable_dir(parent):
            parents[c] = parent
        elif c in REQUIRED:
            problems.append(f"{parent} is not writable (the sandbox worker runs as root here)")
    cpuacct = None
    if "cpuacct" in mounts:
        candidate = mounts["cpuacct"] / own.get("cpuacct", "/").lstrip("/")
        cpuacct = candidate if candidate.is_dir() else None
    return Support(1, parents, "; ".join(problems) or None, cpuacct)


def _detect_v2(root: Path, own_path: str) -> Support:
    configured = os.environ.get(BASE_ENV)
    base = Path(configured) if configured else root / own_path.lstrip("/")
    try:
        available = (base / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return Support(2, problem=f"cannot read {base}/cgroup.controllers: {exc}")
    missing = [c for c in REQUIRED if c not in available]
    if missing:
        return Support(
            2,
            problem=f"controllers {', '.join(missing)} are not delegated to {base}"
            f" (set {BASE_ENV} to a cgroup with memory and pids delegated)",
        )
    if not _writable_dir(base):
        return Support(2, problem=f"{base} is not writable by uid {os.geteuid()}")
    parents = {c: base for c in CONTROLLERS if c in available}
    return Support(2, parents)


_prepared: dict[int, Support] = {}
_prepare_lock = threading.Lock()


def prepare(root: Path = CGROUP_ROOT) -> Support:
    """Makes run groups possible and says whether they are. Idempotent, once per process.

    v2 only has work to do: enable the controllers for the base group's children, first moving
    this process out of the base into a `supervisor` leaf when the base is our own group (the
    kernel refuses subtree controllers on a group with processes). Call it in the worker's main
    process before it forks its pool, so the children start in the leaf too.
    """
    with _prepare_lock:
        pid = os.getpid()
        if pid in _prepared:
            return _prepared[pid]
        support = detect(root)
        if support.version == 2 and support.problem is None:
            support = _prepare_v2(support)
        if support.problem is None and support.usable:
            _remove_orphans(support)
            support = _self_test(support)
        _prepared[pid] = support
        return support


def _prepare_v2(support: Support) -> Support:
    base = support.parents["memory"]
    wanted = [c for c in CONTROLLERS if c in support.parents]
    control = base / "cgroup.subtree_control"
    try:
        enabled = control.read_text().split()
    except OSError as exc:
        return Support(2, problem=f"cannot read {control}: {exc}")
    if all(c in enabled for c in wanted):
        return support
    try:
        _write(control, " ".join(f"+{c}" for c in wanted))
        return support
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return Support(2, problem=f"cannot enable {wanted} in {control}: {exc}")
    # EBUSY: the base holds processes. If the only one is us, step into a leaf and retry.
    procs = (base / "cgroup.procs").read_text().split()
    if procs != [str(os.getpid())]:
        return Support(
            2,
            problem=f"{base} holds other processes ({len(procs)}); set {BASE_ENV} to a delegated"
            " cgroup that holds none",
        )
    leaf = base / "supervisor"
    with contextlib.suppress(FileExistsError):
        leaf.mkdir()
    try:
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(control, " ".join(f"+{c}" for c in wanted))
    except OSError as exc:
        return Support(2, problem=f"cannot delegate {base}: {exc}")
    return support


def _remove_orphans(support: Support) -> None:
    """Run groups left by a worker that was killed mid-run (its sandboxes died with it, by
    PDEATHSIG, so the groups are empty): removed when the next worker starts."""
    parents = set(support.parents.values())
    if support.cpuacct is not None:
        parents.add(support.cpuacct)
    for parent in parents:
        with contextlib.suppress(OSError):
            for entry in parent.iterdir():
                parts = entry.name.split("-")
                if not entry.name.startswith("tp-run-") or len(parts) < 3:
                    continue
                try:
                    os.kill(int(parts[2]), 0)
                    continue  # its worker is alive
                except ProcessLookupError:
                    pass
                except (PermissionError, ValueError):
                    continue
                # Processes of a run whose worker died while bwrap was still setting up can
                # outlive it (blocked, before the program ever ran): kill, then remove.
                RunGroup(support, {"pids": entry, "memory": entry}).kill()
                for _ in range(50):
                    try:
                        entry.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.01)


def _self_test(support: Support) -> Support:
    """Make and remove one group with limits: a read-only or foreign hierarchy fails here, at
    start-up, rather than on every sample."""
    try:
        group = RunGroup.create(support, memory_bytes=64 * 1024 * 1024, pids=8, cpus=1.0)
    except OSError as exc:
        return Support(support.version, support.parents, f"cannot create a run cgroup: {exc}")
    group.remove()
    return support


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


_counter = 0
_counter_lock = threading.Lock()


def _next_name() -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        return f"tp-run-{os.getpid()}-{_counter}-{time.monotonic_ns() % 10**9}"


@dataclass
class RunGroup:
    """The cgroup(s) of one sandboxed process tree. Create, `join` from the child, read its
    counters, `kill` everything in it, `remove`."""

    support: Support
    dirs: dict[str, Path]  # controller → the run's directory (v2: the same one)
    cpu_dir: Path | None = None  # where CPU time is read

    @classmethod
    def create(
        cls, support: Support, *, memory_bytes: int, pids: int, cpus: float | None
    ) -> RunGroup:
        name = _next_name()
        dirs: dict[str, Path] = {}
        group = cls(support, dirs)
        try:
            for controller, parent in support.parents.items():
                path = parent / name
                if path not in dirs.values():
                    path.mkdir()
                dirs[controller] = path
            group._limit(memory_bytes, pids, cpus)
        except OSError:
            group.remove()
            raise
        return group

    def _limit(self, memory_bytes: int, pids: int, cpus: float | None) -> None:
        mem, pid_dir = self.dirs["memory"], self.dirs["pids"]
        if self.support.version == 1:
            _write(mem / "memory.limit_in_bytes", str(memory_bytes))
            # Swap accounting, where enabled: memory + swap may not exceed the same limit.
            if (mem / "memory.memsw.limit_in_bytes").exists():
                _write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes))
            # Charges follow the pages, not the task: nothing to move at immigration.
            _write(pid_dir / "pids.max", str(pids))
            if self.support.cpuacct is not None:
                # CPU time is best effort: without it the wall limit still bounds the run.
                if "cpu" in self.dirs and self.support.cpuacct == self.support.parents["cpu"]:
                    self.cpu_dir = self.dirs["cpu"]
                else:
                    cpuacct_dir = self.support.cpuacct / mem.name
                    try:
                        cpuacct_dir.mkdir()
                        self.dirs["cpuacct"] = cpuacct_dir
                        self.cpu_dir = cpuacct_dir
                    except OSError:
                        self.cpu_dir = None
        else:
            _write(mem / "memory.max", str(memory_bytes))
            if (mem / "memory.swap.max").exists():
                _write(mem / "memory.swap.max", "0")
            _write(pid_dir / "pids.max", str(pids))
            self.cpu_dir = mem
        if cpus is not None and "cpu" in self.dirs:
            period = 100_000
            quota = max(1000, int(cpus * period))
            cpu = self.dirs["cpu"]
            if self.support.version == 1:
                _write(cpu / "cpu.cfs_period_us", str(period))
                _write(cpu / "cpu.cfs_quota_us", str(quota))
            else:
                _write(cpu / "cpu.max", f"{quota} {period}")

    def procs_files(self) -> list[bytes]:
        """The cgroup.procs files the child writes its pid to before it execs bwrap."""
        seen: list[bytes] = []
        for path in self.dirs.values():
            f = os.fsencode(path / "cgroup.procs")
            if f not in seen:
                seen.append(f)
        return seen

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process of the run so far."""
        if self.cpu_dir is None:
            return None
        try:
            if self.support.version == 1:
                return int((self.cpu_dir / "cpuacct.usage").read_text()) / 1e9
            for line in (self.cpu_dir / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            return None
        return None

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this run (the memory limit)."""
        mem = self.dirs["memory"]
        name = "memory.oom_control" if self.support.version == 1 else "memory.events"
        try:
            for line in (mem / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
            if self.support.version == 1:
                # Kernels without the oom_kill line: any failed charge at the limit.
                return int((mem / "memory.failcnt").read_text()) > 0 and self._hit_limit()
        except (OSError, ValueError):
            return False
        return False

    def _hit_limit(self) -> bool:
        mem = self.dirs["memory"]
        try:
            peak = int((mem / "memory.max_usage_in_bytes").read_text())
            limit = int((mem / "memory.limit_in_bytes").read_text())
        except (OSError, ValueError):
            return False
        return peak >= limit - 4096 * 16

    def memory_peak(self) -> int | None:
        mem = self.dirs["memory"]
        name = "memory.max_usage_in_bytes" if self.support.version == 1 else "memory.peak"
        try:
            return int((mem / name).read_text())
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.dirs["pids"] / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """SIGKILL every process of the run, until none is left (bounded: pids.max caps how
        many can be forked meanwhile)."""
        if self.support.version == 2 and (self.dirs["pids"] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs["pids"] / "cgroup.kill", "1")
        for _ in range(200):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)

    def remove(self) -> bool:
        """Removes the run's directories; True when all are gone. A group is removable once
        its last process has been reaped, which may be a moment after the run: what is still
        busy is queued and removed by a later run (`sweep`), off this run's clock."""
        left = []
        for path in reversed(list(dict.fromkeys(self.dirs.values()))):
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                left.append(path)
        if left:
            with _pending_lock:
                _pending.append((self, time.monotonic()))
            _sweeper_wake.set()
        return not left


_pending: list[tuple[RunGroup, float]] = []
_pending_lock = threading.Lock()


_sweeper_wake = threading.Event()
_sweeper_pid = 0


def _sweeper() -> None:
    while True:
        _sweeper_wake.wait()
        _sweeper_wake.clear()
        while sweep():
            time.sleep(0.02)


def start_sweeper() -> None:
    """Removes busy groups in the background, off every run's clock (once per process: a
    Celery child after fork starts its own)."""
    global _sweeper_pid
    with _pending_lock:
        if _sweeper_pid == os.getpid():
            return
        _sweeper_pid = os.getpid()
    threading.Thread(target=_sweeper, name="cgroup-sweeper", daemon=True).start()


def sweep(max_age_s: float = 5.0) -> int:
    """Removes queued groups whose processes are gone; kills what is left in one older than
    `max_age_s` (it cannot be: every run is killed at its end). Returns how many remain."""
    with _pending_lock:
        queued = list(_pending)
        _pending.clear()
    now = time.monotonic()
    for group, since in queued:
        if now - since > max_age_s:
            group.kill()
        busy = [p for p in dict.fromkeys(group.dirs.values()) if p.exists()]
        for path in reversed(busy):
            with contextlib.suppress(OSError):
                path.rmdir()
        if any(p.exists() for p in busy):
            with _pending_lock:
                _pending.append((group, since))
    return len(_pending)

"""Limits that hold for a whole run, for that run alone, and sandbox failures told apart from
the program's own behaviour."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scoring import cgroups, sandbox
from scoring.sandbox import (
    MIB,
    ExitReason,
    SandboxFailure,
    SandboxLimits,
    SandboxUnavailable,
    run_python,
)
from scoring.verifiers import CodeVerifier
from scoring.verifiers.base import Candidate, Gold, Status

from .sandbox_support import requires_sandbox

LIMITS = SandboxLimits(wall_s=8, cpu_s=8, memory_bytes=256 * MIB, max_output_bytes=64 * 1024)


def run(source: str, limits: SandboxLimits = LIMITS) -> sandbox.SandboxResult:
    res = run_python(source, "", limits, unsafe_no_sandbox=False)
    assert res.sandboxed
    return res


@requires_sandbox
def test_memory_is_limited_for_the_whole_run_not_per_process() -> None:
    """Six children of 100 MiB each under a 256 MiB limit: RLIMIT_AS alone let them hold 600."""
    res = run(
        "import os, time\n"
        "kids = []\n"
        "for i in range(6):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = bytearray(100 * 1024 * 1024)\n"
        "        for j in range(0, len(block), 4096):\n"
        "            block[j] = 1\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(sorted(os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids))\n"
    )
    assert res.exit_reason is ExitReason.MEMORY
    peak = res.details["memory_peak_bytes"]
    assert isinstance(peak, int) and peak <= LIMITS.memory_bytes
    # Some children were killed by the run's OOM killer (-9); the host never was.
    assert "-9" in res.stdout


@requires_sandbox
def test_memfd_and_dev_shm_count_against_the_run() -> None:
    big_files = SandboxLimits(
        wall_s=8, memory_bytes=128 * MIB, fsize_bytes=1024 * MIB, shm_bytes=1024 * MIB
    )
    memfd = run(
        "import os\n"
        "fd = os.memfd_create('x')\n"
        "for i in range(512):\n"
        "    os.write(fd, b'x' * 1024 * 1024)\n"
        "print('wrote 512 MiB')\n",
        big_files,
    )
    assert memfd.exit_reason is ExitReason.MEMORY
    assert "wrote" not in memfd.stdout
    shm = run(
        "f = open('/dev/shm/x', 'wb')\n"
        "for i in range(512):\n"
        "    f.write(b'x' * 1024 * 1024)\n"
        "    f.flush()\n"
        "print('wrote 512 MiB')\n",
        big_files,
    )
    assert shm.exit_reason is ExitReason.MEMORY
    assert "wrote" not in shm.stdout


@requires_sandbox
def test_dev_shm_is_a_small_tmpfs_and_dev_is_read_only() -> None:
    res = run(
        "import os\n"
        "try:\n"
        "    with open('/dev/shm/x', 'wb') as f:\n"
        "        for i in range(64):\n"
        "            f.write(b'x' * 1024 * 1024)\n"
        "            f.flush()\n"
        "    print('filled')\n"
        "except OSError as e:\n"
        "    print('shm', e.errno)\n"
        "try:\n"
        "    open('/dev/evil', 'w')\n"
        "except OSError as e:\n"
        "    print('dev', e.errno)\n",
        SandboxLimits(wall_s=8, shm_bytes=4 * MIB, fsize_bytes=256 * MIB),
    )
    assert res.stdout.split() == ["shm", "28", "dev", "30"]  # ENOSPC, EROFS


@requires_sandbox
def test_cpu_time_is_limited_for_the_whole_run() -> None:
    """Four busy children under a 2-second CPU limit: per-process RLIMIT_CPU would allow 8+."""
    limits = SandboxLimits(wall_s=30, cpu_s=2, cpus=4.0)
    res = run(
        "import os\n"
        "for i in range(4):\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            pass\n"
        "while True:\n"
        "    pass\n",
        limits,
    )
    assert res.exit_reason is ExitReason.TIMEOUT
    cpu = res.details["cpu_s"]
    assert isinstance(cpu, float) and 2 <= cpu < 10


@requires_sandbox
def test_a_fork_bomb_does_not_starve_concurrent_runs() -> None:
    """Processes are counted per run (pids cgroup), not per host uid: while one run forks all
    it can, others start and finish normally."""
    results: dict[str, sandbox.SandboxResult] = {}

    def bomb() -> None:
        results["bomb"] = run(
            "import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n",
            SandboxLimits(wall_s=6, cpu_s=6),
        )

    thread = threading.Thread(target=bomb)
    thread.start()
    honest = [run("print(sum(range(10)))") for _ in range(8)]
    thread.join()
    assert [(r.exit_reason, r.stdout) for r in honest] == [(ExitReason.OK, "45\n")] * 8
    assert results["bomb"].exit_reason in (ExitReason.TIMEOUT, ExitReason.RUNTIME_ERROR)


@requires_sandbox
def test_a_program_that_prints_like_bwrap_is_just_a_failing_program() -> None:
    res = run(
        "import sys\n"
        "sys.stderr.write('bwrap: Creating new namespace failed: '\n"
        "                 'Resource temporarily unavailable\\n')\n"
        "sys.exit(1)\n"
    )
    assert res.exit_reason is ExitReason.RUNTIME_ERROR
    assert res.returncode == 1


@pytest.fixture
def fake_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder the unprivileged sandbox uid can read, for a stand-in bwrap script."""
    folder = Path(tempfile.mkdtemp(prefix="tp-fake-bwrap-"))
    folder.chmod(0o755)
    yield folder
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def _script(folder: Path, body: str) -> Path:
    path = folder / "bwrap"
    path.write_text("#!/usr/bin/python3\nimport os, sys\n" + body)
    path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return path


def _status_fd() -> str:
    return "int(sys.argv[sys.argv.index('--json-status-fd') + 1])"


@requires_sandbox
def test_a_sandbox_that_cannot_start_is_an_error_with_bwraps_reason(
    fake_bwrap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _script(
        fake_bwrap,
        "sys.stderr.write('bwrap: No permissions to creating new namespace\\n')\nsys.exit(1)\n",
    )
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(path))
    with pytest.raises(SandboxUnavailable, match="No permissions to creating new namespace"):
        run_python("print(1)", unsafe_no_sandbox=False)
    out = CodeVerifier().verify(
        Candidate(completion="```python\nprint(3)\n```"),
        Gold(tests=[{"input": "", "output": "3"}]),
        {},
    )
    assert out.status is Status.ERROR
    assert "No permissions" in out.details["message"]


@requires_sandbox
def test_a_bwrap_that_dies_silently_is_an_error_not_a_fail(
    fake_bwrap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox started (it reported the program's pid) and then bwrap died without the
    program's exit status: no verdict can be drawn, so `error`, never `fail`."""
    path = _script(
        fake_bwrap,
        f"os.write({_status_fd()}, b'{{\"child-pid\": 4242}}\\n')\nos._exit(0)\n",
    )
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(path))
    with pytest.raises(SandboxFailure):
        run_python("print(1)", unsafe_no_sandbox=False)
    out = CodeVerifier().verify(
        Candidate(completion="```python\nprint(3)\n```"),
        Gold(tests=[{"input": "", "output": "3"}]),
        {},
    )
    assert (out.status, out.details["error"]) == (Status.ERROR, "SandboxFailure")


def test_without_per_run_limits_the_sandbox_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    monkeypatch.setattr(
        cgroups, "prepare", lambda root=cgroups.CGROUP_ROOT: cgroups.Support(0, problem="nope")
    )
    if sandbox._bwrap_path() is None:
        pytest.skip("bubblewrap is not installed: the refusal is for that reason instead")
    with pytest.raises(SandboxUnavailable, match="per-run limits are unavailable \\(nope\\)"):
        run_python("print(1)")
    assert "nope" in (sandbox.check_available() or "")


def test_without_bubblewrap_the_sandbox_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    monkeypatch.setenv(sandbox.BWRAP_ENV, "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run_python("print(1)")
    assert "bubblewrap" in (sandbox.check_available() or "")


@requires_sandbox
def test_capabilities_name_what_isolates_a_run() -> None:
    line = sandbox.capabilities()
    assert line.startswith("bubblewrap: bubblewrap ")
    assert "per-run limits (cpu, memory, pids)" in line or "per-run limits (memory, pids)" in line


# --- cgroup detection, on fake hierarchies -------------------------------------------------


def _v1_tree(root: Path, writable: bool = True) -> None:
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        own = root / controller / "svc"
        own.mkdir(parents=True)
        if not writable:
            own.chmod(0o555)


def test_detect_v1_makes_run_groups_inside_our_own_group(tmp_path: Path) -> None:
    _v1_tree(tmp_path)
    support = cgroups.detect(
        tmp_path, "5:memory:/svc\n6:pids:/svc\n7:cpu:/svc\n8:cpuacct:/svc\n0::/\n"
    )
    assert support.usable
    assert support.version == 1
    assert support.parents == {
        "memory": tmp_path / "memory/svc",
        "pids": tmp_path / "pids/svc",
        "cpu": tmp_path / "cpu/svc",
    }
    assert support.cpuacct == tmp_path / "cpuacct/svc"


def test_detect_v1_without_a_pids_hierarchy_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    support = cgroups.detect(tmp_path, "5:memory:/\n")
    assert not support.usable
    assert support.problem == f"no cgroup hierarchy for pids under {tmp_path}"


def test_detect_v2_needs_delegated_memory_and_pids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cgroups.BASE_ENV, raising=False)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids io\n")
    own = tmp_path / "user.slice/worker.service"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu io\n")
    support = cgroups.detect(tmp_path, "0::/user.slice/worker.service\n")
    assert not support.usable
    assert "memory, pids are not delegated" in (support.problem or "")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    support = cgroups.detect(tmp_path, "0::/user.slice/worker.service\n")
    assert support.usable
    assert support.parents == {"memory": own, "pids": own, "cpu": own}


def test_detect_v2_honours_the_configured_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    base = tmp_path / "delegated"
    base.mkdir()
    (base / "cgroup.controllers").write_text("memory pids\n")
    monkeypatch.setenv(cgroups.BASE_ENV, str(base))
    support = cgroups.detect(tmp_path, "0::/somewhere/else\n")
    assert support.parents == {"memory": base, "pids": base}


def test_run_group_writes_v2_limits_and_reads_its_counters(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    support = cgroups.Support(2, {"memory": base, "pids": base, "cpu": base})
    real_mkdir = Path.mkdir

    def mkdir_with_files(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self)
        for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.max", "cgroup.procs"):
            (self / name).write_text("")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "mkdir", mkdir_with_files)
        group = cgroups.RunGroup.create(support, memory_bytes=1000, pids=7, cpus=0.5)
    (path,) = set(group.dirs.values())
    assert (path / "memory.max").read_text() == "1000"
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "7"
    assert (path / "cpu.max").read_text() == "50000 100000"
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert group.oom_killed() is True
    assert group.cpu_seconds() == 2.5
    assert group.procs_files() == [os.fsencode(path / "cgroup.procs")]


def _dead_pid() -> int:
    proc = subprocess.Popen(["/bin/true"])
    proc.wait()
    return proc.pid


@requires_sandbox
def test_groups_and_folders_of_a_dead_worker_are_cleaned_at_start_up() -> None:
    """A worker killed while bwrap was setting up leaves processes blocked in their run's
    cgroup, and its run folder (hidden tests) in /tmp: the next worker removes both."""
    support = cgroups.prepare()
    dead = _dead_pid()
    dirs = {}
    for controller, parent in support.parents.items():
        path = parent / f"tp-run-{dead}-1-1"
        path.mkdir()
        dirs[controller] = path
    join = " && ".join(f"echo $$ > {path}/cgroup.procs" for path in dirs.values())
    orphan = subprocess.Popen(["/bin/sh", "-c", f"{join} && exec /bin/sleep 60"])
    pids_file = dirs["pids"] / "cgroup.procs"
    for _ in range(500):  # until the orphan has joined its group
        if str(orphan.pid) in pids_file.read_text().split():
            break
        time.sleep(0.01)
    stale = Path(tempfile.gettempdir()) / f"{sandbox.WORKDIR_PREFIX}{dead}-abc"
    stale.mkdir()
    (stale / "spec.json").write_text("{}")
    live = Path(tempfile.mkdtemp(prefix=f"{sandbox.WORKDIR_PREFIX}{os.getpid()}-"))
    try:
        cgroups._remove_orphans(support)
        assert orphan.wait(timeout=10) == -9
        assert all(not path.exists() for path in dirs.values())
        assert sandbox.remove_stale_workdirs() >= 1
        assert not stale.exists()
        assert live.exists()
    finally:
        orphan.kill()
        live.rmdir()

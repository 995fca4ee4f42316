"""Sandbox escape suite: each attempt is contained, and reported with the right exit reason."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from scoring import cgroups
from scoring.sandbox import ExitReason, SandboxLimits, SandboxResult, run_python

from .sandbox_support import requires_sandbox

pytestmark = requires_sandbox

FAST = SandboxLimits(wall_s=3, cpu_s=2, memory_bytes=256 * 1024**2, max_output_bytes=64 * 1024)


def run(source: str, limits: SandboxLimits = FAST) -> SandboxResult:
    res = run_python(source, "", limits, unsafe_no_sandbox=False)
    assert res.sandboxed
    return res


def test_sandbox_runs_as_unprivileged_user_with_empty_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRET_KEY", "django-insecure-test-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://thinkpool:hunter2@db/thinkpool")
    res = run(
        "import os\n"
        "print(os.getuid(), os.getgid())\n"
        "print(sorted(os.environ))\n"
        "print(open('/proc/1/environ','rb').read())\n"
        "print(open('/proc/self/environ','rb').read())\n"
    )
    assert res.exit_reason is ExitReason.OK
    lines = res.stdout.splitlines()
    assert lines[0] == "65534 65534"
    assert lines[1] == "['HOME', 'LANG', 'PATH', 'PWD']"
    assert "hunter2" not in res.stdout
    assert "django-insecure" not in res.stdout
    assert "SECRET_KEY" not in res.stdout


def test_host_processes_are_invisible() -> None:
    me = os.getpid()
    res = run(
        "import os\n"
        f"print(os.path.exists('/proc/{me}') and {me} != 1)\n"
        "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
    )
    assert res.stdout.split() == ["False", "1"]  # only itself, as pid 1


def test_network_is_unreachable() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        res = run(
            "import socket\n"
            f"for host, port in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=1)\n"
            "        print('connected', host)\n"
            "    except OSError as e:\n"
            "        print('blocked', host, type(e).__name__)\n"
            "try:\n"
            "    socket.getaddrinfo('example.com', 80)\n"
            "    print('resolved')\n"
            "except OSError:\n"
            "    print('no dns')\n"
        )
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the host's loopback
    finally:
        server.close()
    assert res.exit_reason is ExitReason.OK
    assert "connected" not in res.stdout
    assert res.stdout.count("blocked") == 3
    assert "no dns" in res.stdout


def test_filesystem_is_read_only_except_tmp(tmp_path: Path) -> None:
    outside = tmp_path / "pwned"
    res = run(
        "import os\n"
        f"targets = ['/usr/pwned', '/sandbox/pwned', '/etc/pwned', '/pwned', '{outside}']\n"
        "for t in targets:\n"
        "    try:\n"
        "        open(t, 'w').write('x')\n"
        "        print('wrote', t)\n"
        "    except OSError as e:\n"
        "        print('denied', t, type(e).__name__)\n"
        "open('/tmp/ok', 'w').write('fine')\n"
        "print('tmp', open('/tmp/ok').read())\n"
        "for secret in ['/work/main/pyproject.toml', '/root/.bashrc', '/etc/shadow']:\n"
        "    print('visible' if os.path.exists(secret) else 'absent', secret)\n"
    )
    assert res.exit_reason is ExitReason.OK
    assert "wrote" not in res.stdout
    assert res.stdout.count("denied") == 5
    assert "tmp fine" in res.stdout
    assert "visible" not in res.stdout
    assert not outside.exists()
    assert not Path("/usr/pwned").exists()


def test_tmp_is_small_and_file_size_limited() -> None:
    res = run("open('/tmp/big', 'wb').write(b'x' * (64 * 1024 * 1024))\n")
    assert res.exit_reason in (ExitReason.OUTPUT_LIMIT, ExitReason.RUNTIME_ERROR)
    assert res.exit_reason is not ExitReason.OK


def test_fork_bomb_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[cgroups.RunGroup] = []
    create = cgroups.RunGroup.create

    def recording(*args: Any, **kwargs: Any) -> cgroups.RunGroup:
        group = create(*args, **kwargs)
        groups.append(group)
        return group

    monkeypatch.setattr(cgroups.RunGroup, "create", recording)
    before = time.monotonic()
    res = run(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    assert res.exit_reason in (ExitReason.TIMEOUT, ExitReason.RUNTIME_ERROR)
    assert time.monotonic() - before < FAST.wall_s + 3
    # The run's own cgroup held every process it forked; it is empty and gone: nothing of the
    # bomb is left (whatever else runs on this machine under the same uid).
    (group,) = groups
    assert all(not path.exists() for path in group.dirs.values())
    assert run("print('still works')").stdout == "still works\n"


def test_memory_bomb_is_reported_as_memory() -> None:
    res = run("x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))\n")
    assert res.exit_reason is ExitReason.MEMORY


def test_infinite_loop_hits_cpu_or_wall_limit() -> None:
    before = time.monotonic()
    res = run("while True:\n    pass\n")
    assert res.exit_reason is ExitReason.TIMEOUT
    assert time.monotonic() - before < FAST.wall_s + 2


def test_sleeping_past_wall_limit_is_killed() -> None:
    res = run("import time\ntime.sleep(60)\n", SandboxLimits(wall_s=1))
    assert res.exit_reason is ExitReason.TIMEOUT
    assert res.wall_ms < 2500


def test_endless_output_is_capped() -> None:
    res = run("while True:\n    print('spam' * 100)\n")
    assert res.exit_reason is ExitReason.OUTPUT_LIMIT
    assert res.truncated
    assert len(res.stdout.encode()) + len(res.stderr.encode()) <= FAST.max_output_bytes


def test_signalling_the_parent_does_not_reach_the_test_process() -> None:
    me = os.getpid()
    res = run(
        "import os, signal\n"
        "for target in (os.getppid(), -1, " + str(me) + "):\n"
        "    try:\n"
        "        os.kill(target, signal.SIGKILL)\n"
        "        print('sent', target)\n"
        "    except OSError as e:\n"
        "        print('failed', target, type(e).__name__)\n"
        "print('alive')\n"
    )
    # We are still here to assert, and the sandboxed program ran to its end.
    assert os.getpid() == me
    assert f"failed {me}" in res.stdout
    assert res.exit_reason is ExitReason.OK
    assert "alive" in res.stdout


def test_cannot_create_user_namespaces_or_escalate() -> None:
    res = run(
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000))\n"  # CLONE_NEWUSER
        "try:\n"
        "    os.setuid(0)\n"
        "    print('root!')\n"
        "except OSError:\n"
        "    print('no setuid')\n"
    )
    assert "unshare -1" in res.stdout
    assert "no setuid" in res.stdout
    assert "root!" not in res.stdout

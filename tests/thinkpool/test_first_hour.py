"""A newcomer's first hour: the README's commands, `make run`, `make test`, production settings.

Each test runs the real thing in a subprocess with a clean environment (no DATABASE_URL, DEBUG
or SECRET_KEY inherited from the test run), against a temporary THINKPOOL_VAR_DIR, so it passes
the same way in both passes of `make test` and never touches this checkout's var/.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
DOC_ENV_MARKER = "# production.env"


def clean_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(var_dir),
        "LANG": "C.UTF-8",
        "HF_HUB_OFFLINE": "1",
        "THINKPOOL_VAR_DIR": str(var_dir),
    }
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def write_local_env(var_dir: Path) -> str:
    result = run(["bash", "scripts/local-env.sh"], clean_env(var_dir))
    assert result.returncode == 0, result.stderr
    return (var_dir / "local.env").read_text()


def print_secret_key(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"
    return run([PY, "-c", code], {**env, "DJANGO_SETTINGS_MODULE": "thinkpool.settings"})


# --- the local settings file that `make run` writes ----------------------------------------------


def test_readme_commands_work_with_no_variables_typed_after_make_run(tmp_path):
    write_local_env(tmp_path)
    env = clean_env(tmp_path)

    migrate = run([PY, "manage.py", "migrate", "--noinput", "-v0"], env)
    assert migrate.returncode == 0, migrate.stderr
    issued = run([PY, "manage.py", "issue_token", "bob", "--create"], env)

    assert issued.returncode == 0, issued.stderr
    assert re.fullmatch(r"tp_\S{20,}\n", issued.stdout)
    # The same SQLite file in the temporary var dir now has bob.
    count = run(
        [
            PY,
            "manage.py",
            "shell",
            "-v0",
            "-c",
            "from django.contrib.auth.models import User; "
            "print(User.objects.filter(username='bob').count())",
        ],
        env,
    )
    assert count.stdout.strip() == "1", count.stderr


def test_local_env_is_written_once_private_and_kept(tmp_path):
    first = write_local_env(tmp_path)
    second = write_local_env(tmp_path)

    assert first == second
    assert (tmp_path / "local.env").stat().st_mode & 0o777 == 0o600
    values = dict(
        line.split("=", 1) for line in first.splitlines() if line and not line.startswith("#")
    )
    assert values.keys() == {"DEBUG", "SECRET_KEY"}
    assert values["DEBUG"] == "1"
    assert len(values["SECRET_KEY"]) >= 50
    # No temporary file left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.env"]


def test_each_checkout_gets_its_own_key(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert write_local_env(a).splitlines()[-1] != write_local_env(b).splitlines()[-1]


def test_settings_read_the_file_and_the_environment_wins(tmp_path):
    key = write_local_env(tmp_path).splitlines()[-1].removeprefix("SECRET_KEY=")

    from_file = print_secret_key(clean_env(tmp_path))
    from_env = print_secret_key(clean_env(tmp_path, SECRET_KEY="from-the-environment"))

    assert from_file.stdout.split() == ["True", key], from_file.stderr
    assert from_env.stdout.split() == ["True", "from-the-environment"], from_env.stderr


def test_debug_off_in_the_environment_never_reads_the_file(tmp_path):
    write_local_env(tmp_path)

    result = print_secret_key(clean_env(tmp_path, DEBUG="0"))

    assert result.returncode != 0
    assert "ImproperlyConfigured: Set the environment variable SECRET_KEY." in result.stderr


def test_without_the_file_production_stays_strict_and_says_how_to_develop(tmp_path):
    result = print_secret_key(clean_env(tmp_path))

    assert result.returncode != 0
    assert "ImproperlyConfigured: Set the environment variable SECRET_KEY." in result.stderr
    assert f"`make run` writes {tmp_path / 'local.env'}" in result.stderr
    assert not (tmp_path / "local.env").exists()


def test_a_malformed_local_env_line_stops_start_up_naming_file_and_line(tmp_path):
    (tmp_path / "local.env").write_text("DEBUG=1\n# fine\nnot a setting\n")

    result = print_secret_key(clean_env(tmp_path))

    assert result.returncode != 0
    assert f"{tmp_path / 'local.env'}, line 3: expected KEY=VALUE" in result.stderr


# --- production: check --deploy and static files ----------------------------------------------


def documented_production_env(var_dir: Path) -> dict[str, str]:
    """docs/deployment.md's environment file, with a real key and a temporary var dir."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if b.startswith(DOC_ENV_MARKER)]
    values = dict(
        line.split("=", 1) for line in block.splitlines() if line and not line.startswith("#")
    )
    assert values["DEBUG"] == "0"
    assert values["SECRET_KEY"].startswith("<")  # a placeholder, never a usable key
    values["SECRET_KEY"] = secrets.token_urlsafe(50)
    return clean_env(var_dir, **{**values, "THINKPOOL_VAR_DIR": str(var_dir)})


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    env = documented_production_env(tmp_path)
    # A development file in the same var dir must change nothing (DEBUG=0 is set).
    write_local_env(tmp_path)

    result = run([PY, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_when_a_security_setting_is_relaxed(tmp_path):
    env = {**documented_production_env(tmp_path), "SECURE_SSL_REDIRECT": "0"}

    result = run([PY, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode != 0
    assert "security.W008" in result.stderr


WSGI_PROBE = r"""
import io, json, re, sys
from wsgiref.util import setup_testing_defaults
from thinkpool.wsgi import application

def get(path, **headers):
    environ = {"PATH_INFO": path, "HTTP_HOST": "thinkpool.example", **headers}
    setup_testing_defaults(environ)
    answer = {}
    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = int(status[:3]), dict(response_headers)
    body = b"".join(application(environ, start_response))
    return answer["status"], answer["headers"], body

https = {"HTTP_X_FORWARDED_PROTO": "https"}
report = {}
status, _, page = get("/admin/login/", **https)
report["admin_page"] = status
report["admin_css"] = [
    (css, get(css, **https)[0], get(css, **https)[1].get("Content-Type"))
    for css in re.findall(r'href="(/static/[^"]+\.css)"', page.decode())
]
status, _, page = get("/api/docs/", **https)
report["docs_page"] = status
report["docs_assets"] = [
    (url, get(url, **https)[0])
    for url in re.findall(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', page.decode())
]
report["unknown_static"] = get("/static/admin/css/no-such-file.css", **https)[0]
report["outside_static_root"] = get("/static/../local.env", **https)[0]
status, headers, _ = get("/admin/login/")
report["plain_http"] = [status, headers.get("Location")]
report["healthz_plain_http"] = get("/healthz")[0]
print(json.dumps(report))
"""


@pytest.mark.slow
def test_collectstatic_then_admin_and_api_docs_assets_are_served_with_debug_off(tmp_path):
    import json

    env = documented_production_env(tmp_path)
    # The probe needs no database: the login page and the docs read none.
    collected = run([PY, "manage.py", "collectstatic", "--noinput", "-v0"], env, timeout=300)
    assert collected.returncode == 0, collected.stderr
    write_local_env(tmp_path)  # a secret beside STATIC_ROOT, which must stay unreachable

    probe = run([PY, "-c", WSGI_PROBE], {**env, "DJANGO_SETTINGS_MODULE": "thinkpool.settings"})
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.strip().splitlines()[-1])

    assert report["admin_page"] == 200
    admin_css = {url: (status, ctype) for url, status, ctype in report["admin_css"]}
    # Hashed names (collected with the manifest), each served with its type.
    assert any(re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", u) for u in admin_css)
    assert set(admin_css.values()) == {(200, 'text/css; charset="utf-8"')}
    assert report["docs_page"] == 200
    assert any("swagger-ui" in url for url, _ in report["docs_assets"])
    assert {status for _, status in report["docs_assets"]} == {200}
    assert report["unknown_static"] == 404
    assert report["outside_static_root"] == 404
    assert report["plain_http"] == [301, "https://thinkpool.example/admin/login/"]
    assert report["healthz_plain_http"] == 200


def test_tests_and_development_need_no_collectstatic(client, settings):
    # The suite runs with DEBUG=1 from the environment: plain storage, files from the apps.
    assert settings.STORAGES["staticfiles"]["BACKEND"].endswith("StaticFilesStorage")
    assert "Manifest" not in settings.STORAGES["staticfiles"]["BACKEND"]
    assert settings.MIDDLEWARE[:2] == [
        "django.middleware.security.SecurityMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
    ]
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*\n    DJANGO Admin styles")


# --- system packages ---------------------------------------------------------------------------


def fake_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def deps_sandbox(tmp_path):
    """scripts/system-deps.sh in a copy of the repository layout, with a PATH of fakes only."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / ".venv").mkdir()
    shutil.copy(ROOT / "scripts" / "system-deps.sh", repo / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "dirname", 'exec /usr/bin/env -i /usr/bin/dirname "$@"')
    log = tmp_path / "apt.log"
    fake_command(bin_dir, "apt-get", f'echo "$DEBIAN_FRONTEND $*" >> {log}')
    return repo, bin_dir, log


def system_deps(repo: Path, bin_dir: Path, uid: int, profile: str) -> subprocess.CompletedProcess:
    fake_command(bin_dir, "id", f"echo {uid}")
    env = {"PATH": str(bin_dir), "PG_TEST_URL": "postgres://db.example/x"}
    return subprocess.run(
        ["/bin/bash", str(repo / "scripts" / "system-deps.sh"), profile],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_test_without_root_stops_at_once_with_the_one_command(deps_sandbox):
    repo, bin_dir, log = deps_sandbox

    result = system_deps(repo, bin_dir, 1000, "test")

    assert result.returncode == 2
    assert (
        "Missing system packages for make test: redis-server git chromium bubblewrap. Install "
        "them with:\n\n    sudo apt-get install -y redis-server git chromium bubblewrap\n"
    ) in result.stderr
    assert not log.exists()


def test_make_test_as_root_installs_what_is_missing(deps_sandbox):
    repo, bin_dir, log = deps_sandbox

    result = system_deps(repo, bin_dir, 0, "test")

    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "noninteractive update -qq",
        "noninteractive install -y -qq --no-install-recommends redis-server git chromium "
        "bubblewrap",
    ]


def test_make_run_without_bubblewrap_goes_on_and_says_how_to_get_it(deps_sandbox):
    repo, bin_dir, log = deps_sandbox

    result = system_deps(repo, bin_dir, 1000, "run")

    assert result.returncode == 0
    assert "    sudo apt-get install -y bubblewrap" in result.stderr
    assert not log.exists()


def test_nothing_missing_installs_nothing(deps_sandbox):
    repo, bin_dir, log = deps_sandbox
    for name in ("redis-server", "redis-cli", "bwrap", "git", "chromium"):
        fake_command(bin_dir, name, "exit 0")

    result = system_deps(repo, bin_dir, 0, "test")

    assert (result.returncode, result.stderr) == (0, "")
    assert not log.exists()


def test_an_unknown_profile_is_refused(deps_sandbox):
    repo, bin_dir, _ = deps_sandbox

    result = system_deps(repo, bin_dir, 0, "everything")

    assert result.returncode == 64
    assert "usage:" in result.stderr


# --- scripts/with-services.sh --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


needs_services = pytest.mark.skipif(
    not (
        shutil.which("redis-server")
        and (list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb"))
    ),
    reason="needs the postgresql and redis-server packages",
)

DATA_DIR_PROBE = (
    "import os, sys, time, psycopg\n"
    "with psycopg.connect(os.environ['DATABASE_URL']) as c:\n"
    "    d = c.execute('show data_directory').fetchone()[0]\n"
    "open(sys.argv[1], 'w').write(d)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "sys.exit(int(sys.argv[3]))\n"
)


def services_env(tmp_path: Path) -> tuple[dict[str, str], int]:
    redis_port = free_port()
    env = clean_env(tmp_path, PG_PORT=str(free_port()), REDIS_PORT=str(redis_port))
    return env, redis_port


@needs_services
def test_with_services_removes_its_cluster_and_keeps_the_exit_status(tmp_path):
    env, redis_port = services_env(tmp_path)
    probe = tmp_path / "data_dir"

    result = run(
        ["bash", "scripts/with-services.sh", PY, "-c", DATA_DIR_PROBE, str(probe), "0", "3"], env
    )

    assert result.returncode == 3, result.stderr
    data_dir = Path(probe.read_text())
    assert data_dir.name.startswith("thinkpool-pg.")
    assert not data_dir.exists()
    assert not port_open(redis_port)


@needs_services
def test_with_services_cleans_up_after_ctrl_c(tmp_path):
    env, redis_port = services_env(tmp_path)
    probe = tmp_path / "data_dir"
    proc = subprocess.Popen(
        ["bash", "scripts/with-services.sh", PY, "-c", DATA_DIR_PROBE, str(probe), "60", "0"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not probe.exists() or not probe.read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        data_dir = Path(probe.read_text())
        assert data_dir.exists()
        # What a terminal's Ctrl-C does: SIGINT to the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not data_dir.exists()
    assert not port_open(redis_port)


# --- make run -----------------------------------------------------------------------------------


def session_processes(sid: int) -> set[int]:
    """Live (not zombie) processes of one session, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def run_var_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("make-run")


def start_make_run(var_dir: Path, port: int) -> tuple[subprocess.Popen, Path]:
    out = var_dir / f"run-{port}.out"
    proc = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env=clean_env(var_dir, PORT=str(port)),
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_make_run_answers_when_the_banner_shows_and_ctrl_c_stops_everything(run_var_dir):
    port = free_port()
    proc, out = start_make_run(run_var_dir, port)
    try:
        deadline = time.monotonic() + 300
        while "Thinkpool is running." not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        started = session_processes(proc.pid)

        # At the banner both answer: the web server, and the worker through the broker.
        env = {**clean_env(run_var_dir), "DJANGO_SETTINGS_MODULE": "thinkpool.settings"}
        health = run(
            [
                PY,
                "-c",
                "import sys, urllib.request; sys.stdout.write(urllib.request."
                f"urlopen('http://127.0.0.1:{port}/healthz').read().decode())",
            ],
            env,
        )
        assert health.stdout == '{"ok": true}', health.stderr
        ping = run(
            [
                str(Path(PY).parent / "celery"),
                "-A",
                "thinkpool",
                "inspect",
                "ping",
                "--timeout",
                "5",
            ],
            env,
        )
        assert "pong" in ping.stdout, ping.stdout + ping.stderr
        # web, worker (and its pool), beat, and run.sh itself
        assert len(started) >= 5

        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in started if alive(pid)] == []
    assert not port_open(port)


@pytest.mark.slow
def test_make_run_stops_everything_when_a_process_cannot_start(run_var_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, out = start_make_run(run_var_dir, port)
        try:
            status = proc.wait(timeout=300)
            leftover = session_processes(proc.pid)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    text = out.read_text()
    assert status == 1, text
    assert "Thinkpool is running." not in text
    assert "The web stopped while starting" in text
    assert "That port is already in use" in text
    assert leftover == set()


# --- docs and import contracts --------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_design_docs_exist():
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"architecture.md", "data-flow.md", "invariants.md", "deployment.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.name)
def test_links_point_inside_the_project(path):
    text = path.read_text()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), target
        assert resolved.exists(), target


def copy_packages(dest: Path) -> None:
    for package in ("thinkpool", "contributors", "scoring"):
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", dest)


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(PY).parent / "lint-imports"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_contracts_catch_the_worker_importing_django_and_scoring_importing_up(tmp_path):
    copy_packages(tmp_path)
    kept = lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout
    assert "Contracts: 3 kept, 0 broken." in kept.stdout

    worker_module = tmp_path / "contributors" / "worker" / "config.py"
    worker_module.write_text(worker_module.read_text() + "\nimport django.conf  # noqa\n")
    scoring_module = tmp_path / "scoring" / "apps.py"
    scoring_module.write_text(scoring_module.read_text() + "\nimport contributors.models  # noqa\n")
    broken = lint_imports(tmp_path)

    assert broken.returncode == 1
    # The third contract (no platform package imports `datasets`) still holds.
    assert "Contracts: 1 kept, 2 broken." in broken.stdout
    assert "contributors.worker.config -> django" in broken.stdout
    assert "scoring.apps -> contributors.models" in broken.stdout

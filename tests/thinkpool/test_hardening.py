"""The platform under bad settings, bad URLs, outages and password guessing: a clear refusal at
start-up, a 4xx, or a 503 that names what is down; never a 500."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.urls import reverse

from contributors.services import issue_token
from thinkpool.celery import app as celery_app
from thinkpool.middleware import NUL_MESSAGE

ROOT = Path(__file__).resolve().parents[2]


def load_settings(expr: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("THINKPOOL_")}
    return subprocess.run(
        [sys.executable, "-c", f"import thinkpool.settings as s; print({expr})"],
        cwd=ROOT,
        env={**clean, "DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- Settings that would have failed later fail at start-up ---------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"THINKPOOL_TOKEN_RATE": "abc"}, "THINKPOOL_TOKEN_RATE must be a rate like 600/min"),
        ({"THINKPOOL_TOKEN_RATE": "10/fortnight"}, "THINKPOOL_TOKEN_RATE must be a rate"),
        ({"THINKPOOL_ANON_RATE": "0/min"}, "THINKPOOL_ANON_RATE must be a rate"),
        ({"THINKPOOL_ANON_RATE": "²/min"}, "THINKPOOL_ANON_RATE must be a rate"),
        ({"THINKPOOL_AUTH_FAILURE_RATE": "5"}, "THINKPOOL_AUTH_FAILURE_RATE must be a rate"),
        ({"THINKPOOL_NUM_PROXIES": "-1"}, "THINKPOOL_NUM_PROXIES must be at least 0"),
        ({"THINKPOOL_LOGIN_FAILURE_LIMIT": "0"}, "THINKPOOL_LOGIN_FAILURE_LIMIT must be at least"),
        ({"THINKPOOL_LOGIN_COOLOFF_MIN": "soon"}, "THINKPOOL_LOGIN_COOLOFF_MIN must be an integer"),
    ],
)
def test_bad_limits_stop_start_up_naming_the_variable(env, message):
    result = load_settings("1", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_rates_are_read_in_every_spelling_drf_understands():
    result = load_settings(
        "s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']",
        THINKPOOL_TOKEN_RATE=" 100 / Hour ",
        THINKPOOL_ANON_RATE="5/s",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'token': '100/h', 'anon': '5/s', 'auth_failure': '30/m'}"


def test_postgres_connections_are_health_checked_and_time_out():
    result = load_settings(
        "(s.DATABASES['default']['CONN_HEALTH_CHECKS'], s.DATABASES['default']['OPTIONS'],"
        " s.REST_FRAMEWORK['NUM_PROXIES'])",
        DATABASE_URL="postgres://u:p@db.example:5432/thinkpool",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(True, {'connect_timeout': 5}, 0)"


# --- URLs that were 500s --------------------------------------------------------------------


def test_schema_ignores_a_version_it_does_not_serve(client):
    response = client.get("/api/v1/schema/?version=x%0aY")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'inline; filename="Thinkpool API.yaml"'
    assert client.get("/api/v1/schema/?version=1").status_code == 200


def admin_changelists() -> list[tuple[str, Any]]:
    return [
        (reverse(f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist"), model_admin)
        for m, model_admin in admin.site._registry.items()
    ]


def test_every_admin_changelist_refuses_nul_in_search_and_filters(admin_client):
    changelists = admin_changelists()
    assert len(changelists) >= 10
    for url, model_admin in changelists:
        # A plain search and filter still work: only NUL is refused.
        assert admin_client.get(url, {"q": "abc"}).status_code == 200, url
        response = admin_client.get(url, {"q": "\x00"})
        assert response.status_code == 400, url
        assert response.content.decode() == NUL_MESSAGE
        field = next(f.name for f in model_admin.model._meta.fields if f.name != "id")
        assert admin_client.get(url, {f"{field}__exact": "a\x00b"}).status_code == 400, url


def test_nul_in_an_api_query_or_path_is_a_json_400(api):
    response = api.get("/api/v1/samples/", {"status": "\x00"})
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid_query", "message": NUL_MESSAGE}}
    assert api.get("/api/v1/leases/%00/").status_code == 400


# --- /healthz and /readyz -------------------------------------------------------------------


@pytest.fixture
def dead_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound, never listening: refused, and nobody else's port
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.django_db
def test_readyz_is_200_with_every_check_when_all_is_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["down"] == []
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "cache": True,
    }
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_readyz_is_503_naming_a_dead_broker_and_cache_while_healthz_stays_200(
    client, settings, monkeypatch, dead_port
):
    dead = f"redis://127.0.0.1:{dead_port}/0"
    monkeypatch.setenv("CELERY_BROKER_URL", dead)  # Celery reads it before its settings
    monkeypatch.setitem(celery_app.conf, "broker_url", dead)
    monkeypatch.setitem(celery_app.conf, "broker_transport_options", {})
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": dead,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["down"] == ["broker", "cache"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"] == {
        "ok": False,
        "error": "OperationalError",
        "ms": body["checks"]["broker"]["ms"],
    }
    assert body["checks"]["cache"]["error"] == "ConnectionError"
    assert str(dead_port) not in response.content.decode()  # addresses stay in the log
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"ok": True}


# --- A PostgreSQL restart: the next request reconnects --------------------------------------


def wsgi_get(path: str, **headers: str) -> tuple[str, bytes]:
    """One request through the WSGI handler, as a web server worker makes it: unlike the test
    client, this runs Django's connection upkeep (close_old_connections) around the request."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET", **headers}
    environ["wsgi.input"] = BytesIO(b"")
    setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(code: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(code)
        return lambda data: None

    body = b"".join(get_wsgi_application()(environ, start_response))
    return status[0], body


def terminate_this_processes_connection() -> None:
    import psycopg

    pid = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"],
        host=db["HOST"],
        port=db["PORT"],
        autocommit=True,
    ) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        for _ in range(100):  # the backend exits shortly after the signal
            if not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                break
            threading.Event().wait(0.05)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("health_checks", [True, False])
def test_a_request_after_postgres_dropped_the_connection_succeeds(user, health_checks):
    _, raw = issue_token(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    saved = connection.settings_dict["CONN_HEALTH_CHECKS"]
    assert saved is True  # what settings.py configures
    # A connection reads the flag when it opens: the next request opens one with it.
    connection.close()
    connection.settings_dict["CONN_HEALTH_CHECKS"] = health_checks
    try:
        assert wsgi_get("/api/v1/me/", **auth)[0] == "200 OK"
        assert connection.connection is not None  # kept open for the next request (CONN_MAX_AGE)
        terminate_this_processes_connection()
        status, _ = wsgi_get("/api/v1/me/", **auth)
    finally:
        connection.close()
        connection.settings_dict["CONN_HEALTH_CHECKS"] = saved
    # Without the health check the first request after a restart fails: what this fixes.
    assert status == ("200 OK" if health_checks else "500 Internal Server Error")


# --- The admin login locks out a guessed username -------------------------------------------


def login(client, password: str, ip: str = "192.0.2.1"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": password},
        REMOTE_ADDR=ip,
    )


@pytest.mark.django_db
def test_admin_login_locks_at_the_nth_failure_until_the_cool_off(client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    get_user_model().objects.create_superuser("root", "root@example.org", "right-horse-42")
    assert [login(client, "wrong").status_code for _ in range(2)] == [200, 200]  # form again
    assert login(client, "wrong").status_code == 429  # the 3rd failure locks
    response = login(client, "right-horse-42")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # The lock is on the username at this address: the maintainer elsewhere still logs in.
    assert login(client, "right-horse-42", ip="198.51.100.2").status_code == 302
    client.logout()
    # Once the cool-off has passed, the right password works again from the first address.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16)
    )
    response = login(client, "right-horse-42")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.session["_auth_user_id"] == str(get_user_model().objects.get().pk)


@pytest.mark.django_db
def test_a_successful_login_forgets_earlier_failures(client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    get_user_model().objects.create_superuser("root", "root@example.org", "right-horse-42")
    assert [login(client, "wrong").status_code for _ in range(2)] == [200, 200]
    assert login(client, "right-horse-42").status_code == 302
    client.logout()
    assert [login(client, "wrong").status_code for _ in range(2)] == [200, 200]
    assert login(client, "right-horse-42").status_code == 302


@pytest.mark.django_db
def test_behind_a_proxy_the_lockout_follows_the_forwarded_address(client, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    get_user_model().objects.create_superuser("root", "root@example.org", "right-horse-42")
    proxy = "10.0.0.1"

    def via_proxy(password: str, forwarded: str):
        return client.post(
            "/admin/login/",
            {"username": "root", "password": password},
            REMOTE_ADDR=proxy,
            HTTP_X_FORWARDED_FOR=forwarded,
        )

    assert via_proxy("wrong", "203.0.113.5").status_code == 200
    assert via_proxy("wrong", "203.0.113.5").status_code == 429
    assert via_proxy("right-horse-42", "203.0.113.5").status_code == 429
    assert AccessAttempt.objects.get().ip_address == "203.0.113.5"
    # Another client behind the same proxy is not locked out with the first...
    assert via_proxy("right-horse-42", "203.0.113.6").status_code == 302
    client.logout()
    # ...and a forwarded value that is no address is no 500 (the address column refuses it).
    assert via_proxy("right-horse-42", "not-an-address").status_code == 302


# --- seed_demo is for development only ------------------------------------------------------


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_without_debug(settings, tmp_path):
    settings.DEBUG = False
    settings.VAR_DIR = tmp_path
    with pytest.raises(CommandError, match="runs only with DEBUG=1"):
        call_command("seed_demo", "--prompts", "3", stdout=StringIO())
    assert not get_user_model().objects.exists()
    assert not (tmp_path / "demo-token").exists()


@pytest.mark.django_db
def test_seed_demo_runs_with_debug(settings, tmp_path):
    settings.DEBUG = True
    settings.VAR_DIR = tmp_path
    call_command("seed_demo", "--prompts", "3", stdout=StringIO())
    assert get_user_model().objects.get(username="admin").is_superuser

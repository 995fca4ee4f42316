"""Worker errors say what to do, tested against real local servers (plain http.server, and one
speaking TLS with a certificate made on the spot): a --server that is the API's address or the
model server's, a refused token, and https against http or the converse."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from contributors.worker import config as cfgmod
from contributors.worker.cli import main

NOT_FOUND = (404, {"error": {"code": "not_found", "message": "No such endpoint."}})


class Handler(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], tuple[int, Any]] = {}
    seen: list[tuple[str, str, str | None]]

    def _answer(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, body = self.routes.get((self.command, self.path), NOT_FOUND)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class Server:
    def __init__(self, routes: dict[tuple[str, str], tuple[int, Any]], tls: Path | None) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        handler = type("H", (Handler,), {"routes": routes, "seen": self.seen})
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls / "cert.pem", tls / "key.pem")
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.port = self.srv.server_address[1]


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[Server] = []

    def start(routes: dict[tuple[str, str], tuple[int, Any]], tls: Path | None = None) -> Server:
        srv = Server(routes, tls)
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.srv.shutdown()


@pytest.fixture
def cert(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1, made with the openssl command (no downloads)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path


@pytest.fixture(autouse=True)
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for var in [*cfgmod.ENV_VARS, "THINKPOOL_CONFIG", "THINKPOOL_JOURNAL", "SSL_CERT_FILE"]:
        monkeypatch.delenv(var, raising=False)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


ME = {"username": "ann", "handle": "ann"}


# --- --server is not the Thinkpool site's address --------------------------------------------


@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/", "/api"])
def test_server_with_api_path_appended_names_the_site_address(serve, capsys, suffix):
    srv = serve({("GET", "/api/v1/me/"): (200, ME)})
    root = f"http://127.0.0.1:{srv.port}"
    assert main(["login", "--server", root + suffix, "--token", "tp_x"]) == 2
    err = one_line(capsys)
    assert f"use --server {root} (the worker adds /api/v1 itself)" in err
    assert "http_404" not in err
    assert not cfgmod.config_path().exists()  # nothing saved


@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_server_pointing_at_the_model_server_says_where_it_goes(serve, capsys, suffix):
    # An OpenAI-compatible server: /v1/models answers, anything else is FastAPI's bare 404.
    srv = serve(
        {
            ("GET", "/v1/models"): (200, {"object": "list", "data": [{"id": "Qwen/Qwen3-8B"}]}),
        }
    )
    url = f"http://127.0.0.1:{srv.port}{suffix}"
    assert main(["login", "--server", url, "--token", "tp_secret"]) == 2
    err = one_line(capsys)
    assert f"{url} is an OpenAI-compatible model server (it serves Qwen/Qwen3-8B)" in err
    assert f"`thinkpool-worker register --base-url http://127.0.0.1:{srv.port}/v1`" in err
    # The Thinkpool token went to /api/v1/me/ only, never to the model server's /v1/models.
    probes = [auth for method, path, auth in srv.seen if path.endswith("/models")]
    assert probes == [None]


def test_server_with_no_thinkpool_api_says_what_server_means(serve, capsys):
    srv = serve({})
    url = f"http://127.0.0.1:{srv.port}"
    assert main(["login", "--server", url, "--token", "tp_x"]) == 2
    err = one_line(capsys)
    assert f"{url} has no Thinkpool API (GET {url}/api/v1/me/ answered 404)" in err
    assert "home page" in err


# --- a refused token ------------------------------------------------------------------------


def test_refused_token_is_said_once_with_what_to_do(serve, capsys):
    refused = (
        401,
        {"error": {"code": "not_authenticated", "message": "Invalid or revoked token."}},
    )
    srv = serve({("GET", "/api/v1/me/"): refused})
    url = f"http://127.0.0.1:{srv.port}"
    assert main(["login", "--server", url, "--token", "tp_bad"]) == 1
    err = one_line(capsys)
    assert err == (
        f"error: the server at {url} refused the token (401: Invalid or revoked token.); get a "
        "new token from its maintainers (they run `manage.py issue_token YOUR_NAME`) and run "
        f"`thinkpool-worker login --server {url} --token tp_...`"
    )
    assert not cfgmod.config_path().exists()


def test_refused_account_says_the_token_is_fine(serve, capsys):
    srv = serve(
        {("GET", "/api/v1/me/"): (403, {"error": {"code": "forbidden", "message": "Banned."}})}
    )
    url = f"http://127.0.0.1:{srv.port}"
    cfgmod.save({"server": url, "token": "tp_x"})
    assert main(["status"]) == 0  # status still shows the local state
    out = capsys.readouterr().out
    assert (
        f"samples:  could not ask the server: the server at {url} accepts the token but "
        "refuses this account (Banned.); ask the server's maintainers why"
    ) in out


# --- the wrong scheme -----------------------------------------------------------------------


def test_https_against_a_plain_http_server_says_use_http(serve, capsys):
    srv = serve({("GET", "/api/v1/me/"): (200, ME)})
    assert main(["login", "--server", f"https://127.0.0.1:{srv.port}", "--token", "tp_x"]) == 2
    err = one_line(capsys)
    plain = f"http://127.0.0.1:{srv.port}"
    assert err == (
        f"error: the server at https://127.0.0.1:{srv.port} speaks plain http, not https: use "
        f"{plain} (`thinkpool-worker login --server {plain} --token tp_...`)"
    )
    assert "SSL" not in err
    # Found out with one plain probe, without the token, and not retried as an outage.
    assert srv.seen == [("GET", "/", None)]
    assert not cfgmod.config_path().exists()


def test_http_against_an_https_server_says_use_https(serve, cert, capsys):
    srv = serve({("GET", "/api/v1/me/"): (200, ME)}, tls=cert)
    url = f"http://127.0.0.1:{srv.port}"
    assert main(["login", "--server", url, "--token", "tp_x"]) == 2
    err = one_line(capsys)
    secure = f"https://127.0.0.1:{srv.port}"
    assert err == (
        f"error: the server at {url} speaks https, not plain http: use {secure} "
        f"(`thinkpool-worker login --server {secure} --token tp_...`)"
    )


def test_untrusted_certificate_is_named_and_trusting_it_works(serve, cert, capsys, monkeypatch):
    srv = serve({("GET", "/api/v1/me/"): (200, ME)}, tls=cert)
    url = f"https://127.0.0.1:{srv.port}"
    assert main(["login", "--server", url, "--token", "tp_x"]) == 2
    err = one_line(capsys)
    assert f"the server at {url} presents a TLS certificate this machine does not trust" in err
    assert "SSL_CERT_FILE" in err
    assert srv.seen == []  # the handshake failed: no request reached it

    monkeypatch.setenv("SSL_CERT_FILE", str(cert / "cert.pem"))
    assert main(["login", "--server", url, "--token", "tp_x"]) == 0
    assert f"logged in to {url} as ann" in capsys.readouterr().out


def test_run_with_a_refused_token_says_so_once_and_leases_nothing(serve, capsys):
    refused = (
        401,
        {"error": {"code": "not_authenticated", "message": "Invalid or revoked token."}},
    )
    thinkpool = serve({("GET", "/api/v1/me/"): refused})
    model = serve({("GET", "/v1/models"): (200, {"data": [{"id": "org/model-a"}]})})
    url = f"http://127.0.0.1:{thinkpool.port}"
    cfgmod.save(
        {
            "server": url,
            "token": "tp_bad",
            "node_id": "3",
            "model": "org/model-a",
            "base_url": f"http://127.0.0.1:{model.port}/v1",
        }
    )
    assert main(["--log-format", "json", "run", "--once"]) == 1
    err = capsys.readouterr().err
    assert err.count("Invalid or revoked token.") == 1, err
    assert err.count("401") == 1 and "not_authenticated" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: the server at {url} refused the token")
    assert [path for _, path, _ in thinkpool.seen] == ["/api/v1/me/"]  # no lease, no heartbeat


def test_run_once_is_documented_for_what_it_does():
    from contributors.worker.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["run"]  # type: ignore[attr-defined]
    once = next(a for a in sub._actions if a.dest == "once")
    assert once.help == (
        "work until the server has no more work for this model, then upload, release and exit "
        "(instead of polling for more)"
    )
    assert "Without --once it runs until stopped" in sub.description

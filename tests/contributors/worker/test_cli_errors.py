"""The CLI's failures are one plain line on stderr with a non-zero exit code."""

import json
import socket
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contributors.worker import config as cfgmod
from contributors.worker.cli import main


class Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def _answer(self):
        status, body = self.routes.get(
            (self.command, self.path),
            (404, {"error": {"code": "not_found", "message": "Not found."}}),
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    servers = []

    def start(routes):
        handler = type("H", (Handler,), {"routes": routes})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()


@pytest.fixture(autouse=True)
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for var in [*cfgmod.ENV_VARS, "THINKPOOL_CONFIG", "THINKPOOL_JOURNAL"]:
        monkeypatch.delenv(var, raising=False)


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_login_bad_token(http_server, capsys):
    url = http_server(
        {
            ("GET", "/api/v1/me/"): (
                401,
                {
                    "error": {
                        "code": "authentication_failed",
                        "message": "Invalid or revoked token.",
                    }
                },
            )
        }
    )
    assert main(["login", "--server", url, "--token", "tp_bad"]) == 1
    err = one_line(capsys)
    assert f"the server at {url} refused the token (401: Invalid or revoked token.)" in err
    assert "authentication_failed" not in err  # the server's code is not what people act on
    assert not cfgmod.config_path().exists()  # nothing saved


def test_login_unreachable_server(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["login", "--server", url, "--token", "tp_x"]) == 1
    err = one_line(capsys)
    assert f"cannot reach the Thinkpool server at {url}" in err


def test_login_success_saves_0600(http_server, capsys):
    url = http_server({("GET", "/api/v1/me/"): (200, {"username": "ann", "handle": "ann"})})
    assert main(["login", "--server", url + "/", "--token", "tp_good"]) == 0
    assert "logged in" in capsys.readouterr().out
    path = cfgmod.config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = cfgmod.load()
    assert (cfg.server, cfg.token) == (url, "tp_good")


def test_register_model_not_served(http_server, capsys):
    server = http_server({("GET", "/api/v1/me/"): (200, {"username": "ann", "handle": "ann"})})
    llm = http_server({("GET", "/v1/models"): (200, {"data": [{"id": "llama3"}]})})
    cfgmod.save({"server": server, "token": "tp_x"})
    code = main(
        [
            "register",
            "--name",
            "box",
            "--backend",
            "openai",
            "--base-url",
            f"{llm}/v1",
            "--model",
            "Qwen/Qwen3-8B",
        ]
    )
    assert code == 1
    err = one_line(capsys)
    assert "does not serve 'Qwen/Qwen3-8B' (it serves: llama3)" in err


def test_register_backend_unreachable(http_server, capsys):
    server = http_server({})
    cfgmod.save({"server": server, "token": "tp_x"})
    code = main(
        [
            "register",
            "--name",
            "box",
            "--base-url",
            f"http://127.0.0.1:{free_port()}/v1",
            "--model",
            "m",
        ]
    )
    assert code == 1
    assert "cannot reach the model server" in one_line(capsys)


def test_transformers_backend_without_models_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    cfgmod.save({"server": "http://x", "token": "tp_x"})
    code = main(["register", "--name", "box", "--backend", "transformers", "--model", "m"])
    assert code == 2
    err = one_line(capsys)
    assert "pip install 'thinkpool[models]'" in err and "torch" in err


def test_doctor_reports_fixes(http_server, capsys):
    server = http_server(
        {
            ("GET", "/api/v1/me/"): (
                401,
                {"error": {"code": "authentication_failed", "message": "Invalid token."}},
            )
        }
    )
    cfgmod.save(
        {
            "server": server,
            "token": "tp_x",
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "model": "m",
        }
    )
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ok  ] server reachable" in out
    assert "[FAIL] token valid" in out and "fix: create a new token" in out
    assert "[FAIL] backend reachable" in out and "fix: start your model server" in out
    assert "journal disk space" in out

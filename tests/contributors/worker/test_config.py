import stat

import pytest

from contributors.worker import config as cfgmod
from contributors.worker.cli import main


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for var in [*cfgmod.ENV_VARS, "THINKPOOL_CONFIG", "THINKPOOL_JOURNAL"]:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_paths_follow_xdg(xdg):
    assert cfgmod.config_path() == xdg / "cfg" / "thinkpool" / "worker.toml"
    assert cfgmod.journal_path() == xdg / "data" / "thinkpool" / "journal.sqlite3"


def test_saved_config_is_mode_0600_even_over_a_world_readable_file(xdg):
    path = cfgmod.config_path()
    path.parent.mkdir(parents=True)
    path.write_text('server = "http://old"\n')
    path.chmod(0o644)
    cfgmod.save({"token": "tp_secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = cfgmod.load()
    assert loaded.server == "http://old"  # merged, not replaced
    assert loaded.token == "tp_secret"
    assert not list(path.parent.glob(".worker-*"))  # no temp file left behind


def test_env_overrides_file_and_is_never_written_back(xdg, monkeypatch):
    cfgmod.save({"server": "http://file", "token": "tp_file", "concurrency": 2})
    monkeypatch.setenv("THINKPOOL_TOKEN", "tp_env")
    monkeypatch.setenv("THINKPOOL_CONCURRENCY", "9")
    cfg = cfgmod.load()
    assert (cfg.server, cfg.token, cfg.concurrency) == ("http://file", "tp_env", 9)
    cfgmod.save({"node_id": "7"})
    assert "tp_env" not in cfgmod.config_path().read_text()


def test_bad_number_in_env_is_a_config_error(xdg, monkeypatch):
    monkeypatch.setenv("THINKPOOL_CONCURRENCY", "many")
    with pytest.raises(cfgmod.ConfigError, match="not a number"):
        cfgmod.load()


def test_broken_toml_is_a_one_line_error(xdg, capsys):
    path = cfgmod.config_path()
    path.parent.mkdir(parents=True)
    path.write_text("server = \n")
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the config file") and "\n" not in err


def test_missing_login_is_a_one_line_error(xdg, capsys):
    assert main(["run", "--once"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not registered" in err and "\n" not in err

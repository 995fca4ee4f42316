"""Worker configuration: a TOML file (mode 0600, it holds the token) plus environment overrides.

Where things live (XDG base directories, so fleets can relocate them per user or container):
- config: ``$XDG_CONFIG_HOME/thinkpool/worker.toml`` (default ``~/.config/thinkpool/worker.toml``),
  or ``$THINKPOOL_CONFIG``;
- journal: ``$XDG_DATA_HOME/thinkpool/journal.sqlite3`` (default ``~/.local/share/thinkpool/``),
  or ``$THINKPOOL_JOURNAL``.

Precedence, lowest first: file < environment (``THINKPOOL_*``) < command-line flags. Only what a
command explicitly saves (``login``, ``register``) is written back; environment values never are,
so a token passed by env in a container does not end up on disk.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .errors import ConfigError

# Environment variable -> config field. Values are strings; typed fields are converted below.
ENV_VARS: dict[str, str] = {
    "THINKPOOL_SERVER": "server",
    "THINKPOOL_TOKEN": "token",
    "THINKPOOL_NODE_ID": "node_id",
    "THINKPOOL_NODE_NAME": "node_name",
    "THINKPOOL_BACKEND": "backend",
    "THINKPOOL_BASE_URL": "base_url",
    "THINKPOOL_BACKEND_API_KEY": "backend_api_key",
    "THINKPOOL_MODEL": "model",
    "THINKPOOL_BACKEND_MODEL": "backend_model",
    "THINKPOOL_MODEL_REVISION": "model_revision",
    "THINKPOOL_DEVICE": "device",
    "THINKPOOL_DTYPE": "dtype",
    "THINKPOOL_CONCURRENCY": "concurrency",
    "THINKPOOL_MAX_PROMPTS": "max_prompts",
    "THINKPOOL_HEARTBEAT_S": "heartbeat_interval_s",
    "THINKPOOL_RETRY_CAP_S": "retry_cap_s",
    "THINKPOOL_POLL_MAX_S": "poll_max_s",
}


@dataclass
class WorkerConfig:
    server: str | None = None
    token: str | None = None
    node_id: str | None = None
    node_name: str | None = None
    # Generation backend: "openai" (any OpenAI-compatible server) or "transformers" (in-process).
    backend: str = "openai"
    base_url: str | None = None
    backend_api_key: str | None = None
    # The model as the Thinkpool server names it (what leases and samples carry) ...
    model: str | None = None
    # ... and as the backend names it when that differs (Ollama tags, vLLM --served-model-name).
    backend_model: str | None = None
    model_revision: str | None = None
    device: str | None = None
    dtype: str | None = None
    concurrency: int = 4
    max_prompts: int = 16
    heartbeat_interval_s: float = 30.0
    # Upper bound of one back-off wait (server down, 429 without Retry-After).
    retry_cap_s: float = 60.0
    # Upper bound of the idle poll when the server has no work.
    poll_max_s: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def api_base(self) -> str:
        if not self.server:
            raise ConfigError(
                "no Thinkpool server configured: run `thinkpool-worker login --server URL "
                "--token TOKEN` or set THINKPOOL_SERVER"
            )
        return self.server.rstrip("/")

    def require_token(self) -> str:
        if not self.token:
            raise ConfigError(
                "no API token configured: run `thinkpool-worker login --server URL --token "
                "TOKEN` or set THINKPOOL_TOKEN"
            )
        return self.token

    def require_node(self) -> str:
        if not self.node_id:
            raise ConfigError(
                "this machine is not registered as a node: run `thinkpool-worker register "
                "--name NAME --backend openai --base-url URL --model MODEL` first"
            )
        return str(self.node_id)

    def require_model(self) -> str:
        if not self.model:
            raise ConfigError("no model configured: pass --model or run `register` first")
        return self.model


def config_path() -> Path:
    if env := os.environ.get("THINKPOOL_CONFIG"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "thinkpool" / "worker.toml"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "thinkpool"


def journal_path() -> Path:
    if env := os.environ.get("THINKPOOL_JOURNAL"):
        return Path(env)
    return data_dir() / "journal.sqlite3"


_FIELDS = {f.name: f for f in dataclasses.fields(WorkerConfig) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    default = _FIELDS[name].default
    try:
        if isinstance(default, bool):
            return str(value).lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config value {name}={value!r} is not a number") from exc
    return None if value is None else str(value)


def read_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"the config file {path} is not valid TOML ({exc}); fix or delete it"
        ) from exc


def load(path: Path | None = None, env: dict[str, str] | None = None) -> WorkerConfig:
    """The effective configuration: file values, then ``THINKPOOL_*`` overrides."""
    raw = read_file(path)
    source: Mapping[str, str] = os.environ if env is None else env
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FIELDS:
            values[key] = _coerce(key, value)
        else:
            extra[key] = value  # kept so that a newer worker's keys survive a save
    for var, key in ENV_VARS.items():
        if source.get(var):
            values[key] = _coerce(key, source[var])
    return WorkerConfig(**values, extra=extra)


def save(updates: dict[str, Any], path: Path | None = None) -> Path:
    """Merge ``updates`` into the config *file* (not the env-overridden view) and write it 0600.

    The file is written to a temporary sibling created with mode 0600 and renamed over the old
    one, so the token is never readable by others, not even for an instant, and a crash mid-write
    leaves the old file intact.
    """
    path = path or config_path()
    current = read_file(path)
    for key, value in updates.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".worker-", suffix=".toml", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; be explicit, umask can't widen it
        with os.fdopen(fd, "wb") as fh:
            tomli_w.dump(current, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
    return path

"""`thinkpool-worker doctor`: check each link of the chain and say how to fix what's broken."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from . import config as cfgmod
from .backends.openai import OpenAIBackend
from .config import WorkerConfig
from .errors import ApiError, AuthError, WorkerError
from .journal import Journal
from .net import RetryPolicy, ServerClient

MIN_FREE_BYTES = 1 * 2**30  # a journal of a few million samples; below this, warn


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(cfg: WorkerConfig, http: httpx.Client) -> list[Check]:
    checks: list[Check] = []
    once = RetryPolicy(max_attempts=2, base_s=0.2)

    def add(name: str, fn: Callable[[], str], fix: str) -> bool:
        try:
            checks.append(Check(name, True, fn()))
            return True
        except WorkerError as exc:
            checks.append(Check(name, False, str(exc), fix))
            return False

    # Server and token.
    if not cfg.server:
        checks.append(
            Check("server", False, "no server configured", "run `thinkpool-worker login`")
        )
    elif not cfg.token:
        checks.append(Check("token", False, "no token configured", "run `thinkpool-worker login`"))
    else:
        client = ServerClient(http, cfg.server, cfg.token, policy=once)
        me: dict[str, object] = {}

        def server() -> str:
            # A 401 still proves the server is reachable; the token check below reports it.
            with contextlib.suppress(AuthError):
                me.update(client.me(policy=once))
            return f"{cfg.api_base} answers"

        if add(
            "server reachable",
            server,
            "check the URL (`thinkpool-worker login --server URL ...`), your network or proxy",
        ):

            def token() -> str:
                if not me:
                    me.update(client.me(policy=once))
                return f"valid, contributor {me.get('handle') or me.get('username')}"

            add(
                "token valid",
                token,
                "create a new token on the website and run `thinkpool-worker login` again",
            )
            if cfg.node_id and me:
                node_id = cfg.node_id

                def node() -> str:
                    try:
                        client.heartbeat(node_id, policy=once)
                    except ApiError as exc:
                        raise WorkerError(f"node {node_id} not accepted: {exc.message}") from exc
                    return f"node {node_id} ({cfg.node_name or '?'}) is registered"

                add("node registered", node, "run `thinkpool-worker register` again")
    if not cfg.node_id:
        checks.append(
            Check(
                "node registered",
                False,
                "this machine is not registered",
                "run `thinkpool-worker register --name NAME --backend ... --model ...`",
            )
        )

    # Backend and model.
    model = cfg.backend_model or cfg.model
    if cfg.backend == "openai":
        if not cfg.base_url:
            checks.append(
                Check("backend reachable", False, "no --base-url", "run `register --base-url`")
            )
        else:
            backend = OpenAIBackend(http, cfg.base_url, model=model or "")
            served: list[str] = []

            def reach() -> str:
                served.extend(m.id for m in backend.served_models())
                return f"{cfg.base_url} serves {', '.join(served) or 'no models'}"

            if (
                add(
                    "backend reachable",
                    reach,
                    "start your model server (vLLM, SGLang, Ollama, llama.cpp, ...) or fix "
                    "--base-url (it usually ends in /v1)",
                )
                and model
            ):
                add(
                    "model served",
                    lambda: f"'{backend.check_model(model).id}' is served",
                    "start the server with that model, or re-register with the --backend-model "
                    "name it uses",
                )
    elif cfg.backend == "transformers":
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        checks.append(
            Check(
                "models extra",
                not missing,
                "torch and transformers installed" if not missing else f"missing {missing}",
                "pip install 'thinkpool[models]'",
            )
        )
    else:
        checks.append(
            Check(
                "backend", False, f"unknown backend {cfg.backend!r}", "use openai or transformers"
            )
        )

    # Disk for the journal.
    path = cfgmod.journal_path()
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    checks.append(
        Check(
            "journal disk space",
            free >= MIN_FREE_BYTES,
            f"{free / 2**30:.1f} GiB free for {path}",
            "free some disk space, or point THINKPOOL_JOURNAL / XDG_DATA_HOME at a larger disk",
        )
    )
    if path.exists():
        counts = Journal(path).counts()
        checks.append(
            Check(
                "journal",
                counts["rejected"] == 0,
                f"{counts['pending']} pending, {counts['accepted'] + counts['duplicate']} "
                f"uploaded, {counts['rejected']} rejected",
                "see `thinkpool-worker status` for the server's reasons",
            )
        )
    return checks

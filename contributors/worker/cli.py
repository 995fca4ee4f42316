"""The ``thinkpool-worker`` command line.

Every failure a contributor can cause or fix (bad token, server down, model not served, missing
extra) ends as one line on stderr, ``error: <what> ; <what to do>``, with a non-zero exit code;
tracebacks are for bugs (``-v`` shows them for everything).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from . import __version__
from . import config as cfgmod
from .backends import Backend
from .config import WorkerConfig
from .display import Display, Progress, disclosure_lines, setup_logging
from .errors import (
    ApiError,
    AuthError,
    ConfigError,
    ServerUnreachable,
    UploadPostponed,
    WorkerError,
    token_refused,
)
from .journal import ACCEPTED, DONE_STATES, DUPLICATE, REJECTED, Journal
from .net import NO_RETRY, RetryPolicy, ServerClient, ServerLimits, make_http_client

log = logging.getLogger("thinkpool.worker")

# Interactive commands fail fast; `run` waits for the server instead.
QUICK = RetryPolicy(base_s=0.25, cap_s=2.0, max_attempts=3)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thinkpool-worker",
        description="Generate chain-of-thought samples for Thinkpool with your own model.",
    )
    p.add_argument("--version", action="version", version=f"thinkpool-worker {__version__}")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("login", help="check a token and store it")
    s.add_argument("--server", required=True, help="e.g. https://thinkpool.example.org")
    s.add_argument("--token", required=True, help="an API token (tp_...)")

    s = sub.add_parser("register", help="register this machine and its model as a node")
    s.add_argument("--name", required=True)
    s.add_argument("--backend", choices=["openai", "transformers"], default=None)
    s.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    s.add_argument("--model", help="the model as Thinkpool names it, e.g. Qwen/Qwen3-8B")
    s.add_argument("--backend-model", help="the name the backend uses, if different")
    s.add_argument("--revision", help="model revision (commit), if the backend doesn't tell")
    s.add_argument("--api-key", help="API key of the model server, if it needs one")
    s.add_argument("--device", help="transformers backend: cuda, mps, cpu (default: auto)")
    s.add_argument("--dtype", help="transformers backend: bfloat16, float16, float32, auto")

    s = sub.add_parser(
        "run",
        help="lease prompts, generate, upload, repeat",
        description=(
            "Lease prompts, generate samples with your model, upload them; repeat. Without "
            "--once it runs until stopped, polling when the server has no work. Ctrl-C (or "
            "SIGTERM) finishes the samples in flight, uploads and releases the rest; a second "
            "Ctrl-C quits at once (the journal keeps every finished sample)."
        ),
    )
    s.add_argument(
        "--once",
        action="store_true",
        help=(
            "work until the server has no more work for this model, then upload, release "
            "and exit (instead of polling for more)"
        ),
    )
    s.add_argument("--max-batches", type=int, help="stop after this many leases")
    s.add_argument("--concurrency", type=int, help="generation requests in flight")
    s.add_argument("--max-prompts", type=int, help="prompts per lease")
    s.add_argument("--model", help="override the configured model")
    s.add_argument("--device")
    s.add_argument("--dtype")
    s.add_argument("--batch-size", type=int, default=8, help="transformers: items per batch")

    s = sub.add_parser("upload", help="upload samples generated offline (JSONL)")
    s.add_argument("file")

    sub.add_parser("status", help="configuration, node and journal")
    sub.add_parser("doctor", help="check server, token, backend, model and disk")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `run` narrates (retries, leases); the one-shot commands only print their result.
    level = (
        logging.DEBUG
        if args.verbose
        else logging.INFO
        if args.command == "run"
        else logging.WARNING
    )
    setup_logging(args.log_format, level)
    try:
        return COMMANDS[args.command](args)
    except WorkerError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --- helpers ---------------------------------------------------------------------------------


def _server(cfg: WorkerConfig, http: httpx.Client, policy: RetryPolicy = QUICK) -> ServerClient:
    return ServerClient(http, cfg.api_base, cfg.require_token(), policy=policy)


def _me(client: ServerClient, policy: RetryPolicy = QUICK) -> dict[str, Any]:
    try:
        return client.me(policy=policy)
    except AuthError as exc:
        raise token_refused(client.base, exc) from exc


def make_backend(
    cfg: WorkerConfig,
    http: httpx.Client,
    *,
    concurrency: int | None = None,
    batch_size: int = 8,
) -> Backend:
    model = cfg.backend_model or cfg.require_model()
    if cfg.backend == "openai":
        from .backends.openai import OpenAIBackend

        if not cfg.base_url:
            raise ConfigError("the openai backend needs --base-url (e.g. http://localhost:8000/v1)")
        return OpenAIBackend(
            http,
            cfg.base_url,
            model=model,
            api_key=cfg.backend_api_key,
            revision=cfg.model_revision,
            max_parallel=concurrency or cfg.concurrency,
        )
    if cfg.backend == "transformers":
        from .backends.transformers_local import TransformersBackend

        return TransformersBackend(
            model,
            revision=cfg.model_revision,
            device=cfg.device,
            dtype=cfg.dtype,
            batch_size=batch_size,
        )
    raise ConfigError(f"unknown backend {cfg.backend!r}: use openai or transformers")


# --- commands --------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    cfg = WorkerConfig(server=args.server, token=args.token)
    with make_http_client() as http:
        me = _me(_server(cfg, http))
    path = cfgmod.save({"server": cfg.api_base, "token": args.token})
    print(f"logged in to {cfg.api_base} as {me.get('handle') or me.get('username')}; saved {path}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from .backends.openai import OpenAIBackend
    from .hardware import detect_hardware

    cfg = cfgmod.load()
    for key in ("backend", "base_url", "model", "backend_model", "device", "dtype"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if args.revision is not None:
        cfg.model_revision = args.revision
    if args.api_key is not None:
        cfg.backend_api_key = args.api_key
    with make_http_client() as http:
        server = _server(cfg, http)
        revision = cfg.model_revision
        if cfg.backend == "openai":
            if not cfg.base_url:
                raise ConfigError("--base-url is required for the openai backend")
            backend = OpenAIBackend(http, cfg.base_url, model=cfg.backend_model or "")
            served = backend.served_models()
            if not cfg.model:
                if len(served) != 1:
                    names = ", ".join(m.id for m in served) or "nothing"
                    raise ConfigError(f"pass --model; the backend serves: {names}")
                if looks_like_path(served[0].id):
                    raise ConfigError(
                        f"the model server serves its model under the path '{served[0].id}'; "
                        "Thinkpool names models by their Hugging Face id: pass --model ORG/NAME "
                        f"(e.g. Qwen/Qwen3-8B) and --backend-model '{served[0].id}', or start "
                        "the server with --served-model-name ORG/NAME"
                    )
                cfg.model = served[0].id
            _model_is_an_id(cfg.model)
            backend.model = cfg.backend_model or cfg.model
            found = backend.check_model(backend.model)
            revision = revision or found.revision
        elif cfg.backend == "transformers":
            from .backends.transformers_local import require_models_extra

            require_models_extra()
            _model_is_an_id(cfg.require_model())
        else:
            raise ConfigError(f"unknown backend {cfg.backend!r}: use openai or transformers")
        payload = {
            "name": args.name,
            "backend": cfg.backend,
            "models": [{"id": cfg.model, "revision": revision}],
            "hardware": detect_hardware(),
            "worker_version": __version__,
        }
        node = server.register_node(payload)
    cfgmod.save(
        {
            "node_id": str(node["id"]),
            "node_name": args.name,
            "backend": cfg.backend,
            "base_url": cfg.base_url,
            "model": cfg.model,
            "backend_model": cfg.backend_model,
            "model_revision": revision,
            "backend_api_key": cfg.backend_api_key,
            "device": cfg.device,
            "dtype": cfg.dtype,
            "heartbeat_interval_s": float(node.get("heartbeat_interval_s") or 30),
        }
    )
    gpus = ", ".join(g["name"] for g in payload["hardware"]["gpus"]) or "no GPU"  # type: ignore[index]
    print(f"registered node {node['id']} '{args.name}' ({cfg.backend}, {cfg.model}; {gpus})")
    return 0


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", "~", "./", "../", "\\")) or "\\" in model


def _model_is_an_id(model: str) -> None:
    """A path is how a backend may load a model, never how Thinkpool names it."""
    if looks_like_path(model):
        raise ConfigError(
            f"--model is the model's Hugging Face id (e.g. Qwen/Qwen3-8B), not a path like "
            f"'{model}': pass the path as --backend-model and the id as --model"
        )


def _install_signals(stop: Any) -> None:
    presses = 0

    def on_interrupt(signum: int, frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            # Everything finished is already committed to the journal; go now.
            os.write(2, b"\nquitting now; unsent samples stay in the journal\n")
            os._exit(130)
        stop.stop("interrupt")
        log.warning(
            "stopping: finishing samples in flight, uploading, releasing the rest "
            "(press Ctrl-C again to quit at once; the journal keeps everything)"
        )

    def on_term(signum: int, frame: object) -> None:
        stop.stop("SIGTERM")
        log.warning("SIGTERM: finishing samples in flight, uploading, releasing the rest")

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_term)


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import Runner, RunOptions, Stopper

    cfg = cfgmod.load()
    if args.model:
        cfg.model = args.model
    if args.device:
        cfg.device = args.device
    if args.dtype:
        cfg.dtype = args.dtype
    node_id = cfg.require_node()
    model = cfg.require_model()
    opts = RunOptions(
        once=args.once,
        max_batches=args.max_batches,
        concurrency=args.concurrency or cfg.concurrency,
        max_prompts=args.max_prompts or cfg.max_prompts,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        retry_cap_s=cfg.retry_cap_s,
        poll_max_s=cfg.poll_max_s,
        poll_min_s=min(5.0, cfg.poll_max_s),
    )
    stopper = Stopper()
    _install_signals(stopper)
    journal = Journal(cfgmod.journal_path())
    progress = Progress()
    with make_http_client(pool_size=opts.concurrency) as http:
        backend = make_backend(cfg, http, concurrency=opts.concurrency, batch_size=args.batch_size)
        backend.check_model(cfg.backend_model or model)
        runner = Runner(
            server=_server(cfg, http, policy=RetryPolicy(cap_s=cfg.retry_cap_s)),
            backend=backend,
            journal=journal,
            node_id=node_id,
            model=model,
            options=opts,
            progress=progress,
            stopper=stopper,
        )
        # A bad token fails here, in one line; the answer also says what the server accepts.
        limits = ServerLimits.from_me(_me(runner.server, policy=runner.live_policy))
        runner.uploader.limits = limits
        if limits.max_prompts_per_lease and opts.max_prompts > limits.max_prompts_per_lease:
            log.info(
                "the server leases at most %d prompts at a time; asking for that many",
                limits.max_prompts_per_lease,
            )
            opts.max_prompts = limits.max_prompts_per_lease
        with Display(progress, args.log_format):
            try:
                code = runner.run()
            finally:
                backend.close()
                journal.close()
    return code


def cmd_upload(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .offline import parse_jsonl
    from .uploader import Uploader

    cfg = cfgmod.load()
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    journal = Journal(cfgmod.journal_path())
    parsed = parse_jsonl(path, journal)
    for err in parsed.errors:
        print(f"skipped {err}", file=sys.stderr)
    # Samples of this file that an earlier upload already settled are not sent again.
    earlier = {s.client_id: journal.get(s.client_id) for s in parsed.samples}
    journal.record(parsed.samples)
    with make_http_client() as http:
        server = _server(cfg, http, policy=RetryPolicy(cap_s=cfg.retry_cap_s, max_elapsed_s=600))
        uploader = Uploader(server, journal)
        try:
            uploader.flush()
        except (ServerUnreachable, UploadPostponed) as exc:
            print(f"upload postponed: {exc}", file=sys.stderr)
    # Report on this file's samples (each once, though a line may repeat).
    states = [s for s in (journal.get(cid) for cid in earlier) if s is not None]
    before = {cid: s.state for cid, s in earlier.items() if s is not None}
    done = [s for s in states if s.state in DONE_STATES]
    # Already on the server: the server said so now, or an earlier upload of this file did.
    duplicates = sum(
        1 for s in done if s.state == DUPLICATE or before.get(s.client_id) in DONE_STATES
    )
    rejected = [s for s in states if s.state == REJECTED]
    waiting = sum(1 for s in states if s.state == "pending")
    journal.close()
    for s in rejected[:20]:
        print(f"rejected {s.client_id}: {s.error_code}: {s.error_message}", file=sys.stderr)
    print(
        f"{len(done)} uploaded ({len(done) - duplicates} new, {duplicates} duplicates already "
        f"on the server), {len(rejected)} rejected, {len(parsed.errors)} invalid lines "
        f"({len(earlier)} samples in {path.name})"
    )
    if waiting:
        print(
            f"{waiting} samples are still waiting in the journal; run this command again (or "
            "`thinkpool-worker run`) to upload them",
            file=sys.stderr,
        )
    return 0 if not rejected and not parsed.errors and not waiting else 1


# How many of the latest samples `status` asks the server about.
STATUS_RECENT = 20


def cmd_status(args: argparse.Namespace) -> int:
    cfg = cfgmod.load()
    token = f"{cfg.token[:6]}…" if cfg.token else "(none)"
    print(f"config:   {cfgmod.config_path()}")
    print(f"server:   {cfg.server or '(none)'}  token {token}")
    print(f"node:     {cfg.node_id or '(not registered)'} {cfg.node_name or ''}")
    print(f"backend:  {cfg.backend} {cfg.base_url or ''}  model {cfg.model or '(none)'}")
    path = cfgmod.journal_path()
    recent_ids: list[str] = []
    if path.exists():
        journal = Journal(path)
        c = journal.counts()
        # The journal knows what reached the server, not what the server made of it: that is
        # what the `samples:` lines below say.
        print(
            f"journal:  {path}\n          {c['pending']} waiting to upload, {c['accepted']} "
            f"uploaded, {c['duplicate']} duplicates, {c['rejected']} refused at upload"
        )
        for s in journal.all(REJECTED)[-10:]:
            print(f"          refused {s.client_id}: {s.error_code}: {s.error_message}")
        # The latest uploads only (a journal can hold many thousands of samples), for a server
        # too old to list samples.
        latest = journal._rows(
            "WHERE state = ? AND server_id IS NOT NULL ORDER BY created_at DESC, rowid DESC"
            " LIMIT ?",
            (ACCEPTED, STATUS_RECENT),
        )
        recent_ids = [s.server_id for s in latest if s.server_id]
        journal.close()
    else:
        print(f"journal:  {path} (empty)")
    if cfg.server and cfg.token:
        _print_judgement(cfg, recent_ids)
    return 0


def _print_judgement(cfg: WorkerConfig, sample_ids: list[str]) -> None:
    """What the server discloses about this account's samples: counts and top reasons from
    /me/, and the latest samples as the server shows them (verdicts only for closed prompts)."""
    try:
        with make_http_client(timeout_s=10.0) as http:
            server = _server(cfg, http, policy=NO_RETRY)
            me = _me(server, policy=NO_RETRY)
            try:
                recent = server.list_samples(page_size=STATUS_RECENT, policy=NO_RETRY)
            except ApiError as exc:
                if isinstance(exc, AuthError) or exc.status not in (404, 405):
                    raise
                recent = _samples_one_by_one(server, sample_ids)  # an older server
    except WorkerError as exc:
        print(f"samples:  could not ask the server: {exc}")
        return
    for line in disclosure_lines(me.get("samples"), recent):
        print(line)


def _samples_one_by_one(server: ServerClient, sample_ids: list[str]) -> list[dict[str, Any]]:
    recent = []
    for sample_id in sample_ids:
        try:
            recent.append(server.get_sample(sample_id))
        except ApiError as exc:
            if isinstance(exc, AuthError):
                raise
            continue  # e.g. a journal from another server: skip it
    return recent


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks

    cfg = cfgmod.load()
    with make_http_client() as http:
        checks = run_checks(cfg, http)
    for c in checks:
        mark = "ok  " if c.ok else "FAIL"
        print(f"[{mark}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            print(f"       fix: {c.fix}")
    return 0 if all(c.ok for c in checks) else 1


COMMANDS = {
    "login": cmd_login,
    "register": cmd_register,
    "run": cmd_run,
    "upload": cmd_upload,
    "status": cmd_status,
    "doctor": cmd_doctor,
}

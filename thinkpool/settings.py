"""The one settings module. Every knob comes from the environment.

Defaults are the newcomer's embedded set-up (`make run`): SQLite under var/, a Celery broker on
the filesystem (a real worker process, no server needed), publishing to a local folder.
With DEBUG off, SECRET_KEY and ALLOWED_HOSTS must be set explicitly.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"Set the environment variable {name}.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}.")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None
    if parsed < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {parsed}.")
    if maximum is not None and parsed > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {parsed}.")
    return parsed


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}.") from None
    if parsed != parsed or (minimum is not None and parsed < minimum):
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value!r}.")
    if maximum is not None and parsed > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value!r}.")
    return parsed


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


_RATE = re.compile(r"\s*([0-9]+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*", re.I)


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate, `<n>/<s|sec|m|min|h|hour|d|day>`. DRF parses rates lazily, on the
    first throttled request, so a typo would start the server and then 500 every request:
    checked here, at start-up, instead."""
    value = os.environ.get(name) or default
    match = _RATE.fullmatch(value)
    if match is None or int(match[1]) < 1:
        raise ImproperlyConfigured(
            f"{name} must be a rate like 600/min (<n>/<s|sec|m|min|h|hour|d|day>, n >= 1), "
            f"got {value!r}."
        )
    return f"{int(match[1])}/{match[2][0].lower()}"


def read_local_env(path: Path) -> dict[str, str]:
    """The `KEY=VALUE` lines of a local settings file (blank lines and `#` comments skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ImproperlyConfigured(f"{path}, line {number}: expected KEY=VALUE, got {line!r}.")
        values[key] = value.strip()
    return values


# This checkout's development settings: `make run` writes var/local.env once (DEBUG=1 and a
# generated SECRET_KEY), so every manage.py command typed afterwards works as the README shows.
# A variable set in the environment always wins over the file. A process whose environment turns
# DEBUG off is production and never reads the file: a development key cannot end up there, and
# with no such file (any real deployment) the strict rules below hold.
LOCAL_ENV_FILE = Path(os.environ.get("THINKPOOL_VAR_DIR") or BASE_DIR / "var") / "local.env"
if env_bool("DEBUG", True) and LOCAL_ENV_FILE.is_file():
    for _key, _value in read_local_env(LOCAL_ENV_FILE).items():
        os.environ.setdefault(_key, _value)

DEBUG = env_bool("DEBUG", False)
VAR_DIR = Path(env_str("THINKPOOL_VAR_DIR", str(BASE_DIR / "var")))

if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", "insecure-development-key-do-not-use-in-production")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
else:
    if not os.environ.get("SECRET_KEY"):
        raise ImproperlyConfigured(
            "Set the environment variable SECRET_KEY. (For development, `make run` writes "
            f"{LOCAL_ENV_FILE} with DEBUG=1 and a generated key, read unless DEBUG=0 is set.)"
        )
    SECRET_KEY = env_str("SECRET_KEY")
    if not os.environ.get("ALLOWED_HOSTS"):
        raise ImproperlyConfigured("Set the environment variable ALLOWED_HOSTS (comma-separated).")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])

CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "scoring",
    "contributors",
    "thinkpool",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, API docs) straight after the HTTPS redirect, before sessions and auth.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "thinkpool.middleware.RejectNulMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The Content-Security-Policy below, on every response.
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "thinkpool.urls"
WSGI_APPLICATION = "thinkpool.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'thinkpool.sqlite3'}")
# Health checks: a persistent connection that PostgreSQL dropped (a restart, a failover) is
# found dead and replaced when a request starts, instead of failing that request.
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # libpq waits forever for an unreachable server by default; /readyz and requests should not.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("THINKPOOL_DB_CONNECT_TIMEOUT_S", 5, minimum=1)
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server and the Celery worker write to the same file. WAL lets readers run beside
    # the one writer; IMMEDIATE takes the write lock at BEGIN so two writers queue on the busy
    # timeout instead of failing with "database is locked" when a read lock is upgraded.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory: integration tests start a real Celery worker that must see the rows.
    # One file per test process, so that parallel runs never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# --- Login lockout (django-axes) ----------------------------------------------------------
# The admin login locks a username at one client address after this many wrong passwords, for
# the cool-off; during it even the right password is refused. By username and address together,
# so an attacker elsewhere cannot lock a maintainer out.
AUTHENTICATION_BACKENDS = [
    "thinkpool.auth_backends.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("THINKPOOL_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("THINKPOOL_LOGIN_COOLOFF_MIN", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Its start-up banner would print before every manage.py command's own output.
AXES_VERBOSE = False
# The same client address as the API throttles (REST_FRAMEWORK["NUM_PROXIES"] below).
AXES_CLIENT_IP_CALLABLE = "contributors.throttling.client_address"

# --- Site accounts -------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "profile"
LOGOUT_REDIRECT_URL = "home"
# Password-reset mail: printed to the console unless an SMTP server is configured.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "thinkpool@localhost")

# --- Content-Security-Policy (django-csp) ---------------------------------------------------
# Only this origin's files: no inline script or style, no plug-ins, no framing, forms post
# only here. Untrusted text is escaped anyway; this is the second wall if an escape is missed.
# The pages' charts are server-rendered SVG (data: images for none of them).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Production: the WSGI app serves static files itself (WhiteNoise) from STATIC_ROOT, which
# `manage.py collectstatic` fills with content-hashed, compressed copies (cached for a year).
# Development and tests serve them from the apps' own folders, so nothing needs collecting. Tied
# to the DEBUG read here, not settings.DEBUG, which the test runner turns off.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Request bodies: an upload of 256 samples with 32k-token completions is large, but bounded.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("THINKPOOL_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["contributors.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["contributors.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["contributors.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "token": env_rate("THINKPOOL_TOKEN_RATE", "600/min"),
        "anon": env_rate("THINKPOOL_ANON_RATE", "120/min"),
        # Failed token authentications per client address (contributors/authentication.py).
        "auth_failure": env_rate("THINKPOOL_AUTH_FAILURE_RATE", "30/min"),
    },
    # How many reverse proxies stand in front of the app, each appending to X-Forwarded-For.
    # 0: the client is REMOTE_ADDR and X-Forwarded-For is ignored (anyone can write it, and a
    # new value per request would be a new client to every throttle). N: the address the
    # outermost trusted proxy saw. Never None, which makes DRF trust the header whole.
    "NUM_PROXIES": env_int("THINKPOOL_NUM_PROXIES", 0, minimum=0, maximum=16),
    # There is one API version. drf-spectacular echoes `?version=` into a response header, so a
    # value outside this list (a newline in it was a 500) is ignored instead.
    "ALLOWED_VERSIONS": ["1"],
    "EXCEPTION_HANDLER": "contributors.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Thinkpool API",
    "DESCRIPTION": "Work distribution for crowd-generated chain-of-thought data.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI's assets ship in a wheel: the docs page works with no CDN in reach.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["CACHE_URL"],
            # An unreachable cache costs a request at most this long: throttles then fail open
            # (contributors/throttling.py) and /readyz reports it, instead of hanging.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
        if os.environ.get("CACHE_URL")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Celery -------------------------------------------------------------------------------
# The default broker keeps messages as files under var/: a real worker process consumes them,
# with no server to install. At scale set CELERY_BROKER_URL=redis://... (or amqp://...).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    # The transport does not make its folders; the web process, beat and worker all need them.
    for _folder in ("queue", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "verify"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Thinkpool ----------------------------------------------------------------------------
THINKPOOL = {
    # A node is "lost" after this many heartbeat intervals without one.
    "HEARTBEAT_INTERVAL_S": env_int("THINKPOOL_HEARTBEAT_INTERVAL_S", 60, minimum=1),
    "LOST_AFTER_MISSED_HEARTBEATS": env_int("THINKPOOL_LOST_AFTER_MISSED", 5, minimum=1),
    "MAX_SAMPLES_PER_UPLOAD": env_int("THINKPOOL_MAX_SAMPLES_PER_UPLOAD", 256, minimum=1),
    "MAX_COMPLETION_CHARS": env_int("THINKPOOL_MAX_COMPLETION_CHARS", 512 * 1024, minimum=1),
    "MAX_PROMPTS_PER_LEASE": env_int("THINKPOOL_MAX_PROMPTS_PER_LEASE", 256, minimum=1),
    "MAX_LIVE_LEASES_PER_NODE": env_int("THINKPOOL_MAX_LIVE_LEASES_PER_NODE", 4, minimum=1),
    "MAX_LIVE_LEASES_PER_CONTRIBUTOR": env_int("THINKPOOL_MAX_LIVE_LEASES_PER_USER", 16, minimum=1),
    # A model name no maintainer has reviewed opens at most this many slots (in sets that take
    # any model or match it by a pattern); one contributor may have this many names waiting.
    "UNREVIEWED_MODEL_MAX_SLOTS": env_int("THINKPOOL_UNREVIEWED_MODEL_MAX_SLOTS", 4096, minimum=0),
    "MAX_UNREVIEWED_MODELS_PER_USER": env_int(
        "THINKPOOL_MAX_UNREVIEWED_MODELS_PER_USER", 16, minimum=1
    ),
    # Heartbeats extend a lease, up to this long after it was made.
    "MAX_LEASE_LIFETIME_S": env_int("THINKPOOL_MAX_LEASE_LIFETIME_S", 24 * 3600, minimum=60),
    # Samples left in `received` or `scoring` longer than this are queued again by the sweeper.
    # Longer than the longest scoring task may run (the sandbox queue's 1900 s), so that a
    # sample still being judged is never judged a second time beside it: otherwise
    # scoring/checks.py stops `manage.py check`, `migrate`, `runserver` and the Celery worker.
    "SWEEP_AFTER_S": env_int("THINKPOOL_SWEEP_AFTER_S", 2400, minimum=1),
    # Claims of one sample (each crash, time-out or transient verifier error costs one) before
    # it ends `error` with a reason starting "poison" (or stops being retried).
    "MAX_SCORING_ATTEMPTS": env_int("THINKPOOL_MAX_SCORING_ATTEMPTS", 5, minimum=1, maximum=100),
}

# The ranking policy of selections (scoring.selection.Policy): SFT picks per prompt, and the
# pass-rate band of RL prompts (strictly between, as open-r1's filter).
THINKPOOL_SELECTION: dict[str, Any] = {
    "sft_k": env_int("THINKPOOL_SFT_PER_PROMPT", 4, minimum=1, maximum=64),
    "rl_low": env_float("THINKPOOL_RL_PASS_RATE_LOW", 0.1, minimum=0.0, maximum=1.0),
    "rl_high": env_float("THINKPOOL_RL_PASS_RATE_HIGH", 0.9, minimum=0.0, maximum=1.0),
}

# Benchmarks prompts are checked against at import (scoring/decontam.py): JSONL files with a
# `problem` (or `question`/`prompt`) field; relative paths are from the project's root. Empty:
# nothing is flagged.
# Reward models that rank verified samples (scoring/rewards/): `model@version` entries, e.g.
# Skywork/Skywork-Reward-V2-Qwen3-0.6B@1, scored on the `gpu` queue. Empty (the embedded
# default): ranking by correctness and length alone.
THINKPOOL_REWARD_MODELS = env_list("THINKPOOL_REWARD_MODELS", [])


# Model attestation (scoring/attestation.py, scoring/attesting.py): does a sample look like the
# model, temperature and top-p it claims? `models` (THINKPOOL_ATTEST_MODELS, a JSON object) maps
# a claimed model name to the local path or Hub id that checks it, or to
# {"path": ..., "think": {"open": "<think>\n", "close": "\n</think>\n\n"}} for a model whose
# reasoning markup differs; a claim not listed is never attested. When a sample of a listed model
# finishes scoring, it is attested (a `gpu`-queue task: one teacher-forced forward pass) with
# probability `sample_fraction` (THINKPOOL_ATTEST_FRACTION; an unpredictable draw), and always
# while its contributor has an open flag. The attestation verdict is evidence, never part of the
# sample's status. Decision (thresholds calibrated on tiny models in
# tests/scoring/test_attestation.py): pass when at most `max_outside` of the completion tokens
# fall outside the claimed top-p nucleus and the Fast-DetectGPT-style z of their log-probabilities
# is at least `min_z`; fewer than `min_tokens` scored tokens is inconclusive (stored as skipped).
# One sample is weak evidence (2-3 % of honest samples fail alone), so a flag rests on
# `pool_size` of a contributor's latest attested samples of one (model, temperature), pooled: a
# pooled fail flags the failed ones. `max_tokens`: completion tokens scored per sample.
def _attest_models(name: str) -> dict[str, Any]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return {}
    try:
        models = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object, got {raw!r} ({exc}).") from None
    if not isinstance(models, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object of model name -> path.")
    for claimed, entry in models.items():
        if isinstance(entry, str) and entry:
            continue
        think = entry.get("think", {}) if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not entry["path"]
            or set(entry) - {"path", "think"}
            or not isinstance(think, dict)
            or set(think) - {"open", "close"}
            or not all(isinstance(v, str) for v in think.values())
        ):
            raise ImproperlyConfigured(
                f"{name}: model {claimed!r} must map to a path, or to "
                '{"path": ..., "think": {"open": ..., "close": ...}}, '
                f"got {entry!r}."
            )
    return models


THINKPOOL_ATTESTATION: dict[str, Any] = {
    "models": _attest_models("THINKPOOL_ATTEST_MODELS"),
    "sample_fraction": env_float("THINKPOOL_ATTEST_FRACTION", 0.02, minimum=0.0, maximum=1.0),
    "pool_size": env_int("THINKPOOL_ATTEST_POOL_SIZE", 10, minimum=2, maximum=1000),
    "max_outside": env_float("THINKPOOL_ATTEST_MAX_OUTSIDE", 0.10, minimum=0.0, maximum=1.0),
    "min_z": env_float("THINKPOOL_ATTEST_MIN_Z", -3.0, minimum=-1000.0, maximum=1000.0),
    "min_tokens": env_int("THINKPOOL_ATTEST_MIN_TOKENS", 16, minimum=1),
    "max_tokens": env_int("THINKPOOL_ATTEST_MAX_TOKENS", 4096, minimum=16),
}
THINKPOOL_DECONTAM_BENCHMARKS = env_list("THINKPOOL_DECONTAM_BENCHMARKS", [])
THINKPOOL_DECONTAM_NGRAM = env_int("THINKPOOL_DECONTAM_NGRAM", 8, minimum=3, maximum=50)

# Releases (scoring/publishing/): `manage.py publish`, the admin's Releases page, the
# `publish` queue. The licence a release is published under decides which prompt sets it may
# mix (scoring/publishing/licenses.py); shards are cut at the size datasets.push_to_hub uses.
THINKPOOL_RELEASE: dict[str, Any] = {
    "license": env_str("THINKPOOL_RELEASE_LICENSE", "apache-2.0").lower(),
    "max_shard_bytes": env_int(
        "THINKPOOL_RELEASE_MAX_SHARD_BYTES", 500 * 1024 * 1024, minimum=1024
    ),
    # The local target's folders: <root>/<ORG>/<NAME> unless --path names one.
    "local_root": VAR_DIR / "releases",
    # Shards are built here before they are committed (removed afterwards).
    "staging_root": VAR_DIR / "release-staging",
    # The Hub (or a server that speaks its API); HF_TOKEN comes from the environment.
    "hub_endpoint": os.environ.get("HF_ENDPOINT") or None,
    "hub_private": env_bool("THINKPOOL_RELEASE_PRIVATE", False),
    # A release left `building` this long (a worker killed mid-publish) may be taken over:
    # longer than the publish task may run (scoring.E011), so a live attempt is never taken.
    "stale_after_s": env_int("THINKPOOL_RELEASE_STALE_AFTER_S", 4 * 3600, minimum=60),
}

# Contributors' credit (contributors/services/credit.py, shown on the leaderboard page): per
# closed prompt, points_per_sample * difficulty * min(verified samples, cap_per_prompt).
THINKPOOL_CREDIT = {
    "points_per_sample": env_int("THINKPOOL_CREDIT_POINTS_PER_SAMPLE", 10, minimum=1),
    "cap_per_prompt": env_int("THINKPOOL_CREDIT_CAP_PER_PROMPT", 4, minimum=1),
}

# The admin's bulk actions (scoring/admin.py): more samples than this are done by tasks on the
# `maintenance` queue, in chunks, instead of inside the request.
THINKPOOL_ADMIN_SYNC_LIMIT = env_int("THINKPOOL_ADMIN_SYNC_LIMIT", 500, minimum=1)

# Trust and quotas (contributors/services/trust.py, shown to each contributor on their profile
# and in GET /api/v1/me/): per contributor and per node, a daily quota of prompts leased per UTC
# day starts at initial_quota; a valid sample adds `grow` (up to max_quota); an invalid sample, a
# lease expired owing samples (hoarding: one cut per lease, each item counted) or a flag multiplies
# it by `cut` (down to min_quota) and ends the streak. trust = min(1, streak / trust_streak) *
# (1 - share of invalid, expired and flagged among everything counted). Correctness counts only
# once disclosed (the prompt closed). docs/data-flow.md §9 documents every key.
THINKPOOL_TRUST: dict[str, Any] = {
    "initial_quota": env_int("THINKPOOL_TRUST_INITIAL_QUOTA", 50, minimum=1),
    "min_quota": env_int("THINKPOOL_TRUST_MIN_QUOTA", 5, minimum=1),
    "max_quota": env_int("THINKPOOL_TRUST_MAX_QUOTA", 5000, minimum=1),
    "grow": env_int("THINKPOOL_TRUST_GROW", 2, minimum=0),
    "cut": env_float("THINKPOOL_TRUST_CUT", 0.5, minimum=0.0, maximum=1.0),
    "trust_streak": env_int("THINKPOOL_TRUST_STREAK", 10, minimum=1),
    # Spot checks (contributors.services.spotchecks): the share of a contributor's lease items
    # asked again of a second contributor, from `spot_check_max` at trust 0 down to
    # `spot_check_min` at trust 1; at most `replica_share` of any lease's prompts are replicas.
    "spot_check_max": env_float("THINKPOOL_SPOT_CHECK_MAX", 0.2, minimum=0.0, maximum=1.0),
    "spot_check_min": env_float("THINKPOOL_SPOT_CHECK_MIN", 0.02, minimum=0.0, maximum=1.0),
    "replica_share": env_float("THINKPOOL_REPLICA_SHARE", 0.25, minimum=0.0, maximum=1.0),
    # Two sides disagree when their pass rates differ by `disagree_gap` or more (verifiable
    # prompts), or (others) their mean normalised rewards by `disagree_reward_gap` or their
    # mean lengths by a factor of `disagree_length_ratio`. Disagreement is persistent (flag)
    # once a contributor has `disagree_min` disagreements that are at least `disagree_share`
    # of their last `disagree_window` compared checks.
    "disagree_gap": env_float("THINKPOOL_DISAGREE_GAP", 0.5, minimum=0.0, maximum=1.0),
    "disagree_reward_gap": env_float("THINKPOOL_DISAGREE_REWARD_GAP", 1.0, minimum=0.0),
    "disagree_length_ratio": env_float("THINKPOOL_DISAGREE_LENGTH_RATIO", 2.0, minimum=1.0),
    "disagree_min": env_int("THINKPOOL_DISAGREE_MIN", 3, minimum=1),
    "disagree_share": env_float("THINKPOOL_DISAGREE_SHARE", 0.5, minimum=0.0, maximum=1.0),
    "disagree_window": env_int("THINKPOOL_DISAGREE_WINDOW", 20, minimum=1),
    # ... and, for pass rates, their verified samples over those checks are significantly fewer
    # than the other sides' (one-sided Fisher exact test at this level).
    "disagree_alpha": env_float("THINKPOOL_DISAGREE_ALPHA", 0.05, minimum=0.0, maximum=1.0),
    # Who may replicate: contributors with at least this trust (a fresh account cannot).
    "replica_min_trust": env_float("THINKPOOL_REPLICA_MIN_TRUST", 0.5, minimum=0.0, maximum=1.0),
    # A hoarding flag (for maintainers) once a contributor's lease items expired owing samples
    # `hoard_flag_after` times within a day.
    "hoard_flag_after": env_int("THINKPOOL_HOARD_FLAG_AFTER", 3, minimum=1),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Production is HTTPS only; `manage.py check --deploy` is clean with docs/deployment.md's settings.
# Each default is the strict one and has its variable to relax it.
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Load balancers and orchestrators probe over plain HTTP, inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    # These two bind every subdomain of the site's domain to HTTPS (preload: for years, in the
    # browsers' lists): an operator's decision, so off unless set.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    # Behind a proxy that terminates TLS, the header it sets to say the request came over HTTPS
    # (e.g. X-Forwarded-Proto). Only when the proxy always sets or overwrites it: a client could
    # send it too.
    _proxy_ssl_header = os.environ.get("SECURE_PROXY_SSL_HEADER", "")
    if _proxy_ssl_header:
        if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
            raise ImproperlyConfigured(
                "SECURE_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto, "
                f"got {_proxy_ssl_header!r}."
            )
        SECURE_PROXY_SSL_HEADER = (
            "HTTP_" + _proxy_ssl_header.upper().replace("-", "_"),
            "https",
        )

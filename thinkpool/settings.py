"""The one settings module. Every knob comes from the environment.

Defaults are the newcomer's embedded set-up (`make run`): SQLite under var/, a Celery broker on
the filesystem (a real worker process, no server needed), publishing to a local folder.
With DEBUG off, SECRET_KEY and ALLOWED_HOSTS must be set explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
VAR_DIR = Path(env_str("THINKPOOL_VAR_DIR", str(BASE_DIR / "var")))

if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", "insecure-development-key-do-not-use-in-production")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
else:
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
    "scoring",
    "contributors",
    "thinkpool",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
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

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Request bodies: an upload of 256 samples with 32k-token completions is large, but bounded.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("THINKPOOL_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["contributors.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["contributors.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["contributors.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "token": os.environ.get("THINKPOOL_TOKEN_RATE", "600/min"),
        "anon": os.environ.get("THINKPOOL_ANON_RATE", "120/min"),
    },
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)

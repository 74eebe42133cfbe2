"""Settings for Registry Browser, driven by environment variables (see README)."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from registry_browser.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY if DEBUG else "")
if not DEBUG and SECRET_KEY in ("", DEV_SECRET_KEY):
    raise ImproperlyConfigured("SECRET_KEY must be set to a long random value when DEBUG is off")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "axes",
    "django_tasks",
    "django_tasks_db",
    "django_prometheus",
    "dashboard",
]

MIDDLEWARE = [
    # First, so the request log line and the metrics time everything below them.
    "dashboard.logging.RequestLogMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Lets audit entries written from model signals name the signed-in user who acted.
    "dashboard.audit.AuditRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # A view's lost database connection becomes a 503 page (see dashboard/middleware.py).
    "dashboard.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into a 429 page.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lock out a username from one address after repeated failed logins (django-axes).
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_float("LOGIN_LOCKOUT_HOURS", 0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Reverse proxies in front of the dashboard that append the client's address to X-Forwarded-For.
# Without it, every sign-in behind a proxy comes "from the proxy": one lockout for everybody.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more")
# Axes' own proxy settings need django-ipware; this reads the header the same way the audit log does.
AXES_CLIENT_IP_CALLABLE = "dashboard.audit.client_address"

# Only our own static files (htmx is served by django-htmx from our static files).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

ROOT_URLCONF = "registry_browser.urls"
WSGI_APPLICATION = "registry_browser.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
        # With persistent connections, check each one before a request reuses it.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets page views read while a sync writes; the timeout waits out short write locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Background work (syncs, notifications, retention) runs on django-tasks. "database" queues
# in the database above and needs `python manage.py db_worker`; "immediate" runs each task
# inline, which suits development and tests.
_TASK_BACKENDS = {
    "database": "django_tasks_db.DatabaseBackend",
    "immediate": "django_tasks.backends.immediate.ImmediateBackend",
}
_task_backend_name = env_str("TASK_BACKEND", "immediate" if DEBUG else "database")
if _task_backend_name not in _TASK_BACKENDS:
    raise ImproperlyConfigured(f"TASK_BACKEND must be one of {', '.join(_TASK_BACKENDS)}")
TASKS = {"default": {"BACKEND": _TASK_BACKENDS[_task_backend_name]}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:catalog"
# No LOGOUT_REDIRECT_URL: signing out (a POST) shows registration/logged_out.html as confirmation.

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
# The dashboard is in English only: without translation machinery, every number and date a
# page prints skips a locale lookup (the catalog page took 0.9x the time).
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Security baseline; the cookie and HSTS settings only bite behind TLS.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# htmx sends the CSRF token from the page (hx-headers in base.html), so no script reads the cookie.
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Probes, metrics and the registry's notifications arrive over the internal network, not TLS.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^hooks/registry/$"]
# When set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, it is open.
METRICS_TOKEN = env_str("METRICS_TOKEN")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Preloading is the domain owner's one-way decision, not a default; without it `check --deploy`
# would always warn, and a check that always warns gets ignored.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The registry this dashboard shows.
REGISTRY_URL = env_str("REGISTRY_URL", "http://127.0.0.1:5000")
REGISTRY_USERNAME = env_str("REGISTRY_USERNAME")
REGISTRY_PASSWORD = env_str("REGISTRY_PASSWORD")
REGISTRY_VERIFY_TLS = env_bool("REGISTRY_VERIFY_TLS", True)
REGISTRY_CA_BUNDLE = env_str("REGISTRY_CA_BUNDLE")
REGISTRY_CONNECT_TIMEOUT = env_float("REGISTRY_CONNECT_TIMEOUT", 3.0)
REGISTRY_READ_TIMEOUT = env_float("REGISTRY_READ_TIMEOUT", 10.0)
REGISTRY_RETRIES = env_int("REGISTRY_RETRIES", 2)
REGISTRY_TOKEN_REALM_HOSTS = env_list("REGISTRY_TOKEN_REALM_HOSTS", [])
REGISTRY_PUBLIC_HOST = env_str("REGISTRY_PUBLIC_HOST")

# One line per request and per registry call; JSON for log collectors, plain for a terminal.
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "dashboard.logging.PlainFormatter"},
        "json": {"()": "dashboard.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # A full sync makes one registry call per tag: WARNING keeps only the failures.
        "dashboard.registry": {"level": env_str("REGISTRY_LOG_LEVEL", "INFO")},
        # django-axes reports every successful login's reset at INFO.
        "axes": {"level": "WARNING"},
    },
}

# Access: see dashboard/access.py.
DASHBOARD_PUBLIC_READ = env_bool("DASHBOARD_PUBLIC_READ", False)
_ROLE_NAMES = {"none": None, "viewer": 10, "maintainer": 20, "operator": 30, "admin": 40}
_default_role_name = env_str("DASHBOARD_DEFAULT_ROLE", "none").strip().lower()
if _default_role_name not in _ROLE_NAMES:
    raise ImproperlyConfigured(f"DASHBOARD_DEFAULT_ROLE must be one of {', '.join(_ROLE_NAMES)}")
DASHBOARD_DEFAULT_ROLE = _ROLE_NAMES[_default_role_name]

# Sync and notifications: see dashboard/sync.py and dashboard/notifications.py.
# Registry requests a sync runs in parallel (`sync_registry --workers` overrides it).
REGISTRY_SYNC_WORKERS = env_int("REGISTRY_SYNC_WORKERS", 8)
# The registry's notifications are accepted only with this shared secret, sent by the registry
# as the raw value of the header below; unset, the endpoint refuses every event.
REGISTRY_NOTIFICATIONS_SECRET = env_str("REGISTRY_NOTIFICATIONS_SECRET")
REGISTRY_NOTIFICATIONS_HEADER = env_str("REGISTRY_NOTIFICATIONS_HEADER", "X-Registry-Secret")
REGISTRY_NOTIFICATIONS_MAX_BYTES = env_int("REGISTRY_NOTIFICATIONS_MAX_BYTES", 1024 * 1024)

# Supply chain: see dashboard/attachments.py. PEM public keys (comma-separated file paths; a
# key's name is its file name without extension) whose signatures count as verified, besides
# the keys admins add; the largest attached payload the sync downloads; and whether a restore
# (page or API) refuses a version without a verified signature.
SIGNATURE_PUBLIC_KEYS = env_list("SIGNATURE_PUBLIC_KEYS", [])
ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 16 * 1024 * 1024)
RESTORE_REQUIRE_SIGNATURE = env_bool("RESTORE_REQUIRE_SIGNATURE", False)

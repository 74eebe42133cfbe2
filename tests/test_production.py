"""Production concerns: probes, structured logs, static files, gunicorn, the database settings."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.templatetags.static import static
from django.utils import timezone

from dashboard.logging import JsonFormatter, PlainFormatter
from dashboard.models import Registry
from dashboard.registry import RegistryClient
from dashboard.registry.errors import NotFound, Unavailable
from tests.support.deployment import gunicorn, process_database, shell
from tests.support.registry_server import free_port

REGISTRY_URL = "http://registry.example.test:5000"


def test_healthz_answers_without_touching_the_database(client):
    # No django_db mark: any query would raise here.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_reports_the_registry_state_from_the_cache(client, settings):
    settings.REGISTRY_URL = REGISTRY_URL
    checked = timezone.now() - timedelta(minutes=3)
    Registry.objects.create(name="prod", url=REGISTRY_URL, reachable=False, last_checked_at=checked)

    response = client.get("/readyz")

    # An unreachable registry leaves the dashboard ready: its cached pages are still useful.
    assert response.status_code == 200
    assert response.json() == {
        "database": "ok",
        "registry": {"reachable": False, "last_checked_at": checked.isoformat()},
    }


@pytest.mark.django_db
def test_readyz_before_the_first_sync_says_the_registry_state_is_unknown(client, settings):
    settings.REGISTRY_URL = REGISTRY_URL
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["registry"] == {"reachable": None, "last_checked_at": None}


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    unreachable = f"sqlite:///{tmp_path / 'no-such-directory' / 'db.sqlite3'}"
    probe = (
        "from django.test import Client; "
        "client = Client(HTTP_HOST='localhost'); "
        "print(client.get('/readyz').status_code, client.get('/healthz').status_code)"
    )
    assert shell(unreachable, probe).split() == ["503", "200"]


def test_behind_tls_only_people_are_redirected_not_probes_or_the_registry(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/catalog-or-any-page/").status_code == 301
    assert client.get("/healthz").status_code == 200
    # Refused for lack of a secret, but answered over plain HTTP rather than redirected.
    assert client.post("/hooks/registry/").status_code == 503


@pytest.mark.django_db
def test_each_request_logs_one_structured_line_with_its_timing(client, caplog):
    with caplog.at_level(logging.INFO, logger="dashboard.request"):
        client.get("/readyz", HTTP_HX_REQUEST="true")

    [record] = [r for r in caplog.records if r.name == "dashboard.request"]
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["path"] == "/readyz"
    assert line["status"] == 200
    assert line["htmx"] is True
    assert line["user"] == ""
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert re.search(r"GET /readyz 200 [\d.]+ms method=GET path=/readyz status=200", PlainFormatter().format(record))


def test_collectstatic_writes_hashed_compressed_files_that_templates_link_to(tmp_path, settings):
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

    call_command("collectstatic", "--noinput", verbosity=0)

    paths = json.loads((tmp_path / "staticfiles.json").read_text())["paths"]
    assert re.fullmatch(r"dashboard/app\.[0-9a-f]{12}\.css", paths["dashboard/app.css"])
    assert static("dashboard/app.css") == f"/static/{paths['dashboard/app.css']}"
    htmx = paths["django_htmx/django-htmx.js"]
    assert re.fullmatch(r"django_htmx/django-htmx\.[0-9a-f]{12}\.js", htmx)
    assert (tmp_path / htmx).is_file()
    # WhiteNoise serves the compressed copy to browsers that accept it.
    assert (tmp_path / f"{htmx}.gz").stat().st_size < (tmp_path / htmx).stat().st_size


def test_gunicorn_with_the_production_config_serves_probes_metrics_and_logs(tmp_path: Path):
    with process_database(tmp_path) as database_url, gunicorn(
        database_url, tmp_path / "gunicorn.log", workers=2
    ) as server:
        healthz_before = _healthz_count(requests.get(f"{server.url}/metrics", timeout=30).text)
        for _ in range(6):
            assert requests.get(f"{server.url}/healthz", timeout=30).text == "ok\n"
        ready = requests.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 200
        assert ready.json()["database"] == "ok"
        # Both workers' counts add up in one scrape, whichever worker answers it.
        assert _healthz_count(requests.get(f"{server.url}/metrics", timeout=30).text) == healthz_before + 6
        (metrics_dir,) = server.tmp_dir.glob("registry-browser-metrics-*")
        assert any(metrics_dir.iterdir())
        log = server.stop()

    assert not metrics_dir.exists()  # removed by gunicorn.conf.py's on_exit

    request_lines = [
        line
        for line in map(json.loads, filter(lambda text: text.startswith("{"), log.splitlines()))
        if line["logger"] == "dashboard.request"
    ]
    assert [(line["path"], line["status"]) for line in request_lines[-9:]] == [("/metrics", 200)] + [
        ("/healthz", 200)
    ] * 6 + [("/readyz", 200), ("/metrics", 200)]


def _healthz_count(metrics: str) -> float:
    found = re.search(
        r'django_http_responses_total_by_status_view_method_total\{[^}]*view="healthz"[^}]*\} (\S+)', metrics
    )
    assert found is not None, metrics
    return float(found.group(1))


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    """A sync writing while pages read must not fail with "database is locked"."""
    database_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    probe = (
        "from django.db import connection; cursor = connection.cursor(); "
        "print(cursor.execute('PRAGMA journal_mode').fetchone()[0], "
        "cursor.execute('PRAGMA busy_timeout').fetchone()[0], connection.transaction_mode)"
    )
    assert shell(database_url, probe).split() == ["wal", "20000", "IMMEDIATE"]


def test_each_registry_call_logs_its_path_status_and_timing_without_secrets(registry, caplog):
    with RegistryClient(registry.url, username="bob", password="never-logged") as client:
        with caplog.at_level(logging.INFO, logger="dashboard.registry"):
            client.ping()
            with pytest.raises(NotFound):
                client.tags("no-such-repository-for-logging")

    calls = [record for record in caplog.records if record.name == "dashboard.registry"]
    assert [(r.kind, r.method, r.path, r.status) for r in calls] == [
        ("ping", "GET", "/v2/", 200),
        ("tags", "GET", "/v2/no-such-repository-for-logging/tags/list", 404),
    ]
    assert all(isinstance(r.duration_ms, float) for r in calls)
    assert "never-logged" not in caplog.text


def test_a_registry_call_that_cannot_connect_logs_a_warning(caplog):
    closed = f"http://127.0.0.1:{free_port()}"
    with RegistryClient(closed, retries=0, timeout=(1, 1)) as client:
        with caplog.at_level(logging.INFO, logger="dashboard.registry"), pytest.raises(Unavailable):
            client.ping()

    failures = [r for r in caplog.records if r.name == "dashboard.registry" and r.levelno == logging.WARNING]
    assert failures and failures[0].status is None and failures[0].error == "ConnectionError"


def test_metrics_are_open_by_default_and_need_the_token_when_one_is_set(client, settings):
    assert client.get("/metrics").status_code == 200

    settings.METRICS_TOKEN = "scrape-" + "x" * 32
    refused = [
        client.get("/metrics"),
        client.get("/metrics", headers={"Authorization": "Bearer wrong"}),
        # The right token under another scheme is still refused.
        client.get("/metrics", headers={"Authorization": f"Basic {settings.METRICS_TOKEN}"}),
    ]
    assert [response.status_code for response in refused] == [401, 401, 401]
    assert refused[0]["WWW-Authenticate"].startswith("Bearer")
    assert b"django_http" not in refused[0].content
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {settings.METRICS_TOKEN}"})
    assert scraped.status_code == 200 and b"django_http_requests" in scraped.content

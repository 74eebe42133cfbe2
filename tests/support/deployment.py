"""Run the dashboard as separate processes (manage.py, gunicorn, the task worker) for tests.

Such processes cannot see pytest-django's test database (in memory for SQLite, and in an
open transaction otherwise), so each test gets a database of its own on the same engine the
suite runs on: a SQLite file, or a fresh database on the suite's PostgreSQL server.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import requests
from django.db import connection

from dashboard.logging import request_logger
from dashboard.registry.client import logger as registry_logger
from tests.support.registry_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
REQUEST_LOGGER = request_logger.name  # one line per answer the dashboard gives
REGISTRY_LOGGER = registry_logger.name  # one line per registry call it makes

# Prints the cache as JSON: {repository: {tag: digest}}, plus the integrity facts the tests check.
CACHE_DUMP = """
import json
from django.db.models import Count
from dashboard.models import Manifest, Tag, TagHistory
tags = {}
for tag in Tag.objects.select_related("repository", "manifest"):
    tags.setdefault(tag.repository.name, {})[tag.name] = tag.manifest.digest
open_periods = list(TagHistory.objects.filter(until__isnull=True).values("repository__name", "tag", "digest"))
duplicates = Manifest.objects.values("repository", "digest").annotate(n=Count("id")).filter(n__gt=1).count()
print(json.dumps({"tags": tags, "open_periods": open_periods, "duplicate_manifests": duplicates}))
"""


def dump_cache(database_url: str) -> dict:
    """What a dashboard process sees in the cache (see CACHE_DUMP)."""
    return json.loads(shell(database_url, CACHE_DUMP))


@contextmanager
def process_database(tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database for subprocesses; yields its DATABASE_URL.

    Migrations run once per session into a template that each test copies: running them
    costs seconds, copying costs nothing.
    """
    if connection.vendor == "postgresql":
        name = f"rb_proc_{secrets.token_hex(6)}"
        _postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template()}"')
        try:
            yield _postgres_url(name)
        finally:
            _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        template = _sqlite_template()
        path = tmp_path / template.name
        # With the write-ahead log, if SQLite left one behind: it holds committed pages too.
        for suffix in ("", "-wal"):
            if template.with_name(template.name + suffix).exists():
                shutil.copyfile(template.with_name(template.name + suffix), path.with_name(path.name + suffix))
        yield f"sqlite:///{path}"


@functools.cache
def _sqlite_template() -> Path:
    path = Path(tempfile.mkdtemp(prefix="registry-browser-template-")) / "db.sqlite3"
    atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
    url = f"sqlite:///{path}"
    manage(url, "migrate", "--noinput")
    return path


@functools.cache
def _postgres_template() -> str:
    name = f"rb_template_{secrets.token_hex(6)}"
    _postgres_admin(f'CREATE DATABASE "{name}"')
    atexit.register(_postgres_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    manage(_postgres_url(name), "migrate", "--noinput")
    return name


def _postgres_url(name: str) -> str:
    settings = connection.settings_dict
    auth = settings["USER"] + (f":{settings['PASSWORD']}" if settings["PASSWORD"] else "")
    return f"postgres://{auth}@{settings['HOST']}:{settings['PORT']}/{name}"


def _postgres_admin(statement: str) -> None:
    import psycopg

    settings = connection.settings_dict
    with psycopg.connect(
        dbname="postgres",
        user=settings["USER"],
        password=settings["PASSWORD"] or "",
        host=settings["HOST"],
        port=str(settings["PORT"]),
        autocommit=True,
    ) as admin:
        admin.execute(statement)


def process_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a dashboard process: this one's, with its own database and queue."""
    env = {**os.environ, "DATABASE_URL": database_url, "TASK_BACKEND": "database", "LOG_FORMAT": "json"}
    env.update(extra)
    return env


def manage(database_url: str, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `manage.py args` to completion; raises with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=process_env(database_url, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def shell(database_url: str, code: str, **env: str) -> str:
    """Run Python `code` in a dashboard process (`manage.py shell -c`); returns what it printed."""
    return manage(database_url, "shell", "--no-imports", "-c", code, **env).stdout


def start_manage(database_url: str, *args: str, log: Path | None = None, **env: str) -> subprocess.Popen[str]:
    """Start `manage.py args` in the background, stdout and stderr piped, or both written to
    `log`. Long runners (a worker for a whole benchmark) need the file: a pipe nobody reads
    fills up, and the process blocks on its next log line."""
    with log.open("w") if log is not None else nullcontext() as output:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=process_env(database_url, **env),
            stdout=output or subprocess.PIPE,
            stderr=subprocess.PIPE if output is None else subprocess.STDOUT,
            text=True,
        )


def stop_process(process: subprocess.Popen[str], timeout: float = 20) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it is not gone within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Reading the processes' logs (LOG_FORMAT=json, see process_env) -----------------------------


def _json_lines(log: str) -> Iterator[dict]:
    for line in log.splitlines():
        if line.startswith('{"'):
            with suppress(json.JSONDecodeError):  # a line cut short when a process was killed
                yield json.loads(line)


def five_hundreds(log: str, logger: str) -> list[str]:
    """`method path status` of every 5xx in the lines of `logger`: REQUEST_LOGGER for the
    dashboard's own answers, REGISTRY_LOGGER for the registry's answers to the dashboard."""
    return [
        f"{line.get('method')} {line.get('path')} {line['status']}"
        for line in _json_lines(log)
        if line.get("logger") == logger and isinstance(line.get("status"), int) and line["status"] >= 500
    ]


def logged_errors(log: str) -> int:
    """ERROR lines of the dashboard's JSON log (failed tasks, exceptions) and of gunicorn's own."""
    json_errors = sum(1 for line in _json_lines(log) if line.get("level") in ("ERROR", "CRITICAL"))
    gunicorn_errors = sum(1 for line in log.splitlines() if "[ERROR]" in line or "[CRITICAL]" in line)
    return json_errors + gunicorn_errors


@dataclass
class WebServer:
    url: str
    process: subprocess.Popen[str]
    log_path: Path
    tmp_dir: Path  # the server's TMPDIR, where gunicorn.conf.py makes its metrics directory

    def stop(self) -> str:
        """Stop gracefully and return everything the server logged."""
        stop_process(self.process)
        return self.log_path.read_text()


@contextmanager
def gunicorn(database_url: str, log_path: Path, *, workers: int = 1, **env: str) -> Iterator[WebServer]:
    """gunicorn with deploy/gunicorn.conf.py on a free loopback port, until the block ends.
    Its temporary files go next to `log_path`, so even a killed server leaves none in /tmp."""
    port = free_port()
    tmp_dir = Path(tempfile.mkdtemp(prefix="gunicorn-tmp-", dir=log_path.parent))
    server_env = process_env(
        database_url,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=str(workers),
        TMPDIR=str(tmp_dir),
        **env,
    )
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
            cwd=REPO_ROOT,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = WebServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, tmp_dir=tmp_dir)
    try:
        _wait_for(server)
        yield server
    finally:
        server.stop()


def _wait_for(server: WebServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited at startup:\n{server.log_path.read_text()}")
        try:
            if requests.get(f"{server.url}/healthz", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer within {STARTUP_TIMEOUT}s:\n{server.log_path.read_text()}")

"""Load test: many people browsing while a full sync runs, on the production setup.

gunicorn with deploy/gunicorn.conf.py (2 workers on this 2-core machine), PostgreSQL, the
database task queue with one `db_worker`, and a real registry seeded by bench/sync.py with
REPOS repositories x TAGS tags. The cache is filled through the real sync first. Then, while
the worker runs one full sync after another, locust (headless) simulates USERS people mixing
catalog, search, repository and tag pages for DURATION seconds; then, in the same setup, the
same users ask only /healthz (a trivial Django view) as the baseline. Prints requests/s,
p50/p95/p99 and errors of each, and the ratio of the two throughputs; from the server's and the
worker's logs, the dashboard's 5xx answers, the registry's 5xx answers to the dashboard (apart:
they are not the dashboard's errors) and ERROR lines; writes the figures to
bench/results/load.json.

Run it through `make bench-load` (PostgreSQL comes from deploy/with-postgres.sh), or:
  deploy/with-postgres.sh .venv/bin/python bench/load.py [--users 50] [--duration 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sync import registry_with_content  # noqa: E402
from tests.support.deployment import (  # noqa: E402
    REGISTRY_LOGGER,
    REQUEST_LOGGER,
    five_hundreds,
    gunicorn,
    logged_errors,
    manage,
    start_manage,
)

RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable


def production_env(registry_url: str, repos: int, tags: int) -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        # Plain HTTP on loopback: no TLS proxy in front, so cookies may not be Secure-only.
        "SECURE_COOKIES": "false",
        "DASHBOARD_PUBLIC_READ": "true",
        "DATABASE_CONN_MAX_AGE": "60",
        "REGISTRY_URL": registry_url,
        "LOAD_REPOS": str(repos),
        "LOAD_TAGS": str(tags),
    }


def keep_syncing(stop: threading.Event, finished: list[str]) -> None:
    """Queue a full sync, wait for the worker to finish it, queue the next, until stopped.
    Runs as a daemon thread: the sync still running at the end is not waited for."""
    from dashboard.tasks import enqueue_sync

    while not stop.is_set():
        result = enqueue_sync()
        while not result.is_finished:
            time.sleep(1)
            result.refresh()
        finished.append(result.return_value["summary"] if result.status == "SUCCESSFUL" else "failed")


def setup_django(database_url: str, env: dict[str, str]) -> None:
    """This process queues the syncs: Django with the same settings as the server's."""
    os.environ.update(env, DATABASE_URL=database_url, TASK_BACKEND="database")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry_browser.settings")
    import django

    django.setup()


def run_locust(url: str, scenario: str, users: int, seconds: int, prefix: Path, env: dict[str, str]) -> dict:
    subprocess.run(
        [
            PYTHON, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
            "--headless", "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s",
            "--host", url, "--tags", scenario, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
        ],
        env={**os.environ, **env},
        check=False,  # locust exits 1 when any request failed; the figures say so
    )
    with open(f"{prefix}_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    return {name: _figures(row) for name, row in rows.items()}


def _figures(row: dict[str, str]) -> dict[str, float | None]:
    def number(text: str) -> float | None:
        return None if text == "N/A" else float(text)  # N/A: no request of that kind

    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": round(float(row["Requests/s"]), 1),
        "p50_ms": number(row["50%"]),
        "p95_ms": number(row["95%"]),
        "p99_ms": number(row["99%"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=2000)
    parser.add_argument("--tags", type=int, default=5, help="tags per repository (at least 3)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, default=60, help="seconds of page load")
    parser.add_argument("--baseline-duration", type=int, default=20, help="seconds of /healthz load")
    parser.add_argument("--keep", type=Path, help="registry storage to reuse (and seed on first use)")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres"):
        raise SystemExit("Needs PostgreSQL: run `make bench-load` or deploy/with-postgres.sh .venv/bin/python bench/load.py")

    scratch = Path(tempfile.mkdtemp(prefix="registry-browser-load-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    registry = registry_with_content(args.keep or scratch / "registry", args.repos, args.tags)
    env = production_env(registry.url, args.repos, args.tags)
    worker, log = None, ""
    try:
        # collectstatic first: with DEBUG off, migrate's system checks refuse a missing manifest.
        manage(database_url, "collectstatic", "--noinput", **env)
        manage(database_url, "migrate", "--noinput", **env)
        started = time.perf_counter()
        first = manage(database_url, "sync_registry", timeout=1800, **env)
        print(f"initial sync: {first.stdout.strip()} ({time.perf_counter() - started:.0f} s)", flush=True)

        worker = start_manage(
            database_url, "db_worker", "--no-reload", "--interval", "0.5", log=scratch / "worker.log", **env
        )
        setup_django(database_url, env)
        stop, syncs = threading.Event(), []
        syncing = threading.Thread(target=keep_syncing, args=(stop, syncs), daemon=True)
        with gunicorn(database_url, scratch / "gunicorn.log", workers=2, **env) as server:
            syncing.start()
            pages = run_locust(server.url, "pages", args.users, args.duration, scratch / "pages", env)
            baseline = run_locust(server.url, "healthz", args.users, args.baseline_duration, scratch / "healthz", env)
            stop.set()
            log = server.stop()
    finally:
        if worker is not None:
            # A first SIGTERM lets the running sync finish; nobody waits for it here.
            worker.kill()
            worker.wait()
            log += "\n" + (scratch / "worker.log").read_text()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    result = {
        "setup": {
            "repositories": args.repos,
            "tags": args.repos * args.tags,
            "users": args.users,
            "gunicorn_workers": 2,
            "database": "postgresql",
        },
        "pages": pages,
        "healthz": baseline["Aggregated"],
        "ratio_to_healthz": round(pages["Aggregated"]["rps"] / max(baseline["Aggregated"]["rps"], 0.1), 2),
        "server_errors_5xx": len(five_hundreds(log, REQUEST_LOGGER)),
        # The registry's own 5xx answers to the syncs and pages: not the dashboard's errors.
        "registry_errors_5xx": len(five_hundreds(log, REGISTRY_LOGGER)),
        "logged_errors": logged_errors(log),
        "full_syncs_finished_during_load": syncs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Soak test: everything at once for a while, then check that nothing drifted.

A real registry whose notifications go to a live dashboard (gunicorn with the production
settings, the database task queue and one `db_worker`), with concurrent browsing, pushes (new
tags and re-pushes), tag deletes, restores and refreshes for --seconds (default 600). Then the
load stops and the notifications settle, and it reports:

- requests and errors per kind (target: 0 errors; a 5xx, an exception or an unexpected status
  is an error, a 404 for something deleted meanwhile or a 409 for a tag moved meanwhile is not),
  plus the dashboard's 5xx answers and ERROR lines from its logs (the registry's webhook calls
  and the worker included), and the registry's own 5xx answers to the dashboard,
- every cached tag -> digest compared with the registry itself (target: identical),
- audit entries of deletes and restores against the actions taken (target: equal).

    .venv/bin/python bench/soak.py --seconds 60
    deploy/with-postgres.sh .venv/bin/python bench/soak.py      # on PostgreSQL (DATABASE_URL)

Writes the figures to bench/results/soak.json. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import production_env  # noqa: E402
from tests.support.deployment import (  # noqa: E402
    REGISTRY_LOGGER,
    REQUEST_LOGGER,
    five_hundreds,
    gunicorn,
    logged_errors,
    manage,
    shell,
    start_manage,
    stop_process,
)
from tests.support.images import ImagePusher  # noqa: E402
from tests.support.registry_server import free_port, start_registry  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SECRET_HEADER = "X-Registry-Secret"
USERNAME = "soak"
AUDITED_ACTIONS = ("delete_tag", "restore")
# Counted by the dashboard: (action, outcome) for every audited action, as JSON.
AUDIT_COUNT = """
import json
from django.db.models import Count
from dashboard.models import AuditEntry
rows = AuditEntry.objects.filter(action__in={actions!r}).values("action", "outcome").annotate(n=Count("id"))
print(json.dumps({{f"{{row['action']}} {{row['outcome']}}": row["n"] for row in rows}}))
"""
MAKE_USER = """
from django.contrib.auth.models import User
from dashboard.models import ApiToken
user = User.objects.create_superuser({username!r}, password={password!r})
print(ApiToken.issue(user, "soak")[1])
"""
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
TIMEOUT = 60


@dataclass
class Tally:
    """Thread-safe counts of what the actors did."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    audited: Counter[str] = field(default_factory=Counter)
    pushes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, error: str | None = None) -> None:
        with self.lock:
            self.requests[kind] += 1
            if error:
                self.errors[kind] += 1
                if len(self.samples) < 20:
                    self.samples.append(f"{kind}: {error}")

    def audit(self, action: str) -> None:
        with self.lock:
            self.audited[action] += 1

    def pushed(self) -> None:
        with self.lock:
            self.pushes += 1


class Dashboard:
    """One person's session on the dashboard (a requests.Session is not thread-safe)."""

    def __init__(self, url: str, password: str, token: str, tally: Tally) -> None:
        self.url = url
        self.tally = tally
        self.session = requests.Session()
        self.api = {"Authorization": f"Bearer {token}"}
        login = self.session.get(f"{url}/accounts/login/", timeout=TIMEOUT)
        form = {"username": USERNAME, "password": password, "csrfmiddlewaretoken": CSRF_INPUT.search(login.text)[1]}
        answer = self.session.post(f"{url}/accounts/login/", data=form, timeout=TIMEOUT, allow_redirects=False)
        if answer.status_code != 302:
            raise SystemExit(f"could not sign in: {answer.status_code}")

    def call(self, kind: str, method: str, path: str, ok: tuple[int, ...], **kwargs) -> requests.Response | None:
        """Send one request and count it; statuses outside `ok` are errors."""
        headers = kwargs.pop("headers", {})
        if method != "GET":
            headers["X-CSRFToken"] = self.session.cookies.get("csrftoken", "")
        try:
            response = self.session.request(
                method, self.url + path, headers=headers, timeout=TIMEOUT, allow_redirects=False, **kwargs
            )
        except requests.RequestException as exc:
            self.tally.count(kind, f"{method} {path}: {exc}")
            return None
        problem = None if response.status_code in ok else f"{method} {path} -> {response.status_code} {response.text[:200]!r}"
        self.tally.count(kind, problem)
        return response

    def tags(self, repository: str) -> dict[str, str]:
        """tag -> digest as the dashboard's cache has it now."""
        found: dict[str, str] = {}
        path: str | None = f"/api/v1/repositories/{repository}/-/tags/"
        while path:
            response = self.call("api", "GET", path, (200, 404), headers=dict(self.api))
            if response is None or response.status_code != 200:
                return found
            data = response.json()
            found.update((tag["name"], tag["digest"]) for tag in data["tags"])
            path = data["next"] and data["next"].removeprefix(self.url)
        return found


def browse(dashboard: Dashboard, repositories: list[str], rng: random.Random) -> None:
    repository = rng.choice(repositories)
    dashboard.call("catalog", "GET", "/", (200,))
    dashboard.call("search", "GET", f"/?q={repository[:4]}&sort=pushed", (200,))
    dashboard.call("repository", "GET", f"/repositories/{repository}/", (200,))
    htmx = {"HX-Request": "true", "HX-Target": "tag-results"}
    dashboard.call("fragment", "GET", f"/repositories/{repository}/?sort=version", (200,), headers=htmx)
    tags = dashboard.tags(repository)
    if tags:
        tag = rng.choice(sorted(tags))
        # Gone meanwhile (deleted, moved) is a 404, not an error.
        dashboard.call("tag", "GET", f"/repositories/{repository}/-/tags/{tag}/", (200, 404))
        dashboard.call("manifest", "GET", f"/repositories/{repository}/-/manifests/{tags[tag]}/", (200, 404))
        dashboard.call("history", "GET", f"/repositories/{repository}/-/tags/{tag}/history/", (200, 404))


def push(pusher: ImagePusher, repositories: list[str], rng: random.Random, tally: Tally, serial: Callable[[], int]) -> None:
    repository = rng.choice(repositories)
    number = serial()
    if rng.random() < 0.5:
        tags = [f"build-{number}"]  # a new tag
    else:
        tags = [rng.choice(["latest", "stable", "1.0"])]  # a re-push: the tag moves
    try:
        pusher.push_image(repository, tags, unique=f"soak-{number}", layers=1, layer_size=512)
    except (requests.RequestException, RuntimeError) as exc:
        tally.count("push", str(exc))
        return
    tally.count("push")
    tally.pushed()


def delete(dashboard: Dashboard, repositories: list[str], rng: random.Random) -> None:
    repository = rng.choice(repositories)
    tags = dashboard.tags(repository)
    candidates = sorted(tag for tag in tags if tag.startswith("build-"))
    if not candidates:
        return
    tag = rng.choice(candidates)
    # 302 done, 409 moved or pinned meanwhile, 502 the registry refused: each one audited.
    # 404: the tag left the cache first; nothing to act on, nothing audited.
    response = dashboard.call(
        "delete", "POST", f"/repositories/{repository}/-/tags/{tag}/delete/", (302, 404, 409, 502), data={"digest": tags[tag]}
    )
    if response is not None and response.status_code != 404:
        dashboard.tally.audit("delete_tag")


def restore(dashboard: Dashboard, repositories: list[str], rng: random.Random) -> None:
    repository = rng.choice(repositories)
    tags = dashboard.tags(repository)
    if len(set(tags.values())) < 2:
        return
    tag = rng.choice([t for t in ("latest", "stable", "1.0") if t in tags] or sorted(tags))
    target = rng.choice(sorted({digest for digest in tags.values() if digest != tags[tag]}))
    response = dashboard.call(
        "restore",
        "POST",
        f"/api/v1/repositories/{repository}/-/tags/{tag}/restore/",
        (200, 404, 409, 410, 502),
        headers=dict(dashboard.api),
        json={"digest": target, "expected_digest": tags[tag]},
    )
    if response is not None and response.status_code != 404:
        dashboard.tally.audit("restore")


def refresh(dashboard: Dashboard, repositories: list[str], rng: random.Random) -> None:
    if rng.random() < 0.2:
        dashboard.call("refresh", "POST", "/refresh/", (302,))
    else:
        dashboard.call("refresh", "POST", f"/repositories/{rng.choice(repositories)}/-/refresh/", (302,))


def actor(stop: threading.Event, pause: float, step: Callable[[random.Random], None], seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        step(rng)
        stop.wait(pause * rng.uniform(0.5, 1.5))


def drift(dashboard: Dashboard, pusher: ImagePusher, repositories: list[str]) -> dict[str, dict[str, list]]:
    """repository -> tag -> [cached digest, registry digest] wherever the two differ."""
    differences: dict[str, dict[str, list]] = {}
    for repository in repositories:
        cached = dashboard.tags(repository)
        actual = {tag: pusher.head_digest(repository, tag) for tag in pusher.tags(repository)}
        wrong = {
            tag: [cached.get(tag), actual.get(tag)]
            for tag in cached.keys() | actual.keys()
            if cached.get(tag) != actual.get(tag)
        }
        if wrong:
            differences[repository] = wrong
    return differences


def seed(pusher: ImagePusher, repositories: list[str]) -> None:
    for repository in repositories:
        pusher.push_image(repository, ["1.0", "stable", "latest"], unique=f"{repository}-1", layers=1, layer_size=512)
        pusher.push_image(repository, ["0.9"], unique=f"{repository}-0", layers=1, layer_size=512)
        for build in range(3):
            pusher.push_image(repository, [f"build-seed{build}"], unique=f"{repository}-b{build}", layers=1, layer_size=512)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=600, help="how long the load runs (default 600)")
    parser.add_argument("--repos", type=int, default=8, help="repositories (default 8)")
    parser.add_argument("--browsers", type=int, default=4, help="people browsing at once (default 4)")
    parser.add_argument("--settle", type=int, default=120, help="seconds to wait for notifications to settle")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="registry-browser-soak-"))
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{scratch / 'soak.sqlite3'}"
    registry_port = free_port()
    secret, password = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    env = production_env(f"http://127.0.0.1:{registry_port}", args.repos, 0) | {
        "DASHBOARD_PUBLIC_READ": "false",
        "REGISTRY_NOTIFICATIONS_SECRET": secret,
        "REGISTRY_READ_TIMEOUT": "5",
    }
    repositories = [f"soak/app-{i:02d}" for i in range(args.repos)]
    tally = Tally()
    registry = worker = None
    worker_log = ""
    try:
        manage(database_url, "migrate", "--noinput", **env)
        manage(database_url, "collectstatic", "--noinput", **env)
        make_user = MAKE_USER.format(username=USERNAME, password=password)
        token = shell(database_url, make_user, **env).strip()
        worker = start_manage(
            database_url, "db_worker", "--no-reload", "--interval", "0.5", log=scratch / "worker.log", **env
        )
        with gunicorn(database_url, scratch / "gunicorn.log", workers=2, **env) as server:
            registry = start_registry(
                scratch / "registry",
                port=registry_port,
                notify_url=f"{server.url}/hooks/registry/",
                notify_headers={SECRET_HEADER: secret},
            )
            pusher = ImagePusher(registry.url)
            seed(pusher, repositories)
            manage(database_url, "sync_registry", **env)

            serial = itertools.count(1).__next__
            people = [Dashboard(server.url, password, token, tally) for _ in range(args.browsers + 3)]
            steps: list[tuple[float, Callable[[random.Random], None]]] = [
                (0.2, lambda rng, d=d: browse(d, repositories, rng)) for d in people[: args.browsers]
            ]
            steps += [
                (0.5, lambda rng: push(pusher, repositories, rng, tally, serial)),
                (1.5, lambda rng: delete(people[-3], repositories, rng)),
                (2.0, lambda rng: restore(people[-2], repositories, rng)),
                (8.0, lambda rng: refresh(people[-1], repositories, rng)),
            ]
            stop = threading.Event()
            threads = [
                threading.Thread(target=actor, args=(stop, pause, step, i), daemon=True)
                for i, (pause, step) in enumerate(steps)
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            stop.wait(args.seconds)
            stop.set()
            for thread in threads:
                thread.join(timeout=TIMEOUT * 2)
            ran = time.monotonic() - started

            # Notifications and queued syncs still in flight: wait until the cache agrees, or give up.
            checker = Dashboard(server.url, password, token, Tally())
            settle_started = time.monotonic()
            differences = drift(checker, pusher, repositories)
            while differences and time.monotonic() - settle_started < args.settle:
                time.sleep(2)
                differences = drift(checker, pusher, repositories)
            settled = time.monotonic() - settle_started
            cached_tags = sum(len(checker.tags(repository)) for repository in repositories)
            log = server.stop()
        audits = json.loads(shell(database_url, AUDIT_COUNT.format(actions=AUDITED_ACTIONS), **env))
    finally:
        if worker is not None:
            stop_process(worker, timeout=30)
            worker_log = (scratch / "worker.log").read_text()
        if registry is not None:
            registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    audit_total = {action: sum(n for key, n in audits.items() if key.startswith(action + " ")) for action in AUDITED_ACTIONS}
    result = {
        "setup": {
            "seconds": round(ran),
            "repositories": args.repos,
            "browsers": args.browsers,
            "database": database_url.split(":")[0],
        },
        "requests": sum(tally.requests.values()),
        "requests_by_kind": dict(sorted(tally.requests.items())),
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(sorted(tally.errors.items())),
        "error_samples": tally.samples,
        "server_5xx": five_hundreds(log, REQUEST_LOGGER),
        "registry_5xx": five_hundreds(log + "\n" + worker_log, REGISTRY_LOGGER),
        "logged_errors": logged_errors(log + "\n" + worker_log),
        "pushes": tally.pushes,
        "cached_tags_at_end": cached_tags,
        "drift": differences,
        "settle_seconds": round(settled, 1),
        "actions_taken": dict(tally.audited),
        "audit_entries": audit_total,
        "audit_outcomes": audits,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    audit_matches = audit_total == {action: tally.audited[action] for action in AUDITED_ACTIONS}
    healthy = not (result["errors"] or result["server_5xx"] or result["logged_errors"] or differences) and audit_matches
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

"""Soak test: everything at once for a while, then check that nothing drifted.

A real registry whose notifications go to a live dashboard (gunicorn with the production
settings, the database task queue and one `db_worker`), with concurrent browsing, pushes (new
tags and re-pushes), tag and version deletes, restores and refreshes for --seconds (default
600); and another client (skopeo or crane, say) that pushes, retags and deletes whose changes
send no notification (a relay drops their events), so the dashboard learns of them only from
syncs and its own checks. Everyone reaches the registry through a proxy that passes one request
at a time, so its log is the order the registry applied them. Then the load stops, a full sync
runs (the periodic sync, which is how the other client's changes reach the cache) and the
notifications settle, and it reports:

- requests and errors per kind (target: 0 errors; a 5xx, an exception or an unexpected status
  is an error, a 404 for something deleted meanwhile or a 409 for a tag moved meanwhile is not),
  plus the dashboard's 5xx answers and ERROR lines from its logs (the registry's webhook calls
  and the worker included), and the registry's own 5xx answers to the dashboard,
- every cached tag -> digest compared with the registry itself (target: identical),
- audit entries of deletes and restores against the actions taken (target: equal),
- wrong deletions: a tag the dashboard deleted (by tombstone or with its version) or overwrote
  (restore) that did not point where the user was shown it, replayed from the proxy's log
  (target: 0); moves the other client made after the dashboard's last read of the tag (the
  window Distribution leaves open: it has no conditional writes) are counted apart.

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
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from tests.support.fault_proxy import FaultProxy, Seen  # noqa: E402
from tests.support.images import ImagePusher  # noqa: E402
from tests.support.registry_server import free_port, start_registry  # noqa: E402
from tests.support.write_log import RegistryModel, is_tombstone  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SECRET_HEADER = "X-Registry-Secret"
USERNAME = "soak"
AUDITED_ACTIONS = ("delete_tag", "delete_version", "restore")
# The audit entries of those actions, oldest first, as JSON.
AUDIT_ROWS = """
import json
from dashboard.models import AuditEntry
fields = ("action", "outcome", "repository", "tag", "digest_before", "digest_after", "reason")
rows = AuditEntry.objects.filter(action__in={actions!r}).order_by("id").values_list(*fields)
print(json.dumps([dict(zip(fields, row)) for row in rows]))
"""
EXTERNAL_AGENT = "soak-external-client/1"
MOVING_TAGS = ("latest", "stable", "1.0")
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
    external: Counter[str] = field(default_factory=Counter)
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
    candidates = sorted(tag for tag in tags if tag.startswith(("build-", "ext-")))
    if not candidates:
        return
    tag = rng.choice(candidates)
    if rng.random() < 0.3:
        # The whole version, with the tags the page shows on it. 410: deleted by someone else.
        digest = tags[tag]
        shown = sorted(name for name, found in tags.items() if found == digest)
        response = dashboard.call(
            "delete_version",
            "POST",
            f"/repositories/{repository}/-/manifests/{digest}/delete/",
            (302, 404, 409, 410, 502),
            data={"tags": shown, "confirm": repository},
        )
        if response is not None and response.status_code != 404:
            dashboard.tally.audit("delete_version")
        return
    # 302 done, 409 moved or pinned meanwhile, 502 the registry refused: each one audited.
    # 404: the tag left the cache first; nothing to act on, nothing audited.
    response = dashboard.call(
        "delete", "POST", f"/repositories/{repository}/-/tags/{tag}/delete/", (302, 404, 409, 502), data={"digest": tags[tag]}
    )
    if response is not None and response.status_code != 404:
        dashboard.tally.audit("delete_tag")


def external(pusher: ImagePusher, repositories: list[str], rng: random.Random, tally: Tally, serial: Callable[[], int]) -> None:
    """The other client: a new tag, a re-push, a retag (as `skopeo copy` does) or a delete by
    digest, none of which the dashboard is notified of."""
    repository = rng.choice(repositories)
    number = serial()
    kind = rng.choice(["push", "move", "retag", "retag", "delete"])
    try:
        if kind == "push":
            pusher.push_image(repository, [f"ext-{number}"], unique=f"ext-{number}", layers=1, layer_size=512)
        elif kind == "move":
            pusher.push_image(repository, [rng.choice(MOVING_TAGS)], unique=f"ext-{number}", layers=1, layer_size=512)
        else:
            tags = pusher.tags(repository)
            if not tags:
                return
            source = rng.choice(tags)
            if kind == "delete":
                digest = pusher.head_digest(repository, source)
                if digest is not None:
                    pusher.delete_manifest(repository, digest)
            else:
                pusher.copy_tag(repository, source, rng.choice([*MOVING_TAGS, *tags]))
    except (requests.RequestException, RuntimeError) as exc:
        # Racing the dashboard's deletes: what it read may be gone. Not an error of the dashboard.
        with tally.lock:
            tally.external[f"{kind} lost a race"] += 1
        if "-> 5" in str(exc):
            tally.count("external", str(exc))
        return
    with tally.lock:
        tally.external[kind] += 1


class NotificationRelay:
    """Passes the registry's notifications on to the dashboard, without the other client's
    events: its changes reach the dashboard only through syncs, as skopeo's do when the
    registry's notifications are off or lost."""

    def __init__(self, target: str) -> None:
        relay = self
        self.target = target
        self.dropped = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                envelope = json.loads(body)
                events = envelope.get("events") or []
                kept = [event for event in events if event.get("request", {}).get("useragent") != EXTERNAL_AGENT]
                relay.dropped += len(events) - len(kept)
                status = 200
                if kept:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    answer = requests.post(relay.target, data=json.dumps({**envelope, "events": kept}), headers=headers, timeout=TIMEOUT)
                    status = answer.status_code
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wrong_deletions(log: list[Seen], audits: list[dict]) -> tuple[int, list[str], list[str]]:
    """(writes checked, wrong, in the window): the dashboard's writes replayed against the
    registry's state.
    Each is paired with its audit entry (per repository and tag or digest, in order): a tag
    removed or overwritten must have pointed at the digest the entry says the user was shown."""
    pending: dict[tuple, list[dict]] = defaultdict(list)
    for row in audits:
        # The entries whose action wrote: done, or a restore that another client overtook.
        wrote = row["outcome"] == "ok" and "nothing was changed" not in row["reason"]
        if not (wrote or "right after" in row["reason"]):
            continue
        if row["action"] == "delete_version":
            pending["version", row["repository"], row["digest_before"]].append(row)
        else:
            pending[row["action"], row["repository"], row["tag"]].append(row)
    model = RegistryModel()
    tombstones: dict[str, str] = {}  # digest -> the tag put on it
    wrong: list[str] = []
    window: list[str] = []
    checked = 0
    for index, seen in enumerate(log):
        write = model.step(index, seen)
        if write is None or not write.ours:
            continue
        checked += 1
        where = f"#{index} {write.repository}"
        if seen.method == "PUT":
            action = "delete_tag" if is_tombstone(seen.body) else "restore"
            if action == "delete_tag":
                tombstones[write.digest] = write.reference
            rows = pending[action, write.repository, write.reference]
            if not rows:
                wrong.append(f"{where}: PUT {write.reference} without an audit entry")
                continue
            row = rows.pop(0)
            if write.before != row["digest_before"]:
                what = f"{where}: {action} {write.reference} was on {write.before}, shown on {row['digest_before']}"
                (window if model.moved_unseen(write.repository, write.reference) else wrong).append(what)
            continue
        if write.reference in tombstones:
            shown = {tombstones[write.reference]}
        else:
            rows = pending["version", write.repository, write.reference]
            if not rows:
                wrong.append(f"{where}: DELETE {write.reference} without an audit entry")
                continue
            listed = rows.pop(0)["reason"].split("tags: ", 1)[-1].split(";")[0]
            shown = set() if listed == "none" else set(listed.split(", "))
        for tag in sorted(set(write.removed) - shown):
            what = f"{where}: deleting {write.reference} took {tag} along, shown {sorted(shown)}"
            (window if model.moved_unseen(write.repository, tag, listing=True) else wrong).append(what)
    return checked, wrong, window


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
    parser.add_argument("--no-external", action="store_true", help="without the other client (and the final sync)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="registry-browser-soak-"))
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{scratch / 'soak.sqlite3'}"
    registry_port = free_port()
    proxy = FaultProxy(f"http://127.0.0.1:{registry_port}", serialize=True)
    secret, password = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    env = production_env(proxy.url, args.repos, 0) | {
        "DASHBOARD_PUBLIC_READ": "false",
        "REGISTRY_NOTIFICATIONS_SECRET": secret,
        "REGISTRY_READ_TIMEOUT": "5",
    }
    repositories = [f"soak/app-{i:02d}" for i in range(args.repos)]
    tally = Tally()
    registry = worker = relay = None
    worker_log = ""
    try:
        # First: with DEBUG off, every command's system checks want the static files manifest.
        manage(database_url, "collectstatic", "--noinput", **env)
        manage(database_url, "migrate", "--noinput", **env)
        make_user = MAKE_USER.format(username=USERNAME, password=password)
        token = shell(database_url, make_user, **env).strip()
        worker = start_manage(
            database_url, "db_worker", "--no-reload", "--interval", "0.5", log=scratch / "worker.log", **env
        )
        with gunicorn(database_url, scratch / "gunicorn.log", workers=2, **env) as server:
            relay = NotificationRelay(f"{server.url}/hooks/registry/")
            registry = start_registry(
                scratch / "registry", port=registry_port, notify_url=relay.url, notify_headers={SECRET_HEADER: secret}
            )
            pusher = ImagePusher(proxy.url)
            other = ImagePusher(proxy.url)
            other.session.headers["User-Agent"] = EXTERNAL_AGENT
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
            if not args.no_external:
                steps.append((1.0, lambda rng: external(other, repositories, rng, tally, serial)))
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

            if not args.no_external:
                # The periodic sync: how the other client's changes, never notified, reach the cache.
                manage(database_url, "sync_registry", **env)
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
        audit_rows = json.loads(shell(database_url, AUDIT_ROWS.format(actions=AUDITED_ACTIONS), **env))
    finally:
        proxy.stop()
        if relay is not None:
            relay.stop()
        if worker is not None:
            stop_process(worker, timeout=30)
            worker_log = (scratch / "worker.log").read_text()
        if registry is not None:
            registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    audits = Counter(f"{row['action']} {row['outcome']}" for row in audit_rows)
    audit_total = {action: sum(row["action"] == action for row in audit_rows) for action in AUDITED_ACTIONS}
    checked, wrong, window = wrong_deletions(proxy.seen(), audit_rows)
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
        "external_client": dict(sorted(tally.external.items())),
        "external_events_dropped": relay.dropped if relay is not None else 0,
        "registry_requests": len(proxy.seen()),
        "dashboard_writes_checked": checked,
        "wrong_deletions": wrong,
        "overtaken_in_the_window": window,
        "cached_tags_at_end": cached_tags,
        "drift": differences,
        "settle_seconds": round(settled, 1),
        "actions_taken": dict(tally.audited),
        "audit_entries": audit_total,
        "audit_outcomes": dict(sorted(audits.items())),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    audit_matches = audit_total == {action: tally.audited[action] for action in AUDITED_ACTIONS}
    healthy = not (result["errors"] or result["server_5xx"] or result["logged_errors"] or differences or wrong)
    healthy = healthy and audit_matches
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

"""Restarts and outages: lost notifications, a sync killed mid-way, the database going away.

The registry is always real; only the database outage is simulated (a query wrapper raising
OperationalError), since what matters there is how our code handles the error.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import Client
from django.urls import reverse

from dashboard.models import Manifest, Repository, Tag, TagHistory
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from tests.personas import make_user
from tests.support.deployment import dump_cache, manage, process_database, start_manage
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer, start_registry

SECRET = "restart-test-secret"
# Generous: the registry delivers notifications from a background queue with backoff.
WAIT = 30.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def registry_state(pusher: ImagePusher, repositories: list[str]) -> dict[str, dict[str, str]]:
    """repository -> tag -> digest, read from the registry itself."""
    return {
        name: {tag: pusher.head_digest(name, tag) for tag in pusher.tags(name)} for name in repositories
    }


def cache_state(repositories: list[str]) -> dict[str, dict[str, str]]:
    return {
        name: dict(Tag.objects.filter(repository__name=name).values_list("name", "manifest__digest"))
        for name in repositories
    }


# Lost notifications -------------------------------------------------------------------------


def delivered(proxy: FaultProxy, repository: str, tag: str) -> bool:
    """Whether the dashboard answered 200 to the push event of repository:tag. Its answer comes
    after the push is applied, so the cache has it by then."""
    for seen in proxy.seen("POST"):
        if seen.status != 200:
            continue
        for event in json.loads(seen.body)["events"]:
            target = event["target"]
            if event["action"] == "push" and (target["repository"], target.get("tag")) == (repository, tag):
                return True
    return False


@pytest.fixture
def hook_proxy(live_server) -> Iterator[FaultProxy]:
    """Between the registry and the dashboard's webhook, so deliveries can be made to fail."""
    proxy = FaultProxy(live_server.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def notifying_registry(tmp_path: Path, hook_proxy: FaultProxy) -> Iterator[RegistryServer]:
    server = start_registry(
        tmp_path / "registry",
        notify_url=hook_proxy.url + reverse("dashboard:registry-events"),
        notify_headers={"X-Registry-Secret": SECRET},
    )
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_notifications_lost_in_a_registry_restart_are_repaired_by_the_periodic_sync(
    settings, notifying_registry: RegistryServer, hook_proxy: FaultProxy, make_repo_name
) -> None:
    settings.REGISTRY_URL = notifying_registry.url
    settings.REGISTRY_NOTIFICATIONS_SECRET = SECRET
    pusher = ImagePusher(notifying_registry.url)
    names = [make_repo_name("lost/") for _ in range(3)]

    # Polling the cache instead would contend with the webhook for SQLite's in-memory test database.
    pusher.push_image(names[0], ["1.0"], unique="first")
    wait_until(lambda: delivered(hook_proxy, names[0], "1.0"), "the first push's notification")
    assert cache_state(names[:1]) == registry_state(pusher, names[:1])

    # Deliveries fail while these are pushed, so the registry queues them in memory...
    hook_proxy.set_fault(Fault("status", status=503, methods={"POST"}))
    pusher.push_image(names[0], ["2.0"], unique="second")
    pusher.push_image(names[1], ["1.0"], unique="third")
    wait_until(lambda: hook_proxy.count("POST") > 0, "a failed delivery")
    # ...and lose them when it restarts.
    notifying_registry.restart()
    hook_proxy.clear_fault()
    pusher.push_image(names[2], ["1.0"], unique="fourth")
    wait_until(lambda: delivered(hook_proxy, names[2], "1.0"), "the push after the restart")

    expected = registry_state(pusher, names)
    lost = {names[0]: {"1.0": expected[names[0]]["1.0"]}, names[1]: {}, names[2]: expected[names[2]]}
    assert cache_state(names) == lost
    call_command("sync_registry")
    assert cache_state(names) == expected


# A sync killed mid-way ----------------------------------------------------------------------

KILLED_REPOSITORIES = 16


@pytest.fixture(scope="module")
def busy_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, list[str]]]:
    """A registry of its own holding KILLED_REPOSITORIES repositories of three tags each."""
    server = start_registry(tmp_path_factory.mktemp("busy-registry"))
    pusher = ImagePusher(server.url)
    names = [f"busy/app-{i:02d}" for i in range(KILLED_REPOSITORIES)]
    for name in names:
        pusher.push_image(name, ["1.0", "latest"], unique=name, layers=1)
        pusher.push_image(name, ["2.0"], unique=f"{name}-2", layers=1)
    yield server, names
    server.stop()


def test_a_sync_killed_mid_way_is_completed_by_the_next_run_without_duplicates(
    tmp_path: Path, busy_registry: tuple[RegistryServer, list[str]]
) -> None:
    server, names = busy_registry
    pusher = ImagePusher(server.url)
    proxy = FaultProxy(server.url)
    try:
        # Slow answers stretch the sync, so the kill lands while repositories are being written.
        proxy.set_fault(Fault("latency", delay=0.1, path=r"/manifests/"))
        with process_database(tmp_path) as database:
            sync = start_manage(database, "sync_registry", "--workers", "2", REGISTRY_URL=proxy.url)
            try:
                wait_until(lambda: proxy.count("GET", r"/tags/list$") >= KILLED_REPOSITORIES // 2, "half the tag lists")
            finally:
                os.kill(sync.pid, signal.SIGKILL)
                sync.communicate()
            partial = dump_cache(database)
            proxy.clear_fault()
            manage(database, "sync_registry", REGISTRY_URL=proxy.url)
            complete = dump_cache(database)
    finally:
        proxy.stop()

    assert 0 < len(partial["tags"]) < KILLED_REPOSITORIES, "the kill did not land mid-sync"
    assert complete["tags"] == registry_state(pusher, names)
    assert complete["duplicate_manifests"] == 0
    open_periods = sorted((p["repository__name"], p["tag"], p["digest"]) for p in complete["open_periods"])
    expected = sorted((name, tag, digest) for name, tags in complete["tags"].items() for tag, digest in tags.items())
    assert open_periods == expected


# The database going away --------------------------------------------------------------------


def _refuse(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """A connection.execute_wrapper for a database that answers nothing."""
    raise OperationalError("database is locked")


@pytest.mark.django_db
def test_while_the_database_is_down_pages_answer_503_readiness_fails_and_the_registry_is_untouched(
    settings, client: Client, registry: RegistryServer, pusher: ImagePusher, repo_name: str
) -> None:
    settings.REGISTRY_URL = registry.url
    image = pusher.push_image(repo_name, ["1.0", "latest"])
    cache = configured_registry()
    sync_registry(cache, client_for(cache), repository=repo_name)
    client.force_login(make_user("db-outage", superuser=True))
    client.raise_request_exception = False
    pages = [
        reverse("dashboard:catalog"),
        reverse("dashboard:repository", args=[repo_name]),
        reverse("dashboard:tag", args=[repo_name, "1.0"]),
        reverse("dashboard:audit"),
    ]

    with connection.execute_wrapper(_refuse):
        answers = [client.get(url) for url in pages]
        delete = client.post(reverse("dashboard:delete-tag", args=[repo_name, "1.0"]), {"digest": image.digest})
        refresh = client.post(reverse("dashboard:catalog-refresh"))
        ready = client.get("/readyz")
        alive = client.get("/healthz")

    for response in [*answers, delete, refresh]:
        assert response.status_code == 503
        assert response["Retry-After"]
        assert "cannot reach its database" in response.content.decode()
    assert (ready.status_code, ready.json()) == (503, {"database": "unavailable"})
    assert alive.status_code == 200
    assert pusher.tags(repo_name) == ["1.0", "latest"]
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_a_database_failure_mid_sync_writes_nothing_of_that_repository(
    settings, registry: RegistryServer, pusher: ImagePusher, repo_name: str
) -> None:
    settings.REGISTRY_URL = registry.url
    pusher.push_image(repo_name, ["1.0", "latest"], unique="one")
    pusher.push_image(repo_name, ["2.0"], unique="two")
    cache = configured_registry()

    def fail_on_tags(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        # Manifests and history are written by then: the failure comes half-way through.
        if sql.startswith('INSERT INTO "dashboard_tag"'):
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_on_tags), pytest.raises(OperationalError):
        sync_registry(cache, client_for(cache), repository=repo_name)

    assert not Manifest.objects.filter(repository__name=repo_name).exists()
    assert not TagHistory.objects.filter(repository__name=repo_name).exists()
    assert not Tag.objects.filter(repository__name=repo_name).exists()
    sync_registry(cache, client_for(cache), repository=repo_name)
    assert cache_state([repo_name]) == registry_state(pusher, [repo_name])
    assert Repository.objects.get(name=repo_name).tag_count == 3

"""Background work: tasks on the immediate backend, a real worker process, and concurrency.

Concurrency is tested with real processes on a real database file (or PostgreSQL database)
and the real registry: two syncs of one repository at once, and one notification delivered to
two web replicas at once, must leave one consistent cache.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
import requests
from django.core.management import call_command
from django.urls import reverse
from django.utils.html import escape
from django_tasks_db.models import DBTaskResult

from dashboard.models import AccessRule, AuditEntry, Repository, RetentionPolicy, Role, Tag, TaskProgress
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from dashboard.tasks import apply_retention_task, enqueue_sync, sync_registry_task, sync_repository_task
from tests.personas import make_user
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.deployment import dump_cache, gunicorn, manage, process_database, shell, start_manage
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer, free_port, start_registry



@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> RegistryServer:
    """A registry of this module's own, so a full sync reads only what these tests pushed."""
    server = start_registry(tmp_path_factory.mktemp("tasks-registry"))
    yield server
    server.stop()


@pytest.fixture
def own_pusher(own_registry: RegistryServer) -> ImagePusher:
    return ImagePusher(own_registry.url)


@pytest.fixture
def database_tasks(settings) -> None:
    """Queue tasks in the test database, as production does, instead of running them inline."""
    # Through the settings fixture: mixed with override_settings, a stale TASKS would outlive the test.
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def assert_consistent(cache: dict, repository: str, expected: dict[str, str]) -> None:
    """Exactly the registry's tags, one open history period each, no duplicated manifest."""
    assert cache["tags"][repository] == expected
    periods = sorted((p["tag"], p["digest"]) for p in cache["open_periods"] if p["repository__name"] == repository)
    assert periods == sorted(expected.items())
    assert cache["duplicate_manifests"] == 0


@pytest.mark.django_db
def test_sync_tasks_fill_the_cache_on_the_immediate_backend(settings, own_registry, own_pusher, make_repo_name):
    settings.REGISTRY_URL = own_registry.url
    first, second = make_repo_name("team/"), make_repo_name()
    image = own_pusher.push_image(first, tags=("1.0", "latest"))
    own_pusher.push_image(second, tags=("2.0",))

    result = sync_repository_task.enqueue(first)
    assert result.status == "SUCCESSFUL"
    assert result.return_value["tags"] == 2
    assert set(Tag.objects.filter(repository__name=first).values_list("manifest__digest", flat=True)) == {image.digest}
    assert not Repository.objects.filter(name=second).exists()

    result = sync_registry_task.enqueue()
    assert result.status == "SUCCESSFUL", result.errors
    assert result.return_value["failed"] == {}
    assert Tag.objects.get(repository__name=second, name="2.0")
    progress = TaskProgress.objects.get(task_id=result.id)
    assert progress.done == progress.total == Repository.objects.filter(registry__url=own_registry.url).count()


@pytest.mark.django_db
def test_a_failed_sync_task_is_reported_as_failed(settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = sync_registry_task.enqueue()
    assert result.status == "FAILED"
    assert "Unavailable" in result.errors[0].exception_class_path


@pytest.mark.django_db
def test_the_retention_task_applies_a_policy(settings, registry, pusher, repo_name):
    settings.REGISTRY_URL = registry.url
    images = [
        pusher.push_image(repo_name, tags=(f"1.{day}",), created=datetime(2025, 1, day + 1, tzinfo=UTC), unique=str(day))
        for day in range(3)
    ]
    sync_repository_task.enqueue(repo_name)
    policy = RetentionPolicy.objects.create(name=repo_name, repository_pattern=repo_name, keep_newest=1)

    admin = make_user("retention-admin", superuser=True)

    result = apply_retention_task.enqueue(policy.pk, admin.pk)

    assert result.status == "SUCCESSFUL", result.errors
    assert result.return_value == {"ok": 2, "refused": 0, "failed": 0}
    audited = AuditEntry.objects.filter(repository=repo_name, user=admin, outcome=AuditEntry.Outcome.OK)
    assert set(audited.values_list("digest_before", flat=True)) == {images[0].digest, images[1].digest}
    assert pusher.tags(repo_name) == ["1.2"]
    assert pusher.head_digest(repo_name, "1.2") == images[-1].digest


@pytest.mark.django_db
def test_the_retention_task_deletes_attachments_when_its_policy_says_so(settings, registry, pusher, repo_name):
    from tests.support import supplychain as sc

    settings.REGISTRY_URL = registry.url
    old, new = (
        pusher.push_image(repo_name, tags=(f"1.{day}",), created=datetime(2025, 1, day + 1, tzinfo=UTC), unique=str(day))
        for day in range(2)
    )
    signature = sc.push_signature(pusher, repo_name, old.digest, sc.make_key(), f"{registry.host}/{repo_name}")
    sync_repository_task.enqueue(repo_name)
    policy = RetentionPolicy.objects.create(
        name=repo_name, repository_pattern=repo_name, keep_newest=1, delete_attachments=True
    )

    result = apply_retention_task.enqueue(policy.pk, make_user("retention-admin", superuser=True).pk)

    assert result.status == "SUCCESSFUL", result.errors
    assert pusher.tags(repo_name) == ["1.1"]
    assert pusher.head_digest(repo_name, signature) is None and pusher.head_digest(repo_name, "1.1") == new.digest


# Committed for real: the worker closes its connection between tasks, which would end the
# transaction an ordinary test runs in (PostgreSQL).
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("database_tasks")
def test_the_task_page_polls_until_a_queued_sync_is_done(client, settings, registry, pusher, repo_name):
    settings.REGISTRY_URL = registry.url
    image = pusher.push_image(repo_name, tags=("1.0",))
    client.force_login(make_user("operator", superuser=True))

    result = enqueue_sync(repo_name)
    url = f"/tasks/{result.id}/"

    page = client.get(url)
    assert page.status_code == 200
    assert page["Vary"] and "HX-Request" in page["Vary"]
    text = page.content.decode()
    assert f"Sync of {repo_name}" in text
    assert "waiting for a worker" in text
    # Polls with htmx, and the same URL works as a plain link.
    assert f'hx-get="{url}" hx-trigger="every 1s"' in text
    assert f'<a href="{url}">' in text

    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)

    fragment = client.get(url, HTTP_HX_REQUEST="true")
    text = fragment.content.decode()
    assert "<html" not in text
    assert "Done: 1 repositories, 1 tags" in text
    assert "hx-trigger" not in text, "polling must stop once the task is done"
    assert Tag.objects.get(repository__name=repo_name, name="1.0").manifest.digest == image.digest


@pytest.mark.django_db
@pytest.mark.usefixtures("database_tasks")
def test_a_task_on_a_hidden_repository_is_not_found(client, settings, registry, repo_name):
    settings.REGISTRY_URL = registry.url
    result = enqueue_sync(repo_name)
    client.force_login(make_user("outsider", pattern="someone-else/*", role=10))
    assert client.get(f"/tasks/{result.id}/").status_code == 404
    assert client.get("/tasks/00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.django_db
def test_on_the_immediate_backend_a_sync_is_done_when_enqueued(settings, registry, repo_name, pusher):
    settings.REGISTRY_URL = registry.url
    pusher.push_image(repo_name, tags=("1.0",))
    result = enqueue_sync(repo_name)
    assert result.status == "SUCCESSFUL"
    assert result.return_value["tags"] == 1


def test_a_worker_process_runs_a_queued_sync_that_the_command_line_follows(tmp_path, own_registry, own_pusher, make_repo_name):
    name = make_repo_name()
    image = own_pusher.push_image(name, tags=("1.0", "1.1"))
    env = {"REGISTRY_URL": own_registry.url}
    with process_database(tmp_path) as database_url:
        enqueue = f"from dashboard.tasks import enqueue_sync; print(enqueue_sync({name!r}).id)"
        task_id = shell(database_url, enqueue, **env).strip()
        assert "ready" in manage(database_url, "task_status", task_id, **env).stdout

        worker = start_manage(database_url, "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.2", **env)
        try:
            followed = manage(database_url, "task_status", task_id, "--follow", timeout=60, **env)
        finally:
            worker.terminate()
            worker.wait(timeout=20)

        assert followed.stdout.splitlines()[-1].startswith(
            f"Sync of {name}: successful, 1/1 repositories (1 repositories, 2 tags, 1 new manifests"
        )
        assert_consistent(dump_cache(database_url), name, {"1.0": image.digest, "1.1": image.digest})


def test_two_syncs_of_one_repository_at_once_leave_one_consistent_cache(tmp_path, own_registry, own_pusher, make_repo_name):
    name = make_repo_name()
    expected = {}
    for index in range(6):
        pushed = own_pusher.push_image(name, tags=(f"1.{index}",), unique=f"v{index}")
        expected[f"1.{index}"] = pushed.digest
    env = {"REGISTRY_URL": own_registry.url}
    with process_database(tmp_path) as database_url:
        syncs = [start_manage(database_url, "sync_registry", "--repository", name, **env) for _ in range(2)]
        outputs = [process.communicate(timeout=120) for process in syncs]
        for process, (stdout, stderr) in zip(syncs, outputs, strict=True):
            assert process.returncode == 0, stderr
            assert "1 repositories, 6 tags" in stdout

        # One tag moves and one disappears; two more concurrent syncs must agree on that too.
        moved = own_pusher.push_image(name, tags=("1.0",), unique="moved")
        expected["1.0"] = moved.digest
        syncs = [start_manage(database_url, "sync_registry", "--repository", name, **env) for _ in range(2)]
        for process in syncs:
            process.communicate(timeout=120)
            assert process.returncode == 0

        assert_consistent(dump_cache(database_url), name, expected)



def push_envelope(event_id: str, repository: str, tag: str, image) -> bytes:
    """A push event as Distribution 2.8 sends it (see FACTS.md, notifications)."""
    event = {
        "id": event_id,
        "timestamp": "2026-01-01T12:00:00.000000000Z",
        "action": "push",
        "target": {
            "mediaType": image.media_type,
            "size": len(image.raw),
            "digest": image.digest,
            "length": len(image.raw),
            "repository": repository,
            "tag": tag,
        },
        "request": {"id": "r1", "addr": "127.0.0.1", "host": "registry", "method": "PUT", "useragent": "docker/27"},
    }
    return json.dumps({"events": [event]}).encode()


def test_one_notification_delivered_to_two_replicas_at_once_is_applied_once(
    tmp_path, own_registry, own_pusher, make_repo_name
):
    name = make_repo_name()
    image = own_pusher.push_image(name, tags=("1.0",))
    secret = "replica-test-secret"
    env = {"REGISTRY_URL": own_registry.url, "REGISTRY_NOTIFICATIONS_SECRET": secret}
    envelope = push_envelope(f"event-{name}", name, "1.0", image)
    headers = {"X-Registry-Secret": secret, "Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    with process_database(tmp_path) as database_url:
        with gunicorn(database_url, tmp_path / "a.log", **env) as first, gunicorn(
            database_url, tmp_path / "b.log", **env
        ) as second:
            with ThreadPoolExecutor(2) as pool:
                answers = list(
                    pool.map(
                        lambda url: requests.post(f"{url}/hooks/registry/", data=envelope, headers=headers, timeout=60),
                        [first.url, second.url],
                    )
                )
        assert [answer.status_code for answer in answers] == [200, 200]
        # One replica took the event; the other saw its id and left it alone.
        assert sorted(answer.json()["pushes"] for answer in answers) == [0, 1]

        manage(database_url, "db_worker", "--batch", "--no-startup-delay", "--no-reload", **env)
        counts = shell(
            database_url,
            "from dashboard.models import NotificationEvent; from django_tasks_db.models import DBTaskResult; "
            "print(NotificationEvent.objects.count(), DBTaskResult.objects.successful().count())",
        )
        assert counts.split() == ["1", "1"]
        assert_consistent(dump_cache(database_url), name, {"1.0": image.digest})


# Refresh on the database backend: queued, followed, swapped in ------------------------------

HTMX_ON = {"HX-Request": "true"}


def page_headers(page: str, target: str) -> dict[str, str]:
    """What htmx sends from a page: its URL (with the live query) and the element it swaps."""
    return HTMX_ON | {"HX-Target": target, "HX-Current-URL": f"http://testserver{page}"}


def tag_names_in(html: str) -> list[str]:
    return re.findall(r'class="tag-link" href="[^"]+">([^<]+)</a>', html)


def run_queued_tasks() -> None:
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)


def sync_now(name: str | None = None) -> None:
    """Fill the cache directly: on the database backend a task would only be queued."""
    registry = configured_registry()
    with client_for(registry) as client:
        sync_registry(registry, client, repository=name)


@pytest.fixture
def cached_repository(database_tasks, settings, registry, pusher, repo_name) -> str:
    """A repository with its tag 1.0 in the cache, on the database task backend."""
    settings.REGISTRY_URL = registry.url
    pusher.push_image(repo_name, tags=("1.0",))
    sync_now(repo_name)
    return repo_name


@pytest.mark.django_db(transaction=True)
def test_a_refresh_queues_one_sync_and_the_finished_poll_swaps_in_the_fresh_table(client, cached_repository, pusher):
    repo_name = cached_repository
    pusher.push_image(repo_name, tags=("1.1",), unique="newer")
    client.force_login(make_user("viewer", pattern=repo_name, role=Role.VIEWER))
    page = f"/repositories/{repo_name}/?sort=name"
    refresh = reverse("dashboard:repository-refresh", args=[repo_name])

    first = client.post(refresh, headers=page_headers(page, "tag-results"))
    second = client.post(refresh, headers=page_headers(page, "tag-results"))

    task = DBTaskResult.objects.get()  # exactly one sync queued
    assert task.args_kwargs["args"] == [repo_name]
    status_url = f"/tasks/{task.id}/?{urlencode({'next': page})}"
    for response in (first, second):
        html = response.content.decode()
        assert response.status_code == 200 and "<html" not in html
        assert '<div id="refresh-progress"' in html
        # Polls the task every second, and the same URL opens as a page without htmx.
        assert f'hx-get="{status_url}" hx-trigger="every 1s"' in html
        assert f'href="{status_url}"' in html
        assert f"Sync of {repo_name}" in html and "waiting for a worker" in html
        assert tag_names_in(html) == ["1.0"], "the cached rows stay visible under the progress"
        assert 'id="repository-facts"' not in html
    assert "Already queued or running" not in first.content.decode()
    assert "Already queued or running" in second.content.decode()

    waiting = client.get(status_url, headers=page_headers(page, "refresh-progress"))
    assert '<div id="refresh-progress"' in waiting.content.decode(), "the poll keeps its element's id"
    run_queued_tasks()
    done = client.get(status_url, headers=page_headers(page, "refresh-progress"))

    html = done.content.decode()
    assert done.status_code == 200
    assert done["HX-Retarget"] == "#tag-results" and done["HX-Reswap"] == "innerHTML"
    assert "HX-Target" in done["Vary"]
    assert tag_names_in(html) == ["1.0", "1.1"]
    assert "Refreshed from the registry just now" in html
    # The page head's counts and "synced" date, swapped in place out of band.
    facts = html[html.index('<p id="repository-facts"') :]
    facts = facts[: facts.index("</p>")]
    assert 'hx-swap-oob="true"' in facts and "2 tags" in facts and "just now</time>" in facts
    assert "every 1s" not in html
    # The task page itself still shows how it ended.
    assert "Done: 1 repositories, 2 tags" in client.get(status_url, headers=HTMX_ON).content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("database_tasks")
def test_a_catalog_refresh_runs_a_full_sync_and_shows_the_new_repository(
    client, settings, own_registry, own_pusher, make_repo_name
):
    settings.REGISTRY_URL = own_registry.url
    sync_now()
    name = make_repo_name("new/")
    own_pusher.push_image(name, tags=("1.0",))
    client.force_login(make_user("catalog-viewer", superuser=True))
    page = f"/?{urlencode({'q': name})}"

    queued = client.post(reverse("dashboard:catalog-refresh"), headers=page_headers(page, "catalog-results"))
    task = DBTaskResult.objects.get()
    assert "Sync of the whole registry" in queued.content.decode()
    assert f"/repositories/{name}/" not in queued.content.decode()
    run_queued_tasks()
    done = client.get(f"/tasks/{task.id}/", headers=page_headers(page, "refresh-progress"))

    html = done.content.decode()
    assert done["HX-Retarget"] == "#catalog-results"
    assert f'href="/repositories/{name}/"' in html
    assert "Refreshed from the registry just now" in html
    assert 'id="registry-status" class="panel status-panel" aria-labelledby="registry-status-title" hx-swap-oob="true"' in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("database_tasks")
def test_a_failed_queued_refresh_shows_the_error_and_the_cached_rows(client, settings, registry, pusher, repo_name):
    proxy = FaultProxy(registry.url)
    try:
        settings.REGISTRY_URL = proxy.url
        pusher.push_image(repo_name, tags=("1.0",))
        sync_now(repo_name)
        client.force_login(make_user("operator-down", superuser=True))
        page = f"/repositories/{repo_name}/"
        client.post(reverse("dashboard:repository-refresh", args=[repo_name]), headers=page_headers(page, "tag-results"))
        proxy.refuse_connections()
        run_queued_tasks()
        done = client.get(f"/tasks/{DBTaskResult.objects.get().id}/", headers=page_headers(page, "refresh-progress"))
    finally:
        proxy.stop()

    html = done.content.decode()
    assert f"Could not refresh from {proxy.url}: Cannot connect" in html
    assert "Showing the data cached before" in html
    assert tag_names_in(html) == ["1.0"]
    # The notices above the filters are swapped too: the registry is now known to be down.
    assert '<div id="notices" hx-swap-oob="true">' in html and "is unreachable" in html


@pytest.mark.django_db
@pytest.mark.usefixtures("database_tasks")
def test_refreshing_a_hidden_repository_is_not_found_and_queues_nothing(
    client, settings, registry, pusher, make_repo_name
):
    settings.REGISTRY_URL = registry.url
    hidden = make_repo_name("secret/")
    pusher.push_image(hidden, tags=("1.0",))
    sync_now(hidden)
    client.force_login(make_user("outsider-refresh", pattern="open/*", role=Role.VIEWER))

    for headers in ({}, page_headers(f"/repositories/{hidden}/", "tag-results")):
        assert client.post(reverse("dashboard:repository-refresh", args=[hidden]), headers=headers).status_code == 404
    assert not DBTaskResult.objects.exists()
    assert not TaskProgress.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_refresh_without_javascript_goes_to_the_task_page_and_back(client, cached_repository):
    repo_name = cached_repository
    client.force_login(make_user("no-js", superuser=True))
    refresh = reverse("dashboard:repository-refresh", args=[repo_name])

    response = client.post(f"{refresh}?sort=name")
    again = client.post(f"{refresh}?sort=name", follow=True)

    page = f"/repositories/{repo_name}/?sort=name"
    task = DBTaskResult.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/tasks/{task.id}/?{urlencode({'next': page})}"
    assert "was already under way: following it" in again.content.decode()
    run_queued_tasks()
    html = client.get(response["Location"]).content.decode()
    assert "Done: 1 repositories, 1 tags" in html
    assert f'<a class="button" href="{escape(page)}">Show the refreshed page</a>' in html


@pytest.mark.django_db
@pytest.mark.usefixtures("database_tasks")
@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_the_task_page_ignores_a_next_on_another_site(client, settings, registry, repo_name, next_url):
    settings.REGISTRY_URL = registry.url
    result = enqueue_sync(repo_name)
    client.force_login(make_user("follower", superuser=True))

    html = client.get(f"/tasks/{result.id}/", {"next": next_url}).content.decode()

    assert f'href="{escape(next_url)}"' not in html
    assert '<a href="/">Back to the repositories</a>' in html


def _refresh_failing_on(client, settings, own_registry, own_pusher, make_repo_name, *, hidden_only: bool):
    """Refresh as a viewer of open/* while tags/list fails for a hidden repository (and, unless
    `hidden_only`, for a visible one); the page and both names."""
    hidden, visible = make_repo_name("secret/"), make_repo_name("open/")
    for name in (hidden, visible):
        own_pusher.push_image(name, tags=("1.0",))
    failing = re.escape(hidden) if hidden_only else f"({re.escape(hidden)}|{re.escape(visible)})"
    proxy = FaultProxy(own_registry.url)
    try:
        settings.REGISTRY_URL = proxy.url
        proxy.set_fault(Fault("status", status=500, path=rf"/v2/{failing}/tags/list"))
        client.force_login(make_user("open-viewer", pattern="open/*", role=Role.VIEWER))
        response = client.post(reverse("dashboard:catalog-refresh"), headers=page_headers("/", "catalog-results"))
    finally:
        proxy.stop()
    return response.content.decode(), hidden, visible


@pytest.mark.django_db
def test_a_partly_failed_refresh_names_and_counts_only_the_repositories_the_user_may_see(
    client, settings, own_registry, own_pusher, make_repo_name
):
    html, hidden, visible = _refresh_failing_on(
        client, settings, own_registry, own_pusher, make_repo_name, hidden_only=False
    )

    assert escape(f"1 of the registry's repositories could not be read ({visible}).") in html
    assert hidden not in html


@pytest.mark.django_db
def test_a_refresh_that_failed_only_on_hidden_repositories_says_nothing_of_them(
    client, settings, own_registry, own_pusher, make_repo_name
):
    html, hidden, visible = _refresh_failing_on(
        client, settings, own_registry, own_pusher, make_repo_name, hidden_only=True
    )

    assert visible in html
    assert "could not be read" not in html
    assert hidden not in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("database_tasks")
def test_the_poll_ends_on_a_notice_when_the_refreshed_repository_left_the_cache(
    client, settings, own_registry, make_repo_name
):
    settings.REGISTRY_URL = own_registry.url
    # Cached, but no longer in the registry (its storage was wiped): the next full sync drops it.
    ghost = make_repo_name("wiped/")
    Repository.objects.create(registry=configured_registry(), name=ghost)
    client.force_login(make_user("ghost-viewer", pattern="wiped/*", role=Role.VIEWER))
    page = f"/repositories/{ghost}/"
    client.post(reverse("dashboard:repository-refresh", args=[ghost]), headers=page_headers(page, "tag-results"))
    run_queued_tasks()
    sync_now()
    assert not Repository.objects.filter(name=ghost).exists()

    task = DBTaskResult.objects.get()
    done = client.get(f"/tasks/{task.id}/?{urlencode({'next': page})}", headers=page_headers(page, "refresh-progress"))

    html = done.content.decode()
    assert done.status_code == 200, "htmx swaps nothing on a 404, and would poll for ever"
    assert done["HX-Retarget"] == "#tag-results" and done["HX-Reswap"] == "innerHTML"
    assert "This repository is no longer in the cache" in html and '<a href="/">back to the catalog</a>' in html
    assert "hx-trigger" not in html


@pytest.mark.django_db
def test_a_poll_that_may_no_longer_see_the_task_gets_the_same_404_and_leaves(client, cached_repository):
    repo_name = cached_repository
    viewer = make_user("revoked-viewer", pattern=repo_name, role=Role.VIEWER)
    client.force_login(viewer)
    page = f"/repositories/{repo_name}/"
    client.post(reverse("dashboard:repository-refresh", args=[repo_name]), headers=page_headers(page, "tag-results"))
    query = urlencode({"next": page})
    poll = f"/tasks/{DBTaskResult.objects.get().id}/?{query}"
    assert client.get(poll, headers=page_headers(page, "refresh-progress")).status_code == 200

    def answers() -> list[tuple]:
        polls = (poll, f"/tasks/00000000-0000-0000-0000-000000000000/?{query}")
        responses = [client.get(url, headers=page_headers(page, "refresh-progress")) for url in polls]
        return [(r.status_code, r.content, r.get("HX-Redirect")) for r in responses]

    # The viewer's access is removed while the page polls; another user never had it.
    AccessRule.objects.filter(group__user=viewer).delete()
    revoked, unknown = answers()
    client.force_login(make_user("never-saw-it", pattern="elsewhere/*", role=Role.VIEWER))
    never, _ = answers()

    assert revoked == unknown == never
    # htmx follows HX-Redirect whatever the status, so the polling stops: the page, reloaded
    # whole, answers 404 for itself.
    assert revoked[0] == 404 and revoked[2] == page
    assert repo_name.encode() not in revoked[1]

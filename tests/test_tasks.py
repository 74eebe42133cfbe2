"""Background work: tasks on the immediate backend, a real worker process, and concurrency.

Concurrency is tested with real processes on a real database file (or PostgreSQL database)
and the real registry: two syncs of one repository at once, and one notification delivered to
two web replicas at once, must leave one consistent cache.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests
from django.core.management import call_command

from dashboard.models import AuditEntry, Repository, RetentionPolicy, Tag, TaskProgress
from dashboard.tasks import apply_retention_task, enqueue_sync, sync_registry_task, sync_repository_task
from tests.personas import make_user
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

"""Registry notifications: a real registry posting to the live endpoint, and envelopes shaped
like the ones Distribution 2.8 sends (captured in the registry lab) posted by the test client."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from django.core.signals import request_finished, request_started
from django.urls import reverse

from dashboard import notifications, rollback
from dashboard.models import Manifest, NotificationEvent, OwnPush, Registry, Repository, Tag
from dashboard.registries import client_for
from dashboard.registry import RegistryClient
from dashboard.registry.client import USER_AGENT
from dashboard.sync import Source, sync_repository
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer, start_registry

SECRET = "s3cret-for-tests"
HEADER = "X-Registry-Secret"
ENVELOPE_TYPE = "application/vnd.docker.distribution.events.v1+json"
PULLED_AT = datetime(2026, 11, 29, 21, 42, 3, 470670, tzinfo=timezone.utc)
WAIT = 15.0


@pytest.fixture(autouse=True)
def notification_settings(settings) -> None:
    settings.REGISTRY_NOTIFICATIONS_SECRET = SECRET
    settings.REGISTRY_NOTIFICATIONS_HEADER = HEADER


@pytest.fixture
def cache(registry: RegistryServer, settings) -> Registry:
    settings.REGISTRY_URL = registry.url
    return Registry.objects.create(name="test", url=registry.url)


def post(client, envelope: dict | bytes, *, secret: str | None = SECRET, content_type: str = ENVELOPE_TYPE):
    body = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    headers = {} if secret is None else {HEADER: secret}
    return client.post(reverse("dashboard:registry-events"), body, content_type=content_type, headers=headers)


def event(action: str, repository: str, *, event_id: str | None = None, **target: str) -> dict:
    """One event as Distribution 2.8 writes it (see the registry lab's events/*.json)."""
    method = {"push": "PUT", "pull": "GET", "delete": "DELETE"}.get(action, "POST")
    return {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": "2026-11-29T21:42:03.470670369Z",
        "action": action,
        "target": {"repository": repository, **target},
        "request": {"id": str(uuid.uuid4()), "addr": "127.0.0.1:58212", "host": "registry:5000", "method": method,
                    "useragent": "skopeo/1.9.3"},  # fmt: skip
        "actor": {},
        "source": {"addr": "vm:5004", "instanceID": "68ce5456-d06a-42dc-afbf-0840c0cd9194"},
    }


def envelope(*events: dict) -> dict:
    return {"events": list(events)}


def sync(cache: Registry, name: str) -> None:
    with RegistryClient(cache.url) as client:
        sync_repository(cache, client, name)


# The endpoint's guard ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("secret", [None, "wrong", SECRET + "x", ""])
def test_a_missing_or_wrong_secret_is_refused_and_changes_nothing(client, cache, pusher, repo_name, secret):
    image = pusher.push_image(repo_name, "1.0")
    sync(cache, repo_name)

    response = post(client, envelope(event("delete", repo_name, digest=image.digest)), secret=secret)

    assert response.status_code == 401
    assert HEADER in response.content.decode()
    assert Tag.objects.filter(repository__name=repo_name).exists()
    assert not NotificationEvent.objects.exists()


@pytest.mark.django_db
def test_without_a_configured_secret_the_endpoint_refuses_everything(client, settings):
    settings.REGISTRY_NOTIFICATIONS_SECRET = ""

    response = post(client, envelope(), secret="")

    assert response.status_code == 503
    assert "REGISTRY_NOTIFICATIONS_SECRET" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"events": {}}',
        b'{"events": [{"id": "x", "action": "delete"}]}',
        json.dumps(envelope(event("delete", "Upper/Case", digest="sha256:" + "0" * 64))).encode(),
        json.dumps(envelope(event("delete", "app", digest="sha256:abc"))).encode(),
        json.dumps(envelope(event("delete", "app", tag="no tags/with slashes"))).encode(),
    ],
)
def test_a_malformed_envelope_is_a_400_and_changes_nothing(client, cache, body):
    response = post(client, body)

    assert response.status_code == 400
    assert not NotificationEvent.objects.exists()


@pytest.mark.django_db
def test_envelope_media_types_and_size(client, cache, settings):
    v2 = "application/vnd.docker.distribution.events.v2+json"
    assert post(client, envelope(), content_type=v2).status_code == 200
    assert post(client, envelope(), content_type="application/json").status_code == 200
    assert post(client, envelope(), content_type="text/plain").status_code == 415
    mount = event("mount", "app", mediaType="application/octet-stream", digest="sha256:" + "1" * 64)
    assert post(client, envelope(*[mount] * notifications.MAX_EVENTS)).status_code == 200
    over = post(client, envelope(*[mount] * (notifications.MAX_EVENTS + 1)))
    assert over.status_code == 413
    assert f"more than the {notifications.MAX_EVENTS}" in over.content.decode()
    settings.REGISTRY_NOTIFICATIONS_MAX_BYTES = 100
    assert post(client, envelope(mount)).status_code == 413
    assert client.get(reverse("dashboard:registry-events"), headers={HEADER: SECRET}).status_code == 405


# What events do ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_delete_event_removes_the_rows_it_names_once(client, cache, pusher, repo_name):
    image = pusher.push_image(repo_name, ["1.0", "latest"], unique="deleted")
    kept = pusher.push_image(repo_name, "2.0", unique="kept")
    sync(cache, repo_name)
    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_manifest(repo_name, image.digest)
    deleted = envelope(event("delete", repo_name, digest=image.digest, event_id="delete-1"))

    response = post(client, deleted)

    assert response.json() == {"events": 1, "pushes": 0, "deletes": 1}
    assert dict(Tag.objects.filter(repository__name=repo_name).values_list("name", "manifest__digest")) == {
        "2.0": kept.digest
    }
    assert not Manifest.objects.filter(digest=image.digest).exists()
    repository = Repository.objects.get(name=repo_name)
    assert repository.tag_count == 1
    closed = repository.tag_history.filter(tag="latest").get()
    assert (closed.until is not None, closed.ended_by) == (True, Source.NOTIFICATION)

    # The tag comes back (the delete is redelivered late): the same event id changes nothing.
    pusher.tag(repo_name, image, "latest")
    sync(cache, repo_name)
    assert post(client, deleted).status_code == 200
    assert Tag.objects.filter(repository__name=repo_name, name="latest").exists()
    assert NotificationEvent.objects.filter(event_id="delete-1").count() == 1

    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_tag(repo_name, "latest", image.digest)
    assert post(client, envelope(event("delete", repo_name, tag="latest"))).status_code == 200
    assert not Tag.objects.filter(repository__name=repo_name, name="latest").exists()


@pytest.mark.django_db
def test_a_delete_event_for_what_the_registry_still_has_forgets_nothing(client, cache, pusher, repo_name):
    """A forged or stale event: the previous digest stays a rollback candidate, the tag stays."""
    previous = pusher.push_image(repo_name, "latest", unique="previous")
    sync(cache, repo_name)
    current = pusher.push_image(repo_name, "latest", unique="current")
    sync(cache, repo_name)

    response = post(
        client, envelope(event("delete", repo_name, digest=previous.digest), event("delete", repo_name, tag="latest"))
    )

    assert Manifest.objects.get(repository__name=repo_name, digest=previous.digest).missing_since is None
    assert Tag.objects.get(repository__name=repo_name, name="latest").manifest.digest == current.digest
    assert Repository.objects.get(name=repo_name).tag_history.filter(until__isnull=True).count() == 1
    assert response.json() == {"events": 2, "pushes": 0, "deletes": 2}


@pytest.mark.django_db
def test_a_delete_event_for_a_repository_never_cached_creates_nothing(client, cache, repo_name):
    post(client, envelope(event("delete", repo_name, tag="latest"), event("delete", repo_name, digest="sha256:" + "2" * 64)))

    assert not Repository.objects.filter(name=repo_name).exists()


@pytest.mark.django_db
def test_a_pull_event_sets_last_pulled_at(client, cache, pusher, repo_name):
    image = pusher.push_image(repo_name, ["1.0", "latest"])
    other = pusher.push_image(repo_name, "2.0", unique="other")
    sync(cache, repo_name)
    pulled = {"mediaType": image.media_type, "digest": image.digest, "size": str(len(image.raw))}

    post(client, envelope(event("pull", repo_name, tag="latest", **pulled)))

    last_pulled = dict(Tag.objects.filter(repository__name=repo_name).values_list("name", "last_pulled_at"))
    assert last_pulled == {"latest": PULLED_AT, "1.0": None, "2.0": None}

    # By digest (what a client does after resolving the tag): every tag on the digest.
    Tag.objects.update(last_pulled_at=None)
    post(client, envelope(event("pull", repo_name, **pulled)))
    last_pulled = dict(Tag.objects.filter(repository__name=repo_name).values_list("name", "last_pulled_at"))
    assert last_pulled == {"latest": PULLED_AT, "1.0": PULLED_AT, "2.0": None}

    # Not pulls: the dashboard's own reads, HEADs, blob downloads.
    Tag.objects.update(last_pulled_at=None)
    own = event("pull", repo_name, tag="2.0", mediaType=other.media_type, digest=other.digest)
    own["request"]["useragent"] = USER_AGENT
    head = event("pull", repo_name, tag="2.0", mediaType=other.media_type, digest=other.digest)
    head["request"]["method"] = "HEAD"
    blob = event("pull", repo_name, mediaType="application/octet-stream", digest=other.config_digest)
    assert post(client, envelope(own, head, blob)).status_code == 200
    assert not Tag.objects.filter(last_pulled_at__isnull=False).exists()
    assert not NotificationEvent.objects.exists()  # pulls are idempotent: not recorded


@pytest.mark.django_db
def test_a_push_sending_the_dashboards_user_agent_is_synced_like_any_other(client, cache, pusher, repo_name):
    pusher.push_image(repo_name, "latest", unique="old")
    sync(cache, repo_name)
    new = pusher.push_image(repo_name, "latest", unique="new")
    disguised = event("push", repo_name, tag="latest", mediaType=new.media_type, digest=new.digest)
    disguised["request"]["useragent"] = USER_AGENT

    assert post(client, envelope(disguised)).json()["pushes"] == 1

    assert Tag.objects.get(repository__name=repo_name, name="latest").manifest.digest == new.digest


@pytest.mark.django_db
def test_the_dashboards_own_restore_and_tombstone_pushes_are_not_synced_again(
    client, cache, pusher, repo_name, sleeps
):
    old = pusher.push_image(repo_name, ["latest", "build-1"], unique="old")
    sync(cache, repo_name)
    new = pusher.push_image(repo_name, "latest", unique="new")
    sync(cache, repo_name)
    repository = Repository.objects.get(name=repo_name)
    rollback.restore_tag(None, None, cache, repository, tag="latest", digest=old.digest, expected=new.digest)
    with client_for(cache) as registry_client:
        registry_client.delete_tag(repo_name, "build-1", old.digest)
    [tombstone] = OwnPush.objects.filter(repository=repo_name, tag="build-1").values_list("digest", flat=True)
    restored = event("push", repo_name, tag="latest", mediaType=old.media_type, digest=old.digest)
    tombstoned = event("push", repo_name, tag="build-1", mediaType=old.media_type, digest=tombstone)

    response = post(client, envelope(restored, tombstoned))

    assert response.json()["pushes"] == 0
    assert NotificationEvent.objects.filter(event_id=restored["id"]).exists()
    assert sleeps == []
    # Each record answers for one event: the same push seen again (another client) is synced.
    again = event("push", repo_name, tag="latest", mediaType=old.media_type, digest=old.digest)
    assert post(client, envelope(again)).json()["pushes"] == 1


@pytest.mark.django_db
def test_a_push_event_syncs_the_pushed_tag(client, cache, pusher, repo_name):
    image = pusher.push_image(repo_name, "1.0")
    pushed = event("push", repo_name, tag="1.0", mediaType=image.media_type, digest=image.digest)
    blob = event("push", repo_name, mediaType="application/octet-stream", digest=image.config_digest)
    by_digest = event("push", repo_name, mediaType=image.media_type, digest=image.digest)

    response = post(client, envelope(blob, by_digest, pushed))

    # Tests run tasks immediately (TASK_BACKEND=immediate): the sync is done by now.
    assert response.json() == {"events": 3, "pushes": 1, "deletes": 0}
    tag = Tag.objects.get(repository__name=repo_name)
    assert (tag.name, tag.manifest.digest) == ("1.0", image.digest)
    assert list(NotificationEvent.objects.values_list("action", flat=True)) == ["push"]


@pytest.mark.django_db
def test_a_push_event_waits_until_the_registry_shows_the_pushed_digest(client, cache, pusher, repo_name):
    """Distribution sends the event before it moves the tag: a HEAD at once still sees the old digest."""
    old = pusher.push_image(repo_name, "latest", unique="old")
    sync(cache, repo_name)
    new = pusher.push_image(repo_name, None, unique="new")  # stored, not tagged yet
    tag_soon = threading.Timer(1.0, pusher.tag, args=(repo_name, new, "latest"))
    tag_soon.start()

    post(client, envelope(event("push", repo_name, tag="latest", mediaType=new.media_type, digest=new.digest)))

    tag_soon.join()
    assert Tag.objects.get(repository__name=repo_name, name="latest").manifest.digest == new.digest
    # Untagged now, and kept as the tag's previous digest (a rollback candidate).
    assert not Manifest.objects.get(repository__name=repo_name, digest=old.digest).tags.exists()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The settle waits of push handling, recorded instead of slept (the registry stays real)."""
    recorded: list[float] = []
    monkeypatch.setattr(notifications.time, "sleep", recorded.append)
    return recorded


@pytest.mark.django_db
def test_a_push_event_waits_only_while_the_registry_shows_the_digest_cached_before(
    client, cache, pusher, repo_name, sleeps
):
    old = pusher.push_image(repo_name, "latest", unique="old")
    sync(cache, repo_name)
    new = pusher.push_image(repo_name, None, unique="new")  # the tag link not written yet

    post(client, envelope(event("push", repo_name, tag="latest", mediaType=new.media_type, digest=new.digest)))

    assert sleeps == list(notifications.PUSH_SETTLE_DELAYS)
    # After the last wait the registry's answer wins.
    assert Tag.objects.get(repository__name=repo_name, name="latest").manifest.digest == old.digest


@pytest.mark.django_db
def test_a_push_event_for_a_tag_that_moved_on_since_is_synced_at_once(client, cache, pusher, repo_name, sleeps):
    pusher.push_image(repo_name, "latest", unique="first")
    sync(cache, repo_name)
    second = pusher.push_image(repo_name, "latest", unique="second")
    third = pusher.push_image(repo_name, "latest", unique="third")

    post(client, envelope(event("push", repo_name, tag="latest", mediaType=second.media_type, digest=second.digest)))

    assert sleeps == []
    assert Tag.objects.get(repository__name=repo_name, name="latest").manifest.digest == third.digest


@pytest.mark.django_db
def test_a_push_event_for_a_tag_deleted_since_is_synced_at_once(client, cache, pusher, repo_name, sleeps):
    kept = pusher.push_image(repo_name, "stable", unique="kept")
    doomed = pusher.push_image(repo_name, "build-1", unique="doomed")
    sync(cache, repo_name)
    # Like the tombstone a tag delete pushes: the event arrives after the digest is deleted.
    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_manifest(repo_name, doomed.digest)

    post(client, envelope(event("push", repo_name, tag="build-1", mediaType=doomed.media_type, digest=doomed.digest)))

    assert sleeps == []
    assert list(Tag.objects.filter(repository__name=repo_name).values_list("name", "manifest__digest")) == [
        ("stable", kept.digest)
    ]


# A real registry notifying the live server ---------------------------------------------------


@pytest.fixture
def between_requests() -> Iterator[threading.Lock]:
    """live_server's request threads use this test's in-memory SQLite connection, which two
    threads must not use at once: while the test holds this lock, requests wait at the door."""
    door = threading.Lock()

    def enter(**kwargs: object) -> None:
        door.acquire()

    def leave(**kwargs: object) -> None:
        door.release()

    request_started.connect(enter)
    request_finished.connect(leave)
    yield door
    # Let a request still being answered finish before the database is flushed.
    with door:
        request_started.disconnect(enter)
        request_finished.disconnect(leave)


@pytest.fixture
def notifying_registry(live_server, between_requests, tmp_path: Path, settings) -> Iterator[RegistryServer]:
    server = start_registry(
        tmp_path / "notifying",
        notify_url=live_server.url + reverse("dashboard:registry-events"),
        notify_headers={HEADER: SECRET},
    )
    settings.REGISTRY_URL = server.url
    yield server
    server.stop()


def eventually(door: threading.Lock, condition: Callable[[], bool]) -> None:
    """Poll the database until `condition` holds: the registry notifies asynchronously."""
    deadline = time.monotonic() + WAIT
    while True:
        with door:
            if condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {WAIT} s")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_a_real_registry_push_and_delete_reach_the_cache(notifying_registry, between_requests):
    pusher = ImagePusher(notifying_registry.url)
    with between_requests:
        Registry.objects.create(name="notifying", url=notifying_registry.url)

    image = pusher.push_image("team/app", ["1.0", "latest"])
    eventually(between_requests, lambda: Tag.objects.filter(repository__name="team/app").count() == 2)
    index = pusher.push_index("team/app", "multi", unique="multi")
    eventually(between_requests, lambda: Tag.objects.filter(name="multi").exists())
    with RegistryClient(notifying_registry.url) as client:
        client.delete_manifest("team/app", image.digest)
    eventually(between_requests, lambda: not Manifest.objects.filter(digest=image.digest).exists())

    with between_requests:
        assert dict(Tag.objects.values_list("name", "manifest__digest")) == {"multi": index.digest}
        children = {child.digest for child in index.children}
        assert set(Manifest.objects.values_list("digest", flat=True)) == {index.digest, *children}
        history = Repository.objects.get(name="team/app").tag_history
        assert sorted(history.values_list("tag", "digest", "started_by", "ended_by")) == [
            ("1.0", image.digest, Source.NOTIFICATION, Source.NOTIFICATION),
            ("latest", image.digest, Source.NOTIFICATION, Source.NOTIFICATION),
            ("multi", index.digest, Source.NOTIFICATION, ""),
        ]


@pytest.mark.django_db
def test_old_event_ids_and_own_push_records_are_forgotten(cache):
    now = datetime.now(timezone.utc)
    for age, name in ((notifications.OWN_PUSH_WINDOW * 2, "stale"), (notifications.OWN_PUSH_WINDOW / 2, "recent")):
        OwnPush.objects.create(registry=cache, repository=name, tag="t", digest="sha256:" + "5" * 64, pushed_at=now - age)
    for age, name in ((notifications.EVENT_MEMORY * 2, "stale"), (notifications.EVENT_MEMORY / 2, "recent")):
        NotificationEvent.objects.create(event_id=name, action="push", received_at=now - age)

    notifications.forget_handled_events()

    assert list(OwnPush.objects.values_list("repository", flat=True)) == ["recent"]
    assert list(NotificationEvent.objects.values_list("event_id", flat=True)) == ["recent"]

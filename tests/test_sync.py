"""The sync against a real registry: what it caches, what it fetches, what it keeps on failure."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.db import connection
from django.db.models import ProtectedError
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone as django_timezone

from dashboard.models import Manifest, Pin, Registry, Repository, Role, Tag, TagHistory
from dashboard.registry import RegistryClient, Unavailable
from dashboard.registry.mediatypes import TOMBSTONE_ARTIFACT_TYPE
from dashboard import notifications, sync
from dashboard.sync import Source, sync_registry, sync_repository, sync_tag
from tests.personas import make_user
from tests.support.images import ImagePusher, PushedImage
from tests.support.registry_server import RegistryServer, start_registry

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
CREATED = datetime(2025, 3, 14, 15, 9, 26, tzinfo=timezone.utc)


@pytest.fixture
def cache(registry: RegistryServer) -> Registry:
    return Registry.objects.create(name="test", url=registry.url)


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(registry.url) as client:
        yield client


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry of the test's own, for tests that stop it or need a known catalog."""
    server = start_registry(tmp_path / "registry")
    yield server
    server.stop()


def sync_fresh(cache: Registry, name: str) -> RegistryClient:
    """Sync one repository with a new client; the client's request_counts are this sync's."""
    with RegistryClient(cache.url) as client:
        sync_repository(cache, client, name)
    return client


def cached_tags(name: str) -> dict[str, str]:
    return dict(Tag.objects.filter(repository__name=name).values_list("name", "manifest__digest"))


def periods(name: str, tag: str) -> list[tuple[str, bool, str, str]]:
    """(digest, open, started_by, ended_by) of a tag's history, oldest first."""
    rows = TagHistory.objects.filter(repository__name=name, tag=tag).order_by("since", "id")
    return [(row.digest, row.until is None, row.started_by, row.ended_by) for row in rows]


def snapshot(name: str) -> dict[str, list]:
    """Every cached row of a repository, except the times a sync bumps on each visit."""
    return {
        "repository": list(
            Repository.objects.filter(name=name).values_list(
                "tag_count", "total_size", "last_pushed_at", "last_synced_at"
            )
        ),
        "tags": sorted(
            Tag.objects.filter(repository__name=name).values_list("id", "name", "manifest_id", "created", "pointed_at")
        ),
        "manifests": sorted(
            Manifest.objects.filter(repository__name=name).values_list("id", "digest", "size", "missing_since")
        ),
        "history": sorted(TagHistory.objects.filter(repository__name=name).values_list("id", "tag", "digest", "until")),
    }


def blob_sizes(image: PushedImage) -> int:
    """Config plus layers: the image's size without its manifest."""
    return image.size - len(image.raw)


# What a sync caches ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_image_rows_match_what_was_pushed(cache, client, pusher, repo_name, fmt):
    image = pusher.push_image(
        repo_name,
        ["1.0.0", "latest"],
        fmt=fmt,
        created=CREATED,
        layers=3,
        arch="arm64",
        variant="v8",
        author="ops@example.com",
        labels={"org.opencontainers.image.source": "https://example.com/app"},
        env=["PATH=/usr/bin", "MODE=prod"],
        entrypoint=["/app"],
        cmd=["--serve"],
        exposed_ports=["8080/tcp"],
        user="app",
        workdir="/srv",
        volumes=["/data"],
    )

    result = sync_repository(cache, client, repo_name)

    assert (result.tags, result.new_manifests, result.reused_manifests) == (2, 1, 0)
    manifest = Manifest.objects.get(repository__name=repo_name)
    assert manifest.digest == image.digest
    assert manifest.kind == Manifest.Kind.IMAGE
    assert manifest.media_type == image.media_type
    assert bytes(manifest.raw) == image.raw
    assert hashlib.sha256(bytes(manifest.raw_config)).hexdigest() == image.config_digest.removeprefix("sha256:")
    assert manifest.config_digest == image.config_digest
    assert manifest.config_size == len(manifest.raw_config)
    assert manifest.size == image.size
    assert manifest.created == CREATED
    assert manifest.platform == "linux/arm64/v8"
    assert manifest.fetch_error == ""
    layers = [step for step in manifest.layers if not step["empty"]]
    assert [step["digest"] for step in layers] == list(image.layer_digests)
    assert [step["created_by"] for step in layers] == [f"COPY layer-{i}.bin /opt/ # buildkit" for i in range(3)]
    empty = [step["created_by"] for step in manifest.layers if step["empty"]]
    assert empty == ["ENV PATH=/usr/bin MODE=prod", "WORKDIR /srv", "EXPOSE 8080/tcp", 'VOLUME ["/data"]',
                     "USER app", "LABEL org.opencontainers.image.source=https://example.com/app",
                     'ENTRYPOINT ["/app"]', 'CMD ["--serve"]']  # fmt: skip
    config = manifest.config
    assert (config["os"], config["architecture"], config["variant"], config["author"]) == (
        "linux",
        "arm64",
        "v8",
        "ops@example.com",
    )
    assert config["env"] == ["PATH=/usr/bin", "MODE=prod"]
    assert (config["entrypoint"], config["cmd"]) == (["/app"], ["--serve"])
    assert (config["workdir"], config["user"], config["exposed_ports"], config["volumes"]) == (
        "/srv",
        "app",
        ["8080/tcp"],
        ["/data"],
    )
    assert config["labels"] == {"org.opencontainers.image.source": "https://example.com/app"}
    assert len(config["history"]) == len(manifest.layers)

    assert cached_tags(repo_name) == {"1.0.0": image.digest, "latest": image.digest}
    assert set(Tag.objects.filter(repository__name=repo_name).values_list("created", flat=True)) == {CREATED}
    assert periods(repo_name, "latest") == [(image.digest, True, Source.SYNC, "")]
    repository = Repository.objects.get(name=repo_name)
    assert (repository.tag_count, repository.total_size, repository.last_pushed_at) == (2, blob_sizes(image), CREATED)
    assert repository.last_synced_at is not None and repository.last_sync_error == ""


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_index_rows_have_children_with_platforms(cache, client, pusher, repo_name, fmt):
    index = pusher.push_index(repo_name, ["2.0"], fmt=fmt, created=CREATED, unique=fmt)

    sync_repository(cache, client, repo_name)

    row = Manifest.objects.get(repository__name=repo_name, digest=index.digest)
    assert (row.kind, row.media_type) == (Manifest.Kind.INDEX, index.media_type)
    assert (row.size, row.created) == (index.size, CREATED)
    assert row.children == [
        {"digest": child.digest, "media_type": child.media_type, "size": len(child.raw), "platform": child.platform}
        for child in index.children
    ]
    assert [child.platform for child in index.children] == ["linux/amd64", "linux/arm64/v8"]
    children = Manifest.objects.filter(repository__name=repo_name).exclude(digest=index.digest)
    assert {(m.digest, m.platform, m.size, m.kind) for m in children} == {
        (child.digest, child.platform, child.size, Manifest.Kind.IMAGE) for child in index.children
    }
    assert cached_tags(repo_name) == {"2.0": index.digest}
    assert Repository.objects.get(name=repo_name).total_size == sum(blob_sizes(child) for child in index.children)


def test_artifact_rows(cache, client, pusher, repo_name):
    image = pusher.push_image(repo_name, "1.0")
    sbom = pusher.push_artifact(
        repo_name, "1.0.sbom", artifact_type="application/spdx+json", payload=b'{"spdx": 1}', subject=image
    )

    sync_repository(cache, client, repo_name)

    row = Manifest.objects.get(repository__name=repo_name, digest=sbom.digest)
    assert (row.kind, row.artifact_type) == (Manifest.Kind.ARTIFACT, "application/spdx+json")
    assert row.subject_digest == image.digest
    assert (row.size, row.created, row.raw_config, row.config) == (sbom.size, None, None, {})
    assert [layer["digest"] for layer in row.layers] == list(sbom.layer_digests)
    # The image's config and the artifact's payload (dashboard/attachments.py); not its config.
    assert client.request_counts["get_blob"] == 2


# How tags change --------------------------------------------------------------------------------


def test_a_moved_tag_gets_a_second_history_period(cache, pusher, repo_name):
    first = pusher.push_image(repo_name, "latest", unique="first")
    sync_fresh(cache, repo_name)
    pointed_at = Tag.objects.get(repository__name=repo_name).pointed_at
    second = pusher.push_image(repo_name, "latest", unique="second")

    sync_fresh(cache, repo_name)

    assert cached_tags(repo_name) == {"latest": second.digest}
    assert periods(repo_name, "latest") == [
        (first.digest, False, Source.SYNC, Source.SYNC),
        (second.digest, True, Source.SYNC, ""),
    ]
    assert Tag.objects.get(repository__name=repo_name).pointed_at > pointed_at
    # Untagged but still stored: kept, so `latest` can be pointed back at it.
    kept = Manifest.objects.get(repository__name=repo_name, digest=first.digest)
    assert (kept.missing_since, kept.tags.exists()) == (None, False)


def test_a_deleted_tag_keeps_no_untagged_digest_and_unreferenced_ones_are_dropped(cache, pusher, repo_name):
    doomed = pusher.push_image(repo_name, "pr-1", unique="pr-1")
    kept = pusher.push_image(repo_name, "main", unique="main")
    sync_fresh(cache, repo_name)
    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_tag(repo_name, "pr-1", doomed.digest)  # the version stays stored, untagged

    sync_fresh(cache, repo_name)

    # No tag that exists has pointed at it: not kept, whatever the registry still stores.
    assert set(Manifest.objects.filter(repository__name=repo_name).values_list("digest", flat=True)) == {kept.digest}
    assert periods(repo_name, "pr-1") == [(doomed.digest, False, Source.SYNC, Source.SYNC)]


def test_the_previous_digests_kept_are_bounded_per_tag(cache, pusher, repo_name, monkeypatch):
    monkeypatch.setattr(sync, "ROLLBACK_DEPTH", 2)
    builds = []
    for n in range(4):
        builds.append(pusher.push_image(repo_name, "latest", unique=f"build-{n}"))
        sync_fresh(cache, repo_name)

    # The current build and the last two `latest` left; the oldest is dropped but stays in the history.
    cached = set(Manifest.objects.filter(repository__name=repo_name).values_list("digest", flat=True))
    assert cached == {build.digest for build in builds[1:]}
    assert [digest for digest, *_ in periods(repo_name, "latest")] == [build.digest for build in builds]


def test_a_kept_digest_deleted_by_digest_is_marked_missing_and_found_again_when_pushed(cache, pusher, repo_name):
    old = pusher.push_image(repo_name, "latest", unique="old")
    sync_fresh(cache, repo_name)
    pusher.push_image(repo_name, "latest", unique="new")
    sync_fresh(cache, repo_name)
    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_manifest(repo_name, old.digest)
    # What a notification of that delete does.
    sync.forget(cache, repo_name, digest=old.digest)

    row = Manifest.objects.get(repository__name=repo_name, digest=old.digest)
    assert row.missing_since is not None  # so the history says "deleted" and no rollback offers it

    assert pusher.push_image(repo_name, "again", unique="old").digest == old.digest
    sync_fresh(cache, repo_name)
    row.refresh_from_db()
    assert row.missing_since is None


def test_a_kept_digest_marked_missing_while_the_registry_has_it_is_found_again_by_the_next_sync(
    cache, pusher, repo_name
):
    """As a stale or forged delete notification used to leave it: the rollback candidate came back."""
    old = pusher.push_image(repo_name, "latest", unique="old")
    sync_fresh(cache, repo_name)
    pusher.push_image(repo_name, "latest", unique="new")
    sync_fresh(cache, repo_name)
    Manifest.objects.filter(repository__name=repo_name, digest=old.digest).update(missing_since=CREATED)

    client = sync_fresh(cache, repo_name)

    assert Manifest.objects.get(repository__name=repo_name, digest=old.digest).missing_since is None
    assert client.request_counts["head_manifest"] == 2  # `latest`, and the one digest marked missing

    client = sync_fresh(cache, repo_name)
    assert client.request_counts["head_manifest"] == 1  # nothing marked missing: nothing extra


def test_deleted_tags_are_pruned_and_an_emptied_repository_stays_visible(cache, pusher, repo_name):
    old = pusher.push_image(repo_name, ["1.0", "latest"], unique="old")
    new = pusher.push_image(repo_name, "2.0", unique="new")
    sync_fresh(cache, repo_name)
    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_manifest(repo_name, old.digest)

    sync_fresh(cache, repo_name)

    assert cached_tags(repo_name) == {"2.0": new.digest}
    assert periods(repo_name, "latest") == [(old.digest, False, Source.SYNC, Source.SYNC)]
    assert set(Manifest.objects.filter(repository__name=repo_name).values_list("digest", flat=True)) == {new.digest}
    assert Repository.objects.get(name=repo_name).tag_count == 1

    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_manifest(repo_name, new.digest)
    assert pusher.tags(repo_name) == []  # tags/list now answers "tags": null
    sync_fresh(cache, repo_name)

    repository = Repository.objects.get(name=repo_name)
    assert repository.is_empty
    assert (repository.tag_count, repository.total_size, repository.last_sync_error) == (0, 0, "")
    assert not Manifest.objects.filter(repository=repository).exists()
    assert not TagHistory.objects.filter(repository=repository, until__isnull=True).exists()


def test_a_pinned_version_stays_cached_and_is_marked_when_the_registry_loses_it(cache, pusher, repo_name):
    pinned = pusher.push_image(repo_name, "v1", unique="pinned")
    sync_fresh(cache, repo_name)
    repository = Repository.objects.get(name=repo_name)
    Pin.objects.create(repository=repository, digest=pinned.digest, reason="production")
    pusher.push_image(repo_name, "v1", unique="next")

    sync_fresh(cache, repo_name)

    row = Manifest.objects.get(repository=repository, digest=pinned.digest)
    assert row.missing_since is None  # untagged, but still in the registry
    assert not row.tags.exists()

    with RegistryClient(cache.url) as registry_client:
        registry_client.delete_manifest(repo_name, pinned.digest)
    sync_fresh(cache, repo_name)

    row.refresh_from_db()
    assert row.missing_since is not None


def test_a_sync_leaves_alone_tags_written_after_its_readout_began(cache, pusher, repo_name, monkeypatch):
    """Notifications land between the sync's registry reads and its write: their newer moves
    and deletes stand, and no history period that never happened is written."""
    old = pusher.push_image(repo_name, ["latest", "build-1"], unique="old")
    sync_fresh(cache, repo_name)
    write = sync.write_repository
    pushed = []

    def notifications_first(registry, client, readout, **options):
        if not pushed:
            pushed.append(pusher.push_image(repo_name, "latest", unique="new"))
            sync_tag(registry, client, repo_name, "latest", source=Source.NOTIFICATION)
            client.delete_tag(repo_name, "build-1", old.digest)
            sync.forget(registry, repo_name, tag="build-1")
        return write(registry, client, readout, **options)

    monkeypatch.setattr(sync, "write_repository", notifications_first)
    sync_fresh(cache, repo_name)

    new = pushed[0]
    assert cached_tags(repo_name) == {"latest": new.digest}
    assert periods(repo_name, "latest") == [
        (old.digest, False, Source.SYNC, Source.NOTIFICATION),
        (new.digest, True, Source.NOTIFICATION, ""),
    ]
    assert periods(repo_name, "build-1") == [(old.digest, False, Source.SYNC, Source.NOTIFICATION)]

    monkeypatch.setattr(sync, "write_repository", write)
    sync_fresh(cache, repo_name)  # the next sync, read after those writes, changes nothing
    assert cached_tags(repo_name) == {"latest": new.digest}
    assert len(periods(repo_name, "latest")) == 2


def test_a_readout_older_than_a_write_asks_the_registry_again_instead_of_losing_the_news(cache, pusher, repo_name):
    pusher.push_image(repo_name, "latest", unique="a")
    sync_fresh(cache, repo_name)
    b = pusher.push_image(repo_name, "latest", unique="b")
    with RegistryClient(cache.url) as client:
        known = partial(sync._known_in_database, cache, repo_name)
        full = sync.read_repository(client, repo_name, known=known)  # sees b
        c = pusher.push_image(repo_name, "latest", unique="c")
        notified = sync.read_repository(client, repo_name, known=known, tags=["latest"])  # sees c
        sync.write_repository(cache, client, full, source=Source.SYNC)  # b, written after c was read
        sync.write_repository(cache, client, notified, source=Source.NOTIFICATION)

    assert cached_tags(repo_name) == {"latest": c.digest}
    assert [digest for digest, *_ in periods(repo_name, "latest")][1:] == [b.digest, c.digest]


def test_a_confirmed_delete_leaves_a_tag_written_after_the_registry_was_asked(cache, pusher, repo_name):
    pusher.push_image(repo_name, "latest", unique="old")
    sync_fresh(cache, repo_name)
    checked_at = django_timezone.now()  # a delete notification's HEAD found no `latest` here
    new = pusher.push_image(repo_name, "latest", unique="new")
    sync_fresh(cache, repo_name)

    assert sync.forget(cache, repo_name, tag="latest", checked_at=checked_at) == 0

    assert cached_tags(repo_name) == {"latest": new.digest}


def test_sync_tag_updates_that_tag_only(cache, pusher, repo_name):
    first = pusher.push_image(repo_name, ["a", "b"], unique="first")
    sync_fresh(cache, repo_name)
    synced_at = Repository.objects.get(name=repo_name).last_synced_at
    second = pusher.push_image(repo_name, ["a", "c"], unique="second")

    with RegistryClient(cache.url) as registry_client:
        sync_tag(cache, registry_client, repo_name, "a")

    assert cached_tags(repo_name) == {"a": second.digest, "b": first.digest}
    assert periods(repo_name, "a") == [
        (first.digest, False, Source.SYNC, Source.NOTIFICATION),
        (second.digest, True, Source.NOTIFICATION, ""),
    ]
    assert Repository.objects.get(name=repo_name).last_synced_at == synced_at  # not a full sync


def test_a_tag_caught_mid_delete_is_left_as_cached(cache, pusher, repo_name):
    image = pusher.push_image(repo_name, ["1.0", "latest"])
    sync_fresh(cache, repo_name)
    # What the client's delete_tag puts over a tag for a moment before deleting it.
    pusher.push_artifact(repo_name, "latest", artifact_type=TOMBSTONE_ARTIFACT_TYPE)

    sync_fresh(cache, repo_name)

    assert cached_tags(repo_name) == {"1.0": image.digest, "latest": image.digest}
    assert periods(repo_name, "latest") == [(image.digest, True, Source.SYNC, "")]


# What a sync fetches ---------------------------------------------------------------------------


def test_an_image_cached_for_another_repository_is_copied_not_fetched(cache, pusher, make_repo_name):
    first, second = make_repo_name("a/"), make_repo_name("b/")
    image = pusher.push_image(first, "1.0", unique="shared")
    assert pusher.push_image(second, "1.0", unique="shared").digest == image.digest
    index = pusher.push_index(second, "multi", unique="shared-index")
    pusher.tag(first, pusher.push_index(first, None, unique="shared-index"), "multi")
    sync_fresh(cache, first)

    client = sync_fresh(cache, second)

    assert client.request_counts == {"tags": 1, "head_manifest": 2}
    fields = ["kind", "size", "created", "platform", "layers", "config", "children", "raw", "raw_config"]
    for digest in [image.digest, index.digest, *(child.digest for child in index.children)]:
        copies = Manifest.objects.filter(digest=digest).order_by("repository__name").values_list(*fields)
        assert copies[0] == copies[1]
    assert Repository.objects.get(name=second).total_size == Repository.objects.get(name=first).total_size


def test_a_resync_without_changes_fetches_nothing_and_changes_nothing(cache, pusher, repo_name):
    pusher.push_image(repo_name, ["1.0", "latest"], unique="one")
    pusher.push_image(repo_name, "2.0", fmt="oci", unique="two")
    pusher.push_index(repo_name, "multi", unique="three")
    sync_fresh(cache, repo_name)
    Repository.objects.filter(name=repo_name).update(last_synced_at=None)
    before = snapshot(repo_name)

    client = sync_fresh(cache, repo_name)

    assert client.request_counts == {"tags": 1, "head_manifest": 4}
    after = snapshot(repo_name)
    assert after["repository"][0][3] is not None
    assert after | {"repository": before["repository"]} == before


def test_resync_queries_do_not_grow_with_the_number_of_tags(cache, pusher, make_repo_name):
    small, large = make_repo_name("small-"), make_repo_name("large-")
    pusher.push_image(small, ["1", "2"], unique="small")
    pusher.push_image(large, [str(n) for n in range(25)], unique="large")
    pusher.push_image(large, "other", unique="other")
    for name in (small, large):
        sync_fresh(cache, name)

    counts = []
    for name in (small, large):
        with CaptureQueriesContext(connection) as queries:
            sync_fresh(cache, name)
        counts.append(len(queries))

    assert counts[0] == counts[1]
    assert counts[0] <= 14  # 12, and the attached artifacts' candidates (dashboard/attachments.py)


def test_a_missing_config_blob_or_platform_image_is_recorded_not_fatal(cache, client, pusher, repo_name):
    image = pusher.push_image(repo_name, "image", unique="image")
    index = pusher.push_index(repo_name, "index", unique="index")
    requests.delete(f"{cache.url}/v2/{repo_name}/blobs/{image.config_digest}", timeout=10).raise_for_status()
    client.delete_manifest(repo_name, index.children[1].digest)

    sync_repository(cache, client, repo_name)

    assert cached_tags(repo_name) == {"image": image.digest, "index": index.digest}
    image_row = Manifest.objects.get(repository__name=repo_name, digest=image.digest)
    assert image.config_digest in image_row.fetch_error
    assert (image_row.raw_config, image_row.size, bytes(image_row.raw)) == (None, image.size, image.raw)
    index_row = Manifest.objects.get(repository__name=repo_name, digest=index.digest)
    assert index.children[1].digest in index_row.fetch_error
    assert index_row.size == len(index.raw) + index.children[0].size + len(index.children[1].raw)
    assert Manifest.objects.filter(repository__name=repo_name, digest=index.children[0].digest).exists()


# Registry status and failures -------------------------------------------------------------------


def test_registry_status_is_recorded(registry_nodelete, nodelete_pusher, repo_name):
    nodelete_pusher.push_image(repo_name, "1.0")
    cache = Registry.objects.create(name="nodelete", url=registry_nodelete.url)
    with RegistryClient(cache.url) as client:
        summary = sync_registry(cache, client, repository=repo_name)

    cache.refresh_from_db()
    assert (cache.reachable, cache.api_version, cache.delete_enabled, cache.tag_delete_supported) == (
        True,
        "registry/2.0",
        False,
        False,
    )
    assert cache.last_checked_at is not None and cache.last_error == ""
    assert (summary.repositories, summary.tags, summary.new_manifests) == (1, 1, 1)
    assert summary.requests == {"ping": 1, "delete": 2, "tags": 1, "head_manifest": 1, "get_manifest": 1, "get_blob": 1}


def test_a_registry_stopping_mid_sync_leaves_the_cache_as_it_was(own_registry):
    pusher = ImagePusher(own_registry.url)
    names = [f"app-{n}" for n in range(8)]  # more than the sync reads ahead
    for name in names:
        pusher.push_image(name, ["1.0", "latest"], unique=f"{name}-old")
    cache = Registry.objects.create(name="own", url=own_registry.url)
    with RegistryClient(cache.url) as client:
        sync_registry(cache, client)
    for name in names:
        pusher.push_image(name, ["latest", "2.0"], unique=f"{name}-new")
    before = {name: snapshot(name) for name in names}

    def stop_after_first(done: int, total: int, name: str) -> None:
        if done == 1:
            own_registry.stop()

    with RegistryClient(cache.url, retries=0) as client:
        summary = sync_registry(cache, client, progress=stop_after_first)

    # Repositories read before the registry stopped are written; the others, including any
    # caught half-read, keep every row and say why.
    assert "app-0" not in summary.failed and "app-7" in summary.failed
    assert summary.repositories + len(summary.failed) == len(names)
    for name in names:
        repository = Repository.objects.get(name=name)
        if name in summary.failed:
            assert snapshot(name) == before[name]
            assert "Cannot connect" in repository.last_sync_error and repository.last_sync_error_at is not None
        else:
            assert set(cached_tags(name)) == {"1.0", "2.0", "latest"}
            assert repository.last_sync_error == ""
    cache.refresh_from_db()
    assert cache.last_successful_sync_at is not None  # from the first, complete sync

    with RegistryClient(cache.url, retries=0) as client, pytest.raises(Unavailable):
        sync_registry(cache, client)
    cache.refresh_from_db()
    assert (cache.reachable, cache.unreachable_since is not None) == (False, True)
    assert snapshot("app-7") == before["app-7"]

    own_registry.start()
    with RegistryClient(cache.url) as client:
        summary = sync_registry(cache, client)
    assert not summary.failed
    assert set(cached_tags("app-7")) == {"1.0", "2.0", "latest"}
    assert Repository.objects.get(name="app-7").last_sync_error == ""
    cache.refresh_from_db()
    assert (cache.reachable, cache.unreachable_since) == (True, None)


def test_a_repository_gone_from_the_catalog_is_removed_keeping_its_pins_and_history(own_registry):
    pusher = ImagePusher(own_registry.url)
    for name in ["keep", "wiped"]:
        pusher.push_image(name, "1.0", unique=name)
    cache = Registry.objects.create(name="own", url=own_registry.url)
    with RegistryClient(cache.url) as client:
        sync_registry(cache, client)
    wiped = Repository.objects.get(name="wiped")
    pin = Pin.objects.create(repository=wiped, digest=cached_tags("wiped")["1.0"], reason="production")
    own_registry.stop()
    shutil.rmtree(own_registry.root / "storage/docker/registry/v2/repositories/wiped")
    own_registry.start()

    with RegistryClient(cache.url) as client:
        summary = sync_registry(cache, client)

    assert summary.removed_repositories == 1
    assert list(Repository.objects.values_list("name", flat=True)) == ["keep"]
    removed = Repository.with_removed.get(pk=wiped.pk)
    assert (removed.removed_at is not None, removed.tag_count, removed.total_size) == (True, 0, 0)
    assert list(Pin.objects.filter(repository=removed)) == [pin]
    assert periods("wiped", "1.0") == [(pin.digest, False, Source.SYNC, Source.SYNC)]
    assert not Tag.objects.filter(repository=removed).exists()
    assert not Manifest.objects.filter(repository=removed).exists()

    # The name comes back: the same row, with its pins and history, and a new period.
    again = pusher.push_image("wiped", "1.0", unique="again")
    with RegistryClient(cache.url) as client:
        sync_registry(cache, client)
    restored = Repository.objects.get(name="wiped")
    assert (restored.pk, restored.removed_at, restored.tag_count) == (wiped.pk, None, 1)
    assert list(Pin.objects.filter(repository=restored)) == [pin]
    assert periods("wiped", "1.0") == [
        (pin.digest, False, Source.SYNC, Source.SYNC),
        (again.digest, True, Source.SYNC, ""),
    ]


def removed_with_pin_and_history(cache: Registry) -> Repository:
    """`gone/api` removed with one pin and two history rows kept, beside the listed `listed/api`."""
    removed = Repository.objects.create(registry=cache, name="gone/api", removed_at=CREATED)
    Repository.objects.create(registry=cache, name="listed/api")
    Pin.objects.create(repository=removed, digest="sha256:" + "4" * 64, reason="production")
    for tag in ("1.0", "latest"):
        TagHistory.objects.create(repository=removed, tag=tag, digest="sha256:" + "4" * 64, until=CREATED)
    return removed


def test_dashboard_admins_see_removed_repositories_with_what_they_keep(cache):
    removed_with_pin_and_history(cache)
    admin = Client()
    admin.force_login(make_user("chief", pattern="*", role=Role.ADMIN))  # not staff
    maintainer = Client()
    maintainer.force_login(make_user("lead", pattern="*", role=Role.MAINTAINER))
    url = reverse("dashboard:removed-repositories")

    page = admin.get(url).content.decode()
    refused = maintainer.get(url)

    row = page[page.index("gone/api") :].split("</tr>")[0]
    assert re.findall(r'<td class="num">(\d+)</td>', row) == ["1", "2"]
    assert "listed/api" not in page
    assert refused.status_code == 403 and "gone/api" not in refused.content.decode()
    assert url in admin.get(reverse("dashboard:access")).content.decode()


def test_admins_see_removed_repositories_with_what_they_keep_in_the_django_admin(cache):
    removed_with_pin_and_history(cache)
    browser = Client()
    browser.force_login(make_user("boss", superuser=True))

    page = browser.get(reverse("admin:dashboard_removedrepository_changelist")).content.decode()

    row = page[page.index("gone/api") :].split("</tr>")[0]
    assert re.findall(r'<td class="field-(pins|history_rows)">(\d+)</td>', row) == [("pins", "1"), ("history_rows", "2")]
    assert "listed/api" not in page
    listed = browser.get(reverse("admin:dashboard_repository_changelist")).content.decode()
    assert "listed/api" in listed and "gone/api" not in listed


def test_pins_and_history_are_never_deleted_with_their_repository(cache, pusher, repo_name):
    pusher.push_image(repo_name, "1.0")
    sync_fresh(cache, repo_name)
    repository = Repository.objects.get(name=repo_name)
    assert TagHistory.objects.filter(repository=repository).exists()
    with pytest.raises(ProtectedError):
        repository.delete()
    Tag.objects.filter(repository=repository).delete()
    TagHistory.objects.filter(repository=repository).delete()
    Pin.objects.create(repository=repository, digest="sha256:" + "3" * 64, reason="kept")
    with pytest.raises(ProtectedError):
        repository.delete()


def test_a_repository_pushed_again_after_the_catalog_was_read_is_kept(own_registry):
    pusher = ImagePusher(own_registry.url)
    for name in ["keep", "wiped"]:
        pusher.push_image(name, "1.0", unique=name)
    cache = Registry.objects.create(name="own", url=own_registry.url)
    with RegistryClient(cache.url) as client:
        sync_registry(cache, client)
    own_registry.stop()
    shutil.rmtree(own_registry.root / "storage/docker/registry/v2/repositories/wiped")
    own_registry.start()

    def push_again(done: int, total: int, name: str) -> None:
        pusher.push_image("wiped", "2.0", unique="again")  # no notification: the sync must ask

    with RegistryClient(cache.url) as client:
        summary = sync_registry(cache, client, progress=push_again)

    assert summary.removed_repositories == 0
    assert sorted(Repository.objects.values_list("name", flat=True)) == ["keep", "wiped"]


def test_a_repository_first_cached_during_the_walk_is_kept(own_registry):
    pusher = ImagePusher(own_registry.url)
    pusher.push_image("first", "1.0", unique="first")
    cache = Registry.objects.create(name="own", url=own_registry.url)

    def push_late(done: int, total: int, name: str) -> None:
        # After the catalog was read: a push, and its notification syncing the new repository.
        late = pusher.push_image("late", "1.0", unique="late")
        notifications.sync_pushed_tag(cache.pk, "late", "1.0", late.digest)

    with RegistryClient(cache.url) as client:
        summary = sync_registry(cache, client, progress=push_late)

    assert summary.removed_repositories == 0
    assert sorted(Repository.objects.values_list("name", flat=True)) == ["first", "late"]
    assert cached_tags("late").keys() == {"1.0"}


# Concurrency and the command --------------------------------------------------------------------

CONCURRENT_SYNCS = textwrap.dedent(
    """
    import json, sys, threading
    import django
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    call_command("migrate", verbosity=0)
    from dashboard.models import Manifest, Registry, Tag, TagHistory
    from dashboard.registry import RegistryClient
    from dashboard.sync import sync_repository

    url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    registry = Registry.objects.create(name="r", url=url)
    start = threading.Barrier(count)
    errors = []

    def run():
        start.wait()
        try:
            with RegistryClient(url) as client:
                sync_repository(registry, client, name)
        except Exception as error:
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({
        "errors": errors,
        "tags": Tag.objects.count(),
        "manifests": Manifest.objects.count(),
        "periods": TagHistory.objects.count(),
        "open": TagHistory.objects.filter(until__isnull=True).count(),
    }))
    """
)


def test_concurrent_syncs_of_one_repository_do_not_duplicate_rows(registry, pusher, repo_name, tmp_path):
    """Four threads, each with its own connection to one SQLite file (WAL, IMMEDIATE), start
    syncing the same repository at the same moment."""
    for n in range(10):
        pusher.push_image(repo_name, [f"1.{n}", f"build-{n}"], unique=str(n))
    environment = os.environ | {
        "DJANGO_SETTINGS_MODULE": "registry_browser.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOG_LEVEL": "ERROR",
    }
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_SYNCS, registry.url, repo_name, "4"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"errors": [], "tags": 20, "manifests": 10, "periods": 20, "open": 20}


def test_command_prints_a_summary(cache, pusher, repo_name, settings, capsys):
    settings.REGISTRY_URL = cache.url
    pusher.push_image(repo_name, ["1.0", "latest"])

    call_command("sync_registry", "--repository", repo_name, "--workers", "2")

    output = capsys.readouterr()
    assert f"Synced {cache.url}: 1 repositories, 2 tags, 1 new manifests" in output.out
    assert "requests: delete 2, get_blob 1, get_manifest 1, head_manifest 2, ping 1, tags 1;" in output.out
    assert "1/1 repositories synced" in output.err


class StopLoop(Exception):
    pass


# Committed for real: the command closes its connection after each run, which on PostgreSQL
# would end the transaction an ordinary test runs in.
@pytest.mark.django_db(transaction=True)
def test_command_every_keeps_going_after_a_failed_run(own_registry, settings, monkeypatch, caplog):
    settings.REGISTRY_URL = own_registry.url
    ImagePusher(own_registry.url).push_image("app", "1.0")
    own_registry.stop()
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise StopLoop
        own_registry.start()  # the registry comes back before the second run

    monkeypatch.setattr("dashboard.management.commands.sync_registry.sleep", sleep)
    with caplog.at_level(logging.INFO, logger="dashboard.sync"), pytest.raises(StopLoop):
        call_command("sync_registry", "--every", "300")

    assert sleeps == [300, 300]
    messages = [record.getMessage() for record in caplog.records if record.name == "dashboard.sync"]
    assert messages[0] == "Sync failed; next attempt in 300.0 s"
    assert messages[-1].startswith(f"Synced {own_registry.url}: 1 repositories, 1 tags")
    assert cached_tags("app").keys() == {"1.0"}

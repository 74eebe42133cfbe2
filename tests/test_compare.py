"""Comparing two versions from the cache: config and layer differences, per platform for indexes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from dashboard.compare import compare_manifests, resolve_reference
from dashboard.models import Registry
from tests.rollback_support import Dashboard, dashboard, people  # noqa: F401 (fixtures)
from tests.support.images import ImagePusher
from tests.support.registry_server import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_images(dashboard: Dashboard, pusher: ImagePusher, repo_name: str):
    """1.0 and 2.0: same first two layers, one layer more, and every config setting changed."""
    old = pusher.push_image(
        repo_name,
        ("1.0",),
        created=datetime(2026, 1, 10, tzinfo=UTC),
        unique=repo_name,
        env=["PATH=/usr/bin", "MODE=blue", "GONE=1"],
        labels={"version": "1.0", "team": "web"},
        entrypoint=["/app"],
        cmd=["serve"],
        exposed_ports=["8080/tcp"],
        user="app",
        workdir="/srv",
        layers=2,
        history_commands=["ADD base.tar /", "COPY app /srv/app"],
    )
    new = pusher.push_image(
        repo_name,
        ("2.0",),
        created=datetime(2026, 2, 10, tzinfo=UTC),
        unique=repo_name,
        env=["PATH=/usr/bin", "MODE=green", "NEW=1"],
        labels={"version": "2.0", "team": "web"},
        entrypoint=["/app", "--fast"],
        cmd=["serve", "--port=9090"],
        exposed_ports=["9090/tcp"],
        user="nobody",
        workdir="/opt",
        layers=3,
        history_commands=["ADD base.tar /", "COPY app /srv/app", "RUN make assets"],
    )
    return dashboard.sync(repo_name), old, new


def test_config_and_layer_differences_of_two_real_images(two_images):
    repository, old, new = two_images
    comparison = compare_manifests(repository, resolve_reference(repository, "1.0"), resolve_reference(repository, "2.0"))

    [image] = comparison.images
    changes = {(c.setting, c.key): (c.before, c.after, c.status) for c in image.changes}
    assert changes == {
        ("env", "MODE"): ("blue", "green", "changed"),
        ("env", "GONE"): ("1", None, "removed"),
        ("env", "NEW"): (None, "1", "added"),
        ("label", "version"): ("1.0", "2.0", "changed"),
        ("entrypoint", ""): ("/app", "/app --fast", "changed"),
        ("cmd", ""): ("serve", "serve --port=9090", "changed"),
        ("user", ""): ("app", "nobody", "changed"),
        ("workdir", ""): ("/srv", "/opt", "changed"),
        ("created", ""): ("2026-01-10T00:00:00+00:00", "2026-02-10T00:00:00+00:00", "changed"),
        ("exposed port", "8080/tcp"): ("8080/tcp", None, "removed"),
        ("exposed port", "9090/tcp"): (None, "9090/tcp", "added"),
    }
    layers = [(row.digest, row.status, row.created_by) for row in image.layers]
    assert layers == [
        (new.layer_digests[0], "shared", "ADD base.tar /"),
        (new.layer_digests[1], "shared", "COPY app /srv/app"),
        (new.layer_digests[2], "added", "RUN make assets"),
    ]
    assert image.added_size == image.layers[2].size > 0
    assert image.removed_size == 0

    backwards = compare_manifests(repository, comparison.after, comparison.before).images[0]
    assert [row.status for row in backwards.layers] == ["shared", "shared", "removed"]


def test_indexes_are_compared_platform_by_platform(dashboard, pusher, repo_name):
    pusher.push_index(repo_name, ("1.0",), unique=f"{repo_name}-a", platforms=[("linux", "amd64", None), ("linux", "arm64", "v8")])
    pusher.push_index(repo_name, ("2.0",), unique=f"{repo_name}-b", platforms=[("linux", "amd64", None), ("linux", "s390x", None)])
    repository = dashboard.sync(repo_name)

    comparison = compare_manifests(repository, resolve_reference(repository, "1.0"), resolve_reference(repository, "2.0"))

    by_platform = {image.platform: image for image in comparison.images}
    assert sorted(by_platform) == ["linux/amd64", "linux/arm64/v8", "linux/s390x"]
    assert by_platform["linux/arm64/v8"].problem == "Only in the older version."
    assert by_platform["linux/s390x"].problem == "Only in the newer version."
    amd64 = by_platform["linux/amd64"]
    assert not amd64.problem
    assert {row.status for row in amd64.layers} == {"added", "removed"}  # different layer bytes


def test_an_image_and_an_index_are_compared_on_the_shared_platform(dashboard, pusher, repo_name):
    pusher.push_image(repo_name, ("single",), unique=repo_name)
    pusher.push_index(repo_name, ("multi",), unique=repo_name)
    repository = dashboard.sync(repo_name)

    comparison = compare_manifests(
        repository, resolve_reference(repository, "single"), resolve_reference(repository, "multi")
    )

    assert "multi-arch index" in comparison.note
    amd64 = next(image for image in comparison.images if image.platform == "linux/amd64")
    # Same `unique` and platform: the index's amd64 image is the single image.
    assert amd64.identical


def test_the_compare_page_reads_only_the_cache(two_images, dashboard, people, client, settings):
    repository, old, new = two_images
    dead = f"http://127.0.0.1:{free_port()}"
    Registry.objects.filter(pk=dashboard.registry.pk).update(url=dead)
    settings.REGISTRY_URL = dead
    client.force_login(people.viewer)
    url = reverse("dashboard:compare", args=[repository.name])

    page = client.get(url, {"from": "1.0", "to": new.digest})

    assert page.status_code == 200
    html = page.content.decode()
    assert "RUN make assets" in html and "MODE" in html and "green" in html
    assert client.get(url).status_code == 200  # the empty form
    assert client.get(url, {"from": "1.0"}).status_code == 400
    assert client.get(url, {"from": "../../etc", "to": "1.0"}).status_code == 400
    assert client.get(url, {"from": "1.0", "to": "9.9"}).status_code == 404
    assert client.get(url, {"from": "1.0", "to": "sha256:" + "0" * 64}).status_code == 404
    client.force_login(people.outsider)
    assert client.get(url, {"from": "1.0", "to": "2.0"}).status_code == 404

"""Storage figures against a real registry: each figure equals the sum computed here straight
from the manifests the registry serves."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard import storage
from dashboard.models import ApiToken, DeletedVersion, Manifest, ManifestBlob, Repository, Role, StorageSample
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from tests.personas import make_user
from tests.rollback_support import Dashboard, dashboard, people  # noqa: F401 (fixtures)
from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    ImagePusher,
    make_layer,
    sha256_digest,
)
from tests.support.registry_server import start_registry

pytestmark = pytest.mark.django_db

# Session, user, registry, the state and the four aggregates, pending garbage collection (two);
# the API has its token lookups instead; the growth page its samples, deletes and retention runs.
STORAGE_QUERY_BOUND = 10


@pytest.fixture(autouse=True)
def fresh_cache():
    """Figures are kept per process; a test's database starts over, so do they."""
    storage._computed.clear()


def layer(name: str, size: int = 3000) -> bytes:
    return make_layer(f"{name}.bin", random.Random(name).randbytes(size))[0]


def push_built(pusher: ImagePusher, repo: str, tag: str | None, layers: list[bytes], note: str, arch: str = "amd64") -> str:
    """An image of exactly these layers (shared bytes are the same blob), tagged or by digest."""
    config = json.dumps(
        {"architecture": arch, "os": "linux", "config": {"Labels": {"note": note}}, "rootfs": {"type": "layers"}}
    ).encode()
    for blob in [config, *layers]:
        pusher.upload_blob(repo, blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER, "digest": sha256_digest(blob), "size": len(blob)} for blob in layers],
    }
    raw = json.dumps(manifest, indent=3).encode()
    return pusher.push_raw_manifest(repo, tag or sha256_digest(raw), raw, DOCKER_MANIFEST)


def push_list(pusher: ImagePusher, repo: str, tag: str, children: list[str]) -> str:
    entries = []
    for child, arch in zip(children, ["amd64", "arm64"]):
        raw = fetch(pusher, repo, child)
        entries.append(
            {"mediaType": DOCKER_MANIFEST, "digest": child, "size": len(raw), "platform": {"os": "linux", "architecture": arch}}
        )
    raw = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries}, indent=3).encode()
    return pusher.push_raw_manifest(repo, tag, raw, DOCKER_LIST)


def fetch(pusher: ImagePusher, repo: str, reference: str) -> bytes:
    response = pusher.session.get(
        f"{pusher.base_url}/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}, timeout=10
    )
    response.raise_for_status()
    return response.content


def registry_blobs(pusher: ImagePusher, repo: str, digests: list[str]) -> dict[str, int]:
    """digest -> size of every blob these manifests (and an index's platform images) need, read
    from the registry: the manifests' own bytes, configs, layers."""
    blobs: dict[str, int] = {}
    wanted = list(digests)
    while wanted:
        digest = wanted.pop()
        raw = fetch(pusher, repo, digest)
        blobs[digest] = len(raw)
        document = json.loads(raw)
        if "config" in document:
            blobs[document["config"]["digest"]] = document["config"]["size"]
        blobs.update((entry["digest"], entry["size"]) for entry in document.get("layers", []))
        wanted.extend(entry["digest"] for entry in document.get("manifests", []))
    return blobs


@dataclass
class Scene:
    a: str
    c: str
    d: str
    previous: str  # a's untagged previous digest of tag 1.0
    index: str
    blobs: dict[str, dict[str, int]]  # repository -> digest -> size, all cached manifests
    tagged: dict[str, dict[str, int]]  # repository -> blobs its tagged manifests need


@pytest.fixture
def scene(dashboard: Dashboard, pusher: ImagePusher, make_repo_name) -> Scene:
    """Two repositories of one namespace on a shared base layer; `a` keeps an untagged previous
    digest for rollback; `c` uses one layer in two tags; `d` (another namespace) holds a
    two-platform list whose platforms share the base layer too."""
    namespace = make_repo_name()
    a, c, d = f"{namespace}/a", f"{namespace}/c", f"{make_repo_name()}/d"
    base = layer(f"{namespace}-base", 20_000)
    previous = push_built(pusher, a, "1.0", [base, layer(f"{a}-old")], "a old")
    dashboard.sync(a)
    current = push_built(pusher, a, "1.0", [base, layer(f"{a}-new")], "a new")
    dashboard.sync(a)
    twice = layer(f"{c}-twice", 5000)
    c1 = push_built(pusher, c, "1", [base, twice], "c one")
    c2 = push_built(pusher, c, "2", [twice, layer(f"{c}-own")], "c two")
    dashboard.sync(c)
    children = [
        push_built(pusher, d, None, [base, layer(f"{d}-{arch}")], f"d {arch}", arch=arch) for arch in ("amd64", "arm64")
    ]
    index = push_list(pusher, d, "multi", children)
    dashboard.sync(d)
    tagged = {
        a: registry_blobs(pusher, a, [current]),
        c: registry_blobs(pusher, c, [c1, c2]),
        d: registry_blobs(pusher, d, [index]),
    }
    blobs = {**tagged, a: tagged[a] | registry_blobs(pusher, a, [previous])}
    return Scene(a, c, d, previous, index, blobs, tagged)


def expected(scene: Scene) -> dict[str, storage.Usage]:
    usages = {}
    for name, blobs in scene.blobs.items():
        elsewhere = set().union(*(other for other_name, other in scene.blobs.items() if other_name != name))
        usages[name] = storage.Usage(
            name,
            referenced=sum(blobs.values()),
            exclusive=sum(size for digest, size in blobs.items() if digest not in elsewhere),
            untagged=sum(size for digest, size in blobs.items() if digest not in scene.tagged[name]),
            tags=Repository.objects.get(name=name).tag_count,
        )
    return usages


def test_figures_equal_sums_over_the_registrys_manifests(scene, dashboard, people):
    overview = storage.overview(people.viewer, dashboard.registry)

    mine = {usage.name: usage for usage in overview.repositories if usage.name in scene.blobs}
    assert mine == expected(scene)
    every_blob = {digest: size for blobs in scene.blobs.values() for digest, size in blobs.items()}
    assert overview.total == sum(every_blob.values())
    # The untagged previous digest holds its own layer, config and manifest; the rest is tagged.
    assert mine[scene.a].untagged > 0 and mine[scene.c].untagged == mine[scene.d].untagged == 0
    namespace = scene.a.rpartition("/")[0]
    [usage] = [usage for usage in overview.namespaces if usage.name == namespace]
    in_namespace = scene.blobs[scene.a] | scene.blobs[scene.c]
    outside = scene.blobs[scene.d]
    assert (usage.referenced, usage.exclusive, usage.tags) == (
        sum(in_namespace.values()),
        sum(size for digest, size in in_namespace.items() if digest not in outside),
        3,
    )
    # The base layer is the largest blob three repositories use.
    [base] = [blob for blob in overview.shared_blobs if len(blob.repositories) == 3]
    assert base.repositories == sorted([scene.a, scene.c, scene.d]) and base.size == max(every_blob.values())


def test_a_multi_arch_index_counts_the_layers_its_platforms_share_once(scene):
    index = Manifest.objects.get(repository__name=scene.d, digest=scene.index)
    # The registry's own bytes: the list, and each platform's manifest, config and layers once.
    assert index.size == sum(scene.blobs[scene.d].values())
    children = [json.loads(bytes(index.raw))["manifests"][i]["digest"] for i in range(2)]
    each = sum(Manifest.objects.get(repository__name=scene.d, digest=child).size for child in children)
    assert index.size < len(index.raw) + each  # what adding the platforms' sizes said


def test_deleting_a_version_frees_exactly_its_exclusive_blobs(scene, dashboard, people, client, pusher):
    before = storage.overview(people.viewer, dashboard.registry)
    # Its layer, config and manifest are its own; the base layer stays for the others.
    exclusive = {
        digest: size
        for digest, size in registry_blobs(pusher, scene.a, [scene.previous]).items()
        if digest not in scene.tagged[scene.a] and all(digest not in scene.blobs[other] for other in (scene.c, scene.d))
    }
    client.force_login(people.maintainer)
    url = reverse("dashboard:delete-version", args=[scene.a, scene.previous])

    page = client.get(url)
    assert page.context["freed"]["alone"] == sum(exclusive.values())
    assert client.post(url, {"confirm": scene.a}).status_code == 302

    after = client.get(reverse("dashboard:storage")).context["overview"]
    assert before.total - after.total == sum(exclusive.values())
    [a_before] = [usage for usage in before.repositories if usage.name == scene.a]
    [a_after] = [usage for usage in after.repositories if usage.name == scene.a]
    assert a_before.exclusive - a_after.exclusive == sum(exclusive.values())
    assert a_after.untagged == 0
    assert DeletedVersion.objects.get(digest=scene.previous).freed_bytes == sum(exclusive.values())


def test_the_page_shows_only_what_the_user_may_see(scene, dashboard, client, settings):
    settings.DASHBOARD_DEFAULT_ROLE = None
    user = make_user("ursula", pattern=scene.a, role=Role.VIEWER)
    client.force_login(user)

    page = client.get(reverse("dashboard:storage"))

    overview = page.context["overview"]
    html = page.content.decode()
    assert [usage.name for usage in overview.repositories] == [scene.a]
    # The total is a's own blobs: nothing of c or d, not even the base layer's share.
    assert overview.total == sum(scene.blobs[scene.a].values())
    assert scene.c not in html and scene.d not in html
    assert "only the repositories you may see" in html
    assert overview.shared_blobs == []
    [namespace] = overview.namespaces
    assert namespace.referenced == sum(scene.blobs[scene.a].values())


def test_the_table_sorts_and_a_bad_sort_is_a_400(scene, admin_client):
    url = reverse("dashboard:storage")
    page = admin_client.get(url, {"sort": "referenced"})
    names = [usage.name for usage in page.context["page"].object_list]
    referenced = [usage.referenced for usage in page.context["page"].object_list]
    assert referenced == sorted(referenced, reverse=True) and scene.a in names
    fragment = admin_client.get(url, {"sort": "tags"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="storage-table")
    assert "<html" not in fragment.content.decode() and scene.c in fragment.content.decode()
    assert admin_client.get(url, {"sort": "nonsense"}).status_code == 400


def test_the_data_migration_fills_the_table_from_existing_rows(scene):
    from importlib import import_module

    migration = import_module("dashboard.migrations.0004_storage")
    rows = sorted(ManifestBlob.objects.values_list("manifest_id", "digest", "size", "kind"))
    index = Manifest.objects.get(repository__name=scene.d, digest=scene.index)
    ManifestBlob.objects.all().delete()
    Manifest.objects.filter(pk=index.pk).update(size=0)

    migration.fill_manifest_blobs(apps, None)

    assert sorted(ManifestBlob.objects.values_list("manifest_id", "digest", "size", "kind")) == rows
    assert Manifest.objects.get(pk=index.pk).size == index.size


def test_the_repository_page_says_what_is_exclusive_and_shared(scene, client, settings):
    settings.DASHBOARD_DEFAULT_ROLE = None
    client.force_login(make_user("ursula", pattern=f"{scene.a.rpartition('/')[0]}/*", role=Role.VIEWER))
    usage = expected(scene)[scene.c]

    html = client.get(reverse("dashboard:repository", args=[scene.c])).content.decode()

    # Shared with a (visible) and d: only the repository the user may see is counted.
    exclusive, shared = (f'title="{value:,} bytes"' for value in (usage.exclusive, usage.shared))
    assert f"{exclusive}" in html and shared in html
    assert "shared with 1 repository</a>" in html


def test_the_catalog_sorts_by_exclusive_size_and_shows_exclusive_and_shared_bytes(scene, admin_client):
    page = admin_client.get(reverse("dashboard:catalog"), {"sort": "exclusive"})
    names = [repository.name for repository in page.context["page"].object_list]
    usages = expected(scene)
    assert names == sorted(usages, key=lambda name: (-usages[name].exclusive, name))
    html = page.content.decode()
    for name in names:
        row = html[html.index(f'href="{reverse("dashboard:repository", args=[name])}"') :].split("</tr>")[0]
        exclusive, shared = (f'title="{value:,} bytes"' for value in (usages[name].exclusive, usages[name].shared))
        assert row.index(exclusive) < row.index(shared), name


def test_the_api_reports_only_what_the_tokens_user_may_see(scene, settings):
    settings.DASHBOARD_DEFAULT_ROLE = None
    namespace = scene.a.rpartition("/")[0]
    token = ApiToken.issue(make_user("ursula", pattern=f"{namespace}/*", role=Role.VIEWER), "ci")[1]
    url = reverse("dashboard:api-storage")

    answer = Client().get(url, headers={"Authorization": f"Bearer {token}"}).json()

    usages = expected(scene)
    visible = scene.blobs[scene.a] | scene.blobs[scene.c]
    assert answer["total_bytes"] == sum(visible.values())
    assert sorted(answer["repositories"], key=lambda row: row["name"]) == [
        {
            "name": name,
            "referenced_bytes": usages[name].referenced,
            "exclusive_bytes": usages[name].exclusive,
            "shared_bytes": usages[name].shared,
            "untagged_bytes": usages[name].untagged,
            "tags": usages[name].tags,
        }
        for name in (scene.a, scene.c)
    ]
    assert [row["name"] for row in answer["namespaces"]] == [namespace]
    assert scene.d not in json.dumps(answer)
    assert Client().get(url).status_code == 401


# Growth -------------------------------------------------------------------------------------


def test_three_daily_snapshots_draw_three_points_and_escape_every_name(scene, dashboard, admin_client):
    hostile = Repository.objects.create(registry=dashboard.registry, name='evil/<script>alert("x")</script>')
    for day in (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 5)):
        assert storage.take_snapshot(dashboard.registry, day)
    assert not storage.take_snapshot(dashboard.registry, date(2026, 3, 5))  # one a day
    DeletedVersion.objects.create(
        registry=dashboard.registry, repository=scene.a, digest=scene.previous, deleted_at=datetime(2026, 3, 2, 12, tzinfo=UTC)
    )
    StorageSample.objects.filter(name=hostile.name).update(bytes=10**12)  # among the top repositories

    page = admin_client.get(reverse("dashboard:storage-growth"))

    svg = page.context["chart"]
    total = page.context["growth"].series[0]
    assert total.name == "Registry total" and [day for day, _ in total.points] == [
        date(2026, 3, 1),
        date(2026, 3, 2),
        date(2026, 3, 5),
    ]
    assert svg.count("Registry total on ") == 3 and svg.count('class="chart-point"') >= 3
    assert total.points[-1][1] == storage.overview(make_user("root", superuser=True), dashboard.registry).total
    assert "<script>" not in svg and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in svg
    assert 'class="chart-delete"' in svg and "2026-03-02: 1 version deleted" in svg


def test_snapshots_keep_400_days_and_the_sync_takes_the_missing_one(settings, tmp_path):
    server = start_registry(tmp_path / "registry")  # its own: a full sync reads only this test's repository
    try:
        settings.REGISTRY_URL = server.url
        registry = configured_registry()
        ImagePusher(server.url).push_image("growth", ["1"], unique=str(tmp_path))
        old = timezone.localdate() - timedelta(days=401)
        storage.take_snapshot(registry, old)
        with client_for(registry) as client:
            sync_registry(registry, client, workers=2)
        assert not StorageSample.objects.filter(day=old).exists()
        today = StorageSample.objects.get(day=timezone.localdate(), scope="repository", name="growth")
        assert today.bytes == storage.overview(make_user("root", superuser=True), registry).total > 0

        StorageSample.objects.all().delete()
        out = io.StringIO()
        call_command("storage_snapshot", stdout=out)
        assert "Took the storage snapshot" in out.getvalue()
        assert StorageSample.objects.filter(day=timezone.localdate(), scope="registry").count() == 1
        call_command("storage_snapshot", stdout=out)
        assert "exists already" in out.getvalue()
    finally:
        server.stop()


def test_the_growth_chart_draws_only_visible_repositories(scene, dashboard, client, settings):
    storage.take_snapshot(dashboard.registry, date(2026, 3, 1))
    settings.DASHBOARD_DEFAULT_ROLE = None
    client.force_login(make_user("ursula", pattern=scene.a, role=Role.VIEWER))

    page = client.get(reverse("dashboard:storage-growth"))

    assert [series.name for series in page.context["growth"].series] == [scene.a]
    html = page.content.decode()
    assert "Registry total" not in html and scene.c not in html and scene.d not in html
    assert "Only repositories you may see are drawn" in html


def test_storage_page_and_api_queries_do_not_grow_with_repositories(
    scene, dashboard, pusher, make_repo_name, admin_client, django_assert_max_num_queries
):
    token = ApiToken.issue(make_user("root", superuser=True), "ci")[1]
    pages = [
        (admin_client, reverse("dashboard:storage"), {}),
        (Client(), reverse("dashboard:api-storage"), {"Authorization": f"Bearer {token}"}),
        (admin_client, reverse("dashboard:storage-growth"), {}),
    ]

    def queries() -> list[int]:
        counts = []
        for client, url, headers in pages:
            storage._computed.clear()  # the figures computed, not the kept ones
            with django_assert_max_num_queries(STORAGE_QUERY_BOUND) as captured:
                assert client.get(url, headers=headers).status_code == 200
            counts.append(len(captured.captured_queries))
        return counts

    storage.take_snapshot(dashboard.registry, date(2026, 3, 1))
    Client().get(reverse("dashboard:api-storage"), headers=pages[1][2])  # records the token's first use
    few = queries()
    for i in range(4):
        name = make_repo_name(f"{scene.a.rpartition('/')[0]}-{i}/")
        pusher.push_image(name, ["1", "2"], unique=name)
        dashboard.sync(name)
    storage.take_snapshot(dashboard.registry, date(2026, 3, 2))
    assert queries() == few


def test_the_tag_confirmation_says_what_deleting_its_version_would_free(scene, people, client, pusher):
    c2 = pusher.head_digest(scene.c, "2")
    c1_blobs = registry_blobs(pusher, scene.c, [pusher.head_digest(scene.c, "1")])
    others = scene.blobs[scene.a] | scene.blobs[scene.d] | c1_blobs
    own = {digest: size for digest, size in registry_blobs(pusher, scene.c, [c2]).items() if digest not in others}
    client.force_login(people.maintainer)

    page = client.get(reverse("dashboard:delete-tag", args=[scene.c, "2"]))

    # Its own layer, config and manifest; not the layer tag 1 uses too.
    assert page.context["version_frees"] == sum(own.values()) and len(own) == 3
    assert "nothing freed: the version stays stored" in page.content.decode()


def test_cached_figures_follow_every_change(scene, dashboard, people, pusher):
    """The figures are cached until the cache rows change: a tag moved, a version deleted."""
    before = storage.overview(people.viewer, dashboard.registry)
    assert storage.overview(people.viewer, dashboard.registry) == before

    # Tag 2 of c moves onto tag 1's digest: c2's own blobs become untagged-only.
    pusher.push_raw_manifest(scene.c, "2", fetch(pusher, scene.c, "1"), DOCKER_MANIFEST)
    dashboard.sync(scene.c)
    moved = storage.overview(people.viewer, dashboard.registry)
    [c_before] = [usage for usage in before.repositories if usage.name == scene.c]
    [c_after] = [usage for usage in moved.repositories if usage.name == scene.c]
    assert c_before.untagged == 0 and c_after.untagged > 0

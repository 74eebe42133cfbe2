"""Deleting one tag, a whole version, and many tags at once, against a real registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests
from django.test import Client
from django.urls import reverse

from dashboard import deletion, rollback
from dashboard.actions import ActionRefused
from dashboard.models import AuditEntry, DeletedVersion, Registry, Repository, Tag, TagHistory
from dashboard.registries import client_for, configured_registry
from dashboard.registry.mediatypes import TOMBSTONE_ARTIFACT_TYPE
from dashboard.sync import check_registry
from tests.personas import make_user
from tests.rollback_support import (  # noqa: F401 (fixtures)
    Dashboard,
    People,
    dashboard,
    people,
    proxied,
    proxy,
    skopeo,
)
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.images import ImagePusher, PushedImage
from tests.support.registry_server import RegistryServer

pytestmark = pytest.mark.django_db

JAN = datetime(2026, 1, 10, tzinfo=UTC)
FEB = datetime(2026, 2, 10, tzinfo=UTC)


def audit_rows(repo: str, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(repository=repo, action=action).order_by("id"))


def exists(pusher: ImagePusher, repo: str, digest: str) -> bool:
    return pusher.head_digest(repo, digest) is not None


def push(
    pusher: ImagePusher, repo: str, tags, *, kind: str = "docker", created: datetime = JAN, salt: str = ""
) -> PushedImage:
    unique = f"{repo}-{salt or tags[0]}"
    if kind == "docker-index":
        return pusher.push_index(repo, tags, fmt="docker", created=created, unique=unique)
    if kind == "oci-index":
        return pusher.push_index(repo, tags, fmt="oci", created=created, unique=unique)
    return pusher.push_image(repo, tags, fmt=kind, created=created, unique=unique)


def cached_tags(repo: str) -> list[str]:
    return sorted(Tag.objects.filter(repository__name=repo).values_list("name", flat=True))


# One tag ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["docker", "oci", "docker-index", "oci-index"])
def test_deleting_a_tag_keeps_the_other_tags_on_its_digest(kind, dashboard, people, pusher, repo_name):
    image = push(pusher, repo_name, ["1.0", "latest", "stable"], kind=kind)
    repository = dashboard.sync(repo_name)

    deletion.delete_tag(None, people.maintainer, repository, "latest", image.digest)

    assert pusher.tags(repo_name) == ["1.0", "stable"]
    assert pusher.head_digest(repo_name, "1.0") == image.digest
    assert pusher.head_digest(repo_name, "stable") == image.digest
    assert all(exists(pusher, repo_name, child.digest) for child in image.children)
    assert cached_tags(repo_name) == ["1.0", "stable"]
    # The repository page paginates by this count.
    assert Repository.objects.get(pk=repository.pk).tag_count == 2
    period = TagHistory.objects.get(repository=repository, tag="latest")
    assert (period.until is not None, period.ended_by, period.ended_by_user) == (True, "user", people.maintainer)
    entry = audit_rows(repo_name, "delete_tag")[-1]
    assert (entry.outcome, entry.user, entry.tag, entry.digest_before) == (
        "ok",
        people.maintainer,
        "latest",
        image.digest,
    )


def test_the_digest_guard_refuses_after_a_repush_and_the_new_image_stays(dashboard, people, pusher, repo_name):
    old = push(pusher, repo_name, ["latest"], salt="old")
    repository = dashboard.sync(repo_name)
    new = push(pusher, repo_name, ["latest"], salt="new", created=FEB)  # CI pushed after the page was loaded

    with pytest.raises(ActionRefused) as refused:
        deletion.delete_tag(None, people.maintainer, repository, "latest", old.digest)

    assert refused.value.status == 409
    assert new.digest in refused.value.message
    assert pusher.head_digest(repo_name, "latest") == new.digest
    assert all(
        requests.head(f"{dashboard.server.url}/v2/{repo_name}/blobs/{blob}", timeout=10).status_code == 200
        for blob in [new.config_digest, *new.layer_digests]
    )
    # The refusal re-read the tag, so the page explaining it shows where it points now.
    assert Tag.objects.get(repository=repository, name="latest").manifest.digest == new.digest
    assert audit_rows(repo_name, "delete_tag")[-1].outcome == "refused"


def test_a_push_between_the_guard_and_the_tombstone_is_not_deleted(
    proxied: Dashboard, proxy: FaultProxy, people, pusher, repo_name
):
    old = push(pusher, repo_name, ["1.0", "latest"])
    repository = proxied.sync(repo_name)
    pushed = []
    # CI pushes `latest` after the digest guard's HEAD, when the delete itself starts.
    proxy.set_fault(
        Fault(
            "hook",
            methods={"DELETE"},
            path=rf"/{repo_name}/manifests/latest$",
            times=1,
            action=lambda: pushed.append(push(pusher, repo_name, ["latest"], salt="ci", created=FEB)),
        )
    )

    with pytest.raises(ActionRefused) as refused:
        deletion.delete_tag(None, people.maintainer, repository, "latest", old.digest)

    (ci,) = pushed
    assert refused.value.status == 409 and ci.digest in refused.value.message
    assert pusher.head_digest(repo_name, "latest") == ci.digest
    assert pusher.head_digest(repo_name, "1.0") == old.digest
    assert proxy.count("PUT", r"/manifests/latest$") == 0  # no tombstone was pushed
    assert Tag.objects.get(repository=repository, name="latest").manifest.digest == ci.digest
    assert audit_rows(repo_name, "delete_tag")[-1].outcome == "refused"


def delete_behind_the_back(dashboard: Dashboard, repo: str, digest: str) -> None:
    requests.delete(f"{dashboard.server.url}/v2/{repo}/manifests/{digest}", timeout=10).raise_for_status()


def test_a_tag_or_version_deleted_by_someone_else_mid_delete_is_a_refusal_not_a_registry_failure(
    proxied: Dashboard, proxy: FaultProxy, people, pusher, repo_name
):
    tagged = push(pusher, repo_name, ["1.0", "latest"])
    version = push(pusher, repo_name, ["2.0"], salt="two")
    repository = proxied.sync(repo_name)
    # Each right after the guard's HEADs, as the delete itself starts.
    proxy.set_fault(
        Fault("hook", methods={"DELETE"}, path=r"/manifests/latest$", times=1,
              action=lambda: delete_behind_the_back(proxied, repo_name, tagged.digest))
    )  # fmt: skip
    with pytest.raises(ActionRefused) as tag_refused:
        deletion.delete_tag(None, people.maintainer, repository, "latest", tagged.digest)
    proxy.set_fault(
        Fault("hook", methods={"DELETE"}, path=f"/manifests/{version.digest}$", times=1,
              action=lambda: delete_behind_the_back(proxied, repo_name, version.digest))
    )  # fmt: skip
    with pytest.raises(ActionRefused) as version_refused:
        deletion.delete_version(None, people.maintainer, repository, version.digest, ["2.0"])

    assert (tag_refused.value.status, version_refused.value.status) == (409, 410)
    assert "latest no longer exists" in tag_refused.value.message
    assert pusher.tags(repo_name) == []
    assert [e.outcome for e in audit_rows(repo_name, "delete_tag") + audit_rows(repo_name, "delete_version")] == [
        "refused",
        "refused",
    ]


def test_a_pinned_version_cannot_lose_a_tag_or_be_deleted(dashboard, people, pusher, repo_name):
    image = push(pusher, repo_name, ["1.0", "production"])
    repository = dashboard.sync(repo_name)
    rollback.pin_version(
        None, people.operator, dashboard.registry, repository, digest=image.digest, reason="release 1.0"
    )

    for attempt in (
        lambda: deletion.delete_tag(None, people.maintainer, repository, "production", image.digest),
        lambda: deletion.delete_version(None, people.maintainer, repository, image.digest, ["1.0", "production"]),
    ):
        with pytest.raises(ActionRefused) as refused:
            attempt()
        assert refused.value.status == 409
        assert "release 1.0" in refused.value.message and "olivia" in refused.value.message
        assert "unpin" in refused.value.message

    assert pusher.tags(repo_name) == ["1.0", "production"]
    assert [e.outcome for e in AuditEntry.objects.filter(repository=repo_name, action__startswith="delete_")] == [
        "refused",
        "refused",
    ]


@pytest.fixture
def nodelete(settings, registry_nodelete: RegistryServer) -> Dashboard:
    settings.REGISTRY_URL = registry_nodelete.url
    registry = configured_registry()
    # The delete probe runs with a full sync; Dashboard.sync skips it, so probe once here.
    check_registry(registry, client_for(registry))
    return Dashboard(registry, registry_nodelete)


def test_a_registry_with_deletes_disabled_says_how_to_enable_them_and_changes_nothing(
    nodelete, people, nodelete_pusher, repo_name, client
):
    image = push(nodelete_pusher, repo_name, ["1.0", "latest"])
    repository = nodelete.sync(repo_name)
    assert Registry.objects.get(pk=nodelete.registry.pk).delete_enabled is False
    client.force_login(people.maintainer)

    page = client.get(reverse("dashboard:delete-tag", args=[repo_name, "latest"])).content.decode()
    assert "Deleting is disabled on this registry" in page and "REGISTRY_STORAGE_DELETE_ENABLED=true" in page

    for attempt in (
        lambda: deletion.delete_tag(None, people.maintainer, repository, "latest", image.digest),
        lambda: deletion.delete_version(None, people.maintainer, repository, image.digest, ["1.0", "latest"]),
    ):
        with pytest.raises(ActionRefused) as refused:
            attempt()
        assert "storage.delete.enabled: true" in refused.value.message
        assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in refused.value.message

    assert nodelete_pusher.tags(repo_name) == ["1.0", "latest"]
    assert nodelete_pusher.head_digest(repo_name, "latest") == image.digest
    assert cached_tags(repo_name) == ["1.0", "latest"]
    assert [e.outcome for e in audit_rows(repo_name, "delete_tag") + audit_rows(repo_name, "delete_version")] == [
        "failed",
        "failed",
    ]


def test_a_tag_left_on_a_tombstone_is_a_delete_to_finish_not_a_move(dashboard, people, pusher, repo_name, client):
    image = push(pusher, repo_name, ["1.0", "latest"])
    repository = dashboard.sync(repo_name)
    # What a delete cut off between its two last steps leaves (test_faults.py cuts a real one off).
    tombstone = pusher.push_artifact(repo_name, "latest", artifact_type=TOMBSTONE_ARTIFACT_TYPE)
    dashboard.sync(repo_name)
    client.force_login(people.maintainer)
    form = {"tags": ["latest"], "digest:latest": image.digest}

    with pytest.raises(deletion.DeleteUnfinished) as refused:
        deletion.delete_version(None, people.maintainer, repository, image.digest, ["1.0", "latest"])
    preview = client.post(reverse("dashboard:bulk-delete-preview", args=[repo_name]), form)
    (row,) = preview.context["rows"]
    response = client.post(reverse("dashboard:bulk-delete", args=[repo_name]), form)

    assert "did not finish" in refused.value.message and exists(pusher, repo_name, image.digest)
    assert row.unfinished and row.will_delete
    assert [outcome.outcome for outcome in response.context["outcomes"]] == ["ok"]
    assert pusher.tags(repo_name) == ["1.0"]
    assert not exists(pusher, repo_name, tombstone.digest)
    assert exists(pusher, repo_name, image.digest)
    assert cached_tags(repo_name) == ["1.0"]
    assert tombstone.digest in audit_rows(repo_name, "delete_tag")[-1].reason


# A whole version ----------------------------------------------------------------------------


def test_deleting_a_version_removes_its_digest_and_every_tag_on_it(dashboard, people, pusher, repo_name):
    old = push(pusher, repo_name, ["1.0", "latest"])
    kept = push(pusher, repo_name, ["2.0"])
    repository = dashboard.sync(repo_name)

    deleted = deletion.delete_version(None, people.maintainer, repository, old.digest, ["1.0", "latest"])

    assert pusher.tags(repo_name) == ["2.0"]
    assert not exists(pusher, repo_name, old.digest)
    assert exists(pusher, repo_name, kept.digest)
    assert cached_tags(repo_name) == ["2.0"]
    assert Repository.objects.get(pk=repository.pk).tag_count == 1
    # Its own layers, config and manifest: nothing else in the registry shares them.
    assert deleted.freed_bytes == old.size
    assert DeletedVersion.objects.get(repository=repo_name).freed_bytes == old.size
    entry = audit_rows(repo_name, "delete_version")[-1]
    assert (entry.outcome, entry.digest_before) == ("ok", old.digest)
    assert "1.0, latest" in entry.reason


def test_deleting_a_version_is_refused_when_a_listed_tag_moved(dashboard, people, pusher, repo_name):
    old = push(pusher, repo_name, ["1.0", "latest"])
    repository = dashboard.sync(repo_name)
    new = push(pusher, repo_name, ["latest"], salt="new")

    with pytest.raises(ActionRefused) as refused:
        deletion.delete_version(None, people.maintainer, repository, old.digest, ["1.0", "latest"])

    assert refused.value.status == 409
    assert exists(pusher, repo_name, old.digest)
    assert pusher.head_digest(repo_name, "latest") == new.digest
    assert pusher.head_digest(repo_name, "1.0") == old.digest


def test_deleting_a_version_is_refused_when_an_unlisted_tag_points_at_it(dashboard, people, pusher, repo_name):
    image = push(pusher, repo_name, ["1.0"])
    repository = dashboard.sync(repo_name)
    pusher.tag(repo_name, image, "hotfix")  # not synced: the page did not list it

    with pytest.raises(ActionRefused) as refused:
        deletion.delete_version(None, people.maintainer, repository, image.digest, ["1.0"])

    assert refused.value.status == 409 and "hotfix" in refused.value.message
    assert pusher.tags(repo_name) == ["1.0", "hotfix"]


def test_a_tag_moved_onto_the_version_by_another_tool_is_not_deleted_with_it(
    dashboard, people, pusher, repo_name, client
):
    a = push(pusher, repo_name, ["v1.0"], salt="a")
    b = push(pusher, repo_name, ["production"], salt="b", created=FEB)
    repository = dashboard.sync(repo_name)
    # Moved with skopeo, no notification: the cache still has production on B.
    host = dashboard.server.host
    skopeo(
        "copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
        f"docker://{host}/{repo_name}@{a.digest}", f"docker://{host}/{repo_name}:production",
    )  # fmt: skip
    assert pusher.head_digest(repo_name, "production") == a.digest
    assert Tag.objects.get(repository=repository, name="production").manifest.digest == b.digest
    client.force_login(people.maintainer)
    url = reverse("dashboard:delete-version", args=[repo_name, a.digest])
    assert "production" not in client.get(url).context["tags"]

    response = client.post(url, {"tags": ["v1.0"], "confirm": repo_name})

    assert response.status_code == 409
    assert "production also points at this version now; reload to see it" in response.content.decode()
    assert pusher.tags(repo_name) == ["production", "v1.0"]
    assert exists(pusher, repo_name, a.digest) and exists(pusher, repo_name, b.digest)
    # The refusal synced the repository: the page shows production on the version now.
    assert cached_tags(repo_name) == ["production", "v1.0"]
    assert Tag.objects.get(repository=repository, name="production").manifest.digest == a.digest
    entry = audit_rows(repo_name, "delete_version")[-1]
    assert (entry.outcome, entry.digest_before) == ("refused", a.digest)
    assert "production" in entry.reason
    assert not DeletedVersion.objects.filter(repository=repo_name).exists()


def test_deleting_a_version_that_is_already_gone_is_refused(dashboard, people, pusher, repo_name):
    image = push(pusher, repo_name, ["1.0"])
    repository = dashboard.sync(repo_name)
    requests.delete(f"{dashboard.server.url}/v2/{repo_name}/manifests/{image.digest}", timeout=10).raise_for_status()

    with pytest.raises(ActionRefused) as refused:
        deletion.delete_version(None, people.maintainer, repository, image.digest, ["1.0"])

    assert refused.value.status == 410
    assert not DeletedVersion.objects.filter(repository=repo_name).exists()


@pytest.mark.parametrize("with_children", [False, True])
def test_deleting_an_index_leaves_or_deletes_its_platform_images(with_children, dashboard, people, pusher, repo_name):
    index = push(pusher, repo_name, ["1.0"], kind="oci-index")
    repository = dashboard.sync(repo_name)
    children = deletion.index_children(repository, [index.digest])[index.digest]
    assert sorted(child.digest for child in children if child.orphaned) == sorted(c.digest for c in index.children)

    deleted = deletion.delete_version(
        None,
        people.maintainer,
        repository,
        index.digest,
        ["1.0"],
        children=[c.digest for c in children] if with_children else [],
    )

    assert not exists(pusher, repo_name, index.digest)
    assert [exists(pusher, repo_name, child.digest) for child in index.children] == [not with_children] * 2
    assert deleted.freed_bytes == (index.size if with_children else len(index.raw))


def test_a_platform_image_another_index_uses_is_not_deleted(dashboard, people, pusher, repo_name):
    index = push(pusher, repo_name, ["1.0"], kind="oci-index")
    # The same platform images under a second index (for example a re-pushed, re-annotated one).
    annotated = json.loads(index.raw) | {"annotations": {"org.example.rebuilt": "yes"}}
    other = pusher.push_raw_manifest(repo_name, "2.0", json.dumps(annotated).encode(), index.media_type)
    repository = dashboard.sync(repo_name)
    children = deletion.index_children(repository, [index.digest])[index.digest]
    assert [child.kept_because for child in children] == [f"also used by {other}"] * 2

    deletion.delete_version(
        None, people.maintainer, repository, index.digest, ["1.0"], children=[c.digest for c in children]
    )

    assert all(exists(pusher, repo_name, child.digest) for child in index.children)
    assert "something else uses it now" in audit_rows(repo_name, "delete_version")[-1].reason


# Many tags ----------------------------------------------------------------------------------


def test_bulk_delete_reports_a_moved_tag_and_a_pinned_one_and_deletes_the_rest(
    dashboard, people, pusher, repo_name, client
):
    images = {name: push(pusher, repo_name, [name]) for name in ("a", "b", "c", "d")}
    repository = dashboard.sync(repo_name)
    moved = push(pusher, repo_name, ["c"], salt="c-again")
    rollback.pin_version(
        None, people.operator, dashboard.registry, repository, digest=images["d"].digest, reason="keep d"
    )
    client.force_login(people.maintainer)
    form = {"tags": list(images), **{f"digest:{name}": image.digest for name, image in images.items()}}

    preview = client.post(reverse("dashboard:bulk-delete-preview", args=[repo_name]), form)
    assert preview.status_code == 200
    rows = {row.tag: row for row in preview.context["rows"]}
    assert [name for name, row in rows.items() if row.will_delete] == ["a", "b"]
    assert "moved since the page was loaded" in rows["c"].kept_because and "keep d" in rows["d"].kept_because
    assert pusher.tags(repo_name) == ["a", "b", "c", "d"]  # a preview changes nothing

    response = client.post(reverse("dashboard:bulk-delete", args=[repo_name]), form)

    assert response.status_code == 200
    outcomes = {outcome.tag: outcome.outcome for outcome in response.context["outcomes"]}
    assert outcomes == {"a": "ok", "b": "ok", "c": "refused", "d": "refused"}
    assert pusher.tags(repo_name) == ["c", "d"]
    assert pusher.head_digest(repo_name, "c") == moved.digest
    assert pusher.head_digest(repo_name, "d") == images["d"].digest
    assert [(e.tag, e.outcome) for e in audit_rows(repo_name, "delete_tag")] == [
        ("a", "ok"),
        ("b", "ok"),
        ("c", "refused"),
        ("d", "refused"),
    ]
    assert audit_rows(repo_name, "bulk_delete")[-1].reason == "2 of 4 tags deleted"


def test_bulk_delete_answers_htmx_with_the_results_block(dashboard, people, pusher, repo_name, client):
    image = push(pusher, repo_name, ["a", "b"])
    dashboard.sync(repo_name)
    client.force_login(people.maintainer)

    response = client.post(
        reverse("dashboard:bulk-delete", args=[repo_name]),
        {"tags": ["a"], "digest:a": image.digest},
        headers={"HX-Request": "true", "HX-Target": "bulk-results"},
    )

    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and "deleted" in html
    assert pusher.tags(repo_name) == ["b"]


# Pages and permissions ----------------------------------------------------------------------


def test_the_confirmation_shows_the_digest_and_the_siblings_that_stay(dashboard, people, pusher, repo_name, client):
    image = push(pusher, repo_name, ["1.0", "latest"])
    dashboard.sync(repo_name)
    client.force_login(people.maintainer)
    url = reverse("dashboard:delete-tag", args=[repo_name, "latest"])

    page = client.get(url).content.decode()
    assert image.digest in page and "1.0" in page and "the other tags on this digest stay" in page
    dialog = client.get(url, headers={"HX-Request": "true", "HX-Target": "delete-dialog"})
    assert "<html" not in dialog.content.decode() and image.digest in dialog.content.decode()

    response = client.post(url, {"digest": image.digest})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:repository", args=[repo_name])
    assert pusher.tags(repo_name) == ["1.0"]


def test_deleting_a_version_from_its_page_needs_the_repository_name_typed(dashboard, people, pusher, repo_name, client):
    image = push(pusher, repo_name, ["1.0", "latest"])
    dashboard.sync(repo_name)
    client.force_login(people.maintainer)
    url = reverse("dashboard:delete-version", args=[repo_name, image.digest])
    page = client.get(url).content.decode()
    assert "1.0" in page and "latest" in page and f"Type <code>{repo_name}</code>" in page

    wrong = client.post(url, {"tags": ["1.0", "latest"], "confirm": "something-else"})
    assert wrong.status_code == 400 and pusher.tags(repo_name) == ["1.0", "latest"]

    right = client.post(url, {"tags": ["1.0", "latest"], "confirm": repo_name})
    assert right.status_code == 302
    assert pusher.tags(repo_name) == []


def test_viewers_get_403_outsiders_404_and_nothing_changes(dashboard, people, pusher, repo_name, client):
    image = push(pusher, repo_name, ["1.0", "latest"])
    dashboard.sync(repo_name)
    tag_url = reverse("dashboard:delete-tag", args=[repo_name, "latest"])
    version_url = reverse("dashboard:delete-version", args=[repo_name, image.digest])
    bulk_url = reverse("dashboard:bulk-delete", args=[repo_name])
    bulk = {"tags": ["latest"], "digest:latest": image.digest}

    client.force_login(people.viewer)
    assert client.get(tag_url).status_code == 403
    assert client.post(tag_url, {"digest": image.digest}).status_code == 403
    assert client.post(version_url, {"tags": ["1.0", "latest"], "confirm": repo_name}).status_code == 403
    assert client.post(bulk_url, bulk).status_code == 403
    refused = client.post(reverse("dashboard:bulk-delete-preview", args=[repo_name]), bulk)
    assert refused.status_code == 403 and "<h1>Nothing was deleted</h1>" in refused.content.decode()
    client.force_login(people.outsider)
    assert client.get(tag_url).status_code == 404
    assert client.post(tag_url, {"digest": image.digest}).status_code == 404
    assert client.post(bulk_url, bulk).status_code == 404

    assert pusher.tags(repo_name) == ["1.0", "latest"]
    assert {e.outcome for e in AuditEntry.objects.filter(repository=repo_name)} == {"refused"}


def test_mutating_urls_refuse_get_and_posts_without_a_csrf_token(dashboard, people, pusher, repo_name):
    image = push(pusher, repo_name, ["latest"])
    dashboard.sync(repo_name)
    client = Client(enforce_csrf_checks=True)
    client.force_login(people.maintainer)

    for name, args in [
        ("dashboard:bulk-delete", [repo_name]),
        ("dashboard:bulk-delete-preview", [repo_name]),
        ("dashboard:retention-apply", []),
        ("dashboard:storage-gc-done", []),
    ]:
        assert client.get(reverse(name, args=args)).status_code == 405
    forged = client.post(reverse("dashboard:delete-tag", args=[repo_name, "latest"]), {"digest": image.digest})
    assert forged.status_code == 403
    assert (
        client.post(
            reverse("dashboard:bulk-delete", args=[repo_name]), {"tags": ["latest"], "digest:latest": image.digest}
        ).status_code
        == 403
    )
    assert pusher.tags(repo_name) == ["latest"]


def test_the_repository_page_offers_checkboxes_only_to_maintainers(dashboard, people, pusher, repo_name, client):
    push(pusher, repo_name, ["1.0", "latest"])
    dashboard.sync(repo_name)
    url = reverse("dashboard:repository", args=[repo_name])

    client.force_login(people.maintainer)
    html = client.get(url).content.decode()
    assert html.count('name="tags"') == 2 and 'name="digest:latest"' in html and 'form="bulk-delete"' in html
    assert "dashboard/delete.js" in html and "<script>" not in html
    client.force_login(people.viewer)
    html = client.get(url).content.decode()
    assert 'name="tags"' not in html and "Delete…" not in html and "bulk-delete" not in html


# Storage ------------------------------------------------------------------------------------


def test_the_storage_page_counts_deleted_versions_until_garbage_collection_is_recorded(
    dashboard, people, pusher, repo_name, client
):
    image = push(pusher, repo_name, ["1.0"])
    repository = dashboard.sync(repo_name)
    deletion.delete_version(None, people.maintainer, repository, image.digest, ["1.0"])
    admin = make_user("root", superuser=True)

    client.force_login(people.maintainer)
    page = client.get(reverse("dashboard:storage"))
    assert page.context["pending"].bytes == image.size and "garbage-collect" in page.content.decode()
    assert "--delete-untagged" in page.content.decode()
    assert deletion.pending_gc_in(repository) == (1, image.size)
    assert client.post(reverse("dashboard:storage-gc-done")).status_code == 403

    client.force_login(admin)
    assert client.post(reverse("dashboard:storage-gc-done")).status_code == 302
    assert client.get(reverse("dashboard:storage")).context["pending"].bytes == 0
    assert deletion.pending_gc_in(repository) == (0, 0)
    assert [e.outcome for e in AuditEntry.objects.filter(action="gc_done")] == ["ok", "refused"]

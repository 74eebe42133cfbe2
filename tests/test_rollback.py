"""Pins, restores (roll back a tag to an earlier digest), tag history and rollback candidates,
against a real registry."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import import_module

import pytest
import requests
from django.apps import apps as django_apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard import deletion, rollback
from dashboard.actions import ActionRefused
from dashboard.models import ApiToken, AuditEntry, Manifest, Pin, Tag, TagHistory
from tests.rollback_support import (  # noqa: F401 (fixtures)
    Dashboard,
    dashboard,
    people,
    proxied,
    proxy,
    skopeo_digest,
)
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.images import ImagePusher, PushedImage

pytestmark = pytest.mark.django_db

JAN = datetime(2026, 1, 10, tzinfo=UTC)
FEB = datetime(2026, 2, 10, tzinfo=UTC)
MAR = datetime(2026, 3, 10, tzinfo=UTC)


def release(pusher: ImagePusher, repo: str, version: str, created: datetime, *tags: str, **kwargs) -> PushedImage:
    return pusher.push_image(repo, (version, *tags), created=created, unique=f"{repo}-{version}", **kwargs)


def delete_by_digest(dashboard: Dashboard, repo: str, digest: str) -> None:
    """Delete a version straight in the registry, behind the dashboard's back."""
    requests.delete(f"{dashboard.server.url}/v2/{repo}/manifests/{digest}", timeout=10).raise_for_status()


def audit_rows(repo: str, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(repository=repo, action=action).order_by("id"))


@pytest.fixture
def two_releases(dashboard: Dashboard, pusher: ImagePusher, repo_name: str):
    """1.0 then 2.0 deployed as `production`, each seen by a sync."""
    v1 = release(pusher, repo_name, "1.0", JAN, "production")
    dashboard.sync(repo_name)
    v2 = release(pusher, repo_name, "2.0", FEB, "production")
    repository = dashboard.sync(repo_name)
    return repository, v1, v2


# Restore ------------------------------------------------------------------------------------


def test_restore_points_production_back_at_the_previous_digest(two_releases, dashboard, people, pusher):
    repository, v1, v2 = two_releases

    result = rollback.restore_tag(
        None, people.operator, dashboard.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
    )

    assert (result.previous, result.digest, result.changed) == (v2.digest, v1.digest, True)
    assert pusher.head_digest(repository.name, "production") == v1.digest
    assert skopeo_digest(dashboard.server, repository.name, "production") == v1.digest
    assert Tag.objects.get(repository=repository, name="production").manifest.digest == v1.digest
    entry = audit_rows(repository.name, "restore")[-1]
    assert (entry.outcome, entry.user, entry.tag) == ("ok", people.operator, "production")
    assert (entry.digest_before, entry.digest_after) == (v2.digest, v1.digest)


@pytest.mark.parametrize(
    ("fmt", "index"), [("oci", False), ("docker", True), ("oci", True)], ids=["oci-manifest", "docker-list", "oci-index"]
)
def test_restore_keeps_the_exact_digest_of_oci_manifests_and_multi_arch_indexes(
    fmt, index, dashboard, people, pusher, repo_name
):
    push = pusher.push_index if index else pusher.push_image
    old = push(repo_name, ("1.0", "latest"), fmt=fmt, created=JAN, unique=f"{repo_name}-old")
    dashboard.sync(repo_name)
    new = push(repo_name, ("2.0", "latest"), fmt=fmt, created=FEB, unique=f"{repo_name}-new")
    repository = dashboard.sync(repo_name)

    rollback.restore_tag(
        None, people.operator, dashboard.registry, repository, tag="latest", digest=old.digest, expected=new.digest
    )

    assert pusher.head_digest(repo_name, "latest") == old.digest
    assert skopeo_digest(dashboard.server, repo_name, "latest") == old.digest
    assert Tag.objects.get(repository=repository, name="latest").manifest.media_type == old.media_type


def test_a_new_tag_can_be_created_on_an_existing_digest_once(two_releases, dashboard, people, pusher):
    repository, v1, _ = two_releases
    name = "rollback-2026-11-29"

    rollback.restore_tag(None, people.operator, dashboard.registry, repository, tag=name, digest=v1.digest, expected=None)
    assert pusher.head_digest(repository.name, name) == v1.digest

    # The user was shown "does not exist"; it exists now, so a second attempt must not move it.
    with pytest.raises(ActionRefused) as refused:
        rollback.restore_tag(None, people.operator, dashboard.registry, repository, tag=name, digest=v1.digest, expected=None)
    assert refused.value.status == 409
    assert "already exists" in refused.value.message


def test_restore_to_a_deleted_digest_is_refused_before_anything_changes(two_releases, dashboard, people, pusher):
    repository, v1, v2 = two_releases
    delete_by_digest(dashboard, repository.name, v1.digest)

    with pytest.raises(ActionRefused) as refused:
        rollback.restore_tag(
            None, people.operator, dashboard.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
        )

    assert refused.value.status == 410
    assert "no longer exists in the registry" in refused.value.message
    assert pusher.head_digest(repository.name, "production") == v2.digest
    assert audit_rows(repository.name, "restore")[-1].outcome == "refused"


def test_restore_is_refused_when_the_tag_moved_since_it_was_shown(two_releases, dashboard, people, pusher):
    repository, v1, v2 = two_releases
    v3 = release(pusher, repository.name, "3.0", MAR, "production")  # pushed by CI meanwhile

    with pytest.raises(ActionRefused) as refused:
        rollback.restore_tag(
            None, people.operator, dashboard.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
        )

    assert refused.value.status == 409
    assert v3.digest in refused.value.message
    assert pusher.head_digest(repository.name, "production") == v3.digest
    entry = audit_rows(repository.name, "restore")[-1]
    assert (entry.outcome, entry.digest_before) == ("refused", v2.digest)


def test_a_hotfix_pushed_while_the_restore_fetches_its_target_is_not_overwritten(
    proxied: Dashboard, proxy: FaultProxy, people, pusher, repo_name
):
    v1 = pusher.push_index(repo_name, ("1.0", "production"), fmt="oci", created=JAN, unique=f"{repo_name}-1")
    proxied.sync(repo_name)
    v2 = pusher.push_index(repo_name, ("2.0", "production"), fmt="oci", created=FEB, unique=f"{repo_name}-2")
    repository = proxied.sync(repo_name)
    hotfix = []
    # The restore GETs the index, then HEADs each platform image: the hotfix lands at the last one.
    proxy.set_fault(
        Fault(
            "hook",
            methods={"HEAD"},
            path=f"/manifests/{v1.children[-1].digest}$",
            times=1,
            action=lambda: hotfix.append(release(pusher, repo_name, "2.0.1", MAR, "production")),
        )
    )

    with pytest.raises(ActionRefused) as refused:
        rollback.restore_tag(
            None, people.operator, proxied.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
        )

    (fix,) = hotfix
    assert refused.value.status == 409
    assert v2.digest in refused.value.message and fix.digest in refused.value.message
    assert proxy.count("PUT", r"/manifests/production$") == 0
    assert pusher.head_digest(repo_name, "production") == fix.digest
    assert Tag.objects.get(repository=repository, name="production").manifest.digest == fix.digest
    # The hotfix is in the tag's history, after 2.0.
    periods = TagHistory.objects.filter(repository=repository, tag="production").order_by("since", "id")
    assert [period.digest for period in periods] == [v1.digest, v2.digest, fix.digest]
    entry = audit_rows(repo_name, "restore")[-1]
    assert (entry.outcome, entry.digest_before, entry.digest_after) == ("refused", v2.digest, v1.digest)


def test_a_push_landing_right_after_the_restore_is_reported_not_taken_for_a_registry_failure(
    two_releases, dashboard, people, pusher, monkeypatch
):
    repository, v1, v2 = two_releases
    from dashboard.registry import RegistryClient

    real_head = RegistryClient.head_manifest
    heads, pushed = [], []

    def push_first(client, repo, reference):
        # CI pushes 3.0 to production between the restore's PUT and its check: the restore
        # HEADs the tag three times, for the digest guard, right before the PUT and after it.
        heads.append(reference)
        if heads.count("production") == 3 and not pushed:
            pushed.append(release(pusher, repository.name, "3.0", MAR, "production"))
        return real_head(client, repo, reference)

    monkeypatch.setattr(RegistryClient, "head_manifest", push_first)

    with pytest.raises(ActionRefused) as refused:
        rollback.restore_tag(
            None, people.operator, dashboard.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
        )

    (v3,) = pushed
    assert refused.value.status == 409
    assert v1.digest in refused.value.message and v3.digest in refused.value.message
    assert pusher.head_digest(repository.name, "production") == v3.digest
    assert Tag.objects.get(repository=repository, name="production").manifest.digest == v3.digest
    entry = audit_rows(repository.name, "restore")[-1]
    assert (entry.outcome, entry.digest_before) == ("refused", v2.digest)


def test_a_tag_deleted_right_after_the_restore_is_reported_not_taken_for_a_registry_failure(
    proxied: Dashboard, proxy: FaultProxy, people, pusher, repo_name
):
    v1 = release(pusher, repo_name, "1.0", JAN, "production")
    proxied.sync(repo_name)
    v2 = release(pusher, repo_name, "2.0", FEB, "production")
    repository = proxied.sync(repo_name)
    # The third HEAD of the tag is the check after the PUT: v1 is deleted by digest just before.
    proxy.set_fault(
        Fault("hook", methods={"HEAD"}, path=r"/manifests/production$", after=2, times=1,
              action=lambda: delete_by_digest(proxied, repository.name, v1.digest))
    )  # fmt: skip

    with pytest.raises(ActionRefused) as refused:
        rollback.restore_tag(
            None, people.operator, proxied.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
        )

    assert refused.value.status == 409 and "deleted it right after" in refused.value.message
    assert pusher.head_digest(repository.name, "production") is None
    assert audit_rows(repository.name, "restore")[-1].outcome == "refused"


def test_restore_needs_the_operator_role_and_hides_the_repository_from_outsiders(two_releases, dashboard, people, pusher):
    repository, v1, v2 = two_releases
    for user, status in ((people.maintainer, 403), (people.viewer, 403), (people.outsider, 404)):
        with pytest.raises(ActionRefused) as refused:
            rollback.restore_tag(
                None, user, dashboard.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
            )
        assert refused.value.status == status
    assert pusher.head_digest(repository.name, "production") == v2.digest
    assert [entry.outcome for entry in audit_rows(repository.name, "restore")] == ["refused"] * 3


@pytest.mark.parametrize(
    ("tag", "digest"),
    [(".hidden", None), ("a" * 129, None), ("ok", "sha256:abc"), ("ok", "latest")],
    ids=["leading-dot", "too-long", "short-digest", "not-a-digest"],
)
def test_restore_refuses_names_and_digests_outside_the_grammar(tag, digest, two_releases, dashboard, people):
    repository, v1, v2 = two_releases
    with pytest.raises(ActionRefused) as refused:
        rollback.restore_tag(
            None, people.operator, dashboard.registry, repository, tag=tag, digest=digest or v1.digest, expected=None
        )
    assert refused.value.status == 400


def test_restore_to_the_current_digest_changes_nothing(two_releases, dashboard, people):
    repository, _, v2 = two_releases
    periods = TagHistory.objects.filter(repository=repository, tag="production").count()
    result = rollback.restore_tag(
        None, people.operator, dashboard.registry, repository, tag="production", digest=v2.digest, expected=v2.digest
    )
    assert not result.changed
    assert TagHistory.objects.filter(repository=repository, tag="production").count() == periods


# Pins ---------------------------------------------------------------------------------------


def test_pin_records_the_digest_its_tags_who_and_why(two_releases, dashboard, people, pusher):
    repository, v1, v2 = two_releases
    pusher.tag(repository.name, v2, "stable")
    dashboard.sync(repository.name)

    pin = rollback.pin_version(None, people.operator, dashboard.registry, repository, tag="production", reason="deployed")

    assert pin.digest == v2.digest
    assert pin.tags_at_pin == ["2.0", "production", "stable"]
    assert (pin.created_by, pin.reason) == (people.operator, "deployed")
    entry = audit_rows(repository.name, "pin")[-1]
    assert (entry.outcome, entry.digest_before, entry.tag) == ("ok", v2.digest, "production")

    with pytest.raises(ActionRefused) as again:
        rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=v2.digest, reason="twice")
    assert again.value.status == 409


def test_pin_needs_a_reason_an_operator_and_an_existing_version(two_releases, dashboard, people):
    repository, v1, _ = two_releases
    attempts = [
        (people.operator, {"digest": v1.digest, "reason": "  "}, 400),
        (people.maintainer, {"digest": v1.digest, "reason": "why"}, 403),
        (people.operator, {"digest": "sha256:" + "0" * 64, "reason": "gone"}, 410),
        (people.operator, {"tag": "no-such-tag", "reason": "why"}, 404),
    ]
    for user, arguments, status in attempts:
        with pytest.raises(ActionRefused) as refused:
            rollback.pin_version(None, user, dashboard.registry, repository, **arguments)
        assert refused.value.status == status, arguments
    assert not Pin.objects.filter(repository=repository).exists()
    assert [entry.outcome for entry in audit_rows(repository.name, "pin")] == ["refused"] * 4


def test_unpin_removes_the_pin_and_audits_its_reason(two_releases, dashboard, people):
    repository, v1, _ = two_releases
    rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=v1.digest, reason="release 1")

    with pytest.raises(ActionRefused):
        rollback.unpin_version(None, people.viewer, repository, v1.digest)
    rollback.unpin_version(None, people.operator, repository, v1.digest)

    assert not Pin.objects.filter(repository=repository).exists()
    outcomes = [(entry.outcome, entry.user) for entry in audit_rows(repository.name, "unpin")]
    assert outcomes == [("refused", people.viewer), ("ok", people.operator)]
    assert "release 1" in audit_rows(repository.name, "unpin")[-1].reason


def test_a_pinned_tag_moved_by_a_push_is_flagged_on_the_pins_and_history_pages(
    two_releases, dashboard, people, pusher, client
):
    repository, v1, v2 = two_releases
    pin = rollback.pin_version(None, people.operator, dashboard.registry, repository, tag="production", reason="live")
    v3 = release(pusher, repository.name, "3.0", MAR, "production")
    dashboard.sync(repository.name)

    moves = rollback.tag_moves([pin])[pin.id]
    assert [(move.tag, move.digest) for move in moves] == [("production", v3.digest)]
    # The pin holds the digest, not the tag.
    assert Pin.objects.get(pk=pin.pk).digest == v2.digest

    client.force_login(people.viewer)
    pins_page = client.get(reverse("dashboard:pins"), {"repository": repository.name})
    assert pins_page.status_code == 200
    assert b"has moved to" in pins_page.content
    for page in ("dashboard:tag-history", "dashboard:tag"):
        assert b"has moved since" in client.get(reverse(page, args=[repository.name, "production"])).content
    # 2.0 still points at the pinned version: nothing to flag on its page.
    assert b"has moved since" not in client.get(reverse("dashboard:tag", args=[repository.name, "2.0"])).content


def test_the_pins_page_lists_only_visible_repositories(two_releases, dashboard, people, client):
    repository, v1, _ = two_releases
    rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=v1.digest, reason="kept")

    client.force_login(people.viewer)
    assert v1.digest.encode() in client.get(reverse("dashboard:pins")).content
    fragment = client.get(
        reverse("dashboard:pins"), {"repository": repository.name}, headers={"HX-Request": "true", "HX-Target": "pin-results"}
    )
    assert b"<html" not in fragment.content and v1.digest.encode() in fragment.content
    assert b"Unpin" not in fragment.content  # viewers get no action buttons
    client.force_login(people.outsider)
    page = client.get(reverse("dashboard:pins"))
    assert page.status_code == 200
    assert repository.name.encode() not in page.content
    assert client.get(reverse("dashboard:pins"), {"page": "x"}).status_code == 400


def test_pages_showing_pins_cost_the_same_queries_for_few_or_many(two_releases, people, client):
    repository, v1, _ = two_releases
    client.force_login(people.operator)
    pages = [
        reverse("dashboard:pins"),
        reverse("dashboard:repository", args=[repository.name]),
        reverse("dashboard:tag", args=[repository.name, "production"]),
    ]

    def queries() -> list[int]:
        counts = []
        for url in pages:
            with CaptureQueriesContext(connection) as captured:
                assert client.get(url).status_code == 200
            counts.append(len(captured))
        return counts

    Pin.objects.create(repository=repository, digest=v1.digest, tags_at_pin=["1.0", "production"], reason="r")
    few = queries()
    for i in range(8):
        Pin.objects.create(repository=repository, digest=f"sha256:{i:064d}", tags_at_pin=["production", f"x{i}"], reason="r")
    assert queries() == few


def test_pin_and_unpin_through_the_pages(two_releases, dashboard, people, client):
    repository, v1, _ = two_releases
    tag_page = reverse("dashboard:tag", args=[repository.name, "1.0"])
    client.force_login(people.viewer)
    response = client.post(reverse("dashboard:pin", args=[repository.name]), {"digest": v1.digest, "reason": "x"})
    assert response.status_code == 403

    client.force_login(people.operator)
    response = client.post(
        reverse("dashboard:pin", args=[repository.name]),
        {"digest": v1.digest, "tag": "1.0", "reason": "release", "next": tag_page},
    )
    assert response.status_code == 302 and response["Location"] == tag_page
    assert Pin.objects.get(repository=repository).tags_at_pin == ["1.0"]

    response = client.post(
        reverse("dashboard:unpin", args=[repository.name]), {"digest": v1.digest, "next": "https://evil.example/"}
    )
    # An outside `next` is ignored: back to the repository's pins.
    assert response.status_code == 302 and response["Location"].startswith(reverse("dashboard:pins"))
    assert not Pin.objects.filter(repository=repository).exists()


# History ------------------------------------------------------------------------------------


def test_history_records_pushes_restores_and_deletes_with_who_did_them(two_releases, dashboard, people, pusher):
    repository, v1, v2 = two_releases
    rollback.restore_tag(
        None, people.operator, dashboard.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
    )
    deletion.delete_tag(None, people.maintainer, repository, "production", v1.digest)
    deletion.delete_version(None, people.maintainer, repository, v2.digest, ["2.0"])

    periods = rollback.tag_periods(repository, "production")

    summary = [(p.row.digest, p.row.started_by, p.row.ended_by, p.exists) for p in periods]
    assert summary == [
        (v1.digest, "user", "user", True),
        (v2.digest, "sync", "user", False),
        (v1.digest, "sync", "sync", True),
    ]
    # The restorer and the deleter of one period are both kept.
    assert (periods[0].row.user, periods[0].row.ended_by_user) == (people.operator, people.maintainer)
    assert [p.started_by for p in periods] == ["restored by olivia", "pushed (seen by sync)", "pushed (seen by sync)"]
    assert [p.ended_by for p in periods] == ["deleted by max", "moved by olivia", "moved (seen by sync)"]
    assert not any(p.current for p in periods)


def test_history_users_recorded_in_one_field_are_split_by_the_migration(two_releases, people):
    repository, v1, v2 = two_releases
    split_users = import_module("dashboard.migrations.0002_tag_history_ended_by_user").split_users

    def period(tag, digest, since, until, started_by, user=None):
        return TagHistory.objects.create(
            repository=repository, tag=tag, digest=digest, since=since, until=until,
            started_by=started_by, ended_by="user", user=user,
        )

    # As stored before: a restore named its user only on the period it opened; a delete named
    # its user on the period it closed unless someone had started that one.
    moved_by_restore = period("staging", v1.digest, JAN, FEB, "sync")
    restored_then_deleted = period("staging", v2.digest, FEB, MAR, "user", people.operator)
    deleted = period("canary", v1.digest, JAN, MAR, "sync", people.maintainer)

    split_users(django_apps, None)

    for row in (moved_by_restore, restored_then_deleted, deleted):
        row.refresh_from_db()
    assert (moved_by_restore.user, moved_by_restore.ended_by_user) == (None, people.operator)
    assert (restored_then_deleted.user, restored_then_deleted.ended_by_user) == (people.operator, None)
    assert (deleted.user, deleted.ended_by_user) == (None, people.maintainer)


def test_the_history_page_draws_a_timeline_without_inline_styles(two_releases, dashboard, people, client):
    repository, v1, v2 = two_releases
    rollback.restore_tag(
        None, people.operator, dashboard.registry, repository, tag="production", digest=v1.digest, expected=v2.digest
    )
    client.force_login(people.operator)

    page = client.get(reverse("dashboard:tag-history", args=[repository.name, "production"]))

    assert page.status_code == 200
    html = page.content.decode()
    svg = re.search(r"<svg class=\"timeline\".*?</svg>", html, re.S).group(0)
    assert svg.count("<rect") == 3
    assert svg.count("<circle") == 1  # the restore, by a user
    assert "style=" not in html and "<script>" not in html
    # Earlier versions offer a restore to operators; the current one does not.
    assert html.count("Point production here") == 1
    tag_page = client.get(reverse("dashboard:tag", args=[repository.name, "production"])).content.decode()
    assert "timeline-compact" in tag_page


def test_history_of_an_unknown_tag_is_404_and_hidden_repositories_too(two_releases, people, client):
    repository, _, _ = two_releases
    client.force_login(people.viewer)
    assert client.get(reverse("dashboard:tag-history", args=[repository.name, "nope"])).status_code == 404
    client.force_login(people.outsider)
    assert client.get(reverse("dashboard:tag-history", args=[repository.name, "production"])).status_code == 404


# Rollback candidates and the restore pages --------------------------------------------------


def test_candidates_are_pins_and_earlier_digests_that_still_exist_newest_first(two_releases, dashboard, people, pusher):
    repository, v1, v2 = two_releases
    v3 = release(pusher, repository.name, "3.0", MAR, "production")
    dashboard.sync(repository.name)
    pinned = release(pusher, repository.name, "0.9", datetime(2025, 12, 1, tzinfo=UTC))
    repository = dashboard.sync(repository.name)
    rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=pinned.digest, reason="lts")

    candidates = rollback.rollback_candidates(repository, "production")
    assert candidates.current.manifest.digest == v3.digest
    assert [c.manifest.digest for c in candidates.versions] == [v2.digest, v1.digest, pinned.digest]
    assert candidates.versions[2].pin is not None and candidates.versions[2].left_at is None

    deletion.delete_version(None, people.maintainer, repository, v2.digest, ["2.0"])
    assert [c.manifest.digest for c in rollback.rollback_candidates(repository, "production").versions] == [
        v1.digest,
        pinned.digest,
    ]


@pytest.fixture
def untagged_previous(dashboard: Dashboard, pusher: ImagePusher, repo_name: str):
    """v1 then v2 pushed as `prod` and nothing else: v1 is left untagged, yet stored."""
    v1 = pusher.push_image(repo_name, "prod", created=JAN, unique=f"{repo_name}-v1")
    dashboard.sync(repo_name)
    v2 = pusher.push_image(repo_name, "prod", created=FEB, unique=f"{repo_name}-v2")
    repository = dashboard.sync(repo_name)
    assert pusher.tags(repo_name) == ["prod"]
    return repository, v1, v2


def restore_url(repository) -> str:
    return reverse("dashboard:restore", args=[repository.name])


def test_an_untagged_previous_digest_is_offered_and_restored(untagged_previous, dashboard, people, pusher, client):
    repository, v1, v2 = untagged_previous
    kept = Manifest.objects.get(repository=repository, digest=v1.digest)
    assert (kept.missing_since, kept.tags.exists()) == (None, False)

    candidates = rollback.rollback_candidates(repository, "prod")
    assert [(c.manifest.digest, c.tags) for c in candidates.versions] == [(v1.digest, [])]
    assert candidates.versions[0].pointed_since < candidates.versions[0].left_at
    client.force_login(people.operator)
    page = client.get(reverse("dashboard:rollback", args=[repository.name]), {"tag": "prod"}).content.decode()
    assert "untagged</span>, kept by the registry" in page and "2026-01-10" in page

    query = {"tag": "prod", "digest": v1.digest, "expected": v2.digest}
    assert client.get(restore_url(repository), query).status_code == 200
    assert client.post(restore_url(repository), query).status_code == 302

    assert pusher.head_digest(repository.name, "prod") == v1.digest
    assert skopeo_digest(dashboard.server, repository.name, "prod") == v1.digest
    # Now v2 is the untagged one, and the only way back.
    assert [c.manifest.digest for c in rollback.rollback_candidates(repository, "prod").versions] == [v2.digest]


def test_a_candidate_deleted_behind_the_dashboards_back_is_gone_at_preview(untagged_previous, dashboard, people, client):
    repository, v1, v2 = untagged_previous
    delete_by_digest(dashboard, repository.name, v1.digest)
    assert [c.manifest.digest for c in rollback.rollback_candidates(repository, "prod").versions] == [v1.digest]
    client.force_login(people.operator)

    gone = client.get(restore_url(repository), {"tag": "prod", "digest": v1.digest, "expected": v2.digest})

    assert gone.status_code == 410
    assert b"no longer exists in the registry" in gone.content
    assert b'name="expected"' not in gone.content  # nothing to confirm
    assert rollback.rollback_candidates(repository, "prod").versions == []
    page = client.get(reverse("dashboard:rollback", args=[repository.name]), {"tag": "prod"})
    assert b"No earlier version of prod" in page.content
    assert [p.state for p in rollback.tag_periods(repository, "prod")] == ["in the registry", "deleted"]


def test_an_api_restore_to_a_candidate_found_gone_is_refused_and_not_offered_again(
    untagged_previous, dashboard, people, pusher, client
):
    repository, v1, v2 = untagged_previous
    _, token = ApiToken.issue(people.operator, "deploy")
    delete_by_digest(dashboard, repository.name, v1.digest)

    response = client.post(
        reverse("dashboard:api-restore", args=[repository.name, "prod"]),
        {"digest": v1.digest, "expected_digest": v2.digest},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 410
    assert "no longer exists in the registry" in response.json()["error"]
    assert pusher.head_digest(repository.name, "prod") == v2.digest
    assert rollback.rollback_candidates(repository, "prod").versions == []


def test_the_preview_shows_both_versions_and_the_confirmation_restores(two_releases, dashboard, people, pusher, client):
    repository, v1, v2 = two_releases
    client.force_login(people.operator)
    url = reverse("dashboard:restore", args=[repository.name])

    preview = client.get(url, {"tag": "production", "digest": v1.digest, "expected": v2.digest})

    assert preview.status_code == 200
    html = preview.content.decode()
    assert v1.digest[7:19] in html and v2.digest[7:19] in html
    assert "2026-01-10" in html and "2026-02-10" in html  # both created dates
    assert f'name="expected" value="{v2.digest}"' in html
    response = client.post(url, {"tag": "production", "digest": v1.digest, "expected": v2.digest})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:tag-history", args=[repository.name, "production"])
    assert pusher.head_digest(repository.name, "production") == v1.digest


def test_the_confirmation_page_answers_refusals_with_their_status(two_releases, dashboard, people, pusher, client):
    repository, v1, v2 = two_releases
    url = reverse("dashboard:restore", args=[repository.name])
    client.force_login(people.viewer)
    refused = client.get(url, {"tag": "production", "digest": v1.digest})
    assert refused.status_code == 403 and b"<h1>Nothing was done</h1>" in refused.content
    assert client.post(url, {"tag": "production", "digest": v1.digest, "expected": v2.digest}).status_code == 403

    client.force_login(people.operator)
    assert client.get(url, {"tag": "production", "digest": "nope"}).status_code == 400
    moved = client.post(url, {"tag": "production", "digest": v1.digest, "expected": v1.digest})
    assert moved.status_code == 409
    assert b"Nothing was changed" in moved.content
    delete_by_digest(dashboard, repository.name, v1.digest)
    gone = client.get(url, {"tag": "production", "digest": v1.digest})
    assert b"no longer exists in the registry" in gone.content
    assert b'name="expected"' not in gone.content  # nothing to confirm
    assert client.post(url, {"tag": "production", "digest": v1.digest, "expected": v2.digest}).status_code == 410
    assert pusher.head_digest(repository.name, "production") == v2.digest


def test_the_rollback_page_lists_candidates_for_a_tag(two_releases, dashboard, people, client):
    repository, v1, v2 = two_releases
    url = reverse("dashboard:rollback", args=[repository.name])
    client.force_login(people.operator)

    page = client.get(url, {"tag": "production"})
    assert page.status_code == 200
    assert v1.digest[7:19].encode() in page.content
    assert b"also tagged as <code>1.0</code>" in page.content
    assert b"Point production here" in page.content
    fragment = client.get(url, {"tag": "production"}, headers={"HX-Request": "true", "HX-Target": "candidate-results"})
    assert b"<html" not in fragment.content and v1.digest[7:19].encode() in fragment.content
    assert "HX-Request" in fragment["Vary"]
    assert b"production" in client.get(url).content  # suggested: it moved
    assert client.get(url, {"tag": "-bad"}).status_code == 400
    assert client.get(url, {"tag": "never-existed"}).status_code == 404
    client.force_login(people.viewer)
    assert b"Point production here" not in client.get(url, {"tag": "production"}).content


def test_pinning_a_candidate_found_gone_is_refused_and_it_is_not_offered_again(untagged_previous, dashboard, people):
    repository, v1, v2 = untagged_previous
    delete_by_digest(dashboard, repository.name, v1.digest)
    assert [c.manifest.digest for c in rollback.rollback_candidates(repository, "prod").versions] == [v1.digest]

    with pytest.raises(ActionRefused) as refused:
        rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=v1.digest, reason="keep")

    assert refused.value.status == 410
    assert not Pin.objects.filter(repository=repository).exists()
    assert rollback.rollback_candidates(repository, "prod").versions == []
    assert Manifest.objects.get(repository=repository, digest=v1.digest).missing_since is not None
    assert [p.state for p in rollback.tag_periods(repository, "prod")] == ["in the registry", "deleted"]
    assert audit_rows(repository.name, "pin")[-1].outcome == "refused"


@pytest.mark.django_db
def test_deployment_tags_are_the_tags_with_two_periods_or_more_most_moved_first(make_repo_name):
    from dashboard.models import Registry, Repository

    registry = Registry.objects.create(name=make_repo_name("reg"), url=f"http://{make_repo_name('host')}.invalid")
    repository = Repository.objects.create(registry=registry, name=make_repo_name("deploy"))
    ended = datetime(2026, 1, 2, tzinfo=UTC)

    def periods(tag: str, closed: int, open_now: bool) -> None:
        for n in range(closed):
            TagHistory.objects.create(repository=repository, tag=tag, digest=f"sha256:{n}", until=ended, started_by="sync")
        if open_now:
            TagHistory.objects.create(repository=repository, tag=tag, digest="sha256:now", started_by="sync")

    periods("prod", closed=2, open_now=True)  # moved twice
    periods("staging", closed=1, open_now=True)  # moved once
    periods("old", closed=2, open_now=False)  # moved once, then deleted
    periods("v1", closed=0, open_now=True)  # never moved
    periods("gone", closed=1, open_now=False)  # deleted without moving

    assert rollback.deployment_tags(repository) == ["prod", "old", "staging"]
    assert rollback.deployment_tags(repository, limit=1) == ["prod"]

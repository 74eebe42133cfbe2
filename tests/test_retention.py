"""Retention policies: what a plan deletes and keeps, the same set when applied, the digest
guard, pins, the command, and the pages, against a real registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from dashboard import retention, rollback
from dashboard.access import visible_repositories
from dashboard.models import AuditEntry, DeletedVersion, Repository, RetentionPolicy, Role, Tag
from dashboard.registries import configured_registry
from tests.personas import make_user
from tests.rollback_support import Dashboard, People, dashboard, people, proxied, proxy  # noqa: F401 (fixtures)
from tests.support.fault_proxy import FaultProxy
from tests.support import supplychain as sc
from tests.support.images import ImagePusher, PushedImage

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def days_ago(days: int, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days)


def release(pusher: ImagePusher, repo: str, tags: list[str], age: int, now: datetime = NOW, **kwargs) -> PushedImage:
    return pusher.push_image(
        repo, tags, created=days_ago(age, now), unique=kwargs.pop("unique", f"{repo}-{tags[0]}"), **kwargs
    )


def policy(name: str = "cleanup", **fields) -> RetentionPolicy:
    return RetentionPolicy.objects.create(name=name, **fields)


def planned(result: retention.Plan) -> dict[str, str]:
    """tag -> why, for the tags the plan deletes (tests use one repository each)."""
    return {decision.tag: decision.reason for repository in result.repositories for decision in repository.delete}


def kept(result: retention.Plan) -> dict[str, str]:
    return {decision.tag: decision.reason for repository in result.repositories for decision in repository.keep}


def plan_for(
    dashboard: Dashboard, repo: str, chosen: RetentionPolicy | None = None, now: datetime = NOW
) -> retention.Plan:
    return retention.plan(dashboard.registry, Repository.objects.filter(name=repo), chosen, now=now)


# Planning -----------------------------------------------------------------------------------


def test_a_policy_keeps_the_newest_and_deletes_what_is_old_enough(dashboard, pusher, repo_name):
    for version, age in [("v1", 150), ("v2", 120), ("v3", 80), ("v4", 5)]:
        release(pusher, repo_name, [version], age)
    dashboard.sync(repo_name)
    policy(keep_newest=2, older_than_days=30)

    result = plan_for(dashboard, repo_name)

    assert planned(result) == {
        "v1": "cleanup: older than 30 days and beyond the newest 2",
        "v2": "cleanup: older than 30 days and beyond the newest 2",
    }
    assert kept(result) == {"v3": "cleanup: among the newest 2", "v4": "cleanup: among the newest 2"}


def test_patterns_pins_pulls_and_unknown_dates_keep_tags(dashboard, people, pusher, repo_name):
    for name, age in [
        ("build-1", 90),
        ("build-keep-1", 90),
        ("release", 90),
        ("build-2", 90),
        ("build-3", 90),
        ("build-5", 2),
    ]:
        release(pusher, repo_name, [name], age)
    reproducible = pusher.push_image(repo_name, ["build-4"], created=datetime(1970, 1, 1, tzinfo=UTC), unique="ko")
    repository = dashboard.sync(repo_name)
    pinned = Tag.objects.get(repository=repository, name="build-2").manifest.digest
    rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=pinned, reason="shipped to acme")
    Tag.objects.filter(repository=repository, name="build-3").update(last_pulled_at=days_ago(1))
    policy(tag_include=r"build-.*", tag_exclude=r"build-keep-.*", older_than_days=7, keep_pulled_within_days=14)

    result = plan_for(dashboard, repo_name)

    assert planned(result) == {"build-1": "cleanup: older than 7 days"}
    assert kept(result) == {
        "build-2": "pinned by olivia: shipped to acme",
        "build-3": "cleanup: pulled within 14 days",
        "build-4": "cleanup: created date unknown",
        "build-5": "cleanup: younger than 7 days",
        "build-keep-1": "no policy covers this tag",
        "release": "no policy covers this tag",
    }
    assert reproducible.created.year == 1970


def test_the_most_protective_policy_wins(dashboard, pusher, repo_name):
    for version, age in [("v1", 200), ("v2", 100)]:
        release(pusher, repo_name, [version], age)
    dashboard.sync(repo_name)
    age_limit = policy("old", older_than_days=30)
    keep_ten = policy("keep-ten", keep_newest=10)

    assert planned(plan_for(dashboard, repo_name)) == {}
    # Running one policy by name still respects the others that are enabled.
    only_old = plan_for(dashboard, repo_name, age_limit)
    assert planned(only_old) == {} and kept(only_old)["v1"] == "keep-ten: among the newest 10"

    keep_ten.enabled = False
    keep_ten.save()
    assert set(planned(plan_for(dashboard, repo_name))) == {"v1", "v2"}


def test_policies_only_cover_the_repositories_their_pattern_matches(dashboard, pusher, make_repo_name):
    team, other = make_repo_name("team-a/"), make_repo_name("team-b/")
    for repo in (team, other):
        release(pusher, repo, ["old"], 100)
        dashboard.sync(repo)
    policy(repository_pattern="team-a/*", older_than_days=30)

    result = retention.plan(dashboard.registry, Repository.objects.all(), now=NOW)

    assert [r.repository.name for r in result.repositories] == [team]


def test_a_version_losing_every_tag_goes_whole_and_one_keeping_a_tag_only_loses_the_others(
    dashboard, people, pusher, repo_name
):
    shared = release(pusher, repo_name, ["1.0", "stable"], 100)
    alone = release(pusher, repo_name, ["0.9", "0.9.1"], 120)
    release(pusher, repo_name, ["2.0"], 1)
    dashboard.sync(repo_name)
    policy(tag_exclude="stable", older_than_days=30)

    result = plan_for(dashboard, repo_name)
    [repository_plan] = result.repositories
    assert set(planned(result)) == {"1.0", "0.9", "0.9.1"}
    assert repository_plan.versions == {alone.digest: ["0.9", "0.9.1"]}
    assert [d.tag for d in repository_plan.tag_deletes] == ["1.0"]
    # Only the whole version frees space: its layers are its own.
    assert result.reclaimable_bytes == alone.size

    outcomes = retention.apply(None, people.maintainer, result)

    assert {o.tag: o.outcome for o in outcomes[repo_name]} == {"1.0": "ok", "0.9": "ok", "0.9.1": "ok"}
    assert pusher.tags(repo_name) == ["2.0", "stable"]
    assert pusher.head_digest(repo_name, "stable") == shared.digest
    assert pusher.head_digest(repo_name, alone.digest) is None
    assert DeletedVersion.objects.get(repository=repo_name).freed_bytes == alone.size


def test_a_dry_run_and_an_apply_on_the_same_state_delete_the_same_tags(dashboard, people, pusher, repo_name):
    ages = {"a": 300, "b": 200, "c": 150, "d": 90, "e": 60, "f": 20, "g": 1}
    for name, age in ages.items():
        release(pusher, repo_name, [name], age)
    pusher.tag(repo_name, pusher.push_image(repo_name, None, created=days_ago(40), unique="x"), "h")
    dashboard.sync(repo_name)
    policy(keep_newest=3, older_than_days=45)

    dry_run = set(planned(plan_for(dashboard, repo_name)))
    before = set(pusher.tags(repo_name))
    outcomes = retention.apply(None, people.maintainer, plan_for(dashboard, repo_name))

    applied = {o.tag for o in outcomes[repo_name] if o.ok}
    assert dry_run == applied == {"a", "b", "c", "d", "e"}
    assert set(pusher.tags(repo_name)) == before - dry_run
    assert planned(plan_for(dashboard, repo_name)) == {}


def test_layers_still_used_by_a_remaining_version_are_not_counted_as_reclaimable(dashboard, pusher, repo_name):
    # Same `unique`: the same layers, different configs (created differs).
    old = release(pusher, repo_name, ["old"], 100, unique="base")
    new = release(pusher, repo_name, ["new"], 1, unique="base")
    dashboard.sync(repo_name)
    policy(older_than_days=30)

    result = plan_for(dashboard, repo_name)

    assert set(old.layer_digests) == set(new.layer_digests)
    assert result.reclaimable_bytes == len(old.raw) + json.loads(old.raw)["config"]["size"]


def test_a_multi_arch_version_goes_with_its_platform_images(dashboard, people, pusher, repo_name):
    index = pusher.push_index(repo_name, ["1.0"], fmt="oci", created=days_ago(100), unique="multi")
    release(pusher, repo_name, ["2.0"], 1)
    dashboard.sync(repo_name)
    policy(older_than_days=30)

    result = plan_for(dashboard, repo_name)
    assert result.repositories[0].children == {index.digest: [child.digest for child in index.children]}
    assert result.reclaimable_bytes == index.size

    retention.apply(None, people.maintainer, result)
    assert [pusher.head_digest(repo_name, d) for d in (index.digest, *(c.digest for c in index.children))] == [None] * 3


# Applying -----------------------------------------------------------------------------------


def test_apply_refuses_tags_that_moved_or_were_pinned_since_the_plan(dashboard, people, pusher, repo_name):
    release(pusher, repo_name, ["a"], 100)
    b = release(pusher, repo_name, ["b"], 100)
    release(pusher, repo_name, ["c"], 100)
    repository = dashboard.sync(repo_name)
    policy(older_than_days=30)
    result = plan_for(dashboard, repo_name)
    assert set(planned(result)) == {"a", "b", "c"}
    moved = release(pusher, repo_name, ["a"], 1, unique="a-again")  # CI pushed after the plan
    rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=b.digest, reason="audit hold")

    outcomes = {o.tag: o for o in retention.apply(None, people.maintainer, result)[repo_name]}

    assert {tag: o.outcome for tag, o in outcomes.items()} == {"a": "refused", "b": "refused", "c": "ok"}
    assert "audit hold" in outcomes["b"].message and moved.digest in outcomes["a"].message
    assert pusher.tags(repo_name) == ["a", "b"]
    assert pusher.head_digest(repo_name, "a") == moved.digest
    entries = AuditEntry.objects.filter(repository=repo_name, action="retention_delete_version").order_by("id")
    assert [e.outcome for e in entries] == ["refused", "refused", "ok"]
    assert "retention policy cleanup" in entries[2].reason


def test_a_run_reads_the_registrys_tags_once_per_repository_not_once_per_version(
    proxied: Dashboard, proxy: FaultProxy, people, pusher, repo_name
):
    doomed = [release(pusher, repo_name, [f"build-{n}", f"ci-{n}"], 100 + n) for n in range(3)]
    release(pusher, repo_name, ["2.0"], 1)
    proxied.sync(repo_name)
    policy(older_than_days=30)
    result = plan_for(proxied, repo_name)
    assert len(result.repositories[0].versions) == 3
    before = len(proxy.seen())

    outcomes = retention.apply(None, people.maintainer, result)

    assert {o.outcome for o in outcomes[repo_name]} == {"ok"}
    assert pusher.tags(repo_name) == ["2.0"]
    assert all(pusher.head_digest(repo_name, image.digest) is None for image in doomed)
    during = proxy.seen()[before:]
    assert sum(r.method == "GET" and r.path.endswith("/tags/list") for r in during) == 1
    # Each of the 7 tags once by the scan, then each version's own 2 tags right before its delete.
    assert sum(r.method == "HEAD" and "/manifests/sha256:" not in r.path for r in during) == 7 + 3 * 2


@pytest.fixture
def old_and_new(dashboard, pusher, repo_name) -> str:
    now = timezone.now()
    release(pusher, repo_name, ["old"], 100, now=now)
    release(pusher, repo_name, ["new"], 1, now=now)
    dashboard.sync(repo_name)
    policy("nightly", older_than_days=30)
    return repo_name


def test_the_command_dry_run_lists_what_goes_and_why_the_rest_stays(old_and_new, pusher):
    out = StringIO()
    call_command("apply_retention", "--dry-run", "--policy", "nightly", stdout=out)

    assert "delete old" in out.getvalue() and "keep   new  nightly: younger than 30 days" in out.getvalue()
    assert pusher.tags(old_and_new) == ["new", "old"]
    with pytest.raises(CommandError):
        call_command("apply_retention", "--policy", "no-such-policy")


def test_the_command_applies_as_system(old_and_new, pusher):
    out = StringIO()
    call_command("apply_retention", stdout=out)

    assert "Deleted 1 tags, refused 0, failed 0." in out.getvalue()
    assert pusher.tags(old_and_new) == ["new"]
    entry = AuditEntry.objects.get(repository=old_and_new, action="retention_delete_version")
    assert (entry.username, entry.user, entry.outcome) == ("system", None, "ok")


# Attachments --------------------------------------------------------------------------------


@dataclass
class Signed:
    """A repository with an old version carrying its own signature, attestation and referrer
    (with the referrers tag schema's index), and a new version."""

    repo: str
    old: PushedImage
    new: PushedImage
    signature: str
    attestation: str
    referrer: str
    index: str

    @property
    def attached(self) -> list[str]:
        return sorted([self.signature, self.attestation, self.referrer, self.index])

    def tag_of(self, suffix: str, image: PushedImage | None = None) -> str:
        return f"sha256-{(image or self.old).digest[7:]}{suffix}"


def attach(dashboard: Dashboard, pusher: ImagePusher, repo: str, image: PushedImage) -> tuple[str, str, str, str]:
    """A cosign signature and attestation, and an SBOM referrer, on `image`: (signature,
    attestation, referrer, referrers index)."""
    key = sc.make_key()
    signature = sc.push_signature(pusher, repo, image.digest, key, f"{dashboard.server.host}/{repo}")
    attestation = sc.push_attestation(pusher, repo, image.digest, sc.statement(image.digest, "https://example.com/p", {}), key)
    referrer = sc.push_referrer(pusher, repo, image, "application/vnd.cyclonedx+json", sc.cyclonedx_sbom([("a", "1")]))
    return signature, attestation, referrer, pusher.head_digest(repo, image.digest.replace(":", "-"))


@pytest.fixture
def signed(dashboard, pusher, repo_name) -> Signed:
    now = timezone.now()
    old = release(pusher, repo_name, ["1.0"], 100, now=now)
    new = release(pusher, repo_name, ["2.0"], 1, now=now)
    signed = Signed(repo_name, old, new, *attach(dashboard, pusher, repo_name, old))
    dashboard.sync(repo_name)
    return signed


def copy_manifest(pusher: ImagePusher, repo: str, digest: str, tag: str) -> None:
    """Another client copies a manifest under another tag (as `cosign copy` or a retag does)."""
    raw = pusher.session.get(f"{pusher.base_url}/v2/{repo}/manifests/{digest}", headers={"Accept": sc.OCI_MANIFEST}).content
    pusher.push_raw_manifest(repo, tag, raw, sc.OCI_MANIFEST)


def test_a_policy_deleting_attachments_takes_what_is_attached_to_a_deleted_version_alone(
    dashboard, people, pusher, signed: Signed
):
    repo, now = signed.repo, timezone.now()
    # 0.9 goes too, but its signature was copied next to 2.0, which stays: the signature stays.
    older = release(pusher, repo, ["0.9"], 120, now=now)
    shared = sc.push_signature(pusher, repo, older.digest, sc.make_key(), f"{dashboard.server.host}/{repo}")
    copy_manifest(pusher, repo, shared, signed.tag_of(".sig", signed.new))
    # build-5 goes alone: stable keeps its version, and so its signature.
    kept_version = release(pusher, repo, ["build-5", "stable"], 100, now=now)
    kept_signature = sc.push_signature(pusher, repo, kept_version.digest, sc.make_key(), f"{dashboard.server.host}/{repo}")
    dashboard.sync(repo)
    policy(tag_exclude="stable", older_than_days=30, delete_attachments=True)

    result = plan_for(dashboard, repo, now=now)
    [repository_plan] = result.repositories
    assert set(repository_plan.versions) == {signed.old.digest, older.digest}
    assert {v: [a.digest for a in artifacts] for v, artifacts in repository_plan.attachments.items()} == {
        signed.old.digest: signed.attached
    }
    by_digest = {a.digest: a.tags for a in repository_plan.attachments[signed.old.digest]}
    assert by_digest[signed.signature] == (signed.tag_of(".sig"),) and by_digest[signed.index] == (signed.tag_of(""),)
    assert by_digest[signed.referrer] == ()
    # Their tags are neither kept nor deleted as tags: they go with the version.
    assert not {signed.tag_of(".sig"), signed.tag_of(".att"), signed.tag_of("")} & (set(kept(result)) | set(planned(result)))

    outcomes = retention.apply(None, people.maintainer, result)

    assert {(o.untagged, o.digest): o.outcome for o in outcomes[repo] if o.untagged} == {
        ("attached artifact", artifact): "ok" for artifact in signed.attached
    }
    for gone in (signed.old.digest, older.digest, *signed.attached):
        assert pusher.head_digest(repo, gone) is None
    assert pusher.tags(repo) == sorted(
        [
            "2.0",
            "stable",
            signed.tag_of(".sig", older),
            signed.tag_of(".sig", signed.new),
            signed.tag_of(".sig", kept_version),
        ]
    )
    assert pusher.head_digest(repo, signed.tag_of(".sig", signed.new)) == shared
    assert pusher.head_digest(repo, kept_signature) == kept_signature
    entry = AuditEntry.objects.get(repository=repo, action="retention_delete_version", digest_before=signed.old.digest)
    assert f"attached artifacts deleted: {', '.join(signed.attached)}" in entry.reason
    assert not Repository.objects.get(name=repo).manifests.filter(digest__in=signed.attached).exists()


def test_without_the_option_what_is_attached_stays(dashboard, people, pusher, signed: Signed):
    policy(older_than_days=30)

    result = plan_for(dashboard, signed.repo, now=timezone.now())
    assert result.repositories[0].attachments == {}
    assert signed.tag_of(".sig") in kept(result)
    retention.apply(None, people.maintainer, result)

    assert pusher.head_digest(signed.repo, signed.old.digest) is None
    assert [pusher.head_digest(signed.repo, artifact) for artifact in signed.attached] == signed.attached


def test_every_policy_deleting_a_version_must_ask_for_its_attachments(dashboard, pusher, signed: Signed):
    now = timezone.now()
    policy("with", older_than_days=30, delete_attachments=True)
    assert set(plan_for(dashboard, signed.repo, now=now).repositories[0].attachments) == {signed.old.digest}
    policy("without", older_than_days=60)
    assert plan_for(dashboard, signed.repo, now=now).repositories[0].attachments == {}


def test_a_pinned_attachment_stays(dashboard, people, pusher, signed: Signed):
    repository = Repository.objects.get(name=signed.repo)
    rollback.pin_version(None, people.operator, dashboard.registry, repository, digest=signed.attestation, reason="evidence")
    policy(older_than_days=30, delete_attachments=True)

    result = plan_for(dashboard, signed.repo, now=timezone.now())

    assert signed.attestation not in [a.digest for a in result.repositories[0].attachments[signed.old.digest]]
    assert "evidence" in kept(result)[signed.tag_of(".att")]
    retention.apply(None, people.maintainer, result)
    assert pusher.head_digest(signed.repo, signed.attestation) == signed.attestation
    assert pusher.head_digest(signed.repo, signed.signature) is None


def test_an_attachment_tagged_for_another_version_since_the_sync_stays(dashboard, people, pusher, signed: Signed):
    policy(older_than_days=30, delete_attachments=True)
    result = plan_for(dashboard, signed.repo, now=timezone.now())
    assert [a.digest for a in result.repositories[0].attachments[signed.old.digest]] == signed.attached
    # After the plan, before the run: the signature is copied next to the version that stays.
    copy_manifest(pusher, signed.repo, signed.signature, signed.tag_of(".sig", signed.new))

    outcomes = {o.digest: o for o in retention.apply(None, people.maintainer, result)[signed.repo]}

    assert outcomes[signed.signature].outcome == "refused"
    assert pusher.head_digest(signed.repo, signed.signature) == signed.signature
    assert pusher.head_digest(signed.repo, signed.attestation) is None
    entry = AuditEntry.objects.get(repository=signed.repo, action="retention_delete_version")
    assert f"kept attached artifact {signed.signature}: {signed.tag_of('.sig', signed.new)}" in entry.reason


def test_the_command_lists_and_deletes_attachments_as_its_policy_says(pusher, signed: Signed):
    policy("nightly", older_than_days=30, delete_attachments=True)
    out = StringIO()
    call_command("apply_retention", "--dry-run", stdout=out)
    assert f"delete attached artifact {signed.signature} ({signed.tag_of('.sig')}) of {signed.old.digest}" in out.getvalue()

    out = StringIO()
    call_command("apply_retention", stdout=out)
    assert f"ok       {signed.repo}:attached artifact {signed.referrer}: attached to {signed.old.digest}" in out.getvalue()
    assert pusher.tags(signed.repo) == ["2.0"]


def test_the_preview_lists_attachments_and_applying_refuses_when_one_was_added(
    dashboard, people, pusher, signed: Signed, client
):
    policy("nightly", older_than_days=30, delete_attachments=True)
    client.force_login(people.maintainer)
    preview = client.get(reverse("dashboard:retention-preview"), {"policy": "nightly"})
    html = preview.content.decode()
    assert "what is attached to it alone" in html
    for name in (signed.tag_of(".sig"), signed.tag_of(".att"), signed.tag_of("")):
        assert f"<code>{name}</code>" in html
    # CI attaches an SBOM to the old version (and a sync sees it) after the preview.
    sbom = sc.push_cosign(pusher, signed.repo, signed.old.digest, "sbom", [("text/spdx+json", sc.spdx_sbom([("b", "2")]), {})])
    dashboard.sync(signed.repo)

    response = client.post(
        reverse("dashboard:retention-apply"), {"policy": "nightly", "fingerprint": preview.context["fingerprint"]}
    )

    assert response.status_code == 409
    assert sbom in [a.digest for a in response.context["plan"].repositories[0].attachments[signed.old.digest]]
    assert pusher.head_digest(signed.repo, signed.old.digest) == signed.old.digest
    assert not AuditEntry.objects.filter(repository=signed.repo).exists()


# Pages --------------------------------------------------------------------------------------


def test_a_maintainer_previews_and_applies_from_the_dashboard(old_and_new, people, pusher, client):
    repo_name = old_and_new
    client.force_login(people.maintainer)

    preview = client.get(reverse("dashboard:retention-preview"), {"policy": "nightly"})
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "old" in html and "nightly: older than 30 days" in html and "nightly: younger than 30 days" in html
    fingerprint = preview.context["fingerprint"]
    assert pusher.tags(repo_name) == ["new", "old"]

    stale = client.post(reverse("dashboard:retention-apply"), {"policy": "nightly", "fingerprint": "0" * 64})
    assert stale.status_code == 409 and pusher.tags(repo_name) == ["new", "old"]

    applied = client.post(reverse("dashboard:retention-apply"), {"policy": "nightly", "fingerprint": fingerprint})
    assert applied.status_code == 200 and applied.context["counts"]["ok"] == 1
    assert pusher.tags(repo_name) == ["new"]


def test_apply_refuses_when_a_tag_leaving_a_shared_version_turns_a_tag_delete_into_a_version_delete(
    dashboard, people, pusher, repo_name, client
):
    now = timezone.now()
    shared = release(pusher, repo_name, ["build-7", "stable"], 100, now=now)
    dashboard.sync(repo_name)
    policy("nightly", tag_exclude="stable", older_than_days=30)
    client.force_login(people.maintainer)
    preview = client.get(reverse("dashboard:retention-preview"), {"policy": "nightly"})
    [repository_plan] = preview.context["plan"].repositories
    assert [d.tag for d in repository_plan.tag_deletes] == ["build-7"] and repository_plan.versions == {}
    # stable moves on to a new build (and a sync sees it): the old version keeps no tag now.
    release(pusher, repo_name, ["stable"], 1, now=now, unique="stable-again")
    dashboard.sync(repo_name)

    response = client.post(
        reverse("dashboard:retention-apply"), {"policy": "nightly", "fingerprint": preview.context["fingerprint"]}
    )

    assert response.status_code == 409
    assert response.context["plan"].repositories[0].versions == {shared.digest: ["build-7"]}
    assert pusher.tags(repo_name) == ["build-7", "stable"]
    assert pusher.head_digest(repo_name, shared.digest) == shared.digest
    assert not AuditEntry.objects.filter(repository=repo_name).exists()


def test_viewers_plan_nothing_and_only_admins_manage_policies(dashboard, people, pusher, repo_name, client):
    release(pusher, repo_name, ["old"], 100, now=timezone.now())
    dashboard.sync(repo_name)
    policy("nightly", older_than_days=30)
    assert retention.deletable_repositories(people.viewer, dashboard.registry).count() == 0
    assert visible_repositories(people.viewer, dashboard.registry).count() == 1

    client.force_login(people.viewer)
    assert client.get(reverse("dashboard:retention-preview")).context["plan"].delete_count == 0
    client.force_login(people.maintainer)
    assert client.get(reverse("dashboard:retention-new")).status_code == 403

    client.force_login(make_user("root", superuser=True))
    bad = client.post(
        reverse("dashboard:retention-new"),
        {"name": "broken", "repository_pattern": "*", "tag_include": "(", "older_than_days": 3},
    )
    assert bad.status_code == 400 and "Not a valid regular expression" in bad.content.decode()
    too_wild = client.post(
        reverse("dashboard:retention-new"),
        {"name": "wild", "repository_pattern": "team-?/?*?*?*?*?*", "older_than_days": 3},
    )
    assert too_wild.status_code == 400 and "at most 8 wildcards" in too_wild.content.decode()
    no_limit = client.post(reverse("dashboard:retention-new"), {"name": "all", "repository_pattern": "*"})
    assert no_limit.status_code == 400 and not RetentionPolicy.objects.filter(name="all").exists()
    saved = client.post(
        reverse("dashboard:retention-new"),
        {"name": "weekly", "repository_pattern": "team-a/***", "keep_newest": 5, "enabled": "on"},
    )
    assert saved.status_code == 302
    assert "added policy weekly" in AuditEntry.objects.get(action="retention_policy_saved").reason
    weekly = RetentionPolicy.objects.get(name="weekly")
    assert weekly.repository_pattern == "team-a/*"
    edited = client.post(
        reverse("dashboard:retention-edit", args=[weekly.pk]),
        {"name": "weekly", "repository_pattern": "team-a/*", "keep_newest": 9, "enabled": "on"},
    )
    assert edited.status_code == 302
    change = AuditEntry.objects.filter(action="retention_policy_saved").first().reason
    assert "keep the newest 5 to " in change and change.endswith("keep the newest 9")
    client.post(
        reverse("dashboard:retention-edit", args=[weekly.pk]),
        {"name": "weekly", "repository_pattern": "team-a/*", "keep_newest": 9, "delete_attachments": "on", "enabled": "on"},
    )
    change = AuditEntry.objects.filter(action="retention_policy_saved").first().reason
    assert RetentionPolicy.objects.get(pk=weekly.pk).delete_attachments
    assert change.endswith("keep the newest 9, delete what is attached to a deleted version")
    assert pusher.tags(repo_name) == ["old"]  # saving a policy deletes nothing


def test_policies_are_shown_only_to_those_who_may_see_a_repository_they_match(client):
    registry = configured_registry()
    Repository.objects.bulk_create(Repository(registry=registry, name=n) for n in ("team-a/api", "team-b/payroll-ledger"))
    policy("team-a-weekly", repository_pattern="team-a/*", keep_newest=5)
    policy("everything", repository_pattern="*", older_than_days=90)
    policy("payroll", repository_pattern="team-b/payroll-*", older_than_days=30)
    policy("unused", repository_pattern="nothing-here/*", older_than_days=30)
    maintainer = make_user("alice", pattern="team-a/*", role=Role.MAINTAINER)
    client.force_login(maintainer)

    page = client.get(reverse("dashboard:retention")).content.decode()
    assert "team-a-weekly" in page and "everything" in page
    assert "payroll" not in page and "unused" not in page and "nothing-here" not in page
    preview = client.get(reverse("dashboard:retention-preview"))
    assert [p.name for p in preview.context["policy_choices"]] == ["everything", "team-a-weekly"]
    assert "payroll" not in preview.content.decode()
    assert client.get(reverse("dashboard:retention-preview"), {"policy": "team-a-weekly"}).status_code == 200
    # Hidden and unknown alike: a 404, for the preview and for applying.
    for name in ("payroll", "unused", "no-such-policy"):
        assert client.get(reverse("dashboard:retention-preview"), {"policy": name}).status_code == 404
        applied = client.post(reverse("dashboard:retention-apply"), {"policy": name, "fingerprint": "0" * 64})
        assert applied.status_code == 404
    assert not AuditEntry.objects.filter(action__startswith="retention_delete").exists()

    client.force_login(make_user("root", superuser=True))
    page = client.get(reverse("dashboard:retention")).content.decode()
    assert all(name in page for name in ("team-a-weekly", "everything", "team-b/payroll-*", "nothing-here/*"))
    assert client.get(reverse("dashboard:retention-preview"), {"policy": "payroll"}).status_code == 200

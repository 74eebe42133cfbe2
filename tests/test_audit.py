"""The audit log: who sees which entries, filters, pagination, CSV export, append-only rows,
and the entries written for sign-in failures and access changes."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from dashboard.audit_views import PAGE_SIZE, neutralize
from dashboard.models import (
    AccessRule,
    AuditEntry,
    DeletedVersion,
    Pin,
    Registry,
    Repository,
    RetentionPolicy,
    Role,
    TagHistory,
)
from tests.page_checks import csp_violations
from tests.personas import make_user

pytestmark = pytest.mark.django_db

AUDIT = reverse("dashboard:audit")
EXPORT = reverse("dashboard:audit-export")
PARIS = ZoneInfo("Europe/Paris")


def entry(repository: str = "", *, action: str = "delete_tag", outcome: str = "ok", **fields) -> AuditEntry:
    fields.setdefault("username", "alice")
    return AuditEntry.objects.create(repository=repository, action=action, outcome=outcome, **fields)


def listed(response) -> str:
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def exported(response) -> list[dict[str, str]]:
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def log() -> dict[str, AuditEntry]:
    return {
        "visible": entry("team-a/api", tag="v1", username="alice", remote_addr="203.0.113.7"),
        "nested": entry("team-a/svc/worker", action="pin", username="bob"),
        "hidden": entry("team-b/secret-payroll", username="carol"),
        "login": entry("", action="login_failed", outcome="refused", username="mallory"),
        "rule": entry("", action="rule_changed", reason="added rule ops: * (admin)", username="boss"),
    }


def test_admins_see_every_entry(client, log):
    client.force_login(make_user("boss", superuser=True))
    page = listed(client.get(AUDIT))
    for name in ("team-a/api", "team-b/secret-payroll", "login_failed", "rule_changed", "203.0.113.7"):
        assert name in page
    assert exported(client.get(EXPORT, {"repository": "team-a/api"}))[0]["remote_addr"] == "203.0.113.7"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ADMIN])
def test_others_see_only_entries_of_repositories_they_may_see(client, log, role):
    client.force_login(make_user("alice", pattern="team-a/*", role=role))
    response = client.get(AUDIT)
    page = listed(response)
    # Admin of a namespace is not admin of the dashboard: no other teams, no logins, no rules.
    assert {e.pk for e in response.context["page"]} == {log["visible"].pk, log["nested"].pk}
    assert "team-a/api" in page and "team-a/svc/worker" in page
    for hidden in ("team-b/secret-payroll", "carol", "mallory", "added rule"):
        assert hidden not in page
    rows = exported(client.get(EXPORT))
    assert {row["repository"] for row in rows} == {"team-a/api", "team-a/svc/worker"}
    # Where others connect from is for dashboard admins only.
    assert "remote_addr" not in rows[0] and "203.0.113.7" not in page


def test_outsiders_see_nothing_and_anonymous_visitors_must_sign_in(client, settings, log):
    settings.DASHBOARD_PUBLIC_READ = True
    page = client.get(AUDIT)
    assert page.status_code == 302 and page["Location"].startswith(reverse("login"))
    assert client.get(EXPORT).status_code == 403
    assert client.get(AUDIT, headers={"HX-Request": "true"}).status_code == 403

    client.force_login(make_user("outsider"))
    assert "team-" not in listed(client.get(AUDIT))
    assert exported(client.get(EXPORT)) == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"user": "BOB"}, {"nested"}),
        ({"repository": "team-a/api"}, {"visible"}),
        ({"repository": "team-a/*"}, {"visible", "nested"}),
        ({"action": "login_failed"}, {"login"}),
        ({"outcome": "refused"}, {"login"}),
        ({"action": "delete_tag", "outcome": "ok"}, {"visible", "hidden"}),
        ({}, {"visible", "nested", "hidden", "login", "rule"}),
    ],
)
def test_filters(client, log, query, expected):
    client.force_login(make_user("boss", superuser=True))
    shown = client.get(AUDIT, query).context["page"]
    assert {entry.pk for entry in shown} == {log[name].pk for name in expected}
    rows = exported(client.get(EXPORT, query))
    assert sorted((row["username"], row["action"], row["repository"]) for row in rows) == sorted(
        (log[name].username, log[name].action, log[name].repository) for name in expected
    )


def test_date_range_is_whole_days_in_the_dashboard_time_zone(client, settings):
    settings.TIME_ZONE = "Europe/Paris"
    at = lambda *args: datetime(*args, tzinfo=PARIS)  # noqa: E731
    before = entry("a/x", created_at=at(2024, 3, 9, 23, 59))
    first = entry("a/x", created_at=at(2024, 3, 10, 0, 0))
    last = entry("a/x", created_at=at(2024, 3, 11, 23, 59))
    after = entry("a/x", created_at=at(2024, 3, 12, 0, 0))
    client.force_login(make_user("boss", superuser=True))

    response = client.get(AUDIT, {"since": "2024-03-10", "until": "2024-03-11"})
    assert [e.pk for e in response.context["page"]] == [last.pk, first.pk]
    response = client.get(AUDIT, {"since": "2024-03-12"})
    assert [e.pk for e in response.context["page"]] == [after.pk]
    response = client.get(AUDIT, {"until": "2024-03-09"})
    assert [e.pk for e in response.context["page"]] == [before.pk]


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"until": "2024-02-30"},
        {"since": "2024-03-02", "until": "2024-03-01"},
        {"outcome": "maybe"},
        {"page": "0"},
        {"page": "two"},
        {"user": "x" * 151},
    ],
)
def test_junk_filters_are_a_400(client, query):
    client.force_login(make_user("boss", superuser=True))
    assert client.get(AUDIT, query).status_code == 400
    assert client.get(EXPORT, query).status_code == 400


def test_a_viewers_repository_pattern_is_collapsed_checked_and_capped(client, log):
    client.force_login(make_user("alice", pattern="team-a/*", role=Role.VIEWER))

    # Twelve stars in a row took 4 s per row; collapsed, they are one `*`.
    shown = client.get(AUDIT, {"repository": "team-a/************r"}).context["page"]
    assert {e.pk for e in shown} == {log["nested"].pk}
    assert {row["repository"] for row in exported(client.get(EXPORT, {"repository": "team-a/**i"}))} == {"team-a/api"}

    for pattern, error in [
        ("team-a/************#", "Use lower-case repository-name characters"),
        ("Team-A/*", "Use lower-case repository-name characters"),
        ("team-a/*?*?*?*?*", "Use at most 8 wildcards (* and ?); this pattern has 9"),
    ]:
        refused = client.get(AUDIT, {"repository": pattern})
        assert refused.status_code == 400 and f"repository: {error}" in refused.content.decode(), pattern
        assert client.get(EXPORT, {"repository": pattern}).status_code == 400


def test_pagination_keeps_the_filters_and_the_query_count_is_bounded(client, django_assert_max_num_queries):
    AuditEntry.objects.bulk_create(
        AuditEntry(username="alice", action="pin", repository=f"team-a/r{i}", outcome="ok") for i in range(PAGE_SIZE + 7)
    )
    entry("team-a/other", action="unpin")
    client.force_login(make_user("alice-reader", pattern="team-a/*", role=Role.VIEWER))

    with django_assert_max_num_queries(8):
        first = client.get(AUDIT, {"action": "pin"})
    assert len(first.context["page"]) == PAGE_SIZE
    page = first.content.decode()
    assert "?action=pin&amp;page=2" in page
    assert f"{EXPORT}?action=pin" in page

    second = client.get(AUDIT, {"action": "pin", "page": "2"})
    assert len(second.context["page"]) == 7
    assert all(e.action == "pin" for e in second.context["page"])


def test_htmx_gets_only_the_results_block(client, log):
    client.force_login(make_user("boss", superuser=True))
    response = client.get(AUDIT, {"outcome": "refused"}, headers={"HX-Request": "true", "HX-Target": "audit-results"})
    body = listed(response)
    assert "<html" not in body and "mallory" in body and "team-a/api" not in body
    assert "HX-Request" in response["Vary"]
    assert "<html" in listed(client.get(AUDIT))


def test_the_export_defuses_spreadsheet_formulas(client):
    entry("team-a/api", username="=HYPERLINK(\"http://evil\")", reason="+1+1", tag="-2", digest_after="@SUM(A1)")
    client.force_login(make_user("boss", superuser=True))
    response = client.get(EXPORT)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    (row,) = exported(response)
    assert row["username"] == "'=HYPERLINK(\"http://evil\")"
    assert (row["reason"], row["tag"], row["digest_after"]) == ("'+1+1", "'-2", "'@SUM(A1)")
    assert row["repository"] == "team-a/api"
    assert [neutralize(v) for v in ("\tcmd", "safe", None, "a=b")] == ["'\tcmd", "safe", "", "a=b"]


def test_entries_are_append_only():
    saved = entry("team-a/api")
    with pytest.raises(ValueError):
        saved.save()
    with pytest.raises(ValueError):
        saved.delete()
    with pytest.raises(ValueError):
        AuditEntry.objects.filter(pk=saved.pk).update(reason="rewritten")
    with pytest.raises(ValueError):
        AuditEntry.objects.all().delete()
    with pytest.raises(ValueError):
        AuditEntry.objects.bulk_update([saved], ["reason"])
    assert AuditEntry.objects.get(pk=saved.pk).reason == ""


def test_the_django_admin_cannot_change_entries(client):
    saved = entry("team-a/api")
    client.force_login(make_user("boss", superuser=True))
    assert client.get(reverse("admin:dashboard_auditentry_change", args=[saved.pk])).status_code == 200
    assert client.post(reverse("admin:dashboard_auditentry_delete", args=[saved.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=saved.pk).exists()


def test_rule_changes_in_the_django_admin_name_the_admin(client):
    boss = make_user("boss", superuser=True)
    group = Group.objects.create(name="ops")
    client.force_login(boss)
    add = client.post(
        reverse("admin:dashboard_accessrule_add"), {"group": group.pk, "pattern": "ops/*", "role": Role.OPERATOR}
    )
    assert add.status_code == 302
    rule = AccessRule.objects.get(group=group)
    change = reverse("admin:dashboard_accessrule_change", args=[rule.pk])
    assert client.post(change, {"group": group.pk, "pattern": "ops/*", "role": Role.ADMIN}).status_code == 302
    assert client.post(reverse("admin:dashboard_accessrule_delete", args=[rule.pk]), {"post": "yes"}).status_code == 302

    changes = AuditEntry.objects.filter(action="rule_changed").order_by("id")
    assert [(e.username, e.user_id, e.reason) for e in changes] == [
        ("boss", boss.pk, "added rule ops: ops/* (operator)"),
        ("boss", boss.pk, "changed rule ops: ops/* (operator) to ops: ops/* (admin)"),
        ("boss", boss.pk, "removed rule ops: ops/* (admin)"),
    ]
    assert all(e.repository == "" and e.outcome == "ok" for e in changes)


def test_rule_changes_on_the_access_page(client):
    admin = make_user("rule-admin", pattern="*", role=Role.ADMIN)
    group = Group.objects.create(name="team-c")
    client.force_login(admin)
    access = reverse("dashboard:access")

    response = client.post(reverse("dashboard:access-rule-add"), {"group": group.pk, "pattern": "team-c/*", "role": Role.MAINTAINER})
    assert response.status_code == 302 and response["Location"] == access
    rule = AccessRule.objects.get(group=group)
    assert "team-c/*" in listed(client.get(access))

    refused = client.post(reverse("dashboard:access-rule-add"), {"group": group.pk, "pattern": "Team-C/*", "role": Role.VIEWER})
    assert refused.status_code == 400 and AccessRule.objects.filter(group=group).count() == 1

    assert client.post(reverse("dashboard:access-rule-delete", args=[rule.pk])).status_code == 302
    assert not AccessRule.objects.filter(group=group).exists()
    reasons = list(AuditEntry.objects.filter(action="rule_changed", username="rule-admin").values_list("reason", flat=True))
    assert sorted(reasons) == ["added rule team-c: team-c/* (maintainer)", "removed rule team-c: team-c/* (maintainer)"]


def test_only_dashboard_admins_may_manage_rules(client):
    namespace_admin = make_user("ns-admin", pattern="team-a/*", role=Role.ADMIN)
    rule = AccessRule.objects.get()
    client.force_login(namespace_admin)
    page = listed(client.get(reverse("dashboard:access")))
    assert "team-a/*" in page and "Add rule" not in page

    add = client.post(reverse("dashboard:access-rule-add"), {"group": rule.group_id, "pattern": "*", "role": Role.ADMIN})
    delete = client.post(reverse("dashboard:access-rule-delete", args=[rule.pk]))
    assert (add.status_code, delete.status_code) == (403, 403)
    assert list(AccessRule.objects.values_list("pattern", flat=True)) == ["team-a/*"]


def test_the_access_page_shows_admins_every_rule_and_others_their_own(client):
    make_user("alice", pattern="team-a/*", role=Role.VIEWER)
    make_user("bob", pattern="team-b/*", role=Role.OPERATOR)
    client.force_login(make_user("boss", superuser=True))
    page = listed(client.get(reverse("dashboard:access")))
    assert "team-a/*" in page and "team-b/*" in page and "bob-group" in page

    client.force_login(make_user("carol", pattern="team-c/*", role=Role.VIEWER))
    page = listed(client.get(reverse("dashboard:access")))
    assert "team-c/*" in page and "team-a/*" not in page and "bob" not in page


def test_changes_outside_a_request_are_by_system_and_memberships_are_audited():
    user = make_user("dave")
    group = Group.objects.create(name="deployers")
    AccessRule.objects.create(group=group, pattern="deploy/*", role=Role.OPERATOR)
    user.groups.add(group)
    group.user_set.remove(user)
    group.user_set.add(user)
    user.groups.clear()

    entries = AuditEntry.objects.filter(action__in=["rule_changed", "membership_changed"]).order_by("id")
    assert [(e.username, e.action, e.reason) for e in entries] == [
        ("system", "rule_changed", "added rule deployers: deploy/* (operator)"),
        ("system", "membership_changed", "dave added to deployers"),
        ("system", "membership_changed", "dave removed from deployers"),
        ("system", "membership_changed", "dave added to deployers"),
        ("system", "membership_changed", "dave removed from deployers"),
    ]


def policy_form(**fields) -> dict[str, str]:
    """The Django admin's RetentionPolicy form as a browser posts it."""
    data = {"name": "nightly", "repository_pattern": "team-a/*", "tag_include": "", "tag_exclude": "", "keep_newest": "5"}
    data |= {"older_than_days": "", "keep_pulled_within_days": "", "enabled": "on"}
    return data | fields


def test_retention_policy_edits_in_the_django_admin_are_audited(client):
    boss = make_user("boss", superuser=True)
    client.force_login(boss)
    assert client.post(reverse("admin:dashboard_retentionpolicy_add"), policy_form()).status_code == 302
    policy = RetentionPolicy.objects.get(name="nightly")
    change = reverse("admin:dashboard_retentionpolicy_change", args=[policy.pk])
    assert client.post(change, policy_form(keep_newest="9")).status_code == 302
    # The model's own checks hold here too: a policy without a limit would delete every tag.
    assert client.post(change, policy_form(keep_newest="")).status_code == 200
    delete = reverse("admin:dashboard_retentionpolicy_delete", args=[policy.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302

    five, nine = "repositories team-a/*, keep the newest 5", "repositories team-a/*, keep the newest 9"
    entries = AuditEntry.objects.filter(action__startswith="retention_policy").order_by("id")
    assert all((e.username, e.user_id) == ("boss", boss.pk) for e in entries)
    assert [(e.action, e.reason) for e in entries] == [
        ("retention_policy_saved", f"added policy nightly: {five}"),
        ("retention_policy_saved", f"changed policy nightly from {five} to {nine}"),
        ("retention_policy_deleted", f"removed policy nightly: {nine}"),
    ]


def test_deleting_retention_policies_from_the_admin_list_audits_each(client):
    client.force_login(make_user("boss", superuser=True))
    policies = [RetentionPolicy.objects.create(name=name, keep_newest=3) for name in ("one", "two")]
    response = client.post(
        reverse("admin:dashboard_retentionpolicy_changelist"),
        {"action": "delete_selected", "_selected_action": [p.pk for p in policies], "post": "yes"},
    )
    assert response.status_code == 302 and not RetentionPolicy.objects.exists()
    reasons = AuditEntry.objects.filter(action="retention_policy_deleted").values_list("reason", flat=True)
    assert sorted(reasons) == [f"removed policy {name}: repositories *, keep the newest 3" for name in ("one", "two")]


def test_deleted_versions_are_listed_read_only_in_the_django_admin(client):
    registry = Registry.objects.create(name="lab", url="http://127.0.0.1:9")
    deleted = DeletedVersion.objects.create(
        registry=registry, repository="team-a/api", digest="sha256:" + "ab" * 32, freed_bytes=4096
    )
    client.force_login(make_user("boss", superuser=True))
    pages = [
        client.get(reverse("admin:dashboard_deletedversion_changelist")),
        client.get(reverse("admin:dashboard_deletedversion_change", args=[deleted.pk])),
    ]
    for page in pages:
        assert page.status_code == 200 and "team-a/api" in page.content.decode()
        assert csp_violations(page.content.decode()) == []
    assert "Save" not in pages[1].content.decode()

    assert client.get(reverse("admin:dashboard_deletedversion_add")).status_code == 403
    change = reverse("admin:dashboard_deletedversion_change", args=[deleted.pk])
    assert client.post(change, {"repository": "x", "digest": "y", "freed_bytes": "0"}).status_code == 403
    delete = reverse("admin:dashboard_deletedversion_delete", args=[deleted.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert DeletedVersion.objects.get(pk=deleted.pk).freed_bytes == 4096


def test_pin_and_tag_history_edits_in_the_django_admin_are_audited(client):
    boss = make_user("boss", superuser=True)
    client.force_login(boss)
    registry = Registry.objects.create(name="lab", url="http://127.0.0.1:9")
    repository = Repository.objects.create(registry=registry, name="team-a/api")
    digest, other = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
    pin_form = {"repository": repository.pk, "digest": digest, "tags_at_pin": '["v1"]', "reason": "release"}
    pin_form |= {"created_at_0": "2026-01-02", "created_at_1": "03:04:05"}

    assert client.post(reverse("admin:dashboard_pin_add"), pin_form).status_code == 302
    pin = Pin.objects.get()
    assert pin.created_by == boss
    change = reverse("admin:dashboard_pin_change", args=[pin.pk])
    assert client.post(change, pin_form | {"reason": "LTS"}).status_code == 302
    assert client.post(reverse("admin:dashboard_pin_delete", args=[pin.pk]), {"post": "yes"}).status_code == 302

    period = TagHistory.objects.create(
        repository=repository, tag="production", digest=digest, since=datetime(2026, 1, 1, tzinfo=UTC), started_by="sync"
    )
    period_form = {"repository": repository.pk, "tag": "production", "digest": other, "started_by": "sync", "ended_by": ""}
    period_form |= {"since_0": "2026-01-01", "since_1": "00:00:00", "until_0": "", "until_1": ""}
    assert client.post(reverse("admin:dashboard_taghistory_change", args=[period.pk]), period_form).status_code == 302
    deleted = client.post(
        reverse("admin:dashboard_taghistory_changelist"),
        {"action": "delete_selected", "_selected_action": [period.pk], "post": "yes"},
    )
    assert deleted.status_code == 302 and not TagHistory.objects.exists()

    released = f"team-a/api@{digest}: release (tags then: v1)"
    lts = f"team-a/api@{digest}: LTS (tags then: v1)"
    on = "team-a/api:production on {} from 2026-01-01 00:00:00 until now"
    entries = AuditEntry.objects.exclude(action__startswith="login").order_by("id")
    assert all((e.username, e.repository, e.outcome) == ("boss", "team-a/api", "ok") for e in entries)
    assert [(e.action, e.tag, e.digest_before, e.reason) for e in entries] == [
        ("pin", "", digest, f"added in the Django admin: {released}"),
        ("pin", "", digest, f"changed in the Django admin from {released} to {lts}"),
        ("unpin", "", digest, f"removed in the Django admin: {lts}"),
        ("tag_history_edited", "production", other, f"changed in the Django admin from {on.format(digest)} to {on.format(other)}"),
        ("tag_history_deleted", "production", other, f"removed in the Django admin: {on.format(other)}"),
    ]

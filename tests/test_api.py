"""The JSON API: bearer tokens only, the same roles and visibility as the pages, JSON errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dashboard.models import ApiToken, AuditEntry, Pin
from tests.personas import make_user
from tests.rollback_support import Dashboard, People, dashboard, people  # noqa: F401 (fixtures)
from tests.support.images import ImagePusher

pytestmark = pytest.mark.django_db


class Api:
    """A test client that sends one user's bearer token and enforces CSRF like a browser would."""

    def __init__(self, token: str | None) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, url: str, **params):
        return self.client.get(url, params, headers=self.headers)

    def post(self, url: str, body: object):
        return self.client.post(url, body, content_type="application/json", headers=self.headers)

    def delete(self, url: str):
        return self.client.delete(url, headers=self.headers)


@pytest.fixture
def api(people: People):
    def for_user(user) -> Api:
        return Api(ApiToken.issue(user, "ci")[1])

    return for_user


@pytest.fixture
def deployed(dashboard: Dashboard, pusher: ImagePusher, repo_name: str):
    v1 = pusher.push_image(repo_name, ("1.0", "production"), created=datetime(2026, 1, 1, tzinfo=UTC), unique=f"{repo_name}-1")
    dashboard.sync(repo_name)
    v2 = pusher.push_image(repo_name, ("2.0", "production"), created=datetime(2026, 2, 1, tzinfo=UTC), unique=f"{repo_name}-2")
    return dashboard.sync(repo_name), v1, v2


def urls(name: str, tag: str = "production", digest: str = "") -> dict[str, str]:
    return {
        "tags": reverse("dashboard:api-tags", args=[name]),
        "pins": reverse("dashboard:api-pins", args=[name]),
        "restore": reverse("dashboard:api-restore", args=[name, tag]),
        "candidates": reverse("dashboard:api-candidates", args=[name, tag]),
        "tag": reverse("dashboard:api-tag", args=[name, tag]),
        "pin": reverse("dashboard:api-pin", args=[name, digest or "sha256:" + "0" * 64]),
    }


def test_only_a_valid_bearer_token_authenticates(deployed, people, client):
    repository, _, _ = deployed
    url = urls(repository.name)["tags"]

    assert Api(None).get(url).status_code == 401
    assert Api("rb_nope_nope").get(url).status_code == 401
    response = Api("not-even-the-format").get(url)
    assert response.status_code == 401
    assert response.json() == {"error": "Send a valid API token: Authorization: Bearer <token>."}
    assert response["WWW-Authenticate"].startswith("Bearer")
    # A signed-in browser session is not an API credential.
    client.force_login(people.operator)
    assert client.get(url).status_code == 401
    assert client.post(urls(repository.name)["restore"], {}, content_type="application/json").status_code == 401

    token = ApiToken.issue(people.viewer, "ci")[1]
    people.viewer.is_active = False
    people.viewer.save()
    assert Api(token).get(url).status_code == 401


def test_an_expired_token_is_refused_like_an_unknown_one(deployed, people):
    url = urls(deployed[0].name)["tags"]
    created, token = ApiToken.issue(people.viewer, "ci", expires_in_days=30)
    assert Api(token).get(url).status_code == 200

    # Thirty days later, as far as the token knows.
    ApiToken.objects.filter(pk=created.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = Api(token).get(url)
    assert response.status_code == 401
    assert response.json() == Api("rb_nope_nope").get(url).json()


def test_a_read_only_token_reads_and_changes_nothing(deployed, people, pusher):
    repository, v1, v2 = deployed
    named = urls(repository.name, digest=v1.digest)
    Pin.objects.create(repository=repository, digest=v1.digest, reason="lts", created_by=people.operator)
    # The operator's roles would allow all of it; the token does not.
    reader = Api(ApiToken.issue(people.operator, "dashboards", read_only=True)[1])

    assert reader.get(named["tags"]).status_code == 200
    assert reader.get(named["candidates"]).status_code == 200
    refused = [
        reader.post(named["restore"], {"digest": v1.digest, "expected_digest": v2.digest}),
        reader.post(named["pins"], {"digest": v2.digest, "reason": "hold"}),
        reader.delete(named["pin"]),
        reader.delete(named["tag"] + f"?expected_digest={v2.digest}"),
    ]

    assert [response.status_code for response in refused] == [403] * 4
    assert "read-only" in refused[0].json()["error"]
    assert pusher.head_digest(repository.name, "production") == v2.digest
    assert list(Pin.objects.filter(repository=repository).values_list("digest", flat=True)) == [v1.digest]
    entries = AuditEntry.objects.filter(action="api_write", outcome="refused", repository=repository.name)
    assert entries.count() == 4
    # A repository the token's user may not see stays a 404, read-only or not.
    hidden = Api(ApiToken.issue(people.outsider, "ci", read_only=True)[1])
    assert hidden.post(named["restore"], {"digest": v1.digest, "expected_digest": v2.digest}).status_code == 404


def test_the_token_is_stored_as_a_hash_and_its_use_recorded(people):
    created, token = ApiToken.issue(people.viewer, "deploy")
    row = ApiToken.objects.get(pk=created.pk)
    assert token.startswith(f"rb_{row.prefix}_") and len(token) > 40
    assert token not in (row.token_hash, row.prefix, row.name)
    Api(token).get(reverse("dashboard:api-repositories"))
    assert ApiToken.objects.get(pk=created.pk).last_used_at is not None


def test_role_and_visibility_matrix(deployed, people, api):
    repository, v1, v2 = deployed
    named = urls(repository.name)
    restore = {"digest": v1.digest, "expected_digest": v2.digest}

    assert api(people.viewer).get(named["tags"]).status_code == 200
    assert api(people.outsider).get(named["tags"]).status_code == 404
    assert api(people.outsider).post(named["restore"], restore).status_code == 404
    assert api(people.viewer).post(named["restore"], restore).json()["error"].startswith("This needs the operator role")
    assert api(people.maintainer).post(named["restore"], restore).status_code == 403
    assert api(people.maintainer).post(named["pins"], {"digest": v1.digest, "reason": "x"}).status_code == 403
    assert api(people.viewer).delete(named["tag"] + f"?expected_digest={v2.digest}").status_code == 403
    assert api(people.viewer).get(named["candidates"]).status_code == 200
    assert api(people.outsider).get(named["candidates"]).json() == {"error": "No such repository."}
    assert Api(None).get(reverse("dashboard:api-repositories")).status_code == 401
    unknown = urls("no/such/repository")
    assert api(people.operator).get(unknown["tags"]).json() == {"error": "No such repository."}


def test_repositories_lists_only_visible_ones(deployed, people, api):
    repository, _, _ = deployed
    listed = api(people.viewer).get(reverse("dashboard:api-repositories")).json()
    assert repository.name in [row["name"] for row in listed["repositories"]]
    assert api(people.outsider).get(reverse("dashboard:api-repositories")).json() == {"repositories": [], "next": None}
    assert api(people.viewer).get(reverse("dashboard:api-repositories"), page="x").status_code == 400


def test_tags_have_digests_dates_sizes_and_pins(deployed, dashboard, people, api):
    repository, v1, v2 = deployed
    Pin.objects.create(repository=repository, digest=v1.digest, reason="lts", created_by=people.operator)

    body = api(people.viewer).get(urls(repository.name)["tags"]).json()

    tags = {row["name"]: row for row in body["tags"]}
    assert sorted(tags) == ["1.0", "2.0", "production"]
    assert tags["production"]["digest"] == v2.digest
    assert tags["production"]["created"] == "2026-02-01T00:00:00+00:00"
    assert tags["production"]["size"] == v2.size
    assert (tags["1.0"]["pinned"], tags["production"]["pinned"]) == (True, False)


def test_ci_pins_the_deployed_release_and_rolls_production_back(deployed, people, api, pusher):
    repository, v1, v2 = deployed
    ci = api(people.operator)
    named = urls(repository.name, digest=v2.digest)

    pinned = ci.post(named["pins"], {"tag": "production", "reason": "deployed by pipeline 42"})
    assert pinned.status_code == 201
    assert pinned.json()["digest"] == v2.digest
    assert pinned.json()["tags_at_pin"] == ["2.0", "production"]
    assert [pin["digest"] for pin in ci.get(named["pins"]).json()["pins"]] == [v2.digest]

    stale = ci.post(named["restore"], {"digest": v1.digest, "expected_digest": v1.digest})
    assert stale.status_code == 409
    assert "Nothing was changed" in stale.json()["error"]
    rolled = ci.post(named["restore"], {"digest": v1.digest, "expected_digest": v2.digest})
    assert rolled.status_code == 200
    assert rolled.json() == {"tag": "production", "digest": v1.digest, "previous_digest": v2.digest, "changed": True}
    assert pusher.head_digest(repository.name, "production") == v1.digest

    assert ci.delete(named["pin"]).json() == {"unpinned": v2.digest}
    assert ci.delete(named["pin"]).status_code == 404
    actions = AuditEntry.objects.filter(repository=repository.name, user=people.operator).values_list("action", "outcome")
    assert sorted(actions) == sorted(
        [("pin", "ok"), ("restore", "refused"), ("restore", "ok"), ("unpin", "ok"), ("unpin", "refused")]
    )


def test_ci_finds_the_untagged_previous_digest_of_a_tag_and_restores_it(dashboard, pusher, repo_name, people, api):
    """Only `prod` is ever pushed: the digest it pointed at before has no tag left, and the
    candidates are the only place that still names it."""
    v1 = pusher.push_image(repo_name, "prod", created=datetime(2026, 1, 1, tzinfo=UTC), unique=f"{repo_name}-1")
    dashboard.sync(repo_name)
    v2 = pusher.push_image(repo_name, "prod", created=datetime(2026, 2, 1, tzinfo=UTC), unique=f"{repo_name}-2")
    dashboard.sync(repo_name)
    assert pusher.tags(repo_name) == ["prod"]
    ci = api(people.operator)
    named = urls(repo_name, tag="prod")

    body = ci.get(named["candidates"]).json()

    assert (body["repository"], body["tag"], body["current"]["digest"]) == (repo_name, "prod", v2.digest)
    [candidate] = body["candidates"]
    assert candidate["digest"] == v1.digest
    assert (candidate["tags"], candidate["untagged"], candidate["pinned"], candidate["pin"]) == ([], True, False, None)
    assert candidate["created"] == "2026-01-01T00:00:00+00:00"
    assert candidate["pointed_from"] < candidate["pointed_until"] <= body["current"]["pointed_at"]

    rolled = ci.post(named["restore"], {"digest": candidate["digest"], "expected_digest": body["current"]["digest"]})

    assert rolled.json() == {"tag": "prod", "digest": v1.digest, "previous_digest": v2.digest, "changed": True}
    assert pusher.head_digest(repo_name, "prod") == v1.digest
    # Now v2 is the untagged previous digest, the way forward again.
    assert [row["digest"] for row in ci.get(named["candidates"]).json()["candidates"]] == [v2.digest]


def test_candidates_show_tags_pins_and_refuse_unknown_tags(deployed, people, api):
    repository, v1, v2 = deployed
    Pin.objects.create(repository=repository, digest=v1.digest, reason="last good", created_by=people.operator)
    ci = api(people.viewer)

    [candidate] = ci.get(urls(repository.name)["candidates"]).json()["candidates"]

    assert (candidate["digest"], candidate["tags"], candidate["untagged"]) == (v1.digest, ["1.0"], False)
    assert candidate["pinned"] and candidate["pin"]["reason"] == "last good"
    assert candidate["pin"]["created_by"] == people.operator.username
    # 2.0 never moved, but the pinned 1.0 is a version it can go to: a pin it never pointed at.
    [pinned] = ci.get(urls(repository.name, tag="2.0")["candidates"]).json()["candidates"]
    assert (pinned["digest"], pinned["pointed_from"], pinned["pointed_until"]) == (v1.digest, None, None)
    unknown = ci.get(urls(repository.name, tag="never-existed")["candidates"])
    assert (unknown.status_code, unknown.json()) == (404, {"error": "No such tag: never-existed."})
    assert ci.get(urls(repository.name, tag="-bad")["candidates"]).status_code == 400
    assert ci.post(urls(repository.name)["candidates"], {}).status_code == 405


def test_candidates_cost_the_same_queries_for_few_or_many(deployed, dashboard, pusher, people, api):
    repository, v1, _ = deployed
    ci = api(people.viewer)
    url = urls(repository.name)["candidates"]

    def queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as captured:
            body = ci.get(url).json()
        return len(captured), len(body["candidates"])

    queries()  # the token's first use of the minute records it: one write more
    few, listed = queries()
    for version in range(3, 6):
        release = pusher.push_image(
            repository.name, (f"{version}.0", f"{version}-lts", "production"), unique=f"{repository.name}-{version}"
        )
        dashboard.sync(repository.name)
        Pin.objects.create(repository=repository, digest=release.digest, reason="r", created_by=people.operator)
    many, more = queries()
    assert (listed, more) == (1, 4)
    assert many == few


def test_delete_a_tag_with_the_digest_guard(deployed, people, api, pusher):
    repository, v1, v2 = deployed
    ci = api(people.maintainer)
    url = urls(repository.name, tag="2.0")["tag"]

    assert ci.delete(url).status_code == 400
    assert ci.delete(f"{url}?expected_digest={v1.digest}").status_code == 409
    response = ci.delete(f"{url}?expected_digest={v2.digest}")
    assert response.status_code == 200
    assert response.json() == {"deleted": "2.0", "digest": v2.digest}
    assert pusher.head_digest(repository.name, "2.0") is None
    # Only the tag went: production still points at the same version.
    assert pusher.head_digest(repository.name, "production") == v2.digest


def test_bad_input_is_a_400_with_a_json_error(deployed, people, api):
    repository, v1, _ = deployed
    ci = api(people.operator)
    named = urls(repository.name)

    raw = ci.client.post(named["restore"], b"{not json", content_type="application/json", headers=ci.headers)
    assert (raw.status_code, raw.json()) == (400, {"error": "The body is not valid JSON."})
    assert ci.post(named["restore"], ["a list"]).status_code == 400
    assert ci.post(named["restore"], {"digest": v1.digest}).status_code == 400  # no guard given
    assert ci.post(named["restore"], {"digest": 42, "expected_digest": None}).status_code == 400
    assert ci.post(named["restore"], {"digest": v1.digest, "expected_digest": "x" * 300}).status_code == 400
    assert ci.post(named["pins"], {"digest": "y" * 300, "reason": "junk"}).status_code == 400
    assert ci.post(named["pins"], {"digest": v1.digest}).status_code == 400  # no reason
    assert ci.get(named["restore"]).status_code == 405


def test_the_api_tokens_page_shows_a_new_token_once(people, client):
    client.force_login(people.viewer)
    url = reverse("dashboard:api-tokens")

    created = client.post(url, {"name": "deploy pipeline", "read_only": "on", "expires_in_days": "90"})

    assert created.status_code == 200
    token = ApiToken.objects.get(user=people.viewer)
    assert token.read_only and timedelta(days=89) < token.expires_at - timezone.now() <= timedelta(days=90)
    shown = created.content.decode()
    assert f"rb_{token.prefix}_" in shown and "will not be shown again" in shown
    assert "no-store" in created["Cache-Control"]
    listed = client.get(url).content.decode()
    assert f"rb_{token.prefix}_…" in listed and "will not be shown again" not in listed
    assert "read-only" in listed and f"{token.expires_at:%Y-%m-%d}" in listed
    assert client.post(url, {"name": ""}).status_code == 400
    for days in ("0", "3651", "soon"):
        refused = client.post(url, {"name": "ci", "expires_in_days": days})
        assert refused.status_code == 400 and "Expires in (days)" in refused.content.decode()
    assert ApiToken.objects.filter(user=people.viewer).count() == 1

    client.force_login(people.operator)
    assert client.post(reverse("dashboard:api-token-revoke", args=[token.pk])).status_code == 404
    client.force_login(people.viewer)
    assert client.post(reverse("dashboard:api-token-revoke", args=[token.pk])).status_code == 302
    assert not ApiToken.objects.filter(user=people.viewer).exists()
    assert list(AuditEntry.objects.filter(user=people.viewer).values_list("action", flat=True).order_by("id")) == [
        "api_token_create",
        "api_token_revoke",
    ]


def staff_with_token_permissions(username: str):
    user = make_user(username)
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(codename__endswith="_apitoken"))
    return user


def token_form(user, **fields) -> dict[str, str]:
    """The Django admin's token form as a browser posts it."""
    return {"user": str(user.pk), "name": "ci", "expires_at_0": "", "expires_at_1": ""} | fields


def test_staff_make_tokens_in_the_django_admin_for_themselves_only(client):
    root = make_user("root", superuser=True)
    staff = staff_with_token_permissions("stan")
    client.force_login(staff)
    add = reverse("admin:dashboard_apitoken_add")

    for_root = client.post(add, token_form(root))
    assert for_root.status_code == 200 and "Select a valid choice" in for_root.content.decode()
    assert not ApiToken.objects.exists()
    assert client.post(add, token_form(staff, read_only="on")).status_code == 302
    own = ApiToken.objects.get()
    assert own.user == staff and own.read_only
    # Nor can a token they hold be handed to someone else afterwards.
    change = reverse("admin:dashboard_apitoken_change", args=[own.pk])
    client.post(change, token_form(root, expires_at_0="2030-01-01", expires_at_1="00:00:00"))
    own.refresh_from_db()
    assert own.user == staff and own.expires_at.year == 2030
    roots = ApiToken.issue(root, "root's")[0]
    assert client.get(reverse("admin:dashboard_apitoken_change", args=[roots.pk])).status_code == 302  # not theirs
    assert "root&#x27;s" not in client.get(reverse("admin:dashboard_apitoken_changelist")).content.decode()

    client.force_login(root)
    assert client.post(add, token_form(staff, name="for stan")).status_code == 302
    assert ApiToken.objects.filter(user=staff).count() == 2
    assert AuditEntry.objects.filter(action="api_token_create").count() == 2


def test_the_command_prints_a_token_once_for_ci(deployed, people):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "vera", "deploy pipeline", "--read-only", "--expires-days", "7", stdout=out, stderr=err)

    token = out.getvalue().strip()
    created = ApiToken.objects.get(user=people.viewer)
    assert token.startswith(f"rb_{created.prefix}_") and token not in err.getvalue()
    assert created.read_only and timedelta(days=6) < created.expires_at - timezone.now() <= timedelta(days=7)
    assert Api(token).get(urls(deployed[0].name)["tags"]).status_code == 200
    assert AuditEntry.objects.get(action="api_token_create").username == "system"

    for arguments, message in [
        (["nobody", "ci"], "No user named 'nobody'"),
        (["vera", "ci", "--expires-days", "0"], "--expires-days must be between 1 and 3650, got 0"),
        (["vera", "ci", "--expires-days", "99999999999"], "between 1 and 3650"),
        (["vera", "ci", "--expires-days", "soon"], "invalid int value: 'soon'"),
        (["vera", ""], "NAME must be 1 to 100 characters"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("create_api_token", *arguments, stdout=StringIO(), stderr=StringIO())
    assert ApiToken.objects.count() == 1

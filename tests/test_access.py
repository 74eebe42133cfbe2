"""Roles from access rules, the database filter that hides repositories, and the view gates."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.test import RequestFactory
from django_htmx.middleware import HtmxDetails
from hypothesis import given, settings as hypothesis_settings, strategies as st

from dashboard.access import (
    is_admin,
    login_or_public_read,
    repository_for,
    role_on,
    signed_in,
    visible_repositories,
)
from dashboard.models import AccessRule, Registry, Repository, Role
from tests.personas import grant, make_user

pytestmark = pytest.mark.django_db


def fresh(user: User) -> User:
    """The same user without the rules cached on the object (a new request)."""
    return User.objects.get(pk=user.pk)


@pytest.fixture
def registry() -> Registry:
    return Registry.objects.create(name="access-test", url="http://access-test.invalid:5000")


def repositories(registry: Registry, *names: str) -> None:
    Repository.objects.bulk_create(Repository(registry=registry, name=name) for name in names)


def visible_names(user, registry: Registry) -> set[str]:
    return set(visible_repositories(user, registry).values_list("name", flat=True))


def test_the_highest_role_of_any_matching_rule_wins():
    user = make_user("mixed", pattern="team-a/*", role=Role.VIEWER)
    grant(user, "team-a/api", Role.OPERATOR)
    other_group_rule = make_user("other", pattern="team-a/*", role=Role.MAINTAINER)
    user.groups.add(other_group_rule.groups.get())
    user = fresh(user)

    assert role_on(user, "team-a/api") == Role.OPERATOR
    assert role_on(user, "team-a/web") == Role.MAINTAINER
    assert role_on(user, "team-b/api") is None
    # `*` crosses slashes, and the pattern is anchored at both ends.
    assert role_on(user, "team-a/svc/deep") == Role.MAINTAINER
    assert role_on(user, "team-a") is None
    assert role_on(user, "x/team-a/web") is None


def test_superusers_are_admins_everywhere(registry):
    repositories(registry, "team-a/api", "zzz")
    boss = make_user("boss", superuser=True)
    assert role_on(boss, "anything/at/all") == Role.ADMIN
    assert is_admin(boss)
    assert visible_names(boss, registry) == {"team-a/api", "zzz"}


def test_only_an_admin_rule_on_everything_makes_a_dashboard_admin():
    namespace_admin = make_user("ns-admin", pattern="team-a/*", role=Role.ADMIN)
    global_admin = make_user("global-admin", pattern="*", role=Role.ADMIN)
    global_operator = make_user("global-operator", pattern="*", role=Role.OPERATOR)

    assert role_on(namespace_admin, "team-a/api") == Role.ADMIN
    # Admin of team-a must not read other teams' audit trail nor grant itself `*`.
    assert not is_admin(namespace_admin)
    assert is_admin(global_admin)
    assert not is_admin(global_operator)
    assert not is_admin(AnonymousUser())


def test_rules_are_loaded_once_per_user_object(django_assert_num_queries):
    user = fresh(make_user("cached", pattern="team-a/*", role=Role.VIEWER))
    with django_assert_num_queries(1):
        for name in ("team-a/1", "team-a/2", "team-b/1"):
            role_on(user, name)
        is_admin(user)


def test_default_role_and_public_read(settings, registry):
    repositories(registry, "team-a/api", "team-b/api")
    outsider = make_user("outsider")
    viewer = make_user("viewer", pattern="team-a/*", role=Role.OPERATOR)
    anonymous = AnonymousUser()

    settings.DASHBOARD_PUBLIC_READ = False
    settings.DASHBOARD_DEFAULT_ROLE = None
    assert role_on(anonymous, "team-a/api") is None
    assert role_on(fresh(outsider), "team-a/api") is None
    assert visible_names(anonymous, registry) == set()
    assert visible_names(fresh(outsider), registry) == set()

    settings.DASHBOARD_PUBLIC_READ = True
    assert role_on(anonymous, "team-a/api") == Role.VIEWER
    assert visible_names(anonymous, registry) == {"team-a/api", "team-b/api"}
    # Public read is for anonymous visitors; signed-in users get DASHBOARD_DEFAULT_ROLE.
    assert role_on(fresh(outsider), "team-a/api") is None

    settings.DASHBOARD_DEFAULT_ROLE = Role.VIEWER
    assert role_on(fresh(outsider), "team-b/api") == Role.VIEWER
    assert visible_names(fresh(outsider), registry) == {"team-a/api", "team-b/api"}
    # A rule granting more than the default still wins where it matches.
    assert role_on(fresh(viewer), "team-a/api") == Role.OPERATOR
    assert role_on(fresh(viewer), "team-b/api") == Role.VIEWER


def test_repository_for_answers_404_without_the_role(registry):
    repositories(registry, "team-a/api", "team-b/api")
    viewer = make_user("viewer", pattern="team-a/*", role=Role.VIEWER)

    assert repository_for(viewer, registry, "team-a/api").name == "team-a/api"
    with pytest.raises(Http404):
        repository_for(viewer, registry, "team-b/api")
    with pytest.raises(Http404):
        repository_for(viewer, registry, "team-a/api", minimum=Role.MAINTAINER)
    with pytest.raises(Http404):
        repository_for(viewer, registry, "team-a/not-cached")


def test_the_database_filter_agrees_with_role_on(registry):
    """The catalog filters in SQL, the detail pages in Python: both must hide the same names."""
    alphabet = "ab-/._"
    names = ["".join(chars) for size in (1, 2, 3) for chars in itertools.product(alphabet, repeat=size)]
    repositories(registry, *names)
    user = make_user("prober")
    group = user.groups.create(name="prober-group")

    @hypothesis_settings(max_examples=150)
    @given(st.text(alphabet=alphabet + "*?", min_size=1, max_size=5))
    def agree(pattern: str) -> None:
        AccessRule.objects.filter(group=group).delete()
        AccessRule.objects.create(group=group, pattern=pattern, role=Role.VIEWER)
        prober = fresh(user)
        expected = {name for name in names if role_on(prober, name) is not None}
        assert visible_names(prober, registry) == expected, pattern

    agree()


@pytest.mark.parametrize("pattern", ["team-a/*", "*", "website-?", "a.b_c/d-e*"])
def test_valid_patterns(pattern):
    rule = AccessRule(group=make_user("p").groups.create(name="g"), pattern=pattern, role=Role.VIEWER)
    rule.full_clean()


@pytest.mark.parametrize("pattern", ["Team-A/*", "team-[ab]/*", "team a", "team-a/**\n", ""])
def test_patterns_that_could_never_match_are_refused(pattern):
    rule = AccessRule(group=make_user("p").groups.create(name="g"), pattern=pattern, role=Role.VIEWER)
    with pytest.raises(ValidationError):
        rule.full_clean()


def test_runs_of_stars_are_collapsed_before_a_rule_is_saved():
    rule = AccessRule(group=make_user("p").groups.create(name="g"), pattern="team-a/***x**", role=Role.VIEWER)
    rule.full_clean()
    assert rule.pattern == "team-a/*x*"


def test_a_pattern_may_hold_at_most_eight_wildcards():
    group = make_user("p").groups.create(name="g")
    AccessRule(group=group, pattern="a*?*?*?*?", role=Role.VIEWER).full_clean()
    with pytest.raises(ValidationError, match="at most 8 wildcards"):
        AccessRule(group=group, pattern="a*?*?*?*?*", role=Role.VIEWER).full_clean()
    # Collapsed first: twelve stars in a row are one.
    AccessRule(group=group, pattern="team-a/************z", role=Role.VIEWER).full_clean()


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("team-a/" + "*" * 40 + "z", {"team-a/az", "team-a/a-a-z"}), ("team-a/" + "*a" * 30 + "*z", set())],
)
def test_globs_are_matched_without_backtracking(registry, pattern, expected):
    """`team-a/************z` took Python's `re` (SQLite's REGEXP) 4 s per name, each further `*`
    several times more. Stored without the checks (as rules made before them were), a pattern
    must still be answered at once, by Python and by the database alike."""
    long_name = "team-a/" + "a" * 248
    repositories(registry, long_name, "team-a/az", "team-a/a-a-z", "team-b/z")
    user = make_user("prober")
    AccessRule.objects.create(group=user.groups.create(name="prober-group"), pattern=pattern, role=Role.VIEWER)

    assert visible_names(user, registry) == expected
    assert {name for name in (long_name, "team-a/az", "team-a/a-a-z", "team-b/z") if role_on(user, name)} == expected


def _ok(request) -> HttpResponse:
    return HttpResponse("content")


def _request(user, *, htmx: bool = False):
    request = RequestFactory().get("/somewhere/?page=2", HTTP_HX_REQUEST="true" if htmx else None)
    request.user = user
    request.htmx = HtmxDetails(request)
    return request


@pytest.mark.parametrize("public_read", [False, True])
def test_login_or_public_read(settings, public_read):
    settings.DASHBOARD_PUBLIC_READ = public_read
    page, fragment = login_or_public_read(_ok), login_or_public_read(fragment=True)(_ok)
    anonymous = AnonymousUser()

    responses = [page(_request(anonymous)), page(_request(anonymous, htmx=True)), fragment(_request(anonymous))]
    if public_read:
        assert [r.status_code for r in responses] == [200, 200, 200]
    else:
        redirect, htmx, polled = responses
        assert redirect.status_code == 302
        assert redirect["Location"] == "/accounts/login/?next=/somewhere/%3Fpage%3D2"
        assert (htmx.status_code, polled.status_code) == (403, 403)
        assert b"login" not in htmx.content.lower()
    assert page(_request(make_user("member"))).status_code == 200


def test_signed_in_ignores_public_read(settings):
    settings.DASHBOARD_PUBLIC_READ = True
    page, export = signed_in(_ok), signed_in(fragment=True)(_ok)
    assert page(_request(AnonymousUser())).status_code == 302
    assert export(_request(AnonymousUser())).status_code == 403
    assert page(_request(make_user("member"))).status_code == 200

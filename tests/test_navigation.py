"""The top navigation: each role sees the pages it can use, and the current one is marked."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from dashboard.models import Role
from tests.personas import make_user

pytestmark = pytest.mark.django_db

NAV = re.compile(r'<nav class="topnav" aria-label="Main">(.*?)</nav>', re.DOTALL)
LINK = re.compile(r'<a href="([^"]+)"(?: aria-current="(\w+)")?>([^<]+)</a>')


def navigation(client, url: str = "/") -> list[tuple[str, str, str]]:
    """(label, href, aria-current) of each link of the main navigation."""
    response = client.get(url)
    assert response.status_code == 200
    [nav] = NAV.findall(response.content.decode())
    return [(label, href, current) for href, current, label in LINK.findall(nav)]


def labels(client, url: str = "/") -> list[str]:
    return [label for label, _, _ in navigation(client, url)]


ALL = ["Repositories", "Pins", "Packages", "Retention", "Storage", "Audit log", "Access"]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.VIEWER, ["Repositories", "Pins", "Packages", "Storage", "Audit log", "Access"]),
        (Role.MAINTAINER, ALL),
        (Role.OPERATOR, ALL),
    ],
)
def test_each_role_sees_the_pages_it_can_use(client, role, expected):
    client.force_login(make_user("someone", pattern="team-a/*", role=role))
    assert labels(client) == expected


def test_an_admin_sees_every_page_and_the_account_links(client):
    client.force_login(make_user("boss", superuser=True))
    assert labels(client) == ALL
    html = client.get("/").content.decode()
    assert f'href="{reverse("dashboard:api-tokens")}"' in html
    assert f'href="{reverse("password_change")}"' in html


def test_anonymous_public_read_sees_only_what_needs_no_account(client, settings):
    settings.DASHBOARD_PUBLIC_READ = True
    assert labels(client) == ["Repositories", "Pins", "Packages"]
    assert reverse("dashboard:api-tokens") not in client.get("/").content.decode()


def test_every_linked_page_answers_the_role_that_sees_its_link(client):
    client.force_login(make_user("viewer", pattern="team-a/*", role=Role.VIEWER))
    for label, href, _ in navigation(client):
        assert client.get(href).status_code == 200, label


def test_the_current_page_is_marked_and_pages_inside_a_section_mark_it_too(client):
    client.force_login(make_user("boss", superuser=True))
    assert [(label, current) for label, _, current in navigation(client, "/retention/") if current] == [
        ("Retention", "page")
    ]
    assert [(label, current) for label, _, current in navigation(client, "/retention/new/") if current] == [
        ("Retention", "true")
    ]
    assert [(label, current) for label, _, current in navigation(client, "/pins/") if current] == [("Pins", "page")]
    assert [(label, current) for label, _, current in navigation(client, "/storage/growth/") if current] == [
        ("Storage", "true")
    ]
    html = client.get(reverse("dashboard:api-tokens")).content.decode()
    assert re.search(r'href="/account/api-tokens/" aria-current="page"', html)
    assert [current for _, _, current in navigation(client, reverse("dashboard:api-tokens")) if current] == []

"""Signing in through the real login form in headless Chromium, and seeing only what one may."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from dashboard.models import Role
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from tests.personas import make_user
from tests.support.images import ImagePusher
from tests.test_browser import PASSWORD, browser, orm_beside_playwright, page  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_viewer_signs_in_and_sees_only_their_team(page: Page, settings, registry, pusher: ImagePusher, make_repo_name):
    settings.REGISTRY_URL = registry.url
    mine, theirs = make_repo_name("team-a/"), make_repo_name("team-b/")
    pusher.push_image(mine, ("1.0",))
    pusher.push_image(theirs, ("1.0",))
    cache = configured_registry()
    for name in (mine, theirs):
        sync_registry(cache, client_for(cache), repository=name)
    make_user("vera", pattern="team-a/*", role=Role.VIEWER, password=PASSWORD)

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill("vera")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username and password")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Repositories")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(mine.rpartition("/")[2]))).to_be_visible()
    expect(page.get_by_text("1 repository")).to_be_visible()
    assert theirs not in page.content()

    # The htmx search cannot find it either.
    page.get_by_placeholder("Search repositories…").fill(theirs)
    expect(page.get_by_text("No repository matches.")).to_be_visible()

    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    assert theirs not in page.content()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Signed out")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))

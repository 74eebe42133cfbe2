"""Ops rolls production back in real headless Chromium, choosing by what the supply chain says:
which candidate carries the release key's signature and which one has criticals."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from dashboard.models import Role
from tests.personas import make_user
from tests.rollback_support import Dashboard, dashboard  # noqa: F401 (fixture)
from tests.supplychain_support import Release, release  # noqa: F401 (fixture)
from tests.test_browser import PASSWORD, browser, orm_beside_playwright, page, sign_in  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_ops_restores_the_verified_clean_candidate(page: Page, release: Release, pusher, settings):
    settings.RESTORE_REQUIRE_SIGNATURE = True
    name = release.repository.name
    make_user("ada", pattern="*", role=Role.OPERATOR, password=PASSWORD)
    sign_in(page)

    page.goto(f"/repositories/{name}/-/rollback/?tag=production")
    candidates = page.locator("table.candidates tbody tr")
    expect(candidates).to_have_count(2)
    vulnerable = candidates.filter(has_text=release.vulnerable.digest[7:19])
    clean = candidates.filter(has_text=release.clean.digest[7:19])
    expect(vulnerable.locator(".badge-vulns")).to_have_text("1 critical")
    expect(vulnerable.locator(".badge-signature")).to_have_text("signed, unknown key")
    expect(clean.locator(".badge-signature")).to_have_text("signed ✓")
    expect(clean.locator(".badge-signature")).to_have_attribute("title", re.compile("trusted key release"))
    expect(clean.locator(".badge-vulns")).to_have_text("no vulnerabilities")

    clean.get_by_role("button", name="Point production here…").click()
    page.get_by_role("button", name=re.compile(r"^Point production at ")).click()
    expect(page.get_by_role("status").first).to_contain_text(f"production now points at {release.clean.digest}")
    assert pusher.head_digest(name, "production") == release.clean.digest

    page.goto(f"/repositories/{name}/-/tags/production/")
    expect(page.locator(".supply-panel")).to_contain_text("verified with the key release")

"""An operator rolls production back in real headless Chromium, from the rollback candidates,
to a version no tag points at any more (still stored by the registry)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page, expect

from dashboard.models import Role
from tests.personas import make_user
from tests.rollback_support import Dashboard, dashboard  # noqa: F401 (fixture)
from tests.support.images import ImagePusher
from tests.test_browser import PASSWORD, browser, orm_beside_playwright, page, sign_in  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_rolls_production_back_from_the_candidates(
    page: Page, dashboard: Dashboard, pusher: ImagePusher, repo_name: str
):
    good = pusher.push_image(repo_name, "production", created=datetime(2026, 1, 5, tzinfo=UTC), unique="good")
    dashboard.sync(repo_name)
    bad = pusher.push_image(
        repo_name, ("1.1", "production"), created=datetime(2026, 1, 9, tzinfo=UTC), unique="bad", env=["BROKEN=1"]
    )
    dashboard.sync(repo_name)
    make_user("ada", pattern="*", role=Role.OPERATOR, password=PASSWORD)
    sign_in(page)

    page.goto(f"/repositories/{repo_name}/-/rollback/")
    page.get_by_label("Tag").fill("production")
    page.get_by_role("button", name="Show versions").click()
    expect(page).to_have_url(re.compile(r"\?tag=production"))
    candidates = page.locator("table.candidates tbody tr")
    expect(candidates).to_have_count(1)
    expect(candidates).to_contain_text("untagged, kept by the registry")
    candidates.get_by_role("button", name="Point production here…").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Point production at")
    expect(page.locator(".config-diff")).to_contain_text("BROKEN")
    page.get_by_role("button", name=re.compile(r"^Point production at ")).click()

    expect(page.get_by_role("status").first).to_contain_text(f"production now points at {good.digest}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("History of production")
    expect(page.locator("svg.timeline rect")).to_have_count(3)
    assert pusher.head_digest(repo_name, "production") == good.digest
    assert bad.digest != good.digest

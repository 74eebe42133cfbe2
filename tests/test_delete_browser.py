"""A maintainer deletes tags in real headless Chromium: one through the confirmation dialog,
two through the bulk selection."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from dashboard.models import AuditEntry, Role
from tests.personas import make_user
from tests.rollback_support import Dashboard, dashboard  # noqa: F401 (fixture)
from tests.support.images import ImagePusher
from tests.test_browser import PASSWORD, browser, orm_beside_playwright, page, sign_in  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def maintainer(db) -> None:
    make_user("ada", pattern="*", role=Role.MAINTAINER, password=PASSWORD)


def test_a_maintainer_deletes_one_tag_through_the_confirmation_dialog(
    page: Page, dashboard: Dashboard, pusher: ImagePusher, repo_name: str, maintainer
):
    image = pusher.push_image(repo_name, ("1.0", "latest"), unique="one")
    pusher.push_image(repo_name, ("2.0",), unique="two")
    dashboard.sync(repo_name)
    sign_in(page)

    page.goto(f"/repositories/{repo_name}/")
    page.get_by_role("link", name="Delete latest").click()

    dialog = page.locator("dialog#delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text("Delete tag latest?")
    expect(dialog).to_contain_text(image.digest)
    expect(dialog).to_contain_text("the other tags on this digest stay")
    dialog.get_by_role("button", name="Delete tag latest").click()

    expect(page.get_by_role("status").first).to_contain_text("Deleted tag latest. 1.0 still points")
    expect(page.locator("table.tags tbody tr")).to_have_count(2)
    assert pusher.tags(repo_name) == ["1.0", "2.0"]
    assert pusher.head_digest(repo_name, "1.0") == image.digest
    assert AuditEntry.objects.get(action="delete_tag", repository=repo_name).username == "ada"


def test_a_maintainer_selects_a_range_and_deletes_it_after_the_preview(
    page: Page, dashboard: Dashboard, pusher: ImagePusher, repo_name: str, maintainer
):
    for version in ("1.0", "1.1", "1.2", "1.3"):
        pusher.push_image(repo_name, (version,), unique=version)
    dashboard.sync(repo_name)
    sign_in(page)

    page.goto(f"/repositories/{repo_name}/?sort=name")
    submit = page.get_by_role("button", name="Delete selected tags…")
    expect(submit).to_be_disabled()
    page.get_by_label("Select 1.0").click()
    page.get_by_label("Select 1.2").click(modifiers=["Shift"])
    expect(page.get_by_text("3 selected")).to_be_visible()
    submit.click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Delete 3 of 3 selected tags?")
    page.get_by_role("button", name="Delete 3 tags").click()

    expect(page.get_by_role("heading", name="Results")).to_be_visible()
    expect(page.locator(".badge-ok")).to_have_count(3)
    expect(page).to_have_url(re.compile(r"/-/delete/preview/$"))  # htmx swapped the results in place
    assert pusher.tags(repo_name) == ["1.3"]

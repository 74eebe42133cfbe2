"""The demo's story (dashboard/demo.py) told into the test registry, then walked in real headless
Chromium: the first ten minutes of a new user, and every page checked on a phone-sized screen and
with axe-core, light and dark.

axe-core comes with axe-playwright-python (its axe.min.js is in the package: nothing is
downloaded); the scan runs in the page as a script injected over the DevTools protocol, which
the page's CSP does not apply to.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from dashboard import demo
from dashboard.models import RetentionPolicy
from dashboard.registries import configured_registry
from tests.personas import FAST_HASHERS, make_user
from tests.support.images import ImagePusher
from tests.test_browser import PASSWORD, browser, orm_beside_playwright, page, sign_in  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
# The elements sticking out past the right edge of the screen, outside any scrolling box: what
# makes a page wider than the phone.
STICKING_OUT = """(width) => [...document.querySelectorAll("body *")]
  .filter((element) => element.getBoundingClientRect().right > width)
  .filter((element) => {
    for (let parent = element.parentElement; parent; parent = parent.parentElement) {
      if (getComputedStyle(parent).overflowX !== "visible") return false;
    }
    return true;
  })
  .slice(0, 3)
  .map((element) => element.tagName.toLowerCase() + (element.className ? "." + element.className : ""))"""
# What axe calls serious or critical: contrast, names and labels, landmarks, focus.
BLOCKING = {"serious", "critical"}


@pytest.fixture
def story(settings, registry, pusher: ImagePusher, make_repo_name) -> demo.Story:
    settings.REGISTRY_URL = registry.url
    settings.PASSWORD_HASHERS = FAST_HASHERS
    told = demo.seed(configured_registry(), pusher, timezone.now(), prefix=make_repo_name("") + "/")
    make_user("ada", superuser=True, password=PASSWORD)
    return told


def test_first_ten_minutes_ops_find_where_production_pointed_and_what_it_can_go_back_to(page: Page, story: demo.Story):
    sign_in(page)
    page.get_by_placeholder("Search repositories…").fill(story.shop)
    row = page.locator("#catalog-results tbody tr").filter(has_text="website-ecommerce")
    # Columns: repository, tags, size, exclusive, shared: the base image's layers are shared.
    expect(row.locator("td").nth(4)).to_contain_text(re.compile(r"[1-9][\d.]* MB"))
    row.get_by_role("link", name=re.compile(r"website-ecommerce")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("website-ecommerce")
    # The base image's layers, shared with node-base, checkout-service and the payments worker.
    expect(page.locator("#repository-facts")).to_contain_text(re.compile(r"[\d.]+ MB shared with 3 repositories"))

    page.get_by_role("link", name="Roll back a tag…").click()
    page.get_by_label("Tag").fill("production")
    page.get_by_role("button", name="Show versions").click()
    candidates = page.locator("table.candidates tbody tr")
    # v2.1 (the bad release, rolled back from), v1.1 (pinned) and v1.0.
    expect(candidates).to_have_count(3)
    expect(candidates.filter(has_text="pinned")).to_contain_text("Last 1.x release")
    expect(candidates.filter(has_text="v2.1")).to_have_count(1)
    # CI's signed scan of v1.0 found one critical vulnerability: the rollback page says so.
    expect(candidates.filter(has_text="v1.0")).to_contain_text(re.compile(r"1 critical", re.IGNORECASE))

    page.get_by_role("link", name="Full history of production").click()
    periods = page.locator("table.history tbody tr")
    # v1.0, v1.1, v2.0, v2.1, then v2.0 again, restored by the operator.
    expect(periods).to_have_count(5)
    expect(periods.first).to_contain_text("restored by")
    expect(page.locator("svg.timeline rect")).to_have_count(5)


def _demo_pages(story: demo.Story) -> list[str]:
    shop = story.shop
    api = f"{story.prefix}shop-api"
    v10, v11, v20, v21 = (story.releases[v].digest for v in ("v1.0", "v1.1", "v2.0", "v2.1"))
    restore = urlencode({"tag": "production", "digest": v11, "expected": v20})
    return [
        "/",
        f"/?{urlencode({'q': 'website'})}",
        f"/repositories/{shop}/",
        f"/repositories/{shop}/-/tags/v2.0/",
        f"/repositories/{shop}/-/tags/production/",
        f"/repositories/{shop}/-/manifests/{v21}/",
        f"/repositories/{shop}/-/manifests/{v10}/vulnerabilities/",
        f"/repositories/{shop}/-/manifests/{v10}/packages/",
        f"/repositories/{api}/",
        f"/repositories/{api}/-/tags/3.2.0/",
        f"/repositories/{shop}/-/tags/production/history/",
        f"/repositories/{shop}/-/rollback/",
        f"/repositories/{shop}/-/rollback/?tag=production",
        f"/repositories/{shop}/-/compare/?{urlencode({'from': 'v2.0', 'to': 'v2.1'})}",
        f"/repositories/{shop}/-/restore/?{restore}",
        f"/repositories/{shop}/-/tags/build-101/delete/",
        f"/repositories/{shop}/-/manifests/{v20}/delete/",
        "/pins/",
        f"/packages/?{urlencode({'q': 'openssl'})}",
        "/retention/",
        "/retention/new/",
        f"/retention/{RetentionPolicy.objects.get(name=demo.NIGHTLY_POLICY).pk}/edit/",
        f"/retention/preview/?{urlencode({'policy': demo.NIGHTLY_POLICY})}",
        "/storage/",
        "/storage/growth/",
        "/audit/",
        "/access/",
        "/access/removed-repositories/",
        "/account/api-tokens/",
        "/accounts/password_change/",
    ]


def _blocking_violations(axe: Axe, page: Page) -> list[str]:
    results = axe.run(page).response["violations"]
    return [
        f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']][:3]}"
        for violation in results
        if violation["impact"] in BLOCKING
    ]


def test_every_page_of_the_demo_fits_a_phone_and_has_no_serious_accessibility_violations(
    browser: Browser, live_server, story: demo.Story
):
    axe = Axe()
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    page = context.new_page()
    problems: list[str] = []
    try:
        # The signed-out pages first.
        pages_seen = 0
        page.goto("/accounts/login/")
        problems += _check(axe, page, "/accounts/login/")
        sign_in(page)
        for path in _demo_pages(story):
            response = page.goto(path)
            assert response is not None and response.status == 200, path
            problems += _check(axe, page, path)
            pages_seen += 1
        # The bulk delete preview answers the repository page's form (a POST).
        page.goto(f"/repositories/{story.shop}/?sort=name")
        for tag in ("build-101", "build-102"):
            page.get_by_role("checkbox", name=re.compile(rf"\b{tag}\b")).check()
        page.get_by_role("button", name="Delete selected tags…").click()
        expect(page.get_by_role("heading", name=re.compile(r"^Delete 2 of 2 selected tags"))).to_be_visible()
        problems += _check(axe, page, "bulk delete preview")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Signed out")).to_be_visible()
        problems += _check(axe, page, "/accounts/logout/")
    finally:
        context.close()
    assert pages_seen == len(_demo_pages(story))
    assert not problems, "\n".join(problems)


def _check(axe: Axe, page: Page, where: str) -> list[str]:
    """The page at 390 px wide: nothing wider than the screen, no serious axe finding, light or dark."""
    problems = []
    width = page.evaluate("document.documentElement.scrollWidth")
    if width > PHONE["width"]:
        sticking_out = page.evaluate(STICKING_OUT, PHONE["width"])
        problems.append(f"{where}: {width} px wide at {PHONE['width']} px: {sticking_out}")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        problems += [f"{where} ({scheme}): {violation}" for violation in _blocking_violations(axe, page)]
    page.emulate_media(color_scheme="light")
    return problems

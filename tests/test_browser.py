"""Journeys in real headless Chromium against the live dashboard and a real registry."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from django.core.management import call_command
from playwright.sync_api import Browser, Page, expect, sync_playwright

from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from tests.personas import FAST_HASHERS, make_user
from tests.support.images import ImagePusher

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module", autouse=True)
def orm_beside_playwright() -> Iterator[None]:
    # Playwright's sync API keeps an event loop running in this thread, which trips Django's
    # async-safety check on every ORM call the test makes between browser steps.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(orm_beside_playwright: None) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server, settings) -> Iterator[Page]:
    settings.PASSWORD_HASHERS = FAST_HASHERS
    context = browser.new_context(base_url=live_server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    problems: list[str] = []
    # A CSP violation or a script error shows up here, and breaks the page for real users.
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert problems == []


@pytest.fixture
def shop(settings, registry, pusher: ImagePusher, make_repo_name) -> dict[str, str]:
    """A web shop with three releases and a multi-arch API, synced into the cache."""
    settings.REGISTRY_URL = registry.url
    names = {"web": make_repo_name("shop/"), "api": make_repo_name("shop/"), "other": make_repo_name("misc/")}
    for i, version in enumerate(["v1.0", "v1.1", "v2.0"]):
        image = pusher.push_image(
            names["web"], [version], created=datetime(2025, 1 + i * 3, 1, tzinfo=timezone.utc), unique=version
        )
    pusher.tag(names["web"], image, "latest")
    pusher.push_index(names["api"], ["3.2.0"], fmt="oci")
    pusher.push_image(names["other"], ["1"])
    cache = configured_registry()
    for name in names.values():
        sync_registry(cache, client_for(cache), repository=name)
    make_user("ada", superuser=True, password=PASSWORD)
    return names


def sign_in(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Repositories")).to_be_visible()


def test_find_a_repository_sort_its_tags_and_copy_a_pull_line(page: Page, shop: dict[str, str], registry):
    sign_in(page)

    # Live search: typing alone filters the table and puts the query in the address bar.
    page.get_by_placeholder("Search repositories…").fill(shop["web"])
    expect(page).to_have_url(re.compile(r"\?q=shop"))
    results = page.locator("#catalog-results")
    expect(results.get_by_role("link", name=shop["web"])).to_be_visible()
    expect(results.get_by_role("link", name=shop["other"])).to_have_count(0)

    results.get_by_role("link", name=shop["web"]).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(shop["web"].rpartition("/")[2])

    tag_links = page.locator("#tag-results a.tag-link")
    page.get_by_label("Sort by").select_option("name")
    expect(page).to_have_url(re.compile(r"sort=name"))
    expect(tag_links).to_have_text(["latest", "v1.0", "v1.1", "v2.0"])
    # Back to newest first through the column header (a real link, swapped by htmx).
    page.locator("#tag-results").get_by_role("link", name="Created").click()
    expect(page).to_have_url(re.compile(r"sort=created"))
    expect(tag_links.nth(2)).to_have_text("v1.1")
    expect(tag_links.nth(3)).to_have_text("v1.0")

    tag_links.filter(has_text=re.compile(r"^v2\.0$")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("v2.0")
    pull_line = f"docker pull {registry.host}/{shop['web']}:v2.0"
    expect(page.locator("#pull-tag")).to_have_text(pull_line)
    copy = page.locator('[data-copy-target="pull-tag"]')
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == pull_line

    page.get_by_text("Manifest JSON").click()
    expect(page.locator("details.raw pre").first).to_contain_text('"schemaVersion": 2')


def test_open_a_platform_of_a_multi_arch_image(page: Page, shop: dict[str, str]):
    sign_in(page)
    page.goto(f"/repositories/{shop['api']}/")
    expect(page.locator("#tag-results")).to_contain_text("multi-arch")

    page.locator("#tag-results").get_by_role("link", name="3.2.0", exact=True).click()
    platforms = page.locator("section", has=page.get_by_role("heading", name="Platforms"))
    expect(platforms.get_by_text("linux/arm64/v8")).to_be_visible()
    platforms.get_by_role("row", name="linux/arm64/v8").get_by_role("link").click()

    expect(page).to_have_url(re.compile(r"/-/manifests/sha256:"))
    expect(page.get_by_text("linux / arm64 / v8")).to_be_visible()
    expect(page.get_by_role("heading", name="Layers and build history")).to_be_visible()


def test_refresh_a_repository_on_the_task_queue_and_see_a_new_tag_without_a_reload(
    page: Page, shop: dict[str, str], settings, pusher: ImagePusher
):
    # Production's queue: the refresh only queues the sync, which this test then runs as the worker.
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    sign_in(page)
    page.goto(f"/repositories/{shop['other']}/?sort=name")
    tag_links = page.locator("#tag-results a.tag-link")
    expect(tag_links).to_have_text(["1"])
    facts = page.locator("#repository-facts")
    expect(facts).to_contain_text("1 tag")
    pusher.push_image(shop["other"], ["2"], unique="pushed-meanwhile")
    page.evaluate("window.notReloaded = true")

    page.get_by_role("button", name="Refresh").click()
    progress = page.locator("#refresh-progress")
    expect(progress).to_contain_text(f"Sync of {shop['other']}")
    expect(progress).to_contain_text("waiting for a worker")
    expect(tag_links).to_have_text(["1"])

    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)

    expect(tag_links).to_have_text(["1", "2"])
    expect(page.locator("#tag-results")).to_contain_text("Refreshed from the registry just now")
    # The page head's counts and "synced" date come with the fresh rows (an out-of-band swap).
    expect(facts).to_contain_text("2 tags")
    expect(facts).to_contain_text("synced just now")
    expect(facts).to_have_count(1)
    expect(progress).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
    expect(page).to_have_url(re.compile(rf"/repositories/{re.escape(shop['other'])}/\?sort=name$"))

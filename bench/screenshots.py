"""README screenshots of the demo data: catalog, repository and tag pages, light and dark.

Starts its own registry and dashboard on free ports with a throwaway database, pushes the
`make demo` story (dashboard/demo.py), and photographs the pages in headless Chromium (the
system's /usr/bin/chromium; no browser is downloaded). Writes docs/screenshots/*.png.

Usage: .venv/bin/python bench/screenshots.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import ImagePusher  # noqa: E402
from tests.support.registry_server import free_port, start_registry  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Pull lines in the pictures show a company-style host instead of a random local port.
PUBLIC_HOST = "registry.example.com:5000"
EPOCH = datetime.now(timezone.utc).replace(microsecond=0)
PASSWORD = secrets.token_urlsafe(12)


def prepare(scratch: Path, registry_url: str) -> dict[str, str]:
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{scratch / 'db.sqlite3'}",
        "REGISTRY_URL": registry_url,
        "REGISTRY_PUBLIC_HOST": PUBLIC_HOST,
        "LOG_LEVEL": "WARNING",
        "REGISTRY_LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "registry_browser.settings",
    }
    os.environ.update(env)
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    django.setup()
    from dashboard import demo
    from dashboard.registries import client_for, configured_registry
    from dashboard.sync import sync_registry

    call_command("migrate", verbosity=0)
    registry = configured_registry()
    demo.seed(registry, ImagePusher(registry_url), EPOCH)
    # As `make demo` does after the story: the registry panel's "last full sync".
    sync_registry(registry, client_for(registry))
    get_user_model().objects.create_superuser("demo", password=PASSWORD)
    return env


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=1)
            return server
        except requests.ConnectionError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the dashboard did not start")


def photograph(base_url: str) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    # name -> (path, whole page): the tag pages are long, and their point is what is below the fold.
    pages = {
        "catalog": ("/", False),
        "repository": ("/repositories/website-ecommerce/", False),
        "tag": ("/repositories/website-ecommerce/-/tags/v2.0/", True),
        "multi-arch": ("/repositories/shop-api/-/tags/3.2.0/", False),
        "rollback": ("/repositories/website-ecommerce/-/rollback/?tag=production", False),
        "tag-history": ("/repositories/website-ecommerce/-/tags/production/history/", False),
        "storage": ("/storage/", False),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for scheme in ("light", "dark"):
            context = browser.new_context(
                base_url=base_url, viewport={"width": 1280, "height": 860}, color_scheme=scheme, device_scale_factor=1
            )
            page = context.new_page()
            page.goto("/accounts/login/")
            page.get_by_label("Username").fill("demo")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(base_url + "/")
            for name, (path, whole) in pages.items():
                page.goto(path)
                suffix = "" if scheme == "light" else "-dark"
                page.screenshot(path=OUT / f"{name}{suffix}.png", full_page=whole)
                print(f"  {OUT.relative_to(ROOT) / f'{name}{suffix}.png'}")
            context.close()
        browser.close()


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="screenshots-"))
    registry = start_registry(scratch / "registry")
    server = None
    try:
        env = prepare(scratch, registry.url)
        port = free_port()
        server = serve(env, port)
        photograph(f"http://127.0.0.1:{port}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

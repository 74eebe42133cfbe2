"""`make demo`: a local registry with a small company's images and their history (dashboard/demo.py),
synced, and the dashboard serving it.

The registry keeps its storage under .demo/ and the story's dates count back from a date kept
there too (same inputs, same digests). The story is told once; later runs reuse it and only
reset the demo users' password.
"""

from __future__ import annotations

import io
import logging
import secrets
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from dashboard import demo
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer, start_registry

DEMO_DIR = Path(settings.BASE_DIR) / ".demo"
DEMO_REGISTRY = "http://127.0.0.1:5000"
DEMO_USER = "demo"
SERVE_AT = "127.0.0.1:8000"


def demo_epoch() -> datetime:
    """The date sample images count back from: fixed at the first run, so digests never change."""
    stamp = DEMO_DIR / "epoch"
    if not stamp.exists():
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        stamp.write_text(datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    return datetime.fromisoformat(stamp.read_text().strip())


def registry_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/", timeout=2).status_code in (200, 401)
    except requests.RequestException:
        return False


def reset_passwords() -> str:
    """The demo login (an admin), with a fresh password each run (printed, never stored in the
    repo); the story's operator and maintainer get the same one."""
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=DEMO_USER)
    user.is_staff = user.is_superuser = True
    for person in [user, *demo.demo_people()]:
        person.set_password(password)
        person.save()
    return password


class Command(BaseCommand):
    help = "Start a local registry with a small company's images, sync it, and serve the dashboard on 127.0.0.1:8000."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-serve", action="store_true", help="Prepare everything, then exit.")

    def handle(self, *args, no_serve: bool = False, **options) -> None:
        # A plain `kill` should stop the demo registry too, as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # One line per registry call is hundreds of lines before the one that matters.
        logging.getLogger("dashboard.registry").setLevel(logging.WARNING)
        call_command("migrate", interactive=False, verbosity=0)
        server = self.start_registry()
        try:
            registry = configured_registry()
            pusher = ImagePusher(DEMO_REGISTRY)
            # Told before, in this database and into this storage: `make clean` removes .demo/
            # and keeps the database, and the story must then be pushed again.
            if server is not None and not (demo.told(registry) and pusher.head_digest(demo.SHOP, "production")):
                self.stdout.write("Pushing the sample images and their history (about 32 MB) …")
                demo.seed(registry, pusher, demo_epoch())
            self.stdout.write(f"Syncing {registry.url} …")
            with client_for(registry) as client:
                self.stdout.write(f"  {sync_registry(registry, client)}")
            password = reset_passwords()
            self.stdout.write(self.style.SUCCESS(f"\nDashboard: http://{SERVE_AT}/"))
            self.stdout.write(f"Sign in as {DEMO_USER} (admin), password {password}")
            self.stdout.write(
                f"  ({demo.OPERATOR}, an operator, and {demo.MAINTAINER}, a maintainer of the shop, have the same password)"
            )
            self.stdout.write(
                f"Try first: Repositories > {demo.SHOP} > Roll back a tag > production: v2.1 broke checkout and was "
                "rolled back; see its history, the pinned v1.1, and the retention policy for the nightly builds.\n"
            )
            if not no_serve:
                # No autoreloader: it would run this whole command again in a child process.
                # Its banner goes nowhere: the lines above are the last ones worth reading.
                call_command("runserver", SERVE_AT, use_reloader=False, stdout=io.StringIO())
        finally:
            if server is not None:
                server.stop()
                self.stdout.write("Stopped the demo registry.")

    def start_registry(self) -> RegistryServer | None:
        """Start the demo registry, unless another registry is configured or something already
        answers on :5000 (then it is used as it is, without sample images)."""
        url = settings.REGISTRY_URL.rstrip("/")
        if urlsplit(url).netloc not in ("127.0.0.1:5000", "localhost:5000"):
            self.stdout.write(f"REGISTRY_URL is {url}: using it as it is, without sample images.")
            return None
        if registry_answers(DEMO_REGISTRY):
            self.stdout.write(f"A registry already answers at {DEMO_REGISTRY}: using it as it is.")
            return None
        self.stdout.write(f"Starting a registry at {DEMO_REGISTRY} (storage in {DEMO_DIR / 'registry'}) …")
        return start_registry(DEMO_DIR / "registry", port=5000, delete_enabled=True)

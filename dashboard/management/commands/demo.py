"""`make demo`: a local registry with a small team's images, synced, and the dashboard serving it.

Idempotent: the registry keeps its storage under .demo/, the sample images are built from a
fixed date kept there too (same inputs, same digests), and the demo user is reset on each run.
"""

from __future__ import annotations

import secrets
import signal
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from tests.support.images import ImagePusher, PushedImage
from tests.support.registry_server import RegistryServer, start_registry

DEMO_DIR = Path(settings.BASE_DIR) / ".demo"
DEMO_REGISTRY = "http://127.0.0.1:5000"
DEMO_USER = "demo"
SERVE_AT = "127.0.0.1:8000"

SOURCE = "https://github.com/example-shop"
NODE_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production", "PORT=8080"]


def demo_epoch() -> datetime:
    """The date sample images count back from: fixed at the first run, so digests never change."""
    stamp = DEMO_DIR / "epoch"
    if not stamp.exists():
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        stamp.write_text(datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    return datetime.fromisoformat(stamp.read_text().strip())


def _labels(name: str, version: str, revision: str, created: datetime) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": f"{SOURCE}/{name}",
        "org.opencontainers.image.url": f"https://shop.example.com/{name}",
        "org.opencontainers.image.vendor": "Example Shop",
        "org.opencontainers.image.created": created.isoformat(),
        "maintainer": "web-team@example.com",
    }


def push_samples(pusher: ImagePusher, epoch: datetime) -> None:
    """An e-commerce team's registry: the shop, its multi-arch API, a nested payments worker, a
    signature, and a few smaller repositories around them."""

    def days(n: int) -> datetime:
        return epoch - timedelta(days=n, hours=n % 7)

    shop = "website-ecommerce"
    releases: dict[str, PushedImage] = {}
    for version, age, revision in [("v1.0", 160, "4f1c2ab"), ("v1.1", 75, "9e03d17"), ("v2.0", 9, "c5a88e2")]:
        releases[version] = pusher.push_image(
            shop,
            [version],
            created=days(age),
            unique=f"{shop}-{version}",
            layers=3,
            author="Web team <web-team@example.com>",
            labels=_labels(shop, version, revision, days(age)),
            env=NODE_ENV,
            entrypoint=["docker-entrypoint.sh"],
            cmd=["node", "server.js"],
            exposed_ports=["8080/tcp"],
            workdir="/app",
            user="node",
            history_commands=[
                "ADD file:7d3f0e9c1b2a in / ",
                "COPY package.json package-lock.json /app/ # buildkit",
                "RUN npm ci --omit=dev && npm cache clean --force # buildkit",
            ],
            layer_size=6000,
        )
    pusher.tag(shop, releases["v2.0"], "latest")
    pusher.tag(shop, releases["v1.1"], "production")
    signed = releases["v2.0"].digest.partition(":")[2]
    pusher.push_artifact(
        shop,
        f"sha256-{signed}.sig",
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
        payload=b'{"critical":{"identity":{"docker-reference":"website-ecommerce"},"type":"cosign container image signature"}}',
        subject=releases["v2.0"],
    )

    api = "shop-api"
    pusher.push_index(api, ["3.1.0", "3.1"], fmt="docker", created=days(48), unique=f"{api}-3.1.0")
    pusher.push_index(api, ["3.2.0", "3.2", "latest"], fmt="oci", created=days(3), unique=f"{api}-3.2.0")

    worker = "team/payments/worker"
    for version, age, revision in [("0.9.0", 120, "0b7e5d1"), ("1.0.0", 40, "73aa9c0"), ("1.0.1", 12, "e41f2b8")]:
        image = pusher.push_image(
            worker,
            [version],
            fmt="oci",
            created=days(age),
            unique=f"{worker}-{version}",
            labels=_labels("payments-worker", version, revision, days(age)),
            env=["PATH=/usr/local/bin:/usr/bin:/bin", "QUEUE=payments", "WORKERS=4"],
            entrypoint=["/usr/local/bin/worker"],
            cmd=["--queue", "payments"],
            user="10001",
        )
    pusher.tag(worker, image, "latest")
    pusher.push_image(worker, ["main-8d2f4e1"], fmt="oci", created=days(1), unique=f"{worker}-main")

    for name, versions in [
        ("team/payments/gateway", [("2.4.0", 30), ("2.5.0", 6)]),
        ("infra/nginx-edge", [("1.25.4", 200), ("1.27.0", 21)]),
        ("tools/db-migrate", [("2024.11.02", 90), ("2025.01.15", 15)]),
    ]:
        for version, age in versions:
            image = pusher.push_image(name, [version], created=days(age), unique=f"{name}-{version}")
        pusher.tag(name, image, "latest")


def registry_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/", timeout=2).status_code in (200, 401)
    except requests.RequestException:
        return False


def reset_demo_user() -> str:
    """The demo login, with a fresh password each run (printed, never stored in the repo)."""
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=DEMO_USER)
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


class Command(BaseCommand):
    help = "Start a local registry with sample images, sync it, and serve the dashboard on 127.0.0.1:8000."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-serve", action="store_true", help="Prepare everything, then exit.")

    def handle(self, *args, no_serve: bool = False, **options) -> None:
        # A plain `kill` should stop the demo registry too, as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        call_command("migrate", interactive=False, verbosity=0)
        server = self.start_registry()
        try:
            registry = configured_registry()
            self.stdout.write(f"Syncing {registry.url} …")
            summary = sync_registry(registry, client_for(registry))
            self.stdout.write(f"  {summary}")
            password = reset_demo_user()
            self.stdout.write(
                self.style.SUCCESS(f"\nDashboard: http://{SERVE_AT}/   user: {DEMO_USER}   password: {password}\n")
            )
            if not no_serve:
                # No autoreloader: it would run this whole command again in a child process.
                call_command("runserver", SERVE_AT, use_reloader=False)
        finally:
            if server is not None:
                server.stop()
                self.stdout.write("Stopped the demo registry.")

    def start_registry(self) -> RegistryServer | None:
        """Start the demo registry and push the samples, unless another registry is configured
        or something already answers on :5000 (then it is used as it is)."""
        url = settings.REGISTRY_URL.rstrip("/")
        if urlsplit(url).netloc not in ("127.0.0.1:5000", "localhost:5000"):
            self.stdout.write(f"REGISTRY_URL is {url}: using it as it is, without sample images.")
            return None
        if registry_answers(DEMO_REGISTRY):
            self.stdout.write(f"A registry already answers at {DEMO_REGISTRY}: using it as it is.")
            return None
        self.stdout.write(f"Starting a registry at {DEMO_REGISTRY} (storage in {DEMO_DIR / 'registry'}) …")
        server = start_registry(DEMO_DIR / "registry", port=5000, delete_enabled=True)
        try:
            self.stdout.write("Pushing sample images …")
            push_samples(ImagePusher(server.url), demo_epoch())
        except BaseException:
            server.stop()
            raise
        return server

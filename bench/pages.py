"""Page latency from the cache against what a client-side UI must ask the registry for.

Seeds a real registry (on tmpfs when available) with one repository of 10,000 tags (50
images, 200 tags each) and 2,000 one-tag repositories, fills the cache through the real sync,
then times the catalog, repository and tag pages in-process with Django's test client.
In the same run it times two baselines straight from the registry, as a browser-only UI
would have to build them:

  (a) the first page of tags sorted by created date: tags/list, then manifest and config
      for every tag (the date is in the config), in a thread pool;
  (b) a page of 50 tags in registry order: tags/list, then manifest and config per tag shown.

Usage: .venv/bin/python bench/pages.py [--tags 10000] [--repos 2000] [--iterations 200]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import MANIFEST_ACCEPT, ImagePusher  # noqa: E402
from tests.support.registry_server import RegistryServer, start_registry  # noqa: E402

BIG_REPOSITORY = "shop/storefront"
IMAGES_IN_BIG = 50
PAGE = 50
WORKERS = 16
EPOCH = datetime(2025, 6, 1, tzinfo=timezone.utc)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def in_pool(work: Callable, items: Iterable, workers: int = WORKERS) -> list:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, items))


def _pusher_per_thread(url: str) -> Callable[[], ImagePusher]:
    local = threading.local()

    def get() -> ImagePusher:
        if not hasattr(local, "pusher"):
            local.pusher = ImagePusher(url)
        return local.pusher

    return get


def seed(server: RegistryServer, tags: int, repos: int) -> None:
    pusher = _pusher_per_thread(server.url)
    per_image = tags // IMAGES_IN_BIG
    started = time.perf_counter()
    images = in_pool(
        lambda i: pusher().push_image(
            BIG_REPOSITORY, None, created=EPOCH - timedelta(days=IMAGES_IN_BIG - i), unique=f"big-{i}", layers=3
        ),
        range(IMAGES_IN_BIG),
    )
    # Semver for most, plus the build and branch names real repositories carry.
    names = [
        (image, f"{i // 10}.{i % 10}.{j}" if j % 4 else f"build-{i * per_image + j}")
        for i, image in enumerate(images)
        for j in range(per_image)
    ]
    in_pool(lambda item: pusher().tag(BIG_REPOSITORY, item[0], item[1]), names)
    print(f"  {BIG_REPOSITORY}: {len(names)} tags in {time.perf_counter() - started:.0f} s", flush=True)

    started = time.perf_counter()
    in_pool(
        lambda i: pusher().push_image(
            f"team-{i % 40:02d}/service-{i:04d}", ["1.0.0"], created=EPOCH - timedelta(hours=i), layers=1, layer_size=256
        ),
        range(repos),
    )
    print(f"  {repos} small repositories in {time.perf_counter() - started:.0f} s", flush=True)


def fill_cache(server: RegistryServer) -> None:
    from dashboard.registries import client_for, configured_registry
    from dashboard.sync import sync_registry

    started = time.perf_counter()
    registry = configured_registry()
    summary = sync_registry(registry, client_for(registry), workers=8)
    print(f"  sync: {summary} in {time.perf_counter() - started:.0f} s", flush=True)


def time_pages(iterations: int) -> dict[str, list[float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from dashboard.models import Tag

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    newest = Tag.objects.filter(repository__name=BIG_REPOSITORY).order_by("-created", "-id").first()
    pages = {
        "catalog": reverse("dashboard:catalog"),
        "catalog, by last push": reverse("dashboard:catalog") + "?sort=pushed",
        "catalog, search": reverse("dashboard:catalog") + "?q=service-19",
        "repository, newest first": reverse("dashboard:repository", args=[BIG_REPOSITORY]),
        "repository, by version": reverse("dashboard:repository", args=[BIG_REPOSITORY]) + "?sort=version",
        "repository, page 100": reverse("dashboard:repository", args=[BIG_REPOSITORY]) + "?page=100",
        "tag": reverse("dashboard:tag", args=[BIG_REPOSITORY, newest.name]),
    }
    timings: dict[str, list[float]] = {}
    for label, url in pages.items():
        for _ in range(5):  # warm caches (templates, connection, SQLite pages)
            assert client.get(url).status_code == 200, url
        samples = []
        for _ in range(iterations):
            started = time.perf_counter()
            response = client.get(url)
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200, url
        timings[label] = samples
    return timings


class RegistryUI:
    """What a browser-only UI does: plain HTTP to the registry, one session per thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def tags(self) -> list[str]:
        return self.session.get(f"{self.url}/v2/{BIG_REPOSITORY}/tags/list", timeout=30).json()["tags"]

    def describe(self, tag: str) -> tuple[str, str, str]:
        manifest = self.session.get(
            f"{self.url}/v2/{BIG_REPOSITORY}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30
        )
        config_digest = manifest.json()["config"]["digest"]
        config = self.session.get(f"{self.url}/v2/{BIG_REPOSITORY}/blobs/{config_digest}", timeout=30).json()
        return tag, manifest.headers["Docker-Content-Digest"], config["created"]

    def newest_page(self) -> list[tuple[str, str, str]]:
        described = in_pool(self.describe, self.tags())
        return sorted(described, key=lambda row: row[2], reverse=True)[:PAGE]

    def registry_order_page(self) -> list[tuple[str, str, str]]:
        return in_pool(self.describe, self.tags()[:PAGE])


def time_baselines(url: str, runs_a: int, runs_b: int) -> dict[str, list[float]]:
    ui = RegistryUI(url)
    timings: dict[str, list[float]] = {}
    for label, build, runs in [
        ("(a) newest first, from the registry", ui.newest_page, runs_a),
        ("(b) 50 tags in registry order, from the registry", ui.registry_order_page, runs_b),
    ]:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            rows = build()
            samples.append(time.perf_counter() - started)
            assert len(rows) == PAGE
        timings[label] = samples
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--repos", type=int, default=2_000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of baseline (a); (b) runs 10x as often")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-pages-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    server = start_registry(scratch / "registry")
    try:
        os.environ.update(
            DATABASE_URL=f"sqlite:///{scratch / 'db.sqlite3'}",
            REGISTRY_URL=server.url,
            LOG_LEVEL="WARNING",
            SECRET_KEY=secrets.token_urlsafe(40),
            DJANGO_SETTINGS_MODULE="registry_browser.settings",
        )
        import django
        from django.conf import settings
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        # Production behaviour: no query log kept per request.
        settings.DEBUG = False

        print(f"Seeding {server.url}: {args.tags} tags in one repository, {args.repos} repositories", flush=True)
        seed(server, args.tags, args.repos)
        fill_cache(server)
        print(f"Timing pages ({args.iterations} requests each) …", flush=True)
        pages = time_pages(args.iterations)
        print("Timing the registry baselines …", flush=True)
        baselines = time_baselines(server.url, args.baseline_runs, args.baseline_runs * 10)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    report(pages, baselines, args)


def report(pages: dict[str, list[float]], baselines: dict[str, list[float]], args: argparse.Namespace) -> None:
    rows = {label: (statistics.median(s) * 1000, percentile(s, 0.95) * 1000) for label, s in (pages | baselines).items()}
    # Other work on the machine stretches every figure; the load average says how much there was.
    print(f"\nLoad average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'':52} {'p50 ms':>10} {'p95 ms':>10}")
    for label, (p50, p95) in rows.items():
        print(f"{label:52} {p50:10.1f} {p95:10.1f}")
    repository = rows["repository, newest first"][0]
    ratio_a = rows["(a) newest first, from the registry"][0] / repository
    ratio_b = rows["(b) 50 tags in registry order, from the registry"][0] / repository
    print(f"\nRepository page (newest first) vs (a): {ratio_a:,.0f}x faster; vs (b): {ratio_b:,.1f}x faster")
    print(f"Target p50 <= 30 ms: {'met' if repository <= 30 else 'MISSED'}; >= 100x vs (a): {'met' if ratio_a >= 100 else 'MISSED'}")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "pages.json").write_text(
        json.dumps(
            {"args": vars(args), "load_average": os.getloadavg(), "p50_p95_ms": rows, "ratio_a": ratio_a, "ratio_b": ratio_b, "at": datetime.now(timezone.utc).isoformat()},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

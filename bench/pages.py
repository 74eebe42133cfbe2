"""Page latency from the cache against what a client-side UI must ask the registry for.

Seeds a real registry (on tmpfs when available) with one repository of 10,000 tags (50
images, 200 tags each) and 2,000 one-tag repositories, fills the cache through the real sync,
then times the catalog, repository, tag and storage pages (and the storage API) in-process
with Django's test client.
In the same run it times two baselines straight from the registry, as a browser-only UI
would have to build them:

  (a) the first page of tags sorted by created date: tags/list, then manifest and config
      for every tag (the date is in the config), in a thread pool;
  (b) a page of 50 tags in registry order: tags/list, then manifest and config per tag shown.

Each page is timed twice per request: wall time, and the CPU time the request used in this
process (SQLite runs in-process too), which is what the wall time would be on an idle machine.

Usage: .venv/bin/python bench/pages.py [--tags 10000] [--repos 2000] [--iterations 200] [--workdir DIR]
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
import yaml

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


def reopen_registry(root: Path) -> RegistryServer:
    """The registry a previous run left in `root`, started again on its port."""
    port = int(yaml.safe_load((root / "config.yml").read_text())["http"]["addr"].rpartition(":")[2])
    server = RegistryServer(url=f"http://127.0.0.1:{port}", port=port, root=root)
    server.start()
    return server


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


def reference_loop() -> float:
    """CPU milliseconds of a fixed pure-Python loop, to compare machines and moments: the page
    figures scale with it (a busy host's shared cores run it slower too)."""
    started = time.process_time()
    total = 0
    for i in range(3_000_000):
        total += i
    return (time.process_time() - started) * 1000


def time_pages(iterations: int) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    """Wall and CPU seconds of each request, per page, and the reference loop before each page."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from dashboard.models import ApiToken, Tag

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    token = ApiToken.issue(user, "bench")[1]
    headers = {"storage API": {"Authorization": f"Bearer {token}"}}
    newest = Tag.objects.filter(repository__name=BIG_REPOSITORY).order_by("-created", "-id").first()
    pages = {
        "catalog": reverse("dashboard:catalog"),
        "catalog, by last push": reverse("dashboard:catalog") + "?sort=pushed",
        "catalog, search": reverse("dashboard:catalog") + "?q=service-19",
        "repository, newest first": reverse("dashboard:repository", args=[BIG_REPOSITORY]),
        "repository, by version": reverse("dashboard:repository", args=[BIG_REPOSITORY]) + "?sort=version",
        "repository, page 100": reverse("dashboard:repository", args=[BIG_REPOSITORY]) + "?page=100",
        "tag": reverse("dashboard:tag", args=[BIG_REPOSITORY, newest.name]),
        "catalog, by exclusive size": reverse("dashboard:catalog") + "?sort=exclusive",
        "storage": reverse("dashboard:storage"),
        "storage API": reverse("dashboard:api-storage"),
    }
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    references = []
    for label, url in pages.items():
        references.append(reference_loop())
        for _ in range(5):  # warm caches (templates, connection, SQLite pages)
            assert client.get(url, headers=headers.get(label)).status_code == 200, url
        wall[label], cpu[label] = [], []
        for _ in range(iterations):
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(url, headers=headers.get(label))
            wall[label].append(time.perf_counter() - started)
            cpu[label].append(time.process_time() - started_cpu)
            assert response.status_code == 200, url
    return wall, cpu, references


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
    parser.add_argument(
        "--baseline-runs",
        type=int,
        default=3,
        help="runs of baseline (a); (b) runs 10x as often; 0 times the pages only and writes no results file",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the registry and database here; a later run with it skips seeding and sync"
    )
    args = parser.parse_args()

    scratch = args.workdir or Path(
        tempfile.mkdtemp(prefix="bench-pages-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    seeded = scratch / "seeded"
    if (scratch / "registry" / "config.yml").exists():
        server = reopen_registry(scratch / "registry")
    else:
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

        if seeded.exists():
            print(f"Reusing the registry and cache in {scratch}", flush=True)
        else:
            print(f"Seeding {server.url}: {args.tags} tags in one repository, {args.repos} repositories", flush=True)
            seed(server, args.tags, args.repos)
            fill_cache(server)
            seeded.touch()
        print(f"Timing pages ({args.iterations} requests each) …", flush=True)
        wall, cpu, references = time_pages(args.iterations)
        baselines = {}
        if args.baseline_runs:
            print("Timing the registry baselines …", flush=True)
            baselines = time_baselines(server.url, args.baseline_runs, args.baseline_runs * 10)
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)

    report(wall, cpu, references, baselines, args)


def report(
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
    references: list[float],
    baselines: dict[str, list[float]],
    args: argparse.Namespace,
) -> None:
    def ms(samples: list[float]) -> tuple[float, float]:
        return statistics.median(samples) * 1000, percentile(samples, 0.95) * 1000

    # Other work on the machine stretches wall times; the load average says how much there was.
    load = os.getloadavg()
    reference = statistics.median(references)
    print(f"\nLoad average (1, 5, 15 min) at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"Reference loop (3M additions) while timing pages: median {reference:.0f} ms CPU "
        f"({min(references):.0f}-{max(references):.0f}); page CPU figures scale with it"
    )
    print(f"{'':52} {'wall p50':>9} {'wall p95':>9} {'CPU p50':>9} {'CPU p95':>9}   (ms)")
    pages = {label: ms(samples) + ms(cpu[label]) for label, samples in wall.items()}
    for label, figures in pages.items():
        print(f"{label:52} " + " ".join(f"{x:9.1f}" for x in figures))
    repository_wall, _, repository_cpu, _ = pages["repository, newest first"]
    catalog_wall = pages["catalog"][0]
    for label in ("storage", "storage API"):
        ratio = pages[label][0] / catalog_wall
        print(f"{label}: wall p50 {ratio:.2f}x the catalog's; <= 2x: {'met' if ratio <= 2 else 'MISSED'}")
    if not baselines:
        # A pages-only run, for comparing before and after a change: no ratios, no results file.
        print(f"\nTarget: CPU p50 {repository_cpu:.1f} ms <= 30 ms: {'met' if repository_cpu <= 30 else 'MISSED'}")
        return
    registry = {label: ms(samples) for label, samples in baselines.items()}
    for label, figures in registry.items():
        print(f"{label:52} " + " ".join(f"{x:9.1f}" for x in figures))
    ratio_a = registry["(a) newest first, from the registry"][0] / repository_wall
    ratio_b = registry["(b) 50 tags in registry order, from the registry"][0] / repository_wall
    print(f"\nRepository page (newest first), wall time in the same run: {ratio_a:,.0f}x faster than (a), {ratio_b:,.1f}x faster than (b)")
    print(
        f"Targets: CPU p50 {repository_cpu:.1f} ms <= 30 ms: {'met' if repository_cpu <= 30 else 'MISSED'}; "
        f"wall p50 {repository_wall:.1f} ms; >= 100x vs (a): {'met' if ratio_a >= 100 else 'MISSED'}"
    )
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "pages.json").write_text(
        json.dumps(
            {
                "args": {key: str(value) for key, value in vars(args).items()},
                "load_average": load,
                "reference_loop_ms": references,
                "pages_ms": {label: dict(zip(("wall_p50", "wall_p95", "cpu_p50", "cpu_p95"), f)) for label, f in pages.items()},
                "registry_ms": {label: dict(zip(("wall_p50", "wall_p95"), f)) for label, f in registry.items()},
                "ratio_a": ratio_a,
                "ratio_b": ratio_b,
                "at": datetime.now(timezone.utc).isoformat(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Sync throughput against the raw-request floor, on a real registry.

Starts a registry (storage on tmpfs when /dev/shm exists), seeds REPOS x TAGS tags (Docker and
OCI images, a multi-arch index in every 10th repository, alias tags sharing a digest), then:

  1. full sync into an empty throwaway SQLite database (on disk, as in production);
  2. no-change resync (nothing new: catalog, tag lists and one HEAD per tag);

and in the same run the floor for each: the same requests sent by a bare `requests` thread
pool with the same worker count and no database work. A warm-up pass runs first so neither
side pays for the registry's cold caches. Prints wall times, requests by type, ratios to the
floor and the peak RSS of the process doing the syncs (seeding runs in a child process).

Usage: .venv/bin/python bench/sync.py [--repos 200] [--tags 50] [--workers 8] [--keep DIR]
       (`make bench-sync`; --keep DIR reuses a registry seeded there by an earlier run)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import MANIFEST_ACCEPT, ImagePusher  # noqa: E402
from tests.support.registry_server import RegistryServer, start_registry  # noqa: E402

EPOCH = datetime(2025, 6, 1, tzinfo=timezone.utc)
ALIASES = ("latest", "stable")  # extra tags on the newest image, as real repositories have
INDEX_EVERY = 10  # every 10th repository is multi-arch
INDEX_MEDIA_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
SEED_JOBS = 16


# Seeding -------------------------------------------------------------------------------------


def seed_repository(url: str, index: int, tags: int) -> None:
    pusher = ImagePusher(url)
    name = f"team-{index % 7}/service-{index:04d}"
    fmt = "oci" if index % 2 else "docker"
    versions = [f"1.{minor}.0" for minor in range(tags - len(ALIASES))]
    for position, version in enumerate(versions):
        names = [version, *ALIASES] if position == len(versions) - 1 else [version]
        created = EPOCH - timedelta(hours=len(versions) - position)
        unique = f"{name}-{version}"
        if index % INDEX_EVERY == 0 and position % 2 == 0:
            pusher.push_index(name, names, fmt=fmt, created=created, unique=unique)
        else:
            pusher.push_image(name, names, fmt=fmt, created=created, unique=unique, layers=1)


def seed(url: str, repos: int, tags: int) -> None:
    with ThreadPoolExecutor(SEED_JOBS) as pool:
        list(pool.map(lambda i: seed_repository(url, i, tags), range(repos)))


def registry_with_content(root: Path, repos: int, tags: int) -> RegistryServer:
    marker = root / "seeded.json"
    wanted = {"repos": repos, "tags": tags}
    if marker.exists() and json.loads(marker.read_text()) != wanted:
        shutil.rmtree(root)
    seeded = marker.exists()
    server = start_registry(root)
    if not seeded:
        started = time.perf_counter()
        # In a child process, so its memory does not count in the sync's peak RSS.
        child = multiprocessing.get_context("spawn").Process(target=seed, args=(server.url, repos, tags))
        child.start()
        child.join()
        if child.exitcode != 0:
            server.stop()
            raise SystemExit(f"seeding failed (exit code {child.exitcode})")
        marker.write_text(json.dumps(wanted))
        print(f"seeded {repos} x {tags} tags in {time.perf_counter() - started:.0f} s")
    return server


# The floor: the same requests, no database --------------------------------------------------


class Floor:
    """A sync reduced to its requests: one Session per thread, counted by kind."""

    def __init__(self, url: str, workers: int) -> None:
        self.url = url
        self.workers = workers
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()

    def get(self, kind: str, path: str, method: str = "GET", **kwargs) -> requests.Response:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_maxsize=self.workers))
        response = session.request(method, self.url + path, timeout=30, **kwargs)
        response.raise_for_status()
        with self._lock:
            self.counts[kind] += 1
        return response

    def run(self, full: bool) -> tuple[float, float, Counter[str]]:
        self.counts = Counter()
        started, cpu = time.perf_counter(), time.process_time()
        names: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            response = self.get("catalog", path)
            names += response.json()["repositories"]
            path = response.links.get("next", {}).get("url")
        with ThreadPoolExecutor(self.workers) as pool:
            tag_lists = pool.map(lambda name: (name, self.tags(name)), names)
            pairs = [(name, tag) for name, tags in tag_lists for tag in tags]
            heads = pool.map(lambda pair: (pair[0], self.head(*pair)), pairs)
            digests = sorted(set(heads))
            if full:
                list(pool.map(lambda pair: self.fetch(*pair), digests))
        return time.perf_counter() - started, time.process_time() - cpu, self.counts

    def tags(self, name: str) -> list[str]:
        return self.get("tags", f"/v2/{name}/tags/list").json()["tags"] or []

    def head(self, name: str, tag: str) -> str:
        response = self.get("head_manifest", f"/v2/{name}/manifests/{tag}", "HEAD", headers={"Accept": MANIFEST_ACCEPT})
        return response.headers["Docker-Content-Digest"]

    def fetch(self, name: str, digest: str) -> None:
        response = self.get("get_manifest", f"/v2/{name}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT})
        manifest = response.json()
        if response.headers["Content-Type"] in INDEX_MEDIA_TYPES:
            for child in manifest["manifests"]:
                self.fetch(name, child["digest"])
        else:
            self.get("get_blob", f"/v2/{name}/blobs/{manifest['config']['digest']}").content


# The sync ----------------------------------------------------------------------------------


def setup_django(database: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry_browser.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # One log line per registry call is the default; at 30,000 calls it is noise (and CPU).
    os.environ.setdefault("REGISTRY_LOG_LEVEL", "WARNING")
    # As in production: with DEBUG on, Django keeps the text of the last 9000 queries.
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def timed_sync(url: str, workers: int) -> tuple[float, float, Counter[str], object]:
    from dashboard.models import Registry
    from dashboard.registry import RegistryClient
    from dashboard.sync import READ_AHEAD, sync_registry

    registry, _ = Registry.objects.get_or_create(url=url, defaults={"name": "bench"})
    # Reader threads ask for tag lists beside the request pool: room for both, or urllib3 drops connections.
    with RegistryClient(url, pool_size=workers + READ_AHEAD) as client:
        started, cpu = time.perf_counter(), time.process_time()
        summary = sync_registry(registry, client, workers=workers)
        return time.perf_counter() - started, time.process_time() - cpu, summary.requests, summary


def cache_counts() -> dict[str, int]:
    from dashboard.models import Manifest, ManifestBlob, Repository, Tag, TagHistory

    return {model.__name__: model.objects.count() for model in (Repository, Tag, Manifest, ManifestBlob, TagHistory)}


def storage_cost() -> tuple[float, float]:
    """Seconds to write every ManifestBlob row again from the cached manifests (what the full
    sync did along the way, plus reading the manifests back: an upper bound of its share), and
    seconds of one day's storage snapshot (the full sync takes one)."""
    from datetime import date
    from importlib import import_module

    from django.apps import apps

    from dashboard.models import ManifestBlob, Registry
    from dashboard.storage import take_snapshot

    migration = import_module("dashboard.migrations.0004_storage")
    ManifestBlob.objects.all().delete()
    started = time.perf_counter()
    migration.fill_manifest_blobs(apps, None)
    fill = time.perf_counter() - started
    started = time.perf_counter()
    take_snapshot(Registry.objects.get(), date(2000, 1, 1))
    return fill, time.perf_counter() - started


def show(label: str, seconds: float, cpu: float, counts: Counter[str], floor: float | None = None) -> None:
    total = sum(counts.values())
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
    ratio = f" = {seconds / floor:.2f}x floor" if floor else ""
    print(f"{label:<13} {seconds:7.2f} s{ratio:<15} client CPU {cpu:6.2f} s  {total:6d} requests ({kinds})")


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--tags", type=int, default=50, help="tags per repository (at least 3)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="registry storage to reuse (and seed on first use)")
    args = parser.parse_args(argv)
    if args.tags < len(ALIASES) + 1:
        parser.error(f"--tags must be at least {len(ALIASES) + 1}")

    scratch = Path(tempfile.mkdtemp(prefix="bench-sync-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    database_dir = Path(tempfile.mkdtemp(prefix="bench-sync-db-"))
    server = registry_with_content(args.keep or scratch / "registry", args.repos, args.tags)
    try:
        setup_django(database_dir / "db.sqlite3")
        floor = Floor(server.url, args.workers)
        floor.run(full=True)  # warm-up: the registry's caches and the page cache, for both sides
        floor_full, floor_full_cpu, floor_full_counts = floor.run(full=True)
        full, full_cpu, full_counts, summary = timed_sync(server.url, args.workers)
        cached = cache_counts()
        floor_resync, floor_resync_cpu, floor_resync_counts = floor.run(full=False)
        resync, resync_cpu, resync_counts, _ = timed_sync(server.url, args.workers)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        unchanged = cache_counts() == cached
        blob_fill, snapshot = storage_cost()
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(database_dir, ignore_errors=True)

    print(f"\n{args.repos} repositories x {args.tags} tags, {args.workers} workers, {os.cpu_count()} CPUs")
    print(f"cache after the full sync: {', '.join(f'{n} {c}' for n, c in cached.items())}; {summary}")
    show("floor full", floor_full, floor_full_cpu, floor_full_counts)
    show("sync full", full, full_cpu, full_counts, floor_full)
    show("floor resync", floor_resync, floor_resync_cpu, floor_resync_counts)
    show("sync resync", resync, resync_cpu, resync_counts, floor_resync)
    print(f"peak RSS of the syncing process: {peak_rss_mb:.0f} MB")
    print(
        f"storage accounting: {cached['ManifestBlob']} blob rows written again in {blob_fill:.2f} s "
        f"({blob_fill / full:.1%} of the full sync, an upper bound of the sync's share); "
        f"one day's snapshot {snapshot:.2f} s"
    )
    checks: list[tuple[str, Callable[[], bool]]] = [
        ("full <= 1.3x floor", lambda: full <= 1.3 * floor_full),
        ("resync <= 1.2x floor", lambda: resync <= 1.2 * floor_resync),
        ("resync fetches no manifest", lambda: resync_counts["get_manifest"] == 0 and resync_counts["get_blob"] == 0),
        ("resync changes no row count", lambda: unchanged),
        ("peak RSS <= 200 MB", lambda: peak_rss_mb <= 200),
    ]
    for label, check in checks:
        print(f"  {'ok  ' if check() else 'MISS'} {label}")


if __name__ == "__main__":
    main()

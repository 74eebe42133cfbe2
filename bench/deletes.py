"""What the live checks before deletes cost, in registry requests, on a real registry.

Deleting a version first reads where every tag of its repository points (the tag list and one
HEAD per tag, see deletion.LiveTags), because a digest delete takes every tag on the digest
with it. A retention run reads that once per repository and passes it to all its version
deletes. This seeds one repository with --versions versions of 4 tags each (--versions 250:
1,000 tags), caches it through the real sync, then counts the requests of:

  1. deleting one version (its 4 tags shown), alone;
  2. a retention run over the repository: the older half of the versions go by digest, and in
     every 10th of those one tag is excluded by the policy, so the version stays and loses its
     3 other tags one by one (each through a tombstone);

and prints them by kind, with the run's cost per version and what one scan per version would
have cost instead (the scan's size, measured in 1., times the versions deleted).

Usage: .venv/bin/python bench/deletes.py [--versions 250] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sync import setup_django  # noqa: E402
from tests.support.images import ImagePusher  # noqa: E402
from tests.support.registry_server import start_registry  # noqa: E402

REPOSITORY = "bench/deletes"
KEEP_EVERY = 10  # every 10th old version keeps one tag (excluded by the policy)
NOW = datetime.now(UTC)


def version_tags(number: int, old: bool) -> list[str]:
    first = f"keep-{number}" if old and number % KEEP_EVERY == 0 else f"v{number}"
    return [first, *(f"v{number}-{suffix}" for suffix in "abc")]


def seed(url: str, versions: int) -> None:
    pusher = ImagePusher(url)

    def push(number: int) -> None:
        old = number < versions // 2
        created = NOW - timedelta(days=200 - number // 10 if old else 1)
        image = pusher.push_image(REPOSITORY, None, created=created, unique=f"deletes-{number}", layers=1, layer_size=256)
        for tag in version_tags(number, old):
            pusher.tag(REPOSITORY, image, tag)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(push, range(versions)))


def show(label: str, seconds: float, counts: Counter[str]) -> None:
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
    print(f"{label:<34} {sum(counts.values()):6d} requests in {seconds:6.2f} s ({kinds})")


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=250, help="versions of 4 tags each (default 250)")
    parser.add_argument("--workers", type=int, default=8, help="REGISTRY_SYNC_WORKERS: HEADs in flight")
    args = parser.parse_args(argv)
    os.environ["REGISTRY_SYNC_WORKERS"] = str(args.workers)

    scratch = Path(tempfile.mkdtemp(prefix="bench-deletes-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    database_dir = Path(tempfile.mkdtemp(prefix="bench-deletes-db-"))
    server = start_registry(scratch / "registry")
    try:
        started = time.perf_counter()
        seed(server.url, args.versions)
        seeded = time.perf_counter() - started
        setup_django(database_dir / "db.sqlite3")
        from dashboard import deletion, retention
        from dashboard.models import Registry, Repository, RetentionPolicy, Tag
        from dashboard.registry import RegistryClient
        from dashboard.sync import sync_repository

        registry = Registry.objects.create(url=server.url, name="bench")
        with RegistryClient(server.url, pool_size=args.workers) as client:
            sync_repository(registry, client, REPOSITORY, workers=args.workers)
            repository = Repository.objects.get(registry=registry, name=REPOSITORY)
            tags = Tag.objects.filter(repository=repository).count()

            young = Tag.objects.filter(repository=repository, name=f"v{args.versions - 1}").get().manifest
            shown = list(young.tags.values_list("name", flat=True))
            before, started = client.request_counts, time.perf_counter()
            deletion.delete_version(None, None, repository, young.digest, shown, client=client)
            single, single_seconds = client.request_counts - before, time.perf_counter() - started

            RetentionPolicy.objects.create(name="bench", repository_pattern=REPOSITORY, tag_exclude=r"keep-.*", older_than_days=30)
            result = retention.plan(registry, Repository.objects.filter(pk=repository.pk))
            [planned] = result.repositories
            before, started = client.request_counts, time.perf_counter()
            outcomes = retention.apply(None, None, result, client=client)
            run, run_seconds = client.request_counts - before, time.perf_counter() - started
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(database_dir, ignore_errors=True)

    versions, alone = len(planned.versions), len(planned.tag_deletes)
    scan = single["tags"] + tags - len(shown)  # the tag list and a HEAD of each tag not shown
    print(f"\n1 repository, {tags} tags on {args.versions} versions, {args.workers} HEADs in flight; seeded in {seeded:.0f} s")
    show("1. one version delete (4 tags)", single_seconds, single)
    print(f"   of which the live scan: {scan} (tag list + {scan - 1} HEADs); the rest: {sum(single.values()) - scan}")
    show("2. retention run", run_seconds, run)
    with_versions = sum(len(names) for names in planned.versions.values())
    print(f"   {versions} versions by digest ({with_versions} tags), {alone} tags alone; "
          f"outcomes {retention.summary(outcomes)}")
    print(f"   per version deleted: {sum(run.values()) / versions:.1f} requests; the run's scans: {run['tags']} tag list(s)")
    print(f"   a scan per version instead would add about {(versions - 1) * scan} requests "
          f"({sum(run.values()) + (versions - 1) * scan} in all)")


if __name__ == "__main__":
    main()

"""`manage.py sync_registry`: fill the cache from the registry, once or every N seconds."""

from __future__ import annotations

import logging
from time import sleep

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from dashboard.notifications import forget_handled_events
from dashboard.registries import client_for, configured_registry
from dashboard.registry import RegistryError, is_valid_repository_name
from dashboard.sync import ProgressCallback, SyncSummary, sync_registry

logger = logging.getLogger("dashboard.sync")
BAR_WIDTH = 30


class Command(BaseCommand):
    help = (
        "Read the registry's catalog, tags and new manifests into the dashboard's cache. "
        "With --every it repeats forever, for setups without cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repository", metavar="NAME", help="Sync only this repository.")
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.REGISTRY_SYNC_WORKERS,
            help="Registry requests in parallel (default: REGISTRY_SYNC_WORKERS, %(default)s).",
        )
        parser.add_argument(
            "--every", type=float, metavar="SECONDS", help="Sync again SECONDS after each run ends, until stopped."
        )

    def handle(self, *args, repository: str | None, workers: int, every: float | None, **options) -> None:
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        if repository is not None and not is_valid_repository_name(repository):
            raise CommandError(f"{repository!r} is not a repository name")
        if every is None:
            try:
                url, summary = self.run(repository, workers)
            except RegistryError as error:
                raise CommandError(f"Sync failed: {error}") from error
            self.stdout.write(f"Synced {url}: {summary}")
            return
        if every <= 0:
            raise CommandError("--every must be a positive number of seconds")
        while True:
            try:
                url, summary = self.run(repository, workers)
                logger.info("Synced %s: %s", url, summary)
            # A periodic worker must outlive one bad run (registry down, database restarting,
            # a bug tripped by odd content): log it with its traceback and try again next time.
            except Exception:
                logger.exception("Sync failed; next attempt in %s s", every)
            finally:
                close_old_connections()
            sleep(every)

    def run(self, repository: str | None, workers: int) -> tuple[str, SyncSummary]:
        registry = configured_registry()
        with client_for(registry) as client:
            summary = sync_registry(
                registry, client, repository=repository, workers=workers, progress=self.progress_writer()
            )
        forget_handled_events()
        for name, error in sorted(summary.failed.items()):
            self.stderr.write(f"{name}: {error}")
        return registry.url, summary

    def progress_writer(self) -> ProgressCallback:
        """A bar redrawn in place on a terminal; a line every 5% otherwise (logs)."""
        if self.stderr.isatty():

            def draw(done: int, total: int, name: str) -> None:
                filled = BAR_WIDTH * done // max(total, 1)
                end = "\n" if done == total else ""
                bar = "#" * filled + "." * (BAR_WIDTH - filled)
                self.stderr.write(f"\r[{bar}] {done}/{total} {name[:40]:<40}", ending=end)
                self.stderr.flush()

            return draw

        def log(done: int, total: int, name: str) -> None:
            step = max(total // 20, 1)
            if done % step == 0 or done == total:
                self.stderr.write(f"{done}/{total} repositories synced (last: {name})")

        return log

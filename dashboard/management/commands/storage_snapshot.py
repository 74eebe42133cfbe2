"""`manage.py storage_snapshot`: record today's stored bytes for the growth chart (for cron)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from dashboard.registries import configured_registry
from dashboard.storage import take_snapshot


class Command(BaseCommand):
    help = (
        "Record today's stored bytes (registry, namespaces, repositories) from the cache, for the "
        "storage growth chart. Does nothing when today's snapshot exists; the periodic sync takes "
        "one too when it is missing."
    )

    def handle(self, *args, **options) -> None:
        day = timezone.localdate()
        if take_snapshot(configured_registry(), day):
            self.stdout.write(f"Took the storage snapshot of {day}.")
        else:
            self.stdout.write(f"The storage snapshot of {day} exists already.")

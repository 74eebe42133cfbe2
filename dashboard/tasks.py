"""Background work on django-tasks: syncs, registry notifications and retention runs.

With TASK_BACKEND=database (production) the web process only queues a row, and
`python manage.py db_worker` runs it; with TASK_BACKEND=immediate each task runs inline.
Every task is safe to run twice or side by side: the sync locks each repository row while it
writes, notifications are de-duplicated by event id, and retention re-checks each digest
against the registry before deleting.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_tasks import TaskContext, TaskResult, TaskResultStatus, default_task_backend, task
from django_tasks.exceptions import TaskResultDoesNotExist

from dashboard import notifications, retention, sync
from dashboard.models import Registry, RetentionPolicy, TaskProgress
from dashboard.registries import client_for, configured_registry
from dashboard.registry import RegistryError

# Progress rows are written at most this often, so a fast sync is not slowed by its own report.
PROGRESS_INTERVAL = 0.5
PROGRESS_KEPT = timedelta(days=1)
# A sync whose progress has not moved for this long is not joined by a new refresh: its worker
# may have died, leaving the task "running" for ever.
STALE_AFTER = timedelta(minutes=15)


def sync_label(repository: str | None) -> str:
    return f"Sync of {repository}" if repository else "Sync of the whole registry"


class Progress:
    """A sync.ProgressCallback that stores how far the task got, for /tasks/<id>/."""

    def __init__(self, task_id: str, repository: str | None) -> None:
        TaskProgress.objects.filter(updated_at__lt=timezone.now() - PROGRESS_KEPT).delete()
        self.row, _ = TaskProgress.objects.update_or_create(
            task_id=task_id,
            defaults={"label": sync_label(repository), "repository": repository or "", "done": 0, "total": None},
        )
        self._written_at = time.monotonic()

    def __call__(self, done: int, total: int, last_name: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self._written_at < PROGRESS_INTERVAL:
            return
        self._written_at = now
        TaskProgress.objects.filter(pk=self.row.pk).update(done=done, total=total, updated_at=timezone.now())


def _sync(context: TaskContext, repository: str | None) -> dict[str, Any]:
    registry = configured_registry()
    progress = Progress(context.task_result.id, repository)
    with client_for(registry) as client:
        summary = sync.sync_registry(
            registry, client, repository=repository, workers=settings.REGISTRY_SYNC_WORKERS, progress=progress
        )
    return {
        "repositories": summary.repositories,
        "tags": summary.tags,
        "new_manifests": summary.new_manifests,
        "removed_tags": summary.removed_tags,
        "removed_repositories": summary.removed_repositories,
        "failed": summary.failed,
        "summary": str(summary),
    }


@task(takes_context=True)
def sync_registry_task(context: TaskContext) -> dict[str, Any]:
    """Sync every repository of the configured registry."""
    return _sync(context, None)


@task(takes_context=True)
def sync_repository_task(context: TaskContext, repository: str) -> dict[str, Any]:
    return _sync(context, repository)


@task()
def process_notification_task(registry_id: int, repository: str, tag: str, digest: str) -> None:
    """Sync a tag the registry reported pushed; the endpoint already dropped redeliveries."""
    notifications.sync_pushed_tag(registry_id, repository, tag, digest)


@task()
def process_delete_notification_task(registry_id: int, repository: str, tag: str, digest: str) -> None:
    """Forget a tag or digest the registry reported deleted, if the registry confirms it."""
    notifications.sync_deleted(registry_id, repository, tag, digest)


@task()
def apply_retention_task(policy_id: int | None = None, user_id: int | None = None) -> dict[str, int]:
    """Run one retention policy (or every enabled one); the deletions are audited as `user_id`."""
    registry = configured_registry()
    policy = RetentionPolicy.objects.get(pk=policy_id) if policy_id is not None else None
    user = get_user_model().objects.get(pk=user_id) if user_id is not None else None
    planned = retention.plan(registry, registry.repositories.all(), policy)
    with client_for(registry) as client:
        return retention.summary(retention.apply(None, user, planned, client))


def get_result(task_id: str) -> TaskResult | None:
    """The queued or finished task with this id, or None when the backend keeps no results
    (the immediate backend) or has never seen it."""
    if not default_task_backend.supports_get_result:
        return None
    try:
        return default_task_backend.get_result(task_id)
    except TaskResultDoesNotExist:
        return None


def enqueue_sync(repository: str | None = None) -> TaskResult:
    """Queue a sync of one repository (or the whole registry) that /tasks/<id>/ can follow.

    The progress row exists from the start, so a task still waiting for a worker shows as such.
    """
    result = sync_registry_task.enqueue() if repository is None else sync_repository_task.enqueue(repository)
    # The immediate backend runs the task inside enqueue(): nothing to follow afterwards.
    if not result.is_finished:
        TaskProgress.objects.get_or_create(
            task_id=result.id, defaults={"label": sync_label(repository), "repository": repository or ""}
        )
    return result


def _unfinished_sync(repository: str | None) -> TaskResult | None:
    recent = TaskProgress.objects.filter(
        repository=repository or "", label=sync_label(repository), updated_at__gte=timezone.now() - STALE_AFTER
    ).order_by("-updated_at")
    for task_id in recent.values_list("task_id", flat=True)[:10]:
        result = get_result(task_id)
        if result is not None and not result.is_finished:
            return result
    return None


def start_sync(repository: str | None = None) -> tuple[TaskResult, bool]:
    """The sync of this scope that is already queued or running, and True; or a new one, and False.

    A refresh pressed twice, or by two people, then costs the registry one sync.
    """
    if not default_task_backend.supports_get_result:
        # Immediate backend: nothing is ever left running to join.
        return enqueue_sync(repository), False
    with transaction.atomic():
        # Two refreshes pressed at the same moment: the second waits here for the first, then
        # joins its task (a row lock on PostgreSQL; SQLite's IMMEDIATE transactions serialise).
        Registry.objects.select_for_update().get(pk=configured_registry().pk)
        running = _unfinished_sync(repository)
        if running is not None:
            return running, True
        return enqueue_sync(repository), False


def failure(result: TaskResult) -> str:
    """Why a failed task failed: a registry error's own sentence ("Cannot connect to …"), or
    `Class: message` for anything else, which is a bug to report."""
    if result.status != TaskResultStatus.FAILED or not result.errors:
        return ""
    error = result.errors[-1]
    # The traceback ends with "module.Class: message", and a message may span several lines.
    _, found, message = error.traceback.rpartition(f"{error.exception_class_path}: ")
    if not found:
        lines = [line for line in error.traceback.splitlines() if line.strip()]
        message = lines[-1].partition(": ")[2] if lines else ""
    message = message.strip()
    if issubclass(error.exception_class, RegistryError):
        return message
    name = error.exception_class_path.rpartition(".")[2]
    return f"{name}: {message}" if message else name

"""Show (or follow) a background task: `manage.py task_status <id> [--follow]`."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django_tasks import TaskResultStatus

from dashboard.models import TaskProgress
from dashboard.tasks import get_result

POLL_SECONDS = 1.0


class Command(BaseCommand):
    help = "Print a background task's state and progress; with --follow, until it finishes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("task_id")
        parser.add_argument("--follow", action="store_true", help="Poll every second until the task is done.")

    def handle(self, *args, task_id: str, follow: bool, **options) -> None:
        last_line = None
        while True:
            result = get_result(task_id)
            if result is None:
                raise CommandError(f"No task {task_id} (only TASK_BACKEND=database keeps tasks)")
            line = self._describe(task_id, result)
            if line != last_line:
                self.stdout.write(line)
                last_line = line
            if result.is_finished or not follow:
                break
            time.sleep(POLL_SECONDS)
        if result.status == TaskResultStatus.FAILED:
            raise CommandError(result.errors[-1].traceback if result.errors else "failed")

    def _describe(self, task_id: str, result) -> str:
        progress = TaskProgress.objects.filter(task_id=task_id).first()
        label = progress.label if progress else result.task.name
        line = f"{label}: {result.status.lower()}"
        if progress is not None and progress.total:
            line += f", {progress.done}/{progress.total} repositories"
        if result.status == TaskResultStatus.SUCCESSFUL and isinstance(result.return_value, dict):
            line += f" ({result.return_value.get('summary', '')})"
        return line

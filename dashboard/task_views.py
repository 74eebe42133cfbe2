"""Following a background task: a page, and the fragment it polls until the task is done."""

from __future__ import annotations

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django.views.decorators.vary import vary_on_headers
from django_tasks import TaskResultStatus

from dashboard.access import login_or_public_read, role_on
from dashboard.models import TaskProgress
from dashboard.tasks import get_result


@login_or_public_read
@require_safe
@never_cache
@vary_on_headers("HX-Request")
def task_status(request: HttpRequest, task_id: UUID) -> HttpResponse:
    progress = TaskProgress.objects.filter(task_id=str(task_id)).first()
    result = get_result(str(task_id))
    if progress is None or result is None:
        raise Http404("No such task")
    # A task on a repository the user may not see is as unknown as the repository.
    if progress.repository and role_on(request.user, progress.repository) is None:
        raise Http404("No such task")
    context = {
        "progress": progress,
        "result": result,
        "state": result.status,
        "outcome": _outcome(result),
    }
    template = "dashboard/_task_status.html" if request.htmx else "dashboard/task_status.html"
    return render(request, template, context)


def _outcome(result) -> str:
    """One line on how the task ended: its summary, or the last line of its error."""
    if result.status == TaskResultStatus.SUCCESSFUL:
        value = result.return_value
        return value.get("summary", "") if isinstance(value, dict) else ""
    if result.status == TaskResultStatus.FAILED and result.errors:
        lines = [line for line in result.errors[-1].traceback.splitlines() if line.strip()]
        if lines:
            # "dashboard.registry.errors.Unavailable: Cannot connect" -> "Unavailable: Cannot connect"
            exception_path, _, message = lines[-1].partition(": ")
            return f"{exception_path.rpartition('.')[2]}: {message}"
    return ""

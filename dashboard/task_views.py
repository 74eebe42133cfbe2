"""Following a background task: a page, and the fragment it polls until the task is done.

Whoever may see what a task works on may follow it: a repository's sync is as visible as the
repository (404 otherwise, like the repository itself), a sync of the whole registry as the
catalog. Not only the user who started it: a second refresh of the same scope joins the sync
already under way, so two people follow one task.
"""

from __future__ import annotations

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django.views.decorators.vary import vary_on_headers
from django.views.defaults import page_not_found
from django_htmx.http import reswap, retarget
from django_tasks import TaskResult, TaskResultStatus

from dashboard import views
from dashboard.access import login_or_public_read, role_on
from dashboard.models import Repository, TaskProgress
from dashboard.registries import configured_registry
from dashboard.rendering import safe_next
from dashboard.tasks import failure, get_result


@login_or_public_read
@require_safe
@never_cache
@vary_on_headers("HX-Request", "HX-Target")
def task_status(request: HttpRequest, task_id: UUID) -> HttpResponse:
    try:
        progress, result = _visible_task(request, task_id)
    except Http404 as missing:
        if not request.htmx:
            raise
        return _poll_not_found(request, missing)
    # Polled from a refreshed page: once the sync is done, that page's results take its place.
    from_refresh = bool(request.htmx) and request.htmx.target == views.REFRESH_PROGRESS
    # The sync may end with the repository it refreshed gone from the cache (a full sync that
    # no longer found it in the catalog, say): there are no results left to show for it.
    gone = result.is_finished and bool(progress.repository) and not _cached(progress.repository)
    if from_refresh and result.is_finished and not gone:
        return views.refreshed_results(request, progress.repository or None, result)
    context = {
        "progress": progress,
        "result": result,
        "outcome": _outcome(result),
        "next": safe_next(request, request.GET.get("next", "")),
        "status_url": request.get_full_path(),
        "poll_id": views.REFRESH_PROGRESS if from_refresh else "",
        "gone": gone,
    }
    template = "dashboard/_task_status.html" if request.htmx else "dashboard/task_status.html"
    response = render(request, template, context)
    if from_refresh and gone:
        # The notice takes the whole results block: the rows under the progress are stale.
        return reswap(retarget(response, f"#{views.TAG_RESULTS[0]}"), "innerHTML")
    return response


def _visible_task(request: HttpRequest, task_id: UUID) -> tuple[TaskProgress, TaskResult]:
    progress = TaskProgress.objects.filter(task_id=str(task_id)).first()
    result = get_result(str(task_id))
    if progress is None or result is None:
        raise Http404("No such task")
    # A task on a repository the user may not see is as unknown as the repository.
    if progress.repository and role_on(request.user, progress.repository) is None:
        raise Http404("No such task")
    return progress, result


def _cached(repository: str) -> bool:
    return Repository.objects.filter(registry=configured_registry(), name=repository).exists()


def _poll_not_found(request: HttpRequest, missing: Http404) -> HttpResponse:
    """The 404 of a poll: htmx swaps nothing on an error status, so the poll would go on every
    second for ever. The same 404, whether the task is unknown or hidden (e.g. the poller's
    access rule was removed meanwhile), also sends the browser to the page it came from as a
    whole page, which answers for itself."""
    response = page_not_found(request, missing)
    response["HX-Redirect"] = safe_next(request, request.GET.get("next", "")) or request.path
    return response


def _outcome(result: TaskResult) -> str:
    """One line on how the task ended: its summary, or what stopped it."""
    if result.status == TaskResultStatus.SUCCESSFUL:
        value = result.return_value
        return value.get("summary", "") if isinstance(value, dict) else ""
    return failure(result)

"""Browse pages: catalog, repository, tag and manifest. Each view serves its full page and,
for htmx requests aimed at its results block, just that block."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import reswap, retarget
from django_tasks import TaskResult

from dashboard import browse, storage, tasks
from dashboard.access import (
    login_or_public_read,
    repository_for,
    signed_in,
    visible_repositories,
)
from dashboard.forms import PAGE_SIZE, CatalogQuery, TagQuery
from dashboard.models import Manifest, Registry, Repository, Tag, TaskProgress
from dashboard.registries import configured_registry, public_host
from dashboard.rendering import bad_query, page_or_results, render_page

# (id of the element htmx swaps, template of its content): the page includes the same template.
CATALOG_RESULTS = ("catalog-results", "dashboard/_catalog_results.html")
TAG_RESULTS = ("tag-results", "dashboard/_tag_results.html")
# id of the progress element a refresh puts at the top of the results block while the sync runs.
REFRESH_PROGRESS = "refresh-progress"


def _paginate(objects, query: CatalogQuery | TagQuery, count: int | None = None) -> Page:
    """The requested page; `count`, when known, saves the paginator counting the rows."""
    paginator = Paginator(objects, PAGE_SIZE)
    if count is not None:
        paginator.count = count
    return paginator.get_page(query.cleaned_data["page"])


def _with_query(url: str, request: HttpRequest) -> str:
    return f"{url}?{request.GET.urlencode()}" if request.GET else url


def _refresh_params(request: HttpRequest) -> QueryDict:
    """The query of the page being refreshed. With htmx that is the page's current URL: live
    search may have changed it since the refresh form was rendered."""
    if request.htmx and request.htmx.current_url:
        return QueryDict(urlsplit(request.htmx.current_url).query)
    return request.GET


def _catalog_context(request: HttpRequest, registry: Registry, query: CatalogQuery) -> dict:
    visible = visible_repositories(request.user, registry)
    repositories = browse.filter_repositories(visible, query)
    # Exclusive and shared bytes are aggregates over every repository's blobs, not columns:
    # the storage figures, computed once per change of the cache rows.
    usage = storage.overview(request.user, registry).usage_by_name()
    if query.current_sort == "exclusive":
        page = _paginate(storage.by_exclusive(usage, repositories), query)
        rows = Repository.objects.in_bulk(page.object_list)
        page.object_list = [rows[pk] for pk in page.object_list]
    else:
        page = _paginate(repositories, query)
    return {
        "registry": registry,
        "public_host": public_host(registry),
        "query": query,
        "params": query.data,
        "page": page,
        "usage": usage,
        "namespaces": browse.namespaces(visible),
        "filtered": bool(query.cleaned_data["q"] or query.cleaned_data["namespace"]),
        "page_url": reverse("dashboard:catalog"),
        "refresh_url": _with_query(reverse("dashboard:catalog-refresh"), request),
    }


@require_safe
@login_or_public_read
def catalog(request: HttpRequest) -> HttpResponse:
    query = CatalogQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    context = _catalog_context(request, configured_registry(), query)
    return page_or_results(request, "dashboard/catalog.html", context, CATALOG_RESULTS)


@require_POST
@signed_in
def catalog_refresh(request: HttpRequest) -> HttpResponse:
    query = CatalogQuery(_refresh_params(request))
    if not query.is_valid():
        return bad_query(request, query)
    result, joined = tasks.start_sync()
    return _refresh_started(request, None, result, joined)


def _repository_context(request: HttpRequest, registry: Registry, repository: Repository, query: TagQuery) -> dict:
    # Unfiltered, the count is the repository's tag_count, written with its tag rows by every
    # sync and delete (one transaction), so the rows are not counted again on every page.
    attached = browse.attached_tag_count(repository)
    count = None if query.cleaned_data["q"] else repository.tag_count
    if count is not None and not query.cleaned_data["attached"]:
        count -= attached
    page = _paginate(browse.filter_tags(repository, query), query, count)
    page_url = reverse("dashboard:repository", args=[repository.name])
    return {
        "registry": registry,
        "repository": repository,
        "query": query,
        "params": query.data,
        "page": page,
        "rows": browse.tag_rows(repository, page.object_list),
        "attached_count": attached,
        "share": storage.repository_share(request.user, repository),
        "page_url": page_url,
        "refresh_url": _with_query(reverse("dashboard:repository-refresh", args=[repository.name]), request),
    }


@require_safe
@login_or_public_read
def repository(request: HttpRequest, name: str) -> HttpResponse:
    registry = configured_registry()
    repository = repository_for(request.user, registry, name)
    query = TagQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    context = _repository_context(request, registry, repository, query)
    return page_or_results(request, "dashboard/repository.html", context, TAG_RESULTS)


@require_POST
@signed_in
def repository_refresh(request: HttpRequest, name: str) -> HttpResponse:
    # A repository the user may not see is a 404 before anything is queued.
    repository = repository_for(request.user, configured_registry(), name)
    query = TagQuery(_refresh_params(request))
    if not query.is_valid():
        return bad_query(request, query)
    result, joined = tasks.start_sync(repository.name)
    return _refresh_started(request, repository.name, result, joined)


def _refreshed_page(request: HttpRequest, repository_name: str | None) -> str:
    """The URL of the page being refreshed, with its current query."""
    if repository_name is None:
        path = reverse("dashboard:catalog")
    else:
        path = reverse("dashboard:repository", args=[repository_name])
    params = _refresh_params(request)
    return f"{path}?{params.urlencode()}" if params else path


def _refresh_started(
    request: HttpRequest, repository_name: str | None, result: TaskResult, joined: bool
) -> HttpResponse:
    """The answer to a refresh: with htmx, the results block (under the sync's progress while it
    runs); without, the refreshed page once the sync is done, else the task's own page."""
    if request.htmx:
        return refreshed_results(request, repository_name, result, joined=joined)
    page_url = _refreshed_page(request, repository_name)
    if result.is_finished:
        # The immediate backend ran the sync inside the request.
        _report_refresh(request, browse.refresh(configured_registry(), result, request.user))
        return HttpResponseRedirect(page_url)
    if joined:
        messages.info(request, f"{tasks.sync_label(repository_name)} was already under way: following it.")
    return HttpResponseRedirect(_task_url(result, page_url))


def _task_url(result: TaskResult, page_url: str) -> str:
    """The task's page, linking back to the page being refreshed when it is done."""
    return f"{reverse('dashboard:task-status', args=[result.id])}?{urlencode({'next': page_url})}"


def _report_refresh(request: HttpRequest, error: str | None) -> None:
    if error:
        messages.error(request, f"{error} Showing the data cached before.")
    else:
        messages.success(request, "Refreshed from the registry.")


def refreshed_results(
    request: HttpRequest, repository_name: str | None, result: TaskResult, *, joined: bool = False
) -> HttpResponse:
    """The results block of the page being refreshed (htmx), for its current query: the cached
    rows under the sync's progress while the sync runs; the fresh rows and how it ended once done.

    The task page answers its progress poll with this too once the sync has finished, so it
    names the block to swap (`HX-Retarget`) rather than rely on the poll's own target.
    """
    registry = configured_registry()
    if result.is_finished:
        error = browse.refresh(registry, result, request.user)
        state = {"refresh_error": error, "refreshed": error is None}
    else:
        page_url = _refreshed_page(request, repository_name)
        state = {
            "result": result,
            "progress": TaskProgress.objects.filter(task_id=result.id).first(),
            "joined": joined,
            "poll_id": REFRESH_PROGRESS,
            "next": page_url,
            "status_url": _task_url(result, page_url),
        }
    params = _refresh_params(request)
    if repository_name is None:
        query, (block, template) = CatalogQuery(params), CATALOG_RESULTS
        if not query.is_valid():
            return bad_query(request, query)
        context = _catalog_context(request, registry, query)
    else:
        repository = repository_for(request.user, registry, repository_name)
        query, (block, template) = TagQuery(params), TAG_RESULTS
        if not query.is_valid():
            return bad_query(request, query)
        context = _repository_context(request, registry, repository, query)
    response = render_page(request, template, context | state)
    return reswap(retarget(response, f"#{block}"), "innerHTML")


def _manifest_page(
    request: HttpRequest, registry: Registry, repository: Repository, manifest: Manifest, tag: Tag | None
) -> HttpResponse:
    host = public_host(registry)
    context = {
        "registry": registry,
        "repository": repository,
        "tag": tag,
        "details": browse.describe_manifest(repository, manifest),
        "history": browse.tag_history(repository, tag.name) if tag else [],
        "pull_tag": browse.pull_reference(host, repository, tag.name) if tag else "",
        "pull_digest": browse.pull_reference(host, repository, manifest.digest),
        "cosign": browse.cosign_tag(tag.name) if tag else None,
    }
    return render_page(request, "dashboard/manifest.html", context)


@require_safe
@login_or_public_read
def tag(request: HttpRequest, name: str, tag: str) -> HttpResponse:
    registry = configured_registry()
    repository = repository_for(request.user, registry, name)
    found = get_object_or_404(Tag.objects.select_related("manifest"), repository=repository, name=tag)
    return _manifest_page(request, registry, repository, found.manifest, found)


@require_safe
@login_or_public_read
def manifest(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    registry = configured_registry()
    repository = repository_for(request.user, registry, name)
    found = get_object_or_404(Manifest, repository=repository, digest=digest)
    return _manifest_page(request, registry, repository, found, None)

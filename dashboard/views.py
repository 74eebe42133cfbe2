"""Browse pages: catalog, repository, tag and manifest. Each view serves its full page and,
for htmx requests aimed at its results block, just that block."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from dashboard import browse
from dashboard.access import (
    login_or_public_read,
    repository_for,
    signed_in,
    visible_repositories,
)
from dashboard.forms import PAGE_SIZE, CatalogQuery, TagQuery
from dashboard.models import Manifest, Registry, Repository, Tag
from dashboard.registries import configured_registry, public_host
from dashboard.rendering import page_or_results, render_page

# (id of the element htmx swaps, template of its content): the page includes the same template.
CATALOG_RESULTS = ("catalog-results", "dashboard/_catalog_results.html")
TAG_RESULTS = ("tag-results", "dashboard/_tag_results.html")




def _bad_query(request: HttpRequest, query: CatalogQuery | TagQuery) -> HttpResponse:
    return render_page(request, "dashboard/bad_request.html", {"message": query.error_text()}, status=400)


def _paginate(objects, query: CatalogQuery | TagQuery) -> Page:
    return Paginator(objects, PAGE_SIZE).get_page(query.cleaned_data["page"])


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
    page = _paginate(browse.filter_repositories(visible, query), query)
    return {
        "registry": registry,
        "public_host": public_host(registry),
        "query": query,
        "params": query.data,
        "page": page,
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
        return _bad_query(request, query)
    context = _catalog_context(request, configured_registry(), query)
    return page_or_results(request, "dashboard/catalog.html", context, CATALOG_RESULTS)


@require_POST
@signed_in
def catalog_refresh(request: HttpRequest) -> HttpResponse:
    query = CatalogQuery(_refresh_params(request))
    if not query.is_valid():
        return _bad_query(request, query)
    registry = configured_registry()
    error = browse.refresh(registry)
    if not request.htmx:
        _report_refresh(request, error)
        return HttpResponseRedirect(_with_query(reverse("dashboard:catalog"), request))
    registry.refresh_from_db()
    context = _catalog_context(request, registry, query) | {"refresh_error": error, "refreshed": error is None}
    return render_page(request, CATALOG_RESULTS[1], context)


def _report_refresh(request: HttpRequest, error: str | None) -> None:
    if error:
        messages.error(request, f"{error} Showing the data cached before.")
    else:
        messages.success(request, "Refreshed from the registry.")


def _repository_context(request: HttpRequest, registry: Registry, repository: Repository, query: TagQuery) -> dict:
    page = _paginate(browse.filter_tags(repository, query), query)
    page_url = reverse("dashboard:repository", args=[repository.name])
    return {
        "registry": registry,
        "repository": repository,
        "query": query,
        "params": query.data,
        "page": page,
        "rows": browse.tag_rows(repository, list(page.object_list)),
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
        return _bad_query(request, query)
    context = _repository_context(request, registry, repository, query)
    return page_or_results(request, "dashboard/repository.html", context, TAG_RESULTS)


@require_POST
@signed_in
def repository_refresh(request: HttpRequest, name: str) -> HttpResponse:
    registry = configured_registry()
    repository = repository_for(request.user, registry, name)
    query = TagQuery(_refresh_params(request))
    if not query.is_valid():
        return _bad_query(request, query)
    error = browse.refresh(registry, repository.name)
    if not request.htmx:
        _report_refresh(request, error)
        return HttpResponseRedirect(_with_query(reverse("dashboard:repository", args=[repository.name]), request))
    registry.refresh_from_db()
    repository = repository_for(request.user, registry, name)
    context = _repository_context(request, registry, repository, query) | {
        "refresh_error": error,
        "refreshed": error is None,
    }
    return render_page(request, TAG_RESULTS[1], context)


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

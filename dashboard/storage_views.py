"""Storage pages: where the bytes are (`/storage/`) and how they grew. Figures come from
`dashboard.storage`; only repositories the user may see count, in every total."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.core.paginator import Paginator
from django.urls import reverse
from django.views.decorators.http import require_safe

from dashboard import browse, charts, deletion, growth, storage
from dashboard.access import is_admin, signed_in, visible_names
from dashboard.forms import PAGE_SIZE, StorageQuery
from dashboard.registries import configured_registry
from dashboard.rendering import bad_query, page_or_results

# (id of the element htmx swaps, template of its content): the page includes the same template.
STORAGE_RESULTS = ("storage-table", "dashboard/storage/_table.html")
CHART_BARS = 10
NAMES_PER_BLOB = 5


@require_safe
@signed_in
def storage_page(request: HttpRequest) -> HttpResponse:
    query = StorageQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    registry = configured_registry()
    overview = storage.overview(request.user, registry)
    page = Paginator(sorted(overview.repositories, key=query.sort_key()), PAGE_SIZE).get_page(query.cleaned_data["page"])
    url_of = browse.repository_links()
    context = {
        "registry": registry,
        "overview": overview,
        "query": query,
        "params": query.data,
        "page_url": reverse("dashboard:storage"),
        "page": page,
        "rows": [(usage, url_of(usage.name)) for usage in page.object_list],
        # (blob, the first repositories using it with their URLs, how many more use it)
        "shared_blobs": [
            (
                blob,
                [(name, url_of(name)) for name in blob.repositories[:NAMES_PER_BLOB]],
                max(0, len(blob.repositories) - NAMES_PER_BLOB),
            )
            for blob in overview.shared_blobs
        ],
        "repository_chart": charts.bar_chart(
            "Repositories by exclusive bytes",
            [
                charts.Bar(usage.name, usage.exclusive, url_of(usage.name))
                for usage in overview.repositories[:CHART_BARS]
            ],
        ),
        "namespace_chart": charts.bar_chart(
            "Namespaces by exclusive bytes",
            [
                charts.Bar(usage.name or "(no namespace)", usage.exclusive, namespace_url(usage.name))
                for usage in overview.namespaces[:CHART_BARS]
            ],
        ),
        "pending": deletion.pending_gc(registry, visible_names(request.user, "repository")),
        "can_mark": is_admin(request.user),
        "gc_command": deletion.GC_COMMAND,
    }
    return page_or_results(request, "dashboard/storage/storage.html", context, STORAGE_RESULTS)


def namespace_url(namespace: str) -> str:
    """The catalog showing one namespace's repositories, most exclusive bytes first."""
    catalog = reverse("dashboard:catalog")
    return f"{catalog}?{urlencode({'namespace': namespace, 'sort': 'exclusive'})}" if namespace else catalog


@require_safe
@signed_in
def storage_growth(request: HttpRequest) -> HttpResponse:
    found = growth.growth(request.user, configured_registry())
    context = {
        "growth": found,
        "chart": charts.growth_chart("Stored bytes per day", found.series, found.markers),
        "kept_days": storage.SAMPLES_KEPT_DAYS,
    }
    return render(request, "dashboard/storage/growth.html", context)

"""A version's vulnerabilities and packages, from the reports and SBOMs attached to it."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from dashboard import attachments
from dashboard.access import login_or_public_read, repository_for, visible_repositories
from dashboard.forms import PackageQuery, PackageSearch, VulnerabilityQuery
from dashboard.models import Finding, Manifest, Repository
from dashboard.registries import configured_registry
from dashboard.rendering import bad_query, render_page

_FINDING_ORDER = {
    "severity": lambda f: (attachments.COUNTED.index(f.severity), f.vulnerability_id, f.package),
    "id": lambda f: (f.vulnerability_id, f.package),
    "package": lambda f: (f.package.lower(), f.vulnerability_id),
}


def _version(request: HttpRequest, name: str, digest: str) -> tuple[Repository, Manifest]:
    repository = repository_for(request.user, configured_registry(), name)
    manifest = get_object_or_404(Manifest.objects.defer("raw", "raw_config"), repository=repository, digest=digest)
    return repository, manifest


def _filtered(found: list[Finding], query: VulnerabilityQuery) -> list[Finding]:
    severity, fixed = query.cleaned_data["severity"], query.cleaned_data["fixed"]
    if severity:
        found = [f for f in found if f.severity == severity]
    if fixed:
        found = [f for f in found if bool(f.fixed_in) == (fixed == "yes")]
    return sorted(found, key=_FINDING_ORDER[query.current_sort])


@require_safe
@login_or_public_read
def vulnerabilities(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    repository, manifest = _version(request, name, digest)
    query = VulnerabilityQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    chain = attachments.supply_chain(repository, manifest)
    found = attachments.findings(chain.reports)
    context = {
        "repository": repository,
        "manifest": manifest,
        "chain": chain,
        "query": query,
        "total": len(found),
        "findings": _filtered(found, query),
    }
    return render_page(request, "dashboard/supply/vulnerabilities.html", context)


@require_safe
@login_or_public_read
def packages(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    repository, manifest = _version(request, name, digest)
    query = PackageQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    chain = attachments.supply_chain(repository, manifest)
    listed = attachments.packages(chain.attachments)
    if query.cleaned_data["q"]:
        needle = query.cleaned_data["q"].lower()
        listed = [package for package in listed if needle in package.name.lower()]
    context = {"repository": repository, "manifest": manifest, "query": query, "packages": listed}
    return render_page(request, "dashboard/supply/packages.html", context)


@require_safe
@login_or_public_read
def package_search(request: HttpRequest) -> HttpResponse:
    """Which versions of the repositories the user may see ship a package (at a version)."""
    query = PackageSearch(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    name, version = query.cleaned_data["q"].strip(), query.cleaned_data["version"].strip()
    hits = None
    if name:
        hits = attachments.find_package(visible_repositories(request.user, configured_registry()), name, version)
    context = {"query": query, "hits": hits, "shown": attachments.PACKAGE_HITS_SHOWN}
    return render_page(request, "dashboard/supply/package_search.html", context)

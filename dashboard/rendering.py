"""Rendering shared by the views: one URL answers a whole page or one htmx-swapped block."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme

from dashboard.forms import QueryForm


def render_page(request: HttpRequest, template: str, context: dict, *, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    # The same URL answers a whole page or a block depending on these headers; caches must know.
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def page_or_results(request: HttpRequest, template: str, context: dict, results: tuple[str, str]) -> HttpResponse:
    """The full page, or only its results block when htmx asks for that block.

    `results` is (id of the element htmx swaps, template of its content); the page includes
    the same template.
    """
    target, fragment = results
    return render_page(request, fragment if request.htmx and request.htmx.target == target else template, context)


def bad_query(request: HttpRequest, query: QueryForm) -> HttpResponse:
    """The 400 page for a query string its form rejected, naming what is wrong."""
    return render_page(request, "dashboard/bad_request.html", {"message": query.error_text()}, status=400)


def safe_next(request: HttpRequest, url: str, default: str = "") -> str:
    """`url` when it stays on this site (never an open redirect), else `default`."""
    allowed = url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return url if url and allowed else default


def refusal_page(
    request: HttpRequest, message: str, status: int, back: str, *, heading: str = "Nothing was done"
) -> HttpResponse:
    """The page for an action that was not carried out: why, and the way back."""
    context = {"heading": heading, "message": message, "back": back}
    return render_page(request, "dashboard/rollback/refused.html", context, status=status)

"""The top navigation: the pages the signed-in user can use, the current one marked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django import template
from django.http import HttpRequest
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from dashboard.access import AnyUser, maintains_any, may_browse

register = template.Library()


def _signed_in(user: AnyUser) -> bool:
    return user.is_authenticated


# (URL name, label, who can use the page, URL names of the pages it leads to).
SECTIONS: list[tuple[str, str, Callable[[AnyUser], bool], set[str]]] = [
    (
        "catalog",
        "Repositories",
        may_browse,
        {"repository", "tag", "manifest", "tag-history", "rollback", "compare", "restore", "delete-tag",
         "delete-version", "bulk-delete-preview", "bulk-delete", "task-status", "vulnerabilities", "packages"},
    ),
    ("pins", "Pins", may_browse, set()),
    ("package-search", "Packages", may_browse, set()),
    ("retention", "Retention", maintains_any, {"retention-new", "retention-edit", "retention-preview", "retention-apply"}),
    ("storage", "Storage", _signed_in, {"storage-growth"}),
    ("audit", "Audit log", _signed_in, set()),
    ("access", "Access", _signed_in, {"removed-repositories"}),
]


@dataclass(frozen=True)
class NavItem:
    label: str
    url: str
    # aria-current: "page" on the page itself, "true" on a page inside its section, else None.
    current: str | None


def _current(request: HttpRequest, url_name: str, inside: set[str]) -> str | None:
    match = request.resolver_match
    if match is None or match.namespace != "dashboard":
        return None
    if match.url_name == url_name:
        return "page"
    return "true" if match.url_name in inside else None


@register.inclusion_tag("dashboard/_navigation.html", takes_context=True)
def main_navigation(context: template.Context) -> dict:
    request: HttpRequest = context["request"]
    items = [
        NavItem(label, reverse(f"dashboard:{url_name}"), _current(request, url_name, inside))
        for url_name, label, allows, inside in SECTIONS
        if allows(request.user)
    ]
    return {"items": items}


@register.simple_tag(takes_context=True)
def current_if(context: template.Context, url_name: str) -> SafeString:
    """` aria-current="page"` on the link to the page being shown (the account links)."""
    match = context["request"].resolver_match
    return mark_safe(' aria-current="page"' if match is not None and match.view_name == url_name else "")

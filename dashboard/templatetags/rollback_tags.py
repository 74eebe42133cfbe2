"""Panels the browse pages include: pins and rollback on a repository, tag or version page.

Each computes its own context with a few bounded queries, so the browse views need not know
about pins and history.
"""

from __future__ import annotations

from django import template

from dashboard import rollback
from dashboard.access import role_on
from dashboard.models import Manifest, Repository, Role, Tag

register = template.Library()

# The compact timeline and the repository's pin list are summaries; their pages have the rest.
COMPACT_PERIODS = 20
PINS_SHOWN = 5


def _is_operator(context: template.Context, repository: Repository) -> bool:
    return (role_on(context["request"].user, repository.name) or 0) >= Role.OPERATOR


@register.inclusion_tag("dashboard/rollback/_repository_panel.html", takes_context=True)
def repository_pins_panel(context: template.Context, repository: Repository) -> dict:
    pins = rollback.newest_pins(repository, PINS_SHOWN + 1)
    return {
        "repository": repository,
        "rows": rollback.pin_rows(pins[:PINS_SHOWN]),
        "more": len(pins) > PINS_SHOWN,
        "suggestions": rollback.deployment_tags(repository, limit=5),
        "request": context["request"],
    }


@register.inclusion_tag("dashboard/rollback/_version_panel.html", takes_context=True)
def version_panel(
    context: template.Context, repository: Repository, manifest: Manifest, tag: Tag | None = None
) -> dict:
    """Pin state of the version, and for a tag: its compact history and moved-pin warnings."""
    periods = rollback.tag_periods(repository, tag.name, limit=COMPACT_PERIODS) if tag else []
    previous = next((p for p in periods if not p.current and p.exists and p.row.digest != manifest.digest), None)
    pins = rollback.repository_pins(repository)
    return {
        "repository": repository,
        "manifest": manifest,
        "tag": tag.name if tag else "",
        "periods": periods,
        "previous": previous,
        "pin": next((pin for pin in pins if pin.digest == manifest.digest), None),
        # On a tag's page the version shown is the one the tag points at now.
        "moved_pins": rollback.pins_moved_from(pins, tag.name, manifest.digest) if tag else [],
        "can_operate": _is_operator(context, repository),
        "request": context["request"],
        "csrf_token": context.get("csrf_token"),
    }

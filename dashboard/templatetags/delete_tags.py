"""Delete controls and the storage panel the browse pages include.

Each tag renders nothing for users below maintainer (the server refuses them anyway), and
computes what it needs with bounded queries, so the browse views need not know about deleting.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import template

from dashboard import deletion
from dashboard.access import role_on
from dashboard.models import Manifest, Repository, Role, Tag

register = template.Library()

BULK_FORM_ID = "bulk-delete"


def _may_delete(context: template.Context, repository: Repository) -> bool:
    return (role_on(context["request"].user, repository.name) or 0) >= Role.MAINTAINER


def _registry(context: template.Context, repository: Repository):
    """The browse views already put the registry in the context; saves a query per panel."""
    return context.get("registry") or repository.registry


@register.inclusion_tag("dashboard/delete/_bulk_form.html", takes_context=True)
def bulk_delete_form(context: template.Context, repository: Repository) -> dict:
    """The form the tag checkboxes belong to, the dialog single deletes open in, the script."""
    return {
        "repository": repository,
        "registry": _registry(context, repository),
        "may_delete": _may_delete(context, repository),
        "form_id": BULK_FORM_ID,
        "limit": deletion.BULK_LIMIT,
        "csrf_token": context.get("csrf_token"),
    }


@dataclass(frozen=True)
class TableControls:
    """What the tag table's delete column needs, decided once per table: a lookup per row (or
    a sub-template per cell) cost more than the rest of the row."""

    allowed: bool
    form_id: str = BULK_FORM_ID


@register.simple_tag(takes_context=True)
def delete_controls(context: template.Context, repository: Repository) -> TableControls:
    """`{% delete_controls repository as delete %}`: whether the rows get a checkbox and a
    delete link (their URLs come with the rows, see browse.RowLinks)."""
    return TableControls(_may_delete(context, repository))


@register.inclusion_tag("dashboard/delete/_version_panel.html", takes_context=True)
def delete_panel(context: template.Context, repository: Repository, manifest: Manifest, tag: Tag | None = None) -> dict:
    """On a tag or version page: delete the tag, or the whole version."""
    return {
        "may_delete": _may_delete(context, repository),
        "repository": repository,
        "registry": _registry(context, repository),
        "manifest": manifest,
        "tag": tag,
    }


@register.inclusion_tag("dashboard/delete/_storage_panel.html", takes_context=True)
def storage_panel(context: template.Context, repository: Repository) -> dict:
    versions, size = deletion.pending_gc_in(repository)
    return {"repository": repository, "versions": versions, "bytes": size, "request": context["request"]}

"""The rows of the catalog's and the repository page's tables, drawn in Python.

Fifty rows of ten to thirty template lookups each were most of these pages' time; the same
markup from f-strings costs a fraction (figures in bench/README.md). Everything that came from the registry goes through escape() here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django import template
from django.utils.safestring import SafeString

from dashboard.browse import TagRow, repository_links
from dashboard.models import Repository
from dashboard.storage import Usage
from dashboard.templatetags.delete_tags import TableControls
from dashboard.templatetags.display import basename, digest, escape, kind_badges, size, tag_links, when
from dashboard.templatetags.supply_tags import security_badges

register = template.Library()


def _name_cell(row: TagRow) -> str:
    name = escape(row.tag.name)
    title = f' title="{name}"' if row.cosign else ""
    parts = [f'<a class="tag-link" href="{escape(row.url)}"{title}>{escape(row.label)}</a>']
    if row.pinned:
        parts.append('<span class="badge badge-pin">pinned</span>')
    if row.cosign:
        parts.append(f'<span class="badge badge-sig">{escape(row.cosign.kind)}</span>')
    if row.security:
        parts.append(security_badges(row.security))
        if row.security.attachment_count:
            count = row.security.attachment_count
            parts.append(
                f'<a class="badge badge-artifact" href="{escape(row.manifest_url)}#supply-title">{count} attached</a>'
            )
    if row.siblings:
        more = f" and {row.more_siblings} more" if row.more_siblings else ""
        parts.append(f'<div class="siblings">same digest as {tag_links(row.siblings)}{more}</div>')
    return f'<td class="name-cell">{" ".join(parts)}</td>'


@register.simple_tag
def tag_row(row: TagRow, delete: TableControls) -> SafeString:
    """One `<tr>` of the tag table; rows next to each other with one digest form a group."""
    tag = row.tag
    name = escape(tag.name)
    cells = [
        _name_cell(row),
        f'<td><a href="{escape(row.manifest_url)}">{digest(tag.digest)}</a></td>',
        f'<td class="kind-cell">{kind_badges(tag, tag.platforms)}</td>',
        f'<td class="num">{size(tag.size)}</td>',
        f"<td>{when(tag.created)}</td>",
    ]
    if delete.allowed:
        form = escape(delete.form_id)
        cells.insert(
            0,
            f'<td class="select-cell"><input type="checkbox" name="tags" value="{name}" form="{form}" '
            f'aria-label="Select {name}"><input type="hidden" name="digest:{name}" '
            f'value="{escape(tag.digest)}" form="{form}"></td>',
        )
        url = escape(row.delete_url)
        cells.append(
            f'<td class="action-cell"><a href="{url}" hx-get="{url}" hx-target="#delete-dialog" '
            f'hx-swap="innerHTML" hx-push-url="false" aria-label="Delete {name}">Delete…</a></td>'
        )
    group = "group-start" if row.group_start else "same-digest"
    return SafeString(f'<tr class="{group}">{"".join(cells)}</tr>')


@register.simple_tag
def repository_rows(repositories: Iterable[Repository], usage: Mapping[str, Usage]) -> SafeString:
    """The `<tr>`s of the catalog table; `usage`: the storage figures by repository name."""
    url_of = repository_links()
    return SafeString(
        "".join(
            _repository_row(repository, url_of(repository.name), usage.get(repository.name))
            for repository in repositories
        )
    )


def _repository_row(repository: Repository, url: str, usage: Usage | None) -> str:
    namespace = f'<span class="namespace">{escape(repository.namespace)}/</span>' if repository.namespace else ""
    name = f'<a class="repo-link" href="{escape(url)}">{namespace}{escape(basename(repository.name))}</a>'
    if repository.last_sync_error:
        name += f' <span class="badge badge-warning" title="{escape(repository.last_sync_error)}">stale</span>'
    tags = '<span class="muted">none</span>' if repository.is_empty else str(repository.tag_count)
    return (
        f'<tr><td class="name-cell">{name}</td><td class="num">{tags}</td>'
        f'<td class="num">{size(repository.total_size)}</td>'
        f'<td class="num">{size(usage.exclusive if usage else 0)}</td><td class="num">{size(usage.shared if usage else 0)}</td>'
        f"<td>{when(repository.last_pushed_at)}</td></tr>"
    )

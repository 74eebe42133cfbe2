"""Sizes, dates and digests as people read them, with the exact value on hover."""

from __future__ import annotations

import html
import re
from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from dashboard.browse import cosign_tag

register = template.Library()


def escape(value: object) -> str:
    """django.utils.html.escape without its lazy-string wrapper, which cost more than the escaping
    itself in the tags below that run for every row of a table (same output)."""
    return html.escape(str(value))


# Decimal units, as `docker images` and the registries' own UIs count.
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
_SHORT_DIGEST = 12
_TIME_UNITS = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60))
_UNKNOWN_SIZE = mark_safe('<span class="muted">—</span>')
_UNKNOWN_DATE = mark_safe('<span class="muted">unknown</span>')
# Classic `docker build` records metadata steps as `/bin/sh -c #(nop)  ENV A=b`; the shell part is noise.
_NOP_PREFIX = re.compile(r"^/bin/sh -c #\(nop\)\s*")


@register.filter
def human_size(size: int | None) -> str:
    """1234567 -> "1.2 MB"."""
    if size is None:
        return "—"
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            break
        value /= 1000
    return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"


@register.simple_tag
def size(value: int | None) -> SafeString:
    """A human size; hovering shows the exact byte count."""
    if value is None or value == "":
        return _UNKNOWN_SIZE
    # Both texts come from an int: nothing to escape (format_html costs more than the rest here).
    return SafeString(f'<span class="size" title="{int(value):,} bytes">{human_size(value)}</span>')


@register.filter
def relative(moment: datetime | None) -> str:
    """"3 days ago" or "in 2 hours" (clocks of build machines drift).

    Plain arithmetic: django's timesince goes through translation for every call, which made it
    the most expensive part of a 50-row table.
    """
    if not moment:
        return "unknown"
    seconds = (timezone.now() - moment).total_seconds()
    for unit, length in _TIME_UNITS:
        count = int(abs(seconds) // length)
        if count:
            amount = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {amount}" if seconds < 0 else f"{amount} ago"
    return "just now"


@register.simple_tag
def when(moment: datetime | None) -> SafeString:
    """A relative date in a <time> element; hovering shows the exact date and time."""
    if not moment:
        return _UNKNOWN_DATE
    # The project's time zone (no per-request zones here); the lookup of the current one costs
    # more than the rest of this tag, which runs for every row of every table.
    local = moment.astimezone(timezone.get_default_timezone())
    # Every text is made from the datetime: nothing to escape.
    return SafeString(
        f'<time datetime="{moment.isoformat()}" title="{local:%Y-%m-%d %H:%M:%S %Z}">{relative(moment)}</time>'
    )


@register.filter
def short_digest(digest: str) -> str:
    """`sha256:3f2a…` -> its first 12 hex digits, as docker prints image ids."""
    return digest.partition(":")[2][:_SHORT_DIGEST] or digest[:_SHORT_DIGEST]


@register.simple_tag
def digest(value: str) -> SafeString:
    """A short digest; hovering shows the full one."""
    safe = escape(value)  # once, not per use as format_html would: this runs for every row
    return SafeString(f'<code class="digest" title="{safe}">{short_digest(safe)}</code>')


@register.simple_tag
def tag_links(links: list[tuple[str, str]]) -> SafeString:
    """`(name, url)` pairs as comma-separated links. A tag, not a {% for %} in the template:
    every row of a tag table has up to three, and the loop cost more than the rest of the row."""
    return SafeString(", ".join(f'<a href="{escape(url)}">{escape(name)}</a>' for name, url in links))


@register.filter
def basename(repository_name: str) -> str:
    """`team/payments/worker` -> `worker`."""
    return repository_name.rpartition("/")[2]


@register.filter
def breakable(text: str) -> SafeString:
    """Allow line breaks after the dots of `org.opencontainers.image.source`, instead of the
    browser breaking it mid-word or not at all."""
    return mark_safe(escape(text).replace(".", ".<wbr>"))


@register.filter
def instruction(created_by: str | None) -> str:
    """A history entry's command as the Dockerfile line it came from, when that is recognisable."""
    if not created_by:
        return ""
    return _NOP_PREFIX.sub("", created_by).strip()


@register.filter
def cosign_kind(tag_name: str) -> str:
    found = cosign_tag(tag_name)
    return found.kind if found else ""


# kind -> (badge class, text, attribute of the manifest shown on hover)
_KIND_BADGES = {
    "index": ("badge-index", "multi-arch", None),
    "artifact": ("badge-artifact", "artifact", "artifact_type"),
    "schema1": ("badge-warning", "legacy schema1", None),
    "unknown": ("", "unknown type", "media_type"),
}


@register.simple_tag
def kind_badges(manifest, platforms: list[str]) -> SafeString:
    """Badges for what a manifest is (plain images get none) and the platforms it runs on."""
    badges = [f'<span class="badge badge-platform">{escape(platform)}</span>' for platform in platforms]
    kind = _KIND_BADGES.get(manifest.kind)
    if kind is not None:
        css, text, hover = kind
        title = escape(getattr(manifest, hover)) if hover else ""
        badges.insert(0, f'<span class="badge {css}" title="{title}">{text}</span>')
    # Every piece is a constant or escaped above; f-strings, because this runs for every row.
    return SafeString("".join(badges))

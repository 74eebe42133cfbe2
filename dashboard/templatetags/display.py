"""Sizes, dates and digests as people read them, with the exact value on hover."""

from __future__ import annotations

import re
from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince, timeuntil

from dashboard.browse import cosign_tag

register = template.Library()

# Decimal units, as `docker images` and the registries' own UIs count.
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
_SHORT_DIGEST = 12
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
    return format_html('<span class="size" title="{} bytes">{}</span>', number_format(value, force_grouping=True), human_size(value))


@register.filter
def relative(moment: datetime | None) -> str:
    """"3 days ago" or "in 2 hours" (clocks of build machines drift)."""
    if not moment:
        return "unknown"
    now = timezone.now()
    if moment > now:
        return f"in {timeuntil(moment, now, depth=1)}"
    return f"{timesince(moment, now, depth=1)} ago"


@register.simple_tag
def when(moment: datetime | None) -> SafeString:
    """A relative date in a <time> element; hovering shows the exact date and time."""
    if not moment:
        return _UNKNOWN_DATE
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        relative(moment),
    )


@register.filter
def short_digest(digest: str) -> str:
    """`sha256:3f2a…` -> its first 12 hex digits, as docker prints image ids."""
    return digest.partition(":")[2][:_SHORT_DIGEST] or digest[:_SHORT_DIGEST]


@register.simple_tag
def digest(value: str) -> SafeString:
    """A short digest; hovering shows the full one."""
    return format_html('<code class="digest" title="{}">{}</code>', value, short_digest(value))


@register.filter
def basename(repository_name: str) -> str:
    """`team/payments/worker` -> `worker`."""
    return repository_name.rpartition("/")[2]


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

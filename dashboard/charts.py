"""Charts as server-rendered SVG: no script, no chart library. Every text is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from dashboard.templatetags.display import human_size

BAR_WIDTH = 640
BAR_HEIGHT = 22
LABEL_WIDTH = 230


@dataclass
class Bar:
    label: str
    bytes: int
    url: str


def bar_chart(title: str, bars: Sequence[Bar]) -> SafeString:
    """Horizontal bars, longest first as given, each a link (to a repository or namespace)."""
    if not bars:
        return SafeString("")
    largest = max(bar.bytes for bar in bars) or 1
    room = BAR_WIDTH - LABEL_WIDTH - 80
    rows = format_html_join(
        "",
        '<a href="{}"><g transform="translate(0,{})"><title>{}: {}</title>'
        '<text x="{}" y="15" text-anchor="end" class="chart-label">{}</text>'
        '<rect x="{}" y="3" width="{}" height="16" class="chart-bar"></rect>'
        '<text x="{}" y="15" class="chart-value">{}</text></g></a>',
        (
            (
                bar.url,
                index * BAR_HEIGHT,
                bar.label,
                f"{bar.bytes:,} bytes",
                LABEL_WIDTH - 8,
                _shortened(bar.label),
                LABEL_WIDTH,
                max(1, round(room * bar.bytes / largest)),
                LABEL_WIDTH + max(1, round(room * bar.bytes / largest)) + 6,
                human_size(bar.bytes),
            )
            for index, bar in enumerate(bars)
        ),
    )
    return format_html(
        '<svg class="chart" role="img" viewBox="0 0 {} {}" width="100%" aria-label="{}">{}</svg>',
        BAR_WIDTH,
        BAR_HEIGHT * len(bars) + 4,
        title,
        rows,
    )


def _shortened(label: str, limit: int = 32) -> str:
    return label if len(label) <= limit else "…" + label[-(limit - 1) :]

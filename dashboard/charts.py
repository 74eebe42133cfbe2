"""Charts as server-rendered SVG: no script, no chart library. Every text is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from dashboard.growth import Marker, Series
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
        # A group, not an image: its bars are links, and an image's content is not interactive.
        '<svg class="chart" role="group" viewBox="0 0 {} {}" width="100%" aria-label="{}">{}</svg>',
        BAR_WIDTH,
        BAR_HEIGHT * len(bars) + 4,
        title,
        rows,
    )


def _shortened(label: str, limit: int = 32) -> str:
    return label if len(label) <= limit else "…" + label[-(limit - 1) :]


# Growth ---------------------------------------------------------------------------------------

LINE_WIDTH = 760
LINE_HEIGHT = 260
MARGIN_LEFT = 70
MARGIN_TOP = 10
MARGIN_BOTTOM = 24
LEGEND_ROW = 18
PALETTE = ("#0b63ce", "#d35400", "#16a085", "#8e44ad", "#c0392b", "#2c3e50", "#7f8c8d", "#27ae60", "#b7950b", "#e84393")


def growth_chart(title: str, series: Sequence[Series], markers: Sequence[Marker]) -> SafeString:
    """Lines of bytes per day (the first series also shaded as an area), one dot per sample,
    and dashed vertical marks on the days something was deleted; a legend below."""
    days = sorted({day for each in series for day, _ in each.points})
    if not days:
        return SafeString("")
    first, last = days[0], days[-1]
    span = max((last - first).days, 1)
    top = max(size for each in series for _, size in each.points) or 1
    plot_width = LINE_WIDTH - MARGIN_LEFT - 10
    bottom = MARGIN_TOP + LINE_HEIGHT

    def x(day: date) -> float:
        offset = (day - first).days / span if last != first else 0.5
        return round(MARGIN_LEFT + offset * plot_width, 1)

    def y(size: int) -> float:
        return round(bottom - size / top * LINE_HEIGHT, 1)

    parts = [
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="chart-grid"></line>'
            '<text x="{}" y="{}" text-anchor="end" class="chart-axis">{}</text>',
            MARGIN_LEFT, y(level), MARGIN_LEFT + plot_width, y(level), MARGIN_LEFT - 6, y(level) + 4, human_size(level),
        )
        for level in (0, top // 2, top)
    ]
    parts += [
        format_html('<text x="{}" y="{}" text-anchor="middle" class="chart-axis">{}</text>', x(day), bottom + 16, day)
        for day in sorted({first, last})
    ]
    for marker in markers:
        if first <= marker.day <= last:
            parts.append(
                format_html(
                    '<line x1="{}" y1="{}" x2="{}" y2="{}" class="chart-{}"><title>{}: {}</title></line>',
                    x(marker.day), MARGIN_TOP, x(marker.day), bottom, marker.kind, marker.day, marker.label,
                )
            )
    for index, each in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{x(day)},{y(size)}" for day, size in each.points)
        if index == 0:
            area = f"{x(each.points[0][0])},{bottom} {points} {x(each.points[-1][0])},{bottom}"
            parts.append(format_html('<polygon points="{}" fill="{}" class="chart-area"></polygon>', area, color))
        parts.append(format_html('<polyline points="{}" stroke="{}" class="chart-line"></polyline>', points, color))
        parts += [
            format_html(
                '<circle cx="{}" cy="{}" r="3" fill="{}" class="chart-point"><title>{} on {}: {}</title></circle>',
                x(day), y(size), color, each.name, day, human_size(size),
            )
            for day, size in each.points
        ]
        legend_y = bottom + MARGIN_BOTTOM + 12 + index * LEGEND_ROW
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="12" height="4" fill="{}"></rect>'
                '<text x="{}" y="{}" class="chart-legend">{} ({})</text>',
                MARGIN_LEFT, legend_y - 4, color, MARGIN_LEFT + 18, legend_y, each.name, each.scope,
            )
        )
    height = bottom + MARGIN_BOTTOM + 12 + len(series) * LEGEND_ROW
    return format_html(
        '<svg class="chart growth-chart" role="img" viewBox="0 0 {} {}" width="100%" aria-label="{}">{}</svg>',
        LINE_WIDTH, height, title, SafeString("".join(parts)),
    )

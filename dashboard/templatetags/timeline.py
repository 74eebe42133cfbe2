"""A tag's history drawn as inline SVG on the server: no script, no inline styles.

The page's CSP allows neither inline scripts nor `style` attributes, so colours and positions
are SVG presentation attributes (fill=, x=, width=) and hover text is a <title> element.
One lane per digest (newest on top) in the full drawing; a single strip in the compact one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django import template
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString

from dashboard.models import TagHistory
from dashboard.rollback import Period
from dashboard.templatetags.display import short_digest

register = template.Library()

CURRENT = "#15803d"
EXISTS = "#2563eb"
GONE = "#9ca3af"
USER_CHANGE = "#d97706"
# Compact strip: neighbouring digests need telling apart without a lane each.
PALETTE = ("#2563eb", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f", "#b45309")
MIN_BAR_WIDTH = 2.0
# Lane labels have 150 px beside the digest: short words for Period.state.
LANE_STATES = {"deleted": " gone", "not cached": " uncached"}
# Periods drawn: one lane per digest, so a tag CI moves on every commit would grow without end.
DRAWN_PERIODS = 40


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str
    by_user: bool

    @property
    def middle(self) -> float:
        return self.y + self.height / 2


@dataclass
class Lane:
    label: str
    y: float


@dataclass
class Layout:
    width: int
    height: int
    left: int
    right: int

    def scale(self, start: datetime, end: datetime):
        span = max((end - start).total_seconds(), 1.0)
        usable = self.width - self.left - self.right

        def x(moment: datetime) -> float:
            return round(self.left + (moment - start).total_seconds() / span * usable, 1)

        return x


FULL = Layout(width=760, height=0, left=150, right=12)
COMPACT = Layout(width=320, height=18, left=0, right=0)
LANE_HEIGHT = 22
BAR_HEIGHT = 12
AXIS_HEIGHT = 26


def _moment(value: datetime) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M}"


def _title(period: Period) -> str:
    until = "now" if period.current else _moment(period.row.until)
    state = "current" if period.current else period.state
    ended = f", {period.ended_by}" if period.ended_by else ""
    when = f"from {_moment(period.row.since)} until {until}"
    return f"{period.row.digest} {when} ({state}; {period.started_by}{ended})"


def _fill(period: Period) -> str:
    if period.current:
        return CURRENT
    return EXISTS if period.exists else GONE


def _range(periods: Sequence[Period], now: datetime) -> tuple[datetime, datetime]:
    start = min(period.row.since for period in periods)
    end = max(period.row.until or now for period in periods)
    return start, max(end, start + timedelta(seconds=1))


def _bars(periods: Sequence[Period], layout: Layout, now: datetime, y_of, fill_of) -> list[Bar]:
    start, end = _range(periods, now)
    x = layout.scale(start, end)
    bars = []
    for period in reversed(periods):  # oldest first, so newer bars are drawn on top
        until = period.row.until or now
        left = x(period.row.since)
        bars.append(
            Bar(
                x=left,
                y=y_of(period),
                width=max(round(x(until) - left, 1), MIN_BAR_WIDTH),
                height=BAR_HEIGHT,
                fill=fill_of(period),
                title=_title(period),
                by_user=period.row.started_by == TagHistory.Source.USER,
            )
        )
    return bars


@register.simple_tag
def tag_timeline(periods: Sequence[Period], tag: str, compact: bool = False) -> SafeString:
    """The SVG for `periods` (newest first, as `rollback.tag_periods` returns them)."""
    if not periods:
        return SafeString("")
    periods = periods[:DRAWN_PERIODS]
    now = timezone.now()
    digests = list(dict.fromkeys(period.row.digest for period in periods))
    if compact:
        colours = {digest: PALETTE[i % len(PALETTE)] for i, digest in enumerate(digests)}
        bars = _bars(
            periods,
            COMPACT,
            now,
            y_of=lambda period: (COMPACT.height - BAR_HEIGHT) / 2,
            fill_of=lambda period: colours[period.row.digest] if period.exists else GONE,
        )
        layout, lanes, axis = COMPACT, [], None
    else:
        lane_y = {digest: i * LANE_HEIGHT + (LANE_HEIGHT - BAR_HEIGHT) / 2 for i, digest in enumerate(digests)}
        bars = _bars(periods, FULL, now, y_of=lambda period: lane_y[period.row.digest], fill_of=_fill)
        states = {period.row.digest: period for period in reversed(periods)}
        lanes = [
            Lane(
                label=short_digest(digest)
                + (" pinned" if states[digest].pinned else "")
                + ("" if states[digest].exists else LANE_STATES[states[digest].state]),
                y=lane_y[digest] + BAR_HEIGHT - 2,
            )
            for digest in digests
        ]
        start, end = _range(periods, now)
        plot_bottom = len(digests) * LANE_HEIGHT
        layout = Layout(FULL.width, plot_bottom + AXIS_HEIGHT, FULL.left, FULL.right)
        axis = {
            "y": plot_bottom + 2,
            "label_y": plot_bottom + 18,
            "start": _moment(start),
            "end": "now" if any(period.current for period in periods) else _moment(end),
            "end_x": FULL.width - FULL.right,
        }
    return render_to_string(
        "dashboard/rollback/_timeline.html",
        {
            "tag": tag,
            "layout": layout,
            "bars": bars,
            "lanes": lanes,
            "axis": axis,
            "compact": compact,
            "user_change": USER_CHANGE,
        },
    )

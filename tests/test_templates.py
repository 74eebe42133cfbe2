"""Checks on the template sources that no rendering test would notice."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

# Django's {# #} comments end at the line: an unclosed one is printed on the page.
UNCLOSED_COMMENT = re.compile(r"\{#(?!.*#\})")


def template_files() -> list[Path]:
    roots = [Path(d) for d in settings.TEMPLATES[0]["DIRS"]] + [Path(settings.BASE_DIR) / "dashboard" / "templates"]
    return sorted(path for root in roots if root.is_dir() for path in root.rglob("*.html"))


def test_there_are_templates_to_check() -> None:
    assert len(template_files()) > 20


def test_no_single_line_comment_spans_lines() -> None:
    unclosed = [
        f"{path.relative_to(settings.BASE_DIR)}:{number}"
        for path in template_files()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if UNCLOSED_COMMENT.search(line)
    ]
    assert unclosed == []

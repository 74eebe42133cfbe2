"""What a viewer's audit filter costs: hostile glob patterns against a plain filter, same run.

Fills a throwaway SQLite database (the default deployment) with 10,000 audit entries, half of
them in `team-a/` (4,000 names of 20-40 characters, 1,000 of 255, the longest a name may be),
and signs in a viewer whose only rule is `team-a/*`. Then times the audit page, in-process with
Django's test client, for:

  - a plain filter on one repository name (the baseline),
  - `team-a/*` (every visible row),
  - `team-a/************#`, the pattern that took 4 s per row before: now refused (`#` is no
    repository-name character), and the same with a `z`, which is collapsed to one `*` and
    matched by SQLite's GLOB instead of Python's `re`,
  - `team-a/*a*a*a*a*a*a*z` and `*a??????*`, worst cases within the wildcard cap.

"Before" is the regex the audit filter used to send to SQLite's REGEXP (Python's `re`), timed on
one row of 30 characters with fewer stars, and extrapolated: the full pattern would not finish.

With DATABASE_URL set (e.g. under deploy/with-postgres.sh) it uses that database instead.

Usage: .venv/bin/python bench/patterns.py [--rows 10000] [--iterations 5]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOSTILE = "team-a/************#"
PATTERNS = {
    "plain name (baseline)": "team-a/service-00042-xx",
    "team-a/*": "team-a/*",
    "the issue's pattern (refused: `#`)": HOSTILE,
    "same, valid characters": HOSTILE.replace("#", "z"),
    "capped: 7 stars between literals": "team-a/*a*a*a*a*a*a*z",
    "capped: * then ?s": "*a??????*",
}


def seed(rows: int) -> None:
    from dashboard.models import AuditEntry, Role
    from tests.personas import make_user

    long_names = rows // 10
    names = [f"team-a/service-{i:05d}-{'x' * (i % 20)}" for i in range(rows // 2 - long_names)]
    names += ["team-a/" + "a" * 248] * long_names
    names += [f"team-b/service-{i:05d}" for i in range(rows - len(names))]
    AuditEntry.objects.bulk_create(
        AuditEntry(username="bench", action="delete_tag", repository=name, outcome="ok") for name in names
    )
    make_user("viewer", pattern="team-a/*", role=Role.VIEWER)


def time_page(client, pattern: str, iterations: int) -> tuple[float, str]:
    """Median seconds of the audit page filtered by `pattern`, and how many rows it matches."""
    from django.urls import reverse

    from dashboard.audit import entries_visible_to
    from dashboard.audit_views import AuditQuery

    url = reverse("dashboard:audit")
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        response = client.get(url, {"repository": pattern})
        samples.append(time.perf_counter() - started)
    query = AuditQuery({"repository": pattern})
    if not query.is_valid():
        assert response.status_code == 400, response.status_code
        return statistics.median(samples), f"400: {query.error_text()}"
    assert response.status_code == 200, response.content[:300]
    matched = query.filter(entries_visible_to(response.wsgi_request.user)).count()
    return statistics.median(samples), f"{matched:,} rows match"


def time_old_regex() -> list[tuple[int, float]]:
    """Seconds per row of the regex the filter used to send, for 6-9 stars on a 30-character name."""
    name = "team-a/service-00042-xxxxxxxx"
    figures = []
    for stars in range(6, 10):
        regex = "^team\\-a/" + ".*" * stars + "z$"  # what glob_to_regex made of team-a/***…z
        started = time.perf_counter()
        re.search(regex, name)
        figures.append((stars, time.perf_counter() - started))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-patterns-"))
    try:
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{scratch / 'db.sqlite3'}")
        os.environ.update(
            ALLOWED_HOSTS="testserver",
            LOG_LEVEL="WARNING",
            SECRET_KEY=secrets.token_urlsafe(40),
            DJANGO_SETTINGS_MODULE="registry_browser.settings",
        )
        import django
        from django.conf import settings
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        settings.DEBUG = False
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client

        seed(args.rows)
        client = Client()
        client.force_login(User.objects.get(username="viewer"))
        print(f"{connection.vendor}, {args.rows:,} audit rows, median of {args.iterations} page loads as a viewer")
        baseline = None
        for label, pattern in PATTERNS.items():
            seconds, matched = time_page(client, pattern, args.iterations)
            baseline = baseline or seconds
            print(f"  {label:36} {pattern:24} {seconds * 1000:8.1f} ms  {seconds / baseline:5.1f}x  ({matched})")
        print("Before (Python re per row, the old filter's regex on a 30-character name):")
        figures = time_old_regex()
        for stars, seconds in figures:
            print(f"  {stars:2} stars: {seconds * 1000:9.1f} ms per row")
        (first_stars, first), (stars, seconds) = figures[0], figures[-1]
        growth = (seconds / first) ** (1 / (stars - first_stars))
        extrapolated = seconds * growth ** (12 - stars)
        print(f"  each extra star x{growth:.1f}; 12 stars ~{extrapolated:.1f} s per row, {extrapolated * args.rows / 2 / 3600:.0f} h for the team-a rows")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Simulated dashboard users for bench/load.py (locust, headless).

LOAD_SCENARIO=pages mixes catalog, search, repository and tag pages, full pages and the htmx
fragments the UI asks for; LOAD_SCENARIO=healthz only asks /healthz, the baseline.
LOAD_REPOS and LOAD_TAGS describe what bench/sync.py seeded (see its seed_repository).
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, constant, tag, task

REPOS = int(os.environ.get("LOAD_REPOS", "2000"))
TAGS = int(os.environ.get("LOAD_TAGS", "5"))
# bench/sync.py's seeding: versions 1.0.0, 1.1.0, ... and the aliases on the newest one.
TAG_NAMES = [f"1.{minor}.0" for minor in range(TAGS - 2)] + ["latest", "stable"]
HTMX = {"HX-Request": "true"}


def repository_name() -> str:
    index = random.randrange(REPOS)
    return f"team-{index % 7}/service-{index:04d}"


class DashboardUser(FastHttpUser):
    # No pause between clicks: each user keeps one request in flight, so the run measures
    # what the server sustains under 50 concurrent requests, not how fast people read.
    wait_time = constant(0)

    @tag("pages")
    @task(3)
    def catalog(self) -> None:
        page = random.randint(1, 20)
        self.client.get(f"/?page={page}", name="/ (catalog)")

    @tag("pages")
    @task(3)
    def search(self) -> None:
        # Typing in the search box: htmx asks for the results fragment only.
        self.client.get(f"/?q=service-{random.randrange(REPOS // 10):03d}", headers=HTMX, name="/?q= (search)")

    @tag("pages")
    @task(3)
    def repository(self) -> None:
        self.client.get(f"/repositories/{repository_name()}/", name="/repositories/<name>/")

    @tag("pages")
    @task(3)
    def tag_page(self) -> None:
        self.client.get(
            f"/repositories/{repository_name()}/-/tags/{random.choice(TAG_NAMES)}/",
            name="/repositories/<name>/-/tags/<tag>/",
        )

    @tag("healthz")
    @task
    def healthz(self) -> None:
        self.client.get("/healthz", name="/healthz")

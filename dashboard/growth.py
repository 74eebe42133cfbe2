"""How storage grew: the daily samples `storage.take_snapshot` records, and the days something
was deleted, for the growth chart. Only what the user may see: the registry's and namespaces'
totals need every repository visible (a total would otherwise include hidden bytes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from django.db.models import Count
from django.db.models.functions import TruncDate

from dashboard.access import AnyUser, visible_names
from dashboard.models import AuditEntry, DeletedVersion, Registry, StorageSample
from dashboard.retention import RETENTION_DELETE_TAG, RETENTION_DELETE_VERSION

SERIES_SHOWN = 5
Scope = StorageSample.Scope


@dataclass
class Series:
    name: str
    scope: str
    points: list[tuple[date, int]] = field(default_factory=list)


@dataclass
class Marker:
    day: date
    kind: str  # "delete" or "retention"
    count: int

    @property
    def label(self) -> str:
        if self.kind == "retention":
            return f"retention run: {self.count} deletion{'s' if self.count != 1 else ''}"
        return f"{self.count} version{'s' if self.count != 1 else ''} deleted"


@dataclass
class Growth:
    series: list[Series]
    markers: list[Marker]
    complete: bool  # the user sees every repository: registry and namespace totals are shown


def growth(user: AnyUser, registry: Registry) -> Growth:
    visible = visible_names(user, "name")
    samples = StorageSample.objects.filter(registry=registry)
    # Repositories the catalog lists: one removed since its last sample is named nowhere.
    repositories = samples.filter(scope=Scope.REPOSITORY, name__in=registry.repositories.values("name"))
    series: list[Series] = []
    if visible is None:
        total = Series("Registry total", Scope.REGISTRY)
        total.points = list(samples.filter(scope=Scope.REGISTRY).order_by("day").values_list("day", "bytes"))
        series.append(total)
        series += _top(samples.filter(scope=Scope.NAMESPACE), Scope.NAMESPACE)
        series += _top(repositories, Scope.REPOSITORY)
    else:
        series += _top(repositories.filter(visible), Scope.REPOSITORY)
    return Growth(series, _markers(user), visible is None)


def _top(samples, scope: str) -> list[Series]:
    """The SERIES_SHOWN largest of `samples` on their latest day, with all their points."""
    latest = samples.order_by("-day").values("day")[:1]
    top = samples.filter(day=latest).order_by("-bytes", "name").values("name")[:SERIES_SHOWN]
    found: dict[str, Series] = {}
    for name, day, size in samples.filter(name__in=top).order_by("day").values_list("name", "day", "bytes"):
        found.setdefault(name, Series(name or "(no namespace)", scope)).points.append((day, size))
    return sorted(found.values(), key=lambda each: (-each.points[-1][1], each.name))


def _markers(user: AnyUser) -> list[Marker]:
    deletes = DeletedVersion.objects.all()
    runs = AuditEntry.objects.filter(
        action__in=[RETENTION_DELETE_TAG, RETENTION_DELETE_VERSION], outcome=AuditEntry.Outcome.OK
    )
    visible = visible_names(user, "repository")
    if visible is not None:
        deletes, runs = deletes.filter(visible), runs.filter(visible)
    markers = [
        Marker(row["day"], kind, row["count"])
        for kind, rows, column in (("delete", deletes, "deleted_at"), ("retention", runs, "created_at"))
        for row in rows.order_by().annotate(day=TruncDate(column)).values("day").annotate(count=Count("id"))
    ]
    return sorted(markers, key=lambda marker: (marker.day, marker.kind))

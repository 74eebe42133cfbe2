"""Where the bytes are: storage figures as SQL aggregates over `ManifestBlob` rows.

The registry stores each blob once however many manifests and repositories use it, so every
figure counts a blob digest once. Only manifests the registry still has count (a row marked
`missing_since` holds nothing). A repository's blobs are those of all its cached manifests:
tagged ones, the platform images of tagged indexes, and the untagged versions the cache keeps
(pins and recent previous digests).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from dashboard import sql
from dashboard.access import AnyUser, visible_names, visible_repositories
from dashboard.models import Manifest, ManifestBlob, Registry, Repository, StorageSample, Tag

Kind = ManifestBlob.Kind


def blobs_of(digest: str, fields: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """blob digest -> (size, kind) of what one manifest needs stored, from its Manifest field
    values: its own bytes, its config and layers, an index's platform manifests. A digest
    listed twice (a layer repeated) is one blob."""
    blobs = {digest: (len(fields["raw"]), Kind.MANIFEST)}
    if fields["config_digest"]:
        blobs.setdefault(fields["config_digest"], (fields["config_size"], Kind.CONFIG))
    for layer in fields["layers"]:
        if "digest" in layer:
            blobs.setdefault(layer["digest"], (layer.get("size") or 0, Kind.LAYER))
    for child in fields["children"]:
        blobs.setdefault(child["digest"], (child.get("size") or 0, Kind.CHILD))
    return blobs


def blob_rows(
    manifest_id: int, digest: str, fields: Mapping[str, Any], model: type[ManifestBlob] = ManifestBlob
) -> list[ManifestBlob]:
    """Unsaved ManifestBlob rows of one manifest (`model`: the historical model in a migration)."""
    return [
        model(manifest_id=manifest_id, digest=blob, size=size, kind=kind)
        for blob, (size, kind) in blobs_of(digest, fields).items()
    ]


# Aggregates ---------------------------------------------------------------------------------


@dataclass
class Usage:
    """Bytes of one repository or namespace; `exclusive`: blobs nothing outside it uses,
    `untagged`: blobs only its untagged versions use."""

    name: str
    referenced: int = 0
    exclusive: int = 0
    untagged: int = 0
    tags: int = 0

    @property
    def shared(self) -> int:
        return self.referenced - self.exclusive


@dataclass
class SharedBlob:
    digest: str
    size: int
    repositories: list[str] = field(default_factory=list)


@dataclass
class Overview:
    """What /storage/ and the API show: only repositories `visible` lets through count, in the
    total too. `complete`: the user sees every repository, so the total is the registry's."""

    total: int
    repositories: list[Usage]
    namespaces: list[Usage]
    shared_blobs: list[SharedBlob]
    complete: bool

    def usage_by_name(self) -> dict[str, Usage]:
        return {usage.name: usage for usage in self.repositories}


SHARED_BLOBS_SHOWN = 20
# Figures computed lately, by state and visibility, in this process (kept as objects: unpickling
# 2,000 repositories' figures from Django's cache cost more than the page's other work). A
# change of the cache rows gives a new state, so an entry is never stale, only unused.
COMPUTED_KEPT = 16
_computed: dict[tuple, Overview] = {}
_computed_lock = threading.Lock()


def _uses(registry_id: int) -> tuple[str, list]:
    """CTEs `present` (the registry's manifests the registry still has, and whether a tag
    reaches each: directly, or as a platform image of a tagged index), `uses` (repository_id,
    digest, size, tagged: one row per blob a repository uses) and `spread` (digest -> how many
    repositories use it)."""
    blob, manifest, tag, repository = (sql.table(model) for model in (ManifestBlob, Manifest, Tag, Repository))
    text = (
        f"WITH present AS (SELECT m.id, m.repository_id,"
        f" CASE WHEN EXISTS (SELECT 1 FROM {tag} t WHERE t.manifest_id = m.id)"
        f" OR EXISTS (SELECT 1 FROM {blob} c JOIN {manifest} i ON i.id = c.manifest_id"
        f" JOIN {tag} t ON t.manifest_id = i.id"
        f" WHERE c.digest = m.digest AND c.kind = %s AND i.repository_id = m.repository_id)"
        f" THEN 1 ELSE 0 END AS tagged"
        f" FROM {manifest} m JOIN {repository} r ON r.id = m.repository_id"
        f" WHERE r.registry_id = %s AND m.missing_since IS NULL),"
        f" uses AS (SELECT p.repository_id, b.digest, MAX(b.size) AS size, MAX(p.tagged) AS tagged"
        f" FROM {blob} b JOIN present p ON p.id = b.manifest_id GROUP BY p.repository_id, b.digest),"
        f" spread AS (SELECT digest, COUNT(*) AS repositories FROM uses GROUP BY digest)"
    )
    return text, [Kind.CHILD, registry_id]


def _listed(registry: Registry) -> tuple[str, list]:
    """SQL selecting the ids of every repository the registry's catalog lists."""
    return f"SELECT id FROM {sql.table(Repository)} WHERE registry_id = %s AND removed_at IS NULL", [registry.pk]


def _visible(user: AnyUser, registry: Registry) -> tuple[str, list]:
    """SQL selecting the ids of the repositories the user may see, and its parameters."""
    if visible_names(user, "name") is None:  # written out: cheaper than building the ORM query
        return _listed(registry)
    try:
        query, params = visible_repositories(user, registry).values("id").query.sql_with_params()
    except EmptyResultSet:  # the user may see no repository at all
        return f"SELECT id FROM {sql.table(Repository)} WHERE 1 = 0", []
    return query, list(params)


def overview(user: AnyUser, registry: Registry) -> Overview:
    """Every storage figure of the registry the user may see: four queries, or none while the
    cached rows are as they were when the same figures were computed last (see `_state`)."""
    visible, params = _visible(user, registry)
    key = (registry.pk, _state(), visible, tuple(params))
    found = _computed.get(key)
    if found is None:
        found = _overview(registry, visible, params, complete=visible_names(user, "name") is None)
        with _computed_lock:  # request threads
            while len(_computed) >= COMPUTED_KEPT:
                del _computed[next(iter(_computed))]
            _computed[key] = found
    return found


def _state() -> tuple:
    """What the figures depend on, in one query (timed in bench/README.md):
    a manifest or blob row added or removed, a tag added, moved or removed, a manifest marked
    missing or found, a repository listed or removed from the catalog changes it. Sizes and
    names are in it so that a SQLite row id used again after a delete does not bring back an
    old state."""
    blob, manifest, tag, repository = (sql.table(model) for model in (ManifestBlob, Manifest, Tag, Repository))
    [state] = sql.select(
        f"SELECT (SELECT COUNT(*) FROM {blob}), (SELECT MAX(id) FROM {blob}), (SELECT SUM(size) FROM {blob}),"
        f" (SELECT COUNT(*) FROM {tag}), (SELECT MAX(id) FROM {tag}),"
        # A moved tag changes its manifest_id; weighting by the tag's id catches two tags swapping.
        # (`%%`: the drivers read `%` as a placeholder.)
        f" (SELECT SUM((id * manifest_id) %% 1000000007) FROM {tag}),"
        f" (SELECT SUM(id) FROM {manifest} WHERE missing_since IS NOT NULL),"
        f" (SELECT COUNT(*) FROM {repository} WHERE removed_at IS NULL),"
        f" (SELECT SUM(id) FROM {repository} WHERE removed_at IS NULL),"
        f" (SELECT MIN(name) FROM {repository}), (SELECT MAX(name) FROM {repository})",
        [],
    )
    return tuple(str(value) for value in state)


def _overview(registry: Registry, visible: str, visible_params: list, *, complete: bool) -> Overview:
    uses, uses_params = _uses(registry.pk)
    repository = sql.table(Repository)
    rows = _repository_rows(registry, visible, visible_params)
    repositories = []
    tags_in: dict[str, int] = {}
    for _, name, namespace, tags, referenced, exclusive, untagged in rows:
        repositories.append(Usage(name, int(referenced), int(exclusive), int(untagged), tags))
        tags_in[namespace] = tags_in.get(namespace, 0) + tags
    namespace_rows = sql.select(
        f"{uses}, in_namespace AS (SELECT DISTINCT r.namespace, u.digest FROM uses u"
        f" JOIN {repository} r ON r.id = u.repository_id),"
        " namespace_spread AS (SELECT digest, COUNT(*) AS namespaces FROM in_namespace GROUP BY digest),"
        " namespace_uses AS (SELECT r.namespace, u.digest, MAX(u.size) AS size, MAX(u.tagged) AS tagged FROM uses u"
        f" JOIN {repository} r ON r.id = u.repository_id WHERE u.repository_id IN ({visible})"
        " GROUP BY r.namespace, u.digest)"
        " SELECT n.namespace, SUM(n.size), SUM(CASE WHEN s.namespaces = 1 THEN n.size ELSE 0 END),"
        " SUM(CASE WHEN n.tagged = 0 THEN n.size ELSE 0 END)"
        " FROM namespace_uses n JOIN namespace_spread s ON s.digest = n.digest GROUP BY n.namespace",
        uses_params + visible_params,
    )
    namespaces = {name: Usage(name, tags=tags) for name, tags in tags_in.items()}
    for name, referenced, exclusive, untagged in namespace_rows:
        namespaces[name] = Usage(name, int(referenced), int(exclusive), int(untagged), tags_in.get(name, 0))
    [(total,)] = sql.select(
        f"{uses} SELECT COALESCE(SUM(size), 0) FROM (SELECT digest, MAX(size) AS size FROM uses"
        f" WHERE repository_id IN ({visible}) GROUP BY digest) blobs",
        uses_params + visible_params,
    )
    return Overview(
        total=int(total),
        repositories=sorted(repositories, key=lambda usage: (-usage.exclusive, usage.name)),
        namespaces=sorted(namespaces.values(), key=lambda usage: (-usage.exclusive, usage.name)),
        shared_blobs=_shared_blobs(uses, uses_params, visible, visible_params),
        complete=complete,
    )


def _repository_rows(registry: Registry, ids: str, ids_params: list) -> list[tuple]:
    """(id, name, namespace, tag_count, referenced, exclusive, untagged) of the repositories
    whose ids the SQL `ids` selects."""
    uses, uses_params = _uses(registry.pk)
    return sql.select(
        f"{uses} SELECT r.id, r.name, r.namespace, r.tag_count, COALESCE(SUM(u.size), 0) AS referenced,"
        " COALESCE(SUM(CASE WHEN s.repositories = 1 THEN u.size ELSE 0 END), 0) AS exclusive,"
        " COALESCE(SUM(CASE WHEN u.tagged = 0 THEN u.size ELSE 0 END), 0) AS untagged"
        f" FROM {sql.table(Repository)} r LEFT JOIN uses u ON u.repository_id = r.id"
        f" LEFT JOIN spread s ON s.digest = u.digest WHERE r.id IN ({ids})"
        " GROUP BY r.id, r.name, r.namespace, r.tag_count",
        uses_params + ids_params,
    )


def by_exclusive(usage: Mapping[str, Usage], repositories: QuerySet[Repository]) -> list[int]:
    """Ids of `repositories`, most exclusive bytes first (`usage`: the overview's figures by
    repository name): the catalog's sort."""
    rows = repositories.order_by().values_list("id", "name")

    def exclusive(name: str) -> int:
        found = usage.get(name)
        return found.exclusive if found else 0

    return [pk for pk, name in sorted(rows, key=lambda row: (-exclusive(row[1]), row[1]))]


def _shared_blobs(uses: str, uses_params: list, visible: str, visible_params: list) -> list[SharedBlob]:
    """The largest blobs two or more visible repositories use, with those repositories."""
    rows = sql.select(
        f"{uses}, top AS (SELECT digest, MAX(size) AS size FROM uses WHERE repository_id IN ({visible})"
        f" GROUP BY digest HAVING COUNT(*) > 1 ORDER BY MAX(size) DESC, digest LIMIT {SHARED_BLOBS_SHOWN})"
        f" SELECT top.digest, top.size, r.name FROM top JOIN uses u ON u.digest = top.digest"
        f" JOIN {sql.table(Repository)} r ON r.id = u.repository_id WHERE r.id IN ({visible})"
        " ORDER BY top.size DESC, top.digest, r.name",
        uses_params + visible_params + visible_params,
    )
    blobs: dict[str, SharedBlob] = {}
    for digest, size, name in rows:
        blobs.setdefault(digest, SharedBlob(digest, int(size))).repositories.append(name)
    return list(blobs.values())


@dataclass
class RepositoryShare:
    """The repository page's head: its exclusive and shared bytes, and how many other
    repositories the user may see use some of its blobs."""

    referenced: int
    exclusive: int
    sharing_repositories: int

    @property
    def shared(self) -> int:
        return self.referenced - self.exclusive


def repository_share(user: AnyUser, repository: Repository) -> RepositoryShare:
    blob, manifest = sql.table(ManifestBlob), sql.table(Manifest)
    visible, visible_params = _visible(user, repository.registry)
    [(referenced, exclusive, sharing)] = sql.select(
        f"WITH mine AS (SELECT b.digest, MAX(b.size) AS size FROM {blob} b JOIN {manifest} m ON m.id = b.manifest_id"
        " WHERE m.repository_id = %s AND m.missing_since IS NULL GROUP BY b.digest),"
        f" others AS (SELECT DISTINCT m.repository_id, b.digest FROM {blob} b JOIN mine ON mine.digest = b.digest"
        f" JOIN {manifest} m ON m.id = b.manifest_id JOIN {sql.table(Repository)} r ON r.id = m.repository_id"
        " WHERE m.repository_id <> %s AND m.missing_since IS NULL AND r.registry_id = %s)"
        " SELECT (SELECT COALESCE(SUM(size), 0) FROM mine),"
        " (SELECT COALESCE(SUM(size), 0) FROM mine WHERE digest NOT IN (SELECT digest FROM others)),"
        f" (SELECT COUNT(DISTINCT repository_id) FROM others WHERE repository_id IN ({visible}))",
        [repository.pk, repository.pk, repository.registry_id, *visible_params],
    )
    return RepositoryShare(int(referenced), int(exclusive), sharing)


def freed_blobs(registry: Registry, manifest_ids: Collection[int]) -> dict[int, dict[str, int]]:
    """manifest id -> the blobs (digest -> size) of it that garbage collection frees once the
    manifests `manifest_ids` are deleted: those no other present manifest of the registry uses."""
    if not manifest_ids:
        return {}
    blob, manifest = sql.table(ManifestBlob), sql.table(Manifest)
    ids = list(manifest_ids)
    rows = sql.select(
        f"SELECT b.manifest_id, b.digest, b.size FROM {blob} b WHERE b.manifest_id IN ({sql.placeholders(ids)})"
        f" AND NOT EXISTS (SELECT 1 FROM {blob} o JOIN {manifest} m ON m.id = o.manifest_id"
        f" JOIN {sql.table(Repository)} r ON r.id = m.repository_id"
        f" WHERE o.digest = b.digest AND m.missing_since IS NULL AND r.registry_id = %s"
        f" AND o.manifest_id NOT IN ({sql.placeholders(ids)}))",
        [*ids, registry.pk, *ids],
    )
    freed: dict[int, dict[str, int]] = {}
    for manifest_id, digest, size in rows:
        freed.setdefault(manifest_id, {})[digest] = size
    return freed


# Growth -------------------------------------------------------------------------------------

SAMPLES_KEPT_DAYS = 400
Scope = StorageSample.Scope


def take_snapshot(registry: Registry, day: date | None = None) -> bool:
    """Record the day's bytes (today's by default): the registry's total, each namespace's and
    each repository's referenced bytes, over every repository. Does nothing when the day has
    its snapshot already; forgets samples older than SAMPLES_KEPT_DAYS. Returns whether it
    took one."""
    day = day or timezone.localdate()
    samples = StorageSample.objects.filter(registry=registry)
    with transaction.atomic():
        if samples.filter(day=day, scope=Scope.REGISTRY).exists():
            return False
        everything = _overview(registry, *_listed(registry), complete=True)
        rows = [StorageSample(registry=registry, day=day, scope=Scope.REGISTRY, name="", bytes=everything.total)]
        rows += [
            StorageSample(registry=registry, day=day, scope=scope, name=usage.name, bytes=usage.referenced)
            for scope, usages in ((Scope.NAMESPACE, everything.namespaces), (Scope.REPOSITORY, everything.repositories))
            for usage in usages
        ]
        # A snapshot taken at the same moment elsewhere (cron and the sync) wins; this one is dropped.
        StorageSample.objects.bulk_create(rows, ignore_conflicts=True)
        samples.filter(day__lt=day - timedelta(days=SAMPLES_KEPT_DAYS)).delete()
    return True

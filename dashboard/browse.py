"""What the browse pages show, read from the cache with a bounded number of queries.

Views validate the query string, call one of these, and render. Nothing here calls the
registry: a refresh runs as a sync task, and `refresh` only describes how it ended.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from django.db.models import Count, Q, QuerySet, Window
from django.urls import reverse
from django_tasks import TaskResult, TaskResultStatus

from dashboard import attachments, sql, tasks
from dashboard.access import AnyUser, role_on
from dashboard.forms import CatalogQuery, TagQuery
from dashboard.models import Manifest, Pin, Registry, Repository, Tag, TagHistory, VersionSecurity
from dashboard.registry import (
    HistoryStep,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    InvalidResponse,
    align_history,
    parse_image_config,
    parse_manifest,
)
from dashboard.registry import Manifest as ParsedManifest

# How many other tags of the same digest a tag row names before "+N more".
SIBLINGS_SHOWN = 3
# cosign's convention: the signature of sha256:<hex> is stored under the tag sha256-<hex>.sig.
_COSIGN_TAG = re.compile(r"sha256-(?P<hex>[a-f0-9]{64})\.(?P<suffix>sig|att|sbom)")
COSIGN_KINDS = {"sig": "signature", "att": "attestation", "sbom": "SBOM"}
# OCI annotations that hold web addresses; shown as links only when they really are http(s).
LINK_LABELS = frozenset(
    {
        "org.opencontainers.image.source",
        "org.opencontainers.image.url",
        "org.opencontainers.image.documentation",
        "org.opencontainers.image.revision",
    }
)


# Catalog ------------------------------------------------------------------------------------


def filter_repositories(repositories: QuerySet[Repository], query: CatalogQuery) -> QuerySet[Repository]:
    """The visible repositories matching the search and namespace, in the requested order."""
    data = query.cleaned_data
    if data["q"]:
        repositories = repositories.filter(name__icontains=data["q"])
    if data["namespace"]:
        namespace = data["namespace"]
        repositories = repositories.filter(Q(namespace=namespace) | Q(namespace__startswith=namespace + "/"))
    return repositories.order_by(*query.ordering())


def namespaces(repositories: QuerySet[Repository]) -> list[str]:
    return list(repositories.exclude(namespace="").order_by("namespace").values_list("namespace", flat=True).distinct())


# Repository ---------------------------------------------------------------------------------


@dataclass
class CosignTag:
    kind: str
    subject_digest: str
    suffix: str

    @property
    def short_name(self) -> str:
        """`sha256-3f2a1c9d0b7e….sig`: the full name is 75 characters of mostly digest."""
        return f"sha256-{self.subject_digest[7:19]}….{self.suffix}"


def cosign_tag(tag_name: str) -> CosignTag | None:
    """`sha256-<hex>.sig` -> a signature of sha256:<hex>; None for ordinary tags."""
    match = _COSIGN_TAG.fullmatch(tag_name)
    if match is None:
        return None
    return CosignTag(COSIGN_KINDS[match["suffix"]], f"sha256:{match['hex']}", match["suffix"])


def platforms_of(manifest: Manifest | ListedTag) -> list[str]:
    if manifest.kind == Manifest.Kind.INDEX:
        return [child["platform"] for child in manifest.children if child.get("platform")]
    return [manifest.platform] if manifest.platform else []


# Stands for the tag or digest in URLs reversed once per page (see RowLinks).
_PLACEHOLDER = "__reference__"


def _filled(pattern: str, reference: str) -> str:
    # The last occurrence: a repository name may contain the placeholder text itself.
    before, _, after = pattern.rpartition(_PLACEHOLDER)
    return f"{before}{reference}{after}"


def repository_links() -> Callable[[str], str]:
    """Repository name -> URL of its page, reversed once for a whole catalog page."""
    pattern = reverse("dashboard:repository", args=[_PLACEHOLDER])
    return lambda name: _filled(pattern, name)


class RowLinks:
    """A repository's tag, manifest and delete URLs, each reversed once per page (when first
    needed): reverse() for every link of every row cost more than the rest of the table."""

    def __init__(self, repository: Repository) -> None:
        self._repository_name = repository.name
        self._patterns: dict[str, str] = {}

    def _url(self, view: str, reference: str) -> str:
        pattern = self._patterns.get(view)
        if pattern is None:
            pattern = self._patterns[view] = reverse(f"dashboard:{view}", args=[self._repository_name, _PLACEHOLDER])
        return _filled(pattern, reference)

    def tag(self, name: str) -> str:
        return self._url("tag", name)

    def manifest(self, digest: str) -> str:
        return self._url("manifest", digest)

    def delete(self, name: str) -> str:
        return self._url("delete-tag", name)


@dataclass(frozen=True, slots=True)
class ListedTag:
    """A tag of a list with the columns of its manifest the list shows: plain values, because
    building a Tag and a Manifest instance per row cost more than the query that read them."""

    name: str
    created: datetime | None
    manifest_id: int
    digest: str
    kind: str
    media_type: str
    artifact_type: str
    size: int
    platform: str
    children: list

    @property
    def platforms(self) -> list[str]:
        return platforms_of(self)


# Constructor arguments of ListedTag, in order, as Tag lookups.
_LISTED_COLUMNS = (
    "name",
    "created",
    "manifest_id",
    "manifest__digest",
    "manifest__kind",
    "manifest__media_type",
    "manifest__artifact_type",
    "manifest__size",
    "manifest__platform",
    "manifest__children",
)


@dataclass
class TagRow:
    tag: ListedTag
    url: str
    manifest_url: str
    # The delete confirmation's URL; the table shows it only to those who may delete.
    delete_url: str
    cosign: CosignTag | None
    # (name, url) of the first few other tags on the same digest.
    siblings: list[tuple[str, str]] = field(default_factory=list)
    more_siblings: int = 0
    pinned: bool = False
    # First of a run of rows on one digest: the table draws such runs as a group.
    group_start: bool = True
    security: VersionSecurity | None = None

    @property
    def label(self) -> str:
        return self.cosign.short_name if self.cosign else self.tag.name


def filter_tags(repository: Repository, query: TagQuery) -> QuerySet[Tag]:
    """The repository's tags matching the search, in the requested order. Without a join, so
    that the paginator's count stays an index count (tag_rows reads the manifests' columns)."""
    tags = Tag.objects.filter(repository=repository)
    if query.cleaned_data["q"]:
        tags = tags.filter(name__icontains=query.cleaned_data["q"])
    if not query.cleaned_data["attached"]:
        tags = tags.exclude(ATTACHED_TAGS)
    return tags.order_by(*query.ordering())


# cosign's sha256-<hex>.sig/.att/.sbom and the referrers tag schema's sha256-<hex>; the prefix
# keeps the lookup on the (repository, name) index.
ATTACHED_TAGS = Q(name__startswith="sha256-", name__regex=r"^sha256-[a-f0-9]{64}(\.(sig|att|sbom))?$")


def attached_tag_count(repository: Repository) -> int:
    return Tag.objects.filter(ATTACHED_TAGS, repository=repository).count()


def _first_names_per_manifest(manifest_ids: set[int]) -> list[tuple[int, str, int]]:
    """(manifest id, tag name, tags on that manifest) for the first SIBLINGS_SHOWN + 1 names of
    each manifest by version. Counted in the database, so a digest carrying thousands of tags
    costs no more rows than one carrying four. In SQL: through the ORM this window filter (a
    QUALIFY emulated with three nested subqueries) took longer to build than to run."""
    if not manifest_ids:
        return []
    return sql.select(
        "SELECT manifest_id, name, total FROM ("
        " SELECT manifest_id, name, COUNT(*) OVER (PARTITION BY manifest_id) AS total,"
        " ROW_NUMBER() OVER (PARTITION BY manifest_id ORDER BY version_key, name) AS place"
        f" FROM {sql.table(Tag)} WHERE manifest_id IN ({sql.placeholders(manifest_ids)})"
        ") ranked WHERE place <= %s",
        [*manifest_ids, SIBLINGS_SHOWN + 1],
    )


def _pinned(repository: Repository, digests: set[str]) -> set[str]:
    """Which of `digests` are pinned in the repository."""
    if not digests:
        return set()
    rows = sql.select(
        f"SELECT digest FROM {sql.table(Pin)} WHERE repository_id = %s AND digest IN ({sql.placeholders(digests)})",
        [repository.pk, *digests],
    )
    return {digest for (digest,) in rows}


def tag_rows(repository: Repository, page: QuerySet[Tag]) -> list[TagRow]:
    """Rows for one page of filter_tags (a sliced queryset): four queries, whatever the page
    or repository size. The list shows a few columns of each tag and its manifest, never the
    raw bytes or config."""
    links = RowLinks(repository)
    if page.query.low_mark:
        # Past the first page, pick the page's ids from the index alone and join only those:
        # OFFSET over the joined query read the manifest of every tag it skipped.
        page = Tag.objects.filter(pk__in=page.values("pk")).order_by(*page.query.order_by)
    tags = [ListedTag(*values) for values in page.values_list(*_LISTED_COLUMNS)]
    rows = [
        TagRow(tag, links.tag(tag.name), links.manifest(tag.digest), links.delete(tag.name), cosign_tag(tag.name))
        for tag in tags
    ]
    names: dict[int, list[str]] = defaultdict(list)
    totals: dict[int, int] = {}
    for manifest_id, name, total in _first_names_per_manifest({tag.manifest_id for tag in tags}):
        names[manifest_id].append(name)
        totals[manifest_id] = total
    pinned = _pinned(repository, {tag.digest for tag in tags})
    security = attachments.security_by_digest(repository, {tag.digest for tag in tags})
    for row in rows:
        row.security = security.get(row.tag.digest)
        others = [name for name in names[row.tag.manifest_id] if name != row.tag.name]
        row.siblings = [(name, links.tag(name)) for name in others[:SIBLINGS_SHOWN]]
        row.more_siblings = totals.get(row.tag.manifest_id, 1) - 1 - len(row.siblings)
        row.pinned = row.tag.digest in pinned
    for previous, row in zip(rows, rows[1:]):
        row.group_start = row.tag.manifest_id != previous.tag.manifest_id
    return rows


# Tag and manifest ---------------------------------------------------------------------------


@dataclass
class Label:
    name: str
    value: str
    url: str | None


def is_web_url(value: str) -> bool:
    parts = urlsplit(value.strip())
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def labels_of(config: ImageConfig) -> list[Label]:
    return [
        Label(name, value, value.strip() if name in LINK_LABELS and is_web_url(value) else None)
        for name, value in sorted(config.labels.items())
    ]


def pretty_json(raw: bytes | memoryview | None) -> str:
    """Indented JSON for reading; undecodable bytes are shown as they are."""
    if raw is None:
        return ""
    data = bytes(raw)
    try:
        return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        return data.decode("utf-8", errors="replace")


@dataclass
class ChildRow:
    digest: str
    platform: str
    size: int
    media_type: str
    cached: Manifest | None


@dataclass
class ManifestDetails:
    """Everything the tag and manifest pages show about one digest, parsed from its raw bytes."""

    manifest: Manifest
    parsed: ParsedManifest | None
    config: ImageConfig | None
    steps: list[HistoryStep]
    labels: list[Label]
    children: list[ChildRow]
    manifest_json: str
    config_json: str
    tags: list[tuple[str, str]]  # (name, url) of the first few tags on the digest
    tag_count: int
    referrers: list[Tag]
    artifacts: list[Manifest]
    pinned: bool
    parse_error: str = ""

    @property
    def is_image(self) -> bool:
        return isinstance(self.parsed, ImageManifest) and self.manifest.kind == Manifest.Kind.IMAGE

    @property
    def more_tags(self) -> int:
        return self.tag_count - len(self.tags)

    @property
    def platforms(self) -> list[str]:
        return platforms_of(self.manifest)

    @property
    def environment(self) -> list[tuple[str, str]]:
        """`KEY=value` entries as (KEY, value)."""
        if self.config is None:
            return []
        return [(name, value) for name, _, value in (entry.partition("=") for entry in self.config.env)]

    @property
    def entrypoint(self) -> str:
        return shlex.join(self.config.entrypoint) if self.config else ""

    @property
    def cmd(self) -> str:
        return shlex.join(self.config.cmd) if self.config else ""


def describe_manifest(repository: Repository, manifest: Manifest, *, tags_shown: int = 20) -> ManifestDetails:
    """Parse the cached bytes and gather the rows around them (tags, children, signatures)."""
    parse_error = ""
    try:
        parsed = parse_manifest(bytes(manifest.raw), manifest.media_type)
    except InvalidResponse as error:
        parsed, parse_error = None, str(error)
    config = None
    if manifest.raw_config and isinstance(parsed, ImageManifest) and manifest.kind == Manifest.Kind.IMAGE:
        try:
            config = parse_image_config(bytes(manifest.raw_config))
        except InvalidResponse as error:
            parse_error = str(error)
    layers = parsed.layers if isinstance(parsed, ImageManifest) else ()
    steps = align_history(layers, config.history) if config else [HistoryStep(None, layer) for layer in layers]

    # The first names and how many there are in all, in one query.
    tags = list(
        Tag.objects.filter(manifest=manifest)
        .annotate(total=Window(Count("id")))
        .order_by("version_key")
        .values_list("name", "total")[:tags_shown]
    )
    hex_digest = manifest.digest.partition(":")[2]
    links = RowLinks(repository)
    return ManifestDetails(
        manifest=manifest,
        parsed=parsed,
        config=config,
        steps=steps,
        labels=labels_of(config) if config else [],
        children=_children(repository, parsed),
        manifest_json=pretty_json(manifest.raw),
        config_json=pretty_json(manifest.raw_config),
        tags=[(name, links.tag(name)) for name, _ in tags],
        tag_count=tags[0][1] if tags else 0,
        # cosign's tags for this digest, by name: an index lookup, where a prefix search read
        # every tag of the repository.
        referrers=list(
            Tag.objects.filter(repository=repository, name__in=[f"sha256-{hex_digest}.{kind}" for kind in COSIGN_KINDS])
            .select_related("manifest")
            .only("name", "manifest__digest", "manifest__artifact_type")
            .order_by("name")
        ),
        artifacts=list(
            Manifest.objects.filter(repository=repository, subject_digest=manifest.digest)
            .only("digest", "artifact_type", "media_type")
            .order_by("digest")
        ),
        pinned=Pin.objects.filter(repository=repository, digest=manifest.digest).exists(),
        parse_error=parse_error,
    )


def _children(repository: Repository, parsed: ParsedManifest | None) -> list[ChildRow]:
    if not isinstance(parsed, ImageIndex):
        return []
    cached = {
        child.digest: child
        for child in Manifest.objects.filter(
            repository=repository, digest__in=[d.digest for d in parsed.manifests]
        ).only("digest", "created", "size", "kind")
    }
    return [
        ChildRow(
            digest=descriptor.digest,
            platform=str(descriptor.platform) if descriptor.platform else "",
            size=cached[descriptor.digest].size if descriptor.digest in cached else descriptor.size,
            media_type=descriptor.media_type,
            cached=cached.get(descriptor.digest),
        )
        for descriptor in parsed.manifests
    ]


@dataclass
class HistoryRow:
    period: TagHistory
    cached: bool
    url: str  # of the digest's page


def tag_history(repository: Repository, tag_name: str, limit: int = 50) -> list[HistoryRow]:
    """Where the tag pointed, newest first, marking digests the cache still holds (linkable)."""
    periods = list(
        TagHistory.objects.filter(repository=repository, tag=tag_name).select_related("user").order_by("-since")[:limit]
    )
    cached = set(
        Manifest.objects.filter(repository=repository, digest__in={p.digest for p in periods}).values_list(
            "digest", flat=True
        )
    )
    links = RowLinks(repository)
    return [HistoryRow(period, period.digest in cached, links.manifest(period.digest)) for period in periods]


def pull_reference(host: str, repository: Repository, reference: str) -> str:
    """`host/name:tag` or `host/name@sha256:…`."""
    separator = "@" if ":" in reference else ":"
    return f"{host}/{repository.name}{separator}{reference}"


# Refresh ------------------------------------------------------------------------------------


def refresh(registry: Registry, result: TaskResult, user: AnyUser) -> str | None:
    """How a finished refresh (a sync task) ended: None when it succeeded, else a sentence for
    the page. The sync keeps the cached rows when the registry fails, so the page can still
    render them."""
    if result.status != TaskResultStatus.SUCCESSFUL:
        return f"Could not refresh from {registry.url}: {tasks.failure(result)}."
    # Only the repositories this user may see, named or counted: the others are 404 for them
    # everywhere else.
    visible = [name for name in sorted(result.return_value["failed"]) if role_on(user, name) is not None]
    if not visible:
        return None
    names = ", ".join(visible[:3]) + (", …" if len(visible) > 3 else "")
    return f"{len(visible)} of the registry's repositories could not be read ({names})."

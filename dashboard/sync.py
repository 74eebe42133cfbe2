"""Sync: read a registry through the client and write what it holds into the cache models.

Every entry point works in two steps per repository. First all registry reads (tag list,
one HEAD per tag, manifests and configs only for digests the cache does not hold yet), with no
database access, so they can run on a thread pool. Then one transaction that locks the
repository row, compares with the cached rows and writes the differences in bulk. A read that
fails leaves every cached row as it was and records the error on the repository.

Manifests are content addressed: a digest cached for another repository of the same registry
is copied from that row instead of fetched again.

`last_pushed_at` of a repository is the newest `created` among its tags (when the newest image
was built), not when a tag last moved: the registry does not say when a push happened, and the
first sync would otherwise date every tag to itself.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, F, Max, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from dashboard import attachments, storage
from dashboard.models import Manifest, ManifestBlob, Pin, Registry, Repository, Tag, TagHistory, VersionSecurity
from dashboard.registry import (
    FetchedManifest,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    InvalidResponse,
    NotFound,
    RegistryClient,
    RegistryError,
    Schema1Manifest,
    Unavailable,
    align_history,
    parse_image_config,
)
from dashboard.registry.mediatypes import TOMBSTONE_ARTIFACT_TYPE
from dashboard.versions import version_sort_key

logger = logging.getLogger(__name__)

Source = TagHistory.Source
ProgressCallback = Callable[[int, int, str], None]  # (repositories done, total, last name)
Mapper = Callable[..., Iterator[Any]]  # builtin map, or a thread pool's map

# Manifest columns that hold the content of a digest; copied as-is between repositories.
CONTENT_FIELDS = (
    "media_type",
    "kind",
    "artifact_type",
    "size",
    "created",
    "platform",
    "children",
    "layers",
    "config_digest",
    "config_size",
    "config",
    "raw",
    "raw_config",
    "subject_digest",
    "fetch_error",
)
OCI_CREATED_ANNOTATION = "org.opencontainers.image.created"
TYPE_MAX_LENGTH = 255
# Repositories read ahead of the one being written; bounds memory to a few repositories' manifests.
READ_AHEAD = 4
# A row another sync deletes between our read and our write (each retry fetches what vanished),
# or a tag another writer changed after our read (read again once, see _NewerRows).
WRITE_ATTEMPTS = 4
# Ended history periods per existing tag whose digests stay cached after losing their last tag,
# so the tag can be pointed back at them. A rollback goes back a release or a few, while CI may
# move `latest` on every commit: counting periods per tag bounds the kept rows by the tags that
# exist, not by everything ever pushed. Older digests stay in the history, shown as not cached.
ROLLBACK_DEPTH = 10


@dataclass
class RepositoryResult:
    name: str
    tags: int = 0
    new_manifests: int = 0
    reused_manifests: int = 0
    removed_tags: int = 0
    changed: bool = False


@dataclass
class SyncSummary:
    repositories: int = 0
    tags: int = 0
    new_manifests: int = 0
    reused_manifests: int = 0
    removed_tags: int = 0
    removed_repositories: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, result: RepositoryResult) -> None:
        self.repositories += 1
        self.tags += result.tags
        self.new_manifests += result.new_manifests
        self.reused_manifests += result.reused_manifests
        self.removed_tags += result.removed_tags

    def __str__(self) -> str:
        requests = ", ".join(f"{kind} {count}" for kind, count in sorted(self.requests.items())) or "none"
        text = (
            f"{self.repositories} repositories, {self.tags} tags, {self.new_manifests} new manifests "
            f"({self.reused_manifests} copied from other repositories), {self.removed_tags} tags removed"
        )
        if self.removed_repositories:
            text += f", {self.removed_repositories} repositories removed"
        if self.failed:
            text += f", {len(self.failed)} failed"
        return f"{text}; requests: {requests}; {self.seconds:.1f} s"


# Reading: registry only, no database ----------------------------------------------------------


@dataclass
class Content:
    """One digest as read from the registry, as the field values of a Manifest row."""

    digest: str
    fields: dict[str, Any]

    @property
    def child_digests(self) -> list[str]:
        return [child["digest"] for child in self.fields["children"]]


@dataclass
class Readout:
    """What the registry said about one repository."""

    name: str
    started_at: datetime  # before the first request: cache rows written later know more
    heads: dict[str, str | None]  # tag -> digest; None when the tag is gone
    complete: bool  # heads covers every tag, so tags missing from it are gone
    fetched: dict[str, Content] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)  # digests the registry answered 404 for
    unsettled: set[str] = field(default_factory=set)  # tags caught mid-delete (tombstones)
    kept_present: dict[str, bool] = field(default_factory=dict)  # untagged kept digests checked
    reread_at: dict[str, datetime] = field(default_factory=dict)  # tags read again later

    def read_at(self, tag: str) -> datetime:
        """When the registry was asked about `tag` (at the latest)."""
        return self.reread_at.get(tag, self.started_at)

    @property
    def shows_repository(self) -> bool:
        """The registry knows the repository: its tag list was read, or a tag was found."""
        return self.complete or any(self.heads.values())

    def add(self, digest: str, content: Content | None) -> None:
        if content is None:
            self.absent.add(digest)
        else:
            self.fetched[digest] = content


def read_repository(
    client: RegistryClient,
    name: str,
    *,
    known: Callable[[set[str]], set[str]],
    kept: Collection[str] = (),
    tags: Iterable[str] | None = None,
    mapper: Mapper = map,
) -> Readout:
    """Read one repository: all its tags (or just `tags`), their digests, the content of every
    digest `known` does not return, and whether the registry still has each digest of `kept`
    that no tag points at (see `kept_digests`). Only the calling thread calls `known`, so it
    may query the database; `mapper` runs the requests, e.g. on a thread pool."""
    started_at = timezone.now()
    complete = tags is None
    names = client.tags(name) if tags is None else list(tags)
    digests = mapper(partial(head_digest, client, name), names)
    readout = Readout(name, started_at, dict(zip(names, digests)), complete)
    wanted = {digest for digest in readout.heads.values() if digest}
    # Index children are only known once their index is read: a second round, rarely a third.
    while wanted:
        missing = sorted(wanted - known(wanted) - readout.fetched.keys() - readout.absent)
        wanted = set()
        for digest, content in zip(missing, mapper(partial(_fetch_content, client, name), missing)):
            readout.add(digest, content)
            if content is not None:
                wanted.update(content.child_digests)
    _settle(readout)
    untagged = sorted(set(kept) - set(readout.heads.values()))
    found = mapper(partial(head_digest, client, name), untagged)
    readout.kept_present = {digest: answer is not None for digest, answer in zip(untagged, found)}
    return readout


def _settle(readout: Readout) -> None:
    """Tags whose digest vanished before its GET are gone; tags on a tombstone (a tag delete in
    progress elsewhere) are left as cached; indexes with 404 children say so."""
    for tag, digest in readout.heads.items():
        if digest in readout.absent:
            readout.heads[tag] = None
        elif digest in readout.fetched and readout.fetched[digest].fields["artifact_type"] == TOMBSTONE_ARTIFACT_TYPE:
            readout.unsettled.add(tag)
    for content in readout.fetched.values():
        lost = [digest for digest in content.child_digests if digest in readout.absent]
        if lost:
            content.fields["fetch_error"] = f"Platform manifests missing from the registry: {', '.join(lost)}"


def head_digest(client: RegistryClient, repository: str, reference: str) -> str | None:
    """The digest a tag points at (or a digest itself); None when the registry has no such thing,
    e.g. a tag deleted since the tag list was read."""
    try:
        return client.head_manifest(repository, reference).digest
    except NotFound:
        return None


def _fetch_content(client: RegistryClient, repository: str, digest: str) -> Content | None:
    """The manifest and (for an image) its config; None when the registry no longer has it."""
    try:
        fetched = client.get_manifest(repository, digest)
    except NotFound:
        return None
    manifest = fetched.manifest
    if isinstance(manifest, ImageManifest):
        return _image_content(client, repository, fetched, manifest)
    fields = _base_fields(fetched, size=len(fetched.raw))
    if isinstance(manifest, ImageIndex):
        fields["children"] = [
            {
                "digest": child.digest,
                "media_type": child.media_type,
                "size": child.size,
                "platform": str(child.platform) if child.platform else "",
            }
            for child in manifest.manifests
        ]
        fields["artifact_type"] = (manifest.artifact_type or "")[:TYPE_MAX_LENGTH]
        fields["subject_digest"] = manifest.subject.digest if manifest.subject else ""
        fields["created"] = _annotated_created(manifest.annotations)
    elif isinstance(manifest, Schema1Manifest) and manifest.architecture:
        fields["platform"] = manifest.architecture
    return Content(digest, fields)


def _base_fields(fetched: FetchedManifest, *, size: int) -> dict[str, Any]:
    return {
        "media_type": fetched.media_type[:TYPE_MAX_LENGTH],
        "kind": fetched.manifest.kind,
        "artifact_type": "",
        "size": size,
        "created": None,
        "platform": "",
        "children": [],
        "layers": [],
        "config_digest": "",
        "config_size": 0,
        "config": {},
        "raw": fetched.raw,
        "raw_config": None,
        "subject_digest": "",
        "fetch_error": "",
    }


def _image_content(
    client: RegistryClient, repository: str, fetched: FetchedManifest, manifest: ImageManifest
) -> Content:
    fields = _base_fields(fetched, size=len(fetched.raw) + manifest.total_size)
    fields.update(
        artifact_type=(manifest.artifact_type or "")[:TYPE_MAX_LENGTH],
        subject_digest=manifest.subject.digest if manifest.subject else "",
        config_digest=manifest.config.digest,
        config_size=manifest.config.size,
        created=_annotated_created(manifest.annotations),
    )
    config = None
    # An artifact's config is whatever its tool put there, not an image config: not fetched.
    if manifest.kind == Manifest.Kind.IMAGE:
        try:
            fields["raw_config"] = client.get_blob(repository, manifest.config.digest)
            config = parse_image_config(fields["raw_config"])
        except NotFound:
            fields["fetch_error"] = f"Config blob {manifest.config.digest} is missing from the registry"
        except InvalidResponse as error:
            fields["fetch_error"] = f"Config blob {manifest.config.digest} is unreadable: {error}"
    if config is not None:
        fields.update(
            created=config.created or fields["created"],
            platform=str(config.platform) if config.platform else "",
            config=_config_summary(config),
        )
    fields["layers"] = _layer_steps(manifest, config)
    return Content(fetched.digest, fields)


def _layer_steps(manifest: ImageManifest, config: ImageConfig | None) -> list[dict[str, Any]]:
    """Layers in build order with their history; steps that made no layer (ENV, CMD, ...) have
    no digest and `empty: true`."""
    steps = []
    for step in align_history(manifest.layers, config.history if config else ()):
        created_by = (step.history.created_by if step.history else None) or ""
        if step.layer is None:
            steps.append({"created_by": created_by, "empty": True})
        else:
            steps.append(
                {
                    "digest": step.layer.digest,
                    "media_type": step.layer.media_type,
                    "size": step.layer.size,
                    "created_by": created_by,
                    "empty": False,
                }
            )
    return steps


def _config_summary(config: ImageConfig) -> dict[str, Any]:
    return {
        "author": config.author or "",
        "os": config.os or "",
        "architecture": config.architecture or "",
        "variant": config.variant or "",
        "env": list(config.env),
        "entrypoint": list(config.entrypoint),
        "cmd": list(config.cmd),
        "workdir": config.working_dir or "",
        "user": config.user or "",
        "exposed_ports": list(config.exposed_ports),
        "volumes": list(config.volumes),
        "labels": dict(config.labels),
        "history": [
            {
                "created": entry.created.isoformat() if entry.created else None,
                "created_by": entry.created_by or "",
                "comment": entry.comment or "",
                "empty_layer": entry.empty_layer,
            }
            for entry in config.history
        ],
    }


def _annotated_created(annotations: dict[str, str]) -> datetime | None:
    text = annotations.get(OCI_CREATED_ANNOTATION)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Writing: one transaction per repository -------------------------------------------------------


@dataclass
class _Cached:
    """A Manifest row of the repository being written, without its bulky columns."""

    id: int
    children: list[dict[str, Any]]
    size: int
    created: datetime | None
    missing_since: datetime | None

    @property
    def child_digests(self) -> list[str]:
        return [child["digest"] for child in self.children]


class _NewerRows(Exception):
    """Another writer changed these tags after the readout asked about them: ask again."""

    def __init__(self, tags: set[str]) -> None:
        super().__init__(f"{len(tags)} tags changed since they were read")
        self.tags = tags


class _MissingContent(Exception):
    """Digests neither read nor cached anywhere (a concurrent prune): fetch them and retry."""

    def __init__(self, digests: set[str]) -> None:
        super().__init__(f"{len(digests)} digests to fetch")
        self.digests = digests


def write_repository(
    registry: Registry,
    client: RegistryClient,
    readout: Readout,
    *,
    source: str,
    now: datetime | None = None,
    user: User | None = None,
) -> RepositoryResult:
    """Bring the cached rows of one repository in line with a readout; `user` is whose action
    (a restore) moved the tags, named on the history periods it closes and opens."""
    if not readout.shows_repository and not Repository.objects.filter(registry=registry, name=readout.name).exists():
        # E.g. a notification naming a repository the registry does not have: nothing to cache.
        return RepositoryResult(readout.name)
    # A removed repository's row, pins and history are restored when the name comes back.
    repository, _ = Repository.with_removed.get_or_create(registry=registry, name=readout.name)
    rereads = 1
    for _attempt in range(WRITE_ATTEMPTS):
        try:
            with transaction.atomic():
                # Stamped when written, after every read it rests on (see _changed_after).
                result = _apply(repository, readout, source, now or timezone.now(), user, reread=rereads > 0)
        except _MissingContent as missing:
            # Outside the transaction: registry reads never hold the write lock.
            for digest in sorted(missing.digests):
                readout.add(digest, _fetch_content(client, readout.name, digest))
            _settle(readout)
            continue
        except _NewerRows as newer:
            rereads -= 1
            for tag in sorted(newer.tags):
                readout.reread_at[tag] = timezone.now()
                readout.heads[tag] = head_digest(client, readout.name, tag)
                readout.unsettled.discard(tag)
            _settle(readout)
            continue
        attachments.read_attachments(client, repository, changed=result.changed)
        return result
    raise RegistryError(f"The content of {readout.name} kept changing during the sync; try again")


def _apply(
    repository: Repository, readout: Readout, source: str, now: datetime, user: User | None, *, reread: bool
) -> RepositoryResult:
    # Serialises writers of one repository (SQLite's IMMEDIATE transactions already do), and
    # everything below is read after the lock, so a concurrent sync's rows are seen, not duplicated.
    repository = Repository.with_removed.select_for_update().get(pk=repository.pk)
    cached = _cached_manifests(repository)
    rows = Tag.objects.filter(repository=repository).values_list("id", "name", "manifest_id")
    tags = {name: (tag_id, manifest_id) for tag_id, name, manifest_id in rows}
    # Tags another writer (a notification, a restore) moved, created or deleted after this
    # readout asked about them know more than it does: asked again (once), else left as cached.
    covered = readout.heads.keys() | (tags.keys() if readout.complete else set())
    changed = _changed_after(repository, readout.started_at)
    newer = {tag for tag, at in changed.items() if tag in covered and at > readout.read_at(tag)}
    if newer and reread:
        raise _NewerRows(newer)
    unsettled = readout.unsettled | newer
    target = {tag: digest for tag, digest in readout.heads.items() if digest and tag not in unsettled}
    if readout.complete:
        gone = set(tags) - set(target) - unsettled
    else:
        gone = {tag for tag, digest in readout.heads.items() if digest is None and tag in tags and tag not in unsettled}
    result = RepositoryResult(readout.name, tags=len(target), removed_tags=len(gone))

    created = _create_manifests(repository, readout, cached, set(target.values()), now, result)
    digest_of = {row.id: digest for digest, row in cached.items()}
    new_tags = [tag for tag in target if tag not in tags]
    moved = [tag for tag in target if tag in tags and digest_of[tags[tag][1]] != target[tag]]
    _write_tags(repository, tags, target, new_tags, moved, gone, cached, source, now, user)
    # A digest deleted once and pushed again, or marked missing on a stale notification: a HEAD
    # just found it, so it is no longer missing.
    present = set(target.values()) | {digest for digest, there in readout.kept_present.items() if there}
    found = [cached[d].id for d in present if d in cached and cached[d].missing_since is not None]
    if found:
        Manifest.objects.filter(id__in=found).update(missing_since=None)
    seen = Tag.objects.filter(repository=repository)
    if not readout.complete:
        seen = seen.filter(name__in=list(target))
    seen.update(last_seen_at=now)

    untouched = {digest_of[manifest_id] for tag, (_, manifest_id) in tags.items() if tag not in gone | target.keys()}
    pruned = prune(repository, cached, set(target.values()) | untouched, readout.kept_present, now)
    result.changed = bool(new_tags or moved or gone or created or pruned or repository.removed_at)
    updates: dict[str, Any] = {"last_sync_error": "", "last_sync_error_at": None, "removed_at": None}
    if readout.complete:
        updates["last_synced_at"] = now
    if result.changed or repository.tag_count != len(tags) - len(gone) + len(new_tags):
        updates.update(repository_totals(repository))
    Repository.with_removed.filter(pk=repository.pk).update(**updates)
    return result


def _changed_after(repository: Repository, moment: datetime) -> dict[str, datetime]:
    """Tag -> when a writer last opened or closed a history period of it, for the tags of the
    repository changed after `moment`. Every write of a Tag row (create, move, delete) opens or
    closes a period stamped with the time of the write, after the writer's registry reads."""
    rows = TagHistory.objects.filter(repository=repository).filter(Q(since__gt=moment) | Q(until__gt=moment))
    changed: dict[str, datetime] = {}
    for tag, since, until in rows.values_list("tag", "since", "until"):
        changed[tag] = max(changed.get(tag, since), since, until or since)
    return changed


def _write_tags(
    repository: Repository,
    tags: dict[str, tuple[int, int]],
    target: dict[str, str],
    new_tags: list[str],
    moved: list[str],
    gone: set[str],
    cached: dict[str, _Cached],
    source: str,
    now: datetime,
    user: User | None,
) -> None:
    """Create, move and delete Tag rows in bulk, closing and opening their history periods."""
    if not (new_tags or moved or gone):
        return
    # New tags too: a period left open by an earlier failure would break "one open period".
    close_periods(repository, [*new_tags, *moved, *gone], source, now, user)
    TagHistory.objects.bulk_create(
        TagHistory(repository=repository, tag=tag, digest=target[tag], since=now, started_by=source, user=user)
        for tag in [*new_tags, *moved]
    )
    Tag.objects.filter(id__in=[tags[tag][0] for tag in gone]).delete()
    Tag.objects.bulk_create(
        Tag(
            repository=repository,
            name=tag,
            manifest_id=cached[target[tag]].id,
            created=cached[target[tag]].created,
            first_seen_at=now,
            last_seen_at=now,
            pointed_at=now,
            version_key=version_sort_key(tag),
        )
        for tag in new_tags
    )
    moved_rows = [
        Tag(id=tags[tag][0], manifest_id=cached[target[tag]].id, created=cached[target[tag]].created, pointed_at=now)
        for tag in moved
    ]
    Tag.objects.bulk_update(moved_rows, ["manifest", "created", "pointed_at"])


def _cached_manifests(repository: Repository) -> dict[str, _Cached]:
    rows = Manifest.objects.filter(repository=repository).values_list(
        "digest", "id", "children", "size", "created", "missing_since"
    )
    return {digest: _Cached(*rest) for digest, *rest in rows}


def _create_manifests(
    repository: Repository,
    readout: Readout,
    cached: dict[str, _Cached],
    tagged: set[str],
    now: datetime,
    result: RepositoryResult,
) -> int:
    """Create the rows the tagged digests and their index children need; `cached` gains them."""
    contents: dict[str, Content] = {}
    wanted = set(tagged)
    while wanted:
        unresolved = {digest for digest in wanted if digest not in cached and digest not in readout.fetched}
        copies = _copies_from_other_repositories(repository, unresolved - readout.absent)
        missing = unresolved - copies.keys() - readout.absent
        if missing:
            raise _MissingContent(missing)
        next_wanted: set[str] = set()
        for digest in wanted - readout.absent:
            if digest in cached:
                next_wanted.update(cached[digest].child_digests)
                continue
            content = readout.fetched.get(digest) or copies[digest]
            if digest in readout.fetched:
                result.new_manifests += 1
            else:
                result.reused_manifests += 1
            contents[digest] = content
            next_wanted.update(content.child_digests)
        wanted = next_wanted - contents.keys() - cached.keys()
    fetched_indexes = [
        content
        for digest, content in contents.items()
        if content.fields["kind"] == Manifest.Kind.INDEX and digest in readout.fetched
    ]
    if fetched_indexes:
        child_blobs = _cached_child_blobs(fetched_indexes, cached)
        for content in fetched_indexes:
            _complete_index(content, contents, cached, child_blobs)
    rows = Manifest.objects.bulk_create(
        Manifest(repository=repository, digest=digest, first_seen_at=now, **content.fields)
        for digest, content in contents.items()
    )
    ManifestBlob.objects.bulk_create(
        blob for row in rows for blob in storage.blob_rows(row.id, row.digest, contents[row.digest].fields)
    )
    for row in rows:
        cached[row.digest] = _Cached(row.id, row.children, row.size, row.created, row.missing_since)
    return len(rows)


def _copies_from_other_repositories(repository: Repository, digests: set[str]) -> dict[str, Content]:
    """Content of digests cached for other repositories of the registry, from a row fetched
    without errors when there is one."""
    if not digests:
        return {}
    candidates = (
        Manifest.objects.filter(repository__registry_id=repository.registry_id, digest__in=digests)
        .exclude(repository=repository)
        .values_list("digest", "id", "fetch_error")
    )
    chosen: dict[str, tuple[bool, int]] = {}
    for digest, manifest_id, fetch_error in candidates:
        chosen[digest] = min(chosen.get(digest, (True, manifest_id)), (bool(fetch_error), manifest_id))
    rows = Manifest.objects.filter(id__in=[manifest_id for _, manifest_id in chosen.values()]).values_list(
        "digest", *CONTENT_FIELDS
    )
    copies = {}
    for digest, *values in rows:
        fields = dict(zip(CONTENT_FIELDS, values))
        # Databases hand binary columns back as memoryview; a new row wants bytes.
        fields["raw"] = bytes(fields["raw"])
        fields["raw_config"] = None if fields["raw_config"] is None else bytes(fields["raw_config"])
        copies[digest] = Content(digest, fields)
    return copies


def _cached_child_blobs(indexes: list[Content], cached: dict[str, _Cached]) -> dict[str, dict[str, int]]:
    """child digest -> its blobs (digest -> size), for the children of `indexes` already cached."""
    ids = {cached[digest].id: digest for content in indexes for digest in content.child_digests if digest in cached}
    blobs: dict[str, dict[str, int]] = {}
    rows = ManifestBlob.objects.filter(manifest_id__in=list(ids)).values_list("manifest_id", "digest", "size")
    for manifest_id, digest, size in rows:
        blobs.setdefault(ids[manifest_id], {})[digest] = size
    return blobs


def _complete_index(
    content: Content, contents: dict[str, Content], cached: dict[str, _Cached], child_blobs: dict[str, dict[str, int]]
) -> None:
    """An index's size and date come from its children: its own bytes plus every blob of its
    platform images counted once (they often share layers), and the newest child's `created`."""
    blobs: dict[str, int] = {}
    dates = []
    for child in content.fields["children"]:
        digest = child["digest"]
        if digest in contents:
            blobs.update((blob, size) for blob, (size, _) in storage.blobs_of(digest, contents[digest].fields).items())
            dates.append(contents[digest].fields["created"])
        elif digest in cached:
            blobs.update(child_blobs.get(digest, {}))
            dates.append(cached[digest].created)
        else:
            blobs[digest] = child["size"]  # missing from the registry: its manifest size is all we know
    content.fields["size"] = len(content.fields["raw"]) + sum(blobs.values())
    content.fields["created"] = max((d for d in dates if d), default=content.fields["created"])


def prune(
    repository: Repository,
    cached: dict[str, _Cached],
    tagged: set[str],
    present: dict[str, bool],
    now: datetime,
) -> int:
    """Delete the repository's manifests that no tag references (directly or as a child of a
    tagged index), except pinned ones and the tags' previous digests (`previous_digests`).
    Those stay, untagged, with their platform images while the registry has them; `present`
    (digest -> whether the registry has it, for the digests checked) marks them missing (so the
    history can say "deleted", and no rollback offers them) or found again."""

    def children(digest: str) -> Iterable[str]:
        return cached[digest].child_digests if digest in cached else ()

    unreferenced = cached.keys() - closure(tagged, children)
    if not unreferenced:
        return 0
    pinned = set(Pin.objects.filter(repository=repository, digest__in=unreferenced).values_list("digest", flat=True))
    roots = pinned | (previous_digests(repository) & unreferenced)
    lost = {digest for digest in roots if present.get(digest) is False}
    found = {digest for digest in roots if present.get(digest)}
    live = {digest for digest in roots - lost if digest in found or cached[digest].missing_since is None}
    doomed = unreferenced - roots - closure(live, children)
    Manifest.objects.filter(id__in=[cached[digest].id for digest in doomed]).delete()
    lost_rows = Manifest.objects.filter(repository=repository, digest__in=lost, missing_since__isnull=True)
    lost_rows.update(missing_since=now)
    Manifest.objects.filter(repository=repository, digest__in=found).update(missing_since=None)
    for digest in doomed:
        del cached[digest]
    return len(doomed)


def previous_digests(repository: Repository) -> set[str]:
    """The digests of the last ROLLBACK_DEPTH ended periods of each tag the repository has now.
    A deleted tag keeps none: retention deletes build tags by the thousand."""
    periods = (
        TagHistory.objects.filter(repository=repository, until__isnull=False)
        .filter(tag__in=Tag.objects.filter(repository=repository).values("name"))
        .annotate(rank=Window(RowNumber(), partition_by=F("tag"), order_by=[F("until").desc(), F("id").desc()]))
        .filter(rank__lte=ROLLBACK_DEPTH)
    )
    return set(periods.values_list("digest", flat=True))


def repository_totals(repository: Repository) -> dict[str, Any]:
    """tag_count, total_size (distinct config and layer blobs of the tagged images, an index
    counting its children's) and last_pushed_at, computed from the cached rows."""
    stats = Tag.objects.filter(repository=repository).aggregate(count=Count("id"), newest=Max("created"))
    rows = Manifest.objects.filter(repository=repository).values(
        "digest", "children", "config_digest", "config_size", "layers"
    )
    by_digest = {row["digest"]: row for row in rows}
    tagged = set(Tag.objects.filter(repository=repository).values_list("manifest__digest", flat=True))

    def children(digest: str) -> list[str]:
        return [child["digest"] for child in by_digest[digest]["children"]] if digest in by_digest else []

    blobs: dict[str, int] = {}
    for digest in closure(tagged, children) & by_digest.keys():
        row = by_digest[digest]
        if row["config_digest"]:
            blobs[row["config_digest"]] = row["config_size"]
        blobs.update((layer["digest"], layer["size"]) for layer in row["layers"] if "digest" in layer)
    return {"tag_count": stats["count"], "total_size": sum(blobs.values()), "last_pushed_at": stats["newest"]}


def closure(roots: Iterable[str], children: Callable[[str], Iterable[str]]) -> set[str]:
    """`roots` and, transitively, their children (an index's platform manifests)."""
    found: set[str] = set()
    wanted = set(roots)
    while wanted:
        found |= wanted
        wanted = {child for digest in wanted for child in children(digest)} - found
    return found


def close_periods(
    repository: Repository, tags: Iterable[str], source: str, now: datetime, user: User | None = None
) -> None:
    TagHistory.objects.filter(repository=repository, tag__in=list(tags), until__isnull=True).update(
        until=now, ended_by=source, ended_by_user=user
    )


# Entry points ---------------------------------------------------------------------------------


def check_registry(registry: Registry, client: RegistryClient) -> None:
    """Ping the registry and probe whether it deletes; keep the answers (or the failure) on
    `registry` for pages to show. Raises the RegistryError when the registry cannot be used."""
    now = timezone.now()
    registry.last_checked_at = now
    fields = ["last_checked_at", "reachable", "last_error", "unreachable_since"]
    try:
        info = client.ping()
        capabilities = client.capabilities()
    except RegistryError as error:
        registry.reachable = not _connection_failed(error)
        registry.last_error = str(error)
        if not registry.reachable:
            registry.unreachable_since = registry.unreachable_since or now
        registry.save(update_fields=fields)
        raise
    registry.reachable = True
    registry.last_error = ""
    registry.unreachable_since = None
    registry.api_version = info.api_version or ""
    registry.delete_enabled = capabilities.delete_enabled
    registry.tag_delete_supported = capabilities.tag_delete
    registry.save(update_fields=[*fields, "api_version", "delete_enabled", "tag_delete_supported"])


def sync_registry(
    registry: Registry,
    client: RegistryClient,
    *,
    repository: str | None = None,
    workers: int = 8,
    progress: ProgressCallback | None = None,
) -> SyncSummary:
    """Sync every repository in the catalog (or just `repository`) into the cache.

    A repository whose reads fail keeps its cached rows and gets the error recorded; the run
    goes on with the others, unless the registry stopped answering altogether. Raises the
    RegistryError when nothing could be synced: the registry is unreachable, the catalog
    unreadable, or the one requested repository failed.
    """
    started = time.monotonic()
    before = client.request_counts
    summary = SyncSummary()
    try:
        check_registry(registry, client)
        # Before the catalog walk: a repository first cached during it (a notification's push)
        # is not one the walk missed.
        cached_before = set(Repository.objects.filter(registry=registry).values_list("name", flat=True))
        names = [repository] if repository is not None else list(client.catalog())
    except RegistryError as error:
        record_failure(registry, None if repository is None else [repository], error)
        raise
    try:
        if repository is not None:
            summary.add(sync_repository(registry, client, repository, workers=workers))
            if progress is not None:
                progress(1, 1, repository)
        else:
            _sync_all(registry, client, names, workers, progress, summary)
            summary.removed_repositories = _remove_vanished(registry, client, cached_before - set(names))
            if not summary.failed:
                Registry.objects.filter(pk=registry.pk).update(last_successful_sync_at=timezone.now())
            storage.take_snapshot(registry)  # the growth chart's sample of the day, if missing
    finally:
        summary.requests = client.request_counts - before
        summary.seconds = time.monotonic() - started
    return summary


def sync_repository(
    registry: Registry, client: RegistryClient, name: str, *, source: str = Source.SYNC, workers: int = 8
) -> RepositoryResult:
    """Sync one repository completely: tag list, every tag's digest, new content, pruning."""
    kept = kept_digests(registry, name).get(name, set())
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="sync-request") as pool:
            readout = read_repository(
                client, name, known=partial(_known_in_database, registry, name), kept=kept, mapper=pool.map
            )
        return write_repository(registry, client, readout, source=source)
    except RegistryError as error:
        record_failure(registry, [name], error)
        raise


def sync_tag(
    registry: Registry,
    client: RegistryClient,
    repository_name: str,
    tag: str,
    *,
    source: str = Source.NOTIFICATION,
    user: User | None = None,
) -> RepositoryResult:
    """Sync one tag after a push, a notification or a user action (by `user`): HEAD it, fetch
    its content if new, move or remove the cached tag. Other tags are left alone."""
    try:
        readout = read_repository(
            client, repository_name, known=partial(_known_in_database, registry, repository_name), tags=[tag]
        )
        return write_repository(registry, client, readout, source=source, user=user)
    except RegistryError as error:
        record_failure(registry, [repository_name], error)
        raise


def forget(
    registry: Registry,
    repository_name: str,
    *,
    digest: str | None = None,
    tag: str | None = None,
    source: str = Source.NOTIFICATION,
    user: User | None = None,
    checked_at: datetime | None = None,
) -> int:
    """The registry deleted a manifest (and with it every tag on it) or a tag, by `user`'s
    action or as noticed: remove their rows without asking the registry. A deleted manifest
    that is pinned or a tag's previous digest stays, marked missing. Tags written after
    `checked_at` (when the registry was asked) are left: that writer knows more. Returns how
    many tags were removed."""
    repository = Repository.objects.filter(registry=registry, name=repository_name).first()
    if repository is None:
        return 0
    now = timezone.now()
    with transaction.atomic():
        repository = Repository.objects.select_for_update().get(pk=repository.pk)
        doomed = Tag.objects.filter(repository=repository)
        doomed = doomed.filter(manifest__digest=digest) if digest else doomed.filter(name=tag)
        if checked_at is not None:
            doomed = doomed.exclude(name__in=list(_changed_after(repository, checked_at)))
        names = list(doomed.values_list("name", flat=True))
        close_periods(repository, names, source, now, user)
        doomed.delete()
        tagged = set(Tag.objects.filter(repository=repository).values_list("manifest__digest", flat=True))
        prune(repository, _cached_manifests(repository), tagged, {digest: False} if digest else {}, now)
        if digest:
            # Still referenced (a platform image of a tagged index): the index now dangles.
            Manifest.objects.filter(repository=repository, digest=digest, missing_since__isnull=True).update(
                missing_since=now
            )
        Repository.objects.filter(pk=repository.pk).update(**repository_totals(repository))
    return len(names)


def record_failure(registry: Registry, names: Iterable[str] | None, error: RegistryError) -> None:
    """Note a failed sync on the named repositories (None: all of the registry's)."""
    repositories = Repository.objects.filter(registry=registry)
    if names is not None:
        repositories = repositories.filter(name__in=list(names))
    repositories.update(last_sync_error=str(error), last_sync_error_at=timezone.now())


def _connection_failed(error: RegistryError) -> bool:
    """No answer at all (refused, timeout), as opposed to an error answer."""
    return isinstance(error, Unavailable) and error.status is None


def kept_digests(registry: Registry, name: str | None = None) -> dict[str, set[str]]:
    """Per repository (or for `name` only), the digests a sync checks the registry still has
    even when no tag points at them: pinned ones, and cached ones marked missing (kept as
    previous digests, pins or platform images, so at most ROLLBACK_DEPTH per tag besides pins),
    which a stale or forged delete notification may have marked wrongly. One HEAD each."""
    pins = Pin.objects.filter(repository__registry=registry)
    missing = Manifest.objects.filter(repository__registry=registry, missing_since__isnull=False)
    if name is not None:
        pins, missing = pins.filter(repository__name=name), missing.filter(repository__name=name)
    kept: dict[str, set[str]] = {}
    for rows in (pins, missing):
        for repository_name, digest in rows.values_list("repository__name", "digest"):
            kept.setdefault(repository_name, set()).add(digest)
    return kept


def _known_in_database(registry: Registry, name: str, digests: set[str]) -> set[str]:
    """Digests whose content need not be fetched: cached for this repository, or cached
    without errors for another one."""
    return set(
        Manifest.objects.filter(repository__registry=registry, digest__in=list(digests))
        .filter(Q(repository__name=name) | Q(fetch_error=""))
        .values_list("digest", flat=True)
    )


class _DigestIndex:
    """The registry's cached digests, loaded once per full sync and grown as repositories are
    written, so reader threads can decide what to fetch without touching the database."""

    def __init__(self, registry: Registry) -> None:
        self.usable: set[str] = set()
        self.by_repository: dict[str, set[str]] = {}
        rows = Manifest.objects.filter(repository__registry=registry).values_list(
            "repository__name", "digest", "fetch_error"
        )
        for name, digest, fetch_error in rows.iterator(chunk_size=5000):
            self.by_repository.setdefault(name, set()).add(digest)
            if not fetch_error:
                self.usable.add(digest)

    def known(self, name: str, digests: set[str]) -> set[str]:
        here = self.by_repository.get(name, set())
        return {digest for digest in digests if digest in here or digest in self.usable}

    def add(self, readout: Readout) -> None:
        here = self.by_repository.setdefault(readout.name, set())
        here.update(digest for digest in readout.heads.values() if digest)
        here.update(readout.fetched)
        self.usable.update(digest for digest, content in readout.fetched.items() if not content.fields["fetch_error"])


def _sync_all(
    registry: Registry,
    client: RegistryClient,
    names: list[str],
    workers: int,
    progress: ProgressCallback | None,
    summary: SyncSummary,
) -> None:
    """Read repositories a few ahead on threads while this thread writes them in order."""
    index = _DigestIndex(registry)
    kept = kept_digests(registry)
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="sync-request") as request_pool,
        ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="sync-read") as read_pool,
    ):

        def read(name: str) -> Readout:
            return read_repository(
                client, name, known=partial(index.known, name), kept=kept.get(name, ()), mapper=request_pool.map
            )

        pending: deque[tuple[str, Future[Readout]]] = deque()
        upcoming = iter(names)
        while True:
            for name in upcoming:
                pending.append((name, read_pool.submit(read, name)))
                if len(pending) > READ_AHEAD:
                    break
            if not pending:
                return
            name, future = pending.popleft()
            stop = _finish(registry, client, name, future, index, summary)
            if progress is not None:
                progress(summary.repositories + len(summary.failed), len(names), name)
            if stop is not None:
                break
        # The registry is gone: waiting for every queued request to fail would only take time.
        read_pool.shutdown(cancel_futures=True)
        request_pool.shutdown(cancel_futures=True)
    abandoned = [name for name, _ in pending] + list(upcoming)
    record_failure(registry, abandoned, stop)
    summary.failed.update((name, str(stop)) for name in abandoned)


def _finish(
    registry: Registry,
    client: RegistryClient,
    name: str,
    future: Future[Readout],
    index: _DigestIndex,
    summary: SyncSummary,
) -> RegistryError | None:
    """Write one repository's readout, or record why it failed. Returns the error when the
    registry stopped answering and the run should stop."""
    try:
        readout = future.result()
        summary.add(write_repository(registry, client, readout, source=Source.SYNC))
    except RegistryError as error:
        logger.warning("Sync of %s failed: %s", name, error)
        record_failure(registry, [name], error)
        summary.failed[name] = str(error)
        return error if _connection_failed(error) else None
    index.add(readout)
    return None


def _remove_vanished(registry: Registry, client: RegistryClient, unlisted: set[str]) -> int:
    """Mark removed the repositories cached before the walk that the (completely read) catalog
    did not list and whose tag list the registry no longer knows (a push since the catalog was
    read brings a name back). Distribution never drops a name, even when every tag is gone, so
    this only follows a storage wipe. Their tags and manifests go, as in the registry; their
    pins and tag history stay (periods closed), for admins to see and for the name's return."""
    gone = set()
    for name in sorted(unlisted):
        try:
            client.tags(name)
        except NotFound:
            gone.add(name)
        except RegistryError as error:
            logger.warning("Kept %s, missing from the catalog: its tag list failed: %s", name, error)
    vanished = list(Repository.objects.filter(registry=registry, name__in=gone).values_list("pk", flat=True))
    if vanished:
        logger.warning("Removing %d repositories no longer in the catalog of %s", len(vanished), registry.url)
        now = timezone.now()
        with transaction.atomic():
            TagHistory.objects.filter(repository_id__in=vanished, until__isnull=True).update(
                until=now, ended_by=Source.SYNC
            )
            # Tags first: their PROTECT key to Manifest stops deleting both at once.
            Tag.objects.filter(repository_id__in=vanished).delete()
            Manifest.objects.filter(repository_id__in=vanished).delete()
            VersionSecurity.objects.filter(repository_id__in=vanished).delete()  # summed from those
            Repository.objects.filter(pk__in=vanished).update(
                removed_at=now, tag_count=0, total_size=0, last_pushed_at=None
            )
    return len(vanished)

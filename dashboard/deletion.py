"""Deleting one tag, a whole version, or many tags at once; and what deleting leaves to reclaim.

Distribution 2.8 deletes by digest only, and a digest delete takes every tag on that digest
with it. So "delete a tag" goes through `RegistryClient.delete_tag`, which leaves sibling tags
alone, and "delete a version" is a separate, explicit action. Every deletion runs inside
`guarded_action` (permission first, audit for every outcome), refuses pinned versions, and
checks the digest guard before touching the registry.

Deleting only frees disk space after the registry's offline garbage collection, and only for
deleted versions: a deleted tag leaves its version stored (untagged, still pullable by digest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpRequest

from dashboard import audit, sql, storage
from dashboard.access import AnyUser, is_admin
from dashboard.actions import (
    NEVER,
    ActionRefused,
    DigestMoved,
    PermissionRefused,
    TargetGone,
    check_digest,
    current_digest,
    guarded_action,
    validate_digest,
    validate_tag_name,
)
from dashboard.attachments import attached_only_to, names_version
from dashboard.models import AuditEntry, DeletedVersion, Manifest, Pin, Registry, Repository, Role, Tag, TagHistory
from dashboard.registries import client_for, client_or_own
from dashboard.registry import RegistryClient
from dashboard.registry.errors import NotFound, RegistryError, TagMoved, Unsupported
from dashboard.sync import forget, head_digest, sync_repository, sync_tag

DELETE_TAG = "delete_tag"
DELETE_VERSION = "delete_version"
BULK_DELETE = "bulk_delete"
GC_DONE = "gc_done"
# The bulk form posts one checkbox and one digest per tag; Django refuses more than 1000 fields.
BULK_LIMIT = 400
GC_COMMAND = "registry garbage-collect /etc/docker/registry/config.yml"


def pinned_by(pin: Pin) -> str:
    return pin.created_by.get_username() if pin.created_by else "a deleted user"


def pin_summary(pin: Pin) -> str:
    """Why a tag on a pinned version is kept, for previews and plans."""
    return f"pinned by {pinned_by(pin)}: {pin.reason}"


class Pinned(ActionRefused):
    def __init__(self, pin: Pin) -> None:
        super().__init__(
            f"{pin.digest} is pinned by {pinned_by(pin)} since {pin.created_at:%Y-%m-%d}: “{pin.reason}”. "
            "Nothing was deleted; an operator must unpin it first.",
            status=409,
        )
        self.pin = pin


def refuse_if_pinned(repository: Repository, digest: str) -> None:
    pin = Pin.objects.filter(repository=repository, digest=digest).select_related("created_by").first()
    if pin is not None:
        raise Pinned(pin)


def _registry_delete(registry: Registry, call: Callable[[], None]) -> None:
    """Run a registry delete; a refusal because deletes are disabled is remembered, so pages
    say so before the next user tries."""
    try:
        call()
    except Unsupported:
        Registry.objects.filter(pk=registry.pk).update(delete_enabled=False)
        raise


class DeleteUnfinished(ActionRefused):
    """The tag is on a tombstone: an earlier delete of it stopped half way."""

    def __init__(self, tag: str) -> None:
        super().__init__(
            f"A delete of tag {tag} did not finish: the registry failed after moving the tag onto the "
            f"placeholder that deleting uses. Nothing was deleted now; finish it by deleting tag {tag} first.",
            status=409,
        )


def _on_tombstone(client: RegistryClient, repository: Repository, moved: DigestMoved) -> bool:
    return moved.current is not None and client.is_tombstone(repository.name, moved.current)


def _resync_tag(client: RegistryClient, repository: Repository, tag: str) -> None:
    """The cache missed a push: re-read that tag for the page that explains the refusal."""
    with suppress(RegistryError):
        sync_tag(repository.registry, client, repository.name, tag, source=TagHistory.Source.SYNC)


def _guard_tag(client: RegistryClient, repository: Repository, tag: str, shown_digest: str) -> str | None:
    """The digest guard. Returns the tombstone the tag is on when an earlier delete of it stopped
    between moving it there and deleting it (see RegistryClient.delete_tag): that is not a move,
    and deleting the tag means finishing that delete."""
    try:
        check_digest(client, repository.name, tag, shown_digest)
    except DigestMoved as moved:
        if _on_tombstone(client, repository, moved):
            return moved.current
        _resync_tag(client, repository, tag)
        raise
    return None


def _delete_tag_shown(client: RegistryClient, repository: Repository, tag: str, shown_digest: str) -> None:
    """The registry delete of one tag, which reads the tag once more right before it writes."""
    try:
        _registry_delete(repository.registry, lambda: client.delete_tag(repository.name, tag, shown_digest))
    except TagMoved as moved:
        current = moved.current
    except NotFound:
        current = None  # deleted by someone else since the guard read it
    else:
        return
    _resync_tag(client, repository, tag)
    raise DigestMoved(tag, shown_digest, current)


def _forget(repository: Repository, user: AnyUser | None, *, tag: str = "", digest: str = "") -> None:
    """Remove what the registry just deleted from the cache (no registry call), closing the tags'
    history periods in the user's name."""
    forget(
        repository.registry,
        repository.name,
        tag=tag or None,
        digest=digest or None,
        source=TagHistory.Source.USER,
        user=user if user is not None and user.is_authenticated else None,
    )


# One tag ------------------------------------------------------------------------------------


def delete_tag(
    request: HttpRequest | None,
    user: AnyUser | None,
    repository: Repository,
    tag: str,
    shown_digest: str,
    *,
    client: RegistryClient | None = None,
    action: str = DELETE_TAG,
    note: str = "",
) -> str | None:
    """Delete `tag` only; `shown_digest` is the digest the user saw it point at. Returns the
    tombstone digest when this finished an earlier delete of the tag that had stopped half way."""
    with guarded_action(
        request, user, repository, action, Role.MAINTAINER, tag=tag, digest_before=shown_digest
    ) as context:
        if note:
            context.notes.append(note)
        validate_tag_name(tag)
        validate_digest(shown_digest)
        refuse_if_pinned(repository, shown_digest)
        with client_or_own(repository.registry, client) as client:
            tombstone = _guard_tag(client, repository, tag, shown_digest)
            if tombstone is None:
                _delete_tag_shown(client, repository, tag, shown_digest)
            else:
                context.notes.append(f"finished an earlier delete that had left the tag on tombstone {tombstone}")
                _registry_delete(repository.registry, lambda: client.finish_tag_delete(repository.name, tombstone))
            _forget(repository, user, tag=tag)
            return tombstone


def siblings(tag: Tag) -> list[str]:
    """The other tags on the same digest: they stay when this one is deleted."""
    return list(
        Tag.objects.filter(manifest_id=tag.manifest_id)
        .exclude(pk=tag.pk)
        .order_by("version_key")
        .values_list("name", flat=True)
    )


# A whole version ----------------------------------------------------------------------------


@dataclass
class Child:
    """A platform image of an index, and whether deleting the index may take it along."""

    digest: str
    platform: str
    size: int
    kept_because: str = ""

    @property
    def orphaned(self) -> bool:
        return not self.kept_because


def index_children(repository: Repository, removed: Iterable[str]) -> dict[str, list[Child]]:
    """index digest -> its platform images, for the indexes among `removed`.

    A child is orphaned (may go with its index) unless a tag points at it, it is pinned, or an
    index that stays uses it. Deleting an index without its children leaves them stored,
    untagged, for good: plain garbage collection keeps untagged manifests.
    """
    removed = set(removed)
    indexes = Manifest.objects.filter(repository=repository, digest__in=removed, kind=Manifest.Kind.INDEX).values_list(
        "digest", "children"
    )
    children = {digest: entries for digest, entries in indexes}
    wanted = {entry["digest"] for entries in children.values() for entry in entries}
    if not wanted:
        return {}
    tagged = dict(
        Tag.objects.filter(repository=repository, manifest__digest__in=wanted)
        .order_by("version_key")
        .values_list("manifest__digest", "name")
    )
    pinned = set(Pin.objects.filter(repository=repository, digest__in=wanted).values_list("digest", flat=True))
    used_by: dict[str, str] = {}
    others = (
        Manifest.objects.filter(repository=repository, kind=Manifest.Kind.INDEX, missing_since__isnull=True)
        .exclude(digest__in=removed)
        .values_list("digest", "children")
    )
    for digest, entries in others:
        for entry in entries:
            used_by.setdefault(entry["digest"], digest)
    result: dict[str, list[Child]] = {}
    for index, entries in children.items():
        result[index] = []
        for entry in entries:
            child = Child(entry["digest"], entry.get("platform") or "", entry.get("size") or 0)
            if child.digest in pinned:
                child.kept_because = "pinned"
            elif child.digest in tagged:
                child.kept_because = f"tagged {tagged[child.digest]}"
            elif child.digest in used_by:
                child.kept_because = f"also used by {used_by[child.digest]}"
            result[index].append(child)
    return result


class UnseenTags(ActionRefused):
    """Tags the user was not shown point at the version: deleting it would delete them too."""

    def __init__(self, tags: list[str]) -> None:
        one = len(tags) == 1
        super().__init__(
            f"{', '.join(tags)} also {'points' if one else 'point'} at this version now; reload to see "
            f"{'it' if one else 'them'}. Nothing was deleted.",
            status=409,
        )
        self.tags = tags


class LiveTags:
    """Where each tag of one repository points in the registry: its tag list and one HEAD per
    tag, in parallel like the sync's reads. Read on first use. One version delete reads it for
    the tags not shown (`skip` the shown ones, which it checks itself); a run deleting several
    versions of a repository (retention) passes one along, so the run costs one scan per
    repository instead of one per version."""

    def __init__(self, client: RegistryClient, repository: str, *, skip: Iterable[str] = ()) -> None:
        self._client = client
        self._repository = repository
        self._skip = set(skip)
        self._digests: dict[str, str | None] | None = None

    def digests(self) -> dict[str, str | None]:
        """tag -> digest; None for a tag deleted between the tag list and its HEAD."""
        if self._digests is None:
            names = [tag for tag in self._client.tags(self._repository) if tag not in self._skip]
            with ThreadPoolExecutor(settings.REGISTRY_SYNC_WORKERS, thread_name_prefix="live-tags") as pool:
                found = pool.map(partial(head_digest, self._client, self._repository), names)
                self._digests = dict(zip(names, found))
        return self._digests

    def on(self, digest: str) -> list[str]:
        return sorted(tag for tag, found in self.digests().items() if found == digest)

    def deleted(self, digest: str) -> None:
        """The run deleted `digest`, and with it the tags on it."""
        if self._digests is not None:
            self._digests = {tag: found for tag, found in self._digests.items() if found != digest}


def guard_version(
    client: RegistryClient, repository: Repository, digest: str, shown_tags: Iterable[str], live: LiveTags
) -> set[str]:
    """The digest guard for a whole version: it still exists, no tag the user was not shown
    points at it (a digest delete would take that tag along unseen: the cache may have missed
    the move), and each tag shown still points at it, checked last, right before the delete.
    Returns the digests the other tags point at.

    Distribution has no conditional delete: a tag moved onto the version after its HEAD here is
    deleted with it. The shown tags are read last to keep that window to one request for them;
    for the others it spans the reads of the shown ones (and, in a run, the run).
    """
    try:
        client.head_manifest(repository.name, digest)
    except NotFound:
        raise TargetGone(digest) from None
    shown = set(shown_tags)
    unseen = [tag for tag in live.on(digest) if tag not in shown]
    if unseen:
        # The cache missed a move: bring the repository up to date for the page that explains it.
        with suppress(RegistryError):
            sync_repository(repository.registry, client, repository.name)
        raise UnseenTags(unseen)
    for tag in sorted(shown):
        try:
            check_digest(client, repository.name, tag, digest)
        except DigestMoved as moved:
            if _on_tombstone(client, repository, moved):
                raise DeleteUnfinished(tag) from None
            raise
    return {found for tag, found in live.digests().items() if found and tag not in shown}


@dataclass
class VersionDeleted:
    digest: str
    tags: list[str]
    children: list[str] = field(default_factory=list)
    attachments: list[str] = field(default_factory=list)
    freed_bytes: int = 0


def delete_version(
    request: HttpRequest | None,
    user: AnyUser | None,
    repository: Repository,
    digest: str,
    shown_tags: Iterable[str],
    *,
    children: Iterable[str] = (),
    attachments: Iterable[str] = (),
    client: RegistryClient | None = None,
    live: LiveTags | None = None,
    action: str = DELETE_VERSION,
    note: str = "",
    freed_bytes: int | None = None,
) -> VersionDeleted:
    """Delete the manifest `digest` and with it every tag on it (`shown_tags`, as the user saw
    them). `children`: platform images of an index to delete with it, if still orphaned;
    `attachments`: its signatures, attestations, SBOMs and referrers to delete with it, if still
    attached to it alone (attachments.attached_only_to), their cosign tags with them.
    `live`: the repository's tags as a run read them (default: read them now).
    `freed_bytes`: what garbage collection will free, when the caller estimated it already."""
    shown = sorted(set(shown_tags))
    with guarded_action(request, user, repository, action, Role.MAINTAINER, digest_before=digest) as context:
        if note:
            context.notes.append(note)
        context.notes.append(f"tags: {', '.join(shown) or 'none'}")
        validate_digest(digest)
        for tag in shown:
            validate_tag_name(tag)
        refuse_if_pinned(repository, digest)
        orphans = {child.digest for child in index_children(repository, [digest]).get(digest, []) if child.orphaned}
        with client_or_own(repository.registry, client) as client:
            live = live or LiveTags(client, repository.name, skip=shown)
            tagged_elsewhere = guard_version(client, repository, digest, shown, live)
            try:
                _registry_delete(repository.registry, lambda: client.delete_manifest(repository.name, digest))
            except NotFound:
                # Deleted by someone else since the guard read it.
                raise TargetGone(digest) from None
            live.deleted(digest)
            deleted = VersionDeleted(digest, shown)
            for child in children:
                if child not in orphans or child in tagged_elsewhere:
                    context.notes.append(f"kept platform image {child}: something else uses it now")
                    continue
                try:
                    client.delete_manifest(repository.name, child)
                except NotFound:
                    pass
                except RegistryError as error:
                    # The version itself is gone; say which leftover stays instead of failing it.
                    context.notes.append(f"platform image {child} not deleted: {error}")
                    continue
                deleted.children.append(child)
                live.deleted(child)
            if deleted.children:
                context.notes.append(f"platform images deleted: {', '.join(deleted.children)}")
            _delete_attachments(client, repository, digest, attachments, deleted, live, context.notes)
            # Before `forget`, which drops the cached manifests this estimate reads.
            deleted.freed_bytes = (
                freed_bytes
                if freed_bytes is not None
                else estimate_freed(repository, [digest, *deleted.children, *deleted.attachments])
            )
            DeletedVersion.objects.create(
                registry=repository.registry, repository=repository.name, digest=digest, freed_bytes=deleted.freed_bytes
            )
            for artifact in [digest, *deleted.attachments]:
                _forget(repository, user, digest=artifact)
            return deleted


def _delete_attachments(
    client: RegistryClient,
    repository: Repository,
    digest: str,
    wanted: Iterable[str],
    deleted: VersionDeleted,
    live: LiveTags,
    notes: list[str],
) -> None:
    """After the version: delete the attached artifacts asked for that nothing else uses, in
    the cache (attached_only_to) and in the registry: a tag pushed onto one since the sync,
    such as a signature copied next to another version, keeps it."""
    alone = {artifact.digest for artifact in attached_only_to(repository, [digest])[digest]}
    for artifact in wanted:
        if artifact not in alone:
            notes.append(f"kept attached artifact {artifact[:100]}: another version uses it, it is pinned, or it is gone")
            continue
        foreign = [tag for tag in live.on(artifact) if not names_version(tag, digest)]
        if foreign:
            notes.append(f"kept attached artifact {artifact}: {', '.join(foreign)} now point(s) at it")
            continue
        try:
            client.delete_manifest(repository.name, artifact)
        except NotFound:
            pass
        except RegistryError as error:
            notes.append(f"attached artifact {artifact} not deleted: {error}")
            continue
        deleted.attachments.append(artifact)
        live.deleted(artifact)
    if deleted.attachments:
        notes.append(f"attached artifacts deleted: {', '.join(deleted.attachments)}")


# Many tags ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened (or would happen) to one tag of a bulk or retention run."""

    tag: str
    digest: str
    outcome: str  # an AuditEntry.Outcome
    message: str = ""
    untagged: str = ""  # what a row without a tag is: "platform image", "attached artifact"

    @property
    def ok(self) -> bool:
        return self.outcome == AuditEntry.Outcome.OK


def outcome_of(refused: ActionRefused, tag: str, digest: str) -> Outcome:
    # guarded_action turns registry errors into a 502; everything else is a refusal.
    failed = refused.status >= 500
    return Outcome(tag, digest, AuditEntry.Outcome.FAILED if failed else AuditEntry.Outcome.REFUSED, refused.message)


def try_delete_tag(
    request: HttpRequest | None, user: AnyUser | None, repository: Repository, tag: str, digest: str, **options
) -> Outcome:
    """`delete_tag`, with a refusal or failure reported instead of raised."""
    try:
        delete_tag(request, user, repository, tag, digest, **options)
    except ActionRefused as refused:
        return outcome_of(refused, tag, digest)
    return Outcome(tag, digest, AuditEntry.Outcome.OK)


@dataclass
class PreviewRow:
    tag: str
    shown_digest: str
    cached: Tag | None
    pin: Pin | None = None
    current: str | None = None
    last_tag: bool = False  # every tag of its version is selected: the version stays, untagged
    unfinished: bool = False  # on a tombstone: deleting finishes an earlier delete (see _guard_tag)

    @property
    def kept_because(self) -> str:
        if self.cached is None:
            return "not in this repository any more"
        if self.pin is not None:
            return pin_summary(self.pin)
        if self.current != self.shown_digest and not self.unfinished:
            now = f"now points at {self.current}" if self.current else "no longer exists in the registry"
            return f"moved since the page was loaded: {now}"
        return ""

    @property
    def will_delete(self) -> bool:
        return not self.kept_because


def bulk_preview(
    repository: Repository, selection: Mapping[str, str], client: RegistryClient | None = None
) -> list[PreviewRow]:
    """What deleting the selected tags (tag -> digest shown) would do, asking the registry for
    each tag's current digest; nothing is changed."""
    cached = {
        tag.name: tag
        for tag in Tag.objects.filter(repository=repository, name__in=list(selection)).select_related("manifest")
    }
    pins = {
        pin.digest: pin
        for pin in Pin.objects.filter(repository=repository, digest__in=set(selection.values())).select_related(
            "created_by"
        )
    }
    manifest_ids = {tag.manifest_id for tag in cached.values()}
    totals = dict(
        Tag.objects.filter(manifest_id__in=manifest_ids)
        .values("manifest_id")
        .annotate(n=Count("id"))
        .values_list("manifest_id", "n")
    )
    selected = Counter(tag.manifest_id for tag in cached.values())
    with client_or_own(repository.registry, client) as client:
        rows = []
        for tag, digest in selection.items():
            row = PreviewRow(tag, digest, cached.get(tag), pins.get(digest))
            row.last_tag = row.cached is not None and totals.get(row.cached.manifest_id) == selected[row.cached.manifest_id]
            if row.cached is not None and row.pin is None:
                row.current = current = current_digest(client, repository.name, tag)
                row.unfinished = current is not None and current != digest and client.is_tombstone(repository.name, current)
            rows.append(row)
        return rows


def bulk_delete(
    request: HttpRequest | None, user: AnyUser | None, repository: Repository, selection: Mapping[str, str]
) -> list[Outcome]:
    """Delete each selected tag (tag -> digest shown) on its own: one refusal or failure leaves
    the others to go ahead, and every tag gets its own audit entry."""
    with guarded_action(request, user, repository, BULK_DELETE, Role.MAINTAINER) as context:
        if len(selection) > BULK_LIMIT:
            raise ActionRefused(f"Select at most {BULK_LIMIT} tags at a time.")
        with client_for(repository.registry) as client:
            outcomes = [
                try_delete_tag(request, user, repository, tag, digest, client=client) for tag, digest in selection.items()
            ]
            done = sum(outcome.ok for outcome in outcomes)
            context.notes.append(f"{done} of {len(outcomes)} tags deleted")
    return outcomes


# Storage ------------------------------------------------------------------------------------


def estimate_freed(repository: Repository, digests: list[str]) -> int:
    """Bytes garbage collection frees once these manifests of `repository` are deleted: their
    blobs no other manifest in the registry uses (the figures of /storage/ count the same way)."""
    ids = Manifest.objects.filter(repository=repository, digest__in=digests).values_list("id", flat=True)
    freed = storage.freed_blobs(repository.registry, list(ids))
    return sum({digest: size for blobs in freed.values() for digest, size in blobs.items()}.values())


def _gc_marks():
    # pending_gc_in states the same filter in SQL: change both together.
    return AuditEntry.objects.filter(action=GC_DONE, outcome=AuditEntry.Outcome.OK)


def last_gc() -> AuditEntry | None:
    """When someone last said the registry's garbage collection ran."""
    return _gc_marks().first()


@dataclass
class PendingGC:
    """Versions deleted through the dashboard since garbage collection last ran (as recorded),
    and the bytes that collection frees, as estimated when each was deleted."""

    since: AuditEntry | None
    versions: int
    bytes: int
    by_repository: list[dict] = field(default_factory=list)  # repository, versions, bytes


def pending_gc(registry: Registry, visible: Q | None) -> PendingGC:
    """For the storage page; `visible` filters the repositories the user may see (None: all).
    Two queries: the totals are summed from the rows per repository."""
    since = last_gc()
    pending = DeletedVersion.objects.filter(
        registry_id=registry.pk, deleted_at__gt=since.created_at if since else NEVER
    )
    if visible is not None:
        pending = pending.filter(visible)
    rows = list(
        pending.values("repository")
        .annotate(versions=Count("id"), bytes=Sum("freed_bytes"))
        .order_by("-bytes", "repository")
    )
    return PendingGC(since, sum(row["versions"] for row in rows), sum(row["bytes"] for row in rows), rows)


def pending_gc_in(repository: Repository) -> tuple[int, int]:
    """(versions, bytes) waiting for garbage collection in one repository: for the panel on
    every repository page. One query in SQL (see dashboard.sql): through the ORM the same answer
    took two queries that cost far more to build than the database took to answer."""
    [(count, size)] = sql.select(
        f"WITH mark AS (SELECT MAX(created_at) AS at FROM {sql.table(AuditEntry)} WHERE action = %s AND outcome = %s)"
        f" SELECT COUNT(*), COALESCE(SUM(freed_bytes), 0) FROM {sql.table(DeletedVersion)} CROSS JOIN mark"
        " WHERE registry_id = %s AND repository = %s AND (mark.at IS NULL OR deleted_at > mark.at)",
        [GC_DONE, AuditEntry.Outcome.OK, repository.registry_id, repository.name],
    )
    return count, int(size)  # PostgreSQL's SUM of bigints is a numeric


def mark_gc_done(request: HttpRequest | None, user: AnyUser | None) -> AuditEntry:
    """Record that garbage collection ran: what was pending until now is freed. Admins only:
    it runs on the registry's host, for every repository."""
    if not is_admin(user):
        refused = PermissionRefused("Only admins can record that garbage collection ran.")
        audit.record(request, GC_DONE, AuditEntry.Outcome.REFUSED, user=user, reason=refused.message)
        raise refused
    return audit.record(request, GC_DONE, AuditEntry.Outcome.OK, user=user, reason="marked garbage collection as done")

"""Pins, restores and rollback candidates: the immutability and history a plain registry lacks.

A pin protects a digest (not a tag) from every delete. A restore points a tag at a digest it
(or a pin) had before by re-PUTting that manifest's exact bytes, so the digest is unchanged.
Each action goes through `guarded_action`: permission first, then the registry, then cache,
history and audit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.http import HttpRequest

from dashboard import sql
from dashboard.access import AnyUser
from dashboard.actions import (
    NEVER,
    ActionRefused,
    DigestMoved,
    TargetGone,
    current_digest,
    guarded_action,
    validate_digest,
    validate_tag_name,
)
from dashboard.attachments import require_verified
from dashboard.compare import MANIFEST_COLUMNS, Comparison, compare_manifests
from dashboard.models import Manifest, Pin, Registry, Repository, Role, Tag, TagHistory
from dashboard.registries import client_for
from dashboard.registry import RegistryClient
from dashboard.registry.client import FetchedManifest
from dashboard.registry.errors import DigestMismatch, NotFound, RegistryError
from dashboard.registry.manifests import ImageIndex
from dashboard.sync import forget, sync_tag

# Cheap columns for lists of versions; raw bytes and configs are only read to compare or restore.
LIST_COLUMNS = ("digest", "kind", "media_type", "size", "created", "platform", "missing_since", "first_seen_at")
# Periods a history page shows; `latest` pushed by CI on every commit would otherwise grow forever.
HISTORY_SHOWN = 200
# Pins ---------------------------------------------------------------------------------------


def _exists(client: RegistryClient, repository: str, reference: str) -> bool:
    try:
        client.head_manifest(repository, reference)
    except NotFound:
        return False
    return True


def pin_version(
    request: HttpRequest | None,
    user: AnyUser | None,
    registry: Registry,
    repository: Repository,
    *,
    reason: str,
    digest: str = "",
    tag: str = "",
) -> Pin:
    """Pin `digest`, or the digest `tag` points at right now when no digest is given."""
    with guarded_action(
        request,
        user,
        repository,
        "pin",
        Role.OPERATOR,
        tag=tag,
        digest_before=digest,
    ) as action:
        reason = reason.strip()
        if not reason:
            raise ActionRefused("Give a reason for the pin: it tells others why this version must stay.")
        if not digest and not tag:
            raise ActionRefused("Name the version to pin: a digest or a tag.")
        if digest:
            validate_digest(digest)
        if tag:
            validate_tag_name(tag)
        with client_for(registry) as client:
            tag_digest = current_digest(client, repository.name, tag) if tag else None
            if tag and tag_digest is None:
                raise ActionRefused(f"Tag {tag} does not exist in the registry.", status=404)
            digest = digest or tag_digest
            action.digest_before = digest
            if digest != tag_digest:
                # Checked as a restore checks its target, so a version found gone leaves the cache
                # (and the rollback candidates) here too.
                _fetch_target(registry, client, repository.name, digest)
            cached_tags = Tag.objects.filter(repository=repository, manifest__digest=digest).values_list("name", flat=True)
            tags_at_pin = set(cached_tags)
            # The cache may lag behind the registry; for the tag named, the registry's answer counts.
            tags_at_pin.discard(tag)
            if tag and tag_digest == digest:
                tags_at_pin.add(tag)
            try:
                with transaction.atomic():
                    return Pin.objects.create(
                        repository=repository,
                        digest=digest,
                        tags_at_pin=sorted(tags_at_pin),
                        reason=reason[:500],
                        created_by=user,
                    )
            except IntegrityError:
                raise ActionRefused(f"{digest} is already pinned.", status=409) from None


def unpin_version(request: HttpRequest | None, user: AnyUser | None, repository: Repository, digest: str) -> None:
    with guarded_action(
        request, user, repository, "unpin", Role.OPERATOR, digest_before=digest
    ) as action:
        pin = Pin.objects.filter(repository=repository, digest=digest).first()
        if pin is None:
            raise ActionRefused(f"{digest[:200]} is not pinned.", status=404)
        who = pin.created_by or "a deleted user"
        action.notes.append(f"pinned by {who} on {pin.created_at:%Y-%m-%d}: {pin.reason}")
        pin.delete()


@dataclass
class TagMove:
    """A tag that pointed at a pinned digest when it was pinned and has moved since."""

    tag: str
    digest: str | None  # None: the tag no longer exists

    @property
    def deleted(self) -> bool:
        return self.digest is None


def tag_moves(pins: Iterable[Pin]) -> dict[int, list[TagMove]]:
    """pin id -> its moved tags, in one query for all the pins (the pin keeps the digest)."""
    pins = list(pins)
    names = {name for pin in pins for name in pin.tags_at_pin}
    current: dict[tuple[int, str], str] = {
        (repository_id, name): digest
        for repository_id, name, digest in Tag.objects.filter(
            repository_id__in={pin.repository_id for pin in pins}, name__in=names
        ).values_list("repository_id", "name", "manifest__digest")
    }
    moves: dict[int, list[TagMove]] = {}
    for pin in pins:
        moved = [
            TagMove(name, current.get((pin.repository_id, name)))
            for name in pin.tags_at_pin
            if current.get((pin.repository_id, name)) != pin.digest
        ]
        if moved:
            moves[pin.id] = moved
    return moves


@dataclass
class PinRow:
    pin: Pin
    manifest: Manifest | None
    moves: list[TagMove] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.manifest is not None and self.manifest.missing_since is None


def newest_pins(repository: Repository, limit: int) -> list[Pin]:
    """The repository's most recent pins, for the panel on every repository page (a raw query:
    see dashboard.sql)."""
    return list(
        Pin.objects.raw(
            f"SELECT * FROM {sql.table(Pin)} WHERE repository_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
            [repository.pk, limit],
        )
    )


def pin_rows(pins: Iterable[Pin]) -> list[PinRow]:
    """Rows for a page of pins: their versions and moved tags, in two queries (none without pins:
    most repository pages have none to show)."""
    pins = list(pins)
    if not pins:
        return []
    manifests = {
        (manifest.repository_id, manifest.digest): manifest
        for manifest in Manifest.objects.filter(
            repository_id__in={pin.repository_id for pin in pins}, digest__in={pin.digest for pin in pins}
        ).only("repository_id", *LIST_COLUMNS)
    }
    moves = tag_moves(pins)
    return [PinRow(pin, manifests.get((pin.repository_id, pin.digest)), moves.get(pin.id, [])) for pin in pins]


def repository_pins(repository: Repository) -> list[Pin]:
    """All of the repository's pins, newest first: a repository has few, and the version, history
    and rollback pages pick from them in Python (JSON containment is not portable to SQLite)."""
    return list(Pin.objects.filter(repository=repository).select_related("created_by").order_by("-created_at"))


def pins_moved_from(pins: Iterable[Pin], tag: str, current_digest: str | None) -> list[Pin]:
    """Of `pins`, those of versions `tag` pointed at when pinned and no longer points at
    (`current_digest`, None when the tag is gone)."""
    return [pin for pin in pins if tag in pin.tags_at_pin and pin.digest != current_digest]


# History ------------------------------------------------------------------------------------


@dataclass
class Period:
    """One stretch of time during which the tag pointed at one digest."""

    row: TagHistory
    manifest: Manifest | None
    pinned: bool
    moved: bool = False  # it ended because the tag moved to another digest, not because it was deleted

    @property
    def exists(self) -> bool:
        """Still in the registry, as far as the cache knows (no registry call while listing)."""
        return self.manifest is not None and self.manifest.missing_since is None

    @property
    def state(self) -> str:
        if self.exists:
            return "in the registry"
        if self.manifest is None:
            # Dropped by the sync: older than it keeps (sync.ROLLBACK_DEPTH), or the tag is gone.
            return "not cached"
        return "deleted"

    @property
    def current(self) -> bool:
        return self.row.until is None

    @property
    def started_by(self) -> str:
        """E.g. "pushed (seen by sync)", "restored by olivia"."""
        what = "restored" if self.row.started_by == TagHistory.Source.USER else "pushed"
        return _actor(what, self.row.get_started_by_display(), self.row.user)

    @property
    def ended_by(self) -> str:
        """E.g. "moved (registry notification)", "deleted by max"; "" while current."""
        if not self.row.ended_by:
            return ""
        return _actor("moved" if self.moved else "deleted", self.row.get_ended_by_display(), self.row.ended_by_user)


def _actor(what: str, source: str, user: User | None) -> str:
    return f"{what} by {user}" if user is not None else f"{what} ({source})"


def tag_periods(repository: Repository, tag: str, limit: int = HISTORY_SHOWN) -> list[Period]:
    """The tag's history, newest first, with whether each digest still exists and is pinned."""
    history = TagHistory.objects.filter(repository=repository, tag=tag).select_related("user", "ended_by_user")
    rows = list(history.order_by("-since", "-id")[:limit])
    digests = {row.digest for row in rows}
    manifests = {
        manifest.digest: manifest
        for manifest in Manifest.objects.filter(repository=repository, digest__in=digests).only(*LIST_COLUMNS)
    }
    pinned = set(Pin.objects.filter(repository=repository, digest__in=digests).values_list("digest", flat=True))
    periods = [Period(row, manifests.get(row.digest), row.digest in pinned) for row in rows]
    # A move closes a period and opens the next at the same moment; a delete opens nothing.
    for newer, period in zip(periods, periods[1:]):
        period.moved = newer.row.since == period.row.until
    return periods


# Restore ------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    tag: str
    digest: str
    previous: str | None
    changed: bool


def _fetch_target(registry: Registry, client: RegistryClient, repository: str, digest: str) -> FetchedManifest:
    """The manifest's exact bytes, fetched by digest now: this also proves it still exists.

    An index whose platform images were deleted would be refused by the registry mid-way, so
    its children are checked first and the user told which one is missing. A digest found gone
    is forgotten by the cache as if the registry had notified its delete, so it is not offered
    as a rollback candidate again.
    """
    try:
        fetched = client.get_manifest(repository, digest)
    except NotFound:
        forget(registry, repository, digest=digest, source=TagHistory.Source.SYNC)
        raise TargetGone(digest) from None
    if isinstance(fetched.manifest, ImageIndex):
        for child in fetched.manifest.manifests:
            if not _exists(client, repository, child.digest):
                forget(registry, repository, digest=child.digest, source=TagHistory.Source.SYNC)
                raise TargetGone(digest, f": its {child.platform or child.digest} image is gone")
    return fetched


def _check_unchanged(
    registry: Registry, client: RegistryClient, repository: str, tag: str, expected: str | None
) -> str | None:
    """The digest guard of a restore: the tag still points at `expected` (None: still does not
    exist). A refusal re-reads the tag, so its history shows the push that moved it."""
    current = current_digest(client, repository, tag)
    if current == expected:
        return current
    with suppress(RegistryError):
        sync_tag(registry, client, repository, tag, source=TagHistory.Source.SYNC)
    if expected:
        raise DigestMoved(tag, expected, current)
    raise ActionRefused(
        f"Tag {tag} already exists (it points at {current}). Nothing was changed; reload and check it before moving it.",
        status=409,
    )


def restore_tag(
    request: HttpRequest | None,
    user: AnyUser | None,
    registry: Registry,
    repository: Repository,
    *,
    tag: str,
    digest: str,
    expected: str | None,
) -> RestoreResult:
    """Point `tag` at `digest`; `expected` is the tag's digest the user saw (None: a new tag)."""
    with guarded_action(
        request,
        user,
        repository,
        "restore",
        Role.OPERATOR,
        tag=tag,
        digest_before=expected or "",
    ) as action:
        validate_tag_name(tag)
        validate_digest(digest)
        if expected:
            validate_digest(expected)
        action.digest_after = digest
        if settings.RESTORE_REQUIRE_SIGNATURE:
            require_verified(repository, digest)
        with client_for(registry) as client:
            previous = _check_unchanged(registry, client, repository.name, tag, expected)
            if previous == digest:
                action.notes.append("the tag already pointed there; nothing was changed")
                return RestoreResult(tag, digest, previous, changed=False)
            fetched = _fetch_target(registry, client, repository.name, digest)
            # Fetching the target took one request or several (an index's platform images): look at
            # the tag again right before writing it. Distribution has no conditional writes (no
            # If-Match on a manifest PUT), so a push landing between this HEAD and the PUT is still
            # overwritten; one landing after the PUT is caught by the check below.
            _check_unchanged(registry, client, repository.name, tag, expected)
            stored = client.put_manifest(repository.name, tag, fetched.raw, fetched.media_type)
            if stored != digest:
                raise DigestMismatch(digest, stored)
            verified = current_digest(client, repository.name, tag)
            # Where the tag is now is the user's doing only if it is where they pointed it.
            mine = verified == digest
            try:
                source = TagHistory.Source.USER if mine else TagHistory.Source.SYNC
                sync_tag(registry, client, repository.name, tag, source=source, user=user if mine else None)
            except RegistryError as error:
                # The tag has moved all the same: report success, and let the next sync catch up.
                action.notes.append(f"the cache was not refreshed: {error}")
            if not mine:
                # The PUT took (the registry answered with our digest), and a push moved the tag (or a
                # delete removed it) before the check: not a registry failure, and not what the user
                # asked for.
                now = f"moved it to {verified} right after; it points there now" if verified else "deleted it right after"
                raise ActionRefused(
                    f"Tag {tag} was pointed at {digest}, but another client {now}. Check what did it before "
                    "restoring again.",
                    status=409,
                )
            return RestoreResult(tag, digest, previous, changed=True)


# Rollback candidates ------------------------------------------------------------------------


@dataclass
class Candidate:
    manifest: Manifest
    pin: Pin | None
    # The tag's last stretch on this digest; None for a pinned version it never pointed at.
    pointed_since: datetime | None
    left_at: datetime | None
    tags: list[str]  # tags on it now; none: untagged, kept by the registry until deleted by digest


@dataclass
class Candidates:
    tag: str
    current: Tag | None
    versions: list[Candidate]


def rollback_candidates(repository: Repository, tag: str) -> Candidates | None:
    """Versions `tag` can go back to: pinned ones and its earlier digests that still exist,
    tagged or not (the sync keeps a tag's recent previous digests, see `sync.previous_digests`).
    None for a tag the repository neither has nor ever had."""
    current = (
        Tag.objects.filter(repository=repository, name=tag)
        .select_related("manifest")
        .only("name", "created", "pointed_at", *(f"manifest__{column}" for column in LIST_COLUMNS))
        .first()
    )
    if current is None and not TagHistory.objects.filter(repository=repository, tag=tag).exists():
        return None
    # A tag's periods never overlap, so the latest start and end on a digest are its last stretch.
    pointed = {
        digest: (since, left)
        for digest, since, left in TagHistory.objects.filter(repository=repository, tag=tag, until__isnull=False)
        .values("digest")
        .annotate(since=Max("since"), left=Max("until"))
        .values_list("digest", "since", "left")
    }
    pins = {pin.digest: pin for pin in repository_pins(repository)}
    digests = (pointed.keys() | pins.keys()) - {current.manifest.digest if current else None}
    manifests = list(
        Manifest.objects.filter(repository=repository, digest__in=digests, missing_since__isnull=True).only(
            *LIST_COLUMNS
        )
    )
    names: dict[int, list[str]] = defaultdict(list)
    for manifest_id, name in (
        Tag.objects.filter(manifest__in=manifests).order_by("version_key").values_list("manifest_id", "name")
    ):
        names[manifest_id].append(name)
    manifests.sort(key=lambda m: (m.created or NEVER, m.first_seen_at), reverse=True)
    return Candidates(
        tag,
        current,
        [Candidate(m, pins.get(m.digest), *pointed.get(m.digest, (None, None)), names[m.id]) for m in manifests],
    )


def deployment_tags(repository: Repository, limit: int = 20) -> list[str]:
    """Tags that have moved at least once (two periods or more), most moved first: the likely
    deployment tags.

    Grouped over ended periods only, which a partial index holds: every tag has an open period,
    and grouping them all cost more than the rest of a repository page with 10,000 tags. In SQL,
    because the same query through the ORM (an Exists annotation) took longer to build than the
    database took to answer it, on every repository page.
    """
    history = sql.table(TagHistory)
    periods = (
        f"COUNT(*) + (SELECT COUNT(*) FROM {history} current_period WHERE current_period.repository_id = %s"
        " AND current_period.tag = ended.tag AND current_period.until IS NULL)"
    )
    rows = sql.select(
        f"SELECT ended.tag FROM {history} ended WHERE ended.repository_id = %s AND ended.until IS NOT NULL"
        f" GROUP BY ended.tag HAVING {periods} > 1 ORDER BY {periods} DESC, ended.tag LIMIT %s",
        [repository.pk, repository.pk, repository.pk, limit],
    )
    return [tag for (tag,) in rows]


@dataclass
class Preview:
    """What a restore would do, read live from the registry (one page, so calls are fine here)."""

    tag: str
    digest: str
    current_digest: str | None
    gone: str  # why the target cannot be restored (it or a platform image is gone); "" when it can
    current: Manifest | None
    target: Manifest | None
    pin: Pin | None
    comparison: Comparison | None

    @property
    def target_exists(self) -> bool:
        return not self.gone

    @property
    def changes_nothing(self) -> bool:
        return self.current_digest == self.digest


def restore_preview(registry: Registry, repository: Repository, tag: str, digest: str) -> Preview:
    """The tag's digest now, whether the target still exists, and what differs between them.

    The target is fetched the way a restore fetches it, so a preview never offers what the
    restore would refuse, and a gone target leaves the cache (`_fetch_target`).
    Raises RegistryError when the registry cannot answer.
    """
    with client_for(registry) as client:
        now = current_digest(client, repository.name, tag)
        gone = ""
        if now != digest:
            try:
                _fetch_target(registry, client, repository.name, digest)
            except TargetGone as refused:
                gone = refused.fact
    cached = {
        manifest.digest: manifest
        for manifest in Manifest.objects.filter(repository=repository, digest__in={digest, now}).only(
            "missing_since", "first_seen_at", *MANIFEST_COLUMNS
        )
    }
    current, target = cached.get(now), cached.get(digest)
    comparison = None
    if current is not None and target is not None and now != digest:
        comparison = compare_manifests(repository, current, target)
    return Preview(
        tag=tag,
        digest=digest,
        current_digest=now,
        gone=gone,
        current=current,
        target=target,
        pin=Pin.objects.filter(repository=repository, digest=digest).select_related("created_by").first(),
        comparison=comparison,
    )

"""Registry notifications: parse the envelopes Distribution POSTs and apply them to the cache.

Events are hints, not facts: anyone holding the shared secret can post one, and a redelivered
event can be hours old. A push or delete is only applied as the registry shows it when asked
(HEAD the tag or digest), which the registry's short notification timeout leaves no room for:
the endpoint (`webhooks.py`) queues it as a background task (`tasks.py`). Pulls only touch
`last_pulled_at` and are applied before the endpoint answers. Redelivered events (same id) are ignored; pulls are not
recorded for that, since applying one twice changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from dashboard import sync
from dashboard.models import Manifest, NotificationEvent, OwnPush, Registry, Tag
from dashboard.registries import client_for
from dashboard.registry import is_valid_digest, is_valid_repository_name, is_valid_tag
from dashboard.registry.client import USER_AGENT
from dashboard.registry.mediatypes import IMAGE_MANIFESTS, INDEXES, SCHEMA1, normalize

ENVELOPE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.events.v1+json",
        "application/vnd.docker.distribution.events.v2+json",
        "application/json",
    }
)
MANIFEST_MEDIA_TYPES = IMAGE_MANIFESTS | INDEXES | SCHEMA1
# Distribution redelivers from an in-memory queue until delivery succeeds, so an id only needs
# remembering for as long as a registry might keep retrying.
EVENT_MEMORY = timedelta(days=7)
OWN_USER_AGENT = USER_AGENT.partition("/")[0] + "/"
# Distribution notifies within a second of a push; later (its endpoint was down) the event is
# only synced like anyone's. Bounds how long OwnPush rows are kept.
OWN_PUSH_WINDOW = timedelta(minutes=10)
# Distribution 2.8 posts one event per envelope (its queue hands the HTTP sink one event at a
# time; see the registry lab's FACTS.md and events/). 100 leaves room for a sender that
# batches, while bounding the rows and background tasks (one registry request or more each)
# that a single request can cause. A larger envelope is refused whole with 413.
MAX_EVENTS = 100
# Distribution queues a push event before it points the tag at the pushed manifest, so a HEAD
# sent at once can still see the previous digest, or no tag at all: seconds between looks.
PUSH_SETTLE_DELAYS = (0.1, 0.3, 1.0)


class InvalidEnvelope(ValueError):
    """The body is not a notification envelope we can use."""


class TooManyEvents(InvalidEnvelope):
    """The envelope holds more than MAX_EVENTS events."""


@dataclass(frozen=True)
class Event:
    id: str
    action: str  # push, pull, mount or delete
    repository: str
    media_type: str  # empty on delete events
    digest: str
    tag: str
    timestamp: datetime | None
    method: str  # of the request that caused the event
    user_agent: str

    @property
    def is_manifest(self) -> bool:
        return self.media_type in MANIFEST_MEDIA_TYPES


def parse_envelope(body: bytes) -> list[Event]:
    """`{"events": [...]}` as Events; InvalidEnvelope for anything else."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise InvalidEnvelope("The body is not JSON") from error
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise InvalidEnvelope('The body has no "events" list')
    if len(events) > MAX_EVENTS:
        raise TooManyEvents(f"{len(events)} events, more than the {MAX_EVENTS} an envelope may hold")
    return [_event(entry, i) for i, entry in enumerate(events)]


def _event(entry: Any, position: int) -> Event:
    where = f"events[{position}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("target"), dict):
        raise InvalidEnvelope(f"{where} is not an event with a target")
    target = entry["target"]
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    event = Event(
        id=_text(entry, "id", where),
        action=_text(entry, "action", where),
        repository=_text(target, "repository", f"{where}.target"),
        media_type=normalize(_text(target, "mediaType", f"{where}.target", required=False)),
        digest=_text(target, "digest", f"{where}.target", required=False),
        tag=_text(target, "tag", f"{where}.target", required=False),
        timestamp=_timestamp(entry.get("timestamp")),
        method=_text(request, "method", f"{where}.request", required=False),
        user_agent=_text(request, "useragent", f"{where}.request", required=False),
    )
    if len(event.id) > NotificationEvent._meta.get_field("event_id").max_length:
        raise InvalidEnvelope(f"{where}.id is too long")
    if not is_valid_repository_name(event.repository):
        raise InvalidEnvelope(f"{where}.target.repository is not a repository name")
    if event.digest and not is_valid_digest(event.digest):
        raise InvalidEnvelope(f"{where}.target.digest is not a digest")
    if event.tag and not is_valid_tag(event.tag):
        raise InvalidEnvelope(f"{where}.target.tag is not a tag")
    return event


def _text(obj: dict, key: str, where: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidEnvelope(f"{where}.{key} is missing or not a string")
    return value


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)  # Go's nanoseconds are cut to microseconds
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def handle_events(registry: Registry, events: list[Event]) -> list[Event]:
    """Apply pulls now; return the pushes and deletes still to check against the registry."""
    to_check = []
    for event in events:
        if event.action == "pull":
            record_pull(registry, event)
        elif (event.action == "delete" and (event.tag or event.digest)) or (
            event.action == "push" and event.is_manifest and event.tag
        ):
            _, new = NotificationEvent.objects.get_or_create(
                event_id=event.id, defaults={"action": event.action, "repository": event.repository}
            )
            # The dashboard's own pushes (a restore, a tag delete's tombstone) are already in
            # the cache when the event arrives: syncing them again took a third of the worker's
            # time in the soak. A process that died half way is repaired by the periodic sync.
            if new and not (event.action == "push" and is_own_push(registry, event)):
                to_check.append(event)
        # Everything else is about blobs (uploads, mounts) or a platform manifest pushed by
        # digest before its index, which arrives with a tag of its own.
    return to_check


def is_own_push(registry: Registry, event: Event) -> bool:
    """Whether the dashboard recorded pushing this tag to this digest within OWN_PUSH_WINDOW
    (registries.record_own_push). Each record answers for one event: a client pushing the
    same tag and digest again later is synced like any other."""
    recorded = OwnPush.objects.filter(
        registry=registry,
        repository=event.repository,
        tag=event.tag,
        digest=event.digest,
        pushed_at__gte=timezone.now() - OWN_PUSH_WINDOW,
    ).order_by("pushed_at")
    first = recorded.values_list("pk", flat=True).first()
    # Our event and a client's identical push handled at once: only one deletes the row.
    return first is not None and OwnPush.objects.filter(pk=first).delete()[0] == 1


def record_pull(registry: Registry, event: Event) -> int:
    """Set last_pulled_at of the pulled tag, or of every tag on the pulled digest.

    HEADs only ask for a digest (the dashboard's own sync sends one per tag), and the
    dashboard's reads are not pulls either; a real pull's GET is counted. Unlike pushes, our
    reads are still told by their User-Agent: recording every GET would cost a row each, and a
    client that sends our agent only hides its own pulls (hides nothing from the cache).
    """
    if not event.is_manifest or event.method == "HEAD" or event.user_agent.startswith(OWN_USER_AGENT):
        return 0
    when = min(event.timestamp or timezone.now(), timezone.now())
    tags = Tag.objects.filter(repository__registry=registry, repository__name=event.repository)
    if event.tag:
        tags = tags.filter(name=event.tag)
    elif event.digest:
        tags = tags.filter(manifest__digest=event.digest)
    else:
        return 0
    return tags.filter(Q(last_pulled_at__isnull=True) | Q(last_pulled_at__lt=when)).update(last_pulled_at=when)


def sync_pushed_tag(registry_id: int, repository: str, tag: str, digest: str) -> None:
    """Sync a tag the registry reported pushed as `digest`, once the registry shows the tag there.

    Waits only while the registry still shows what the cache knew before the push (the race in
    PUSH_SETTLE_DELAYS); any other answer means the tag moved on or was deleted since, and is
    synced at once. Waiting on those too kept the one worker asleep through busy pushes and
    deletes, and the cache fell minutes behind. After the last wait the registry's answer wins.
    """
    registry = Registry.objects.get(pk=registry_id)
    before = (
        Tag.objects.filter(repository__registry=registry, repository__name=repository, name=tag)
        .values_list("manifest__digest", flat=True)
        .first()
    )
    with client_for(registry) as client:
        for delay in PUSH_SETTLE_DELAYS:
            current = sync.head_digest(client, repository, tag)
            if not digest or current == digest or current != before:
                break
            time.sleep(delay)
        sync.sync_tag(registry, client, repository, tag, source=sync.Source.NOTIFICATION)


def sync_deleted(registry_id: int, repository: str, tag: str, digest: str) -> None:
    """Forget a tag (or a digest and its tags) the registry reported deleted, once a HEAD
    confirms the registry no longer has it. A forged or stale event, or a name pushed again
    since (its own push event syncs it), leaves the cache as it is: forgetting a stored
    previous digest would mark it missing and drop it from the rollback candidates."""
    registry = Registry.objects.get(pk=registry_id)
    rows = Tag if tag else Manifest
    named = {"name": tag} if tag else {"digest": digest}
    if not rows.objects.filter(repository__registry=registry, repository__name=repository, **named).exists():
        # Nothing cached to forget: the dashboard's own deletes (a tag delete's tombstone, a
        # version deleted through a page) are gone from the cache before their events arrive.
        return
    checked_at = timezone.now()
    with client_for(registry) as client:
        if sync.head_digest(client, repository, tag or digest) is not None:
            return
    sync.forget(registry, repository, tag=tag or None, digest=None if tag else digest or None, checked_at=checked_at)


def forget_handled_events() -> int:
    """Drop event ids old enough that no registry will deliver them again, and records of our
    own pushes too old to recognise."""
    OwnPush.objects.filter(pushed_at__lt=timezone.now() - OWN_PUSH_WINDOW).delete()
    deleted, _ = NotificationEvent.objects.filter(received_at__lt=timezone.now() - EVENT_MEMORY).delete()
    return deleted

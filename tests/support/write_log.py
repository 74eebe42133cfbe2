"""Replay a registry's history from a serializing fault proxy's log (FaultProxy(serialize=True)).

With one request at a time, the proxy's log is the order in which the registry applied them.
`RegistryModel` replays it: where every tag pointed before each write, when the dashboard last
read each tag, and when another client last moved or removed it. The stress test and the soak
check the dashboard's writes against it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from dashboard.registry.client import USER_AGENT
from dashboard.registry.mediatypes import TOMBSTONE_ARTIFACT_TYPE
from tests.support.fault_proxy import Seen

MANIFEST_PATH = re.compile(r"^/v2/(?P<repository>.+)/manifests/(?P<reference>[^/?]+)$")
TAGS_PATH = re.compile(r"^/v2/(?P<repository>.+)/tags/list(\?.*)?$")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_tombstone(body: bytes) -> bool:
    """Whether a manifest PUT carries one of the tombstones the dashboard deletes tags with."""
    try:
        manifest = json.loads(body)
    except ValueError:
        return False
    return isinstance(manifest, dict) and manifest.get("artifactType") == TOMBSTONE_ARTIFACT_TYPE


@dataclass
class Write:
    """A manifest write the registry applied: a PUT under a tag, or a DELETE by digest."""

    index: int
    seen: Seen
    repository: str
    reference: str  # the tag put, or the digest deleted
    ours: bool  # sent by the dashboard
    before: str | None = None  # PUT: where the tag pointed before
    removed: list[str] = field(default_factory=list)  # DELETE: the tags that went with the digest

    @property
    def digest(self) -> str:
        """PUT: the digest the tag points at now."""
        return sha256(self.seen.body)


@dataclass
class RegistryModel:
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    last_read: dict[tuple[str, str], int] = field(default_factory=dict)  # by the dashboard
    listed: dict[str, int] = field(default_factory=dict)  # the dashboard's last tag list
    last_write: dict[tuple[str, str], int] = field(default_factory=dict)  # by anyone else

    def step(self, index: int, seen: Seen) -> Write | None:
        """Apply one logged request; the write it made, if it made one."""
        ours = seen.agent == USER_AGENT
        listing = TAGS_PATH.match(seen.path)
        if listing and ours and seen.method == "GET":
            self.listed[listing["repository"]] = index
        match = MANIFEST_PATH.match(seen.path)
        if match is None:
            return None
        repository, reference = match["repository"], match["reference"]
        by_digest = reference.startswith("sha256:")
        if seen.method in ("GET", "HEAD"):
            if ours and not by_digest:
                self.last_read[repository, reference] = index
            return None
        if seen.method == "PUT" and seen.status == 201 and not by_digest:
            write = Write(index, seen, repository, reference, ours, before=self.tags.get((repository, reference)))
            self.tags[repository, reference] = write.digest
            if not ours:
                self.last_write[repository, reference] = index
            return write
        if seen.method == "DELETE" and seen.status == 202 and by_digest:
            removed = sorted(tag for (name, tag), digest in self.tags.items() if name == repository and digest == reference)
            for tag in removed:
                del self.tags[repository, tag]
                if not ours:
                    self.last_write[repository, tag] = index
            return Write(index, seen, repository, reference, ours, removed=removed)
        return None

    def moved_unseen(self, repository: str, tag: str, *, listing: bool = False) -> bool:
        """Another client moved or removed `tag` after the dashboard last read it (with `listing`:
        or listed the repository's tags, which is all a version delete knows of a tag created
        since): the window Distribution leaves open, as it has no conditional writes."""
        read = self.last_read.get((repository, tag), -1)
        if listing:
            read = max(read, self.listed.get(repository, -1))
        return self.last_write.get((repository, tag), -1) > read

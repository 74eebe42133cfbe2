"""What every destructive action shares: the permission check, the digest guard, the audit entry.

Each action (delete a tag, delete a version, pin, unpin, restore, retention) is one function
that calls `guarded_action`, so that the order is always the same: permission before any
registry call, then the digest guard, then the registry, then cache, history and audit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.http import HttpRequest

from dashboard import audit
from dashboard.access import AnyUser, role_on
from dashboard.models import AuditEntry, Repository, Role
from dashboard.registry import RegistryClient
from dashboard.registry.errors import NotFound, RegistryError
from dashboard.registry.manifests import is_valid_digest, is_valid_tag

# Before every recorded moment: "since the last garbage collection" when there was none, and
# the date of an image that has none (so it sorts after every dated one).
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class ActionRefused(Exception):
    """The action was not carried out; `message` tells the user why, `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class PermissionRefused(ActionRefused):
    def __init__(self, message: str = "You do not have the role this action needs.") -> None:
        super().__init__(message, status=403)


class NotVisible(ActionRefused):
    """The user may not see the repository: answered as a 404, so its name does not leak."""

    def __init__(self) -> None:
        super().__init__("No such repository.", status=404)


class DigestMoved(ActionRefused):
    """The tag no longer points where the user saw it: someone pushed in between."""

    def __init__(self, tag: str, expected: str, current: str | None) -> None:
        now = f"now points at {current}" if current else "no longer exists"
        super().__init__(
            f"Tag {tag} {now}, not at {expected} as shown. Nothing was changed; reload and check again.",
            status=409,
        )
        self.current = current


class TargetGone(ActionRefused):
    """The version to restore is no longer in the registry (deleted or garbage-collected)."""

    def __init__(self, digest: str, detail: str = "") -> None:
        # Also said by a preview, where nothing was tried yet.
        self.fact = f"Version {digest} no longer exists in the registry (deleted or garbage-collected){detail}"
        super().__init__(f"{self.fact}. Nothing was changed.", status=410)


def validate_tag_name(tag: str) -> None:
    if not is_valid_tag(tag):
        raise ActionRefused(
            f"{tag[:200]!r} is not a valid tag: use up to 128 letters, digits, underscores, periods and "
            "dashes, not starting with a period or dash.",
            status=400,
        )


def validate_digest(digest: str) -> None:
    if not is_valid_digest(digest):
        raise ActionRefused(f"{digest[:200]!r} is not a valid digest (sha256:<64 hex digits>).", status=400)


@dataclass
class ActionContext:
    """Who acts on which repository; collects what the audit entry will say."""

    request: HttpRequest | None
    user: AnyUser | None  # None: the command line
    repository: Repository
    action: str
    tag: str = ""
    digest_before: str = ""
    digest_after: str = ""
    notes: list[str] = field(default_factory=list)

    def audit(self, outcome: str, reason: str = "") -> AuditEntry:
        return audit.record(
            self.request,
            self.action,
            outcome,
            user=self.user,
            repository=self.repository.name,
            tag=self.tag,
            digest_before=self.digest_before,
            digest_after=self.digest_after,
            reason=reason or "; ".join(self.notes),
        )


def require_role(user: AnyUser | None, repository: Repository, minimum: int) -> None:
    if user is None:
        # The command line (cron, CI) acts as "system": whoever runs manage.py already holds the database.
        return
    role = role_on(user, repository.name)
    if role is None:
        raise NotVisible()
    if role < minimum:
        needed = Role(minimum).label
        raise PermissionRefused(f"This needs the {needed} role on {repository.name}.")


@contextmanager
def guarded_action(
    request: HttpRequest | None,
    user: AnyUser | None,
    repository: Repository,
    action: str,
    minimum: int,
    *,
    tag: str = "",
    digest_before: str = "",
) -> Iterator[ActionContext]:
    """Run an action body with the permission check first and an audit entry for every outcome.

    Refusals (`ActionRefused`) and registry errors are audited and re-raised; the body
    records success by returning normally.
    """
    context = ActionContext(request, user, repository, action, tag=tag, digest_before=digest_before)
    try:
        require_role(user, repository, minimum)
        yield context
    except ActionRefused as refused:
        context.audit(AuditEntry.Outcome.REFUSED, refused.message)
        raise
    except RegistryError as error:
        context.audit(AuditEntry.Outcome.FAILED, str(error))
        raise ActionRefused(f"The registry refused: {error}", status=502) from error
    context.audit(AuditEntry.Outcome.OK)


def current_digest(client: RegistryClient, repository: str, tag: str) -> str | None:
    """The tag's digest as the registry sees it right now; None when the tag is gone."""
    try:
        return client.head_manifest(repository, tag).digest
    except NotFound:
        return None


def check_digest(client: RegistryClient, repository: str, tag: str, expected: str) -> str:
    """The digest guard: refuse unless the tag still points at the digest the user was shown."""
    current = current_digest(client, repository, tag)
    if current != expected:
        raise DigestMoved(tag, expected, current)
    return current


"""Writing and reading the audit log: one entry per action or refused attempt."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from dashboard.access import AnyUser, is_admin, visible_names
from dashboard.models import AuditEntry

_current_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)


class AuditRequestMiddleware:
    """Remembers the request being served, so that model signals (a rule edited in the Django
    admin, a user added to a group) can name who did it. Outside a request they say "system"."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def current_request() -> HttpRequest | None:
    return _current_request.get()


def client_address(request: HttpRequest | None) -> str | None:
    """Where the request came from, for the audit log and django-axes' lockouts.

    Behind TRUSTED_PROXY_COUNT reverse proxies, each appends the address it was connected from
    to X-Forwarded-For, so the client is that many entries from the right; anything further
    left was sent by the client and could be forged. Without the setting the header is ignored.
    """
    if request is None:
        return None
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if proxies and len(forwarded) >= proxies:
        try:
            return str(ipaddress.ip_address(forwarded[-proxies]))
        except ValueError:
            # Not what a proxy writes: the request did not come through them all.
            pass
    return request.META.get("REMOTE_ADDR") or None


def record(
    request: HttpRequest | None,
    action: str,
    outcome: str,
    *,
    user=None,
    username: str = "",
    repository: str = "",
    tag: str = "",
    digest_before: str = "",
    digest_after: str = "",
    reason: str = "",
) -> AuditEntry:
    """Append one audit entry.

    `user` defaults to the request's user (nobody for the command line); `username` names who
    tried when nobody is signed in, e.g. the name typed into a failed login.
    """
    if user is None and request is not None:
        user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    if signed_in:
        label = user.get_username()
    else:
        label = username or ("anonymous" if request is not None else "system")
    return AuditEntry.objects.create(
        user=user if signed_in else None,
        username=label[:150],
        action=action,
        # Refused attempts may carry junk of any length; the row must still be written.
        repository=repository[:255],
        tag=tag[:128],
        digest_before=digest_before[:100],
        digest_after=digest_after[:100],
        outcome=outcome,
        reason=reason[:2000],
        remote_addr=client_address(request),
    )


def record_policy_change(request: HttpRequest, name: str, before: str, after: str) -> AuditEntry:
    """A retention policy added, changed or removed, on the dashboard's pages or in the Django
    admin: policies decide what gets deleted everywhere. `before` and `after` describe it
    (`retention.describe`), empty where there is no policy."""
    if not after:
        action, reason = "retention_policy_deleted", f"removed policy {name}: {before}"
    elif before:
        action, reason = "retention_policy_saved", f"changed policy {name} from {before} to {after}"
    else:
        action, reason = "retention_policy_saved", f"added policy {name}: {after}"
    return record(request, action, AuditEntry.Outcome.OK, reason=reason)


def entries_visible_to(user: AnyUser) -> QuerySet[AuditEntry]:
    """Admins see everything; others see entries of repositories they may see, and none that
    name no repository (logins, rule changes)."""
    entries = AuditEntry.objects.all()
    if is_admin(user):
        return entries
    entries = entries.exclude(repository="")
    visible = visible_names(user, "repository")
    return entries if visible is None else entries.filter(visible)

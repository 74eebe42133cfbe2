"""Writing the audit log: one call per action or refused attempt."""

from __future__ import annotations

from django.http import HttpRequest

from dashboard.models import AuditEntry


def client_address(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    request: HttpRequest | None,
    action: str,
    outcome: str,
    *,
    user=None,
    repository: str = "",
    tag: str = "",
    digest_before: str = "",
    digest_after: str = "",
    reason: str = "",
) -> AuditEntry:
    """Append one audit entry; `user` defaults to the request's user (None for the command line)."""
    if user is None and request is not None:
        user = request.user
    signed_in = user is not None and user.is_authenticated
    return AuditEntry.objects.create(
        user=user if signed_in else None,
        username=user.get_username() if signed_in else ("anonymous" if request is not None else "system"),
        action=action,
        repository=repository,
        tag=tag,
        digest_before=digest_before,
        digest_after=digest_after,
        outcome=outcome,
        reason=reason[:2000],
        remote_addr=client_address(request),
    )

"""Who may see and change which repository.

A user's role on a repository is the highest role any rule of their groups grants for a
pattern matching the full repository name. Repositories below viewer are invisible: every
lookup of them is a 404, so their names never leak.
"""

from __future__ import annotations

import re
from functools import reduce
from operator import or_

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet
from django.http import Http404

from dashboard.models import AccessRule, Registry, Repository, Role

AnyUser = User | AnonymousUser


def glob_to_regex(pattern: str) -> str:
    """A glob (`*`, `?`) as an anchored regex that SQLite's and PostgreSQL's regex both accept."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char.isalnum():
            parts.append(char)
        else:
            parts.append("\\" + char)
    return "^" + "".join(parts) + "$"


def default_role(user: AnyUser) -> int | None:
    if user.is_authenticated:
        return settings.DASHBOARD_DEFAULT_ROLE
    return Role.VIEWER if settings.DASHBOARD_PUBLIC_READ else None


def _rules(user: AnyUser) -> list[AccessRule]:
    """The user's rules, loaded once per request object."""
    if not user.is_authenticated:
        return []
    cached = getattr(user, "_access_rules", None)
    if cached is None:
        cached = list(AccessRule.objects.filter(group__user=user).only("pattern", "role"))
        user._access_rules = cached
    return cached


def role_on(user: AnyUser, repository_name: str) -> int | None:
    """The user's role on a repository, or None when they may not see it."""
    if user.is_authenticated and user.is_superuser:
        return Role.ADMIN
    roles = [rule.role for rule in _rules(user) if rule.matches(repository_name)]
    fallback = default_role(user)
    if fallback is not None:
        roles.append(fallback)
    return max(roles, default=None)


def is_admin(user: AnyUser) -> bool:
    """Admin anywhere: sees the whole audit log and manages rules."""
    if user.is_authenticated and user.is_superuser:
        return True
    return any(rule.role >= Role.ADMIN for rule in _rules(user))


def visible_repositories(user: AnyUser, registry: Registry) -> QuerySet[Repository]:
    """Repositories of `registry` the user may see, filtered in the database."""
    repositories = Repository.objects.filter(registry=registry)
    if (user.is_authenticated and user.is_superuser) or default_role(user) is not None:
        return repositories
    patterns = [rule.pattern for rule in _rules(user) if rule.role >= Role.VIEWER]
    if not patterns:
        return repositories.none()
    if "*" in patterns:
        return repositories
    return repositories.filter(reduce(or_, (Q(name__regex=glob_to_regex(p)) for p in patterns)))


def repository_for(user: AnyUser, registry: Registry, name: str, minimum: int = Role.VIEWER) -> Repository:
    """The named repository if the user holds `minimum` on it; 404 otherwise.

    A user who may see the repository but lacks the role also gets a 404 here: views that
    want to explain a missing role check `role_on` first.
    """
    role = role_on(user, name)
    if role is None or role < minimum:
        raise Http404("No such repository")
    try:
        return Repository.objects.get(registry=registry, name=name)
    except Repository.DoesNotExist:
        raise Http404("No such repository") from None

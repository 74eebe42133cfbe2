"""Who may see and change which repository.

A user's role on a repository is the highest role any rule of their groups grants for a
pattern matching the full repository name. Repositories below viewer are invisible: every
lookup of them is a 404, so their names never leak.

Admin on a pattern (`team-a/*`) is every action on those repositories. Admin of the whole
dashboard (managing rules, audit entries that name no repository) needs a superuser, an
admin rule on `*`, or DASHBOARD_DEFAULT_ROLE=admin: otherwise a namespace admin could read
other teams' audit trail or grant themselves everything.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce, wraps
from operator import or_

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.auth.views import redirect_to_login
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden

from dashboard.models import AccessRule, Registry, Repository, Role

AnyUser = User | AnonymousUser
View = Callable[..., HttpResponse]


def default_role(user: AnyUser) -> int | None:
    """The role on repositories no rule of the user names."""
    if user.is_authenticated:
        return settings.DASHBOARD_DEFAULT_ROLE
    return Role.VIEWER if settings.DASHBOARD_PUBLIC_READ else None


def _rules(user: AnyUser) -> list[AccessRule]:
    """The user's rules, loaded once per user object (that is, once per request)."""
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
    """Admin of the whole dashboard: sees the whole audit log and manages rules."""
    if not user.is_authenticated:
        return False
    if user.is_superuser or (default_role(user) or 0) >= Role.ADMIN:
        return True
    return any(rule.role >= Role.ADMIN and rule.pattern == "*" for rule in _rules(user))


def maintains_any(user: AnyUser) -> bool:
    """Whether the user may delete somewhere (maintainer or more on some repositories): the
    retention pages preview and run deletions only there."""
    if is_admin(user):
        return True
    roles = [rule.role for rule in _rules(user)] + [default_role(user) or 0]
    return max(roles) >= Role.MAINTAINER


def visible_names(user: AnyUser, field: str) -> Q | None:
    """A filter on `field` (a repository name) keeping what the user may see; None = everything.

    Works on any model that stores a repository name, including audit entries of repositories
    long deleted from the cache.
    """
    if (user.is_authenticated and user.is_superuser) or default_role(user) is not None:
        return None
    patterns = {rule.pattern for rule in _rules(user) if rule.role >= Role.VIEWER}
    if "*" in patterns:
        return None
    if not patterns:
        return Q(pk__in=[])
    return reduce(or_, (Q(**{f"{field}__glob": p}) for p in sorted(patterns)))


def visible_repositories(user: AnyUser, registry: Registry) -> QuerySet[Repository]:
    """Repositories of `registry` the user may see, filtered in the database."""
    repositories = Repository.objects.filter(registry=registry)
    visible = visible_names(user, "name")
    return repositories if visible is None else repositories.filter(visible)


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


def may_browse(user: AnyUser) -> bool:
    """Whether the user may open the dashboard at all (what they then see is per repository)."""
    return user.is_authenticated or settings.DASHBOARD_PUBLIC_READ


def _gate(view: View | None, fragment: bool, allows: Callable[[AnyUser], bool]) -> View | Callable[[View], View]:
    def decorate(view_func: View) -> View:
        @wraps(view_func)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if allows(request.user):
                return view_func(request, *args, **kwargs)
            # A login page swapped into a table cell, or parsed as JSON, helps nobody.
            if fragment or getattr(request, "htmx", False):
                return HttpResponseForbidden("Sign in to see this.", content_type="text/plain")
            return redirect_to_login(request.get_full_path())

        return wrapper

    return decorate(view) if view is not None else decorate


def login_or_public_read(view: View | None = None, /, *, fragment: bool = False) -> View | Callable[[View], View]:
    """Let anonymous users in only when DASHBOARD_PUBLIC_READ is on.

    Otherwise a full page redirects to the login page, while an htmx request, or any request
    to a view declared `fragment=True` (polling, refresh, JSON, exports), answers 403.

        @login_or_public_read
        def repository(request, name): ...

        @login_or_public_read(fragment=True)
        def refresh_status(request, name): ...
    """
    return _gate(view, fragment, may_browse)


def signed_in(view: View | None = None, /, *, fragment: bool = False) -> View | Callable[[View], View]:
    """Like `login_or_public_read`, but public read does not open the view (the audit log names
    people; the access page describes the rules)."""
    return _gate(view, fragment, lambda user: user.is_authenticated)

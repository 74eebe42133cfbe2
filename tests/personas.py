"""People with roles, for tests: a user, their own group, and one access rule."""

from __future__ import annotations

from django.contrib.auth.models import Group, User

from dashboard.models import AccessRule

# A fast hasher for tests that sign in through the real form: PBKDF2 costs ~0.5 s per hash.
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_user(
    username: str,
    *,
    pattern: str | None = None,
    role: int | None = None,
    superuser: bool = False,
    password: str | None = None,
) -> User:
    """A user; with `pattern` and `role`, a member of a group of their own holding that rule."""
    if superuser:
        user = User.objects.create_superuser(username, password=password)
    else:
        user = User.objects.create_user(username, password=password)
    if pattern is not None and role is not None:
        grant(user, pattern, role)
    return user


def grant(user: User, pattern: str, role: int) -> AccessRule:
    group, _ = Group.objects.get_or_create(name=f"{user.username}-group")
    user.groups.add(group)
    return AccessRule.objects.create(group=group, pattern=pattern, role=role)

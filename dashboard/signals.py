"""Audit entries for sign-ins and for changes of who may do what."""

from __future__ import annotations

from axes.signals import user_locked_out
from django.contrib.auth.models import Group, User
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from dashboard import attachments, audit
from dashboard.models import AccessRule, AuditEntry, TrustedKey

OK = AuditEntry.Outcome.OK
REFUSED = AuditEntry.Outcome.REFUSED


@receiver(user_login_failed)
def audit_login_failure(sender, credentials: dict, request=None, **kwargs) -> None:
    # django-axes (connected first, as it is installed first) has just recorded the failure;
    # when it locked the sign-in or refused it as locked, `audit_lockout` writes the entry.
    if getattr(request, "axes_locked_out", False):
        return
    # Only the name that was typed: django already masks the password, and it is not kept.
    audit.record(request, "login_failed", REFUSED, username=str(credentials.get("username", "")))


@receiver(user_locked_out)
def audit_lockout(sender, request, username: str | None = None, **kwargs) -> None:
    """Sent by django-axes when a failure locks the sign-in, and for each attempt while locked."""
    audit.record(request, "login_locked_out", REFUSED, username=username or "", reason="too many failed sign-ins")


def _record_access_change(action: str, reason: str) -> None:
    # The acting user comes from the request being served (the Django admin); "system" otherwise.
    audit.record(audit.current_request(), action, OK, reason=reason)


@receiver(pre_save, sender=AccessRule)
def remember_rule_before_change(sender, instance: AccessRule, **kwargs) -> None:
    if instance.pk is not None:
        instance._audit_before = str(AccessRule.objects.select_related("group").filter(pk=instance.pk).first() or "")


@receiver(post_save, sender=AccessRule)
def audit_rule_saved(sender, instance: AccessRule, created: bool, **kwargs) -> None:
    before = getattr(instance, "_audit_before", "")
    if created:
        reason = f"added rule {instance}"
    elif before and before != str(instance):
        reason = f"changed rule {before} to {instance}"
    else:
        return
    _record_access_change("rule_changed", reason)


@receiver(post_delete, sender=AccessRule)
def audit_rule_deleted(sender, instance: AccessRule, **kwargs) -> None:
    _record_access_change("rule_changed", f"removed rule {instance}")


@receiver(m2m_changed, sender=User.groups.through)
def audit_membership(sender, instance, action: str, reverse: bool, pk_set: set | None, **kwargs) -> None:
    """Joining a group grants its rules, so membership changes are access changes too."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if action == "pre_clear":
        # pk_set is None for clear: read who is about to lose membership now.
        pk_set = set((instance.user_set if reverse else instance.groups).values_list("pk", flat=True))
    if not pk_set:
        return
    if reverse:
        users = sorted(User.objects.filter(pk__in=pk_set).values_list("username", flat=True))
        groups = [instance.name]
    else:
        users = [instance.get_username()]
        groups = sorted(Group.objects.filter(pk__in=pk_set).values_list("name", flat=True))
    verb = "added to" if action == "post_add" else "removed from"
    _record_access_change("membership_changed", f"{', '.join(users)} {verb} {', '.join(groups)}")


@receiver(post_save, sender=TrustedKey)
def trusted_key_saved(sender, instance: TrustedKey, created: bool, **kwargs) -> None:
    _record_access_change("trusted_key_changed", f"{'added' if created else 'changed'} trusted key {instance.name}")
    attachments.summarize_all()


@receiver(post_delete, sender=TrustedKey)
def trusted_key_deleted(sender, instance: TrustedKey, **kwargs) -> None:
    _record_access_change("trusted_key_changed", f"removed trusted key {instance.name}")
    attachments.summarize_all()

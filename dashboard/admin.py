from django.contrib import admin, messages
from django.contrib.auth.models import User

from dashboard import audit, models, retention


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records of what happened: admins may look, nobody may add, change or delete."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    """Adds, changes and deletes here are audited like the same edits on the dashboard's pages.
    `describe` puts a row in words; `record` writes the entry from the row and its words before
    and after the edit ("" where there is no row)."""

    def describe(self, obj) -> str:
        raise NotImplementedError

    def record(self, request, obj, before: str, after: str) -> None:
        raise NotImplementedError

    def save_model(self, request, obj, form, change) -> None:
        # The form has already written the submitted values onto `obj`: describe the stored row.
        before = self.describe(type(obj).objects.get(pk=obj.pk)) if change else ""
        super().save_model(request, obj, form, change)
        self.record(request, obj, before, self.describe(obj))

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        self.record(request, obj, self.describe(obj), "")

    def delete_queryset(self, request, queryset) -> None:
        # The changelist's "delete selected" action: one entry per row, as when deleting one.
        for obj in queryset:
            self.delete_model(request, obj)


def _edit_reason(before: str, after: str) -> str:
    if not before:
        return f"added in the Django admin: {after}"
    if not after:
        return f"removed in the Django admin: {before}"
    return f"changed in the Django admin from {before} to {after}"


@admin.register(models.Registry)
class RegistryAdmin(admin.ModelAdmin):
    list_display = ["name", "url", "reachable", "api_version", "delete_enabled", "last_successful_sync_at"]


@admin.register(models.Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = ["name", "registry", "tag_count", "total_size", "last_pushed_at", "last_synced_at"]
    list_filter = ["registry"]
    search_fields = ["name"]


@admin.register(models.RemovedRepository)
class RemovedRepositoryAdmin(ReadOnlyAdmin):
    """Repositories that left the registry's catalog: hidden everywhere else, kept with their
    pins and tag history, and restored by the sync when the name comes back."""

    list_display = ["name", "registry", "removed_at", "pins", "history_rows"]
    list_filter = ["registry"]
    search_fields = ["name"]
    ordering = ["-removed_at"]

    def get_queryset(self, request):
        return self.model.with_kept_rows()

    @admin.display(description="pins kept", ordering="pin_count")
    def pins(self, obj) -> int:
        return obj.pin_count

    @admin.display(description="tag history rows kept", ordering="history_count")
    def history_rows(self, obj) -> int:
        return obj.history_count


@admin.register(models.Manifest)
class ManifestAdmin(admin.ModelAdmin):
    list_display = ["digest", "repository", "kind", "media_type", "size", "created"]
    list_filter = ["kind"]
    search_fields = ["digest", "repository__name"]
    raw_id_fields = ["repository"]
    exclude = ["raw", "raw_config"]


@admin.register(models.Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "repository", "manifest", "created", "last_seen_at", "last_pulled_at"]
    search_fields = ["name", "repository__name"]
    raw_id_fields = ["repository", "manifest"]


@admin.register(models.TagHistory)
class TagHistoryAdmin(AuditedAdmin):
    """History is what the team relies on to roll back: a hand edit is audited."""

    list_display = ["tag", "repository", "digest", "since", "until", "started_by", "ended_by"]
    search_fields = ["tag", "repository__name", "digest"]
    raw_id_fields = ["repository", "user", "ended_by_user"]

    def describe(self, period: models.TagHistory) -> str:
        until = f"{period.until:%Y-%m-%d %H:%M:%S}" if period.until else "now"
        return f"{period.repository.name}:{period.tag} on {period.digest} from {period.since:%Y-%m-%d %H:%M:%S} until {until}"

    def record(self, request, period: models.TagHistory, before: str, after: str) -> None:
        audit.record(
            request,
            "tag_history_edited" if after else "tag_history_deleted",
            models.AuditEntry.Outcome.OK,
            repository=period.repository.name,
            tag=period.tag,
            digest_before=period.digest,
            reason=_edit_reason(before, after),
        )


@admin.register(models.Pin)
class PinAdmin(AuditedAdmin):
    """Audited as pin and unpin, like the dashboard's."""

    list_display = ["repository", "digest", "reason", "created_by", "created_at"]
    raw_id_fields = ["repository"]
    readonly_fields = ["created_by"]  # whoever adds it here

    def describe(self, pin: models.Pin) -> str:
        tags = f" (tags then: {', '.join(pin.tags_at_pin)})" if pin.tags_at_pin else ""
        return f"{pin.repository.name}@{pin.digest}: {pin.reason}{tags}"

    def record(self, request, pin: models.Pin, before: str, after: str) -> None:
        audit.record(
            request,
            "pin" if after else "unpin",
            models.AuditEntry.Outcome.OK,
            repository=pin.repository.name,
            digest_before=pin.digest,
            reason=_edit_reason(before, after),
        )

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(models.ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """A token acts as its user, so staff make tokens for themselves and see only theirs; only
    superusers make them for others. A token's user never changes: a token someone already
    holds, moved to another user, would act as that user."""

    list_display = ["name", "user", "prefix", "read_only", "expires_at", "created_at", "last_used_at"]
    list_filter = ["read_only"]
    search_fields = ["name", "user__username", "prefix"]
    raw_id_fields = ["user"]
    fields = ["user", "name", "read_only", "expires_at", "prefix", "created_at", "last_used_at"]

    def get_queryset(self, request):
        tokens = super().get_queryset(request)
        return tokens if request.user.is_superuser else tokens.filter(user=request.user)

    def get_readonly_fields(self, request, obj=None):
        fixed = ["prefix", "created_at", "last_used_at"]
        return fixed if obj is None else [*fixed, "user"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            # Anyone else's id is then "not one of the available choices".
            kwargs["queryset"] = User.objects.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            # Only the hash is stored, so this message is the one chance to copy the token.
            token = obj.new_secret()
            messages.warning(request, f"Token for {obj.user}: {token} (copy it now, it will not be shown again)")
        super().save_model(request, obj, form, change)
        if not change:
            reason = f"{obj} for {obj.user}: {obj.terms}"
            audit.record(request, "api_token_create", models.AuditEntry.Outcome.OK, reason=reason)


@admin.register(models.AccessRule)
class AccessRuleAdmin(admin.ModelAdmin):
    list_display = ["group", "pattern", "role"]
    list_filter = ["role", "group"]


@admin.register(models.RetentionPolicy)
class RetentionPolicyAdmin(AuditedAdmin):
    """Edits here are audited like those on the dashboard's retention pages."""

    list_display = ["name", "repository_pattern", "keep_newest", "older_than_days", "enabled"]
    readonly_fields = ["created_at"]

    def describe(self, policy: models.RetentionPolicy) -> str:
        return retention.describe(policy)

    def record(self, request, policy: models.RetentionPolicy, before: str, after: str) -> None:
        audit.record_policy_change(request, policy.name, before, after)


@admin.register(models.TrustedKey)
class TrustedKeyAdmin(admin.ModelAdmin):
    """Keys whose signatures count as verified; adding or removing one re-checks every version."""

    list_display = ["name", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(models.DeletedVersion)
class DeletedVersionAdmin(ReadOnlyAdmin):
    """What was deleted through the dashboard and the bytes the registry's garbage collection can
    free: the storage page counts pending bytes from these rows, so they are not edited by hand."""

    list_display = ["deleted_at", "repository", "digest", "freed_bytes", "registry"]
    list_filter = ["registry"]
    search_fields = ["repository", "digest"]
    date_hierarchy = "deleted_at"


@admin.register(models.AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log is append-only, also for admins."""

    list_display = ["created_at", "username", "action", "repository", "tag", "outcome"]
    list_filter = ["action", "outcome"]
    search_fields = ["username", "repository", "tag", "digest_before", "digest_after"]

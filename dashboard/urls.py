from django.urls import path

from dashboard import api, audit_views, deletion_views, rollback_views, storage_views, task_views, views, webhooks

app_name = "dashboard"

# Repository names contain slashes, so sub-pages follow GitLab's `/-/` separator: no name
# component can be a lone "-", and the longer routes come first because `path:` is greedy.
urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("hooks/registry/", webhooks.registry_events, name="registry-events"),
    path("refresh/", views.catalog_refresh, name="catalog-refresh"),
    path("repositories/<path:name>/-/tags/<str:tag>/", views.tag, name="tag"),
    path("repositories/<path:name>/-/manifests/<str:digest>/", views.manifest, name="manifest"),
    path("repositories/<path:name>/-/refresh/", views.repository_refresh, name="repository-refresh"),
    path("repositories/<path:name>/-/tags/<str:tag>/history/", rollback_views.tag_history, name="tag-history"),
    path("repositories/<path:name>/-/pin/", rollback_views.pin, name="pin"),
    path("repositories/<path:name>/-/unpin/", rollback_views.unpin, name="unpin"),
    path("repositories/<path:name>/-/restore/", rollback_views.restore, name="restore"),
    path("repositories/<path:name>/-/compare/", rollback_views.compare, name="compare"),
    path("repositories/<path:name>/-/rollback/", rollback_views.rollback_candidates, name="rollback"),
    path("repositories/<path:name>/-/tags/<str:tag>/delete/", deletion_views.delete_tag, name="delete-tag"),
    path("repositories/<path:name>/-/manifests/<str:digest>/delete/", deletion_views.delete_version, name="delete-version"),
    path("repositories/<path:name>/-/delete/preview/", deletion_views.bulk_delete_preview, name="bulk-delete-preview"),
    path("repositories/<path:name>/-/delete/", deletion_views.bulk_delete, name="bulk-delete"),
    path("repositories/<path:name>/", views.repository, name="repository"),
    path("tasks/<uuid:task_id>/", task_views.task_status, name="task-status"),
    path("audit/", audit_views.audit_log, name="audit"),
    path("audit/export.csv", audit_views.audit_export, name="audit-export"),
    path("access/", audit_views.access_rules, name="access"),
    path("access/rules/", audit_views.access_rule_add, name="access-rule-add"),
    path("access/rules/<int:pk>/delete/", audit_views.access_rule_delete, name="access-rule-delete"),
    path("pins/", rollback_views.pins, name="pins"),
    path("retention/", deletion_views.retention_policies, name="retention"),
    path("retention/new/", deletion_views.retention_policy_edit, name="retention-new"),
    path("retention/<int:pk>/edit/", deletion_views.retention_policy_edit, name="retention-edit"),
    path("retention/preview/", deletion_views.retention_preview, name="retention-preview"),
    path("retention/apply/", deletion_views.retention_apply, name="retention-apply"),
    path("storage/", storage_views.storage_page, name="storage"),
    path("storage/growth/", storage_views.storage_growth, name="storage-growth"),
    path("storage/gc-done/", deletion_views.storage_gc_done, name="storage-gc-done"),
    path("account/api-tokens/", rollback_views.api_tokens, name="api-tokens"),
    path("account/api-tokens/<int:pk>/revoke/", rollback_views.api_token_revoke, name="api-token-revoke"),
    path("api/v1/repositories/", api.repositories, name="api-repositories"),
    path("api/v1/storage/", api.storage_usage, name="api-storage"),
    path("api/v1/repositories/<path:name>/-/tags/<str:tag>/restore/", api.restore, name="api-restore"),
    path("api/v1/repositories/<path:name>/-/tags/<str:tag>/candidates/", api.candidates, name="api-candidates"),
    path("api/v1/repositories/<path:name>/-/tags/<str:tag>/", api.tag, name="api-tag"),
    path("api/v1/repositories/<path:name>/-/tags/", api.tags, name="api-tags"),
    path("api/v1/repositories/<path:name>/-/pins/<str:digest>/", api.pin, name="api-pin"),
    path("api/v1/repositories/<path:name>/-/pins/", api.pins, name="api-pins"),
]

"""Pages for deleting: one tag, a whole version, many tags; retention policies; recording that
garbage collection ran (the storage page itself is in `storage_views`).

Views validate input, call one function of `deletion` or `retention`, and render; refusals
come back with the refusal's status and message. Every mutating URL is POST-only, except the
confirmation pages, which show the form on GET and act on POST.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django.views.decorators.vary import vary_on_headers

from dashboard import audit, deletion, retention
from dashboard.access import is_admin, repository_for, signed_in
from dashboard.actions import ActionRefused, require_role
from dashboard.attachments import attached_only_to
from dashboard.models import Manifest, Registry, Repository, RetentionPolicy, Role, Tag
from dashboard.registries import configured_registry
from dashboard.registry.errors import RegistryError
from dashboard.rendering import refusal_page

DIALOG_TARGET = "delete-dialog"
BULK_RESULTS = "bulk-results"


# Forms --------------------------------------------------------------------------------------


class DeleteTagForm(forms.Form):
    # Checked by the action, so that a malformed value is audited like any refusal.
    digest = forms.CharField(max_length=100)


class DeleteVersionForm(forms.Form):
    confirm = forms.CharField(max_length=255, label="Type the repository name to confirm")
    delete_children = forms.BooleanField(required=False, label="Also delete its platform images that nothing else uses")
    delete_attachments = forms.BooleanField(
        required=False, label="Also delete its signatures, attestations, SBOMs and referrers"
    )

    def __init__(self, *args, repository_name: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.repository_name = repository_name

    def clean_confirm(self) -> str:
        typed = self.cleaned_data["confirm"].strip()
        if typed != self.repository_name:
            raise forms.ValidationError(f"Type the repository name exactly: {self.repository_name}")
        return typed


class RetentionPolicyForm(forms.ModelForm):
    class Meta:
        model = RetentionPolicy
        fields = [
            "name",
            "repository_pattern",
            "tag_include",
            "tag_exclude",
            "keep_newest",
            "older_than_days",
            "keep_pulled_within_days",
            "delete_attachments",
            "enabled",
        ]
        help_texts = {
            "repository_pattern": "Glob on the full repository name: team-a/*, website-*, *",
            "tag_include": "Regular expression the whole tag must match, e.g. main-.* (empty: every tag).",
            "tag_exclude": "Regular expression; tags it matches in full are never deleted, e.g. latest|stable|v\\d+\\..*",
            "keep_newest": "Keep the newest N tags the policy covers, by created date.",
            "older_than_days": "Delete only tags created more than D days ago.",
            "keep_pulled_within_days": "Keep tags pulled within X days (when the registry reports pulls).",
            "delete_attachments": "When a version goes, also delete its signatures, attestations, SBOMs and referrers "
            "(not those also attached to a version that stays, nor pinned ones). Off: they stay, stored and tagged.",
            "enabled": "Run by `manage.py apply_retention` and “Apply all enabled policies”.",
        }


class RetentionQuery(forms.Form):
    policy = forms.ModelChoiceField(
        queryset=RetentionPolicy.objects.all(), to_field_name="name", required=False, empty_label="All enabled policies"
    )

    def __init__(self, *args, policies: QuerySet[RetentionPolicy], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only the policies the user may see: naming another is answered like a missing one.
        self.fields["policy"].queryset = policies

    def unknown_policy(self) -> bool:
        return self.has_error("policy", "invalid_choice")


class RetentionApplyForm(RetentionQuery):
    fingerprint = forms.CharField(max_length=64)


# Helpers ------------------------------------------------------------------------------------


def _repository(request: HttpRequest, name: str) -> tuple[Registry, Repository]:
    registry = configured_registry()
    return registry, repository_for(request.user, registry, name)


def _refused(request: HttpRequest, message: str, status: int, back: str) -> HttpResponse:
    return refusal_page(request, message, status, back, heading="Nothing was deleted")


def _page_or_dialog(request: HttpRequest, page: str, fragment: str, context: dict, status: int) -> HttpResponse:
    """The confirmation as a page, or only its form when htmx loads it into the dialog."""
    dialog = request.htmx and request.htmx.target == DIALOG_TARGET
    return render(request, fragment if dialog else page, context, status=status)


def _selection(data: QueryDict) -> dict[str, str]:
    """The checked tags with the digest each row showed (`digest:<tag>`)."""
    return {tag: data.get(f"digest:{tag}", "") for tag in data.getlist("tags")}


# One tag ------------------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@signed_in
@vary_on_headers("HX-Request", "HX-Target")
def delete_tag(request: HttpRequest, name: str, tag: str) -> HttpResponse:
    registry, repository = _repository(request, name)
    found = get_object_or_404(Tag.objects.select_related("manifest"), repository=repository, name=tag)
    back = reverse("dashboard:repository", args=[repository.name])
    error, status = "", 200
    if request.method == "POST":
        form = DeleteTagForm(request.POST)
        if form.is_valid():
            others = deletion.siblings(found)
            try:
                finished = deletion.delete_tag(request, request.user, repository, tag, form.cleaned_data["digest"])
            except ActionRefused as refused:
                error, status = refused.message, refused.status
                # The refusal may have taught the cache something: where the tag points now, or
                # that deletes are disabled.
                found = Tag.objects.select_related("manifest").filter(pk=found.pk).first() or found
                registry.refresh_from_db()
            else:
                messages.success(request, _tag_deleted_message(tag, found.manifest, others, finished))
                return HttpResponseRedirect(back)
        else:
            error, status = "The form was incomplete: reload the page and try again.", 400
    else:
        try:
            require_role(request.user, repository, Role.MAINTAINER)
        except ActionRefused as refused:
            error, status = refused.message, refused.status
    context = {
        "registry": registry,
        "repository": repository,
        "tag": found,
        "manifest": found.manifest,
        "siblings": deletion.siblings(found),
        "version_frees": deletion.estimate_freed(repository, [found.manifest.digest]),
        "pin": repository.pins.filter(digest=found.manifest.digest).select_related("created_by").first(),
        "error": error,
        "may_delete": status != 403,
        "back": back,
    }
    return _page_or_dialog(
        request, "dashboard/delete/confirm_tag.html", "dashboard/delete/_confirm_tag.html", context, status
    )


def _tag_deleted_message(tag: str, manifest: Manifest, others: list[str], finished: str | None) -> str:
    deleted = (
        f"Deleted tag {tag}: this finished an earlier delete of it that did not finish."
        if finished
        else f"Deleted tag {tag}."
    )
    if others:
        names = ", ".join(others[:5]) + (" …" if len(others) > 5 else "")
        return f"{deleted} {names} still {'points' if len(others) == 1 else 'point'} at {manifest.digest}."
    return (
        f"{deleted} Its version {manifest.digest} had no other tag: it stays stored and pullable by "
        "digest, but is no longer listed here."
    )


# A whole version ----------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@signed_in
def delete_version(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    registry, repository = _repository(request, name)
    manifest = get_object_or_404(Manifest, repository=repository, digest=digest)
    back = reverse("dashboard:manifest", args=[repository.name, digest])
    form = DeleteVersionForm(request.POST or None, repository_name=repository.name)
    error, status = "", 200
    if request.method == "POST":
        if form.is_valid():
            children = request.POST.getlist("children") if form.cleaned_data["delete_children"] else []
            attached = request.POST.getlist("attachments") if form.cleaned_data["delete_attachments"] else []
            try:
                deleted = deletion.delete_version(
                    request,
                    request.user,
                    repository,
                    digest,
                    request.POST.getlist("tags"),
                    children=children,
                    attachments=attached,
                )
            except ActionRefused as refused:
                error, status = refused.message, refused.status
                registry.refresh_from_db()
            else:
                messages.success(request, _version_deleted_message(deleted))
                return HttpResponseRedirect(reverse("dashboard:repository", args=[repository.name]))
        else:
            status = 400
    else:
        try:
            require_role(request.user, repository, Role.MAINTAINER)
        except ActionRefused as refused:
            error, status = refused.message, refused.status
    children = deletion.index_children(repository, [digest]).get(digest, [])
    orphans = [child for child in children if child.orphaned]
    context = {
        "registry": registry,
        "repository": repository,
        "manifest": manifest,
        "tags": list(manifest.tags.order_by("version_key").values_list("name", flat=True)),
        "children": children,
        "orphans": orphans,
        "attached": _attached_rows(repository, digest),
        "freed": _freed_estimate(repository, manifest, orphans),
        "pin": repository.pins.filter(digest=digest).select_related("created_by").first(),
        "form": form,
        "error": error,
        "may_delete": status != 403,
        "back": back,
    }
    return render(request, "dashboard/delete/confirm_version.html", context, status=status)


def _freed_estimate(repository: Repository, manifest: Manifest, orphans: list[deletion.Child]) -> dict[str, int]:
    """Bytes garbage collection would free: the version alone, and with its orphaned platform images."""
    estimate = {"alone": deletion.estimate_freed(repository, [manifest.digest])}
    if orphans:
        estimate["with_children"] = deletion.estimate_freed(repository, [manifest.digest, *(c.digest for c in orphans)])
    return estimate


def _attached_rows(repository: Repository, digest: str) -> list[tuple[str, tuple[str, ...]]]:
    """(digest, tags) of what is attached to the version alone: the tags go with them."""
    return [(artifact.digest, artifact.tags) for artifact in attached_only_to(repository, [digest])[digest]]


def _version_deleted_message(deleted: deletion.VersionDeleted) -> str:
    tags = f" and its tags {', '.join(deleted.tags)}" if deleted.tags else ""
    children = f", with {len(deleted.children)} platform image(s)" if deleted.children else ""
    attached = f", with {len(deleted.attachments)} attached artifact(s)" if deleted.attachments else ""
    return f"Deleted version {deleted.digest}{tags}{children}{attached}. Disk space returns after garbage collection."


# Many tags ----------------------------------------------------------------------------------


@require_POST
@signed_in
def bulk_delete_preview(request: HttpRequest, name: str) -> HttpResponse:
    registry, repository = _repository(request, name)
    back = reverse("dashboard:repository", args=[repository.name])
    try:
        require_role(request.user, repository, Role.MAINTAINER)
    except ActionRefused as refused:
        return _refused(request, refused.message, refused.status, back)
    selection = _selection(request.POST)
    if not selection:
        return _refused(request, "Select at least one tag to delete.", 400, back)
    if len(selection) > deletion.BULK_LIMIT:
        return _refused(request, f"Select at most {deletion.BULK_LIMIT} tags at a time.", 400, back)
    try:
        rows = deletion.bulk_preview(repository, selection)
    except RegistryError as error:
        return _refused(request, f"The registry could not be asked where the tags point: {error}", 502, back)
    context = {
        "registry": registry,
        "repository": repository,
        "rows": rows,
        "deleting": [row for row in rows if row.will_delete],
        "back": back,
        "results_id": BULK_RESULTS,
    }
    return render(request, "dashboard/delete/bulk_preview.html", context)


@require_POST
@signed_in
@vary_on_headers("HX-Request", "HX-Target")
def bulk_delete(request: HttpRequest, name: str) -> HttpResponse:
    registry, repository = _repository(request, name)
    back = reverse("dashboard:repository", args=[repository.name])
    selection = _selection(request.POST)
    if not selection:
        return _refused(request, "Select at least one tag to delete.", 400, back)
    try:
        outcomes = deletion.bulk_delete(request, request.user, repository, selection)
    except ActionRefused as refused:
        return _refused(request, refused.message, refused.status, back)
    context = {"repository": repository, "outcomes": outcomes, "back": back, "results_id": BULK_RESULTS}
    fragment = request.htmx and request.htmx.target == BULK_RESULTS
    return render(
        request, "dashboard/delete/_bulk_results.html" if fragment else "dashboard/delete/bulk_results.html", context
    )


# Retention ----------------------------------------------------------------------------------


@require_safe
@signed_in
def retention_policies(request: HttpRequest) -> HttpResponse:
    policies = retention.policies_visible_to(request.user, configured_registry())
    context = {
        "policies": [(policy, retention.describe(policy)) for policy in policies],
        "can_manage": is_admin(request.user),
    }
    return render(request, "dashboard/delete/retention_list.html", context)


@require_http_methods(["GET", "HEAD", "POST"])
@signed_in
def retention_policy_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """Admins manage policies (they decide what may be deleted everywhere); maintainers run them."""
    if not is_admin(request.user):
        raise PermissionDenied("Only admins manage retention policies.")
    policy = get_object_or_404(RetentionPolicy, pk=pk) if pk is not None else None
    # Before validation, which writes the submitted values onto the instance.
    before = retention.describe(policy) if policy is not None else ""
    form = RetentionPolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        audit.record_policy_change(request, saved.name, before, retention.describe(saved))
        messages.success(request, f"Saved policy {saved.name}. Preview it before applying it.")
        return HttpResponseRedirect(f"{reverse('dashboard:retention-preview')}?{urlencode({'policy': saved.name})}")
    status = 400 if request.method == "POST" else 200
    return render(request, "dashboard/delete/retention_form.html", {"form": form, "policy": policy}, status=status)


def _retention_context(
    request: HttpRequest, registry: Registry, policy: RetentionPolicy | None, policies: QuerySet[RetentionPolicy]
) -> dict:
    plan = retention.plan(registry, retention.deletable_repositories(request.user, registry), policy, among=policies)
    return {
        "plan": plan,
        "policy": policy,
        "policy_choices": policies,
        "registry": registry,
        "fingerprint": plan.fingerprint(),
    }


@require_safe
@signed_in
def retention_preview(request: HttpRequest) -> HttpResponse:
    """The dry run: what applying would delete in the repositories the user may delete in."""
    registry = configured_registry()
    policies = retention.policies_visible_to(request.user, registry)
    query = RetentionQuery(request.GET, policies=policies)
    if not query.is_valid():
        raise Http404("No such retention policy")
    context = _retention_context(request, registry, query.cleaned_data["policy"], policies)
    return render(request, "dashboard/delete/retention_preview.html", context)


@require_POST
@signed_in
def retention_apply(request: HttpRequest) -> HttpResponse:
    registry = configured_registry()
    policies = retention.policies_visible_to(request.user, registry)
    form = RetentionApplyForm(request.POST, policies=policies)
    back = reverse("dashboard:retention")
    if form.unknown_policy():
        raise Http404("No such retention policy")
    if not form.is_valid():
        return _refused(request, "The form was incomplete: open the preview again.", 400, back)
    policy = form.cleaned_data["policy"]
    context = _retention_context(request, registry, policy, policies)
    if context["fingerprint"] != form.cleaned_data["fingerprint"]:
        # Someone pushed, synced or deleted since the preview: what was approved is not what would run.
        context["error"] = "The plan changed since your preview. Nothing was deleted; review the new plan below."
        return render(request, "dashboard/delete/retention_preview.html", context, status=409)
    outcomes = retention.apply(request, request.user, context["plan"])
    context |= {"outcomes": outcomes, "counts": retention.summary(outcomes)}
    return render(request, "dashboard/delete/retention_results.html", context)


# Storage ------------------------------------------------------------------------------------


@require_POST
@signed_in
def storage_gc_done(request: HttpRequest) -> HttpResponse:
    try:
        deletion.mark_gc_done(request, request.user)
    except ActionRefused as refused:
        return _refused(request, refused.message, refused.status, reverse("dashboard:storage"))
    messages.success(request, "Recorded that garbage collection ran; pending bytes count from now.")
    return HttpResponseRedirect(reverse("dashboard:storage"))

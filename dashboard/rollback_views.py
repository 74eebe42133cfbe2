"""Pages for pins, tag history, restore, compare, rollback candidates and personal API tokens.

Views validate input with a form, call one function of `rollback` or `compare`, and render;
actions answer refusals with the refusal's status and message.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from dashboard import attachments, audit, rollback
from dashboard.access import (
    login_or_public_read,
    repository_for,
    role_on,
    signed_in,
    visible_repositories,
)
from dashboard.actions import ActionRefused, validate_digest, validate_tag_name
from dashboard.browse import RowLinks
from dashboard.compare import compare_manifests, resolve_reference
from dashboard.forms import QueryForm
from dashboard.models import MAX_TOKEN_DAYS, ApiToken, AuditEntry, Pin, Repository, Role, Tag
from dashboard.registries import configured_registry
from dashboard.registry.errors import RegistryError
from dashboard.registry.manifests import is_valid_digest, is_valid_tag
from dashboard.rendering import bad_query, page_or_results, refusal_page, render_page, safe_next

PINS_PER_PAGE = 50
PIN_RESULTS = ("pin-results", "dashboard/rollback/_pin_results.html")
CANDIDATE_RESULTS = ("candidate-results", "dashboard/rollback/_candidates.html")


# Forms --------------------------------------------------------------------------------------


def _form_check(validate: Callable[[str], None]) -> Callable[[str], None]:
    """A form validator from an action's own check, so a form and the action say the same."""

    def check(value: str) -> None:
        try:
            if value:
                validate(value)
        except ActionRefused as refused:
            raise forms.ValidationError(refused.message) from None

    return check


_check_tag = _form_check(validate_tag_name)
_check_digest = _form_check(validate_digest)


def _check_reference(value: str) -> None:
    if not (is_valid_tag(value) or is_valid_digest(value)):
        raise forms.ValidationError("Give a tag or a digest (sha256:…).")


class PinsQuery(QueryForm):
    repository = forms.CharField(required=False, max_length=255)
    page = forms.IntegerField(required=False, min_value=1)


class CompareQuery(QueryForm):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # `from` is a keyword, so the fields cannot be class attributes.
        self.fields["from"] = forms.CharField(max_length=200, validators=[_check_reference], label="From")
        self.fields["to"] = forms.CharField(max_length=200, validators=[_check_reference], label="To")


class RollbackQuery(QueryForm):
    tag = forms.CharField(required=False, max_length=128, validators=[_check_tag])


class RestoreForm(QueryForm):
    tag = forms.CharField(max_length=128, validators=[_check_tag])
    digest = forms.CharField(max_length=100, validators=[_check_digest])
    # The tag's digest the user was shown; empty when they were shown that the tag does not exist.
    expected = forms.CharField(required=False, max_length=100, validators=[_check_digest])


class ActionForm(forms.Form):
    """Pin and unpin: the action itself validates the values (so refusals are audited)."""

    digest = forms.CharField(required=False, max_length=100)
    tag = forms.CharField(required=False, max_length=128)
    reason = forms.CharField(required=False, max_length=500)
    next = forms.CharField(required=False, max_length=2000)


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What will use it, e.g. “deploy pipeline”.")
    read_only = forms.BooleanField(required=False, help_text="May read, but not pin, unpin, restore or delete.")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_TOKEN_DAYS, label="Expires in (days)", help_text="Empty: never."
    )


# Helpers ------------------------------------------------------------------------------------


def _is_operator(request: HttpRequest, repository: Repository) -> bool:
    return (role_on(request.user, repository.name) or 0) >= Role.OPERATOR


def _pins_url(repository: Repository) -> str:
    return f"{reverse('dashboard:pins')}?{urlencode({'repository': repository.name})}"


# Pins ---------------------------------------------------------------------------------------


@require_safe
@login_or_public_read
def pins(request: HttpRequest) -> HttpResponse:
    query = PinsQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    visible = visible_repositories(request.user, configured_registry())
    listed = Pin.objects.filter(repository__in=visible).select_related("repository", "created_by")
    if query.cleaned_data["repository"]:
        listed = listed.filter(repository__name=query.cleaned_data["repository"])
    page = Paginator(listed.order_by("-created_at", "-id"), PINS_PER_PAGE).get_page(query.cleaned_data["page"])
    rows = rollback.pin_rows(page.object_list)
    context = {
        "query": query,
        "page": page,
        "rows": rows,
        "operator_on": {row.pin.repository.name for row in rows if _is_operator(request, row.pin.repository)},
        "repositories": Pin.objects.filter(repository__in=visible)
        .order_by("repository__name")
        .values_list("repository__name", flat=True)
        .distinct(),
        "page_url": reverse("dashboard:pins"),
    }
    return page_or_results(request, "dashboard/rollback/pins.html", context, PIN_RESULTS)


@require_POST
@signed_in
def pin(request: HttpRequest, name: str) -> HttpResponse:
    registry = configured_registry()
    repository = repository_for(request.user, registry, name)
    form = ActionForm(request.POST)
    back = safe_next(request, request.POST.get("next", ""), _pins_url(repository))
    if not form.is_valid():
        return refusal_page(request, "The form was incomplete or too long.", 400, back)
    try:
        pinned = rollback.pin_version(
            request,
            request.user,
            registry,
            repository,
            reason=form.cleaned_data["reason"],
            digest=form.cleaned_data["digest"],
            tag=form.cleaned_data["tag"],
        )
    except ActionRefused as refused:
        return refusal_page(request, refused.message, refused.status, back)
    messages.success(request, f"Pinned {pinned.digest}: it cannot be deleted until it is unpinned.")
    return HttpResponseRedirect(back)


@require_POST
@signed_in
def unpin(request: HttpRequest, name: str) -> HttpResponse:
    repository = repository_for(request.user, configured_registry(), name)
    form = ActionForm(request.POST)
    back = safe_next(request, request.POST.get("next", ""), _pins_url(repository))
    if not form.is_valid():
        return refusal_page(request, "The form was incomplete or too long.", 400, back)
    try:
        rollback.unpin_version(request, request.user, repository, form.cleaned_data["digest"])
    except ActionRefused as refused:
        return refusal_page(request, refused.message, refused.status, back)
    messages.success(request, f"Unpinned {form.cleaned_data['digest']}.")
    return HttpResponseRedirect(back)


# History, rollback candidates, compare ------------------------------------------------------


@require_safe
@login_or_public_read
def tag_history(request: HttpRequest, name: str, tag: str) -> HttpResponse:
    repository = repository_for(request.user, configured_registry(), name)
    periods = rollback.tag_periods(repository, tag)
    current = Tag.objects.filter(repository=repository, name=tag).select_related("manifest").first()
    if not periods and current is None:
        raise Http404("No such tag")
    links = RowLinks(repository)
    context = {
        "repository": repository,
        "tag": tag,
        "current": current,
        "periods": periods,
        # With the digest pages' URLs, filled in from one reversed pattern for all the rows.
        "rows": [(period, links.manifest(period.row.digest)) for period in periods],
        "truncated": len(periods) == rollback.HISTORY_SHOWN,
        "can_restore": _is_operator(request, repository),
        "moved_pins": rollback.pins_moved_from(
            rollback.repository_pins(repository), tag, current.manifest.digest if current else None
        ),
    }
    return render_page(request, "dashboard/rollback/tag_history.html", context)


@require_safe
@login_or_public_read
def rollback_candidates(request: HttpRequest, name: str) -> HttpResponse:
    repository = repository_for(request.user, configured_registry(), name)
    query = RollbackQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    tag = query.cleaned_data["tag"]
    candidates = rollback.rollback_candidates(repository, tag) if tag else None
    if tag and candidates is None:
        raise Http404("No such tag")
    shown = [candidate.manifest.digest for candidate in candidates.versions] if candidates else []
    if candidates and candidates.current:
        shown.append(candidates.current.manifest.digest)
    context = {
        "repository": repository,
        "query": query,
        "tag": tag,
        "candidates": candidates,
        "securities": attachments.security_by_digest(repository, shown),
        "require_signature": settings.RESTORE_REQUIRE_SIGNATURE,
        "suggestions": rollback.deployment_tags(repository),
        "can_restore": _is_operator(request, repository),
        "page_url": reverse("dashboard:rollback", args=[repository.name]),
    }
    return page_or_results(request, "dashboard/rollback/rollback.html", context, CANDIDATE_RESULTS)


@require_safe
@login_or_public_read
def compare(request: HttpRequest, name: str) -> HttpResponse:
    repository = repository_for(request.user, configured_registry(), name)
    context: dict = {"repository": repository, "comparison": None}
    if not request.GET:
        context["query"] = CompareQuery()
        return render_page(request, "dashboard/rollback/compare.html", context)
    query = CompareQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    before = resolve_reference(repository, query.cleaned_data["from"])
    after = resolve_reference(repository, query.cleaned_data["to"])
    if before is None or after is None:
        missing = query.cleaned_data["from"] if before is None else query.cleaned_data["to"]
        raise Http404(f"{missing} is not a known tag or digest of this repository")
    context.update(query=query, comparison=compare_manifests(repository, before, after))
    return render_page(request, "dashboard/rollback/compare.html", context)


# Restore ------------------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@signed_in
def restore(request: HttpRequest, name: str) -> HttpResponse:
    """GET previews "point <tag> at <digest>" (live from the registry); POST carries it out."""
    registry = configured_registry()
    repository = repository_for(request.user, registry, name)
    rollback_page = reverse("dashboard:rollback", args=[repository.name])
    if not _is_operator(request, repository):
        return refusal_page(request, f"Restoring a tag needs the operator role on {repository.name}.", 403, rollback_page)
    form = RestoreForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        return bad_query(request, form)
    tag, digest, expected = (form.cleaned_data[key] for key in ("tag", "digest", "expected"))
    error, status = "", 200
    if request.method == "POST":
        try:
            result = rollback.restore_tag(
                request, request.user, registry, repository, tag=tag, digest=digest, expected=expected or None
            )
        except ActionRefused as refused:
            error, status = refused.message, refused.status
        else:
            if result.changed:
                before = result.previous or "nothing"
                messages.success(request, f"{tag} now points at {digest} (it pointed at {before}).")
            else:
                messages.info(request, f"{tag} already pointed at {digest}; nothing was changed.")
            return HttpResponseRedirect(reverse("dashboard:tag-history", args=[repository.name, tag]))
    try:
        preview = rollback.restore_preview(registry, repository, tag, digest)
    except RegistryError as failure:
        return refusal_page(request, f"Could not read the registry: {failure}", 502, rollback_page)
    if preview.gone and not error:
        status = 410  # the page says what is gone; there is nothing to confirm
    context = {
        "repository": repository,
        "preview": preview,
        "error": error,
        # The digest the user was looking at moved before they saw this preview.
        "moved_from": expected if expected and expected != preview.current_digest and not error else "",
    }
    return render_page(request, "dashboard/rollback/restore.html", context, status=status)


# API tokens ---------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
@signed_in
def api_tokens(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST if request.method == "POST" else None)
    new_token = ""
    if form.is_valid():
        data = form.cleaned_data
        created, new_token = ApiToken.issue(
            request.user, data["name"], read_only=data["read_only"], expires_in_days=data["expires_in_days"]
        )
        audit.record(request, "api_token_create", AuditEntry.Outcome.OK, reason=f"{created}: {created.terms}")
        form = ApiTokenForm()
    context = {
        "form": form,
        "new_token": new_token,
        "tokens": ApiToken.objects.filter(user=request.user).order_by("-created_at"),
    }
    return render_page(request, "dashboard/rollback/api_tokens.html", context, status=400 if form.errors else 200)


@require_POST
@signed_in
def api_token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    audit.record(request, "api_token_revoke", AuditEntry.Outcome.OK, reason=str(token))
    token.delete()
    messages.success(request, f"Revoked {token.name}.")
    return HttpResponseRedirect(reverse("dashboard:api-tokens"))

"""The audit log page, its CSV export, the access page that explains who may do what, and the
admins' list of repositories that left the catalog."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from dashboard.access import default_role, is_admin, signed_in
from dashboard.audit import entries_visible_to
from dashboard.forms import QueryForm
from dashboard.models import AccessRule, AuditEntry, RemovedRepository, Role, normalize_pattern
from dashboard.rendering import bad_query, page_or_results

PAGE_SIZE = 50
RESULTS_TARGET = "audit-results"
CSV_COLUMNS = [
    "created_at",
    "username",
    "action",
    "outcome",
    "repository",
    "tag",
    "digest_before",
    "digest_after",
    "reason",
    "remote_addr",
]
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class AuditQuery(QueryForm):
    user = forms.CharField(required=False, max_length=150)
    repository = forms.CharField(required=False, max_length=255, help_text="A name, or a pattern such as team-a/*")
    action = forms.CharField(required=False, max_length=40)
    outcome = forms.ChoiceField(required=False, choices=[("", "any"), *AuditEntry.Outcome.choices])
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean_repository(self) -> str:
        # Any signed-in viewer types this: it must not be able to make a query expensive.
        repository = self.cleaned_data["repository"]
        return normalize_pattern(repository) if repository else ""

    def clean(self) -> dict:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The start date is after the end date.")
        return cleaned

    def filter(self, entries: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        data = self.cleaned_data
        if data["user"]:
            entries = entries.filter(username__iexact=data["user"])
        if data["repository"]:
            entries = entries.filter(repository__glob=data["repository"])
        if data["action"]:
            entries = entries.filter(action=data["action"])
        if data["outcome"]:
            entries = entries.filter(outcome=data["outcome"])
        # Dates are whole days in the dashboard's time zone, both ends included.
        if data["since"]:
            entries = entries.filter(created_at__gte=_start_of(data["since"]))
        if data["until"]:
            entries = entries.filter(created_at__lt=_start_of(data["until"] + timedelta(days=1)))
        return entries

    def filter_string(self) -> str:
        """The active filters as a query string, without the page: for page links and the export."""
        return urlencode({name: self.data[name] for name in self.fields if name != "page" and self.data.get(name)})


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


@require_safe
@signed_in
def audit_log(request: HttpRequest) -> HttpResponse:
    query = AuditQuery(request.GET)
    if not query.is_valid():
        return bad_query(request, query)
    entries = query.filter(entries_visible_to(request.user))
    context = {
        "query": query,
        "page": Paginator(entries, PAGE_SIZE).get_page(query.cleaned_data["page"]),
        "filters": query.filter_string(),
        # Action names are not secret; the index on `action` makes this cheap.
        "actions": AuditEntry.objects.order_by("action").values_list("action", flat=True).distinct(),
        "results_target": RESULTS_TARGET,
        "user_is_admin": is_admin(request.user),
    }
    return page_or_results(
        request, "dashboard/audit.html", context, (RESULTS_TARGET, "dashboard/audit_results.html")
    )


class _Echo:
    """csv.writer wants a file; this one hands each line back to the streaming response."""

    def write(self, value: str) -> str:
        return value


def neutralize(value: object) -> str:
    """A cell as text that no spreadsheet evaluates (usernames and reasons are user input)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_lines(entries: QuerySet[AuditEntry], columns: list[str]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(columns)
    for entry in entries.values_list(*columns).iterator(chunk_size=2000):
        created_at, *rest = entry
        yield writer.writerow([created_at.isoformat(), *(neutralize(value) for value in rest)])


@require_safe
@signed_in(fragment=True)
def audit_export(request: HttpRequest) -> HttpResponse:
    query = AuditQuery(request.GET)
    if not query.is_valid():
        return HttpResponse(query.error_text(), status=400, content_type="text/plain")
    entries = query.filter(entries_visible_to(request.user))
    # Where people connect from is for admins only, as on the page.
    columns = CSV_COLUMNS if is_admin(request.user) else [c for c in CSV_COLUMNS if c != "remote_addr"]
    response = StreamingHttpResponse(_csv_lines(entries, columns), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{timezone.localdate():%Y-%m-%d}.csv"'
    return response


class AccessRuleForm(forms.ModelForm):
    class Meta:
        model = AccessRule
        fields = ["group", "pattern", "role"]


def _access_page(request: HttpRequest, form: AccessRuleForm | None = None, status: int = 200) -> HttpResponse:
    admin = is_admin(request.user)
    rules = AccessRule.objects.select_related("group").order_by("group__name", "pattern")
    groups = Group.objects.order_by("name")
    if admin:
        members = User.objects.order_by("username").only("username")
        groups = groups.prefetch_related(Prefetch("user_set", queryset=members, to_attr="members"))
    else:
        rules = rules.filter(group__user=request.user)
        groups = groups.filter(user=request.user)
    fallback = default_role(request.user)
    context = {
        "admin": admin,
        "form": (form or AccessRuleForm()) if admin else None,
        # The Django admin also needs staff status and model permissions.
        "admin_site": request.user.is_staff and request.user.has_perm("dashboard.change_accessrule"),
        "rules": rules,
        "groups": groups,
        "superuser": request.user.is_superuser,
        "default_role": Role(fallback).label if fallback is not None else None,
    }
    return render(request, "dashboard/access_rules.html", context, status=status)


@require_safe
@signed_in
def access_rules(request: HttpRequest) -> HttpResponse:
    """Admins see and edit every rule; others see the rules that apply to them, which answers
    "why can't I see X?". Changes are audited by the model signals (dashboard/signals.py)."""
    return _access_page(request)


def _require_admin(request: HttpRequest, what: str = "Managing access rules") -> None:
    if not is_admin(request.user):
        raise PermissionDenied(f"{what} needs the admin role on every repository (*).")


@require_POST
@signed_in
def access_rule_add(request: HttpRequest) -> HttpResponse:
    _require_admin(request)
    form = AccessRuleForm(request.POST)
    if not form.is_valid():
        return _access_page(request, form, status=400)
    rule = form.save()
    messages.success(request, f"Added rule {rule}.")
    return redirect("dashboard:access")


@require_POST
@signed_in
def access_rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    _require_admin(request)
    rule = get_object_or_404(AccessRule.objects.select_related("group"), pk=pk)
    rule.delete()
    messages.success(request, f"Removed rule {rule}.")
    return redirect("dashboard:access")


@require_safe
@signed_in
def removed_repositories(request: HttpRequest) -> HttpResponse:
    """Repositories that left the registry's catalog, kept with their pins and tag history until
    the name comes back. Admins only: the names may be ones other users may not see."""
    _require_admin(request, "The list of removed repositories")
    return render(request, "dashboard/removed_repositories.html", {"repositories": RemovedRepository.with_kept_rows()})

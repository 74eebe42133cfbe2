"""Query strings of the pages: anything a form rejects is answered with a 400."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.db.models import F, OrderBy

from dashboard.storage import Usage

PAGE_SIZE = 50

# Every ordering ends on a unique column, so pages never overlap or skip rows.
CATALOG_ORDERINGS: dict[str, tuple[str | OrderBy, ...]] = {
    "name": ("name",),
    "pushed": (F("last_pushed_at").desc(nulls_last=True), "name"),
    "size": ("-total_size", "name"),
    "tags": ("-tag_count", "name"),
    # Not a database column: the catalog view orders by storage.by_exclusive instead.
    "exclusive": ("name",),
}
TAG_ORDERINGS: dict[str, tuple[str | OrderBy, ...]] = {
    "created": (F("created").desc(nulls_last=True), "-id"),
    "version": ("version_key",),
    "name": ("name",),
}


class QueryForm(forms.Form):
    """A query string's form: a view answers an invalid one with a 400 naming what is wrong."""

    def error_text(self) -> str:
        """One line naming each bad parameter, for the 400 page."""
        return "; ".join(f"{name}: {' '.join(errors)}" for name, errors in self.errors.items())


class _SortedQuery(QueryForm):
    """A query with a `sort` choice field."""

    @property
    def current_sort(self) -> str:
        return self.cleaned_data.get("sort") or self.fields["sort"].initial


class _ListQuery(_SortedQuery):
    q = forms.CharField(required=False, max_length=255, label="Search")
    page = forms.IntegerField(required=False, min_value=1)
    orderings: dict[str, tuple[str | OrderBy, ...]] = {}

    def ordering(self) -> tuple[str | OrderBy, ...]:
        return self.orderings[self.current_sort]


class CatalogQuery(_ListQuery):
    namespace = forms.CharField(required=False, max_length=255)
    sort = forms.ChoiceField(
        required=False,
        initial="name",
        choices=[
            ("name", "Name"),
            ("pushed", "Last pushed"),
            ("size", "Size"),
            ("exclusive", "Exclusive size"),
            ("tags", "Tag count"),
        ],
    )
    orderings = CATALOG_ORDERINGS


class TagQuery(_ListQuery):
    # Signatures, attestations, SBOMs and referrers indexes are folded under their versions.
    attached = forms.BooleanField(required=False, label="Show attached artifacts")
    sort = forms.ChoiceField(
        required=False,
        initial="created",
        choices=[("created", "Newest"), ("version", "Version"), ("name", "Name")],
    )
    orderings = TAG_ORDERINGS


SEVERITY_CHOICES = [("", "Any severity")] + [(s, s.capitalize()) for s in ("critical", "high", "medium", "low", "unknown")]


class VulnerabilityQuery(_SortedQuery):
    """The vulnerabilities page: findings of one version's reports, sorted in memory."""

    severity = forms.ChoiceField(required=False, choices=SEVERITY_CHOICES)
    fixed = forms.ChoiceField(
        required=False, choices=[("", "Fixed or not"), ("yes", "A fix exists"), ("no", "No fix yet")]
    )
    sort = forms.ChoiceField(
        required=False,
        initial="severity",
        choices=[("severity", "Severity"), ("id", "Vulnerability"), ("package", "Package")],
    )


class PackageQuery(QueryForm):
    q = forms.CharField(required=False, max_length=255, label="Package")


class PackageSearch(QueryForm):
    q = forms.CharField(required=False, max_length=255, label="Package")
    version = forms.CharField(required=False, max_length=255, label="Version")


# The storage table sorts in memory (one row per visible repository, all on one page).
STORAGE_ORDERINGS = {
    "exclusive": lambda usage: (-usage.exclusive, usage.name),
    "referenced": lambda usage: (-usage.referenced, usage.name),
    "shared": lambda usage: (-usage.shared, usage.name),
    "tags": lambda usage: (-usage.tags, usage.name),
    "untagged": lambda usage: (-usage.untagged, usage.name),
    "name": lambda usage: usage.name,
}


class StorageQuery(_SortedQuery):
    page = forms.IntegerField(required=False, min_value=1)
    sort = forms.ChoiceField(
        required=False,
        initial="exclusive",
        choices=[
            ("exclusive", "Exclusive"),
            ("referenced", "Referenced"),
            ("shared", "Shared"),
            ("tags", "Tags"),
            ("untagged", "Untagged only"),
            ("name", "Name"),
        ],
    )

    def sort_key(self) -> Callable[[Usage], Any]:
        return STORAGE_ORDERINGS[self.current_sort]

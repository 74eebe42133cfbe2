"""The supply-chain panel of a version page and the compact badges of lists."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from dashboard import attachments
from dashboard.browse import is_web_url
from dashboard.models import Manifest, Repository, VersionSecurity
from dashboard.templatetags.display import escape

register = template.Library()

_SIGNATURE_BADGES = {
    "verified": ("badge-ok", "signed ✓"),
    "invalid": ("badge-error", "signature ✗"),
    "unverified": ("badge-warning", "signed, unknown key"),
    "unsigned": ("", "unsigned"),
}
_SIGNATURE_TITLES = {
    "verified": "Signed for this digest with the trusted key {key}",
    "invalid": "A signature here names another digest or repository, or its bytes were changed",
    "unverified": "Signed, but by no trusted key",
    "unsigned": "No signature attached",
}
_SEVERITY_CLASSES = {"critical": "badge-error", "high": "badge-error", "medium": "badge-warning"}


def signature_badge(status: str, key: str = "") -> str:
    css, text = _SIGNATURE_BADGES.get(status, _SIGNATURE_BADGES["unsigned"])
    title = _SIGNATURE_TITLES.get(status, "").format(key=key)
    return f'<span class="badge badge-signature {css}" title="{escape(title)}">{escape(text)}</span>'


def vulnerability_badge(security: VersionSecurity) -> str:
    """The highest severity found and its count; "no vulnerabilities" for a clean report."""
    if security.report_id is None:
        return ""
    for severity in attachments.COUNTED:
        count = getattr(security, severity)
        if count:
            css = _SEVERITY_CLASSES.get(severity, "")
            return f'<span class="badge badge-vulns {css}" title="Highest severity found">{count} {severity}</span>'
    return '<span class="badge badge-vulns badge-ok">no vulnerabilities</span>'


@register.simple_tag
def security_badges(security: VersionSecurity | None, show_unsigned: bool = False) -> SafeString:
    """Signed ✓/✗ and the highest severity; nothing for a version with nothing attached,
    unless `show_unsigned` (the rollback candidates, where the absence matters)."""
    if security is None:
        return SafeString(signature_badge("unsigned") if show_unsigned else "")
    parts = []
    if security.signature_status != "unsigned" or show_unsigned:
        parts.append(signature_badge(security.signature_status, security.signature_key))
    parts.append(vulnerability_badge(security))
    return SafeString(" ".join(part for part in parts if part))


@register.simple_tag
def badges_of(securities: dict[str, VersionSecurity], digest: str) -> SafeString:
    """A candidate's badges, "unsigned" included: on a rollback list the absence matters."""
    return security_badges(securities.get(digest), show_unsigned=True)


@register.simple_tag
def signature_of(security: VersionSecurity | None) -> SafeString:
    if security is None:
        return SafeString(signature_badge("unsigned"))
    return SafeString(signature_badge(security.signature_status, security.signature_key))


@register.filter
def web_url(value: str) -> bool:
    return is_web_url(value)


@register.inclusion_tag("dashboard/supply/_panel.html", takes_context=True)
def supply_chain_panel(context: template.Context, repository: Repository, manifest: Manifest) -> dict:
    return {
        "repository": repository,
        "manifest": manifest,
        "chain": attachments.supply_chain(repository, manifest),
        "request": context["request"],
    }


@register.inclusion_tag("dashboard/supply/_diff.html")
def supply_chain_diff(repository: Repository, before: Manifest, after: Manifest) -> dict:
    return {"diff": attachments.supply_chain_diff(repository, before, after)}

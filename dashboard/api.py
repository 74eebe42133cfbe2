"""JSON API for automation (`/api/v1/`): personal bearer tokens, the pages' roles and rules.

Only `Authorization: Bearer <token>` authenticates here; a session cookie is ignored, which is
why these views can be exempt from CSRF (a browser cannot attach the header cross-site). Every
error is `{"error": "..."}` with its status: 400 bad input, 401 no, bad or expired token, 403
role too low or a read-only token asked to change something, 404 unknown or hidden repository,
409 digest guard or conflict, 410 version gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps

from django.core.paginator import InvalidPage, Paginator
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from dashboard import attachments, audit, deletion, rollback, storage
from dashboard.access import repository_for, role_on, visible_repositories
from dashboard.actions import ActionRefused, validate_tag_name
from dashboard.models import ApiToken, AuditEntry, Pin, Repository, Tag, VersionSecurity
from dashboard.registries import configured_registry

PAGE_SIZE = 500
READ_METHODS = frozenset({"GET", "HEAD"})
TAG_MANIFEST_COLUMNS = ("digest", "media_type", "kind", "size")
# Recording every use would turn each read into a write; a minute is precise enough to audit.
LAST_USED_PRECISION = timedelta(minutes=1)

ApiView = Callable[..., JsonResponse]


def error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def authenticate(request: HttpRequest) -> ApiToken | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    api_token = ApiToken.find(token.strip())
    if api_token is not None:
        now = timezone.now()
        if api_token.last_used_at is None or now - api_token.last_used_at > LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
    return api_token


def api_view(*methods: str) -> Callable[[ApiView], ApiView]:
    """Token authentication, allowed methods, and JSON answers for every refusal."""

    def decorate(view: ApiView) -> ApiView:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if request.method not in methods:
                response = error(f"Method {request.method} is not allowed here.", 405)
                response["Allow"] = ", ".join(methods)
                return response
            api_token = authenticate(request)
            if api_token is None:
                response = error("Send a valid API token: Authorization: Bearer <token>.", 401)
                response["WWW-Authenticate"] = 'Bearer realm="registry-browser"'
                return response
            # Replaces the session user: the cookie must not act on the API's behalf.
            request.user = api_token.user
            if api_token.read_only and request.method not in READ_METHODS:
                return _refuse_read_only(request, api_token, kwargs.get("name", ""))
            try:
                return view(request, *args, **kwargs)
            except Http404:
                return error("No such repository.", 404)
            except ActionRefused as refused:
                return error(refused.message, refused.status)

        return wrapper

    return decorate


def _refuse_read_only(request: HttpRequest, api_token: ApiToken, repository: str) -> JsonResponse:
    """403 before anything runs, audited like every refused change; a hidden repository stays a 404."""
    if repository and role_on(request.user, repository) is None:
        return error("No such repository.", 404)
    message = f"The token {api_token} is read-only: it may not change anything."
    audit.record(
        request,
        "api_write",
        AuditEntry.Outcome.REFUSED,
        repository=repository,
        reason=f"{request.method} {request.path}: {message}",
    )
    return error(message, 403)


def _body(request: HttpRequest) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise ActionRefused("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ActionRefused("The body must be a JSON object.")
    return data


def _text(data: dict, key: str) -> str:
    """A string field, "" when absent; the action validates the value (and audits a refusal)."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ActionRefused(f"{key} must be a string.")
    return value


def _page(request: HttpRequest, objects, url: str) -> tuple[list, str | None]:
    number = request.GET.get("page", "1")
    try:
        page = Paginator(objects, PAGE_SIZE).page(number)
    except InvalidPage:
        raise ActionRefused(f"page {number[:20]!r} does not exist.") from None
    next_url = request.build_absolute_uri(f"{url}?page={page.next_page_number()}") if page.has_next() else None
    return list(page.object_list), next_url


def _repository(request: HttpRequest, name: str) -> Repository:
    return repository_for(request.user, configured_registry(), name)


def _time(moment) -> str | None:
    return moment.isoformat() if moment else None


def pin_json(pin: Pin) -> dict:
    return {
        "digest": pin.digest,
        "reason": pin.reason,
        "tags_at_pin": pin.tags_at_pin,
        "created_by": pin.created_by.get_username() if pin.created_by else None,
        "created_at": _time(pin.created_at),
    }


@api_view("GET")
def repositories(request: HttpRequest) -> JsonResponse:
    visible = visible_repositories(request.user, configured_registry()).order_by("name")
    rows, next_url = _page(request, visible, reverse("dashboard:api-repositories"))
    return JsonResponse(
        {
            "repositories": [
                {
                    "name": repository.name,
                    "tag_count": repository.tag_count,
                    "total_size": repository.total_size,
                    "last_pushed_at": _time(repository.last_pushed_at),
                    "last_synced_at": _time(repository.last_synced_at),
                }
                for repository in rows
            ],
            "next": next_url,
        }
    )


@api_view("GET")
def tags(request: HttpRequest, name: str) -> JsonResponse:
    repository = _repository(request, name)
    listed = (
        Tag.objects.filter(repository=repository)
        .select_related("manifest")
        .only("name", "created", "pointed_at", *(f"manifest__{column}" for column in TAG_MANIFEST_COLUMNS))
        .order_by("name")
    )
    rows, next_url = _page(request, listed, reverse("dashboard:api-tags", args=[repository.name]))
    digests = {tag.manifest.digest for tag in rows}
    pinned = set(Pin.objects.filter(repository=repository, digest__in=digests).values_list("digest", flat=True))
    security = attachments.security_by_digest(repository, digests)
    return JsonResponse(
        {
            "repository": repository.name,
            "tags": [_tag_json(tag, tag.manifest.digest in pinned, security.get(tag.manifest.digest)) for tag in rows],
            "next": next_url,
        }
    )


@api_view("GET", "POST")
def pins(request: HttpRequest, name: str) -> JsonResponse:
    """GET lists the repository's pins; POST {"digest" or "tag", "reason"} pins a version."""
    repository = _repository(request, name)
    if request.method == "GET":
        listed = Pin.objects.filter(repository=repository).select_related("created_by").order_by("-created_at")
        return JsonResponse({"repository": repository.name, "pins": [pin_json(pin) for pin in listed]})
    data = _body(request)
    pin = rollback.pin_version(
        request,
        request.user,
        configured_registry(),
        repository,
        reason=_text(data, "reason"),
        digest=_text(data, "digest"),
        tag=_text(data, "tag"),
    )
    return JsonResponse(pin_json(pin), status=201)


@api_view("DELETE")
def pin(request: HttpRequest, name: str, digest: str) -> JsonResponse:
    repository = _repository(request, name)
    rollback.unpin_version(request, request.user, repository, digest)
    return JsonResponse({"unpinned": digest})


@api_view("POST")
def restore(request: HttpRequest, name: str, tag: str) -> JsonResponse:
    """{"digest": target, "expected_digest": the tag's digest now, or null for a new tag}."""
    repository = _repository(request, name)
    data = _body(request)
    if "expected_digest" not in data:
        raise ActionRefused("expected_digest is required: the tag's current digest, or null to create the tag.")
    result = rollback.restore_tag(
        request,
        request.user,
        configured_registry(),
        repository,
        tag=tag,
        digest=_text(data, "digest"),
        expected=_text(data, "expected_digest") or None,
    )
    return JsonResponse(
        {"tag": result.tag, "digest": result.digest, "previous_digest": result.previous, "changed": result.changed}
    )


@api_view("GET")
def candidates(request: HttpRequest, name: str, tag: str) -> JsonResponse:
    """The versions `tag` can be restored to, as the rollback page lists them: its earlier
    digests still in the registry (tagged or not) and the pinned versions, newest created first."""
    repository = _repository(request, name)
    validate_tag_name(tag)
    found = rollback.rollback_candidates(repository, tag)
    if found is None:
        raise ActionRefused(f"No such tag: {tag}.", status=404)
    current = found.current
    shown = [candidate.manifest.digest for candidate in found.versions] + ([current.manifest.digest] if current else [])
    security = attachments.security_by_digest(repository, shown)
    return JsonResponse(
        {
            "repository": repository.name,
            "tag": tag,
            "current": (
                {
                    "digest": current.manifest.digest,
                    "created": _time(current.created),
                    "pointed_at": _time(current.pointed_at),
                    **security_json(security.get(current.manifest.digest)),
                }
                if current
                else None
            ),
            "candidates": [
                {
                    "digest": candidate.manifest.digest,
                    "media_type": candidate.manifest.media_type,
                    "kind": candidate.manifest.kind,
                    "created": _time(candidate.manifest.created),
                    "size": candidate.manifest.size,
                    # The tag's last stretch on this digest; both null for a pin it never pointed at.
                    "pointed_from": _time(candidate.pointed_since),
                    "pointed_until": _time(candidate.left_at),
                    "tags": candidate.tags,
                    "untagged": not candidate.tags,
                    "pinned": candidate.pin is not None,
                    "pin": pin_json(candidate.pin) if candidate.pin else None,
                    **security_json(security.get(candidate.manifest.digest)),
                }
                for candidate in found.versions
            ],
        }
    )


def _tag_json(tag: Tag, pinned: bool, security: VersionSecurity | None) -> dict:
    return {
        "name": tag.name,
        "digest": tag.manifest.digest,
        "media_type": tag.manifest.media_type,
        "kind": tag.manifest.kind,
        "created": _time(tag.created),
        "size": tag.manifest.size,
        "pinned": pinned,
        "pointed_at": _time(tag.pointed_at),
        **security_json(security),
    }


def security_json(security: VersionSecurity | None) -> dict:
    """`signature` and `vulnerabilities` of a version (see dashboard.attachments);
    `vulnerabilities` is null when no report is attached."""
    signature = {"status": security.signature_status if security else "unsigned", "key": None}
    if security and security.signature_status == "verified":
        signature["key"] = security.signature_key
    report = security.report if security and security.report_id else None
    vulnerabilities = None
    if report is not None:
        vulnerabilities = {severity: getattr(security, severity) for severity in attachments.COUNTED} | {
            "scanner": report.scanner,
            "scanner_version": report.scanner_version,
            "scanned_at": _time(report.scanned_at),
        }
    return {"signature": signature, "vulnerabilities": vulnerabilities}


@api_view("GET", "DELETE")
def tag(request: HttpRequest, name: str, tag: str) -> JsonResponse:
    """GET: the tag, with its version's signature and vulnerability counts. DELETE
    ?expected_digest=<the tag's digest now>: removes the tag (not other tags)."""
    repository = _repository(request, name)
    if request.method == "GET":
        found = Tag.objects.filter(repository=repository, name=tag).select_related("manifest").first()
        if found is None:
            raise ActionRefused(f"No such tag: {tag[:200]}.", status=404)
        pinned = Pin.objects.filter(repository=repository, digest=found.manifest.digest).exists()
        security = attachments.security_by_digest(repository, [found.manifest.digest])
        return JsonResponse(_tag_json(found, pinned, security.get(found.manifest.digest)))
    expected = request.GET.get("expected_digest", "")
    if not expected:
        raise ActionRefused("expected_digest is required: the digest the tag points at now.")
    deletion.delete_tag(request, request.user, repository, tag, expected)
    return JsonResponse({"deleted": tag, "digest": expected})



def _usage_json(usage: storage.Usage) -> dict:
    return {
        "name": usage.name,
        "referenced_bytes": usage.referenced,
        "exclusive_bytes": usage.exclusive,
        "shared_bytes": usage.shared,
        "untagged_bytes": usage.untagged,
        "tags": usage.tags,
    }


@api_view("GET")
def storage_usage(request: HttpRequest) -> JsonResponse:
    """Where the bytes are (see dashboard.storage), over the repositories the token's user may
    see only: the total too, so hidden sizes cannot be worked out as a difference."""
    overview = storage.overview(request.user, configured_registry())
    return JsonResponse(
        {
            "total_bytes": overview.total,
            "repositories": [_usage_json(usage) for usage in overview.repositories],
            "namespaces": [_usage_json(usage) for usage in overview.namespaces],
        }
    )

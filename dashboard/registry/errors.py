"""One error family for everything that can go wrong talking to a registry.

Views catch these and show `str(error)`, so every message is a sentence a person can act on
and never contains credentials or tokens.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping

DELETE_HINT = (
    "Deleting is disabled on this registry. Enable it with `storage.delete.enabled: true` in the "
    "registry configuration (or the environment variable REGISTRY_STORAGE_DELETE_ENABLED=true) "
    "and restart the registry."
)


class RegistryError(Exception):
    """Base class. `status` is the HTTP status (None when no response arrived), `code` the
    spec's error code such as MANIFEST_UNKNOWN, `detail` its free-form detail."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        tags = [t for t in (self.code, f"HTTP {self.status}" if self.status else None) if t]
        return f"{self.message} ({', '.join(tags)})" if tags else self.message


class Unauthorized(RegistryError):
    """No or wrong credentials."""


class Denied(RegistryError):
    """Authenticated, but not allowed to do this."""


class NotFound(RegistryError):
    """Repository, manifest or blob unknown; `code` says which (NAME_UNKNOWN, MANIFEST_UNKNOWN,
    BLOB_UNKNOWN) when the registry sent one."""


class Unsupported(RegistryError):
    """The registry refuses the operation, typically DELETE with deletes disabled."""


class RateLimited(RegistryError):
    """HTTP 429; `retry_after` is in seconds when the registry said how long to wait."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
        detail: object = None,
    ) -> None:
        super().__init__(message, status=status, code=code, detail=detail)
        self.retry_after = retry_after


class Unavailable(RegistryError):
    """Connection refused, timeout, TLS failure or a 5xx answer."""


class TagMoved(RegistryError):
    """A write refused before it was sent: the tag no longer points at the digest the caller
    expected (`current`, None when the tag is gone)."""

    def __init__(self, repository: str, tag: str, expected: str, current: str | None) -> None:
        now = f"now points at {current}" if current else "no longer exists"
        super().__init__(f"Tag {repository}:{tag} {now}, not at {expected}")
        self.expected = expected
        self.current = current


class InvalidResponse(RegistryError):
    """The registry answered something we refuse to use: bad JSON, wrong types, too large,
    or a URL pointing at another host."""


class DigestMismatch(InvalidResponse):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"Content digest {actual} does not match the expected {expected}")
        self.expected = expected
        self.actual = actual


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    # isdigit() alone also accepts "¹" and other non-ASCII digits, which float() rejects.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def parse_error_body(body: bytes) -> tuple[str | None, str | None, object]:
    """Return (code, message, detail) of the first entry of a spec error body
    `{"errors": [{"code", "message", "detail"}]}`; (None, None, None) when the body is anything else
    (HEAD answers, proxies' HTML pages, the registry's plain-text 404 for unknown routes)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None, None
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None, None
    first = errors[0]
    code = first.get("code") if isinstance(first.get("code"), str) else None
    message = first.get("message") if isinstance(first.get("message"), str) else None
    return code, message, first.get("detail")


def error_from_response(status: int, body: bytes, headers: Mapping[str, str], *, method: str = "GET") -> RegistryError:
    """Build the matching error for a non-success answer. `headers` must be case-insensitive
    (requests' CaseInsensitiveDict)."""
    code, registry_message, detail = parse_error_body(body)
    said = _sentence(registry_message)
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        wait = f"; retry after {retry_after:.0f} s" if retry_after is not None else ""
        return RateLimited(
            f"The registry is rate limiting requests{wait}",
            retry_after=retry_after,
            status=status,
            code=code,
            detail=detail,
        )
    cls: type[RegistryError]
    if status == 401:
        cls, fallback = Unauthorized, "The registry requires valid credentials"
    elif status == 403:
        cls, fallback = Denied, "The registry denied access"
    elif status == 404:
        cls, fallback = NotFound, "Not found on the registry"
    elif status == 405 or code == "UNSUPPORTED":
        # The registry's own text ("The operation is unsupported.") does not say what to do.
        cls, said = Unsupported, None
        fallback = DELETE_HINT if method == "DELETE" else "The registry does not support this operation"
    elif status >= 500:
        cls, fallback = Unavailable, "The registry failed to answer"
    else:
        cls, fallback = RegistryError, "The registry rejected the request"
    return cls(said or fallback, status=status, code=code, detail=detail)


def _sentence(text: str | None) -> str | None:
    text = (text or "").strip()
    return text[:1].upper() + text[1:] if text else None

"""Authentication pieces of the Docker token flow, kept free of HTTP so they can be tested on text.

https://distribution.github.io/distribution/spec/auth/token/
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from .errors import InvalidResponse

DEFAULT_TOKEN_LIFETIME = 60.0  # the token spec's default when expires_in is absent
MAX_TOKEN_LIFETIME = 24 * 3600.0  # longer claims are cut to this: a token is refetched daily at least
# Tokens are dropped once this share of their lifetime has passed, so one never expires in flight.
_TOKEN_USABLE_SHARE = 0.9

# RFC 9110 section 11: challenge = scheme [ 1*SP ( token68 / #auth-param ) ], comma-separated.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_END = r"(?=\s*(?:,|\Z))"
_SCHEME_RE = re.compile(rf"[\s,]*({_TOKEN})(?=[\s,]|\Z)")
_PARAM_RE = re.compile(rf"[\s,]*({_TOKEN})\s*=\s*({_QUOTED}|{_TOKEN}){_END}")
_TOKEN68_RE = re.compile(rf"\s+[A-Za-z0-9\-._~+/]+=*{_END}")
_ESCAPE_RE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Challenge:
    """One challenge from WWW-Authenticate: lower-cased scheme and parameter names."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """Scopes asked for; one attribute may hold several, separated by spaces (cross-repo mount)."""
        return tuple(self.params.get("scope", "").split())

    @property
    def error(self) -> str | None:
        """`insufficient_scope` or `invalid_token` when a Bearer token was rejected."""
        return self.params.get("error")


def parse_www_authenticate(header: str | None) -> list[Challenge]:
    """Parse a WWW-Authenticate value; requests joins repeated headers with ", ".

    Returns the challenges understood before any garbage, and never raises.
    """
    text = header or ""
    challenges: list[Challenge] = []
    pos = 0
    while (scheme := _SCHEME_RE.match(text, pos)) is not None:
        pos = scheme.end()
        params: dict[str, str] = {}
        while (param := _PARAM_RE.match(text, pos)) is not None:
            value = param.group(2)
            if value.startswith('"'):
                value = _ESCAPE_RE.sub(r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        if not params and (token68 := _TOKEN68_RE.match(text, pos)) is not None:
            pos = token68.end()  # e.g. `Negotiate abc==`: an opaque blob, useless to us
        challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


def preferred_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """Bearer beats Basic when a registry offers both; other schemes are not supported."""
    by_scheme = {c.scheme: c for c in challenges}
    return by_scheme.get("bearer") or by_scheme.get("basic")


@dataclass(frozen=True)
class TokenService:
    realm: str
    service: str | None


def token_service(challenge: Challenge, base_url: str, allowed_hosts: Iterable[str]) -> TokenService:
    """Where to get tokens for a Bearer challenge. Credentials go to the realm, so a registry must
    not be able to send them anywhere: a realm on a host we may not trust is an InvalidResponse."""
    realm = challenge.realm
    if not realm:
        raise InvalidResponse("The registry asked for a Bearer token without naming a token service (realm)")
    if not host_allowed(realm, base_url, allowed_hosts):
        raise InvalidResponse(
            f"The registry's token service {realm[:200]!r} is on another host; "
            "add that host to the allowed realm hosts to trust it"
        )
    return TokenService(realm, challenge.service)


def host_allowed(url: str, base_url: str, allowed_hosts: Iterable[str]) -> bool:
    """May credentials be sent to `url`? Only on the registry's own scheme and host (any port:
    token services usually listen next to the registry), or on a host listed explicitly as
    `host` or `host:port`, and never by downgrading https to http."""
    target, base = _origin(url), _origin(base_url)
    if target is None or base is None:
        return False
    scheme, host, port = target
    if scheme not in (base[0], "https"):
        return False
    if (scheme, host) == base[:2]:
        return True
    allowed = {h.strip().lower() for h in allowed_hosts}
    return host in allowed or f"{host}:{port}" in allowed


def resolve_on_registry(link: str, current_url: str, base_url: str) -> str | None:
    """Resolve a registry-supplied URL (pagination link, upload location; often relative)
    against `current_url`; None unless it stays on the registry's scheme, host and port."""
    try:
        url = urljoin(current_url, link)
    except ValueError:
        return None
    origin = _origin(url)
    return url if origin is not None and origin == _origin(base_url) else None


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in; None for anything but http(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # unparseable URL or port
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port


def parse_token_response(body: bytes) -> tuple[str, float]:
    """Return (token, lifetime in seconds) from a token service answer."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidResponse("The token service answered with invalid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidResponse("The token service answered with something other than a JSON object")
    # `access_token` is the OAuth2 spelling; the spec accepts either.
    token = data.get("token") or data.get("access_token")
    if not isinstance(token, str) or not token:
        raise InvalidResponse("The token service answer contains no token")
    lifetime = data.get("expires_in", DEFAULT_TOKEN_LIFETIME)
    # `not > 0` also refuses NaN, which would never expire.
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not lifetime > 0:
        raise InvalidResponse("The token service answered with an invalid expires_in")
    # Capped before float(): JSON allows Infinity and integers too large for a float.
    return token, float(min(lifetime, MAX_TOKEN_LIFETIME))


@dataclass(frozen=True)
class CachedToken:
    value: str
    scopes: tuple[str, ...]
    expires_at: float  # time.monotonic()


class TokenCache:
    """Bearer tokens by scope key, shared by all threads of one client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, CachedToken] = {}

    def get(self, key: str) -> CachedToken | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.expires_at <= time.monotonic():
                del self._tokens[key]
                return None
            return token

    def put(self, key: str, value: str, scopes: tuple[str, ...], lifetime: float) -> CachedToken:
        token = CachedToken(value, scopes, time.monotonic() + lifetime * _TOKEN_USABLE_SHARE)
        with self._lock:
            self._tokens[key] = token
        return token

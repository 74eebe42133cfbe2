"""Client for the registry HTTP API v2 (Docker Distribution 2.8, OCI distribution).

Three layers, bottom up: `_send` is the transport (one shared requests.Session with retries,
timeouts, request counting, connection errors mapped to Unavailable); `_request` adds
authentication (challenge, then Basic or a Bearer token per scope, retried once) and turns
error answers into RegistryError; the public methods are the registry operations.
"""

from __future__ import annotations

import base64
import functools
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from . import mediatypes
from .auth import (
    CachedToken,
    TokenCache,
    TokenService,
    parse_token_response,
    parse_www_authenticate,
    preferred_challenge,
    resolve_on_registry,
    token_service,
)
from .errors import (
    Denied,
    DigestMismatch,
    InvalidResponse,
    NotFound,
    RegistryError,
    Unauthorized,
    TagMoved,
    Unavailable,
    error_from_response,
)
from .manifests import (
    ImageConfig,
    ImageManifest,
    Manifest,
    compute_digest,
    is_valid_digest,
    is_valid_repository_name,
    is_valid_tag,
    make_tombstone,
    parse_catalog_page,
    parse_image_config,
    parse_manifest,
    parse_tag_list,
    verify_digest,
)

logger = logging.getLogger("dashboard.registry")

__version__ = "0.1.0"  # keep in step with pyproject.toml
USER_AGENT = f"registry-browser/{__version__}"
MANIFEST_LIMIT = 4 * 1024 * 1024
CONFIG_LIMIT = 8 * 1024 * 1024
LIST_LIMIT = 16 * 1024 * 1024  # a catalog page or a whole (unpaginated) tag list
SMALL_LIMIT = 64 * 1024  # error bodies, token answers, empty success bodies
CATALOG_MAX_PAGE = 1000  # Distribution answers 400 PAGINATION_NUMBER_INVALID above this
# urllib3 sleeps as long as Retry-After says; a page view must not hang for minutes.
MAX_RETRY_AFTER = 5.0
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Registries on object storage answer a blob GET with one redirect to a pre-signed URL; a CDN in
# front of the storage may add one or two.
MAX_REDIRECTS = 3

# capabilities() sends DELETEs that cannot remove anything: a repository nobody pushes to and
# a digest of bytes no manifest has.
PROBE_REPOSITORY = "registry-browser/capability-probe"
PROBE_DIGEST = compute_digest(b"registry-browser-probe")
PROBE_TAG = "registry-browser-probe"


@dataclass(frozen=True)
class RegistryInfo:
    url: str
    api_version: str | None  # Docker-Distribution-API-Version, "registry/2.0" on Distribution
    auth_scheme: str | None  # "basic", "bearer", or None when the registry asked for nothing


@dataclass(frozen=True)
class Capabilities:
    """None means unknown, e.g. the credentials lack the delete permission needed to probe."""

    delete_enabled: bool | None
    tag_delete: bool | None


@dataclass(frozen=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int | None


@dataclass(frozen=True)
class FetchedManifest:
    digest: str
    media_type: str
    raw: bytes  # exact bytes: re-serialising the JSON would change the digest
    manifest: Manifest


class _CappedRetry(Retry):
    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


class _KeyedLocks:
    """One re-entrant lock per key, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}

    def __call__(self, key: str) -> threading.RLock:
        with self._lock:
            return self._locks.setdefault(key, threading.RLock())


class RegistryClient:
    """One registry. Thread-safe: a thread pool of up to `pool_size` threads can share one
    instance, its connections and its token cache. Use as a context manager, or call close()."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        verify: bool | str = True,
        timeout: tuple[float, float] = (3.0, 10.0),
        retries: int = 2,
        allowed_realm_hosts: Iterable[str] = (),
        user_agent: str | None = None,
        pool_size: int = 16,
        before_push: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """`verify` is True, False or the path of a CA bundle. `allowed_realm_hosts` lists
        other hosts (`host` or `host:port`) whose token service we may send credentials to.
        `before_push(repository, reference, digest)` is called before each manifest PUT
        (restores, tombstones), e.g. to recognise the registry's notification of it later."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Registry URL must be http(s)://host[:port], got {base_url!r}")
        if parts.username or parts.password:
            raise ValueError("Pass registry credentials as username and password, not in the URL")
        self.base_url = base_url.rstrip("/")
        self._api = f"{self.base_url}/v2/"
        self._timeout = timeout
        self._allowed_realm_hosts = tuple(allowed_realm_hosts)
        self._basic: str | None = None
        if username is not None:
            pair = f"{username}:{password or ''}".encode()
            self._basic = f"Basic {base64.b64encode(pair).decode('ascii')}"
        # What the registry asked for so far; both are set once and then only read.
        self._scheme: str | None = None  # "basic" or "bearer"
        self._token_service: TokenService | None = None
        self._tokens = TokenCache()
        # Threads needing a token for the same scope wait for one fetch instead of all asking.
        self._token_locks = _KeyedLocks()
        # Distribution 2.8 answers 500 to a manifest DELETE that reads a tag link while another
        # request writes one in the same repository, so our own writes there take turns.
        self._write_locks = _KeyedLocks()
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._before_push = before_push

        self._session = requests.Session()
        # Credentials, CA and proxies come from our configuration only: with trust_env, a
        # ~/.netrc entry would replace our Authorization header.
        self._session.trust_env = False
        self._session.verify = verify
        self._session.headers["User-Agent"] = user_agent or USER_AGENT
        retry = _CappedRetry(
            total=retries,
            backoff_factor=0.25,
            # 500 too: Distribution 2.8 answers it to a read of a tag link that another client
            # is writing in the same repository (seen as a HEAD failing during a push).
            status_forcelist=(429, 500, 502, 503, 504),
            # Status and read-error retries only for idempotent methods. urllib3 also retries
            # failed connects for every method, which is safe: nothing was sent yet.
            allowed_methods=frozenset({"GET", "HEAD"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # hand the last 429/503 back so it becomes a RegistryError
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def request_counts(self) -> Counter[str]:
        """A snapshot of the requests sent so far by kind: catalog, tags, head_manifest,
        get_manifest, get_blob, delete, put (blob uploads included), token and ping."""
        with self._counts_lock:
            return Counter(self._counts)

    # Operations

    def ping(self) -> RegistryInfo:
        """GET /v2/: checks reachability and, when the registry wants auth, the credentials."""
        response, _ = self._request("ping", "GET", self._api, scope=None)
        return RegistryInfo(
            url=self.base_url,
            api_version=response.headers.get("Docker-Distribution-API-Version"),
            auth_scheme=self._scheme,
        )

    def capabilities(self, probe_repository: str = PROBE_REPOSITORY) -> Capabilities:
        """Find out whether deletes work without deleting anything: DELETE a digest and a tag
        that do not exist. Needs the delete permission; without it the answers are None."""
        by_digest = self._probe_delete(probe_repository, PROBE_DIGEST)
        by_tag = self._probe_delete(probe_repository, PROBE_TAG)
        return Capabilities(
            delete_enabled={200: True, 202: True, 404: True, 405: False}.get(by_digest),
            # Distribution 2.8 has no tag delete and answers a tag with 400 DIGEST_INVALID.
            tag_delete={200: True, 202: True, 404: True, 400: False, 405: False}.get(by_tag),
        )

    def catalog_pages(self, page_size: int = CATALOG_MAX_PAGE) -> Iterator[list[str]]:
        """Repository names, one list per catalog page, following `Link: rel="next"`."""
        if not 1 <= page_size <= CATALOG_MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {CATALOG_MAX_PAGE}, got {page_size}")
        return self._catalog_pages(f"{self._api}_catalog?n={page_size}")

    def catalog(self, page_size: int = CATALOG_MAX_PAGE) -> Iterator[str]:
        """Repository names in the registry's order (path segment by path segment)."""
        return itertools.chain.from_iterable(self.catalog_pages(page_size))

    def tags(self, repository: str) -> list[str]:
        """All tags in the registry's (unsorted) order; [] for a repository whose tags were all deleted."""
        _, body = self._request(
            "tags",
            "GET",
            f"{self._repository_url(repository)}/tags/list",
            scope=_pull(repository),
            limit=LIST_LIMIT,
            what="tag list",
        )
        return parse_tag_list(body)

    def head_manifest(self, repository: str, reference: str) -> ManifestHead:
        response, _ = self._request(
            "head_manifest",
            "HEAD",
            self._manifest_url(repository, reference),
            scope=_pull(repository),
            headers={"Accept": mediatypes.MANIFEST_ACCEPT},
        )
        digest = response.headers.get("Docker-Content-Digest") or reference
        if is_valid_digest(reference) and digest != reference:
            raise DigestMismatch(reference, digest)
        if not is_valid_digest(digest):
            raise InvalidResponse(f"The registry sent no valid Docker-Content-Digest for {repository}:{reference}")
        length = response.headers.get("Content-Length", "")
        return ManifestHead(
            digest=digest,
            media_type=mediatypes.normalize(response.headers.get("Content-Type")),
            size=int(length) if length.isdigit() else None,
        )

    def get_manifest(self, repository: str, reference: str) -> FetchedManifest:
        """Fetch and parse a manifest. The digest is computed locally and must match the
        reference (by digest) or the registry's Docker-Content-Digest (by tag)."""
        response, raw = self._request(
            "get_manifest",
            "GET",
            self._manifest_url(repository, reference),
            scope=_pull(repository),
            headers={"Accept": mediatypes.MANIFEST_ACCEPT},
            limit=MANIFEST_LIMIT,
            what="manifest",
        )
        expected = reference if is_valid_digest(reference) else response.headers.get("Docker-Content-Digest")
        if expected:
            verify_digest(raw, expected)
        manifest = parse_manifest(raw, response.headers.get("Content-Type"))
        return FetchedManifest(expected or compute_digest(raw), manifest.media_type, raw, manifest)

    def get_blob(self, repository: str, digest: str, max_bytes: int = CONFIG_LIMIT) -> bytes:
        """Download a blob of at most `max_bytes` and verify its digest.

        The only request that follows redirects (at most MAX_REDIRECTS), to any host: registries
        on S3, GCS or Azure storage answer blob GETs with a 307 to a pre-signed URL on the
        storage host, and the signature in that URL is the credential. They are followed here,
        not by requests, which reads every redirect's whole body: each hop reads at most
        `max_bytes` of it, our Authorization goes only to the registry's own scheme, host and
        port (trust_env=False keeps ~/.netrc from adding one elsewhere), timeouts still apply,
        and the digest check below refuses bytes other than the ones asked for.
        """
        _check_digest(digest)
        url = f"{self._repository_url(repository)}/blobs/{digest}"
        expected = (200, *REDIRECT_STATUSES)
        response, raw = self._request(
            "get_blob", "GET", url, scope=_pull(repository), expected=expected, limit=max_bytes, what="blob"
        )
        for _ in range(MAX_REDIRECTS):
            if response.status_code == 200:
                break
            url = _redirect_target(response, url)
            if resolve_on_registry(url, url, self.base_url) is not None:
                response, raw = self._request(
                    "get_blob", "GET", url, scope=_pull(repository), expected=expected, limit=max_bytes, what="blob"
                )
                continue
            response = self._send("get_blob", "GET", url, authorization=None)
            if response.status_code not in expected:
                raise self._error(response, "GET")
            raw = self._read(response, max_bytes, "blob", truncate=response.status_code != 200)
        if response.status_code != 200:
            raise InvalidResponse(f"The blob {digest} was redirected more than {MAX_REDIRECTS} times; not following")
        verify_digest(raw, digest)
        return raw

    def get_config(self, repository: str, digest: str) -> ImageConfig:
        return parse_image_config(self.get_blob(repository, digest))

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest. On Distribution this also removes every tag pointing at it."""
        _check_digest(digest)
        with self._write_locks(repository):
            self._request(
                "delete",
                "DELETE",
                self._manifest_url(repository, digest),
                scope=_delete(repository),
                expected=(200, 202),
            )

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """Upload exact manifest bytes (a retag when they came from get_manifest) and return
        their digest, checked against what the registry reports."""
        if self._before_push is not None:
            self._before_push(repository, reference, compute_digest(raw))
        with self._write_locks(repository):
            response, _ = self._request(
                "put",
                "PUT",
                self._manifest_url(repository, reference),
                scope=_push(repository),
                expected=(201,),
                headers={"Content-Type": media_type},
                data=raw,
            )
        reported = response.headers.get("Docker-Content-Digest")
        if reported:
            verify_digest(raw, reported)
        return reported or compute_digest(raw)

    def delete_tag(self, repository: str, tag: str, digest: str) -> None:
        """Remove one tag, leaving other tags on the same digest alone; `digest` is where the
        caller saw the tag point, and nothing is written when the tag points elsewhere now
        (TagMoved).

        Registries with OCI tag delete do it directly. Distribution 2.8 can only delete by
        digest, which takes every sibling tag with it; so the tag is first moved onto a
        unique throwaway manifest (a tombstone), and that manifest is deleted.
        """
        if not is_valid_tag(tag):
            raise ValueError(f"Invalid tag: {tag!r}")
        _check_digest(digest)
        with self._write_locks(repository):
            # 2.8 checks that deletes are enabled (405) before rejecting the tag (400), so reaching
            # DIGEST_INVALID means the final digest delete below will be allowed. A registry with
            # tag delete removes the tag here, wherever it points: the caller's check right before
            # is the last look (the API has no conditional delete).
            response, body = self._request(
                "delete",
                "DELETE",
                self._manifest_url(repository, tag),
                scope=_delete(repository),
                expected=(200, 202, 400),
            )
            if response.status_code != 400:
                return
            error = error_from_response(400, body, response.headers, method="DELETE")
            if error.code != "DIGEST_INVALID":
                raise error
            config, tombstone_raw = make_tombstone(tag)
            tombstone = compute_digest(tombstone_raw)
            # 2.8 refuses manifests naming blobs it does not have. Uploaded before the tag is read,
            # so that reading it and moving it are two requests in a row.
            self._upload_blob(repository, config)
            # NotFound here, before we would create the tag; the bytes put the tag back below.
            original = self.get_manifest(repository, tag)
            if original.digest != digest:
                raise TagMoved(repository, tag, digest, original.digest)
            # Distribution has no conditional writes (no If-Match on a manifest PUT): a push of the
            # tag landing between the GET above and this PUT would be overwritten by the tombstone
            # and deleted with it. One request is the narrowest window the API allows.
            try:
                self.put_manifest(repository, tag, tombstone_raw, mediatypes.OCI_MANIFEST)
                self.finish_tag_delete(repository, tombstone)
            except RegistryError:
                self._put_back(repository, tag, original, tombstone)
                raise

    def _put_back(self, repository: str, tag: str, original: FetchedManifest, tombstone: str) -> None:
        """After a delete_tag failed half way: put the tag back where it was, unless it points
        at neither the tombstone nor nothing (the tombstone PUT failed, or someone pushed the tag
        since). When the registry is gone this fails too: the caller's error stands either way,
        and the tag stays on the tombstone until a retry finishes the delete."""
        try:
            with suppress(NotFound):
                if self.head_manifest(repository, tag).digest != tombstone:
                    return
            self.put_manifest(repository, tag, original.raw, original.media_type)
        except RegistryError:
            logger.warning(
                "Tag %s:%s may be left on tombstone %s; deleting the tag again finishes it",
                repository,
                tag,
                tombstone,
                extra={"repository": repository, "tag": tag, "tombstone": tombstone},
            )

    def finish_tag_delete(self, repository: str, tombstone: str) -> None:
        """Delete a tombstone, the last step of delete_tag on Distribution 2.8. Also finishes a
        delete_tag that stopped before this step (the registry failed in between): the tag is
        still on the tombstone, see is_tombstone. Gone already means someone else finished it."""
        with suppress(NotFound):
            self.delete_manifest(repository, tombstone)

    def is_tombstone(self, repository: str, digest: str) -> bool:
        """Whether `digest` is one of the tombstones delete_tag moves a tag onto: an OCI artifact
        of our own artifact type (see make_tombstone), which nobody pushes by accident. Needs a
        GET: a HEAD only tells the manifest's media type."""
        try:
            fetched = self.get_manifest(repository, digest)
        except NotFound:
            return False
        manifest = fetched.manifest
        return isinstance(manifest, ImageManifest) and manifest.artifact_type == mediatypes.TOMBSTONE_ARTIFACT_TYPE

    # Helpers of the operations

    def _catalog_pages(self, url: str | None) -> Iterator[list[str]]:
        followed: set[str] = set()
        while url is not None:
            followed.add(url)
            response, body = self._request(
                "catalog", "GET", url, scope="registry:catalog:*", limit=LIST_LIMIT, what="catalog page"
            )
            yield parse_catalog_page(body)
            url = self._next_page(response, url)
            if url in followed:
                # A -> B -> A would walk forever; stopping quietly would pass a partial catalog
                # off as complete, and a sync prunes what the catalog does not list.
                raise InvalidResponse("The catalog's next-page links go round in a loop; the catalog was not read to its end")

    def _probe_delete(self, repository: str, reference: str) -> int:
        response, _ = self._request(
            "delete",
            "DELETE",
            self._manifest_url(repository, reference),
            scope=_delete(repository),
            expected=(200, 202, 400, 401, 403, 404, 405),
        )
        return response.status_code

    def _upload_blob(self, repository: str, data: bytes) -> str:
        """Monolithic upload: POST for a session, then one PUT with the bytes and their digest."""
        digest = compute_digest(data)
        response, _ = self._request(
            "put",
            "POST",
            f"{self._repository_url(repository)}/blobs/uploads/",
            scope=_push(repository),
            expected=(202,),
        )
        location = response.headers.get("Location", "")
        upload_url = resolve_on_registry(location, self._api, self.base_url) if location else None
        if upload_url is None:
            raise InvalidResponse(f"The registry sent an unusable upload location: {location[:200]!r}")
        self._request(
            "put",
            "PUT",
            upload_url,
            scope=_push(repository),
            expected=(201,),
            params={"digest": digest},
            headers={"Content-Type": "application/octet-stream"},
            data=data,
        )
        return digest

    def _next_page(self, response: requests.Response, url: str) -> str | None:
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        next_url = resolve_on_registry(link, url, self.base_url)  # Distribution sends a relative link
        if next_url is None:
            raise InvalidResponse(f"The next catalog page {link[:200]!r} is on another host; not following it")
        return next_url

    def _repository_url(self, repository: str) -> str:
        if not is_valid_repository_name(repository):
            raise ValueError(f"Invalid repository name: {repository!r}")
        return f"{self._api}{repository}"

    def _manifest_url(self, repository: str, reference: str) -> str:
        if not (is_valid_tag(reference) or is_valid_digest(reference)):
            raise ValueError(f"Invalid tag or digest: {reference!r}")
        return f"{self._repository_url(repository)}/manifests/{reference}"

    # Authentication

    def _request(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        scope: str | None,
        expected: Collection[int] = (200,),
        limit: int = SMALL_LIMIT,
        what: str = "response",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[requests.Response, bytes]:
        """Send with the credentials we expect to need, answer one 401 challenge, and return
        the response with its body (at most `limit` bytes; an error's or redirect's cut there)
        already read."""
        send = functools.partial(self._send, kind, method, url, headers=headers, params=params, data=data)
        token = self._known_token(scope)
        sent = self._authorization(token)
        response = send(authorization=sent)
        if response.status_code == 401:
            retry_with = self._answer_challenge(response, scope, sent, token)
            if retry_with is not None:
                self._read(response, SMALL_LIMIT, "error", truncate=True)  # frees the connection
                response = send(authorization=retry_with)
        if response.status_code not in expected:
            raise self._error(response, method)
        return response, self._read(response, limit, what, truncate=response.status_code >= 300)

    def _authorization(self, token: CachedToken | None) -> str | None:
        if token is not None:
            return f"Bearer {token.value}"
        return self._basic if self._scheme == "basic" else None

    def _known_token(self, scope: str | None) -> CachedToken | None:
        """The Bearer token to send up front, so steady state costs one request, not two.
        Once the token service is known, tokens for new scopes are fetched before asking."""
        service = self._token_service
        if service is None:
            return None
        return self._tokens.get(scope or "") or self._token_for(service, scope, _scopes(scope), rejected=None)

    def _answer_challenge(
        self, response: requests.Response, scope: str | None, sent: str | None, token: CachedToken | None
    ) -> str | None:
        """The Authorization header to retry a 401 with, or None when retrying cannot help."""
        challenge = preferred_challenge(parse_www_authenticate(response.headers.get("WWW-Authenticate")))
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self._basic is None or sent == self._basic:
                return None
            self._scheme = "basic"
            return self._basic
        service = token_service(challenge, self.base_url, self._allowed_realm_hosts)
        self._token_service = service
        self._scheme = "bearer"
        wanted = challenge.scopes or _scopes(scope)
        if token is not None and token.scopes == wanted and challenge.error == "insufficient_scope":
            return None  # a fresh token for exactly this scope was refused: we lack the permission
        return f"Bearer {self._token_for(service, scope, wanted, rejected=token).value}"

    def _token_for(
        self, service: TokenService, scope: str | None, scopes: tuple[str, ...], rejected: CachedToken | None
    ) -> CachedToken:
        """A token for `scopes`, cached under the request's scope. Threads asking for the same
        scope at once share a single fetch."""
        key = scope or ""
        with self._token_locks(key):
            cached = self._tokens.get(key)
            if cached is not None and cached != rejected and set(scopes) <= set(cached.scopes):
                return cached
            value, lifetime = self._fetch_token(service, scopes)
            return self._tokens.put(key, value, scopes, lifetime)

    def _fetch_token(self, service: TokenService, scopes: tuple[str, ...]) -> tuple[str, float]:
        params = [("service", service.service)] if service.service else []
        params += [("scope", s) for s in scopes]
        # Anonymous when no credentials are configured: many token services grant public pulls.
        response = self._send("token", "GET", service.realm, authorization=self._basic, params=params)
        if response.status_code != 200:
            raise self._error(response, "GET")
        return parse_token_response(self._read(response, SMALL_LIMIT, "token answer"))

    # Transport

    def _send(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        authorization: str | None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        all_headers = dict(headers or {})
        if authorization is not None:
            all_headers["Authorization"] = authorization
        with self._counts_lock:
            self._counts[kind] += 1
        parts = urlsplit(url)
        host = parts.netloc
        # Path only: query strings and headers may carry tokens.
        log_fields = {"kind": kind, "method": method, "host": host, "path": parts.path}
        started = time.perf_counter()
        try:
            prepared = self._session.prepare_request(
                requests.Request(method, url, headers=all_headers, params=params, data=data)
            )
            # Straight to the adapter: Session.send reads the whole body of a 3xx, even with
            # allow_redirects=False (to prepare Response.next), and a registry or storage host
            # could send gigabytes there. Redirects are followed by get_blob, bodies read by _read.
            response = self._session.get_adapter(url).send(
                prepared, stream=True, timeout=self._timeout, verify=self._session.verify
            )
        except requests.exceptions.SSLError as exc:
            _log_call(log_fields, started, None, exc)
            raise Unavailable(f"TLS verification of {host} failed; configure its CA bundle") from exc
        except requests.RequestException as exc:
            _log_call(log_fields, started, None, exc)
            if _timed_out(exc):
                raise Unavailable(f"{host} did not answer in time") from exc
            raise Unavailable(f"Cannot connect to {host}") from exc
        _log_call(log_fields, started, response.status_code, None)
        return response

    def _read(self, response: requests.Response, limit: int, what: str, *, truncate: bool = False) -> bytes:
        """Read at most `limit` bytes of the body, then release the connection.

        Over the limit: the first `limit` bytes when `truncate`, else InvalidResponse.
        """
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    if truncate:
                        break
                    raise InvalidResponse(f"The {what} is too large (over {limit} bytes)")
            return b"".join(chunks)[:limit]
        except requests.RequestException as exc:
            raise Unavailable(f"The connection broke while reading the {what}") from exc
        finally:
            response.close()  # back to the pool when fully read, dropped otherwise

    def _error(self, response: requests.Response, method: str) -> RegistryError:
        body = self._read(response, SMALL_LIMIT, "error", truncate=True)
        error = error_from_response(response.status_code, body, response.headers, method=method)
        if isinstance(error, Unauthorized) and self._basic is not None and _insufficient_scope(response):
            return Denied(
                "These credentials are valid but not allowed to do this",
                status=error.status,
                code=error.code,
                detail=error.detail,
            )
        return error


def _timed_out(exc: requests.RequestException) -> bool:
    # Once retries are used up, requests reports a read timeout as ConnectionError(MaxRetryError).
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.Timeout) or isinstance(reason, ReadTimeoutError)


def _insufficient_scope(response: requests.Response) -> bool:
    challenges = parse_www_authenticate(response.headers.get("WWW-Authenticate"))
    return any(c.error == "insufficient_scope" for c in challenges)


def _redirect_target(response: requests.Response, url: str) -> str:
    location = response.headers.get("Location", "")
    try:
        target = urljoin(url, location)
    except ValueError:
        target = ""
    if not location or urlsplit(target).scheme not in ("http", "https"):
        raise InvalidResponse(f"The registry sent an unusable redirect: {location[:200]!r}")
    return target


def _scopes(scope: str | None) -> tuple[str, ...]:
    return (scope,) if scope else ()


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _delete(repository: str) -> str:
    return f"repository:{repository}:delete"


def _check_digest(digest: str) -> None:
    if not is_valid_digest(digest):
        raise ValueError(f"Invalid digest: {digest!r}")


def _log_call(fields: dict[str, object], started: float, status: int | None, error: Exception | None) -> None:
    """One log line per registry call, with its timing (time to headers; bodies stream later)."""
    duration_ms = (time.perf_counter() - started) * 1000
    extra = {**fields, "status": status, "duration_ms": round(duration_ms, 1)}
    if error is None:
        logger.info("%s %s %s %.1fms", fields["method"], fields["path"], status, duration_ms, extra=extra)
    else:
        extra["error"] = type(error).__name__
        logger.warning("%s %s failed: %s", fields["method"], fields["path"], type(error).__name__, extra=extra)
